"""The notify service's Faust app: case facts and stop commands in, scheduled sends and rj.notify facts out.

rj.referral, rj.consent, rj.scheduling, rj.privacy, rj.api, and on rj.commands the withdraw, decline and hold
commands (read in case order) and notify's own preferences command
    ──► take_in ──► notify.cases (sealed), notify.scheduled_sends (waiting), outbox ──► rj.notify
notify.scheduled_sends ──► the sender (LISTEN notify_due + a poll) ──► SMTP / GOV.UK Notify / the letter queue
    ──► notify.scheduled_sends (sent / failed / uncertain), outbox ──► rj.notify
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import asyncpg
import structlog

from schemas import topics
from schemas.envelope import CloudEvent
from schemas.notify import (
    SYSTEM_NOTIFY,
    CancelReason,
    FailureReason,
    NotificationCancelled,
    NotificationFailed,
    NotificationKind,
    NotificationScheduled,
    RecipientKind,
)
from schemas.scheduling import FacilitatorRegistered, VenueRegistered
from services.notify import domain, store
from services.runtime.app import ServiceApp
from services.runtime.decision import Emit
from services.runtime.outbox import Outgoing, facts

SOURCE = "urn:rj:service:notify"
log = structlog.get_logger()

Clock = Callable[[], datetime]

REGISTRATIONS = frozenset({FacilitatorRegistered.event_type, VenueRegistered.event_type})
CONSUMES: frozenset[str] = domain.CONSUMES | REGISTRATIONS
TOPICS_IN = (topics.REFERRAL, topics.CONSENT, topics.SCHEDULING, topics.PRIVACY, topics.API, topics.COMMANDS)


def utc_now() -> datetime:
    return datetime.now(UTC)


def scheduled_fact(case_id: str, intent: domain.Intent, now: datetime) -> Emit:
    fact = NotificationScheduled(
        case_id=case_id,
        notification_id=intent.notification_id,
        recipient_id=intent.recipient_id,
        recipient_kind=intent.recipient_kind,
        kind=intent.kind,
        channel=intent.channel,
        due_at=intent.due_at,
        urgent=intent.urgent,
        cause_event_id=intent.cause_event_id,
        scheduled_at=now,
        decided_by=SYSTEM_NOTIFY,
    )
    return Emit(fact, f"scheduled:{intent.notification_id}")


def failed_fact(
    case_id: str,
    *,
    notification_id: str,
    recipient_id: str,
    recipient_kind: RecipientKind,
    kind: NotificationKind,
    channel: Any,
    reason: FailureReason,
    permanent: bool,
    next_channel: Any,
    attempt: int,
    now: datetime,
) -> Emit:
    fact = NotificationFailed(
        case_id=case_id,
        notification_id=notification_id,
        recipient_id=recipient_id,
        recipient_kind=recipient_kind,
        kind=kind,
        channel=channel,
        reason_code=reason,
        permanent=permanent,
        next_channel=next_channel,
        attempt=attempt,
        failed_at=now,
        decided_by=SYSTEM_NOTIFY,
    )
    return Emit(fact, f"failed:{notification_id}:{attempt}")


async def schedule_intents(
    conn: asyncpg.Connection, case: domain.NotifyCase, intents: Sequence[domain.Intent], now: datetime
) -> list[Emit]:
    """Insert what was decided; a message with no safe channel fails at once and its facilitators are told."""
    sendable = [i for i in intents if i.channel is not None]
    unsendable = [i for i in intents if i.channel is None]
    emits = [
        scheduled_fact(case.case_id, i, now) for i in await store.schedule(conn, case.case_id, case.force, sendable)
    ]
    for intent in await store.schedule(conn, case.case_id, case.force, unsendable, failed=True):
        emits.append(
            failed_fact(
                case.case_id,
                notification_id=intent.notification_id,
                recipient_id=intent.recipient_id,
                recipient_kind=intent.recipient_kind,
                kind=intent.kind,
                channel=None,
                reason=FailureReason.no_safe_channel,
                permanent=True,
                next_channel=None,
                attempt=0,
                now=now,
            )
        )
        told = domain.delivery_problem(
            case,
            notification=intent.notification_id,
            kind=intent.kind,
            recipient_id=intent.recipient_id,
            recipient_kind=intent.recipient_kind,
            problem="no_safe_channel",
            channel=None,
            next_channel=None,
            now=now,
        )
        emits += [
            scheduled_fact(case.case_id, i, now) for i in await store.schedule(conn, case.case_id, case.force, told)
        ]
    return emits


def cancelled_fact(
    case_id: str, row: asyncpg.Record, intent: store.SendIntent, reason: CancelReason, now: datetime
) -> Emit:
    fact = NotificationCancelled(
        case_id=case_id,
        notification_id=row["notification_id"],
        recipient_id=intent.recipient_id,
        recipient_kind=RecipientKind(row["recipient_kind"]),
        kind=NotificationKind(row["kind"]),
        channel=row["channel"],
        reason_code=reason,
        cancelled_at=now,
        decided_by=SYSTEM_NOTIFY,
    )
    return Emit(fact, f"cancelled:{row['notification_id']}")


async def cancel(conn: asyncpg.Connection, case_id: str, cancels: Sequence[domain.Cancel], now: datetime) -> list[Emit]:
    return [
        cancelled_fact(case_id, row, intent, reason, now)
        for row, intent, reason in [
            *await store.cancel_waiting(conn, case_id, cancels),
            *await store.withdraw_letters(conn, case_id, cancels),  # queued, not printed yet: taken back
        ]
    ]


@dataclass
class _Scheduling:
    """An event's facts on one case whose sends are inserted with the rest of the batch's (``take_in``)."""

    case: domain.NotifyCase
    intents: Sequence[domain.Intent]
    emits: list[Emit]
    cause: CloudEvent[Any]
    scheduled: list[domain.Intent] = field(default_factory=list)


async def take_in(
    conn: asyncpg.Connection,
    events: Sequence[CloudEvent[Any]],
    *,
    policy: domain.Policy = domain.DEFAULT_POLICY,
    clock: Clock = utc_now,
) -> list[Outgoing]:
    """Decide on a batch: registrations to their tables; every other event, case by case, in order: what it
    cancels first, then what it schedules, with their facts, in the batch's transaction.

    The sends the batch schedules are inserted together (their keys loaded in one round trip, one statement):
    before any cancel, so that a cancel finds every send an earlier event scheduled, as it would one at a time; a
    message with no safe channel (rare: it schedules more) goes alone, in its turn."""
    now = clock()
    await store.record_facilitators(conn, [e.data for e in events if isinstance(e.data, FacilitatorRegistered)])
    await store.record_venues(conn, [e.data for e in events if isinstance(e.data, VenueRegistered)])
    about = [e for e in events if e.type not in REGISTRATIONS]
    cases = await store.lock_cases(conn, {c for e in about for c in domain.cases_of(e.data)})
    parts: list[list[Outgoing] | _Scheduling] = []
    waiting: list[_Scheduling] = []

    async def insert_waiting() -> None:
        inserted = await store.schedule_many(conn, [(w.case.case_id, w.case.force, w.intents) for w in waiting])
        for w in waiting:  # a notification id inserted is the first intent's to carry it, as one at a time
            w.scheduled = [i for i in w.intents if i.notification_id in inserted]
            inserted -= {i.notification_id for i in w.scheduled}
        waiting.clear()

    for event in about:
        for case_id in domain.cases_of(event.data):
            decision = domain.decide(
                cases[case_id], event.data, case_id=case_id, event_id=event.id, now=now, policy=policy
            )
            case = decision.case
            if case is not None and case.force is None and event.force:
                case = replace(case, force=event.force)
            cases[case_id] = case
            emits = list(decision.emits)
            if case is not None:
                if decision.cancels and waiting:
                    await insert_waiting()
                emits += await cancel(conn, case_id, decision.cancels, now)
                if decision.intents and all(i.channel is not None for i in decision.intents):
                    waiting.append(_Scheduling(case, decision.intents, emits, event))
                    parts.append(waiting[-1])
                    continue
                if decision.intents:
                    if waiting:
                        await insert_waiting()
                    emits += await schedule_intents(conn, case, decision.intents, now)
            force = case.force if case is not None else event.force
            parts.append(facts(topics.NOTIFY, SOURCE, case_id, emits, cause=event, now=now, force=force))
    if waiting:
        await insert_waiting()
    await store.save_cases(conn, cases)
    out: list[Outgoing] = []
    for part in parts:
        if isinstance(part, _Scheduling):
            emits = [*part.emits, *(scheduled_fact(part.case.case_id, i, now) for i in part.scheduled)]
            part = facts(topics.NOTIFY, SOURCE, part.case.case_id, emits, cause=part.cause, now=now,
                         force=part.case.force)  # fmt: skip
        out += part
    return out


def build(service: ServiceApp | None = None, *, clock: Clock = utc_now) -> ServiceApp:
    service = service or ServiceApp("notify", migrations="services.notify.migrations")
    settings = service.settings
    policy = domain.Policy(
        quiet_hours=settings.notify_quiet_hours or None,
        meeting_reminder=timedelta(hours=settings.notify_meeting_reminder_hours),
    )
    service.consume(TOPICS_IN, consumes=CONSUMES, handler=partial(take_in, policy=policy, clock=clock))
    from services.notify import sender  # the sender imports this module's facts

    sender.start(service, clock=clock)
    return service
