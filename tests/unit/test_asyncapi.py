"""The /asyncapi document: FastStream's, with the fields of the platform's contract kept."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from shared.asyncapi import CONTENT_TYPE, asyncapi_document
from shared.bus import Consumer
from shared.events import EVENT_MODELS, REGISTRY, CloudEvent, EventData


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
    assert doc["defaultContentType"] == CONTENT_TYPE
    assert doc["info"]["title"] == "Sarafan engagement events"
    assert list(doc["servers"]) == ["nats"] and doc["servers"]["nats"]["host"] == "nats:4222"
    channel = doc["channels"]["engagement.post-created"]
    assert channel["address"] == "engagement.post-created.{aggregate_id}"
    assert channel["parameters"] == {"aggregate_id": {"description": "the post_id"}}
    assert doc["operations"]["engagement.post-created"]["action"] == "send"
    [ref] = channel["messages"].values()
    message = _resolve(doc, ref["$ref"])
    assert message["name"] == "post-created"
    assert message["contentType"] == CONTENT_TYPE
    assert "Nats-Msg-Id" in message["headers"]["properties"]
    payload = _resolve(doc, message["payload"]["$ref"])
    assert payload["properties"]["type"]["const"] == "post-created"
    assert payload["properties"]["dataschemaversion"]["maximum"] == 1
    assert _resolve(doc, payload["properties"]["data"]["$ref"])["title"] == "PostCreated"
    [example] = message["examples"]
    assert CloudEvent.model_validate(example["payload"]).payload().aggregate_id() == "p_01"
    assert example["headers"]["Nats-Msg-Id"] == example["payload"]["id"]


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
