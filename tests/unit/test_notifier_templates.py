"""Message templates: every kind in ru and en, Russian plural forms, HTML e-mail escaping."""

from __future__ import annotations

import pytest

from services.notifier.templates import (
    email_html,
    ordinal,
    plural,
    render,
    shift_time,
    template_names,
)
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
SHIFT: dict[str, object] = {
    "activity": "Посадка деревьев",
    "location": "Битцевский парк",
    "starts_at": "2026-12-12T07:00:00+00:00",
    "ends_at": "2026-12-12T11:00:00+00:00",
    "timezone": "Europe/Moscow",
}
CONTEXTS |= {
    "activity_announcement": {**SHIFT, "region": "moscow", "shifts": 2},
    "signup_confirmed": SHIFT,
    "signup_waitlisted": {**SHIFT, "position": 3},
    "signup_promoted": SHIFT,
    "signup_cancelled": SHIFT,
    "activity_reminder": SHIFT,
    "activity_changed": {**SHIFT, "time_changed": True, "place_changed": True},
    "activity_cancelled": {**SHIFT, "reason": "штормовое предупреждение"},
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


def test_a_shift_is_shown_in_the_members_time_zone_with_its_offset() -> None:
    starts, ends = "2026-12-12T07:00:00+00:00", "2026-12-12T11:00:00+00:00"
    assert shift_time(starts, ends, "Europe/Moscow", "ru") == "сб, 12 декабря, 10:00–14:00 UTC+3"
    assert (
        shift_time(starts, ends, "Asia/Kolkata", "en") == "Sat, 12 December, 12:30–16:30 UTC+5:30"
    )
    assert (
        shift_time(starts, ends, "America/New_York", "en") == "Sat, 12 December, 02:00–06:00 UTC-5"
    )
    # Ends on another local day: the end's day is named too.
    assert shift_time(starts, ends, "Asia/Vladivostok", "ru") == (
        "сб, 12 декабря, 17:00–21:00 UTC+10"
    )
    assert shift_time("2026-12-12T20:00:00+00:00", "2026-12-13T02:00:00+00:00", "UTC", "en") == (
        "Sat, 12 December, 20:00 – Sun, 13 December, 02:00 UTC"
    )
    assert shift_time(None, None, "UTC", "en") == ""


def test_the_sign_up_message_names_the_activity_its_time_in_the_members_zone_and_place() -> None:
    title, body = render("signup_confirmed", "ru", {"name": "Анна", **SHIFT})
    assert title == "Вы записаны: Посадка деревьев"
    assert body.startswith("Анна, вы записаны на «Посадка деревьев»: ")
    assert "сб, 12 декабря, 10:00–14:00 UTC+3, Битцевский парк." in body
    _, body = render("signup_confirmed", "en", {"name": "Ann", **SHIFT, "timezone": "UTC"})
    assert "Sat, 12 December, 07:00–11:00 UTC, Битцевский парк." in body


@pytest.mark.parametrize(
    ("position", "ru", "en"),
    [
        (1, "Вы 1-й в списке ожидания.", "You're 1st on the waitlist."),
        (2, "Вы 2-й в списке ожидания, перед вами 1 человек.", "2nd on the waitlist, with 1 "),
        (3, "Вы 3-й в списке ожидания, перед вами 2 человека.", "with 2 people ahead of you."),
        (6, "перед вами 5 человек.", "with 5 people ahead of you."),
        (23, "перед вами 22 человека.", "You're 23rd on the waitlist"),
        (None, "Вы в списке ожидания.", "You're on the waitlist."),
    ],
)  # fmt: skip
def test_the_waitlist_position_and_who_is_ahead_in_russian_and_english_forms(
    position: int | None, ru: str, en: str
) -> None:
    context = {"name": "Анна", **SHIFT, "position": position}
    assert ru in render("signup_waitlisted", "ru", context)[1]
    assert en in render("signup_waitlisted", "en", context)[1]


def test_english_ordinals() -> None:
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th"
    ]  # fmt: skip


def test_the_reminder_names_both_actions_in_both_languages() -> None:
    _, ru = render("activity_reminder", "ru", {"name": "Анна", **SHIFT})
    assert "«Я приду»" in ru and "«Не смогу»" in ru
    _, en = render("activity_reminder", "en", {"name": "Ann", **SHIFT})
    assert "I'm coming" in en and "I can't" in en


def test_a_change_names_only_what_changed() -> None:
    moved = {"name": "Анна", **SHIFT, "time_changed": True, "place_changed": False}
    _, body = render("activity_changed", "ru", moved)
    assert "Новое время: сб, 12 декабря, 10:00–14:00 UTC+3." in body and "Новое место" not in body
    moved_place = {**moved, "time_changed": False, "place_changed": True, "location": "Южный вход"}
    _, body = render("activity_changed", "en", moved_place)
    assert "New place: Южный вход." in body and "New time" not in body


def test_an_activity_message_of_a_delivery_uses_the_time_zone_it_was_planned_in() -> None:
    stored = {
        "template": "activity_reminder",
        "locale": "en",
        "timezone": "Asia/Vladivostok",
        "context": {k: v for k, v in SHIFT.items() if k != "timezone"},
        "mentions": {},
    }
    _, body = delivery_text(stored, "Ann", {})
    assert "17:00–21:00 UTC+10" in body
