"""The CloudEvents 1.0 envelope (structured JSON mode) every message on every topic is wrapped in."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, Literal, TypeVar

import pydantic_core
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

SCHEMA_URN = "urn:rj:schema"


class EventData(BaseModel):
    """Base of every event payload. Subclasses name their CloudEvents ``type`` and schema version."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_type: ClassVar[str]
    version: ClassVar[int] = 1
    participant_facing: ClassVar[bool] = False
    """A fact other participants' notifications and views are built from. It names no one who withdrew and
    carries no one's reasons, and its envelope starts a chain of its own (see ``new_event``): no
    ``causationid`` or ``correlationid`` leads from it to the command or the staff-only fact behind it."""

    @classmethod
    def dataschema(cls) -> str:
        return f"{SCHEMA_URN}:{cls.event_type}:v{cls.version}"


D = TypeVar("D", bound=BaseModel | dict[str, Any])


class CloudEvent(BaseModel, Generic[D]):
    """A CloudEvent whose ``data`` is a validated payload model."""

    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: Literal["1.0"]
    id: str = Field(
        min_length=1,
        max_length=200,
        # No control characters: the id is stored as text in every inbox, and PostgreSQL refuses NUL.
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="Unique per source; the dedupe key",
    )
    source: str = Field(min_length=1)
    type: str = Field(min_length=1)
    subject: str | None = Field(default=None, description="The case id (upstream: the crime reference)")
    time: AwareDatetime
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str | None = None
    correlationid: str | None = None
    causationid: str | None = None
    force: str | None = Field(
        default=None,
        description="Extension: the force the case belongs to (its crime system's source), on every event about "
        "a case, so that one deployment serves several forces without mixing them",
    )
    data: D

    def to_json(self, data_json: bytes | None = None) -> bytes:
        """The event's JSON; with ``data_json``, that JSON as its ``data`` instead (the payload with its
        personal fields sealed, say)."""
        # CloudEvents attributes are absent rather than null; inside ``data`` null means "unknown".
        data = self.data
        if data_json is not None:
            head = {name: getattr(self, name) for name in _ATTRIBUTES if getattr(self, name) is not None}
            head.update(self.model_extra or {})
            return pydantic_core.to_json(head)[:-1] + b',"data":' + data_json + b"}"
        if self.model_extra or not isinstance(data, BaseModel):
            absent = {name for name in _OPTIONAL_ATTRIBUTES if getattr(self, name) is None}
            # serialize_as_any: ``data`` is declared as the base payload type; write the real payload's fields.
            return self.model_dump_json(exclude=absent, serialize_as_any=True).encode()
        # The hot path (every event we emit): the attributes, then the payload by its own serializer.
        # The same JSON as above at a third of the cost; a unit test holds the two together.
        head = {name: getattr(self, name) for name in _ATTRIBUTES if getattr(self, name) is not None}
        return pydantic_core.to_json(head)[:-1] + b',"data":' + data.__pydantic_serializer__.to_json(data) + b"}"


_OPTIONAL_ATTRIBUTES = ("subject", "dataschema", "correlationid", "causationid", "force")
_ATTRIBUTES = ("specversion", "id", "source", "type", "subject", "time", "datacontenttype", *_OPTIONAL_ATTRIBUTES[1:])

#: The envelope of a decoded event; specialising a generic model is costly, so do it once.
Event = CloudEvent[EventData]


class RawEnvelope(CloudEvent[dict[str, Any]]):
    """The envelope with its payload still undecoded: the first step of parsing."""


def new_event(
    data: EventData,
    *,
    source: str,
    subject: str,
    cause: CloudEvent[Any] | None = None,
    event_id: str | None = None,
    time: datetime | None = None,
    force: str | None = None,
) -> Event:
    """Wrap ``data`` in an envelope, continuing the causal chain of ``cause``.

    A participant-facing fact (``EventData.participant_facing``) does not continue it: what caused it (a
    withdrawal command, a staff-only fact) names the person, so it has no ``causationid`` and correlates
    with its subject (the case) instead. Pass a deterministic ``event_id`` (see ``derived_event_id``) so that
    a replayed input yields the very same output event, which downstream inboxes then drop as a repeat.
    """
    correlationid: str | None
    causationid: str | None
    if data.participant_facing:
        correlationid, causationid = subject, None
    else:
        correlationid = (cause.correlationid or cause.id) if cause else None
        causationid = cause.id if cause else None
    # Every argument is already typed and validated: construct without validating again (hot path).
    return Event.model_construct(
        specversion="1.0",
        id=event_id or str(uuid.uuid4()),
        source=source,
        type=data.event_type,
        subject=subject,
        time=time or datetime.now(UTC),
        dataschema=data.dataschema(),
        correlationid=correlationid,
        causationid=causationid,
        force=force,
        datacontenttype="application/json",
        data=data,
    )


_DERIVED_NS = uuid.UUID("0b6f8f0e-2c4c-4d8e-9a57-5f3c1e0d7a11")
_DERIVED_NS_BYTES = _DERIVED_NS.bytes


def derived_event_id(*parts: str) -> str:
    """A stable event id from what caused it, so replays produce identical events.

    The same value as ``str(uuid.uuid5(_DERIVED_NS, "|".join(parts)))`` (a unit test holds them together),
    computed without building UUID objects: it is on the hot path, once for every event emitted."""
    digest = bytearray(hashlib.sha1(_DERIVED_NS_BYTES + "|".join(parts).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
