"""The consent service's Faust app: accepted cases and consent commands in, consent facts out.

rj.referral (rj.case.accepted), rj.scheduling (rj.case.closed, rj.facilitator.registered), rj.commands
    ──► take_in ──► consent.cases, consent.facilitators, consent.erasure_watch ──► outbox ──► rj.consent
every few seconds ──► ask_about_erasures (decliners whose grace period has run, from consent.erasure_watch)
    ──► outbox ──► rj.commands (rj.consent.erasures-due, read back by take_in in case order)
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
from schemas.commands import CommandRejected
from schemas.consent import SYSTEM_CONSENT, AssignFacilitator, ContactAttemptRecorded, DecideErasuresDue
from schemas.envelope import CloudEvent, derived_event_id, new_event
from schemas.scheduling import FacilitatorRegistered
from services.consent import domain, store
from services.runtime import metrics
from services.runtime.app import ServiceApp
from services.runtime.db import after_commit
from services.runtime.decision import Emit
from services.runtime.outbox import Outgoing, facts

SOURCE = domain.SOURCE
TOPICS_IN = (topics.REFERRAL, topics.SCHEDULING, topics.COMMANDS)
log = structlog.get_logger()


def clock() -> datetime:
    """The time decisions are taken at (one reading per batch); tests that compare runs hold it still."""
    return datetime.now(UTC)


CONSUMES = domain.CONSUMES | {FacilitatorRegistered.event_type}


async def take_in(
    conn: asyncpg.Connection,
    events: Sequence[CloudEvent[Any]],
    *,
    uncontactable_after_attempts: int = domain.UNCONTACTABLE_AFTER_ATTEMPTS,
    declined_erasure_delay: timedelta = domain.DECLINED_ERASURE_DELAY,
) -> list[Outgoing]:
    """Apply the batch in its order, so that the same events give the same facts however they are batched:
    an assignment sees the register as the registrations before it left it, and a registration is applied to
    every case the facilitator is assigned to at that point (``domain.on_facilitator_registered``)."""
    now = clock()
    registrations = [e.data for e in events if isinstance(e.data, FacilitatorRegistered)]
    named = [e.data.facilitator_id for e in events if isinstance(e.data, AssignFacilitator | FacilitatorRegistered)]
    await store.lock_register(conn, named)  # a registration and an assignment of one facilitator: one at a time
    register = await store.registrations(conn, named)
    touched = await store.cases_assigned_to(conn, [r.facilitator_id for r in registrations])
    about_cases = [e.data.case_id for e in events if not isinstance(e.data, FacilitatorRegistered)]
    cases = await store.lock_cases(conn, [*about_cases, *touched])
    out: list[Outgoing] = []
    for event in events:
        data = event.data
        if isinstance(data, FacilitatorRegistered):
            out += _apply_registration(cases, data, event, now)
            current = register.get(data.facilitator_id)
            if current is None or current.registered_at <= data.registered_at:
                register[data.facilitator_id] = data
            continue
        registered = register.get(data.facilitator_id) if isinstance(data, AssignFacilitator) else None
        cases[data.case_id], emits = domain.handle(
            cases[data.case_id],
            data,
            command_id=event.id,
            now=now,
            registered_specialist=registered.specialist if registered else None,
            registered_at=registered.registered_at if registered else None,
            uncontactable_after_attempts=uncontactable_after_attempts,
            declined_erasure_delay=declined_erasure_delay,
        )
        _learn_force(cases, data.case_id, event)
        _count_breaches(emits)
        out += _facts(cases, data.case_id, emits, event, now)
    await store.record_facilitators(conn, registrations)
    await store.save_cases(conn, cases)
    await store.watch_erasures(conn, cases)
    return out


ERASURE_ASKED_AGAIN_AFTER = timedelta(minutes=10)
"""A case whose ``rj.consent.erasures-due`` was sent but whose decliner is still watched this long after (its
command not yet read, under a long lag; or read by a replica whose clock was behind) is asked about again."""


async def ask_about_erasures(conn: asyncpg.Connection, *, declined_erasure_delay: timedelta) -> list[Outgoing]:
    """Rule 7: for each case with someone whose grace period after declining has run (``store.erasures_due``), send
    this service ``rj.consent.erasures-due`` on ``rj.commands``, keyed by the case. Whether the erasure is due is
    decided when that command is read, in the case's order, after any consent sent before it
    (``domain.decide_erasures_due``); a repeat decides nothing twice."""
    now = clock()
    due = await store.erasures_due(
        conn, now - declined_erasure_delay, asked_before=now - min(ERASURE_ASKED_AGAIN_AFTER, declined_erasure_delay)
    )
    out: list[Outgoing] = []
    for case_id, force in due.items():
        command = DecideErasuresDue(case_id=case_id, actor=SYSTEM_CONSENT)
        event_id = derived_event_id(SOURCE, case_id, f"erasures-due:{now.isoformat()}")
        event = new_event(command, source=SOURCE, subject=case_id, event_id=event_id, time=now, force=force)
        out.append(Outgoing.event_of(topics.COMMANDS, event))
    if due:
        log.info("declined_erasures_due", cases=len(due))
    return out


def _apply_registration(
    cases: dict[str, domain.ConsentCase | None],
    registration: FacilitatorRegistered,
    event: CloudEvent[Any],
    now: datetime,
) -> list[Outgoing]:
    """A registration changes the specialist flag on every case the facilitator is assigned to now."""
    out: list[Outgoing] = []
    for case_id in sorted(cases):
        case = cases[case_id]
        if case is None or all(f.facilitator_id != registration.facilitator_id for f in case.facilitators):
            continue
        cases[case_id], emits = domain.handle(case, registration, command_id=event.id, now=now)
        out += facts(topics.CONSENT, SOURCE, case_id, emits, cause=event, now=now, force=_force(cases, case_id))
    return out


def _facts(
    cases: dict[str, domain.ConsentCase | None],
    case_id: str,
    emits: Sequence[Emit],
    event: CloudEvent[Any],
    now: datetime,
) -> list[Outgoing]:
    """The decided facts as events. A rejection carries the force the command came with (or none), whether or not
    the case exists: its case's force on it would say that the case exists, which a participant's refusal never
    does. Every other fact carries its case's force."""
    rejected = [e for e in emits if isinstance(e.data, CommandRejected)]
    decided = [e for e in emits if not isinstance(e.data, CommandRejected)]
    return [
        *facts(topics.CONSENT, SOURCE, case_id, decided, cause=event, now=now, force=_force(cases, case_id)),
        *facts(topics.CONSENT, SOURCE, case_id, rejected, cause=event, now=now, force=event.force or None),
    ]


