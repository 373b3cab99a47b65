"""AsyncAPI 3.0 document of what a service publishes and consumes: FastStream's, completed.

FastStream generates the document from a broker's declarations. This module declares, on a
broker of its own that never connects, one publisher per event type the service publishes
(its payload the event's CloudEvents envelope model, whose `data` is the event's pydantic
model) and one subscriber per filter subject of each durable consumer (its messages the event
types the consumer declared that the subject carries), then adds what FastStream's generator
leaves out and the platform's contract has (`_complete`):

- `defaultContentType` and each message's `contentType`: `application/cloudevents+json`,
  the structured-mode CloudEvents content type the bytes are (FastStream writes
  `application/json`);
- each message's `headers`: `content-type` (`application/cloudevents+json`: structured mode in
  the CloudEvents NATS binding) and `Nats-Msg-Id` (the event id, JetStream's duplicate window)
  beside FastStream's own `correlation_id` (FastStream has no header schema);
- each message's `name` (the event type), `summary` (the model's text) and `examples` (a
  whole example event with its headers);
- each message's `x-schema-ids`: the `$id` of its event's exported JSON Schema (`sarafan
  schemas`), kept beside the payload rather than in it, where it would re-base the `$ref`s
  FastStream writes; the payload's `$schema` is left out too (the document's schema format
  applies to every payload);
- each published channel's `parameters`: the `{aggregate_id}` ending its subject, and what it
  is (FastStream 0.7.8 does not emit channel parameters);
- each receive operation's `description` (FastStream puts it on the channel only);
- the server under the name `nats` at `nats:4222` (FastStream calls a single server
  `development`), the same whatever URL the service connects to: the document needs no key to
  read, so it does not tell the deployment's addresses.

Of those, FastStream 0.7 cannot produce the message headers and examples (its message schema
has neither field), a per-message content type, channel parameters or extension fields
(`x-schema-ids`); the server's name and the receive operations' descriptions are its
generator's choices, changed here. The rest of the document is FastStream's.

The broker here only describes: the bus runs on nats-py (shared/bus.py, shared/pull.py), and
FastStream's generator reads the declarations of a `NatsBroker` that never connects. Each
receiver is a real function whose parameter is annotated with the event's envelope model
(shared/asyncapi_receiver.py), the signature FastStream reads the message schema from.
"""

from __future__ import annotations

import contextvars
import copy
import functools
from collections.abc import Iterable
from typing import Any, Literal
from urllib.parse import unquote

from faststream.nats import JStream, NatsBroker, PullSub
from faststream.specification import AsyncAPI
from pydantic import Field, create_model

from shared.asyncapi_receiver import receiver
from shared.bus import Consumer
from shared.events import (
    CLOUDEVENTS_JSON,
    CONTENT_TYPE,
    REGISTRY,
    CloudEvent,
    EventData,
    event_schema,
    example_event,
    subject_matches,
)

SERVER_NAME = "nats"
SERVER_URL = "nats://nats:4222"
#: What the bus sets on every event it publishes (shared.bus.Bus.publish). No `ce-` header: in
#: structured mode every attribute is in the body (the subject names the type for routing).
HEADERS = {
    "type": "object",
    "properties": {
        CONTENT_TYPE: {
            "type": "string",
            "const": CLOUDEVENTS_JSON,
            "description": "structured mode: the body is the whole CloudEvent (header names "
            "are case-insensitive; a reader also takes a message without it)",
        },
        "Nats-Msg-Id": {"type": "string", "description": "the event id"},
        "correlation_id": {"type": "string", "description": "the event's correlationid"},
    },
    "required": ["Nats-Msg-Id", CONTENT_TYPE],
}


@functools.cache
def envelope_model(model: type[EventData]) -> type[CloudEvent]:
    """The CloudEvent carrying `model` as its typed `data`: the message's payload schema,
    named by the event type (the data model keeps its own name beside it)."""
    return create_model(
        model.event_type,
        __base__=CloudEvent,
        __doc__=model.__doc__,
        type=(Literal[model.event_type], ...),  # type: ignore[valid-type]
        data=(model, ...),
        dataschemaversion=(int, Field(1, ge=1, le=model.schema_version)),
    )


def _types_for(consumer: Consumer, subject: str) -> list[type[EventData]]:
    """The event types `subject` brings `consumer`: those it declared, else (none declared,
    or none of them on this subject) every type the subject carries."""

    def on_subject(models: Iterable[type[EventData]]) -> list[type[EventData]]:
        return [m for m in models if subject_matches(subject, f"{m.service}.{m.event_type}.id")]

    return on_subject(consumer.types) or on_subject(REGISTRY.values())


def _receiver(model: type[EventData]) -> Any:
    """A handler FastStream reads the message schema from (it is never called)."""
    return receiver(envelope_model(model), f"on_{model.event_type.replace('-', '_')}")


