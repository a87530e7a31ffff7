"""The sender: due messages out through their channel, once, never silently lost.

For each due row of ``notify.scheduled_sends``: claim it (``sending``, the try counted) and COMMIT before the
channel is called; send; then record the result and its fact in one transaction. So a crash between the send and
the record leaves the row ``sending``, never ``waiting``: it is *in doubt*, and is never blindly sent again.

- **In doubt** (a row ``sending`` whose claimer is gone, or ``sending`` longer than ``NOTIFY_SEND_LEASE_S``): each
  sender process holds a session-level advisory lock on its own id (``store.hold_sender_id``) while it lives and
  records that id on the rows it claims; a row whose claimer's lock is free was left by a process that died, and
  is in doubt at once (on start-up, or as soon as another replica looks), while a live replica's sends in flight
  are never taken from it. A channel that can be asked (GOV.UK
  Notify, by our id as its ``reference``; the letter queue, by our id) is asked: it never saw it -> send it now;
  it did -> record it sent. SMTP cannot be asked: the row is marked ``uncertain`` (``rj.notification.uncertain``)
  and the facilitators are told "delivery uncertain", never sent twice and never dropped.
- **Temporary failures** (a 4xx from SMTP, a 429 or connection refused from Notify) wait and go again, with
  backoff (a 429's ``retry_after``), up to ``NOTIFY_MAX_TRIES``; then it fails as ``gave_up``.
- **Permanent failures** fall to the next channel the person's safe-contact record allows (a new notification,
  attempt + 1, its own ``scheduled`` fact), and the facilitators are told.
- **Uncertain** (a 5xx or a dropped connection after the message went): a channel that can be asked is asked at
  once (it has it: recorded; it never saw it: sent again later, as a temporary failure; it cannot be asked now:
  left in doubt); only SMTP's is recorded uncertain for good.

Sends go on continuously (``run``), up to ``NOTIFY_SEND_CONCURRENCY`` at once on a database pool of the sender's
own: a row due now is claimed as soon as a slot is free, not when the slowest send of a round has finished.

What a message says is decided here, from the case as it stands (``compose``): an address rectified meanwhile is
used, an erased person gets nothing. This module holds the loop and the bookkeeping; ``Composer`` (the message
and the address) and the channel senders (``services.notify.channels``) are given to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol, TypeVar

import asyncpg
import structlog

from schemas import topics
from schemas.common import Channel
from schemas.notify import (
    SYSTEM_NOTIFY,
    CancelReason,
    FailureReason,
    NotificationKind,
    NotificationSent,
    NotificationUncertain,
    RecipientKind,
)
from services.notify import app as intake
from services.notify import domain, store
from services.notify.domain import NotifyCase
from services.runtime import privacy
from services.runtime.app import ServiceApp, stop_process_when_it_ends
from services.runtime.db import ConnectionLost, create_pool, transaction
from services.runtime.decision import Emit
from services.runtime.outbox import facts, write_outbox

log = structlog.get_logger()

T = TypeVar("T")

_RETRIED_SQLSTATE_CLASSES = ("08", "25", "40", "53", "55", "57", "58")
"""The database's own trouble: connection (08), read-only or bad transaction state (25), deadlock or serialization
(40), resources (53), lock not available (55), operator intervention such as a shutdown or statement timeout (57),
system errors (58)."""


def _database_trouble(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionLost | OSError | asyncpg.InterfaceError | TimeoutError):
        return True
    return isinstance(exc, asyncpg.PostgresError) and (exc.sqlstate or "")[:2] in _RETRIED_SQLSTATE_CLASSES


class Result(Protocol):
    """What a channel answers (``services.notify.channels.SendResult``)."""

    @property
    def outcome(self) -> Any: ...  # sent | permanent_failure | temporary_failure | uncertain (a StrEnum)
    @property
    def provider_id(self) -> str | None: ...
    @property
    def detail(self) -> str: ...
    @property
    def retry_after_s(self) -> float | None: ...


class ChannelSender(Protocol):
    """A channel (``services.notify.channels.Sender``)."""

    async def send(self, message: Any) -> Any: ...
    async def lookup(self, notification_id: str) -> Any: ...


Composer = Callable[[asyncpg.Connection, asyncpg.Record, store.SendIntent, NotifyCase | None], Awaitable[Any | None]]
"""Builds the channel's message for a claimed row (None: nothing to send it to any more: no address)."""


