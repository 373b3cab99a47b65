"""Message texts: Jinja2 templates in ru and en, Russian plural forms, the HTML e-mail layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from shared.limits import LINE_CONTROLS

TEMPLATES = Path(__file__).parent / "templates"
LOCALES = ("ru", "en")

LEVEL_NAMES = {
    "ru": {
        "newcomer": "новичок",
        "participant": "участник",
        "active": "активист",
        "loyal": "опора сообщества",
        "ambassador": "амбассадор",
    },
    "en": {
        "newcomer": "newcomer",
        "participant": "participant",
        "active": "active member",
        "loyal": "loyal member",
        "ambassador": "ambassador",
    },
}


def plural_form_ru(n: float) -> int:
    """0 for 1 балл, 1 for 2 балла, 2 for 5 баллов; a fraction takes the genitive singular."""
    if n != int(n):
        return 1
    k = abs(int(n))
    if k % 10 == 1 and k % 100 != 11:
        return 0
    if 2 <= k % 10 <= 4 and not 12 <= k % 100 <= 14:
        return 1
    return 2


def format_number(n: float, locale: str) -> str:
    if n == int(n):
        return str(int(n))
    text = f"{n:.1f}"
    return text.replace(".", ",") if locale == "ru" else text


def plural(n: float, *forms: str) -> str:
    """`{{ points|plural("балл", "балла", "баллов") }}` → "5 баллов"; two forms for English."""
    if len(forms) == 3:
        return f"{format_number(n, 'ru')} {forms[plural_form_ru(n)]}"
    if len(forms) == 2:
        return f"{format_number(n, 'en')} {forms[0] if n == 1 else forms[1]}"
    raise ValueError("plural takes three Russian forms or two English ones")


def _environment(autoescape: bool) -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        undefined=StrictUndefined,
        autoescape=autoescape,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["plural"] = plural
    return env


# Plain text (inbox, Telegram without parse_mode, the text part of e-mail) is not HTML: no
# escaping there. The HTML e-mail layout escapes everything it is given.
_text = _environment(autoescape=False)
_html = _environment(autoescape=True)


def locale_of(locale: str | None) -> str:
    return locale if locale in LOCALES else "ru"


def one_line(text: str) -> str:
    """The text with line breaks and other control characters replaced by spaces.

    Names and titles are refused with those at the members' and campaigns' edge, but a member
    projected earlier, or an event from elsewhere, may still carry one. In a message it would
    move the title's end (the first line is the title) or break an e-mail header: `\r`, `\v`,
    `\x85` and `\u2028` all make EmailMessage refuse a Subject.
    """
    return LINE_CONTROLS.sub(" ", text).strip()


def render(template: str, locale: str | None, context: dict[str, Any]) -> tuple[str, str]:
    """(title, body) of a message in the member's locale (ru when unknown).

    Every top-level string of the context (a name, a campaign's name, a region) is one line;
    longer text (an announcement) comes in a mapping and keeps its line breaks.
    """
    lang = locale_of(locale)
    levels = LEVEL_NAMES[lang]
    facts = {k: one_line(v) if isinstance(v, str) else v for k, v in context.items()}
    text = _text.get_template(f"{lang}/{template}.j2").render(levels=levels, **facts).strip()
    title, _, body = text.partition("\n")
    return title.strip(), body.strip()


@dataclass(frozen=True)
class UnsubscribeFooter:
    """The end of a marketing e-mail: why the reader gets it, and the link to leave."""

    why: str
    label: str
    url: str

    def text(self) -> str:
        return f"{self.why}\n{self.label}: {self.url}"


def unsubscribe_footer(locale: str | None, url: str) -> UnsubscribeFooter:
    """The footer in the member's language (`templates/<lang>/email/unsubscribe.j2`: the first
    line says why, the second is the link's label)."""
    lang = locale_of(locale)
    text = _text.get_template(f"{lang}/email/unsubscribe.j2").render().strip()
    why, _, label = text.partition("\n")
    return UnsubscribeFooter(why.strip(), label.strip(), url)


def email_html(
    title: str, body: str, locale: str | None, unsubscribe: UnsubscribeFooter | None = None
) -> str:
    """The HTML part of an e-mail; the title and body are escaped (they carry member input)."""
    return _html.get_template("email.html.j2").render(
        title=title,
        paragraphs=[p for p in body.split("\n") if p.strip()],
        lang=locale_of(locale),
        unsubscribe=unsubscribe,
    )


def template_names() -> list[str]:
    return sorted(p.stem for p in (TEMPLATES / "en").glob("*.j2"))
