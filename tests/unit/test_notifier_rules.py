"""Who gets which message, on which channels and when: the notifier's pure rules."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

import pytest
from pydantic import ValidationError

from services.notifier import domain, rules
from services.notifier.domain import Message, Preferences, Recipient, plan
from shared.events import (
    AnswerAccepted,
    CampaignEnded,
    CampaignStarted,
    CommentAdded,
    EventData,
    LevelChanged,
    MemberDrifting,
    MemberJoined,
    MilestoneReached,
    QuestionUnanswered,
    ReferralMade,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)  # 15:00 in Moscow
ALL = frozenset(domain.PUSH_CHANNELS)


def sample(model: type[EventData], **over: Any) -> EventData:
    return model.model_validate({**model.example, **over})


def who(notices: list[rules.Notice]) -> list[tuple[str, tuple[str, ...]]]:
    return [(n.message.template, n.member_ids) for n in notices]


def test_a_member_joined_without_welcome_gets_no_message() -> None:
    lookups = rules.Lookups()
    imported = sample(MemberJoined, imported=True, welcome=False)
    assert rules.notices(imported, lookups) == []
    asked = sample(MemberJoined, imported=True, welcome=True)
    assert who(rules.notices(asked, lookups)) == [("welcome", ("m_01",))]


def test_the_spec_list_of_messages() -> None:
    lookups = rules.Lookups(names={"m_02": "Борис", "m_01": "Анна"}, campaigns={"c_01": "Уборка"})
    n = rules.notices
    assert who(n(sample(MemberJoined), lookups)) == [("welcome", ("m_01",))]
    thanks = n(sample(ReferralMade), lookups)
    assert who(thanks) == [("referral_thanks", ("m_01",))]
    assert thanks[0].message.context["friend"] == "Борис"
    assert who(n(sample(LevelChanged), lookups)) == [("level_up", ("m_01",))]
    assert n(sample(LevelChanged, old_level="loyal", new_level="active"), lookups) == []
    assert who(n(sample(CommentAdded), lookups)) == [("comment_added", ("m_01",))]
    assert n(sample(CommentAdded, author_id="m_01"), lookups) == []
    assert who(n(sample(AnswerAccepted), lookups)) == [
        ("answer_accepted", ("m_01",)),
        ("answer_thanks", ("m_02",)),
    ]
    assert who(n(sample(MemberDrifting), lookups)) == [("drifting_invite", ("m_01",))]
    [unanswered] = n(sample(QuestionUnanswered), lookups)
    assert (unanswered.coordinators_of, unanswered.exclude) == ("moscow", ("m_01",))
    [announcement] = n(sample(CampaignStarted), lookups)
    assert announcement.message.marketing and announcement.audience is not None
    assert announcement.audience.regions == ("moscow",)
    [milestone] = n(sample(MilestoneReached), lookups)
    assert milestone.message.context["campaign"] == "Уборка"
    ended = sample(
        CampaignEnded,
        winners=[
            {"member_id": "m_01", "rank": 1, "points": 9},
            {"member_id": "m_02", "rank": 2, "points": 5},
        ],
    )
    assert who(n(ended, lookups)) == [
        ("campaign_winner", ("m_01",)),
        ("campaign_winner", ("m_02",)),
    ]


def member(**over: Any) -> Recipient:
    fields: dict[str, Any] = {
        "member_id": "m1",
        "display_name": "Анна",
        "timezone": "Europe/Moscow",
        "contacts": {"email": "a@example.org", "telegram": "anna_k"},
        "marketing": True,
    }
    fields.update(over)
    return Recipient(**fields)


ACHIEVEMENT = Message("level_up", "achievements")


def test_route_follows_the_members_order_and_skips_what_cannot_work() -> None:
    p = plan(ACHIEVEMENT, member(), NOW, ALL)
    assert p is not None and p.route == ("telegram", "email", "webhook")
    prefs = Preferences(channels=["email", "telegram"])
    assert plan(ACHIEVEMENT, member(preferences=prefs), NOW, ALL).route == ("email", "telegram")
    no_telegram = frozenset({"email", "webhook"})  # the operator has not configured a bot
    assert plan(ACHIEVEMENT, member(), NOW, no_telegram).route == ("email", "webhook")
    blocked = member(blocked=frozenset({"telegram"}))
    assert plan(ACHIEVEMENT, blocked, NOW, ALL).route == ("email", "webhook")
    only_inbox = member(preferences=Preferences(channels=[]))
    assert plan(ACHIEVEMENT, only_inbox, NOW, ALL).route == ()


def test_marketing_needs_consent_and_a_category_can_be_switched_off() -> None:
    announcement = Message("campaign_announcement", "campaigns", marketing=True)
    assert plan(announcement, member(marketing=False), NOW, ALL) is None
    assert plan(announcement, member(), NOW, ALL) is not None
    off = member(preferences=Preferences(categories={"campaigns": False}))
    assert plan(announcement, off, NOW, ALL) is None
    assert plan(Message("welcome", "account"), off, NOW, ALL) is not None
    assert plan(ACHIEVEMENT, member(active=False), NOW, ALL) is None


def test_non_urgent_messages_spend_the_budget_of_the_members_day() -> None:
    late = datetime(2026, 11, 27, 21, 30, tzinfo=UTC)  # 00:30 on the 28th in Moscow
    p = plan(ACHIEVEMENT, member(), late, ALL)
    assert p is not None and str(p.budget_day) == "2026-11-28"
    assert plan(Message("welcome", "account"), member(), late, ALL).budget_day is None
    assert (
        plan(ACHIEVEMENT, member(preferences=Preferences(channels=[])), late, ALL).budget_day
        is None
    )


def test_quiet_hours_defer_the_push() -> None:
    quiet = Preferences(quiet_hours={"start": "14:00", "end": "16:00"})
    p = plan(ACHIEVEMENT, member(preferences=quiet), NOW, ALL)
    assert p is not None and p.deferred == "quiet-hours"
    assert p.due == datetime(2026, 11, 27, 13, 0, tzinfo=UTC)  # 16:00 Moscow
    assert str(p.budget_day) == "2026-11-27"


def test_community_digest_waits_for_the_digest_hour() -> None:
    digest = Preferences(community="digest", digest_hour=9)
    p = plan(Message("comment_added", "community"), member(preferences=digest), NOW, ALL)
    assert p is not None and p.deferred == "digest" and p.budget_day is None
    assert p.due == datetime(2026, 11, 28, 6, 0, tzinfo=UTC) and str(p.digest_day) == "2026-11-28"
    assert plan(ACHIEVEMENT, member(preferences=digest), NOW, ALL).digest_day is None


def test_fallback_takes_the_next_usable_channel() -> None:
    m = member(blocked=frozenset({"telegram"}))
    route = ["telegram", "email", "webhook"]
    assert domain.next_channel(route, ["telegram"], m, ALL) == "email"
    assert domain.next_channel(route, ["telegram", "email"], m, ALL) == "webhook"
    assert domain.next_channel(route, route, m, ALL) is None


def test_delivery_ids_are_deterministic_per_cause_member_and_channel() -> None:
    a = domain.delivery_id("e1", "m1", "email")
    assert a == domain.delivery_id("e1", "m1", "email")
    assert (
        len(
            {
                a,
                domain.delivery_id("e1", "m1", "telegram"),
                domain.delivery_id("e2", "m1", "email"),
                domain.delivery_id("e1", "m2", "email"),
            }
        )
        == 4
    )


@pytest.mark.parametrize(
    "body",
    [
        {"channels": ["sms"]},
        {"channels": ["email", "email"]},
        {"categories": {"account": False}},
        {"categories": {"gossip": True}},
        {"digest_hour": 24},
        {"rate_limit_per_hour": 0},
        {"quiet_hours": {"start": "25:00", "end": "08:00"}},
        {"colour": "blue"},
    ],
)
def test_preferences_refuse_what_makes_no_sense(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Preferences.model_validate(body)


def test_preferences_defaults() -> None:
    p = Preferences()
    assert p.channels == ["telegram", "email", "webhook"] and p.community == "instant"
    assert p.quiet() is None and p.wants("campaigns") and p.wants("account")
    q = Preferences(quiet_hours={"start": "22:00", "end": "07:30"}).quiet()
    assert q is not None and (q.start, q.end) == (time(22), time(7, 30))


@pytest.mark.parametrize(
    "body",
    [
        {"digest_hour": True},
        {"digest_hour": "18"},
        {"digest_hour": 9.5},
        {"rate_limit_per_hour": True},
        {"rate_limit_per_hour": 1e30},
        {"categories": {"campaigns": "false"}},
        {"categories": {"campaigns": 0}},
        {"categories": {"x" * 51: True}},
        {"categories": {f"c{n}": True for n in range(len(domain.CATEGORIES) + 1)}},
        {"channels": ["email", "telegram", "webhook", "email"]},
        {"quiet_hours": {"start": 3600, "end": "08:00"}},
        {"quiet_hours": {"start": "22:00" + " " * 40, "end": "08:00"}},
        {"community": "weekly"},
    ],
)
def test_preferences_refuse_coerced_and_unbounded_values(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Preferences.model_validate(body)


def test_stored_preferences_are_read_leniently() -> None:
    stored = Preferences.stored({"categories": {"campaigns": 0}, "quiet_hours": None})
    assert stored.wants("campaigns") is False
    assert Preferences.stored(None) == Preferences()


def test_messages_that_name_another_member_keep_the_id_not_the_name() -> None:
    lookups = rules.Lookups(names={"m_02": "Борис", "m_01": "Анна"})
    named = {
        ReferralMade: ("friend", "m_02"),
        CommentAdded: ("commenter", "m_02"),
        QuestionUnanswered: ("asker", "m_01"),
    }
    for model, (var, member_id) in named.items():
        [notice] = rules.notices(sample(model), lookups)
        assert notice.message.mentions == {var: member_id}
        assert var not in notice.message.stored_context()
    accepted, thanks = rules.notices(sample(AnswerAccepted), lookups)
    assert accepted.message.mentions == {"answerer": "m_02"}
    assert thanks.message.mentions == {"asker": "m_01"}
    assert accepted.message.stored_context() == {"minutes": accepted.message.context["minutes"]}
    [level] = rules.notices(sample(LevelChanged), lookups)
    assert level.message.mentions == {} and level.message.stored_context() == level.message.context
