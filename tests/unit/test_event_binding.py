"""What a consumer accepts of a message: decoding that never raises past the message, numbers
that are finite, versions from 1, events bound to their subject and producer, fact times no
later than the receiver's clock (shared/events/binding.py)."""

from __future__ import annotations

import json
import math
import typing
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from shared.events import (
    EVENT_MODELS,
    FACT_TIME,
    MAX_EVENT_BYTES,
    MAX_EVENT_DEPTH,
    PLAN_TIME,
    REGISTRY,
    CampaignStarted,
    EventData,
    HoursApproved,
    InvalidEvent,
    LevelChanged,
    MemberUpdated,
    MilestoneReached,
    PostCreated,
    example_event,
    new_event,
    parse_event,
    receive,
)
from shared.events.base import time_kinds
from shared.topology import STREAMS

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LATEST = NOW + timedelta(minutes=5)
FAR = "2100-01-01T00:00:00Z"


def body(model: type[EventData], **changes: Any) -> dict[str, Any]:
    """The example event of `model` as JSON, with envelope attributes changed."""
    return {**example_event(model).model_dump(mode="json"), **changes}


def accept(
    doc: dict[str, Any],
    subject: str | None = None,
    stream: str | None = None,
    types: set[str] | None = None,
) -> tuple[Any, Any]:
    """What a consumer of the event's own type on its producer's stream accepts of `doc`
    arriving on `subject` (by default the one its envelope names)."""
    model = REGISTRY[doc["type"]]
    return receive(
        json.dumps(doc),
        subject=subject or f"{model.service}.{doc['type']}.{doc['subject']}",
        stream=stream or STREAMS[model.service],
        types=types or {doc["type"]},
        latest=LATEST,
    )


# -- decoding ---------------------------------------------------------------------------------


@pytest.mark.parametrize("opening", [b"[", b'{"a":'])
def test_deeply_nested_json_is_an_invalid_event_not_a_recursion_error(opening):
    with pytest.raises(InvalidEvent, match="nests deeper"):
        parse_event(opening * 100_000)


def test_nesting_under_the_recursion_limit_but_over_the_event_depth_is_refused():
    doc = body(MemberUpdated)
    deep: Any = "x"
    for _ in range(MAX_EVENT_DEPTH):
        deep = {"k": deep}
    doc["data"]["changes"] = {"region": deep}
    with pytest.raises(InvalidEvent, match="nests deeper"):
        parse_event(json.dumps(doc))


def test_the_deepest_real_event_is_within_the_depth():
    changes = {"consent": {"marketing": False}, "interests": ["a"], "contacts": {"email": None}}
    data = MemberUpdated(member_id="m1", changes=changes)
    assert parse_event(new_event(data).to_json())[1] == data


def test_a_body_over_the_event_size_is_refused_unread():
    with pytest.raises(InvalidEvent, match="bytes, over"):
        parse_event(b" " * (MAX_EVENT_BYTES + 1))


@pytest.mark.parametrize("raw", [b"\xff\xfe\xfa", b"\xc3\x28{}", b'{"a": "\xed\xa0\x80"}'])
def test_bytes_that_are_not_text_are_an_invalid_event(raw):
    with pytest.raises(InvalidEvent):
        parse_event(raw)


def test_any_failure_while_reading_is_an_invalid_event(monkeypatch):
    """Whatever goes wrong inside, one message raises InvalidEvent and nothing else."""
    import shared.events.envelope as envelope

    def broken(doc: Any) -> int:
        raise MemoryError("the decoder ran out")

    monkeypatch.setattr(envelope, "_depth", broken)
    with pytest.raises(InvalidEvent, match="MemoryError"):
        parse_event(example_event(MemberUpdated).to_json())


@pytest.mark.parametrize("number", ["Infinity", "-Infinity", "NaN", "1e999", "-1e400"])
def test_a_non_finite_number_in_an_event_is_refused_at_decode(number):
    raw = example_event(LevelChanged).to_json().decode().replace("61.5", number)
    assert number in raw
    with pytest.raises(InvalidEvent, match="not JSON"):
        parse_event(raw)