def _count_breaches(emits: Sequence[Emit]) -> None:
    """A recorded attempt that broke the safe-contact record is a safeguarding breach: the fact keeps it, sealed, for
    staff; the count is for operators to alert on (it says nothing of whom). Counted once the batch commits: a batch
    retried after a failure would count it again."""
    breaches = sum(
        1 for emit in emits if isinstance(emit.data, ContactAttemptRecorded) and emit.data.breached_safe_contact
    )
    if breaches:
        after_commit(partial(metrics.SAFE_CONTACT_BREACHES.inc, breaches))


def _learn_force(cases: dict[str, domain.ConsentCase | None], case_id: str, event: CloudEvent[Any]) -> None:
    """A case whose force we have not heard yet (made before forces, or known from a fact that overtook its
    acceptance) takes it from any event that carries it."""
    case = cases.get(case_id)
    if case is not None and case.force is None and event.force:
        cases[case_id] = replace(case, force=event.force)


def _force(cases: dict[str, domain.ConsentCase | None], case_id: str) -> str | None:
    case = cases.get(case_id)
    return case.force if case is not None else None


def build(service: ServiceApp | None = None) -> ServiceApp:
    service = service or ServiceApp("consent", migrations="services.consent.migrations")
    # Who is invited to the survey on an ``uncontactable`` closure depends on the setting scheduling closes by.
    settings = service.settings
    delay = timedelta(seconds=settings.declined_erasure_delay_s)
    handler = partial(
        take_in,
        uncontactable_after_attempts=settings.uncontactable_after_attempts,
        declined_erasure_delay=delay,
    )
    service.consume(list(TOPICS_IN), consumes=CONSUMES, handler=handler)
    # Often enough for the grace period (a quarter of it, at least every 0.5 s), at most the deadline sweeps' pace.
    every = min(settings.deadline_sweep_interval_s, max(settings.declined_erasure_delay_s / 4, 0.5))
    service.every(every, partial(ask_about_erasures, declined_erasure_delay=delay), name="declined_erasure_sweep")
    return service
