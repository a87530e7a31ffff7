"""Read benchmark of the facilitator API: p99 of the case page and the case list with 100,000 cases in the read
model (issue 17 asks for under 50 ms), beside the same server's cheapest authenticated route as the ceiling.

    .venv/bin/python -m bench.api_reads --cases 100000 --requests 2000

It makes a fresh database, migrates schema ``api`` (the runtime's tables, the api's migrations and the key store)
and fills the read model through the projection itself: ``services.api.readmodel.take_in`` on generated facts, with
privacy keys installed as the api service installs them, so personal data is sealed at rest as in production. Each
case is opened with a victim and an offender, across 2 forces and 40 facilitators, and goes some way through its
life (accepted, a facilitator assigned, Victims' Code clocks, consents, ready, a note, a meeting booked, held,
closed): about 10 facts a case. Facts go in batches of ``--batch`` in one transaction each, as the runtime's
consumer hands them over. The first ``--sample`` cases always go through the projection, and its rate is printed;
when the rest would take it longer than ``--fill-budget`` seconds (at ~400 facts/s, 100,000 cases take ~40 min),
the rest is written in bulk instead: the same rows, built from the same facts as ``readmodel`` folds them, sealed
under the same keys, with COPY, by ``--fill-workers`` processes. The output says which. Before the bulk fill, twins
of the first 50 cases are written in bulk and must read back (personal data opened) exactly as the projection's
originals, or the run stops. Then ANALYZE.

Then it serves the real app (``ApiService``: its pool, privacy keys, ``TokenVerifier`` and ``create_app`` with the
real queries) under uvicorn in a child process, with a ``LocalIssuer`` in this one minting the tokens, and times
over HTTP (httpx, one keep-alive connection, one request at a time, the routes interleaved so that all share the
machine's state of the moment):

- ``GET /me`` (HTTP, token check and nothing else): the ceiling;
- ``GET /cases/{id}`` as the assigned facilitator: personal data shown, so the view-log write is in the timing;
- ``GET /cases`` as a coordinator: the first page, filtered by status, by facilitator, and a page deep via the
  cursor (cursors taken by walking the whole list first);
- ``GET /cases`` as a facilitator: their first page, filtered by status, and a page deep via the cursor.

It prints p50, p95, p99 and max of each (ms, from just before the request to the whole body read), the load
average, and exits non-zero if a request failed, a p99 is over ``--target-ms``, or the view log misses a page view.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import os
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pydantic_core
import uvicorn
from pydantic import BaseModel, SecretStr

from bench.steady import percentiles
from schemas.common import Actor, Channel, Contact
from schemas.consent import (
    CaseNoteAdded,
    CaseReadyForMeeting,
    ConsentGiven,
    FacilitatorAssigned,
    PreparationStarted,
    RecordedThrough,
    RecordingMethod,
)
from schemas.envelope import CloudEvent, EventData, new_event
from schemas.referral import (
    CaseAccepted,
    CaseOpened,
    CaseParticipant,
    Participant,
    ReferralRoute,
    Role,
    VictimInformationDue,
    VictimInformationProvided,
)
from schemas.scheduling import CaseClosed, ClosureReason, MeetingBooked, MeetingHeld, MeetingKind
from schemas.upstream import Offence
from services.api import folding, queries, readmodel
from services.api.folding import case_status_after
from services.api.issuer import LocalIssuer
from services.api.principal import Role as StaffRole
from services.runtime import keystore, privacy
from services.runtime.db import create_pool, migrate, transaction
from services.runtime.devstack import database_for_run, ensure_postgres, free_port
from services.runtime.keystore import MasterKeys
from services.runtime.settings import Settings

STATE = Path(".rj/bench")
SERVER_LOG = STATE / "api_reads_server.log"
FORCES = ("urn:police:west-mercia:rms", "urn:police:warwickshire:rms")
FACILITATORS_PER_FORCE = 20
SOURCE = "urn:rj:bench"
STAFF = Actor(kind="staff", id="coord-1")
NOW = datetime.now(UTC).replace(microsecond=0)
SPAN = timedelta(days=730)
"""Cases were opened over the last two years: the list's order (last changed first) spreads over all of them."""


# --- the cases ------------------------------------------------------------------------------------------------


def force_of(i: int) -> str:
    return FORCES[i % len(FORCES)]


