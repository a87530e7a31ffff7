"""The privacy service's Faust app: erasure, retention holds and rectification commands, the case facts
retention counts from, and the erasures of those who declined to take part (rule 7), in; data keys destroyed and
privacy facts out.

rj.referral (rj.case.opened, rj.case.declined), rj.scheduling (rj.case.closed), rj.consent
(rj.participant.erasure-due, rj.participant.added), rj.commands
    ──► take_in ──► privacy.case_people, .cases, .retention_holds, .declined_erasures (kept by a hold);
                │   keystore.data_keys destroyed
                └─► outbox ──► rj.privacy
every so often (a fraction of the shortest retention period) ──► erase_what_is_due ──► rj.privacy

When a decliner is erased is the consent service's decision (``rj.participant.erasure-due``, in case order, so
never after a consent it has read); this service erases on reading it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from schemas import topics
from schemas.common import Actor
from schemas.consent import ParticipantAdded, ParticipantErasureDue
from schemas.envelope import CloudEvent
from schemas.privacy import (
    CaseRetentionErased,
    ErasePerson,
    LiftRetentionHold,
    PlaceRetentionHold,
    RectifyParticipant,
    RetentionHoldPlaced,
)
from schemas.referral import CaseDeclined, CaseOpened, OffenderJoined
from schemas.scheduling import CaseClosed
from services.privacy import domain, store
from services.privacy.domain import SCREENED_OUT, DueErasure, ErasurePlan, RetentionSchedule
from services.runtime.app import ServiceApp
from services.runtime.db import connect
from services.runtime.decision import Emit
from services.runtime.keystore import CASE_PERSON, KeyStore, ensure_schema, record_erased_cases
from services.runtime.outbox import Outgoing, facts
from services.runtime.settings import Settings

SOURCE = "urn:rj:service:privacy"
TOPICS_IN = (topics.REFERRAL, topics.SCHEDULING, topics.CONSENT, topics.COMMANDS, topics.PRIVACY)
COMMANDS = (ErasePerson, PlaceRetentionHold, LiftRetentionHold, RectifyParticipant)
CONSUMES = frozenset(
    {
        CaseOpened.event_type,
        OffenderJoined.event_type,
        CaseDeclined.event_type,
        CaseClosed.event_type,
        ParticipantErasureDue.event_type,
        ParticipantAdded.event_type,
        *(c.event_type for c in COMMANDS),
    }
)
#: Cases looked at per run of the retention job (the rest wait for the next run).
SWEEP_LIMIT = 200


def actor_name(event: Any) -> str:
    return f"{event.actor.kind}:{event.actor.id}"


class PrivacyService(ServiceApp):
    """The privacy service: a ``ServiceApp`` whose database also has the key store's schema, whose keys it
    destroys in its own transactions (the key store lives in the same database)."""

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__("privacy", migrations="services.privacy.migrations", settings=settings)
        self.schedule = RetentionSchedule.parse(self.settings.retention_schedule)
        self._keystore: KeyStore | None = None
        self._keystore_ready = False

    async def pool(self) -> asyncpg.Pool:
        pool = await super().pool()
        if not self._keystore_ready:
            conn = await connect(self.settings)  # its own: the migrations' session lock never rides on the pool
            try:
                await ensure_schema(conn)
                # The cases this service erased whole before the key store recorded erasures: recorded there, so
                # that a key made on one later is made destroyed (idempotent: once a start is enough).
                erased = await store.cases_erased_whole(conn)
                await record_erased_cases(conn, erased, by=SOURCE, reason="retention period ended")
            finally:
                await conn.close()
            self._keystore_ready = True
        return pool

    @property
    def sweep_every_s(self) -> float:
        """How often the retention sweep runs: often enough for the retention schedule's shortest period."""
        return self.schedule.check_every_s

    @property
    def keystore(self) -> KeyStore:
        """Built when first needed: a missing MASTER_KEYS is a configuration fault, retried and logged
        (never a reason to dead-letter a command), and stops nothing else."""
        if self._keystore is None:
            self._keystore = KeyStore.from_settings(self.settings)
        return self._keystore


# --- handlers -----------------------------------------------------------------------------------


async def take_in(
    service: PrivacyService, conn: asyncpg.Connection, events: Sequence[CloudEvent[Any]]
) -> list[Outgoing]:
    """Index people and closures first (a command in the same batch may be about them), then decide commands."""
    now = datetime.now(UTC)
    await store.record_people(
        conn,
        [
            *(
                (e.data.case_id, p.person_id, p.role.value)
                for e in events
                if isinstance(e.data, CaseOpened)
                for p in e.data.participants
            ),
            *(
                (e.data.case_id, e.data.participant.person_id, e.data.participant.role.value)
                for e in events
                if isinstance(e.data, OffenderJoined | ParticipantAdded)
            ),
        ],
    )
    closures = [
        (e.data.case_id, SCREENED_OUT, e.data.decided_at) if isinstance(e.data, CaseDeclined)
        else (e.data.case_id, e.data.reason.value, e.data.closed_at)
        for e in events
        if isinstance(e.data, CaseDeclined | CaseClosed)
    ]  # fmt: skip
    await store.record_closures(conn, closures)
    out: list[Outgoing] = []
    for event in events:
        handler = COMMAND_HANDLERS.get(type(event.data))
        if handler is not None:
            subject, emits = await handler(service, conn, event, now)
            out += facts(topics.PRIVACY, SOURCE, subject, emits, cause=event, now=now)
    return out