@dataclass
class Sender:
    pool: asyncpg.Pool
    senders: Mapping[Channel, ChannelSender]
    compose: Composer
    clock: Callable[[], datetime]
    policy: domain.Policy = domain.DEFAULT_POLICY
    batch: int = 16
    lease: timedelta = timedelta(seconds=120)
    max_tries: int = 12
    retry_max: timedelta = timedelta(hours=1)
    cannot_look_up: tuple[type[BaseException], ...] = ()
    lookup_failed: tuple[type[BaseException], ...] = ()
    database_retry_s: float = 30.0
    """How long a group tries again through the database's own trouble before leaving its rows (in doubt, or to
    ``_send_one``)."""
    claimer: int | None = None
    """This process's sender id, locked while it lives (``store.hold_sender_id``); None: in doubt by lease only."""
    stopping: bool = False
    """Set when the loop ends: no send starts from then on (those started finish, then the lock is let go)."""

    async def send_due(self) -> int:
        """Claim what is due (committed), send it all at once, record each result. How many were claimed."""
        rows = await self.claim_due(self.batch)
        await self.send_group(rows)
        return len(rows)

    async def claim_due(self, limit: int) -> list[asyncpg.Record]:
        """Claim up to ``limit`` due rows (committed ``sending``, the try counted): each is then this process's to
        send (``send_group``), or in doubt once this process is gone."""
        with privacy.batch_scope():
            async with transaction(self.pool) as conn:
                return list(await store.claim_due(conn, self.clock(), limit, self.claimer))

    async def send_group(self, rows: Sequence[asyncpg.Record], finished: Callable[[str], object] | None = None) -> None:
        """Send rows this process claimed (``claim_due``) together, each as ``_send_one`` would, with the database's
        part done for the group rather than for each: their intents opened in one query, the last word before the
        channel (``_still_wanted``) in one transaction, and the sends that went recorded in one transaction for each
        round of sends that finished. Under load the claims are big and a message costs a few statements rather than
        a few transactions; idle, a group is one row. ``finished(id)``: called once for each row, when it is done.

        Anything but "sent" (a failure, an uncertain send, no sender or no address) takes ``_send_one``'s paths one
        row at a time: they are rare, and may schedule more. A fault in the group's steps before any channel was
        called leaves its rows to ``_send_one`` each, which finds them as they are; a fault once channels were called
        never sends again: those rows stay ``sending``, in doubt (SMTP's become "delivery uncertain")."""
        unfinished = {row["notification_id"] for row in rows}

        def done(nid: str) -> None:
            if nid in unfinished:
                unfinished.discard(nid)
                if finished is not None:
                    finished(nid)

        try:
            try:
                if self.stopping:  # the process is going: nothing new reaches a channel (claimed, not started)
                    return
                with privacy.batch_scope():
                    ready = await self._ready_to_send(rows, done)
            except Exception as exc:  # no channel called yet: what is left goes the proven way, one at a time
                log.error("notify_group_not_ready", rows=len(unfinished), error=repr(exc))
                for row in rows:
                    if row["notification_id"] in unfinished:
                        await self._send_one(row, in_doubt=False)
                        done(row["notification_id"])
                return
            await self._send_ready(ready, done)
        except Exception as exc:  # a bug must not stop the loop; the rows left stay sending and are resolved in doubt
            log.error("notify_group_send_failed", rows=len(unfinished), error=repr(exc))
        finally:
            for nid in list(unfinished):
                done(nid)

    async def _ready_to_send(
        self, rows: Sequence[asyncpg.Record], done: Callable[[str], None]
    ) -> list[tuple[asyncpg.Record, store.SendIntent, ChannelSender, Any]]:
        """The group's rows that are still wanted, marked started and composed, each with its channel and message;
        the others are finished here (cancelled by a stop, taken by another replica, or recorded as failed)."""
        async with self.pool.acquire() as conn:
            intents = await store.open_intents(conn, rows)
        wanted: list[tuple[asyncpg.Record, store.SendIntent, ChannelSender]] = []
        for row, intent in zip(rows, intents, strict=True):
            sender = self.senders.get(Channel(row["channel"]))
            if sender is None:
                await self._record(row, intent, "permanent_failure", None, "no sender for the channel", None)
                done(row["notification_id"])
            else:
                wanted.append((row, intent, sender))

        async def last_word() -> tuple[list[tuple[asyncpg.Record, store.SendIntent, ChannelSender]], dict[str, Any]]:
            now = self.clock()  # read on each try: the lease runs from the start it records
            with privacy.batch_scope():  # fresh keys for each try
                async with transaction(self.pool) as conn:
                    ids = [r["notification_id"] for r, _, _ in wanted]
                    locked = await store.lock_sending_many(conn, ids, self.claimer)
                    cases = await store.read_cases(
                        conn, {r["case_id"] for r, _, _ in wanted if r["notification_id"] in locked}
                    )
                    going = []
                    for row, intent, sender in wanted:
                        if row["notification_id"] not in locked:
                            continue  # cancelled by a stop while claimed, or another replica's now
                        case = cases.get(row["case_id"])
                        kind, recipient_kind = NotificationKind(row["kind"]), RecipientKind(row["recipient_kind"])
                        reason = domain.stop_reason(case, kind, recipient_kind, intent.recipient_id)
                        if reason is None:
                            going.append((row, intent, sender))
                        else:
                            await self._cancelled(conn, row, intent, reason, now)
                    if self.stopping:  # the process is going: nothing new reaches a channel (claimed, not started)
                        going = []
                    await store.mark_started_many(conn, [r["notification_id"] for r, _, _ in going], now)
                    return going, cases

        # Only the database's own trouble is tried again (a deadlock with intake's cancelling, which locks the rows of
        # one case after another; a lost connection), and for a bounded time: a bug goes to ``send_group``'s
        # fallback, one row at a time, never round and round here.
        going, cases = await self._retrying_database(last_word)
        for row, _, _ in wanted:
            if row["notification_id"] not in {r["notification_id"] for r, _, _ in going}:
                done(row["notification_id"])
        ready = []
        not_composed: list[tuple[asyncpg.Record, store.SendIntent, str, FailureReason | None]] = []
        async with self.pool.acquire() as conn:
            for row, intent, sender in going:
                try:
                    message = await self.compose(conn, row, intent, cases.get(row["case_id"]))
                except Exception as exc:  # a fault in putting it into words: fails for good, staff told, never stuck
                    log.error("notify_message_not_composed", notification_id=row["notification_id"], error=repr(exc))
                    not_composed.append(
                        (row, intent, f"not composed: {type(exc).__name__}", FailureReason.not_composed)
                    )
                    continue
                if message is None:
                    not_composed.append((row, intent, "no address", None))
                    continue
                ready.append((row, intent, sender, message))
        # Recorded once the composing connection is back in the pool: recording takes one of its own, and groups
        # holding one each while waiting for another would empty the pool for good.
        for row, intent, detail, reason in not_composed:
            await self._record(row, intent, "permanent_failure", None, detail, None, reason=reason)
            done(row["notification_id"])
        return ready

    async def _retrying_database(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run ``operation``, trying again on the database's own trouble (deadlock, serialization, a lock or
        statement timeout, a lost or refused connection, a read-only or starting server) for up to
        ``database_retry_s``; anything else (a bug, the data) is raised at once."""
        deadline = asyncio.get_running_loop().time() + self.database_retry_s
        delay = 0.05
        while True:
            try:
                return await operation()
            except Exception as exc:
                if not _database_trouble(exc) or asyncio.get_running_loop().time() + delay > deadline:
                    raise
                log.warning("notify_sender_database_retrying", error=repr(exc), delay=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _send_ready(
        self, ready: Sequence[tuple[asyncpg.Record, store.SendIntent, ChannelSender, Any]], done: Callable[[str], None]
    ) -> None:
        """Call each channel at once; record what went in one transaction for each round of sends that finished.
        Cut off (the process stopping), every channel call still running is cut off with it: none outlives its
        group, so none is still under way once this process lets go of its sender id."""
        sending = {
            asyncio.ensure_future(sender.send(message)): (row, intent, sender) for row, intent, sender, message in ready
        }
        try:
            while sending:
                finished, _ = await asyncio.wait(sending, return_when=asyncio.FIRST_COMPLETED)
                went = []
                for task in finished:
                    row, intent, sender = sending.pop(task)
                    try:
                        result = task.result()
                        if str(result.outcome) == "sent":
                            went.append((row, intent, result))
                            continue
                        with privacy.batch_scope():
                            if str(result.outcome) == "uncertain":
                                await self._ask_after_uncertain(sender, row, intent, result.detail)
                            else:
                                await self._record(row, intent, str(result.outcome), result.provider_id, result.detail,
                                                   result.retry_after_s)  # fmt: skip
                    except Exception as exc:  # it may have gone: left sending, in doubt, resolved as such
                        log.error("notify_send_failed", notification_id=row["notification_id"], error=repr(exc))
                    done(row["notification_id"])
                if went:
                    try:
                        await self._retrying_database(partial(self._record_sent, went))
                    except Exception as exc:  # they went: left sending, in doubt, never sent again
                        log.error("notify_sent_not_recorded", rows=len(went), error=repr(exc))
                    for row, _, _ in went:
                        done(row["notification_id"])
        finally:
            for pending in sending:
                pending.cancel()
            await asyncio.gather(*sending, return_exceptions=True)

    async def _record_sent(self, went: Sequence[tuple[asyncpg.Record, store.SendIntent, Any]]) -> None:
        """``_record`` of "sent" for many rows, in one transaction."""
        now = self.clock()
        with privacy.batch_scope():
            async with transaction(self.pool) as conn:
                by_case: dict[tuple[str, str | None], list[Emit]] = {}
                for row, intent, result in went:
                    if await store.finish(conn, row["notification_id"], "sent", provider_id=result.provider_id,
                                          detail=result.detail):  # fmt: skip
                        emit = self._sent_emit(row, intent, result.provider_id, now)
                        by_case.setdefault((row["case_id"], row["force"]), []).append(emit)
                outgoing = [
                    fact
                    for (case_id, force), emits in by_case.items()
                    for fact in facts(topics.NOTIFY, intake.SOURCE, case_id, emits, cause=None, now=now, force=force)
                ]
                await write_outbox(conn, store.SCHEMA, outgoing)

    def _sent_emit(self, row: asyncpg.Record, intent: store.SendIntent, provider_id: str | None, now: datetime) -> Emit:
        nid = row["notification_id"]
        fact = NotificationSent(
            case_id=row["case_id"], notification_id=nid, recipient_id=intent.recipient_id,
            recipient_kind=RecipientKind(row["recipient_kind"]), kind=NotificationKind(row["kind"]),
            channel=Channel(row["channel"]) if row["channel"] else None, provider_id=provider_id,
            attempt=row["attempt"], sent_at=now, decided_by=SYSTEM_NOTIFY,
        )  # fmt: skip
        return Emit(fact, f"sent:{nid}")

    async def resolve_in_doubt(self, busy: Sequence[str] = ()) -> int:
        """Rows left ``sending`` by a process that is gone, or past the lease: ask the provider, or mark them
        uncertain (see the module). ``busy``: this process's sends still running, never in doubt."""
        with privacy.batch_scope():
            async with transaction(self.pool) as conn:
                rows = await store.claim_in_doubt(conn, self.clock() - self.lease, self.batch, self.claimer, busy)
        for row in rows:
            await self._send_one(row, in_doubt=True)
        return len(rows)

    async def _send_one(self, row: asyncpg.Record, *, in_doubt: bool) -> None:
        try:
            with privacy.batch_scope():
                await self._attempt(row, in_doubt=in_doubt)
        except Exception as exc:  # a bug must not stop the loop; the row stays sending and is resolved as in doubt
            log.error("notify_send_failed", notification_id=row["notification_id"], error=repr(exc))

    async def _attempt(self, row: asyncpg.Record, *, in_doubt: bool) -> None:
        channel = Channel(row["channel"])
        sender = self.senders.get(channel)
        async with self.pool.acquire() as conn:
            [intent] = await store.open_intents(conn, [row])
        if sender is None:
            await self._record(row, intent, "permanent_failure", None, "no sender for the channel", None)
            return
        if in_doubt and row["send_started_at"] is None and self.claimer is not None:
            # Claimed, but its channel was never called (``_still_wanted`` marks a send started, and commits, first):
            # nothing can have gone, so it is not in doubt. It goes now, as this process's: it claimed it again, and
            # ``_still_wanted`` only lets the row's claimer start it. (Without a claimer id of its own a sender cannot
            # tell its claim from another's, and treats the row as in doubt.) A row that keeps failing before its
            # channel is called is given up after NOTIFY_MAX_TRIES such rounds, and the facilitators are told.
            async with self.pool.acquire() as conn:
                rounds = await store.count_doubt_round(conn, row["notification_id"])
            if rounds > self.max_tries:
                await self._record(row, intent, "permanent_failure", None, "failed before its channel was called", None)
                return
            in_doubt = False
        if in_doubt:  # asked before anything else: what the provider has is recorded as it is, stop or not
            try:
                known = await sender.lookup(row["notification_id"])
            except self.cannot_look_up:
                await self._record(row, intent, "uncertain", None, "in doubt after a crash; cannot be asked", None)
                return
            except self.lookup_failed as exc:  # stays sending: asked again after the lease, nothing sent meanwhile
                await self._provider_unreachable(row, intent, exc)
                return
            if known is not None:
                await self._record(row, intent, str(known.outcome), known.provider_id, "found by reference", None)
                return
        wanted, case = await self._still_wanted(row, intent)
        if not wanted:
            return
        try:
            async with self.pool.acquire() as conn:
                message = await self.compose(conn, row, intent, case)
        except Exception as exc:  # a fault in putting it into words: it fails for good, staff told, never stuck
            log.error("notify_message_not_composed", notification_id=row["notification_id"], error=repr(exc))
            await self._record(row, intent, "permanent_failure", None, f"not composed: {type(exc).__name__}", None,
                               reason=FailureReason.not_composed)  # fmt: skip
            return
        if message is None:
            await self._record(row, intent, "permanent_failure", None, "no address", None)
            return
        result = await sender.send(message)
        if str(result.outcome) == "uncertain":
            await self._ask_after_uncertain(sender, row, intent, result.detail)
            return
        await self._record(row, intent, str(result.outcome), result.provider_id, result.detail, result.retry_after_s)

    async def _ask_after_uncertain(
        self, sender: ChannelSender, row: asyncpg.Record, intent: store.SendIntent, detail: str
    ) -> None:
        """A send that may or may not have gone (a 5xx or a dropped connection from GOV.UK Notify): a channel that
        can be asked is asked at once, by our id: it has it -> recorded as it is; it never saw it -> nothing went, so
        it waits and goes again like a temporary failure; it cannot be asked just now -> left ``sending``, in doubt,
        asked again after the lease. Only a channel that can never be asked (SMTP) records it uncertain for good."""
        try:
            known = await sender.lookup(row["notification_id"])
        except self.cannot_look_up:
            await self._record(row, intent, "uncertain", None, detail, None)
            return
        except self.lookup_failed as exc:
            await self._provider_unreachable(row, intent, exc)
            return
        if known is None:
            await self._record(row, intent, "temporary_failure", None, f"{detail}; the provider never saw it", None)
        else:
            await self._record(row, intent, str(known.outcome), known.provider_id, "found by reference", None)

    async def _provider_unreachable(self, row: asyncpg.Record, intent: store.SendIntent, exc: BaseException) -> None:
        """The provider could not be asked about a send in doubt: it stays ``sending`` and is asked again after the
        lease, ``max_tries`` times; then it is recorded uncertain and the facilitator told, never left for ever."""
        log.warning("notify_lookup_failed", notification_id=row["notification_id"], error=repr(exc))
        async with transaction(self.pool) as conn:
            rounds = await store.count_doubt_round(conn, row["notification_id"])
        if rounds >= self.max_tries:
            await self._record(row, intent, "uncertain", None, f"the provider could not be asked {rounds} times", None)

    async def _still_wanted(self, row: asyncpg.Record, intent: store.SendIntent) -> tuple[bool, NotifyCase | None]:
        """The last word before the channel is called, under the row's lock: False if a stop cancelled the row
        while it was claimed, or if the case as it stands no longer lets it go (a withdrawal or hold processed
        since it was decided, while it waited to retry, or while it was in doubt): then it is recorded cancelled
        with the stop's reason, and its fact goes. True: marked started, so no stop cancels it from here on; with the
        case as read here, which the message is then composed from."""
        now, nid = self.clock(), row["notification_id"]
        if self.stopping:  # the process is going: nothing new reaches a channel (the row stays claimed, not started)
            return False, None
        async with transaction(self.pool) as conn:
            if await store.lock_sending(conn, nid, self.claimer) is None:
                return False, None
            case = await store.read_case(conn, row["case_id"])
            reason = domain.stop_reason(
                case, NotificationKind(row["kind"]), RecipientKind(row["recipient_kind"]), intent.recipient_id
            )
            if reason is None:
                await store.mark_started(conn, nid, now)
                return True, case
            await self._cancelled(conn, row, intent, reason, now)
            return False, None

    async def _cancelled(
        self,
        conn: asyncpg.Connection,
        row: asyncpg.Record,
        intent: store.SendIntent,
        reason: CancelReason,
        now: datetime,
    ) -> None:
        """Record a claimed send cancelled (it never reached the channel, or will not again) and say so."""
        if not await store.finish(conn, row["notification_id"], "cancelled", provider_id=None, detail=reason.value):
            return
        emit = intake.cancelled_fact(row["case_id"], row, intent, reason, now)
        await write_outbox(conn, store.SCHEMA, facts(topics.NOTIFY, intake.SOURCE, row["case_id"], [emit], cause=None,
                                                     now=now, force=row["force"]))  # fmt: skip

    async def _record(
        self,
        row: asyncpg.Record,
        intent: store.SendIntent,
        outcome: str,
        provider_id: str | None,
        detail: str,
        retry_after_s: float | None,
        *,
        reason: FailureReason | None = None,
    ) -> None:
        now = self.clock()
        case_id, nid = row["case_id"], row["notification_id"]
        kind, recipient_kind = NotificationKind(row["kind"]), RecipientKind(row["recipient_kind"])
        channel = Channel(row["channel"]) if row["channel"] else None
        base = {
            "case_id": case_id,
            "notification_id": nid,
            "recipient_id": intent.recipient_id,
            "recipient_kind": recipient_kind,
            "kind": kind,
            "channel": channel,
        }
        async with transaction(self.pool) as conn:
            # What went needs nothing of the case; anything else may schedule more from it (read and opened only then).
            case = None if outcome == "sent" else await store.read_case(conn, case_id)
            emits: list[Emit] = []
            if outcome == "sent":
                if not await store.finish(conn, nid, "sent", provider_id=provider_id, detail=detail):
                    return
                emits.append(self._sent_emit(row, intent, provider_id, now))
            elif outcome == "temporary_failure" and row["tries"] < self.max_tries:
                stop = domain.stop_reason(case, kind, recipient_kind, intent.recipient_id)
                if stop is not None:  # the case stopped while this was out: it does not wait to go again
                    await self._cancelled(conn, row, intent, stop, now)
                    return
                backoff = timedelta(seconds=retry_after_s or min(2 ** row["tries"], self.retry_max.total_seconds()))
                await store.retry_later(conn, nid, now + backoff, detail)
                return
            elif outcome == "uncertain":
                if not await store.finish(conn, nid, "uncertain", provider_id=provider_id, detail=detail):
                    return
                uncertain = NotificationUncertain(
                    **base, attempt=row["attempt"], found_at=now, decided_by=SYSTEM_NOTIFY
                )
                emits.append(Emit(uncertain, f"uncertain:{nid}"))
                if case is not None:
                    told = domain.delivery_problem(
                        case, notification=nid, kind=kind, recipient_id=intent.recipient_id,
                        recipient_kind=recipient_kind, problem="uncertain", channel=channel, next_channel=None,
                        now=now,
                    )  # fmt: skip
                    emits += await intake.schedule_intents(conn, case, told, now)
            else:  # permanent, or temporary past the limit
                if not await store.finish(conn, nid, "failed", provider_id=provider_id, detail=detail):
                    return
                permanent = outcome != "temporary_failure"
                # Every channel this message was tried on (its earlier attempts' ids are derived), not just this
                # one: else two channels that both fail for good would take turns for ever.
                earlier = [
                    domain.notification_id(intent.cause_event_id, kind, intent.recipient_id, attempt)
                    for attempt in range(1, row["attempt"])
                ]
                failed_channels = [channel, *await store.channels_of(conn, earlier)] if channel else []
                retry = None
                if case is not None and reason is not FailureReason.not_composed:  # another channel fails alike
                    as_intent = domain.Intent(
                        notification_id=nid, recipient_id=intent.recipient_id, recipient_kind=recipient_kind,
                        kind=kind, channel=channel, due_at=now, urgent=row["urgent"],
                        cause_event_id=intent.cause_event_id, about=row["about"], attempt=row["attempt"],
                        facts=intent.facts,
                    )  # fmt: skip
                    retry = domain.next_attempt(case, as_intent, failed_channels, now, self.policy)
                emits.append(
                    intake.failed_fact(
                        case_id, notification_id=nid, recipient_id=intent.recipient_id, recipient_kind=recipient_kind,
                        kind=kind, channel=channel,
                        reason=reason or (FailureReason.rejected if permanent else FailureReason.gave_up),
                        permanent=permanent,
                        next_channel=retry.channel if retry else None, attempt=row["attempt"], now=now,
                    )
                )  # fmt: skip
                if case is not None:
                    told = domain.delivery_problem(
                        case, notification=nid, kind=kind, recipient_id=intent.recipient_id,
                        recipient_kind=recipient_kind, problem="failed", channel=channel,
                        next_channel=retry.channel if retry else None, now=now,
                    )  # fmt: skip
                    emits += await intake.schedule_intents(conn, case, [*([retry] if retry else []), *told], now)
            force = row["force"]
            await write_outbox(conn, store.SCHEMA, facts(topics.NOTIFY, intake.SOURCE, case_id, emits, cause=None,
                                                         now=now, force=force))  # fmt: skip


