"""JSON Schema export of the events, for consumers in other languages (`sarafan schemas`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.events.base import EventData
from shared.events.envelope import CloudEvent, new_event
from shared.events.registry import EVENT_MODELS


def event_schema(model: type[EventData]) -> dict[str, Any]:
    """JSON Schema of a whole CloudEvent whose `data` is this model."""
    data_schema = model.model_json_schema(mode="validation")
    defs = data_schema.pop("$defs", {})
    envelope = CloudEvent.model_json_schema()
    envelope.pop("$defs", None)
    envelope["properties"]["type"] = {"const": model.event_type}
    envelope["properties"]["data"] = data_schema
    envelope["properties"]["dataschemaversion"] = {
        "type": "integer",
        "minimum": 1,
        "maximum": model.schema_version,
    }
    envelope["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    envelope["$id"] = f"https://sarafan.community/schemas/{model.event_type}.json"
    envelope["title"] = model.__name__
    envelope["description"] = (model.__doc__ or "").strip()
    if defs:
        envelope["$defs"] = defs
    return envelope


def example_event(model: type[EventData]) -> CloudEvent:
    return new_event(
        model.model_validate(model.example),
        event_id="00000000-0000-4000-8000-000000000001",
        time=datetime(2026, 11, 27, 10, 0, tzinfo=UTC),
    )


def export_schemas(directory: Path) -> list[Path]:
    """Write `<type>.json` (schema) and `<type>.example.json` for every event type."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for model in EVENT_MODELS:
        path = directory / f"{model.event_type}.json"
        path.write_text(json.dumps(event_schema(model), indent=2, ensure_ascii=False) + "\n")
        example = directory / f"{model.event_type}.example.json"
        example.write_text(example_event(model).model_dump_json(indent=2) + "\n")
        written += [path, example]
    return written