async def erase_person(
    service: PrivacyService, conn: asyncpg.Connection, event: CloudEvent[Any], now: datetime
) -> tuple[str, list[Emit]]:
    command: ErasePerson = event.data
    for case_id in sorted(await store.cases_of(conn, command.person_id, command.case_id)):
        await store.lock_case(conn, case_id)  # no hold placed, no sweep, while we decide
    known = await store.cases_of(conn, command.person_id, command.case_id)
    held = await store.holds_on(conn, known)
    plan = domain.plan_erasure(command, event.id, known_cases=known, held_cases=set(held), now=now)
    if not isinstance(plan, ErasurePlan):
        return command.subject, [plan]
    destroyed = 0
    for case_id in plan.cases:
        # The key store keeps who and why for each key; the grounds stay in the fact, under the case's key.
        keys = await service.keystore.destroy(
            conn, command.person_id, case_id, by=actor_name(command), reason=f"erasure command {event.id}"
        )
        destroyed += len(keys)
    await store.mark_erased(conn, [(c, command.person_id) for c in plan.cases], now)
    # What a hold keeps now is erased when the case's last hold is lifted (lift_hold), not forgotten.
    await store.defer_erasures(conn, command.person_id, plan.kept_under_hold, event.id, command.actor, now)
    return command.subject, [domain.person_erased(command, event.id, plan, destroyed, now)]


async def place_hold(
    service: PrivacyService, conn: asyncpg.Connection, event: CloudEvent[Any], now: datetime
) -> tuple[str, list[Emit]]:
    command: PlaceRetentionHold = event.data
    await store.lock_case(conn, command.case_id)
    held = (await store.holds_on(conn, [command.case_id])).get(command.case_id, set())
    emit = domain.place_hold(command, event.id, held, now)
    if isinstance(emit.data, RetentionHoldPlaced):
        await store.place_hold(conn, command.case_id, command.kind, now, actor_name(command))
    return command.case_id, [emit]


async def lift_hold(
    service: PrivacyService, conn: asyncpg.Connection, event: CloudEvent[Any], now: datetime
) -> tuple[str, list[Emit]]:
    command: LiftRetentionHold = event.data
    await store.lock_case(conn, command.case_id)
    held = (await store.holds_on(conn, [command.case_id])).get(command.case_id, set())
    emit = domain.lift_hold(command, event.id, held, now)
    if emit.data.event_type == "rj.command.rejected":
        return command.case_id, [emit]
    await store.lift_hold(conn, command.case_id, command.kind)
    emits = [emit]
    if held == {command.kind}:  # the last hold: erasures asked for meanwhile are carried out now
        for row in await store.take_deferred_erasures(conn, command.case_id):
            keys = await service.keystore.destroy(
                conn, row["person_id"], command.case_id, by=SOURCE, reason=f"erasure command {row['command_id']}"
            )
            await store.mark_erased(conn, [(command.case_id, row["person_id"])], now)
            asked_by = Actor(kind=row["asked_by_kind"], id=row["asked_by_id"])
            emits.append(
                domain.deferred_erasure_done(
                    row["person_id"], command.case_id, row["command_id"], asked_by, event.id, len(keys), now
                )
            )
        for row in await store.take_declined_erasures(conn, command.case_id):
            if command.case_id in await store.erased_cases_of(conn, row["person_id"]):
                continue  # erased meanwhile (by a command kept by the same hold, above)
            declined_by = Actor(kind=row["declined_by_kind"], id=row["declined_by_id"])
            emits.append(
                await _erase_decliner(
                    service,
                    conn,
                    command.case_id,
                    row["person_id"],
                    row["decline_id"],
                    row["declined_at"],
                    declined_by,
                    now,
                    held=True,
                )
            )
    return command.case_id, emits


async def rectify(
    service: PrivacyService, conn: asyncpg.Connection, event: CloudEvent[Any], now: datetime
) -> tuple[str, list[Emit]]:
    command: RectifyParticipant = event.data
    on_case = await store.on_case(conn, command.case_id, command.person_id)
    erased = command.case_id in await store.erased_cases_of(conn, command.person_id)
    return command.case_id, [domain.rectify(command, event.id, on_case=on_case, erased=erased, now=now)]


