"""Event contracts: every model round-trips, every exported schema validates its example."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from shared.events import (
    EVENT_MODELS,
    REGISTRY,
    CloudEvent,
    InvalidEvent,
    MemberJoined,
    event_schema,
    example_event,
    export_schemas,
    new_event,
    parse_event,
    parse_subject,
    subject_for,
)

SPEC_TYPES = {
    "member-joined",
    "member-updated",
    "member-left",
    "referral-made",
    "post-created",
    "comment-added",
    "reaction-added",
    "answer-accepted",
    "level-changed",
    "hours-approved",
    "member-drifting",
    "question-unanswered",
    "campaign-started",
    "milestone-reached",
    "campaign-ended",
    "notification-sent",
    "notification-failed",
    "activity-published",
    "activity-changed",
    "activity-cancelled",
    "signed-up",
    "sign-up-changed",
    "attended",
    "no-show",
}


def test_every_spec_event_type_has_a_model_with_a_docstring():
    assert set(REGISTRY) == SPEC_TYPES
    for model in EVENT_MODELS:
        assert model.__doc__ and model.__name__ == "".join(
            w.capitalize() for w in model.event_type.split("-")
        )


@pytest.mark.parametrize("model", EVENT_MODELS, ids=lambda m: m.event_type)
def test_every_event_round_trips_through_json(model):
    event = example_event(model)
    envelope, data = parse_event(event.to_json())
    assert envelope == event
    assert data == model.model_validate(model.example)
    assert envelope.nats_subject == f"{model.service}.{model.event_type}.{data.aggregate_id()}"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files `export_schemas` writes, once for the module (each test only reads them)."""
    directory = tmp_path_factory.mktemp("schemas")
    export_schemas(directory)
    return directory


@pytest.mark.parametrize("model", EVENT_MODELS, ids=lambda m: m.event_type)
def test_every_exported_schema_validates_its_example(model, exported):
    schema = json.loads((exported / f"{model.event_type}.json").read_text())
    example = json.loads((exported / f"{model.event_type}.example.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    # One validator for the checked schema (`jsonschema.validate` checks the schema again on
    # every call: two thirds of this test's time).
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate(example)
    broken = {
        **example,
        "data": {k: v for k, v in example["data"].items() if k != model.aggregate_field},
    }
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)


def test_schema_pins_the_type_and_rejects_a_newer_schema_version():
    schema = event_schema(MemberJoined)
    example = example_event(MemberJoined).model_dump(mode="json")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**example, "type": "member-left"}, schema)
    with pytest.raises(InvalidEvent, match="newer"):
        CloudEvent.model_validate({**example, "dataschemaversion": 2}).payload()


def test_envelope_is_cloudevents_1_0_with_correlation_id():
    event = new_event(MemberJoined.model_validate(MemberJoined.example), correlation_id="req-1")
    doc = json.loads(event.to_json())
    assert doc["specversion"] == "1.0"
    assert doc["source"] == "/services/members"
    assert doc["subject"] == "m_01"
    assert doc["datacontenttype"] == "application/json"
    assert doc["correlationid"] == "req-1"
    assert new_event(MemberJoined.model_validate(MemberJoined.example)).correlationid  # own id


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"{oops", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"specversion": "1.0"}', "not a CloudEvent"),
    ],
)
def test_invalid_messages_raise_invalid_event_with_a_reason(raw, reason):
    with pytest.raises(InvalidEvent, match=reason):
        parse_event(raw)


def test_unknown_type_and_invalid_data_are_invalid_events():
    doc = example_event(MemberJoined).model_dump(mode="json")
    with pytest.raises(InvalidEvent, match="unknown event type"):
        parse_event(json.dumps({**doc, "type": "member-teleported"}))
    with pytest.raises(InvalidEvent, match="consent"):
        parse_event(json.dumps({**doc, "data": {**doc["data"], "consent": 3}}))


def test_subjects_build_and_parse():
    assert subject_for("members", "member-joined", "m1") == "members.member-joined.m1"
    assert parse_subject("campaigns.campaign-started.c9") == ("campaigns", "campaign-started", "c9")
    for bad in ("members.member-joined", "members.nope.m1", "x.member-joined.m1", "a.b.c.d"):
        with pytest.raises(ValueError):
            parse_subject(bad)
    for bad_id in ("a.b", "*", ">", "", "a b"):
        with pytest.raises(ValueError):
            subject_for("members", "member-joined", bad_id)


def test_optional_field_added_by_a_newer_producer_is_accepted():
    doc = example_event(MemberJoined).model_dump(mode="json")
    doc["data"]["pronouns"] = "she/her"
    _, data = parse_event(json.dumps(doc))
    assert data.member_id == "m_01"


def test_events_made_inside_a_request_or_handler_inherit_its_correlation_id():
    from shared.logs import event_context

    data = MemberJoined.model_validate(MemberJoined.example)
    with event_context("cause-1", "req-7"):
        assert new_event(data).correlationid == "req-7"
        assert new_event(data, correlation_id="explicit").correlationid == "explicit"
    outside = new_event(data)
    assert outside.correlationid == outside.id


def test_a_reader_is_liberal_about_the_optional_extension_attributes() -> None:
    """CloudEvents 1.0 makes extensions optional: a member-joined without `correlationid` or
    `dataschemaversion` (another implementation of the producer, an older one) is read
    (correlation = its own id, version 1), while a missing core attribute is still refused."""
    import json

    from shared.events import InvalidEvent, parse_event

    raw = {
        "specversion": "1.0",
        "id": "outside-1",
        "source": "/services/members",
        "type": "member-joined",
        "time": "2026-12-01T10:00:00Z",
        "subject": "m_1",
        "data": {
            "member_id": "m_1",
            "display_name": "Anna",
            "region": "moscow",
            "contacts": {"email": "anna@example.org"},
            "consent": {"terms": True, "marketing": False},
            "joined_at": "2026-12-01T10:00:00Z",
        },
    }
    envelope, data = parse_event(json.dumps(raw))
    assert (envelope.correlationid, envelope.dataschemaversion) == ("outside-1", 1)
    assert data.member_id == "m_1"  # type: ignore[attr-defined]
    for core in ("id", "source", "type", "specversion"):
        broken = {k: v for k, v in raw.items() if k != core}
        with pytest.raises(InvalidEvent):
            parse_event(json.dumps(broken))
