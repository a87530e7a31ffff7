"""The consent service's Faust app: accepted cases and consent commands in, consent facts out.

rj.referral (rj.case.accepted), rj.scheduling (rj.case.closed), rj.commands
    ──► take_in ──► consent.cases ──► outbox ──► rj.consent
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from schemas import topics
from schemas.envelope import CloudEvent
from services.consent import domain, store
from services.runtime.app import ServiceApp
from services.runtime.outbox import Outgoing, facts

SOURCE = "urn:rj:service:consent"


async def take_in(conn: asyncpg.Connection, events: Sequence[CloudEvent[Any]]) -> list[Outgoing]:
    now = datetime.now(UTC)
    cases = await store.lock_cases(conn, [e.data.case_id for e in events])
    out: list[Outgoing] = []
    for event in events:
        case_id = event.data.case_id
        cases[case_id], emits = domain.handle(cases[case_id], event.data, command_id=event.id, now=now)
        out += facts(topics.CONSENT, SOURCE, case_id, emits, cause=event, now=now)
    await store.save_cases(conn, cases)
    return out


def build(service: ServiceApp | None = None) -> ServiceApp:
    service = service or ServiceApp("consent", migrations="services.consent.migrations")
    service.consume([topics.REFERRAL, topics.SCHEDULING, topics.COMMANDS], consumes=domain.CONSUMES, handler=take_in)
    return service
