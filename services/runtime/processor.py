"""Takes a batch of Kafka records to committed state: exactly-once effects over at-least-once delivery.

Every record of a batch ends in exactly one of these, decided by ``triage`` (pure) and written in one
PostgreSQL transaction with the service's state and outbox:

- **applied**: parsed, of a type this service consumes; its id is claimed in the inbox (a repeat drops
  out, and a repeated *command* gets an explicit ``rj.command.already-handled``), the service decides,
  and its facts go to the outbox; a command of its own that it decided nothing on (no fact, no
  rejection: consent given again, say) gets an explicit ``rj.command.no-change``;
- **passed over**: a type the service neither owns nor follows, or an unreadable record on a topic
  another service stewards (``schemas.topics.STEWARD_OF``);
- **parked**: of a version newer than the service knows, or about a case that already has an event
  parked; it waits in order in ``parked`` and is applied after the upgrade (``release_parked``);
- **answered**: a command of a type the contract does not know, on the topic this service stewards,
  gets ``rj.command.rejected`` so its sender sees it;
- **dead-lettered**: anything else that cannot be read or applied, for a reason in the data, with the
  reason, the whole original in ``dead_letters`` and a bounded copy on ``rj.deadletter``.

``process`` never raises but for cancellation: infrastructure failures are retried for ever (see
``services.runtime.db.is_data_fault``), and a batch that fails for a reason in its data is retried one
record at a time, so that only the culprit is dead-lettered. A dead letter that cannot be written as
it is (its id refused by the inbox, say) is written without the inbox claim; failing that, it is
retried for ever and alerted on. A failure to write is never a skip.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pydantic_core
import structlog

from schemas import topics
from schemas.commands import CommandAlreadyHandled, CommandNoChange, CommandRejected
from schemas.common import Actor
from schemas.envelope import CloudEvent, derived_event_id, new_event
from schemas.registry import COMMAND_OWNER, NewerVersion, Registry
from services.runtime import metrics
from services.runtime.db import retry_transient, transaction
from services.runtime.deadletters import store_dead_letters
from services.runtime.fieldcrypt import cipher_for
from services.runtime.keystore import KeyCache, KeyStoreError
from services.runtime.outbox import Outgoing, claim_inbox, first_positions, next_positions, write_outbox
from services.runtime.privacy import Privacy, batch_scope, has_sealed_values
from services.runtime.privacy import batch as privacy_batch
from services.runtime.records import Record, describe_error, printable

log = structlog.get_logger()

Event = CloudEvent[Any]
BatchHandler = Callable[[asyncpg.Connection, Sequence[Event]], Awaitable[Sequence[Outgoing]]]


def _sent_by_a_system(event: Event) -> bool:
    """A command whose actor is a system (a service asking itself, on a sweep, whether something is due)."""
    actor = getattr(event.data, "actor", None)
    return isinstance(actor, Actor) and actor.kind == "system"


def inbox_check_switched_off(service: str) -> bool:
    """TEST ONLY: ``RJ_TEST_DISABLE_INBOX=1`` makes every event count as new, a repeat included, so that the fault
    suite can show that it catches a broken guarantee (tests/faults/test_soak.py: with the check off, the soak
    reports commands decided twice). Ids are still recorded in the inbox; only the check is off. It is read here
    and nowhere else, and a service refuses to start with it unless ``RJ_TEST_MODE=1`` says this is a test: a
    deployment can never switch it on by a stray variable."""
    if os.environ.get("RJ_TEST_DISABLE_INBOX", "") in ("", "0"):
        return False
    if os.environ.get("RJ_TEST_MODE") != "1":
        raise RuntimeError("RJ_TEST_DISABLE_INBOX is a test-only switch: it needs RJ_TEST_MODE=1, and no deployment")
    log.critical("inbox_check_disabled_for_a_test", service=service)
    return True


def parked_context(record: Record) -> bytes:
    """What a parked record's sealed bytes are bound to (given again to open them)."""
    return f"parked:{record.position}".encode()


# --- what triage decides for each record ----------------------------------------------------------


@dataclass(frozen=True)
class Apply:
    record: Record
    event: Event
    parked_seq: int | None = None  # when it comes out of ``parked``


@dataclass(frozen=True)
class Park:
    record: Record
    reason: str
    parked_seq: int | None = None  # already parked (a release that found it still too new)


