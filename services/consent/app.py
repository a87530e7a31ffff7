"""The consent service's Faust app: accepted cases and consent commands in, consent facts out.

rj.referral (rj.case.accepted), rj.scheduling (rj.case.closed, rj.facilitator.registered), rj.commands
    ──► take_in ──► consent.cases, consent.facilitators ──► outbox ──► rj.consent
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from schemas import topics
from schemas.consent import AssignFacilitator
from schemas.envelope import CloudEvent
from schemas.scheduling import FacilitatorRegistered
from services.consent import domain, store
from services.runtime.app import ServiceApp
from services.runtime.outbox import Outgoing, facts

SOURCE = "urn:rj:service:consent"
CONSUMES = domain.CONSUMES | {FacilitatorRegistered.event_type}


async def take_in(conn: asyncpg.Connection, events: Sequence[CloudEvent[Any]]) -> list[Outgoing]:
    now = datetime.now(UTC)
    # Registrations first: an assignment in the same batch may name a facilitator just registered.
    await store.record_facilitators(conn, [e.data for e in events if isinstance(e.data, FacilitatorRegistered)])
    about_cases = [e for e in events if not isinstance(e.data, FacilitatorRegistered)]
    specialists = await store.specialist_flags(
        conn, [e.data.facilitator_id for e in about_cases if isinstance(e.data, AssignFacilitator)]
    )
    cases = await store.lock_cases(conn, [e.data.case_id for e in about_cases])
    out: list[Outgoing] = []
    for event in about_cases:
        case_id = event.data.case_id
        registered = specialists.get(event.data.facilitator_id) if isinstance(event.data, AssignFacilitator) else None
        cases[case_id], emits = domain.handle(
            cases[case_id], event.data, command_id=event.id, now=now, registered_specialist=registered
        )
        out += facts(topics.CONSENT, SOURCE, case_id, emits, cause=event, now=now)
    await store.save_cases(conn, cases)
    return out


def build(service: ServiceApp | None = None) -> ServiceApp:
    service = service or ServiceApp("consent", migrations="services.consent.migrations")
    service.consume([topics.REFERRAL, topics.SCHEDULING, topics.COMMANDS], consumes=CONSUMES, handler=take_in)
    return service
