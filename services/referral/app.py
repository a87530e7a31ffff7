"""The referral service's Faust app: upstream crime events and its own commands in, case facts out.

crime.events, rj.commands, rj.scheduling (rj.case.closed) ──► take_in ──► referral.crime_files, referral.victim_clocks
                                      └─► outbox ──► rj.referral
every few seconds ──► flag_overdue_information ──► rj.referral
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from schemas import topics
from schemas.commands import RecordVictimInformationProvided
from schemas.envelope import CloudEvent
from schemas.referral import VictimInformationDue
from schemas.scheduling import CaseClosed
from schemas.upstream import CrimeOutcomeRecorded, CrimeRecorded, ReferralRequested
from services.referral import domain, store
from services.referral.domain import Emit
from services.runtime import metrics
from services.runtime.app import ServiceApp
from services.runtime.outbox import Outgoing, facts

SOURCE = "urn:rj:service:referral"

UPSTREAM = (CrimeRecorded, CrimeOutcomeRecorded, ReferralRequested)
CONSUMES = frozenset(
    {CrimeRecorded.event_type, CrimeOutcomeRecorded.event_type, ReferralRequested.event_type}
    | {RecordVictimInformationProvided.event_type, CaseClosed.event_type}
)


def publish(
    emits: list[Emit], case_id: str, cause: CloudEvent[Any] | None, now: datetime, force: str
) -> list[Outgoing]:
    return facts(topics.REFERRAL, SOURCE, case_id, emits, cause=cause, now=now, force=force or None)


def force_of(event: CloudEvent[Any]) -> str:
    """The force an upstream event is about: its crime system's CloudEvents ``source`` (see ``case_id_for``)."""
    return event.source


async def take_in(conn: asyncpg.Connection, events: Sequence[CloudEvent[Any]]) -> list[Outgoing]:
    """Apply a batch of new upstream events and commands; return what to publish."""
    now = datetime.now(UTC)
    out: list[Outgoing] = []
    about_files = [e for e in events if isinstance(e.data, (*UPSTREAM, CaseClosed))]
    if about_files:
        keys = await _file_keys(conn, about_files)
        files = await store.lock_crime_files(conn, list(keys.values()))
        new_clocks = []
        for event in about_files:
            if event.id not in keys:
                continue  # the closure of a case no file knows (not ours to reopen)
            key = keys[event.id]
            if isinstance(event.data, CaseClosed):
                files[key], emits = domain.record_case_closed(files[key], event.data.case_id, event.data.closed_at, now)
            elif isinstance(event.data, CrimeRecorded):
                files[key], emits = domain.record_crime(files[key], event.data, now)
            elif isinstance(event.data, CrimeOutcomeRecorded):
                files[key], emits = domain.record_outcome(files[key], event.data, now)
            else:
                files[key], emits = domain.record_request(files[key], event.data, now)
            new_clocks += [domain.clock_from(e.data, key[0]) for e in emits if isinstance(e.data, VictimInformationDue)]
            out += publish(emits, files[key].case_id, event, now, key[0])
        await store.save_crime_files(conn, list(files.values()))
        await store.insert_clocks(conn, new_clocks)
    for event in events:
        if isinstance(event.data, RecordVictimInformationProvided):
            command = event.data
            clock = await store.lock_clock(conn, command.case_id, command.person_id)
            clock, emits = domain.record_information_provided(clock, command, event.id, now)
            if clock is not None:
                await store.save_clocks(conn, [clock])
            out += publish(emits, command.case_id, event, now, clock.force if clock else "")
    return out


async def _file_keys(conn: asyncpg.Connection, events: Sequence[CloudEvent[Any]]) -> dict[str, tuple[str, str]]:
    """The file (force, crime reference) each event is about: an upstream event's from its source and reference,
    a closure's from the case id (absent when no file's current case is that one)."""
    closed = [e.data.case_id for e in events if isinstance(e.data, CaseClosed)]
    by_case = await store.files_of_cases(conn, closed) if closed else {}
    keys = {}
    for event in events:
        if isinstance(event.data, CaseClosed):
            if event.data.case_id in by_case:
                keys[event.id] = by_case[event.data.case_id]
        else:
            keys[event.id] = (force_of(event), event.data.crime_reference)
    return keys


async def flag_overdue_information(conn: asyncpg.Connection) -> list[Outgoing]:
    """Flag every Victims' Code deadline that has passed unmet."""
    now = datetime.now(UTC)
    flagged, out = [], []
    for clock in await store.lock_overdue_clocks(conn, now):
        clock, emits = domain.flag_breach(clock, now)
        flagged.append(clock)
        out += publish(emits, clock.case_id, None, now, clock.force)
    await store.save_clocks(conn, flagged)
    due, overdue = await store.count_open_clocks(conn)
    metrics.VICTIMS_CODE_DEADLINES.labels(state="due").set(due)
    metrics.VICTIMS_CODE_DEADLINES.labels(state="overdue").set(overdue)
    return out


def build(service: ServiceApp | None = None) -> ServiceApp:
    service = service or ServiceApp("referral", migrations="services.referral.migrations")
    # rj.scheduling: a case's closure, after which a new request refers the crime again as a new case.
    service.consume([topics.CRIME_EVENTS, topics.COMMANDS, topics.SCHEDULING], consumes=CONSUMES, handler=take_in)
    service.every(service.settings.deadline_sweep_interval_s, flag_overdue_information, name="victims_code_sweep")
    return service