@dataclass(frozen=True)
class Answer:
    """An answer from the runtime itself to the sender of a command (a rejection of an unknown type)."""

    record: Record
    answer: Outgoing
    parked_seq: int | None = None


@dataclass(frozen=True)
class PassOver:
    """A parked record that turned out not to be this service's after its upgrade: let go, unapplied."""

    record: Record
    parked_seq: int | None = None


@dataclass(frozen=True)
class DeadLetterItem:
    record: Record
    reason: str
    event_id: str | None = None  # claimed in the inbox, so a redelivery is not dead-lettered twice
    event_type: str | None = None
    answer: Outgoing | None = None  # a rejection for the sender of a malformed command
    parked_seq: int | None = None
    claim: bool = True


@dataclass(frozen=True)
class Sealed:
    """A record carrying sealed personal values: opened (one key-store query for the whole batch) and then
    parsed like any other, before the batch is applied."""

    record: Record
    document: dict[str, Any]
    event_type: str
    parked_seq: int | None = None


Item = Apply | Park | Answer | PassOver | DeadLetterItem | Sealed


@dataclass
class BatchProcessor:
    service: str
    schema: str
    pool: asyncpg.Pool
    registry: Registry
    consumes: frozenset[str]
    handler: BatchHandler
    max_backoff_s: float = 5.0
    privacy: Privacy = field(default_factory=Privacy.disabled)
    source: str = field(init=False)

    checks_inbox: bool = field(init=False)

    def __post_init__(self) -> None:
        self.source = f"urn:rj:service:{self.service}"
        self.checks_inbox = not inbox_check_switched_off(self.service)

    # --- the batch ------------------------------------------------------------------------------------

    async def process(self, records: Sequence[Record]) -> None:
        """Apply a batch exactly once. Never raises (but for cancellation): see the module docstring."""
        await self.commit([item for item in self.prepare(records) if item is not None])

    def prepare(self, records: Sequence[Record]) -> list[Item | None]:
        """What to do with each record (pure: no I/O), aligned with ``records``; ``None`` passes it over."""
        return [self.triage(record) for record in records]

    async def commit(self, items: Sequence[Item]) -> None:
        """Apply prepared items in one transaction (or, if their data is at fault, one by one)."""
        if items:
            await self._commit_or_isolate(items)

    async def _commit_or_isolate(self, items: Sequence[Item]) -> None:
        items = await self._open_sealed(items)
        try:
            await self._commit(items)
        except Exception as exc:  # a fault in the data somewhere in the batch: find the culprit
            log.warning(
                "batch_failed_isolating", service=self.service, size=len(items), error=describe_error(exc, typed=True)
            )
            for item in items:
                await self._commit_alone(item)

    async def _open_sealed(self, items: Sequence[Item]) -> list[Item]:
        """Items with every ``Sealed`` record opened and parsed: its keys loaded for the whole batch in one
        query (retried for ever while the key store cannot answer: that is never the data's fault), its
        values decrypted (an erased one as its stand-in), then triaged like any record. A value that cannot be
        authentic is the data's fault: a dead letter. The original (sealed) record is what is kept."""
        sealed = [i for i in items if isinstance(i, Sealed)]
        if not sealed:
            return list(items)
        assert self.privacy.store is not None
        pending: dict[int, Any] = {}
        opened: dict[int, Item] = {}
        wanted: set[str] = set()
        for item in sealed:
            try:  # a malformed token is found here, before any key is asked for
                cipher = cipher_for(self.registry.model(item.event_type))
                pending[id(item)] = cipher.prepare_decrypt(item.document["data"], in_place=True)
                wanted |= pending[id(item)].key_ids
            except Exception as exc:  # anything at all: a record that cannot be opened never leaves a batch
                pending.pop(id(item), None)
                opened[id(item)] = self._unopenable(item, exc)
        keys = KeyCache(self.privacy.store)
        try:
            await self._load_keys(keys, wanted)
        except Exception:  # the data's fault (a token's key id refused, say): find whose, one record at a time
            for item in sealed:
                if id(item) not in opened:
                    try:
                        await self._load_keys(keys, pending[id(item)].key_ids)
                    except Exception as exc:
                        opened[id(item)] = self._unopenable(item, exc)
        for item in sealed:
            if id(item) in opened:
                continue
            subject = item.document.get("subject")
            try:
                # Bound to the event's case: a value sealed for another case (or force) never opens here.
                data = pending[id(item)].open(keys, case_id=subject if isinstance(subject, str) else "").data
            except Exception as exc:
                opened[id(item)] = self._unopenable(item, exc)
                continue
            plain = replace(item.record, value=pydantic_core.to_json({**item.document, "data": data}))
            parsed = self._parse(plain, item.document, item.event_type)
            opened[id(item)] = replace(parsed, record=item.record, parked_seq=item.parked_seq)
        return [opened[id(i)] if isinstance(i, Sealed) else i for i in items]

    async def _load_keys(self, keys: KeyCache, key_ids: set[str]) -> None:
        """Load ``key_ids`` into ``keys``: transient failures retried, a key-store fault (a master key version
        missing from settings, say) waited out for ever (never the data's fault); a data fault raised."""

        async def load() -> None:
            async with self.pool.acquire() as conn:
                await keys.load(conn, key_ids=key_ids)

        while True:
            try:
                await retry_transient(load, what=f"{self.service}.keys", max_backoff_s=self.max_backoff_s)
                return
            except KeyStoreError as exc:
                metrics.TRANSIENT_FAILURES.labels(operation=f"{self.service}.keys").inc()
                log.critical("key_store_cannot_open_batch", service=self.service, error=str(exc))
                await asyncio.sleep(self.max_backoff_s)

    def _unopenable(self, item: Sealed, exc: Exception) -> DeadLetterItem:
        why = describe_error(exc)
        reason = f"sealed personal data cannot be opened: {why}"
        answer = self._reject_as_owner(item.record, item.document, item.event_type, reason)
        return DeadLetterItem(item.record, reason, answer=answer, parked_seq=item.parked_seq)

    async def _commit(self, items: Sequence[Item]) -> None:
        async def attempt() -> None:
            # Fresh keys for each attempt: a key created by an attempt that rolled back is gone with it.
            with batch_scope(self.privacy):
                async with transaction(self.pool) as conn:
                    await self._apply(conn, items)

        await retry_transient(attempt, what=f"{self.service}.batch", max_backoff_s=self.max_backoff_s)

    async def _commit_alone(self, item: Item) -> None:
        """Commit one item; if its data is at fault, dead-letter it instead, down to a letter that
        cannot fail (no inbox claim, text made printable), retried for ever if even that fails."""
        try:
            await self._commit([item])
            return
        except Exception as exc:
            reason = f"{self.service} could not apply it: {describe_error(exc, typed=True)}"
        event = item.event if isinstance(item, Apply) else None
        letter = DeadLetterItem(
            item.record,
            reason,
            event_id=event.id if event else None,
            event_type=event.type if event else None,
            answer=self._reject_as_owner(item.record, {"id": event.id, "subject": event.subject}, event.type, reason)
            if event
            else None,
            parked_seq=item.parked_seq,
        )
        log.error("event_dead_lettered", service=self.service, reason=reason[:300], position=item.record.position)
        try:
            await self._commit([letter])
            return
        except Exception as exc:
            log.error("dead_letter_refused_retrying_plainer", service=self.service, error=repr(exc))
        plainest = DeadLetterItem(item.record, reason, parked_seq=item.parked_seq, claim=False)
        while True:
            try:
                await self._commit([plainest])
                return
            except Exception as exc:  # a bug: nothing in a plain letter can be the data's fault
                metrics.TRANSIENT_FAILURES.labels(operation=f"{self.service}.dead_letter").inc()
                log.critical("dead_letter_cannot_be_written", service=self.service, error=repr(exc))
                await asyncio.sleep(self.max_backoff_s)

    async def _apply(self, conn: asyncpg.Connection, items: Sequence[Item]) -> None:
        released = [i.parked_seq for i in items if i.parked_seq is not None and not isinstance(i, Park)]
        if released:
            await conn.execute(f"DELETE FROM {self.schema}.parked WHERE seq = ANY($1::bigint[])", released)
        # A case with an event parked waits as a whole: what comes after it is parked behind it. Items
        # being released (they all are, or none) are the oldest of their case: they go ahead of what
        # stays parked, so they never wait.
        waiting = set() if released else await self._cases_waiting(conn, items)
        to_park: list[Park] = []
        ready: list[Item] = []
        for item in items:
            if isinstance(item, Park):
                to_park.append(item)
                waiting.add(item.record.case_key)
            elif isinstance(item, Apply) and item.record.case_key and item.record.case_key in waiting:
                # (A keyless record belongs to no case: nothing waits behind a keyless one.)
                to_park.append(Park(item.record, f"waits behind an earlier event of case {item.record.case_key}"))
            else:
                ready.append(item)

        applying = [i for i in ready if isinstance(i, Apply)]
        letters = [i for i in ready if isinstance(i, DeadLetterItem)]
        claimed = [(i.event.id, i.record.position) for i in applying]
        claimed += [(i.event_id, i.record.position) for i in letters if i.event_id and i.claim]
        fresh = await claim_inbox(conn, self.schema, claimed)
        if not self.checks_inbox:  # the test-only switch: a repeat counts as new (see inbox_check_switched_off)
            fresh = {event_id for event_id, _ in claimed}
        new_events: list[Event] = []
        repeats: list[Apply] = []
        for item in applying:
            if item.event.id in fresh:
                new_events.append(item.event)
                fresh.discard(item.event.id)  # a second copy within the batch is a repeat
            else:
                repeats.append(item)
        outgoing = list(await self.handler(conn, new_events)) if new_events else []
        outgoing += self._answer_no_change(new_events, outgoing)
        outgoing += await self._answer_repeats(conn, repeats)
        outgoing += [i.answer for i in ready if isinstance(i, Answer)]
        outgoing += [i.answer for i in letters if i.answer is not None]
        outgoing += await store_dead_letters(conn, self.schema, self.service, letters)
        await self._park(conn, to_park)
        positions = next_positions(i.record for i in items if i.parked_seq is None)
        await write_outbox(conn, self.schema, outgoing, positions=positions)  # one round trip for both
        metrics.EVENTS_APPLIED.inc(len(new_events))

    async def stored_positions(self) -> dict[tuple[str, int], int]:
        """The next offset to read of every partition this service has applied records of."""
        rows = await self.pool.fetch(f"SELECT topic, partition, next_offset FROM {self.schema}.consumer_positions")
        return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}

    # --- triage (pure) ------------------------------------------------------------------------------

    def triage(self, record: Record) -> Item | None:
        """What to do with one record; ``None``: pass over it (not this service's)."""
        stewarded = topics.STEWARD_OF.get(record.topic) == self.service
        if record.value is None:
            return DeadLetterItem(record, "a tombstone: the record has no value") if stewarded else None
        try:
            document = pydantic_core.from_json(record.value)
        except ValueError as exc:
            return DeadLetterItem(record, f"not JSON: {exc}") if stewarded else None
        event_type = document.get("type") if isinstance(document, dict) else None
        if not isinstance(event_type, str):
            return DeadLetterItem(record, "not a CloudEvent: no `type` string") if stewarded else None
        if event_type not in self.registry:
            if not stewarded:
                return None
            if record.topic == topics.COMMANDS:
                return self._reject_unknown_command(record, document, event_type)
            return DeadLetterItem(record, f"unknown event type {printable(event_type)!r}")
        if event_type not in self.consumes:
            return None  # known, and not ours: another service owns it
        if self.privacy.enabled and has_sealed_values(record.value) and isinstance(document.get("data"), dict):
            if newer := self.registry.newer_than_known(event_type, document.get("dataschema")):
                return Park(record, str(newer))
            return Sealed(record, document, event_type)
        return self._parse(record, document, event_type)

    def _parse(self, record: Record, document: dict[str, Any], event_type: str) -> Item:
        assert record.value is not None
        try:
            return Apply(record, self.registry.parse(record.value))
        except NewerVersion as exc:
            return Park(record, str(exc))
        except Exception as exc:  # anything at all: a record that cannot be parsed never leaves a batch
            reason = describe_error(exc)
            answer = self._reject_as_owner(record, document, event_type, f"malformed: {reason}")
            return DeadLetterItem(record, reason, answer=answer)

    def _reject_unknown_command(self, record: Record, document: dict[str, Any], event_type: str) -> Item:
        reason = f"unknown command type {printable(event_type)!r}: no service of this deployment handles it"
        answer = self._rejection(record, document, event_type, reason)
        if answer is None:
            return DeadLetterItem(record, f"{reason}; and no case or id to answer it on")
        metrics.COMMAND_ANSWERS.labels(kind="unknown").inc()
        return Answer(record, answer)

    def _reject_as_owner(
        self, record: Record, document: dict[str, Any], event_type: str, reason: str
    ) -> Outgoing | None:
        """A command of ours that is malformed, or that could not be applied, is dead-lettered *and*
        answered, so its sender learns why (and never later reads "already handled" about it)."""
        if COMMAND_OWNER.get(event_type) != self.service:
            return None
        metrics.COMMAND_ANSWERS.labels(kind="refused").inc()
        return self._rejection(record, document, event_type, reason)

    def _rejection(self, record: Record, document: dict[str, Any], event_type: str, reason: str) -> Outgoing | None:
        command_id, case_id = document.get("id"), document.get("subject")
        if not (isinstance(command_id, str) and command_id and isinstance(case_id, str) and case_id):
            return None
        case_id = printable(case_id)[:200]
        fact = CommandRejected(
            case_id=case_id,
            command_id=printable(command_id)[:200],
            command_type=printable(event_type)[:200],
            service=self.service,
            reason=printable(reason)[:2000],
            rejected_at=datetime.now(UTC),
        )
        return self._fact(fact, case_id, f"rejected-record:{record.position}")

    def _fact(
        self,
        data: CommandRejected | CommandAlreadyHandled | CommandNoChange,
        case_id: str,
        identity: str,
        *,
        cause: Event | None = None,
    ) -> Outgoing:
        event = new_event(
            data,
            source=self.source,
            subject=case_id,
            cause=cause,
            event_id=derived_event_id(self.source, case_id, identity),
            force=cause.force if cause is not None else None,
        )
        return Outgoing.event_of(topics.OUTPUT_OF[self.service], event, caused_by=cause.id if cause else None)

    def _answer_no_change(self, applied: Sequence[Event], outgoing: Sequence[Outgoing]) -> list[Outgoing]:
        """``rj.command.no-change`` for each command of ours that the service applied and decided nothing on: no
        fact was decided on it (``Outgoing.caused_by``, the envelope's ``causationid`` or a payload's
        ``command_id``) and no rejection names it. Without it its sender could not tell "nothing to do" from "not
        read yet". A command a system sends (a service's own sweep, asked again and again) is not answered.

        Its id is derived from the command's: a replayed batch answers it once. It carries the force the command
        came with (as a rejection does) and continues the command's chain: it is for staff, like a rejection."""
        ours = [e for e in applied if COMMAND_OWNER.get(e.type) == self.service and not _sent_by_a_system(e)]
        if not ours:
            return []
        answered: set[str] = set()
        for message in outgoing:
            if message.caused_by:
                answered.add(message.caused_by)
            if message.event is not None:
                command_id = getattr(message.event.data, "command_id", None)
                answered |= {i for i in (message.event.causationid, command_id) if isinstance(i, str)}
        answers = []
        for event in ours:
            if event.id in answered:
                continue
            case_id = getattr(event.data, "case_id", None) or event.subject or ""
            fact = CommandNoChange(
                case_id=printable(case_id)[:200],
                command_id=event.id,
                command_type=event.type,
                service=self.service,
                answered_at=datetime.now(UTC),
            )
            answers.append(self._fact(fact, fact.case_id, f"no-change:{event.id}", cause=event))
        metrics.COMMAND_ANSWERS.labels(kind="no-change").inc(len(answers))
        return answers

    # --- repeats, dead letters, parking (SQL) ---------------------------------------------------------

    async def _answer_repeats(self, conn: asyncpg.Connection, repeats: Sequence[Apply]) -> list[Outgoing]:
        """``rj.command.already-handled`` for each command of ours sent again under an id already handled.
        A redelivery of the very record that was handled (same position) is not a repeat to answer."""
        ours = [r for r in repeats if COMMAND_OWNER.get(r.event.type) == self.service]
        if not ours:
            return []
        first = await first_positions(conn, self.schema, [r.event.id for r in ours])
        answers = []
        for item in ours:
            position, received_at = first.get(item.event.id, (None, None))
            if position is None or position == item.record.position or received_at is None:
                continue  # a redelivery of the very record (or taken in before positions were kept)
            fact = CommandAlreadyHandled(
                case_id=printable(item.event.subject or "")[:200],
                command_id=item.event.id,
                command_type=item.event.type,
                service=self.service,
                first_received_at=received_at,
                answered_at=datetime.now(UTC),
            )
            answers.append(self._fact(fact, fact.case_id, f"repeat:{item.record.position}"))
        metrics.COMMAND_ANSWERS.labels(kind="repeat").inc(len(answers))
        return answers

    async def _cases_waiting(self, conn: asyncpg.Connection, items: Sequence[Item]) -> set[str]:
        keys = list({i.record.case_key for i in items if isinstance(i, Apply | Park)})
        if not keys:
            return set()
        rows = await conn.fetch(
            f"SELECT DISTINCT case_key FROM {self.schema}.parked WHERE case_key = ANY($1::text[])", keys
        )
        return {r["case_key"] for r in rows}

    async def _park(self, conn: asyncpg.Connection, parked: Sequence[Park]) -> None:
        new = [p for p in parked if p.parked_seq is None]
        if not new:
            return
        # Sealed whole: a record too new to read may still hold a victim's details.
        keys = privacy_batch()
        values = [await keys.seal_bytes(conn, p.record.value or b"", parked_context(p.record)) for p in new]
        await conn.executemany(
            f"""INSERT INTO {self.schema}.parked (case_key, source_topic, partition, "offset", key, value, reason)
                VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING""",
            [
                (
                    p.record.case_key,
                    p.record.topic,
                    p.record.partition,
                    p.record.offset,
                    p.record.key,
                    value,
                    printable(p.reason)[:2000],
                )
                for p, value in zip(new, values, strict=True)
            ],  # fmt: skip
        )
        log.warning("events_parked", service=self.service, cases=sorted({p.record.case_key for p in new}), n=len(new))

    # --- after an upgrade -------------------------------------------------------------------------------

    async def _parked_record(self, conn: asyncpg.Connection, row: asyncpg.Record) -> tuple[Record, str | None]:
        """A parked row as the record it was, opened (its value is sealed whole); or, when it cannot be
        opened, the row as it is and why (it then becomes a dead letter, never a silent loss)."""
        record = Record(row["source_topic"], row["partition"], row["offset"], row["key"], row["value"])
        if not self.privacy.enabled:
            return record, None
        try:
            with batch_scope(self.privacy) as keys:
                value = await keys.open_bytes(conn, row["value"], parked_context(record))
        except ValueError as exc:  # altered, or under a key the store does not hold
            return record, f"a parked event that cannot be opened: {exc}"
        if value is None:  # housekeeping spares a day that seals a parked event: this is not expected
            return record, "a parked event whose day's key was destroyed: its bytes are erased"
        return replace(record, value=value), None

    async def release_parked(self, limit: int = 500) -> int:
        """Apply what waits in ``parked`` that this service now knows, case by case in the order it came;
        a case stays parked from its first event still too new. Returns how many were let go."""

        async def load() -> tuple[int, list[tuple[asyncpg.Record, Record, str | None]]]:
            async with self.pool.acquire() as conn:
                waiting = await conn.fetchval(f"SELECT count(*) FROM {self.schema}.parked")
                if not waiting:
                    return 0, []
                # Each case's oldest event decides whether the case can go: cases still too new never
                # hide the ones behind them in the table.
                heads = await conn.fetch(
                    f"""SELECT DISTINCT ON (case_key) case_key, source_topic, partition, "offset", key, value
                        FROM {self.schema}.parked ORDER BY case_key, seq"""
                )
                ready = []
                for head in heads:
                    record, problem = await self._parked_record(conn, head)
                    if problem or not isinstance(self.triage(record), Park):
                        ready.append(head["case_key"])
                if not ready:
                    return waiting, []
                rows = await conn.fetch(
                    f"""SELECT seq, case_key, source_topic, partition, "offset", key, value FROM {self.schema}.parked
                        WHERE case_key = ANY($1::text[]) ORDER BY seq LIMIT $2""",
                    ready,
                    limit,
                )
                return waiting, [(row, *await self._parked_record(conn, row)) for row in rows]

        waiting, rows = await retry_transient(load, what=f"{self.service}.parked", max_backoff_s=self.max_backoff_s)
        metrics.PARKED_EVENTS.set(waiting)
        blocked: set[str] = set()
        releasing: list[Item] = []
        for row, record, problem in rows:
            if row["case_key"] in blocked:
                continue
            if problem:  # kept, with why, where an operator looks: never let go unseen
                releasing.append(DeadLetterItem(record, problem, parked_seq=row["seq"]))
                continue
            item = self.triage(record)
            if isinstance(item, Park):
                blocked.add(row["case_key"])
                continue
            releasing.append(replace(item or PassOver(record), parked_seq=row["seq"]))
        if waiting > len(releasing):
            log.warning("events_parked_waiting_for_upgrade", service=self.service, waiting=waiting - len(releasing))
        if not releasing:
            return 0
        await self._commit_or_isolate(releasing)
        log.info("parked_events_released", service=self.service, released=len(releasing))
        return len(releasing)