def _declare(
    service: str, publishes: Iterable[type[EventData]], consumers: Iterable[Consumer]
) -> tuple[NatsBroker, dict[str, list[type[EventData]]]]:
    """The spec broker, and the event types of each channel it declares (by channel key)."""
    broker = NatsBroker(SERVER_URL, description=f"Sarafan {service}")
    channels: dict[str, list[type[EventData]]] = {}
    for model in publishes:
        key = f"{model.service}.{model.event_type}"
        broker.publisher(
            f"{key}.{{aggregate_id}}",
            schema=envelope_model(model),
            title=key,
            description=(model.__doc__ or "").strip(),
        )
        channels[key] = [model]
    for consumer in consumers:
        for subject in consumer.subjects:
            # One subscriber per filter subject, as FastStream splits a consumer into one
            # channel per subject; declared apart so each lists only the types it carries.
            title = consumer.name if len(consumer.subjects) == 1 else f"{consumer.name}:{subject}"
            subscriber = broker.subscriber(
                subject,
                stream=JStream(consumer.stream, declare=False),
                durable=consumer.name,
                pull_sub=PullSub(batch=True),
                title=title,
                description=f"durable pull consumer {consumer.name} on {consumer.stream}",
            )
            types = _types_for(consumer, subject)
            for model in types:
                subscriber(_receiver(model))
            channels[title] = types
    return broker, channels


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[unquote(part).replace("~1", "/").replace("~0", "~")]
    return node


def _example(model: type[EventData]) -> dict[str, Any]:
    # In an empty context: the request's correlation id must not end up in the example.
    event = contextvars.Context().run(example_event, model)
    return {
        "name": model.event_type,
        "headers": {**event.nats_headers(), "correlation_id": event.correlationid},
        "payload": event.model_dump(mode="json"),
    }


def _complete_message(message: dict[str, Any], types: list[type[EventData]]) -> None:
    if len(types) == 1:
        message["name"] = types[0].event_type
        message["summary"] = (types[0].__doc__ or "").strip()
    elif types:
        message["summary"] = "one of: " + ", ".join(m.event_type for m in types)
    message["contentType"] = CLOUDEVENTS_JSON
    message["headers"] = copy.deepcopy(HEADERS)
    if types:
        message["examples"] = [_example(m) for m in types]
        # Where the exported JSON Schema of each event lives (`sarafan schemas`); not a `$id`
        # in the payload, which would re-base the `$ref`s FastStream writes there.
        message["x-schema-ids"] = [event_schema(m)["$id"] for m in types]


def _rename_server(node: Any, old: str) -> Any:
    if isinstance(node, dict):
        if node.get("$ref") == f"#/servers/{old}":
            return {"$ref": f"#/servers/{SERVER_NAME}"}
        return {k: _rename_server(v, old) for k, v in node.items()}
    if isinstance(node, list):
        return [_rename_server(v, old) for v in node]
    return node


def _complete(doc: dict[str, Any], channels: dict[str, list[type[EventData]]]) -> dict[str, Any]:
    """Add to FastStream's document what it lacks (see the module's text)."""
    doc["defaultContentType"] = CLOUDEVENTS_JSON
    servers = doc.get("servers") or {}
    if len(servers) == 1:
        [(old, server)] = servers.items()
        doc = _rename_server(doc, old)
        doc["servers"] = {SERVER_NAME: server}
    for key, channel in doc.get("channels", {}).items():
        types = channels.get(key, [])
        for ref in channel.get("messages", {}).values():
            _complete_message(_resolve(doc, ref["$ref"]), types)
        if "{aggregate_id}" in channel.get("address", "") and len(types) == 1:
            field = types[0].aggregate_field
            channel["parameters"] = {"aggregate_id": {"description": f"the {field}"}}
    for operation in doc.get("operations", {}).values():
        channel = _resolve(doc, operation["channel"]["$ref"])
        if operation.get("action") == "receive" and channel.get("description"):
            operation.setdefault("description", channel["description"])
    # FastStream lists its endpoints in set order (different each run): sorted, the document
    # is the same on every replica and every start.
    for part in (doc, doc.get("components", {})):
        for key in ("channels", "operations", "messages", "schemas"):
            if isinstance(part.get(key), dict):
                part[key] = dict(sorted(part[key].items()))
    return doc


@functools.lru_cache(maxsize=16)
def _document(service: str, publishes: tuple[Any, ...], consumers: tuple[Any, ...]) -> Any:
    declared = [
        Consumer(name, stream, list(subjects), _never, types=types)
        for name, stream, subjects, types in consumers
    ]
    broker, channels = _declare(service, publishes, declared)
    generated = AsyncAPI(
        broker,
        title=f"Sarafan {service} events",
        version="1.0.0",
        description="CloudEvents 1.0 (structured JSON) on NATS JetStream; "
        "subject <service>.<type>.<aggregate id>; headers content-type: "
        f"{CLOUDEVENTS_JSON} and Nats-Msg-Id = event id.",
    ).to_specification()
    return _complete(generated.to_jsonable(), channels)


async def _never(envelope: CloudEvent, data: EventData) -> None:
    raise AssertionError("the AsyncAPI declarations are never consumed")


def asyncapi_document(
    service: str, publishes: list[type[EventData]], consumers: list[Consumer]
) -> dict[str, Any]:
    """The service's AsyncAPI document (generated once per set of declarations)."""
    key = tuple((c.name, c.stream, tuple(c.subjects), tuple(c.types)) for c in consumers)
    return copy.deepcopy(_document(service, tuple(publishes), key))
