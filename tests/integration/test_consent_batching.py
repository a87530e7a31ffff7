"""The consent service gives the same facts for the same events however the stream is cut into batches.

Its real ``take_in`` against the real PostgreSQL: one generated stream of registrations (a facilitator made
a specialist, then not, and back), accepted cases, assignments, assessments, preparation meetings,
consents, withdrawals, holds and resumes is applied once one event per transaction, and once cut into
random batches. The facts (ids, types, contents, in order) and the final states must be the same: before
this, registrations were applied ahead of every case event of their batch, so whether an assignment saw a
facilitator as a specialist depended on where the batch boundary fell.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.common import Actor
from schemas.consent import (
    PARTICIPATION,
    AssignFacilitator,
    GiveConsent,
    PutCaseOnHold,
    RecordedThrough,
    RecordingMethod,
    RecordPreparationMeeting,
    RecordRiskAssessment,
    ResumeCase,
    RiskLevel,
    WithdrawConsent,
)
from schemas.envelope import CloudEvent, EventData, new_event
from schemas.referral import CaseAccepted, CaseParticipant, Role
from schemas.scheduling import FacilitatorRegistered, WeeklyHours
from services.consent import app as consent_app
from services.consent import store
from services.runtime.db import create_pool, migrate
from services.runtime.devstack import create_database, drop_database
from services.runtime.privacy import Privacy, batch_scope
from services.runtime.settings import Settings

pytestmark = pytest.mark.integration

NOW = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
STAFF = Actor(kind="staff", id="staff-1")
CASES = ("case-a", "case-b")
PEOPLE = ("victim", "offender")
FACILITATORS = ("fac-1", "fac-2")


@pytest.fixture
async def pool(pg_server: str) -> AsyncIterator[asyncpg.Pool]:
    name = f"rj_test_{uuid.uuid4().hex[:10]}"
    url = await create_database(pg_server, name)
    pool = await create_pool(Settings(database_url=url, db_pool_size=2))
    async with pool.acquire() as conn:
        await migrate(conn, store.SCHEMA, "services.consent.migrations")
    yield pool
    await pool.close()
    await drop_database(pg_server, name)


@pytest.fixture
def still_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Both runs decide at the same moment, so that their facts can be compared whole."""
    monkeypatch.setattr(consent_app, "clock", lambda: NOW)
    yield


def accepted(case_id: str, sensitive: bool) -> CaseAccepted:
    return CaseAccepted(
        case_id=case_id,
        crime_reference=f"CR-{case_id}",
        specialist_required=sensitive,
        risk_assessment_required=sensitive,
        sensitivity_reasons=[],
        participants=[CaseParticipant(person_id=f"{case_id}-{p}", role=Role(p), required=True) for p in PEOPLE],
        decided_at=NOW,
        decided_by=Actor(kind="system", id="referral-service"),
        reason="eligible",
    )


def registered(facilitator_id: str, specialist: bool, minute: int) -> FacilitatorRegistered:
    return FacilitatorRegistered(
        facilitator_id=facilitator_id,
        specialist=specialist,
        working_hours=[WeeklyHours(weekday=0, start="09:00", end="17:00")],
        timezone="UTC",
        registered_at=NOW - timedelta(hours=1) + timedelta(minutes=minute),
        registered_by=STAFF,
    )


cases = st.sampled_from(CASES)
people = st.sampled_from(PEOPLE)
step = st.one_of(
    st.tuples(st.just("register"), st.sampled_from(FACILITATORS), st.booleans()),
    st.tuples(st.just("assign"), cases, st.sampled_from(FACILITATORS)),
    st.tuples(st.just("risk"), cases, st.booleans()),
    st.tuples(st.just("met"), cases, people),
    st.tuples(st.just("give"), cases, people),
    st.tuples(st.just("withdraw"), cases, people),
    st.tuples(st.just("hold"), cases),
    st.tuples(st.just("resume"), cases),
)


