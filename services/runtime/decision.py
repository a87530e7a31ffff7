"""What pure domain code hands back to the runtime: decided facts, and state that round-trips as JSON.

Pure (no I/O): domain modules may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

from pydantic import TypeAdapter

from schemas.commands import Command, CommandRejected
from schemas.envelope import EventData


@dataclass(frozen=True)
class Emit:
    """A fact decided by a domain function. ``identity`` names the decision uniquely within its subject
    (e.g. ``meeting-booked:M1``), so a replayed decision yields the very same event id."""

    data: EventData
    identity: str


def rejection(service: str, command: Command, command_id: str, reason: str, now: datetime) -> Emit:
    """The answer to a command that is not allowed: it says why, and nothing else changes."""
    fact = CommandRejected(
        case_id=command.case_id,
        command_id=command_id,
        command_type=command.event_type,
        service=service,
        reason=reason,
        rejected_at=now,
    )
    return Emit(fact, f"rejected:{command_id}")


_ADAPTERS: dict[type, TypeAdapter[Any]] = {}


def _adapter(cls: type) -> TypeAdapter[Any]:
    if cls not in _ADAPTERS:
        _ADAPTERS[cls] = TypeAdapter(cls)
    return _ADAPTERS[cls]


class JsonState:
    """Mixin for a frozen dataclass kept as one JSON document (see ``services.runtime.state``)."""

    def to_json(self) -> str:
        return _adapter(type(self)).dump_json(self).decode()

    @classmethod
    def from_json(cls, document: str | bytes) -> Self:
        return _adapter(cls).validate_json(document)  # type: ignore[no-any-return]