def facilitator_of(i: int) -> str:
    return f"F-{i % len(FORCES)}-{(i // len(FORCES)) % FACILITATORS_PER_FORCE:02d}"


STAGES: tuple[tuple[str, float], ...] = (
    ("referred", 0.05),
    ("assigned", 0.10),
    ("consenting", 0.20),
    ("booked", 0.35),
    ("closed", 0.30),
)
"""How far cases have gone, and what share of them: a read model of a service that has run for a while."""
_FACTS_UP_TO = {"referred": 2, "assigned": 6, "consenting": 8, "booked": 11, "closed": 13}


def stage_of(rng: random.Random) -> str:
    roll, total = rng.random(), 0.0
    for stage, share in STAGES:
        total += share
        if roll < total:
            return stage
    return STAGES[-1][0]


def case_id_of(i: int) -> str:
    return f"bench-case-{i:07d}"


def case_facts(i: int, case_id: str | None = None) -> list[CloudEvent[Any]]:
    """The facts of the i-th case, in the order they were decided (each service's with its own envelope time);
    ``case_id`` gives the very same case another id (the bulk fill's check)."""
    rng = random.Random(i)
    case_id = case_id or case_id_of(i)
    force = force_of(i)
    reference = f"BR/{2024 + i % 3}/{i:07d}"
    opened = NOW - SPAN + timedelta(seconds=rng.uniform(0, SPAN.total_seconds() - 30 * 86400))
    victim_id, offender_id = f"{case_id}-V", f"{case_id}-O"
    victim = Participant(
        person_id=victim_id, role=Role.victim, required=True, name=f"Victim {i}",
        date_of_birth=date(1950 + i % 50, 1 + i % 12, 1 + i % 28),
        contact=Contact(email=f"victim{i}@example.org", phone=f"+4477009{i % 100000:05d}", address=f"{i} High St"),
        preferred_channel=Channel.email,
    )  # fmt: skip
    offender = Participant(
        person_id=offender_id, role=Role.offender, required=True, name=f"Offender {i}",
        contact=Contact(address=f"{i} Low Road"), preferred_channel=Channel.letter,
    )  # fmt: skip
    parts = [CaseParticipant(person_id=victim_id, role=Role.victim, required=True),
             CaseParticipant(person_id=offender_id, role=Role.offender, required=True)]  # fmt: skip
    facilitator = facilitator_of(i)
    hours = 0.0

    def at(step_hours: float) -> datetime:
        nonlocal hours
        hours += step_hours * rng.uniform(0.5, 1.5)
        return opened + timedelta(hours=hours)

    facts: list[tuple[datetime, EventData]] = []
    t = at(0)
    facts.append((t, CaseOpened(
        case_id=case_id, crime_reference=reference, force=force,
        offence=Offence(code="105/1", category="violence_against_the_person", description="Common assault"),
        participants=[victim, offender], routes=[ReferralRoute(route="admitted_outcome")], opened_at=t,
        opened_by=STAFF,
    )))  # fmt: skip
    facts.append((t, VictimInformationDue(
        case_id=case_id, crime_reference=reference, person_id=victim_id, reported_at=t, due_by=t + timedelta(days=7),
        due_date=(t + timedelta(days=7)).date(), working_days=5, enhanced_rights=False,
    )))  # fmt: skip
    t = at(4)
    facts.append((t, CaseAccepted(
        case_id=case_id, crime_reference=reference, force=force, specialist_required=False,
        risk_assessment_required=False, sensitivity_reasons=[], participants=parts, decided_at=t, decided_by=STAFF,
        reason="eligible",
    )))  # fmt: skip
    t = at(1)
    facts.append((t, PreparationStarted(
        case_id=case_id, participants=parts, specialist_required=False, risk_assessment_required=False, started_at=t,
    )))  # fmt: skip
    t = at(24)
    facts.append((t, FacilitatorAssigned(
        case_id=case_id, facilitator_id=facilitator, specialist=False, assigned_at=t, assigned_by=STAFF,
    )))  # fmt: skip
    t = at(48)
    facts.append((t, VictimInformationProvided(
        case_id=case_id, crime_reference=reference, person_id=victim_id, provided_at=t, provided_by=STAFF,
        on_time=True,
    )))  # fmt: skip
    for person_id in (victim_id, offender_id):
        t = at(72)
        facts.append((t, ConsentGiven(
            case_id=case_id, person_id=person_id, purpose="participation", given_at=t, recorded_at=t,
            through=RecordedThrough.facilitator, method=RecordingMethod.in_person, given_by=STAFF,
        )))  # fmt: skip
    t = at(1)
    facts.append((t, CaseReadyForMeeting(
        case_id=case_id, participants=parts, specialist_required=False, facilitator_ids=[facilitator], ready_at=t,
        decided_by=STAFF,
    )))  # fmt: skip
    t = at(2)
    facts.append((t, CaseNoteAdded(
        case_id=case_id, note_id=f"{case_id}-N1", person_id=victim_id, text=f"Victim {i} prefers mornings",
        added_at=t, added_by=STAFF,
    )))  # fmt: skip
    t = at(24)
    starts = t + timedelta(days=14)
    facts.append((t, MeetingBooked(
        case_id=case_id, meeting_id="M1", kind=MeetingKind.conference, starts_at=starts,
        ends_at=starts + timedelta(hours=2), lead_facilitator_id=facilitator, facilitator_ids=[facilitator],
        venue_id=f"V-{i % 7}", attendee_ids=[victim_id, offender_id], booked_at=t, booked_by=STAFF,
    )))  # fmt: skip
    held = starts + timedelta(hours=2)
    facts.append((held, MeetingHeld(
        case_id=case_id, meeting_id="M1", kind=MeetingKind.conference, held_at=held, recorded_at=held,
        recorded_by=STAFF,
    )))  # fmt: skip
    closed = held + timedelta(days=rng.uniform(1, 10))
    facts.append((closed, CaseClosed(
        case_id=case_id, reason=ClosureReason.completed, closed_at=closed,
        closed_by=Actor(kind="system", id="scheduling"),
    )))  # fmt: skip
    kept = facts[: _FACTS_UP_TO[stage_of(rng)]]
    return [
        new_event(data, source=SOURCE, subject=case_id, time=when, force=force, event_id=f"{case_id}-{n}")
        for n, (when, data) in enumerate(kept)
    ]