def test_a_non_finite_number_anywhere_in_the_body_is_refused():
    raw = json.dumps({**body(MemberUpdated), "x": 1}).replace('"x": 1', '"x": NaN')
    with pytest.raises(InvalidEvent, match="NaN"):
        parse_event(raw)


@pytest.mark.parametrize(
    "make",
    [
        lambda: MilestoneReached(campaign_id="c", member_id="m", milestone=1, points=math.inf),
        lambda: LevelChanged(member_id="m", old_level="active", new_level="loyal", score=math.inf),
        lambda: REGISTRY["campaign-ended"].model_validate(
            {
                "campaign_id": "c",
                "participants": 1,
                "winners": [{"member_id": "m", "rank": 1, "points": math.nan}],
            }
        ),
        lambda: HoursApproved.model_validate({**HoursApproved.example, "hours": math.inf}),
    ],
    ids=["milestone points", "level score", "winner points", "hours"],
)
def test_the_event_models_refuse_non_finite_numbers(make):
    with pytest.raises(ValueError, match="finite"):
        make()


@pytest.mark.parametrize("version", [0, -1])
def test_a_dataschemaversion_below_one_is_refused(version):
    with pytest.raises(InvalidEvent, match="dataschemaversion"):
        parse_event(json.dumps(body(PostCreated, dataschemaversion=version)))


def test_a_missing_dataschemaversion_and_correlationid_are_still_accepted():
    doc = body(PostCreated)
    del doc["dataschemaversion"], doc["correlationid"]
    envelope, _ = accept(doc)
    assert (envelope.dataschemaversion, envelope.correlationid) == (1, envelope.id)


# -- bound to its subject and producer --------------------------------------------------------


def test_a_type_the_consumer_did_not_declare_is_refused():
    with pytest.raises(InvalidEvent, match="not one this consumer handles"):
        accept(body(PostCreated), types={"comment-added", "level-changed"})


def test_a_body_of_another_type_than_its_subject_is_refused():
    """campaign-started sent on engagement.level-changed.x (engagement's credentials)."""
    with pytest.raises(InvalidEvent, match="published by campaigns, not on stream ENGAGEMENT"):
        accept(
            body(CampaignStarted),
            subject="engagement.level-changed.c_01",
            stream="ENGAGEMENT",
            types={"campaign-started", "level-changed"},
        )
    with pytest.raises(InvalidEvent, match="arrived on"):
        accept(body(LevelChanged), subject="campaigns.campaign-started.m_01")


def test_a_source_other_than_the_producer_is_refused():
    for source in ("/services/engagement", "/crm", "/services/members/x"):
        with pytest.raises(InvalidEvent, match="is not /services/members"):
            accept(body(REGISTRY["member-joined"], source=source))


def test_a_subject_other_than_type_and_envelope_subject_is_refused():
    for subject in (
        "members.member-updated.m_02",  # another member's subject
        "members.member-left.m_01",  # another type's subject
        "members.member-updated.m_01.x",
    ):
        with pytest.raises(InvalidEvent, match="arrived on"):
            accept(body(MemberUpdated), subject=subject)


def test_an_envelope_subject_that_is_no_subject_token_is_refused():
    doc = body(MemberUpdated, subject="m.01")
    doc["data"]["member_id"] = "m.01"
    with pytest.raises(InvalidEvent, match="envelope subject"):
        accept(doc, subject="members.member-updated.m.01")


def test_data_naming_another_aggregate_than_the_subject_is_refused():
    """member-updated on member A's subject whose data names B."""
    doc = body(MemberUpdated, subject="m_A")
    doc["data"]["member_id"] = "m_B"
    with pytest.raises(InvalidEvent, match="data names member_id 'm_B'"):
        accept(doc, subject="members.member-updated.m_A")


@pytest.mark.parametrize("model", EVENT_MODELS, ids=lambda m: m.event_type)
def test_every_event_its_producer_makes_is_accepted(model):
    event = new_event(model.model_validate(model.example), time=NOW)
    envelope, data = accept(json.loads(event.to_json()))
    assert (envelope, data) == (event, model.model_validate(model.example))


