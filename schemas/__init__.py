"""The public contract of the RJ services: the CloudEvents envelope, every event and command, topic names.

Other teams code against this package (or the JSON Schema files exported from it into
``schemas/jsonschema``). Services import from here and from nowhere else to talk to each other.
"""

from schemas.envelope import CloudEvent, EventData, new_event
from schemas.registry import REGISTRY, ParseError, parse_event

__all__ = ["REGISTRY", "CloudEvent", "EventData", "ParseError", "new_event", "parse_event"]