# --- filling the read model -------------------------------------------------------------------------------------


def batches(first: int, last: int, size: int) -> Iterator[list[CloudEvent[Any]]]:
    """Cases ``first`` to ``last - 1``, their facts in batches of about ``size`` (whole cases per batch)."""
    batch: list[CloudEvent[Any]] = []
    for i in range(first, last):
        batch += case_facts(i)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


async def take_in(settings: Settings, first: int, last: int, size: int) -> int:
    """Fold cases ``first`` to ``last - 1`` through the projection, a batch per transaction; the facts taken in."""
    pool = await create_pool(settings)
    facts = 0
    try:
        for batch in batches(first, last, size):
            with privacy.batch_scope():
                async with transaction(pool) as conn:
                    await readmodel.take_in(conn, batch)
            facts += len(batch)
    finally:
        await pool.close()
    return facts


# --- the same rows in bulk -------------------------------------------------------------------------------------


@dataclass
class Rows:
    """The rows the projection writes for a set of cases (of the fact types ``case_facts`` makes), with what is
    personal still to be sealed: ``seal`` seals it all with one key-store round trip per model."""

    cases: list[list[Any]] = field(default_factory=list)
    facilitators: list[list[Any]] = field(default_factory=list)
    participants: list[list[Any]] = field(default_factory=list)
    consents: list[list[Any]] = field(default_factory=list)
    deadlines: list[list[Any]] = field(default_factory=list)
    notes: list[list[Any]] = field(default_factory=list)
    meetings: list[list[Any]] = field(default_factory=list)
    timeline: list[list[Any]] = field(default_factory=list)
    _to_seal: dict[type[BaseModel], list[tuple[dict[str, Any], str, list[Any], int]]] = field(default_factory=dict)

    def sealed_later(self, data: BaseModel, case_id: str, row: list[Any], column: int) -> None:
        self._to_seal.setdefault(type(data), []).append((data.model_dump(mode="json"), case_id, row, column))

    async def seal(self, conn: asyncpg.Connection) -> None:
        batch = privacy.batch()
        for model, pending in self._to_seal.items():
            documents = await batch.seal_documents(conn, model, [(d, c) for d, c, _, _ in pending], owned=True)
            for document, (_, _, row, column) in zip(documents, pending, strict=True):
                row[column] = document
        for row in self.timeline:  # who decided: from the sealed document, as the projection reads it
            row[4] = folding.actor_of(row[6])
        for table in (self.participants, self.consents, self.notes, self.timeline):
            for row in table:
                row[-1] = pydantic_core.to_json(row[-1]).decode()
        self._to_seal.clear()

    TABLES = {
        "cases": ("case_id", "force", "status", "crime_reference", "sensitive", "opened_at", "referral",
                  "offence_category", "specialist_required", "risk_assessment_required", "sensitivity_reasons",
                  "closure_reason", "closed_at", "updated_at"),
        "case_facilitators": ("case_id", "facilitator_id", "specialist", "assigned_at"),
        "deadlines": ("case_id", "kind", "subject_id", "due_by", "due_date", "state", "changed_at"),
        "meetings": ("case_id", "meeting_id", "kind", "status", "starts_at", "ends_at", "lead_facilitator_id",
                     "facilitator_ids", "venue_id", "attendee_ids", "planned_at"),
        "participants": ("case_id", "person_id", "role", "required", "supports", "under_18", "in_custody",
                         "enhanced_rights", "vulnerable", "preferred_channel", "language", "added_at", "details"),
        "consents": ("event_id", "case_id", "person_id", "purpose", "decision", "decided_at", "recorded_at",
                     "through", "method", "fact"),
        "notes": ("event_id", "case_id", "note_id", "person_id", "added_at", "added_by", "fact"),
        "timeline": ("event_id", "case_id", "at", "event_type", "actor", "summary", "fact"),
    }  # fmt: skip

    async def copy(self, conn: asyncpg.Connection) -> None:
        tables = {
            "cases": self.cases, "case_facilitators": self.facilitators, "deadlines": self.deadlines,
            "meetings": self.meetings, "participants": self.participants, "consents": self.consents,
            "notes": self.notes, "timeline": self.timeline,
        }  # fmt: skip
        for table, rows in tables.items():
            await conn.copy_records_to_table(
                table, schema_name="api", columns=list(self.TABLES[table]), records=[tuple(r) for r in rows]
            )


