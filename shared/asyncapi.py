"""AsyncAPI 3.0 document of what a service publishes and consumes, generated from the models."""

from __future__ import annotations

from typing import Any

from shared.bus import Consumer
from shared.events import REGISTRY, EventData, event_schema


def _message(model: type[EventData]) -> dict[str, Any]:
    return {
        "name": model.event_type,
        "title": model.__name__,
        "summary": (model.__doc__ or "").strip(),
        "contentType": "application/cloudevents+json",
        "headers": {
            "type": "object",
            "properties": {"Nats-Msg-Id": {"type": "string", "description": "the event id"}},
        },
        "payload": event_schema(model),
        "examples": [{"payload": model.example}],
    }


def _types_for(subject: str) -> list[type[EventData]]:
    service, event_type = [*subject.split("."), "*", "*"][:2]
    return [
        m
        for m in REGISTRY.values()
        if m.service == service and event_type in ("*", ">", m.event_type)
    ]


def asyncapi_document(
    service: str, publishes: list[type[EventData]], consumers: list[Consumer]
) -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for model in publishes:
        name = f"{model.service}.{model.event_type}"
        channels[name] = {
            "address": f"{model.service}.{model.event_type}.{{aggregate_id}}",
            "messages": {model.event_type: _message(model)},
            "parameters": {"aggregate_id": {"description": f"the {model.aggregate_field}"}},
        }
        operations[f"publish-{model.event_type}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{name}"},
        }
    for consumer in consumers:
        for subject in consumer.subjects:
            for model in _types_for(subject):
                name = f"{model.service}.{model.event_type}"
                channels.setdefault(
                    name,
                    {
                        "address": f"{model.service}.{model.event_type}.{{aggregate_id}}",
                        "messages": {model.event_type: _message(model)},
                        "parameters": {
                            "aggregate_id": {"description": f"the {model.aggregate_field}"}
                        },
                    },
                )
                operations[f"{consumer.name}-receive-{model.event_type}"] = {
                    "action": "receive",
                    "channel": {"$ref": f"#/channels/{name}"},
                    "description": f"durable pull consumer {consumer.name} on {consumer.stream}",
                }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": f"Sarafan {service} events",
            "version": "1.0.0",
            "description": "CloudEvents 1.0 (structured JSON) on NATS JetStream; "
            "subject <service>.<type>.<aggregate id>; header Nats-Msg-Id = event id.",
        },
        "defaultContentType": "application/cloudevents+json",
        "servers": {"nats": {"host": "nats:4222", "protocol": "nats"}},
        "channels": channels,
        "operations": operations,
    }
