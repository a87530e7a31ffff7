"""The scheduling service's Faust app: ready cases and meeting commands in, meetings and closures out.

rj.referral (rj.case.accepted), rj.consent (consent facts, readiness, withdrawal), rj.commands
    ──► take_in ──► scheduling.cases, .facilitators, .venues, .bookings ──► outbox ──► rj.scheduling
every few seconds ──► release_timed_items (indirect RJ items whose recipient's chosen time came) ──► rj.scheduling
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg

from schemas import topics
from schemas.envelope import CloudEvent
from schemas.indirect import ReleaseTrigger
from schemas.scheduling import RegistrationCommand
from services.runtime.app import ServiceApp
from services.runtime.outbox import Outgoing, facts
from services.scheduling import domain, store

SOURCE = "urn:rj:service:scheduling"


async def take_in(conn: asyncpg.Connection, events: Sequence[CloudEvent[Any]]) -> list[Outgoing]:
    now = datetime.now(UTC)
    await store.lock_resource_book(conn)
    cases = await store.lock_cases(
        conn, [domain.subject_of(e.data) for e in events if not isinstance(e.data, RegistrationCommand)]
    )
    touched = set().union(*(domain.resources_touched(cases.get(domain.subject_of(e.data)), e.data) for e in events))
    book = before = await store.load_book(conn, touched)
    out: list[Outgoing] = []
    for event in events:
        subject = domain.subject_of(event.data)
        if isinstance(event.data, RegistrationCommand):
            _, book, emits = domain.handle(None, book, event.data, command_id=event.id, now=now)
        else:
            cases[subject], book, emits = domain.handle(cases[subject], book, event.data, command_id=event.id, now=now)
        case = cases.get(subject)
        if case is not None and case.force is None and event.force:  # not heard yet: any event that knows says
            case = cases[subject] = replace(case, force=event.force)
        force = case.force if case is not None else None
        out += facts(topics.SCHEDULING, SOURCE, subject, emits, cause=event, now=now, force=force)
    await store.save_cases(conn, cases)
    await store.save_book(conn, before, book)
    return out


async def release_timed_items(conn: asyncpg.Connection) -> list[Outgoing]:
    """Release the indirect RJ items whose recipient's chosen time has come, where nothing else stands against
    them (``domain.release_due``: the same rules as every other release)."""
    now = datetime.now(UTC)
    cases = await store.lock_cases(conn, await store.cases_with_timed_items_due(conn, now))
    changed: dict[str, domain.CaseSchedule | None] = {}
    out: list[Outgoing] = []
    for key, case in cases.items():
        if case is None:
            continue
        after, emits = domain.release_due(case, now, trigger=ReleaseTrigger.time)
        if emits:
            changed[key] = after
            out += facts(topics.SCHEDULING, SOURCE, key, emits, cause=None, now=now, force=case.force)
    await store.save_cases(conn, changed)
    return out


def build(service: ServiceApp | None = None) -> ServiceApp:
    service = service or ServiceApp("scheduling", migrations="services.scheduling.migrations")
    service.consume([topics.REFERRAL, topics.CONSENT, topics.COMMANDS], consumes=domain.CONSUMES, handler=take_in)
    # Reuses the Victims' Code sweep's interval: both turn a time that has come into facts, at human pace.
    service.every(service.settings.deadline_sweep_interval_s, release_timed_items, name="indirect_release_sweep")
    return service