def rows_of(rows: Rows, facts: Sequence[CloudEvent[Any]]) -> None:
    """Add one case's rows, folded as ``readmodel`` folds these facts (in the order given)."""
    case_id = facts[0].data.case_id
    # sensitive: unknown (NULL, which counts as sensitive) until the case is screened, as the projection keeps it
    case: list[Any] = [case_id, facts[0].force, None, None, None, None, None, None, None, None, [], None, None, None]
    people: dict[str, list[Any]] = {}
    deadlines: dict[str, list[Any]] = {}
    meetings: dict[str, list[Any]] = {}
    for event in facts:
        data = event.data
        case[13] = max(case[13] or event.time, event.time)
        if isinstance(data, CaseOpened):
            case[3], case[5], case[6] = data.crime_reference, data.opened_at, data.referral
            case[7] = data.offence.category
            case[2] = case_status_after(case[2], "referred")
            for person in data.participants:
                row = [case_id, person.person_id, person.role.value, person.required, None, None, person.in_custody,
                       person.enhanced_rights, person.vulnerable,
                       person.preferred_channel.value if person.preferred_channel else None, None, data.opened_at,
                       None]  # fmt: skip
                rows.sealed_later(person, case_id, row, 12)
                people[person.person_id] = row
        elif isinstance(data, VictimInformationDue):
            deadlines[data.person_id] = [case_id, "victim_information", data.person_id, data.due_by, data.due_date,
                                         "due", event.time]  # fmt: skip
        elif isinstance(data, VictimInformationProvided):
            deadlines[data.person_id][5:7] = ["met", data.provided_at]
        elif isinstance(data, CaseAccepted | PreparationStarted | CaseReadyForMeeting):
            if isinstance(data, CaseAccepted):
                case[3] = case[3] or data.crime_reference
                case[10] = [r.value for r in data.sensitivity_reasons]
                case[4] = bool(data.sensitivity_reasons) or data.specialist_required
                status, at = "accepted", data.decided_at
            elif isinstance(data, PreparationStarted):
                case[4] = True if data.specialist_required else case[4]  # SQL's "sensitive OR specialist_required"
                status, at = "preparation", data.started_at
            else:
                status, at = "ready", data.ready_at
            if not isinstance(data, CaseReadyForMeeting):
                case[8], case[9] = data.specialist_required, data.risk_assessment_required
            case[2] = case_status_after(case[2], status)
            for p in data.participants:
                row = people[p.person_id]
                row[2:7] = [p.role.value, p.required, p.supports, p.under_18, p.in_custody]
                row[10], row[11] = p.language, min(row[11], at)
        elif isinstance(data, FacilitatorAssigned):
            rows.facilitators.append([case_id, data.facilitator_id, data.specialist, data.assigned_at])
        elif isinstance(data, ConsentGiven):
            row = [event.id, case_id, data.person_id, data.purpose, "given", data.given_at, data.recorded_at,
                   data.through.value, data.method.value, None]  # fmt: skip
            rows.sealed_later(data, case_id, row, 9)
            rows.consents.append(row)
        elif isinstance(data, CaseNoteAdded):
            row = [event.id, case_id, data.note_id, data.person_id, data.added_at,
                   f"{data.added_by.kind}:{data.added_by.id}", None]  # fmt: skip
            rows.sealed_later(data, case_id, row, 6)
            rows.notes.append(row)
        elif isinstance(data, MeetingBooked):
            meetings[data.meeting_id] = [
                case_id, data.meeting_id, data.kind.value, "booked", data.starts_at, data.ends_at,
                data.lead_facilitator_id, data.facilitator_ids, data.venue_id, data.attendee_ids, event.time,
            ]  # fmt: skip
        elif isinstance(data, MeetingHeld):
            meetings[data.meeting_id][3] = "held"
        elif isinstance(data, CaseClosed):
            case[11], case[12] = data.reason.value, data.closed_at
            case[2] = case_status_after(case[2], "closed")
        else:
            raise TypeError(f"the bulk fill does not know {event.type}")
        row = [event.id, case_id, event.time, event.type, None, folding.summary_of(data), None]
        rows.sealed_later(data, case_id, row, 6)
        rows.timeline.append(row)
    rows.cases.append(case)
    rows.participants += people.values()
    rows.deadlines += deadlines.values()
    rows.meetings += meetings.values()


