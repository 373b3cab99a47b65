"""Which activities event becomes which message, in which category, with which ids and deadline;
what activity-changed changes; who an activity's audience is (the notifier's pure rules)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from services.notifier import volunteering
from services.notifier.deliveries import Occasion
from services.notifier.domain import Audience, Message, Preferences, Recipient, plan
from shared.clock import epoch_ms
from shared.events import (
    ActivityPublished,
    EventData,
    SignedUp,
    SignUpChanged,
    new_event,
)

START = datetime(2026, 12, 12, 7, 0, tzinfo=UTC)
ALL = frozenset({"email", "telegram"})


def sample(model: type[EventData], **over: Any) -> Any:
    return model.model_validate({**model.example, **over})


def activity(**over: Any) -> dict[str, Any]:
    data = sample(ActivityPublished)
    return {"_id": "a_01", **volunteering.published(data, 0), **over}


def stored(**over: Any) -> dict[str, Any]:
    return {
        "_id": "su_01",
        "member_id": "m_02",
        "activity_id": "a_01",
        "shift_id": "s_01",
        "status": "confirmed",
        **over,
    }


def notice(data: SignedUp | SignUpChanged, known: dict[str, Any] | None = None) -> Any:
    return volunteering.signup_notice(new_event(data), data, stored(), known or activity())


def test_a_confirmation_shows_the_shift_carries_its_ids_and_is_a_signups_message() -> None:
    event = new_event(sample(SignedUp))
    cause, message = volunteering.signup_notice(event, sample(SignedUp), stored(), activity())
    assert cause is event
    assert (message.template, message.category, message.marketing) == (
        "signup_confirmed",
        "signups",
        False,
    )
    assert message.context["activity"] == "Tree planting in Bitsa park"
    assert message.context["location"] == "Bitsa park, north gate"
    assert message.context["starts_at"] == START.isoformat()
    assert message.data == {
        "signup_id": "su_01",
        "activity_id": "a_01",
        "shift_id": "s_01",
        "actions": {"cancel": "DELETE /v1/signups/su_01"},
    }
    assert message.expires == START


def test_waitlisted_promoted_and_cancelled_sign_ups_each_say_their_own_thing() -> None:
    _, waitlisted = notice(sample(SignedUp, status="waitlisted", position=4))
    assert (waitlisted.template, waitlisted.context["position"]) == ("signup_waitlisted", 4)
    _, promoted = notice(sample(SignUpChanged))
    assert promoted.template == "signup_promoted"
    cause, by_organiser = notice(
        sample(SignUpChanged, status="cancelled", reason="cancelled-by-organiser")
    )
    assert by_organiser.template == "signup_cancelled"
    assert isinstance(cause, Occasion) and cause.id == "signup-cancelled:su_01"
    # The member's own "I'm coming" and "I can't" need no message.
    assert notice(sample(SignUpChanged, reason="confirmed-by-member")) is None
    assert notice(sample(SignUpChanged, status="cancelled", reason="cancelled-by-member")) is None


def test_a_sign_up_cancelled_with_its_activity_is_told_under_the_activitys_cause() -> None:
    data = sample(SignUpChanged, status="cancelled", reason="activity-cancelled")
    cause, message = notice(data, activity(status="cancelled", reason="storm warning"))
    # The same cause as activity-cancelled's own fan-out: one message per member, whichever
    # of the events comes first.
    assert cause.id == "activity-cancelled:a_01"
    assert (message.template, message.context["reason"]) == ("activity_cancelled", "storm warning")


def test_a_reminder_offers_both_actions_and_expires_at_the_start() -> None:
    reminder = {"_id": "su_01:120:1", "signup_id": "su_01", "activity_id": "a_01"}
    message = volunteering.reminder_message({**reminder, "shift_id": "s_01"}, activity())
    assert message.template == "activity_reminder" and message.category == "signups"
    assert message.data["actions"] == {
        "confirm": "POST /v1/signups/su_01/confirm",
        "cancel": "DELETE /v1/signups/su_01",
    }
    assert message.expires == START
    assert volunteering.reminder_occasion(reminder).id == "reminder:su_01:120:1"


def test_an_announcement_goes_to_the_audience_with_consent_once_per_activity() -> None:
    data = sample(ActivityPublished, audience={"regions": ["moscow"], "interests": [" Ecology "]})
    cause, announced = volunteering.announcement(new_event(data), data)
    assert cause.id == "activity-published:a_01"
    assert announced.audience == Audience(regions=("moscow",), interests=("ecology",))
    message = announced.message
    assert (message.category, message.marketing) == ("activities", True)
    assert message.data == {"activity_id": "a_01"}
    assert message.expires == START  # its only shift's start


def test_activity_changed_tells_a_new_place_and_the_moved_shifts() -> None:
    current = activity()
    change = volunteering.changed(current, sample_change(location="South gate"))
    assert change.place_changed and change.moved == {}
    assert change.fields == {"location": "South gate"}
    moved = volunteering.changed(
        current,
        sample_change(
            shifts=[
                {
                    "shift_id": "s_01",
                    "starts_at": "2026-12-12T08:00:00Z",
                    "ends_at": "2026-12-12T12:00:00Z",
                }
            ]
        ),
    )
    assert not moved.place_changed
    assert moved.moved == {
        "s_01": (epoch_ms(START + timedelta(hours=1)), epoch_ms(START + timedelta(hours=5)))
    }
    # A shift given with the same times (its capacity changed) has not moved.
    same = volunteering.changed(
        current,
        sample_change(
            shifts=[{"shift_id": "s_01", "starts_at": START.isoformat(), "capacity": 30}]
        ),
    )
    assert same.moved == {} and not same.place_changed
    # The same place again is no change.
    assert not volunteering.changed(current, {"location": current["location"]}).place_changed
    leads = volunteering.changed(current, {"reminders_minutes": [60]})
    assert leads.leads_changed and leads.removed_leads == {1440, 120}


def sample_change(**changes: Any) -> dict[str, Any]:
    return changes


def test_a_change_concerns_a_member_when_their_shift_moved_or_the_place_changed() -> None:
    current = activity(shifts={"s_01": {"starts_ms": 1, "ends_ms": 2}, "s_02": {"starts_ms": 3}})
    moved = volunteering.ActivityChange({}, moved={"s_01": (5, 6)})
    assert volunteering.change_message(stored(), current, moved) is not None
    assert volunteering.change_message(stored(shift_id="s_02"), current, moved) is None
    place = volunteering.ActivityChange({"location": "x"}, place_changed=True)
    message = volunteering.change_message(stored(shift_id="s_02"), current, place)
    assert message is not None and message.context["place_changed"]
    assert not message.context["time_changed"]


def member(**over: Any) -> Recipient:
    fields: dict[str, Any] = {
        "member_id": "m_1",
        "contacts": {"email": "a@example.org"},
        "timezone": "UTC",
        **over,
    }
    return Recipient(**fields)


def test_sign_up_messages_need_no_consent_spend_no_budget_and_stay_on() -> None:
    now = START - timedelta(days=1)
    message = Message("signup_confirmed", "signups", expires=START)
    got = plan(message, member(marketing=False), now, ALL)
    assert got is not None and got.route == ("email",) and got.budget_day is None
    with pytest.raises(ValidationError):
        Preferences.model_validate({"categories": {"signups": False}})
    assert Preferences.model_validate({"categories": {"signups": True, "activities": False}})
    off = member(preferences=Preferences(categories={"activities": False}))
    announcement = Message("activity_announcement", "activities", marketing=True)
    assert plan(announcement, off, now, ALL) is None
    assert plan(announcement, member(marketing=False), now, ALL) is None
    spent = plan(announcement, member(marketing=True), now, ALL)
    assert spent is not None and spent.budget_day is not None


def test_past_its_deadline_nothing_is_sent_and_a_push_delayed_past_it_is_dropped() -> None:
    message = Message("activity_reminder", "signups", expires=START)
    assert plan(message, member(), START, ALL) is None
    night = Preferences.model_validate({"quiet_hours": {"start": "22:00", "end": "08:00"}})
    late = plan(message, member(preferences=night), START - timedelta(hours=2), ALL)
    # 05:00 UTC is quiet until 08:00, after the 07:00 start: the inbox only.
    assert late is not None and late.route == () and late.expired == "email"
    early = plan(message, member(preferences=night), START - timedelta(hours=10), ALL)
    assert early is not None and early.route == ("email",) and early.expired is None