# -- fact times on the receiver's clock -------------------------------------------------------


def _fact_fields() -> list[tuple[type[EventData], str]]:
    return [(m, name) for m in EVENT_MODELS for name in m.fact_times()]


def test_the_fact_times_are_those_the_contract_names():
    assert {f"{m.event_type}.{n}" for m, n in _fact_fields()} == {
        "member-joined.joined_at",
        "member-left.left_at",
        "referral-made.at",
        "post-created.created_at",
        "comment-added.created_at",
        "reaction-added.created_at",
        "hours-approved.date",
        "member-drifting.last_active_at",
        "campaign-ended.ended_at",
        "attended.checked_in_at",
        "attended.checked_out_at",
    }


@pytest.mark.parametrize(
    ("model", "field"), _fact_fields(), ids=lambda x: getattr(x, "event_type", x)
)
def test_a_fact_time_in_the_future_is_read_as_the_receivers_now_plus_tolerance(model, field):
    doc = body(model)
    doc["data"][field] = "2100-01-01" if field == "date" else FAR
    envelope, data = accept(doc)
    expected = (LATEST + timedelta(hours=14)).date() if field == "date" else LATEST
    assert getattr(data, field) == expected
    assert envelope.payload() == data  # the envelope's data says the same


@pytest.mark.parametrize(
    ("model", "field"), _fact_fields(), ids=lambda x: getattr(x, "event_type", x)
)
def test_a_fact_time_up_to_the_tolerance_or_in_the_past_is_kept(model, field):
    for moment in (LATEST, NOW - timedelta(days=400)):
        doc = body(model)
        doc["data"][field] = moment.date().isoformat() if field == "date" else moment.isoformat()
        _, data = accept(doc)
        kept = getattr(data, field)
        assert kept == (moment.date() if field == "date" else moment)


def test_a_day_is_clamped_to_the_latest_day_anywhere_on_earth():
    """At 12:05 UTC it is already tomorrow in UTC+14: hours done that day are kept; the day
    after is not yet anywhere."""
    tomorrow = (LATEST + timedelta(days=1)).date()
    doc = body(HoursApproved)
    doc["data"]["date"] = tomorrow.isoformat()
    assert accept(doc)[1].date == tomorrow
    doc["data"]["date"] = (tomorrow + timedelta(days=1)).isoformat()
    assert accept(doc)[1].date == tomorrow


def test_a_fact_time_without_an_offset_is_read_as_utc_and_clamped():
    doc = body(PostCreated)
    doc["data"]["created_at"] = "2100-01-01T00:00:00"
    _, data = accept(doc)
    assert data.created_at == LATEST


def test_plans_are_not_clamped():
    doc = body(CampaignStarted)
    doc["data"] |= {"starts_at": FAR, "ends_at": "2100-02-01T00:00:00Z"}
    _, data = accept(doc)
    assert data.starts_at == datetime(2100, 1, 1, tzinfo=UTC)
    assert data.ends_at == datetime(2100, 2, 1, tzinfo=UTC)


def test_the_envelope_time_is_clamped_too():
    envelope, _ = accept(body(LevelChanged, time=FAR))
    assert envelope.time == LATEST
    past = NOW - timedelta(days=3)
    envelope, _ = accept(body(LevelChanged, time=past.isoformat()))
    assert envelope.time == past


def test_every_time_an_event_states_is_either_a_fact_or_a_plan():
    """A new time field must say which it is: clamped on reading, or a plan left as it is."""

    def mentions_time(annotation: object) -> bool:
        return annotation in (datetime, date) or any(
            mentions_time(a) for a in typing.get_args(annotation)
        )

    for model in EVENT_MODELS:
        for name, field in model.model_fields.items():
            if mentions_time(field.annotation):
                kinds = {FACT_TIME, PLAN_TIME} & (
                    set(field.metadata) | time_kinds(field.annotation)
                )
                assert len(kinds) == 1, f"{model.event_type}.{name} is neither fact nor plan"
