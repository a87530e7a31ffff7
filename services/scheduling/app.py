"""The scheduling service's Faust app: ready cases and meeting commands in, meetings and closures out.

rj.referral (rj.case.accepted), rj.consent (consent facts, readiness, withdrawal), rj.commands
    ──► take_in ──► scheduling.cases, .facilitators, .venues, .bookings ──► outbox ──► rj.scheduling
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg

from schemas import topics
from schemas.envelope import CloudEvent
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


def build(service: ServiceApp | None = None) -> ServiceApp:
    service = service or ServiceApp("scheduling", migrations="services.scheduling.migrations")
    service.consume([topics.REFERRAL, topics.CONSENT, topics.COMMANDS], consumes=domain.CONSUMES, handler=take_in)
    return service
