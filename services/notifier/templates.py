"""Message texts: Jinja2 templates in ru and en, Russian plural forms, the HTML e-mail layout."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from services.notifier.timing import zone
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


MONTHS = {
    "ru": (
        "января февраля марта апреля мая июня июля августа сентября октября ноября декабря"
    ).split(),
    "en": (
        "January February March April May June July August September October November December"
    ).split(),
}
WEEKDAYS = {"ru": "пн вт ср чт пт сб вс".split(), "en": "Mon Tue Wed Thu Fri Sat Sun".split()}


def utc_offset(local: datetime) -> str:
    """`UTC+3`, `UTC+5:30`, `UTC-3`, `UTC`: the zone a time is shown in, in any language."""
    offset = local.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    if minutes == 0:
        return "UTC"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{'+' if minutes > 0 else '-'}{hours}" + (f":{rest:02d}" if rest else "")


def _day(local: datetime, lang: str) -> str:
    weekday, month = WEEKDAYS[lang][local.weekday()], MONTHS[lang][local.month - 1]
    return f"{weekday}, {local.day} {month}"


def shift_time(starts: str | None, ends: str | None, tz: str | None, lang: str) -> str:
    """A shift's time in the member's zone: `сб, 12 декабря, 10:00–14:00 UTC+3`, the end's
    day named too when it is another day ("" when the start is not known)."""
    if not starts:
        return ""
    where, lang = zone(tz), locale_of(lang)
    start = datetime.fromisoformat(starts).astimezone(where)
    text = f"{_day(start, lang)}, {start:%H:%M}"
    if ends:
        end = datetime.fromisoformat(ends).astimezone(where)
        same_day = end.date() == start.date()
        text += f"–{end:%H:%M}" if same_day else f" – {_day(end, lang)}, {end:%H:%M}"
    return f"{text} {utc_offset(start)}"


def ordinal(n: int) -> str:
    """English ordinals: 1st, 2nd, 3rd, 4th, 11th, 21st."""
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


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
    env.filters["shift_time"] = shift_time
    env.filters["ordinal"] = ordinal
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
    template_file = _text.get_template(f"{lang}/{template}.j2")
    text = template_file.render(levels=levels, lang=lang, **facts).strip()
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
