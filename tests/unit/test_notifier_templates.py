"""Message templates: every kind in ru and en, Russian plural forms, HTML e-mail escaping."""

from __future__ import annotations

import pytest

from services.notifier.templates import email_html, plural, render, template_names
from services.notifier.texts import delivery_text, mentioned

CONTEXTS: dict[str, dict[str, object]] = {
    "welcome": {},
    "referral_thanks": {"friend": "Борис"},
    "level_up": {"level": "loyal", "score": 61.5},
    "comment_added": {"commenter": "Борис"},
    "answer_accepted": {"answerer": "Борис", "minutes": 5},
    "answer_thanks": {"asker": "Анна"},
    "drifting_invite": {"days": 21},
    "question_unanswered": {"asker": "Анна", "region": "moscow", "hours": 24},
    "campaign_announcement": {
        "campaign": "Уборка",
        "ends_at": "2026-12-31",
        "announcement": {"ru": "Выходим!", "en": "Join us!"},
    },
    "milestone_reached": {"campaign": "Уборка", "milestone": 50, "points": 52},
    "campaign_winner": {"campaign": "Уборка", "rank": 1, "points": 120},
    "digest": {"items": [{"title": "Новый комментарий", "body": "Борис ответил"}]},
}


def test_every_template_has_a_context_here() -> None:
    assert set(template_names()) == set(CONTEXTS)


@pytest.mark.parametrize("template", sorted(CONTEXTS))
@pytest.mark.parametrize("locale", ["ru", "en"])
def test_every_message_kind_renders_a_title_and_a_body_in_both_locales(
    template: str, locale: str
) -> None:
    title, body = render(template, locale, {"name": "Ольга", **CONTEXTS[template]})
    assert title and body and "\n" not in title
    assert "{{" not in title + body


def test_the_members_locale_chooses_the_language_and_ru_is_the_default() -> None:
    assert render("welcome", "en", {"name": "Olga"})[0] == "Welcome to the community, Olga!"
    assert render("welcome", "ru", {"name": "Ольга"})[0] == "Ольга, добро пожаловать в сообщество!"
    assert render("welcome", "de", {"name": "Olga"}) == render("welcome", "ru", {"name": "Olga"})


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "0 баллов"),
        (1, "1 балл"),
        (2, "2 балла"),
        (4, "4 балла"),
        (5, "5 баллов"),
        (11, "11 баллов"),
        (12, "12 баллов"),
        (14, "14 баллов"),
        (21, "21 балл"),
        (22, "22 балла"),
        (25, "25 баллов"),
        (101, "101 балл"),
        (111, "111 баллов"),
        (1.5, "1,5 балла"),
        (52.0, "52 балла"),
    ],
)
def test_russian_plural_forms(n: float, expected: str) -> None:
    assert plural(n, "балл", "балла", "баллов") == expected


def test_english_plural_forms() -> None:
    assert plural(1, "point", "points") == "1 point"
    assert plural(2, "point", "points") == "2 points"
    assert plural(1.5, "point", "points") == "1.5 points"


def test_points_in_russian_messages() -> None:
    _, body = render(
        "milestone_reached",
        "ru",
        {"name": "Анна", "campaign": "Уборка", "milestone": 50, "points": 1},
    )
    assert "уже 1 балл." in body
    title, _ = render("level_up", "ru", {"name": "Анна", "level": "loyal", "score": 61.6})
    assert title == "Новый уровень: опора сообщества!"


def test_html_email_escapes_member_input() -> None:
    html = email_html("<b>Hi</b>", "Line one <script>alert(1)</script>\nLine two", "en")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "&lt;b&gt;Hi&lt;/b&gt;" in html
    assert html.count("</p>") == 3  # two lines and the signature


@pytest.mark.parametrize("mark", ["\r", "\n", "\v", "\x85", "\u2028", "\u202e", "\x00"])
def test_a_name_with_a_line_break_or_control_renders_on_one_title_line(mark: str) -> None:
    title, body = render("welcome", "en", {"name": f"Vera{mark}Victimova"})
    assert title == "Welcome to the community, Vera Victimova!"
    assert body.startswith("We are glad")


def test_a_delivery_is_rendered_with_the_names_the_projection_has_now() -> None:
    stored = {
        "template": "comment_added",
        "locale": "en",
        "context": {},
        "mentions": {"commenter": "m_02"},
    }
    assert mentioned([stored]) == {"m_02"}
    _, body = delivery_text(stored, "Anna", {"m_02": "Boris"})
    assert body.startswith("Anna, Boris replied")
    _, body = delivery_text(stored, "Anna", {})  # Boris was erased: his tombstone has no name
    assert body.startswith("Anna, — replied")
    friend = {
        "template": "referral_thanks",
        "locale": "ru",
        "context": {},
        "mentions": {"friend": "m_03"},
    }
    assert "ваш друг присоединяется" in delivery_text(friend, "Анна", {})[1]
    old = {"template": "welcome", "title": "Stored title", "body": "Stored body"}
    assert delivery_text(old, "Anna", {}) == ("Stored title", "Stored body")


def test_a_digest_renders_each_item_with_current_names_in_order() -> None:
    digest = {
        "template": "digest",
        "locale": "en",
        "items": {
            "e2": {"template": "comment_added", "context": {}, "mentions": {"commenter": "m_9"},
                   "at_ms": 2},
            "e1": {"title": "Old item", "body": "stored before", "at_ms": 1},
        },
    }  # fmt: skip
    assert mentioned([digest]) == {"m_9"}
    title, body = delivery_text(digest, "Anna", {"m_9": "Boris"})
    assert title == "Your community today: 2 updates"
    assert body.index("Old item") < body.index("Boris replied")
