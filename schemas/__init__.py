"""The public contract of the RJ services: the CloudEvents envelope, every event and command, topic names.

Other teams code against this package (or the JSON Schema files exported from it into
``schemas/jsonschema``). Services import from here and from nowhere else to talk to each other.

The envelope and the registry are loaded on first use (PEP 562): importing ``schemas.topics`` alone, as the
outbox relay's process does, does not build every event's model (about 0.3 s of CPU a process).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from schemas.envelope import CloudEvent, EventData, new_event
    from schemas.registry import REGISTRY, ParseError, parse_event

__all__ = ["REGISTRY", "CloudEvent", "EventData", "ParseError", "new_event", "parse_event"]

_FROM = {
    "CloudEvent": "schemas.envelope",
    "EventData": "schemas.envelope",
    "new_event": "schemas.envelope",
    "REGISTRY": "schemas.registry",
    "ParseError": "schemas.registry",
    "parse_event": "schemas.registry",
}


def __getattr__(name: str) -> Any:
    module = _FROM.get(name)
    if module is None:
        raise AttributeError(f"module 'schemas' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