async def erase_when_due(
    service: PrivacyService, conn: asyncpg.Connection, event: CloudEvent[Any], now: datetime
) -> tuple[str, list[Emit]]:
    """Rule 7: the consent service decided that someone who declined (or withdrew from) taking part is due for
    erasure on this case (``domain.erasure_when_due``): their key there is destroyed now, or, under a retention
    hold, when its last hold is lifted (``lift_hold``). Read again, nothing."""
    due: ParticipantErasureDue = event.data
    case_id, person_id = due.case_id, due.person_id
    await store.lock_case(conn, case_id)  # no hold placed, no sweep, while we decide
    already = case_id in await store.erased_cases_of(conn, person_id)
    held = bool((await store.holds_on(conn, [case_id])).get(case_id))
    decision = domain.erasure_when_due(due, already_erased=already, held=held)
    if decision is DueErasure.nothing:
        return case_id, []
    if decision is DueErasure.keep_until_hold_lifted:
        await store.keep_declined_erasure(
            conn, case_id, person_id, due.decline_id, due.declined_at, due.recorded_at, due.declined_by
        )
        return case_id, []
    emit = await _erase_decliner(
        service, conn, case_id, person_id, due.decline_id, due.declined_at, due.declined_by, now, held=False
    )
    return case_id, [emit]


async def _erase_decliner(
    service: PrivacyService,
    conn: asyncpg.Connection,
    case_id: str,
    person_id: str,
    decline_id: str,
    declined_at: datetime,
    declined_by: Actor,
    now: datetime,
    *,
    held: bool,
) -> Emit:
    keys = await service.keystore.destroy(conn, person_id, case_id, by=SOURCE, reason=f"declined: {decline_id}")
    await store.mark_erased(conn, [(case_id, person_id)], now)
    return domain.declined_participant_erased(
        case_id=case_id,
        person_id=person_id,
        role=(await store.roles_of(conn, person_id)).get(case_id),
        decline_id=decline_id,
        declined_at=declined_at,
        declined_by=declined_by,
        keys=len(keys),
        now=now,
        kept_under_hold=held,
    )


Handler = Callable[[PrivacyService, asyncpg.Connection, CloudEvent[Any], datetime], Any]
COMMAND_HANDLERS: dict[type, Handler] = {
    ErasePerson: erase_person,
    PlaceRetentionHold: place_hold,
    LiftRetentionHold: lift_hold,
    RectifyParticipant: rectify,
    ParticipantErasureDue: erase_when_due,  # a fact, not a command: taken in the same way, in case order
}


async def erase_what_is_due(service: PrivacyService, conn: asyncpg.Connection) -> list[Outgoing]:
    """Retention: on each closed case with no hold, destroy the keys of everyone whose period has run out,
    and once everyone's has, every key left on the case (its own among them). The cases erased whole are erased
    last, after taking at once what erasing them needs in the key store (``lock_cases_for_erasure``): key makers
    on cases of the same stripes wait from then until this commits, so that is kept to the end."""
    now = datetime.now(UTC)
    reason = "retention period ended"
    due_cases = []
    for case in await store.lock_closed_cases(conn, now - service.schedule.shortest, SWEEP_LIMIT):
        due = domain.retention_due(service.schedule, case, now)
        if due is None:
            continue
        destroyed = 0
        for person in due.people:
            destroyed += len(
                await service.keystore.destroy(conn, person.person_id, case.case_id, by=SOURCE, reason=reason)
            )
        await store.mark_erased(conn, [(case.case_id, p.person_id) for p in due.people], now)
        due_cases.append((case, due, destroyed))
    whole = [case.case_id for case, due, _ in due_cases if due.whole_case]
    if whole:
        await service.keystore.lock_cases_for_erasure(conn, whole)
    out: list[Outgoing] = []
    for case, due, destroyed in due_cases:
        if due.whole_case:
            destroyed += len(await service.keystore.destroy_case(conn, case.case_id, by=SOURCE, reason=reason))
            await store.mark_case_erased(conn, case.case_id, now)
        fact = CaseRetentionErased(
            case_id=case.case_id,
            outcome=case.outcome,
            closed_at=case.closed_at,
            people=list(due.people),
            whole_case=due.whole_case,
            keys_destroyed=destroyed,
            erased_at=now,
        )
        identity = "retention-erased:" + ",".join(sorted(p.person_id for p in due.people))
        identity += f"|{CASE_PERSON}" if due.whole_case else ""
        out += facts(topics.PRIVACY, SOURCE, case.case_id, [Emit(fact, identity)], cause=None, now=now)
    return out


def build(service: PrivacyService | None = None) -> PrivacyService:
    service = service or PrivacyService()
    privacy = service

    async def handle(conn: asyncpg.Connection, events: Sequence[CloudEvent[Any]]) -> list[Outgoing]:
        return await take_in(privacy, conn, events)

    async def sweep(conn: asyncpg.Connection) -> list[Outgoing]:
        return await erase_what_is_due(privacy, conn)

    # It reads its own topic too, as its steward: no other service reads rj.privacy yet.
    service.consume(
        list(TOPICS_IN),
        consumes=CONSUMES,
        handler=handle,
    )
    service.every(service.sweep_every_s, sweep, name="retention")
    return service
