"""The CloudEvents Kafka protocol binding, structured mode: what a record says about its value.

In structured mode the whole event (attributes and data) is the record's value, and the record's
``content-type`` header names the event format. A consumer that honours the binding decides from the
header alone whether to read the value as a CloudEvent, so every record we produce carries it.
"""

from typing import Final

CONTENT_TYPE: Final = "content-type"
CLOUDEVENTS_JSON: Final = b"application/cloudevents+json"

#: The headers of every record we produce, in the form Kafka clients take: (name, value bytes) pairs.
STRUCTURED_MODE_HEADERS: Final[tuple[tuple[str, bytes], ...]] = ((CONTENT_TYPE, CLOUDEVENTS_JSON),)

#: Dead letters are JSON documents about a record (``schemas.deadletter``), not CloudEvents.
PLAIN_JSON_HEADERS: Final[tuple[tuple[str, bytes], ...]] = ((CONTENT_TYPE, b"application/json"),)