def stream(steps: list[tuple[Any, ...]], sensitive: tuple[bool, bool]) -> list[EventData]:
    events: list[EventData] = [registered(f, False, 0) for f in FACILITATORS]
    events += [accepted(c, s) for c, s in zip(CASES, sensitive, strict=True)]
    for minute, (kind, *args) in enumerate(steps, start=1):
        if kind == "register":
            events.append(registered(args[0], args[1], minute))
        elif kind == "assign":
            events.append(AssignFacilitator(case_id=args[0], actor=STAFF, facilitator_id=args[1]))
        elif kind == "risk":
            events.append(
                RecordRiskAssessment(
                    case_id=args[0], actor=STAFF, assessed_at=NOW, level=RiskLevel.low, safe_to_proceed=args[1]
                )
            )
        elif kind == "met":
            person = f"{args[0]}-{args[1]}"
            events.append(
                RecordPreparationMeeting(
                    case_id=args[0], actor=STAFF, person_id=person, met_at=NOW, method=RecordingMethod.phone
                )
            )
        elif kind in ("give", "withdraw"):
            model = GiveConsent if kind == "give" else WithdrawConsent
            events.append(
                model(
                    case_id=args[0],
                    actor=STAFF,
                    person_id=f"{args[0]}-{args[1]}",
                    purpose=PARTICIPATION,
                    through=RecordedThrough.facilitator,
                    method=RecordingMethod.phone,
                )
            )
        elif kind == "hold":
            events.append(PutCaseOnHold(case_id=args[0], actor=STAFF, concern="a threat", raised_by="a neighbour"))
        else:
            events.append(ResumeCase(case_id=args[0], actor=STAFF, reason="police checked"))
    return events


def envelopes(events: list[EventData]) -> list[CloudEvent[Any]]:
    def subject(data: EventData) -> str:
        return data.facilitator_id if isinstance(data, FacilitatorRegistered) else data.case_id  # type: ignore[attr-defined]

    return [new_event(d, source="urn:test", subject=subject(d), event_id=f"in-{i}") for i, d in enumerate(events)]


async def run(pool: asyncpg.Pool, events: list[CloudEvent[Any]], cuts: list[int]) -> tuple[list[Any], list[Any]]:
    """Apply ``events`` in batches ending at ``cuts``; the facts emitted in order, and the final states."""
    async with pool.acquire() as conn:
        await conn.execute("TRUNCATE consent.cases, consent.facilitators")
    out: list[Any] = []
    bounds = [0, *sorted(set(cuts)), len(events)]
    for start, end in zip(bounds, bounds[1:], strict=False):
        if start == end:
            continue
        async with pool.acquire() as conn, conn.transaction():
            with batch_scope(Privacy.disabled()):
                sent = await consent_app.take_in(conn, events[start:end])
        out += [(o.event_id, o.key, o.event.type if o.event else None, o.value) for o in sent]
    async with pool.acquire() as conn:
        states = await conn.fetch("SELECT key, state FROM consent.cases ORDER BY key")
    return out, [(r["key"], r["state"]) for r in states]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(step, min_size=5, max_size=30),
    sensitive=st.tuples(st.booleans(), st.booleans()),
    cuts=st.lists(st.integers(min_value=1, max_value=40), max_size=8),
)
async def test_the_same_events_give_the_same_facts_however_they_are_batched(
    pool: asyncpg.Pool, still_clock: None, steps: list[tuple[Any, ...]], sensitive: tuple[bool, bool], cuts: list[int]
) -> None:
    events = envelopes(stream(steps, sensitive))
    one_by_one, states_one_by_one = await run(pool, events, list(range(1, len(events))))
    batched, states_batched = await run(pool, events, [c for c in cuts if c < len(events)])
    assert batched == one_by_one
    assert states_batched == states_one_by_one


async def test_a_downgraded_specialist_costs_a_ready_sensitive_case_its_readiness(
    pool: asyncpg.Pool, still_clock: None
) -> None:
    """Registered a specialist, assigned to a sensitive case that becomes ready; then re-registered as not a
    specialist: the case is no longer ready, and says what it needs. All in one batch, and one by one."""
    steps: list[tuple[Any, ...]] = [
        ("register", "fac-1", True),
        ("assign", "case-a", "fac-1"),
        ("risk", "case-a", True),
        *[("met", "case-a", p) for p in PEOPLE],
        *[("give", "case-a", p) for p in PEOPLE],
        ("register", "fac-1", False),
    ]
    events = envelopes(stream(steps, (True, False)))
    for cuts in ([], list(range(1, len(events)))):
        sent, _ = await run(pool, events, cuts)
        types = [t for _, key, t, _ in sent if key == "case-a"]
        assert types[-2:] == ["rj.case.ready-for-meeting", "rj.case.readiness-lost"]
        assert b"a specialist facilitator" in sent[-1][3]
