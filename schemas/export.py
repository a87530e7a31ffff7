"""Exports the contract as JSON Schema files for teams that do not use Python (``rj schemas export``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.deadletter import DeadLetter
from schemas.envelope import CloudEvent, EventData
from schemas.registry import REGISTRY


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema, for every event type (in its envelope) and the dead letter."""
    documents: dict[str, dict[str, Any]] = {}
    for event_type, model in sorted(REGISTRY.models.items()):
        schema = CloudEvent[model].model_json_schema()  # type: ignore[valid-type]
        schema["title"] = event_type
        schema["$id"] = model.dataschema()
        _pin_envelope(schema, model)
        documents[f"{event_type}.v{model.version}.json"] = schema
    documents["rj.deadletter.json"] = DeadLetter.model_json_schema()
    return documents


def _pin_envelope(schema: dict[str, Any], model: type[EventData]) -> None:
    """Pin ``type`` and ``dataschema`` to this file's event type and version.

    The envelope model is shared by every event, so pydantic exports both as any string. Without the
    pins, a validator given this file would accept any event type, or another version, wrapping a
    payload that merely happens to fit. ``dataschema`` stays optional (upstream sends none: version 1).
    """
    properties = schema["properties"]
    properties["type"] = {**properties["type"], "const": model.event_type}
    dataschema = properties["dataschema"]
    strings = [branch for branch in dataschema.get("anyOf", []) if branch.get("type") == "string"]
    if len(strings) != 1:  # the envelope changed shape: fail the export rather than leave it unpinned
        raise ValueError(f"cannot pin dataschema in {dataschema!r}")
    strings[0]["const"] = model.dataschema()


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_json_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    documents = json_schemas()
    for stale in directory.glob("*.json"):
        if stale.name not in documents:
            stale.unlink()
    written = []
    for name, schema in documents.items():
        path = directory / name
        path.write_text(render(schema))
        written.append(path)
    return written