STOP_WAIT_S = 30.0
"""How long a stopping sender lets its started sends finish: beyond SMTP's and GOV.UK Notify's timeouts."""


async def run(sender: Sender, database_url: str, poll_interval_s: float) -> None:
    """Send what is due as soon as intake commits it (``LISTEN notify_due``), and at least every poll interval
    (a wake-up lost with a dropped connection, a message whose quiet hours ended); resolve sends in doubt.

    The listening connection also holds this process's sender id (``store.hold_sender_id``): if it is lost, other
    replicas would take this process's sends in flight as in doubt, so the loop stops (and the process with it)
    rather than go on sending under a lock it no longer holds."""
    woken = asyncio.Event()
    lost = asyncio.Event()
    freed = asyncio.Event()  # a send finished while every slot was taken
    in_flight: set[asyncio.Task[None]] = set()  # each group of sends running
    active: set[str] = set()  # the notification ids of the sends not finished yet: a slot each
    listener = await asyncpg.connect(database_url)
    listener.add_termination_listener(lambda *_: lost.set())
    sender.claimer = await store.hold_sender_id(listener)
    await listener.add_listener(store.DUE_CHANNEL, lambda *_: woken.set())
    log.info("notify_sender_started", sender_id=sender.claimer)

    def finished(notification_id: str) -> None:
        active.discard(notification_id)
        freed.set()

    resolved_at = -poll_interval_s
    try:
        while not lost.is_set():
            # Cleared before the claim, not after: a wake-up that comes while claiming is not lost (it would
            # otherwise wait for the next one, or for the poll).
            woken.clear()
            freed.clear()
            loop_time = asyncio.get_running_loop().time()
            if loop_time - resolved_at >= poll_interval_s:
                await sender.resolve_in_doubt(busy=list(active))
                resolved_at = loop_time
            # Sends go on continuously, up to ``batch`` at once: a row due now is claimed as soon as a slot is
            # free, not when the slowest send of a round has finished. What one claim takes goes as a group (its
            # database work shared), each of its rows freeing its slot as it is done.
            while (free := sender.batch - len(active)) > 0:
                rows = await sender.claim_due(free)
                if rows:
                    active.update(row["notification_id"] for row in rows)
                    task = asyncio.create_task(sender.send_group(rows, finished), name=f"send {len(rows)}")
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                if len(rows) < free:
                    break
            waits = (woken, lost, freed) if len(active) >= sender.batch else (woken, lost)
            try:
                await asyncio.wait_for(_either(*waits), poll_interval_s)
            except TimeoutError:
                pass
        raise ConnectionError("the notify sender's lock connection was lost")
    finally:
        # The lock is let go only once no send of this process can still reach a channel: else another replica
        # would take a send still running as in doubt, find nothing yet at the provider, and send it again. No new
        # send starts; those started finish (each bounded by its channel's timeout) and record their results; any
        # still running after that is cut off (in doubt, resolved by the next sender).
        sender.stopping = True
        if in_flight:
            _, running = await asyncio.wait(list(in_flight), timeout=STOP_WAIT_S)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        await listener.close()


