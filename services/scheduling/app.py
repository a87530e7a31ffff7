"""The scheduling service's Faust app: ready cases and meeting commands in, meetings and closures out.

rj.referral (rj.case.accepted), rj.consent (consent facts, readiness, withdrawal, contact attempts), rj.commands
    ──► take_in ──► scheduling.cases, .facilitators, .venues, .bookings, .item_watch ──► outbox ──► rj.scheduling
every few seconds ──► follow_up_agreements (items due soon, overdue) ──► rj.scheduling
every few seconds ──► release_timed_items (indirect RJ items whose recipient's chosen time came, from
    scheduling.release_watch) ──► outbox ──► rj.commands (rj.indirect.release-due, read back by take_in in case order)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import asyncpg
import structlog

from schemas import topics
from schemas.envelope import CloudEvent, derived_event_id, new_event
from schemas.indirect import ReleaseDueItems
from schemas.scheduling import SYSTEM_SCHEDULING, RegistrationCommand
from services.runtime.app import ServiceApp
from services.runtime.calendar import add_working_days
from services.runtime.outbox import Outgoing, facts
from services.scheduling import domain, store

SOURCE = "urn:rj:service:scheduling"
TOPICS_IN = (topics.REFERRAL, topics.CONSENT, topics.COMMANDS)
log = structlog.get_logger()


async def take_in(
    conn: asyncpg.Connection, events: Sequence[CloudEvent[Any]], policy: domain.Policy = domain.DEFAULT_POLICY
) -> list[Outgoing]:
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
            cases[subject], book, emits = domain.handle(
                cases[subject], book, event.data, command_id=event.id, now=now, policy=policy
            )
        case = cases.get(subject)
        if case is not None and case.force is None and event.force:  # not heard yet: any event that knows says
            case = cases[subject] = replace(case, force=event.force)
        force = case.force if case is not None else None
        out += facts(topics.SCHEDULING, SOURCE, subject, emits, cause=event, now=now, force=force)
    await store.save_cases(conn, cases)
    await store.save_book(conn, before, book)
    await store.watch_items(conn, cases)
    await store.watch_releases(conn, cases)
    return out


async def follow_up_agreements(
    conn: asyncpg.Connection, policy: domain.Policy = domain.DEFAULT_POLICY
) -> list[Outgoing]:
    """Flag agreement items that came due soon or went overdue (``domain.follow_up``), reading only the cases
    the watch index names."""
    now = datetime.now(UTC)
    today = domain.local_day(now)
    horizon = add_working_days(today, policy.item_due_soon_working_days)
    case_ids = await store.cases_to_follow_up(conn, today, horizon)
    if not case_ids:
        return []
    cases = await store.lock_cases(conn, case_ids)
    out: list[Outgoing] = []
    for key, case in cases.items():
        if case is None:
            continue
        cases[key], emits = domain.follow_up(case, policy=policy, now=now)
        out += facts(topics.SCHEDULING, SOURCE, key, emits, cause=None, now=now, force=case.force)
    await store.save_cases(conn, cases)
    await store.watch_items(conn, cases)
    await store.watch_releases(conn, cases)
    return out


RELEASE_ASKED_AGAIN_AFTER = timedelta(minutes=10)
"""A case whose ``rj.indirect.release-due`` was sent but whose due items are still watched this long after (its
command not yet read, under a long lag; or read by a replica whose clock was behind) is asked about again."""


async def release_timed_items(conn: asyncpg.Connection) -> list[Outgoing]:
    """For each case with an indirect RJ item due (``store.timed_releases_due``: its recipient's chosen time has
    come, or a fact freed it), send this service ``rj.indirect.release-due`` on ``rj.commands``, keyed by the case,
    with the case's force on its envelope like every record about the case. The release is decided when that
    command is read, in the case's order, after every stop, hold or withdrawal sent before it
    (``domain.release_due_items``); a repeat releases nothing twice."""
    now = datetime.now(UTC)
    due = await store.timed_releases_due(conn, now, ask_again_at=now + RELEASE_ASKED_AGAIN_AFTER)
    out: list[Outgoing] = []
    for case_id, force in due:
        command = ReleaseDueItems(case_id=case_id, actor=SYSTEM_SCHEDULING)
        event_id = derived_event_id(SOURCE, case_id, f"release-due:{now.isoformat()}")
        event = new_event(command, source=SOURCE, subject=case_id, event_id=event_id, time=now, force=force)
        out.append(Outgoing.event_of(topics.COMMANDS, event))
    if due:
        log.info("indirect_release_due", cases=len(due))
    return out


def build(service: ServiceApp | None = None) -> ServiceApp:
    service = service or ServiceApp("scheduling", migrations="services.scheduling.migrations")
    settings = service.settings
    policy = domain.Policy(
        uncontactable_after_attempts=settings.uncontactable_after_attempts,
        item_due_soon_working_days=settings.item_due_soon_working_days,
    )
    service.consume(list(TOPICS_IN), consumes=domain.CONSUMES, handler=partial(take_in, policy=policy))
    # Agreement items are deadlines too: swept as often as the Victims' Code ones.
    sweep = partial(follow_up_agreements, policy=policy)
    service.every(settings.deadline_sweep_interval_s, sweep, name="agreement_follow_up")
    # Reuses the Victims' Code sweep's interval: both turn a time that has come into facts, at human pace.
    service.every(settings.deadline_sweep_interval_s, release_timed_items, name="indirect_release_sweep")
    return service
