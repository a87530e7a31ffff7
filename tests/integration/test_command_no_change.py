"""Every command a service owns gets an answer, also one that changes nothing: consent given twice, the same
facilitator assigned again, a withdrawal repeated. Before, such a command emitted nothing at all, so its sender
(the API's ``GET /commands/{id}``) could not tell "nothing to do" from "not read yet": it stayed pending for ever.

The consent service's real handler under the runtime's ``BatchProcessor``, against the real PostgreSQL: what each
command leaves in the outbox. A command the service sends itself (the erasure sweep's, asked again and again) is
never answered this way: that would flood ``rj.consent`` on every sweep.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, time
from typing import Any

import asyncpg
import pytest

from schemas import topics
from schemas.commands import CommandNoChange
from schemas.common import Actor
from schemas.consent import (
    PARTICIPATION,
    SYSTEM_CONSENT,
    AssignFacilitator,
    DecideErasuresDue,
    GiveConsent,
    RecordedThrough,
    RecordingMethod,
    WithdrawConsent,
)
from schemas.envelope import CloudEvent, EventData, new_event
from schemas.referral import CaseAccepted, CaseParticipant, Role
from schemas.registry import REGISTRY
from schemas.scheduling import CaseClosed, ClosureReason, FacilitatorRegistered, WeeklyHours
from services.consent import app as consent_app
from services.consent import store
from services.runtime.db import create_pool, migrate
from services.runtime.decision import Emit
from services.runtime.devstack import create_database, drop_database
from services.runtime.outbox import Outgoing, facts
from services.runtime.processor import BatchProcessor
from services.runtime.records import Record
from services.runtime.settings import Settings

pytestmark = pytest.mark.integration

STAFF = Actor(kind="staff", id="F-1")
CASE = "case-1"
VICTIM, OFFENDER = "case-1-victim", "case-1-offender"
FORCE = "urn:police:west-mercia:rms"


@pytest.fixture
async def pool(pg_server: str) -> AsyncIterator[asyncpg.Pool]:
    name = f"rj_test_{uuid.uuid4().hex[:10]}"
    url = await create_database(pg_server, name)
    pool = await create_pool(Settings(database_url=url, db_pool_size=2))
    async with pool.acquire() as conn:
        await migrate(conn, store.SCHEMA, "services.consent.migrations")
        await migrate(conn, "probe", None)
    yield pool
    await pool.close()
    await drop_database(pg_server, name)


class Feed:
    """Records on their topics, one offset after another, as the consumer would hand them over."""

    def __init__(self) -> None:
        self.offset = 0

    def record(self, topic: str, data: EventData, event_id: str, subject: str = CASE) -> Record:
        self.offset += 1
        event = new_event(data, source="urn:test", subject=subject, event_id=event_id, force=FORCE)
        return Record(topic, 0, self.offset, subject.encode(), event.to_json())

    def command(self, data: EventData, event_id: str) -> Record:
        return self.record(topics.COMMANDS, data, event_id)


def consent_processor(pool: asyncpg.Pool) -> BatchProcessor:
    return BatchProcessor(
        service="consent",
        schema=store.SCHEMA,
        pool=pool,
        registry=REGISTRY,
        consumes=consent_app.CONSUMES,
        handler=consent_app.take_in,
        max_backoff_s=0.05,
    )


async def outbox(pool: asyncpg.Pool, schema: str = store.SCHEMA) -> list[dict[str, Any]]:
    rows = await pool.fetch(f"SELECT value FROM {schema}.outbox WHERE topic = $1 ORDER BY id", topics.CONSENT)
    return [json.loads(r["value"]) for r in rows]


def caused_by(messages: list[dict[str, Any]], command_id: str) -> list[dict[str, Any]]:
    """What answers ``command_id``: facts caused by it, or naming it."""
    return [m for m in messages if command_id in (m.get("causationid"), m["data"].get("command_id"))]


def accepted() -> CaseAccepted:
    return CaseAccepted(
        case_id=CASE,
        crime_reference="CR-1",
        specialist_required=False,
        risk_assessment_required=False,
        sensitivity_reasons=[],
        participants=[
            CaseParticipant(person_id=VICTIM, role=Role.victim, required=True),
            CaseParticipant(person_id=OFFENDER, role=Role.offender, required=True),
        ],
        decided_at=datetime.now(UTC),
        decided_by=Actor(kind="system", id="referral-service"),
        reason="eligible",
    )


def consent(model: type[GiveConsent | WithdrawConsent], person_id: str) -> GiveConsent | WithdrawConsent:
    return model(
        case_id=CASE,
        actor=STAFF,
        person_id=person_id,
        purpose=PARTICIPATION,
        through=RecordedThrough.facilitator,
        method=RecordingMethod.phone,
    )


def registered() -> FacilitatorRegistered:
    return FacilitatorRegistered(
        facilitator_id="F-1",
        specialist=False,
        working_hours=[WeeklyHours(weekday=0, start=time(9), end=time(17))],
        timezone="UTC",
        registered_at=datetime.now(UTC),
        registered_by=STAFF,
    )


async def test_a_command_that_changes_nothing_is_answered_no_change_once_and_nothing_else(pool: asyncpg.Pool) -> None:
    feed = Feed()
    processor = consent_processor(pool)
    setup = [
        feed.record(topics.SCHEDULING, registered(), "registered", subject="F-1"),
        feed.record(topics.REFERRAL, accepted(), "accepted"),
        feed.command(AssignFacilitator(case_id=CASE, actor=STAFF, facilitator_id="F-1"), "assign-1"),
        feed.command(consent(GiveConsent, VICTIM), "give-1"),
    ]
    await processor.process(setup)
    first = await outbox(pool)
    for command_id in ("assign-1", "give-1"):
        answers = caused_by(first, command_id)
        assert answers and all(m["type"] != CommandNoChange.event_type for m in answers), command_id
    assert not [m for m in first if m["type"] == CommandNoChange.event_type]

    # The same again under new ids (a UI's user pressing twice, a second facilitator recording it too), in one
    # batch, and one of them on its own.
    repeats = [
        feed.command(AssignFacilitator(case_id=CASE, actor=STAFF, facilitator_id="F-1"), "assign-2"),
        feed.command(consent(GiveConsent, VICTIM), "give-2"),
    ]
    await processor.process(repeats)
    after_repeats = await outbox(pool)
    # A withdrawal (the case cannot go on without the offender): facts; and the same withdrawal again.
    await processor.process([feed.command(consent(WithdrawConsent, OFFENDER), "withdraw-1")])
    withdrawn = await outbox(pool)
    assert caused_by(withdrawn, "withdraw-1")
    assert not [
        m for m in withdrawn if m["type"] == CommandNoChange.event_type and m["data"]["command_id"] == "withdraw-1"
    ]
    withdraw_again = feed.command(consent(WithdrawConsent, OFFENDER), "withdraw-2")
    await processor.process([withdraw_again])
    everything = await outbox(pool)
    new = after_repeats[len(first) :] + everything[len(withdrawn) :]
    assert [(m["type"], m["data"]["command_id"]) for m in new] == [
        (CommandNoChange.event_type, "assign-2"),
        (CommandNoChange.event_type, "give-2"),
        (CommandNoChange.event_type, "withdraw-2"),
    ], "exactly one answer each, and no fact"
    for message, (command, command_type) in zip(
        new,
        [("assign-2", "rj.facilitator.assign"), ("give-2", "rj.consent.give"), ("withdraw-2", "rj.consent.withdraw")],
        strict=True,
    ):
        assert message["data"] == {
            "case_id": CASE,
            "command_id": command,
            "command_type": command_type,
            "service": "consent",
            "answered_at": message["data"]["answered_at"],
        }
        assert message["subject"] == CASE and message["force"] == FORCE
        assert message["causationid"] == command, "it continues the command's chain, for its sender"

    # Redelivered (a crash before the offsets were committed): answered once, not twice.
    await processor.process([*repeats, withdraw_again])
    assert await outbox(pool) == everything
    # Sent again under the same id: that is a repeat, answered as one.
    await processor.process([feed.command(consent(GiveConsent, VICTIM), "give-2")])
    (repeat,) = (await outbox(pool))[len(everything) :]
    assert (repeat["type"], repeat["data"]["command_id"]) == ("rj.command.already-handled", "give-2")


async def test_a_command_the_service_sends_itself_is_not_answered_when_it_changes_nothing(pool: asyncpg.Pool) -> None:
    feed = Feed()
    processor = consent_processor(pool)
    await processor.process([feed.record(topics.REFERRAL, accepted(), "accepted")])
    before = await outbox(pool)
    sweeps = [feed.command(DecideErasuresDue(case_id=CASE, actor=SYSTEM_CONSENT), f"sweep-{i}") for i in range(3)]
    await processor.process(sweeps)
    await processor.process([feed.command(DecideErasuresDue(case_id="no-such-case", actor=SYSTEM_CONSENT), "s-x")])
    assert await outbox(pool) == before, "nothing was due: the sweeps are not answered"


async def test_a_command_answered_only_by_a_participant_facing_fact_is_not_also_no_change(pool: asyncpg.Pool) -> None:
    """A participant-facing fact names no command (its envelope starts a chain of its own); the runtime still knows
    which command it was decided on, so the command is not answered "no change" beside it."""
    decided_on: list[str] = []

    async def closes(conn: asyncpg.Connection, events: Sequence[CloudEvent[Any]]) -> list[Outgoing]:
        out: list[Outgoing] = []
        for event in events:
            decided_on.append(event.id)
            closed = CaseClosed(
                case_id=CASE, reason=ClosureReason.not_suitable, closed_at=datetime.now(UTC), closed_by=STAFF
            )
            out += facts(
                topics.CONSENT,
                "urn:probe",
                CASE,
                [Emit(closed, f"closed:{event.id}")],
                cause=event,
                now=closed.closed_at,
            )
        return out

    processor = BatchProcessor(
        service="consent",
        schema="probe",
        pool=pool,
        registry=REGISTRY,
        consumes=frozenset({GiveConsent.event_type}),
        handler=closes,
        max_backoff_s=0.05,
    )
    await processor.process([Feed().command(consent(GiveConsent, VICTIM), "give-1")])
    (closed,) = await outbox(pool, "probe")
    assert decided_on == ["give-1"]
    assert closed["type"] == "rj.case.closed" and "causationid" not in closed
