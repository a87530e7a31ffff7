"""What pure domain code shares: decided facts, rejections and the guards both case services start with, and
state that round-trips as JSON.

Pure (no I/O): domain modules may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, Self

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


CLOCK_TOLERANCE = timedelta(minutes=5)
"""How far in the future a stated time (``assessed_at``, ``decided_at``, ``held_at``) may lie: clocks differ a
little."""


def in_the_future(name: str, moment: datetime, now: datetime) -> str | None:
    """Why the stated time ``name`` cannot be taken, if it lies further ahead of ``now`` than clocks differ."""
    if moment > now + CLOCK_TOLERANCE:
        return f"{name} {moment.isoformat()} is in the future (now is {now.isoformat()})"
    return None


class CaseWithParticipants(Protocol):
    def participant(self, person_id: str) -> object | None: ...


def not_a_participant(case: CaseWithParticipants | None, person_id: str) -> str | None:
    """Why a command about ``person_id`` is refused on this case, if they do not take part in it. An unknown case
    (``None``) is left to the caller's own refusal."""
    if case is not None and case.participant(person_id) is None:
        return f"{person_id} is not a participant in this case"
    return None


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