async def write_in_bulk(
    settings: Settings, first: int, last: int, per_transaction: int, case_id: Callable[[int], str] = case_id_of
) -> int:
    """Cases ``first`` to ``last - 1`` written as the projection writes them, with COPY; the facts they stand for.
    ``case_id`` names each (another name than ``case_id_of`` makes a twin of a case already there)."""
    conn = await asyncpg.connect(settings.database_url)
    facts = 0
    try:
        for start in range(first, last, per_transaction):
            rows = Rows()
            for i in range(start, min(last, start + per_transaction)):
                case = case_facts(i, case_id(i))
                rows_of(rows, case)
                facts += len(case)
            with privacy.batch_scope():
                async with conn.transaction():
                    await rows.seal(conn)
                    await rows.copy(conn)
    finally:
        await conn.close()
    return facts


def _bulk_part(database_url: str, master_keys: str, first: int, last: int, per_transaction: int) -> int:
    """One worker process's share of the bulk fill (its own privacy keys, as every api process has them)."""
    settings = Settings(database_url=database_url, master_keys=SecretStr(master_keys))
    privacy.install(privacy.Privacy.from_settings(settings))
    return asyncio.run(write_in_bulk(settings, first, last, per_transaction))


async def fill(settings: Settings, cases: int, *, sample: int, batch: int, budget_s: float, workers: int) -> None:
    """The read model with ``cases`` cases: through the projection while it fits the budget, the rest in bulk."""
    began = time.monotonic()
    sample = min(sample, cases)
    facts = await take_in(settings, 0, sample, batch)
    spent = time.monotonic() - began
    rate = facts / spent
    rest_s = (cases - sample) / (sample / spent)
    print(
        f"projection (readmodel.take_in, {batch} facts a transaction): {sample:,} cases, {facts:,} facts in "
        f"{spent:.1f} s: {rate:,.0f} facts/s, {sample / spent:,.0f} cases/s"
    )
    if rest_s <= budget_s:
        facts += await take_in(settings, sample, cases, batch)
        print(f"filled all {cases:,} cases through the projection in {time.monotonic() - began:.0f} s")
        return
    print(
        f"the other {cases - sample:,} cases would take {rest_s / 60:.1f} min through the projection: written in bulk "
        f"instead (the same rows, sealed the same way, with COPY; {workers} processes)"
    )
    await check_bulk_matches_projection(settings, min(sample, 50))
    began_bulk = time.monotonic()
    master_keys = settings.master_keys.get_secret_value() if settings.master_keys else ""
    bounds = [sample + (cases - sample) * w // workers for w in range(workers + 1)]
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = [
            loop.run_in_executor(pool, _bulk_part, settings.database_url, master_keys, lo, hi, 1000)
            for lo, hi in itertools.pairwise(bounds)
            if hi > lo
        ]
        bulk_facts = sum(await asyncio.gather(*parts))
    bulk_s = time.monotonic() - began_bulk
    print(f"bulk: {cases - sample:,} cases, {bulk_facts:,} facts in {bulk_s:.0f} s ({bulk_facts / bulk_s:,.0f}/s)")


async def check_bulk_matches_projection(settings: Settings, count: int) -> None:
    """The bulk fill writes what the projection writes: twins of the first ``count`` cases, written in bulk, read
    back (personal data opened) the same as the originals the projection made. Then the twins are removed."""
    await write_in_bulk(settings, 0, count, count, case_id=_twin_id)
    conn = await asyncpg.connect(settings.database_url)
    try:
        for i in range(count):
            original = await queries.case_detail(conn, case_id_of(i), personal=True)
            twin = await queries.case_detail(conn, _twin_id(i), personal=True)
            assert original is not None and twin is not None
            same = original.model_dump_json().replace(case_id_of(i), "CASE")
            if twin.model_dump_json().replace(_twin_id(i), "CASE") != same:
                raise SystemExit(f"the bulk fill and the projection differ on case {i}")
        for table in Rows.TABLES:
            await conn.execute(f"DELETE FROM api.{table} WHERE case_id LIKE 'bench-twin-%'")
    finally:
        await conn.close()
    print(f"checked: {count} cases written in bulk read back exactly as the projection's")


def _twin_id(i: int) -> str:
    return f"bench-twin-{i:07d}"


# --- serving the real app --------------------------------------------------------------------------------------


def serve() -> None:
    """The child process: the api service's HTTP app as ``ApiService`` wires it (its pool, the privacy keys, a
    ``TokenVerifier`` on the issuer the environment names, ``create_app`` with the real queries), under uvicorn."""
    from services.api.app import ApiService

    service = ApiService(Settings())
    config = uvicorn.Config(
        service.http, host=service.settings.api_host, port=service.settings.api_port, log_config=None,
        access_log=False, lifespan="off",
    )  # fmt: skip
    asyncio.run(uvicorn.Server(config).serve())


@asynccontextmanager
async def served(settings: Settings, issuer: LocalIssuer) -> AsyncIterator[str]:
    """The api's HTTP server in a child process; its base URL once it answers."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "MASTER_KEYS": settings.master_keys.get_secret_value() if settings.master_keys else "",
        "OIDC_ISSUER": issuer.url,
        "OIDC_JWKS_URL": issuer.jwks_url,
        "API_PORT": str(port),
    }
    child = _start_server(env)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                if child.poll() is not None:
                    raise SystemExit(f"the api server exited ({child.returncode}); see {SERVER_LOG}")
                try:
                    await client.get(f"{base}/me")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        yield base
    finally:
        child.terminate()
        await asyncio.to_thread(child.wait, 10)


def _start_server(env: dict[str, str]) -> subprocess.Popen[bytes]:
    STATE.mkdir(parents=True, exist_ok=True)
    with SERVER_LOG.open("wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "bench.api_reads", "serve"], env=env, stdout=log_file, stderr=subprocess.STDOUT
        )


# --- timing ----------------------------------------------------------------------------------------------------


@dataclass
class Route:
    """One measured request kind: how to make the next request (path, params, token), and its timings."""

    label: str
    next_request: Callable[[], tuple[str, dict[str, str], str]]
    timings_ms: list[float] = field(default_factory=list)


async def walk(client: httpx.AsyncClient, token: str, params: dict[str, str]) -> tuple[int, list[str]]:
    """Every page of a list, as a UI pages it (50 a page): how many cases, and every cursor it handed out."""
    cursors: list[str] = []
    seen = 0
    cursor: str | None = None
    while True:
        page = await get(client, "/cases", {**params, "limit": "50", **({"after": cursor} if cursor else {})}, token)
        seen += len(page["cases"])
        cursor = page["next_cursor"]
        if cursor is None:
            return seen, cursors
        cursors.append(cursor)


async def get(client: httpx.AsyncClient, path: str, params: dict[str, str], token: str) -> Any:
    response = await client.get(path, params=params, headers={"Authorization": f"Bearer {token}"})
    if response.status_code != 200:
        raise SystemExit(f"GET {path} {params}: {response.status_code} {response.text[:300]}")
    return response.json()


async def measure(base: str, issuer: LocalIssuer, conn: asyncpg.Connection, requests: int) -> list[Route]:
    rng = random.Random(17)
    coordinators = {force: issuer.mint(f"C-{n}", StaffRole.coordinator, force) for n, force in enumerate(FORCES)}
    facilitators = {
        facilitator_of(i): (issuer.mint(facilitator_of(i), StaffRole.facilitator, force_of(i)), force_of(i))
        for i in range(len(FORCES) * FACILITATORS_PER_FORCE)
    }
    assigned = [
        (r["case_id"], r["facilitator_id"])
        for r in await conn.fetch("SELECT case_id, facilitator_id FROM api.case_facilitators ORDER BY case_id")
    ]
    statuses = [r["status"] for r in await conn.fetch("SELECT DISTINCT status FROM api.cases ORDER BY 1")]
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        began = time.monotonic()
        force_cursors: dict[str, list[str]] = {}
        for force, token in coordinators.items():
            seen, force_cursors[force] = await walk(client, token, {})
            expected = await conn.fetchval("SELECT count(*) FROM api.cases WHERE force = $1", force)
            assert seen == expected, f"walking {force}'s list gave {seen} cases of {expected}"
        own_cursors: dict[str, list[str]] = {}
        for staff_id, (token, _) in facilitators.items():
            seen, own_cursors[staff_id] = await walk(client, token, {})
            expected = sum(1 for _, f in assigned if f == staff_id)
            assert seen == expected, f"walking {staff_id}'s list gave {seen} cases of {expected}"
        walks = sum(map(len, force_cursors.values())) + sum(map(len, own_cursors.values()))
        print(f"walked every list to take cursors: {walks:,} pages in {time.monotonic() - began:.0f} s")

        def coordinator() -> tuple[str, str]:
            force = rng.choice(FORCES)
            return force, coordinators[force]

        def facilitator() -> tuple[str, str]:
            staff_id = rng.choice(list(facilitators))
            return staff_id, facilitators[staff_id][0]

        def case_page() -> tuple[str, dict[str, str], str]:
            case_id, staff_id = rng.choice(assigned)
            return f"/cases/{case_id}", {}, facilitators[staff_id][0]

        def by_status() -> dict[str, str]:
            return {"status": rng.choice(statuses)}

        def by_facilitator() -> tuple[str, dict[str, str], str]:
            staff_id = rng.choice(list(facilitators))
            return "/cases", {"facilitator": staff_id}, coordinators[facilitators[staff_id][1]]

        def deep(cursors: dict[str, list[str]], token_of: Callable[[str], str]) -> tuple[str, dict[str, str], str]:
            whose = rng.choice([k for k, v in cursors.items() if v])
            return "/cases", {"after": rng.choice(cursors[whose])}, token_of(whose)

        routes = [
            Route("ceiling: GET /me", lambda: ("/me", {}, coordinator()[1])),
            Route("GET /cases/{id} (facilitator, personal)", case_page),
            Route("GET /cases coordinator: first page", lambda: ("/cases", {}, coordinator()[1])),
            Route("GET /cases coordinator: ?status=", lambda: ("/cases", by_status(), coordinator()[1])),
            Route("GET /cases coordinator: ?facilitator=", by_facilitator),
            Route("GET /cases coordinator: deep page", lambda: deep(force_cursors, coordinators.__getitem__)),
            Route("GET /cases facilitator: first page", lambda: ("/cases", {}, facilitator()[1])),
            Route("GET /cases facilitator: ?status=", lambda: ("/cases", by_status(), facilitator()[1])),
            Route("GET /cases facilitator: deep page", lambda: deep(own_cursors, lambda s: facilitators[s][0])),
        ]
        if not all(force_cursors.values()) or not any(own_cursors.values()):
            raise SystemExit("too few cases for a second page of every list: give more --cases")
        for warm_up in (True, False):
            for _ in range(min(100, requests) if warm_up else requests):
                for route in routes:
                    path, params, token = route.next_request()
                    headers = {"Authorization": f"Bearer {token}"}
                    started = time.perf_counter()
                    response = await client.get(path, params=params, headers=headers)
                    elapsed = (time.perf_counter() - started) * 1000
                    if response.status_code != 200:
                        raise SystemExit(f"GET {path} {params}: {response.status_code} {response.text[:300]}")
                    if not warm_up:
                        route.timings_ms.append(elapsed)
    return routes


def report(routes: Sequence[Route], target_ms: float) -> bool:
    """Print the table; whether every measured route (not the ceiling) is within the target at p99."""
    width = max(len(r.label) for r in routes) + 2
    print(f"\nlatency over HTTP, one keep-alive connection, one request at a time (ms; target p99 < {target_ms:g})")
    print(f"{'':<{width}}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}{'requests':>10}")
    within = True
    for n, route in enumerate(routes):
        p50, p95, p99, top = percentiles(route.timings_ms)
        over = n > 0 and p99 >= target_ms
        within = within and not over
        mark = "  over target" if over else ""
        print(f"{route.label:<{width}}{p50:>8.1f}{p95:>8.1f}{p99:>8.1f}{top:>8.1f}{len(route.timings_ms):>10}{mark}")
    return within


# --- the run ---------------------------------------------------------------------------------------------------


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


async def main(args: argparse.Namespace) -> int:
    server = await ensure_postgres(STATE)
    async with database_for_run(server, "rj_bench_reads") as database_url:
        settings = Settings(database_url=database_url, master_keys=SecretStr(MasterKeys.generate("bench1")))
        privacy.install(privacy.Privacy.from_settings(settings))
        conn = await asyncpg.connect(database_url)
        try:
            await migrate(conn, "api", "services.api.migrations")
            await keystore.ensure_schema(conn)
            print(f"load average before the fill: {load_average()}")
            await fill(settings, args.cases, sample=args.sample, batch=args.batch, budget_s=args.fill_budget,
                       workers=args.fill_workers)  # fmt: skip
            await conn.execute("ANALYZE")
            counts = await conn.fetchrow(
                """SELECT (SELECT count(*) FROM api.cases) AS cases, (SELECT count(*) FROM api.timeline) AS timeline,
                          (SELECT count(*) FROM api.participants) AS participants"""
            )
            print(f"read model: {counts['cases']:,} cases, {counts['participants']:,} participants, "
                  f"{counts['timeline']:,} timeline entries; analysed")  # fmt: skip
            logged_before = await conn.fetchval("SELECT count(*) FROM api.outbox")
            async with LocalIssuer(STATE / "api_reads_issuer.pem") as issuer, served(settings, issuer) as base:
                print(f"load average before timing: {load_average()}")
                routes = await measure(base, issuer, conn, args.requests)
                print(f"load average after timing: {load_average()}")
            logged = await conn.fetchval("SELECT count(*) FROM api.outbox") - logged_before
        finally:
            await conn.close()
    within = report(routes, args.target_ms)
    page_views = len(routes[1].timings_ms) + min(100, args.requests)
    print(f"view log: {logged:,} rj.view.logged written for {page_views:,} case pages shown")
    if logged != page_views:
        print("the view log does not match the case pages shown", file=sys.stderr)
        return 1
    return 0 if within else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve()
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=100_000, help="cases in the read model")
    parser.add_argument("--requests", type=int, default=2000, help="timed requests of each kind")
    parser.add_argument("--sample", type=int, default=2000, help="cases filled through the projection at least")
    parser.add_argument("--batch", type=int, default=500, help="facts a transaction, through the projection")
    parser.add_argument("--fill-budget", type=float, default=180.0, help="seconds the projection may take for the rest")
    parser.add_argument("--fill-workers", type=int, default=2, help="processes writing in bulk")
    parser.add_argument("--target-ms", type=float, default=50.0, help="the p99 every read must stay under")
    sys.exit(asyncio.run(main(parser.parse_args())))