async def _either(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


def start(service: ServiceApp, *, clock: Callable[[], datetime]) -> None:
    """Run the sender in ``service``'s worker: the channels from settings, the composer, and the loop, which takes
    the process down if it ever stops (a live process that sends nothing would look healthy)."""
    from services.notify.channels import CannotLookUp, LookupFailed, senders_from_settings
    from services.notify.compose import Composer

    settings = service.settings

    async def send_for_ever() -> None:
        await service.pool()  # the schema migrated
        # A pool of its own: intake's batches do not hold up a send waiting for a connection, nor sends a batch.
        pool = await create_pool(settings.model_copy(update={"db_pool_size": min(settings.notify_send_concurrency, 6)}))
        sender = Sender(
            pool,
            senders_from_settings(settings, pool),
            Composer(settings, clock),
            clock=clock,
            policy=domain.Policy(
                quiet_hours=settings.notify_quiet_hours or None,
                meeting_reminder=timedelta(hours=settings.notify_meeting_reminder_hours),
            ),
            batch=settings.notify_send_concurrency,
            lease=timedelta(seconds=settings.notify_send_lease_s),
            max_tries=settings.notify_max_tries,
            retry_max=timedelta(seconds=settings.notify_retry_max_s),
            cannot_look_up=(CannotLookUp,),
            lookup_failed=(LookupFailed,),
        )
        # Rows left sending by a process that died are in doubt at once on start-up (their claimer's lock is
        # free), not after a lease; a live replica's rows are not (it holds its lock).
        await run(sender, settings.database_url, settings.notify_poll_interval_s)

    send_for_ever.__name__ = "notify_sender"
    service.faust.task(stop_process_when_it_ends(send_for_ever, what="notify sender"))
