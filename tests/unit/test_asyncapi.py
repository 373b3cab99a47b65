"""The /asyncapi document: FastStream's, with the fields of the platform's contract kept."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import jsonschema

from shared.asyncapi import asyncapi_document
from shared.bus import Bus, Consumer
from shared.events import (
    CLOUDEVENTS_JSON,
    EVENT_MODELS,
    REGISTRY,
    CloudEvent,
    EventData,
    example_event,
)
from shared.metrics import Metrics
from shared.settings import ServiceSettings
from tests.fakes.memory import MemoryDatabase
from tests.harness import BusHarness


async def _never(envelope: CloudEvent, data: EventData) -> None:
    raise AssertionError


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[unquote(part)]
    return node


def _engagement() -> dict[str, Any]:
    consumers = [
        Consumer(
            "engagement-members",
            "MEMBERS",
            ["members.member-joined.*", "members.member-left.*"],
            _never,
            types=(REGISTRY["member-joined"], REGISTRY["member-left"]),
        ),
        Consumer("engagement-other", "MEMBERS", ["members.>"], _never),
    ]
    publishes = [m for m in EVENT_MODELS if m.service == "engagement"]
    return asyncapi_document("engagement", publishes, consumers)


def test_published_channels_keep_the_contract_fields() -> None:
    doc = _engagement()
    assert doc["asyncapi"].startswith("3.")
    assert doc["defaultContentType"] == CLOUDEVENTS_JSON
    assert doc["info"]["title"] == "Sarafan engagement events"
    assert list(doc["servers"]) == ["nats"] and doc["servers"]["nats"]["host"] == "nats:4222"
    channel = doc["channels"]["engagement.post-created"]
    assert channel["address"] == "engagement.post-created.{aggregate_id}"
    assert channel["parameters"] == {"aggregate_id": {"description": "the post_id"}}
    assert doc["operations"]["engagement.post-created"]["action"] == "send"
    [ref] = channel["messages"].values()
    message = _resolve(doc, ref["$ref"])
    assert message["name"] == "post-created"
    assert message["contentType"] == CLOUDEVENTS_JSON
    assert set(message["headers"]["required"]) == {"Nats-Msg-Id", "content-type"}
    assert not [h for h in message["headers"]["properties"] if h.lower().startswith("ce-")]
    payload = _resolve(doc, message["payload"]["$ref"])
    assert payload["properties"]["type"]["const"] == "post-created"
    assert payload["properties"]["dataschemaversion"]["maximum"] == 1
    assert _resolve(doc, payload["properties"]["data"]["$ref"])["title"] == "PostCreated"
    [example] = message["examples"]
    assert CloudEvent.model_validate(example["payload"]).payload().aggregate_id() == "p_01"
    assert example["headers"]["Nats-Msg-Id"] == example["payload"]["id"]
    jsonschema.validate(example["headers"], message["headers"])


async def test_the_headers_the_bus_publishes_are_the_ones_the_document_declares() -> None:
    bus = Bus("engagement", ServiceSettings(), Metrics("engagement"), MemoryDatabase())
    event = example_event(REGISTRY["post-created"])
    async with BusHarness(bus) as harness:
        await harness.publish(event)
    [sent] = harness.published
    doc = _engagement()
    [ref] = doc["channels"]["engagement.post-created"]["messages"].values()
    declared = _resolve(doc, ref["$ref"])["headers"]
    # Every header the bus put on the wire (correlation_id included) is declared.
    on_the_wire = {"content-type": "", **sent.headers}
    assert on_the_wire["content-type"] == CLOUDEVENTS_JSON
    assert set(on_the_wire) <= set(declared["properties"])
    jsonschema.validate(on_the_wire, declared)


def test_receive_channels_are_the_consumers_subjects_with_their_declared_types() -> None:
    doc = _engagement()
    joined = doc["channels"]["engagement-members:members.member-joined.*"]
    assert joined["address"] == "members.member-joined.*"
    message = _resolve(doc, next(iter(joined["messages"].values()))["$ref"])
    assert message["name"] == "member-joined"
    assert _resolve(doc, message["payload"]["$ref"])["title"] == "member-joined"
    op = doc["operations"]["engagement-members:members.member-joined.*"]
    assert op["action"] == "receive"
    assert op["description"] == "durable pull consumer engagement-members on MEMBERS"
    # No declared types: every type the subject carries, one of them per message.
    other = doc["channels"]["engagement-other"]
    message = _resolve(doc, next(iter(other["messages"].values()))["$ref"])
    members_types = [m for m in EVENT_MODELS if m.service == "members"]
    assert len(message["payload"]["oneOf"]) == len(members_types)
    assert len(message["examples"]) == len(members_types)


def test_every_reference_resolves_and_the_document_is_stable() -> None:
    doc = _engagement()
    for ref in _refs(doc):
        assert _resolve(doc, ref) is not None, ref
    assert _engagement() == doc
    doc["channels"].clear()  # a copy each time: a caller cannot change the cached one
    assert _engagement()["channels"]
