"""The outbox relay: publishes committed outbox rows to Kafka, in order per partition, then marks them.

It runs in a process of its own, a child of the service's worker (``RelayProcess`` below), so that a
burst of intake, which keeps the worker's event loop and a CPU busy, cannot delay outgoing facts; the
child reports to its parent through a pipe (alive, leader or not, what it published), the parent
serves those figures and its health, and either process dying takes the other down.

- **Leadership is a lease** in PostgreSQL (``relay_lease``, on the database's clock), renewed before a round
  once a sixth of ``RELAY_LEASE_S`` has passed. A leader that hangs, loses its network or is frozen stops
  renewing, and another replica takes over once the lease has expired: within seconds, whatever TCP thinks of the old
  connection. A leader never sends once its own clock says its lease may have lapsed, so once it
  thaws it sends nothing more; each leadership term's records carry its epoch (``rj-relay-epoch``).
- **Order per partition, whatever fails.** Rows are grouped by the partition their key goes to; each
  partition's record batches are sent one after another, and a partition stops at its first failure.
  Only the prefix each partition had acknowledged is marked published, so a key's events never
  overtake one another; the rest is sent again next round.
- **Nothing blocks the rest for ever.** A row that can never be published (larger than the broker takes,
  or refused by the broker as invalid) is parked with its reason (``rj_outbox_parked``, an error log);
  the rows behind it flow. A refused batch of several rows is sent again one row at a time, to find
  the row at fault.
- Every session has a statement timeout and TCP keepalives; a stuck call to the broker is bounded by the
  lease. A crash between send and mark re-sends rows, and receivers drop the repeats through their inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError
from aiokafka.partitioner import murmur2

from schemas import topics
from schemas.kafka_binding import PLAIN_JSON_HEADERS, STRUCTURED_MODE_HEADERS
from services.runtime import metrics
from services.runtime.db import connect, is_transient
from services.runtime.outbox import notify_channel
from services.runtime.settings import Settings, use_event_loop

log = structlog.get_logger()

#: The header naming the leadership term that published a record.
EPOCH_HEADER = "rj-relay-epoch"
#: What the broker answers when a record or batch is too large to be taken, however often it is sent.
#: (Other refusals, e.g. an invalid topic, come from configuration, not from a row: they are retried,
#: and the backlog's age alerts.)
REFUSED_FOR_GOOD = (MessageSizeTooLargeError, RecordListTooLargeError)
#: How many pages of ``RELAY_BATCH_SIZE`` rows a round reads past rows it must pass over.
ROUND_PAGES = 5
#: Bytes a record adds to its key and value in a batch (lengths, offsets, header), counted generously.
RECORD_OVERHEAD_BYTES = 128


class LeaseLost(Exception):
    """This relay can no longer be sure it leads: it stops sending and stands by."""


class Stalled(Exception):
    """This relay leads but publishes nothing (e.g. it reaches PostgreSQL but not Kafka): it gives the
    lease up, so that another replica may try."""


@dataclass
class Partition:
    """One partition's rows of a round, in outbox order, and how far they got."""

    topic: str
    number: int
    rows: list[asyncpg.Record] = field(default_factory=list)
    sent: int = 0  # rows acknowledged by the broker, from the first
    failure: BaseException | None = None


_KEY_HASHES: dict[str, int] = {}
_KEY_HASHES_KEPT = 100_000
"""Each key's murmur2 hash, as Kafka's default partitioner takes it: a case's facts share its key, and aiokafka's
murmur2 is pure Python, 5 us a case id. Without this it was two thirds of the relay's CPU in intake (20 us of 30 an
event: every row is placed twice a round). At most ``_KEY_HASHES_KEPT`` keys (about 15 MB), then it starts again."""


def partition_of(key: str | None, numbers: Sequence[int]) -> int:
    """The partition Kafka's default partitioner (the Java client's, and aiokafka's ``DefaultPartitioner``) gives
    ``key`` among ``numbers``, a topic's partitions in order; a row without a key goes to the first."""
    if key is None:
        return numbers[0]
    hashed = _KEY_HASHES.get(key)
    if hashed is None:
        if len(_KEY_HASHES) >= _KEY_HASHES_KEPT:
            _KEY_HASHES.clear()
        hashed = _KEY_HASHES[key] = murmur2(key.encode()) & 0x7FFFFFFF
    return numbers[hashed % len(numbers)]


class OutboxRelay:
    def __init__(self, *, schema: str, settings: Settings, report: Callable[[dict[str, Any]], None] | None = None):
        self.schema = schema
        self.settings = settings
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.epoch: int | None = None  # the lease's epoch while this relay holds it
        self._valid_until = 0.0  # monotonic time until which the lease surely holds (None held: 0)
        self._renewed_at = 0.0
        self._wake = asyncio.Event()
        self._one_at_a_time: set[tuple[str, int]] = set()  # partitions a refused batch sends row by row
        self._backoff: dict[tuple[str, int], tuple[float, float]] = {}  # partition: (retry after, delay)
        self._lookups: dict[str, asyncio.Future[Any]] = {}  # topics whose partitions are being asked for
        self._lookup_after: dict[str, float] = {}  # a topic whose lookup failed is asked again after this
        self._report = report or (lambda _: None)
        self._published: Counter[str] = Counter()
        self._failures = 0  # since the last report
        self.last_round = time.monotonic()  # when the loop last went round (a hung relay stops reporting it)
        self._progress_at = time.monotonic()  # the last time rows were acknowledged, or none were waiting

    # --- running ------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Relay for ever: reconnect and resume after any failure of the database or the broker."""
        delay = 0.1
        while True:
            self.last_round = time.monotonic()  # reconnecting is going round too: alive, not stuck
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Stalled as exc:
                # Stand aside for a whole lease, so that another replica takes over if it can publish.
                log.error("relay_stalled_standing_aside", schema=self.schema, error=str(exc))
                self._failures += 1
                self._tell()
                aside_until = time.monotonic() + self.settings.relay_lease_s * 1.5
                while (left := aside_until - time.monotonic()) > 0:  # standing aside is not being stuck
                    self.last_round = time.monotonic()
                    await asyncio.sleep(min(left, 1.0))
            except Exception as exc:
                self._step_down()
                level = log.warning if is_transient(exc) else log.error
                level("relay_failed_restarting", schema=self.schema, error=repr(exc), delay=delay)
                self._failures += 1
                self._tell()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_backoff_s)
            else:  # pragma: no cover - _run_once only ends by raising
                delay = 0.1

    async def _run_once(self) -> None:
        settings = self.settings
        conn = await connect(settings)
        producer = self._make_producer()
        self._progress_at = time.monotonic()
        try:
            await conn.add_listener(notify_channel(self.schema), lambda *_: self._wake.set())
            await producer.start()
            self._lookups = {}  # the old producer's lookups will never finish
            # Know our topics' partitions up front, within a lease (later ones are asked in the background).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(
                        *(producer.partitions_for(self.settings.topic(t)) for t in topics.ALL_TOPICS),
                        return_exceptions=True,
                    ),
                    settings.relay_lease_s,
                )
            log.info("relay_started", schema=self.schema, holder=self.holder)
            while True:
                self.last_round = time.monotonic()
                # The lease is renewed every sixth of it, not every round (each renewal is a write to the database:
                # one a round was two of every three transactions a busy relay made); a round then has at least
                # half a lease to finish its sends, and the database's lease outlasts them by a third.
                leading = self.epoch is not None and time.monotonic() < self._renewed_at + settings.relay_lease_s / 6
                if not leading and not await self._hold_lease(conn):
                    self._tell()
                    await asyncio.sleep(settings.relay_lease_s / 3)
                    continue
                self._wake.clear()  # before reading, so a commit landing mid-round still wakes us
                sent = await self._relay_round(conn, producer)
                self._tell()
                stalled = time.monotonic() - self._progress_at
                if stalled > settings.relay_lease_s * 5:
                    raise Stalled(f"leading, with rows waiting, and nothing acknowledged for {stalled:.0f} s")
                if sent < settings.relay_batch_size:
                    renew_in = self._renewed_at + settings.relay_lease_s / 6 - time.monotonic()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self._wake.wait(), max(0.0, min(settings.relay_poll_interval_s, renew_in))
                        )
        finally:
            # What was handed to the producer goes out (or fails) before another replica may lead.
            with contextlib.suppress(Exception):
                await producer.stop()
            await self.release(conn)
            await conn.close()

    def _make_producer(self) -> AIOKafkaProducer:
        settings = self.settings
        return AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            acks="all",
            enable_idempotence=False,  # the embedded broker has no InitProducerId; the inbox dedupes instead
            linger_ms=0,
            max_batch_size=settings.max_message_bytes,
            max_request_size=settings.max_message_bytes + 64 * 1024,
            # A send that takes longer than the lease allows a round fails and is tried again.
            request_timeout_ms=max(int(settings.relay_lease_s * 1000), 1000),
        )

    def _tell(self) -> None:
        self._report(self.figures())
        self._published.clear()

    def figures(self) -> dict[str, Any]:
        """What the relay reports to its parent: leading or not, published since the last report, and
        how long since its loop went round (a relay stuck in a call looks alive but publishes nothing)."""
        figures = {
            "leader": self.epoch is not None,
            "published": dict(self._published),
            "failures": self._failures,
            "round_age_s": time.monotonic() - self.last_round,
        }
        self._failures = 0
        return figures

    # --- the lease ----------------------------------------------------------------------------------

    async def _hold_lease(self, conn: asyncpg.Connection) -> bool:
        """Take or renew the lease (one short statement, before a round once a sixth of it has passed); True while
        this relay holds it. It sends for two thirds of a lease from the last renewal, so a round has at least half
        a lease to finish its sends."""
        lease_s = self.settings.relay_lease_s
        now = time.monotonic()
        epoch = await conn.fetchval(
            f"""INSERT INTO {self.schema}.relay_lease AS l (id, holder, epoch, expires_at)
                VALUES (1, $1, 1, clock_timestamp() + make_interval(secs => $2))
                ON CONFLICT (id) DO UPDATE SET
                    holder = EXCLUDED.holder,
                    epoch = CASE WHEN l.holder = EXCLUDED.holder THEN l.epoch ELSE l.epoch + 1 END,
                    expires_at = EXCLUDED.expires_at
                WHERE l.holder = EXCLUDED.holder OR l.expires_at < clock_timestamp()
                RETURNING epoch""",
            self.holder,
            lease_s,
        )
        if epoch is None:
            self._step_down()
            return False
        if epoch != self.epoch:
            log.info("relay_leading", schema=self.schema, holder=self.holder, epoch=epoch)
            self._one_at_a_time.clear()
            self._progress_at = now  # a new term: its stall is counted from here
        self.epoch = epoch
        self._renewed_at = now
        # The database's expiry is at least ``lease_s`` after ``now``; stop sending well before it.
        self._valid_until = now + lease_s * 2 / 3
        return True

    def _step_down(self) -> None:
        if self.epoch is not None:
            log.warning("relay_standing_by", schema=self.schema, holder=self.holder, epoch=self.epoch)
        self.epoch = None
        self._valid_until = 0.0

    def _lease_left(self) -> float:
        left = self._valid_until - time.monotonic()
        if self.epoch is None or left <= 0:
            raise LeaseLost()
        return left

    async def release(self, conn: asyncpg.Connection) -> None:
        """Give the lease up at once (on a clean stop), so that another replica need not wait it out."""
        if self.epoch is None or conn.is_closed():
            return
        with contextlib.suppress(Exception):
            await conn.execute(
                f"UPDATE {self.schema}.relay_lease SET expires_at = clock_timestamp() - interval '1 second' "
                "WHERE holder = $1",
                self.holder,
                timeout=1.0,
            )
        self._step_down()

    # --- one round ----------------------------------------------------------------------------------

    async def _relay_round(self, conn: asyncpg.Connection, producer: AIOKafkaProducer) -> int:
        partitions, too_large, any_rows = await self._take_round(conn, producer)
        if not any_rows:
            self._progress_at = time.monotonic()
            return 0
        if too_large:
            await self._park(conn, too_large)
        try:
            budget = self._lease_left()
            await asyncio.wait_for(asyncio.gather(*(self._send_partition(producer, p) for p in partitions)), budget)
        except LeaseLost as exc:
            for p in partitions:
                if p.sent < len(p.rows) and p.failure is None:
                    p.failure = exc
        except TimeoutError:
            # A partition that did not finish within the round (its leader away, the producer retrying
            # inside) failed this round and backs off, so the others go on; what was acknowledged is marked.
            for p in partitions:
                if p.sent < len(p.rows) and p.failure is None:
                    p.failure = TimeoutError("no acknowledgement within the round")
        sent = [row for p in partitions for row in p.rows[: p.sent]]
        if sent or too_large:
            self._progress_at = time.monotonic()
        if sent:
            await conn.execute(
                f"UPDATE {self.schema}.outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
                [row["id"] for row in sent],
            )
            for p in partitions:
                if p.sent:
                    self._published[p.topic.removeprefix(self.settings.topic_prefix)] += p.sent
        await self._after_failures(conn, partitions)
        return len(sent) + len(too_large)

    async def _take_round(
        self, conn: asyncpg.Connection, producer: AIOKafkaProducer
    ) -> tuple[list[Partition], list[tuple[asyncpg.Record, str]], bool]:
        """Up to ``RELAY_BATCH_SIZE`` rows to send now, grouped by partition in outbox order; the rows too
        large to ever be taken; and whether any row waits at all.

        A key with a parked row waits behind it (as the intake holds a case behind a parked event): a
        receiver never gets a case's later facts without the earlier one. Rows of a partition backing off
        after a failure, or of a topic whose partitions are not known yet, are passed over, and the query
        reads on past them (a few pages at most), so that one failing partition cannot starve the rest.
        A key always goes to the same partition, so passing a partition over keeps each key's order.
        """
        limit = self.settings.relay_batch_size
        now = time.monotonic()
        backing_off = {where for where, (until, _) in self._backoff.items() if until > now}
        grouped: dict[tuple[str, int], Partition] = {}
        too_large: list[tuple[asyncpg.Record, str]] = []
        held: set[str] = set()  # keys with a row parked this round: their later rows wait behind it
        any_rows = False
        taken = 0
        numbers_of: dict[str, list[int] | None] = {}  # frozen for the round: a key's partition cannot move
        # One page (nearly every round) is one statement, its own snapshot. More take one snapshot for every page:
        # a later page must never see a key's later row whose earlier row committed after an earlier page was read
        # (ids are not handed out in commit order); so a first page that is not enough is read again inside one.
        pages = await self._read_pages(conn, producer, limit, backing_off, numbers_of, single=True)
        if pages is None:
            snapshot = conn.transaction(isolation="repeatable_read", readonly=True)
            await snapshot.start()
            try:
                pages = await self._read_pages(conn, producer, limit, backing_off, numbers_of, single=False)
            finally:
                await snapshot.rollback()
        assert pages is not None
        for rows in pages:
            any_rows = any_rows or bool(rows)
            for row in rows:
                if taken >= limit:
                    break
                if row["key"] in held:
                    continue
                size = len(row["value"]) + len((row["key"] or "").encode()) + RECORD_OVERHEAD_BYTES
                if size > self.settings.max_message_bytes:
                    reason = f"{size} bytes with its key, over MAX_MESSAGE_BYTES ({self.settings.max_message_bytes})"
                    too_large.append((row, reason))
                    if row["key"] is not None:
                        held.add(row["key"])
                    taken += 1
                    continue
                topic = self.settings.topic(row["topic"])
                numbers = numbers_of[topic]
                if numbers is None:
                    continue  # asked for in the background; this topic's rows wait for a round
                number = partition_of(row["key"], numbers)
                if (topic, number) in backing_off:
                    continue
                grouped.setdefault((topic, number), Partition(topic, number)).rows.append(row)
                taken += 1
        return list(grouped.values()), too_large, any_rows

    async def _read_pages(
        self,
        conn: asyncpg.Connection,
        producer: AIOKafkaProducer,
        limit: int,
        backing_off: set[tuple[str, int]],
        numbers_of: dict[str, list[int] | None],
        *,
        single: bool,
    ) -> list[list[asyncpg.Record]] | None:
        """Pages of waiting rows, until one holds ``limit`` rows that can go (a few pages at most). ``single``: the
        first page only, or ``None`` if it is full (more may be needed, in one snapshot)."""
        pages: list[list[asyncpg.Record]] = []
        usable = 0
        after = 0
        for _ in range(ROUND_PAGES):
            rows = await conn.fetch(
                f"""SELECT id, topic, key, value FROM {self.schema}.outbox o
                    WHERE published_at IS NULL AND parked_at IS NULL AND id > $2
                      AND NOT EXISTS (SELECT 1 FROM {self.schema}.outbox p
                                      WHERE p.published_at IS NULL AND p.parked_at IS NOT NULL
                                        AND p.key = o.key AND p.id < o.id)
                    ORDER BY id LIMIT $1""",
                limit,
                after,
            )
            pages.append(rows)
            for row in rows:
                topic = self.settings.topic(row["topic"])
                if topic not in numbers_of:
                    numbers_of[topic] = self._partitions(producer, topic)
                numbers = numbers_of[topic]
                if numbers is None:
                    continue
                if (topic, partition_of(row["key"], numbers)) not in backing_off:
                    usable += 1
            if usable >= limit or len(rows) < limit:
                break
            if single:
                return None  # a full page with rows that cannot go now: the next pages, in one snapshot with it
            after = rows[-1]["id"]
        return pages

    def _partitions(self, producer: AIOKafkaProducer, topic: str) -> list[int] | None:
        """The topic's partitions if the producer knows them; else ``None``, and they are asked for in the
        background (never waited for here: a topic that does not exist must not hold up the others)."""
        known = producer.client.cluster.partitions_for_topic(topic)
        if known:
            return sorted(known)
        lookup = self._lookups.get(topic)
        if lookup is not None and lookup.done():
            if not lookup.cancelled() and lookup.exception() is not None:
                if time.monotonic() < self._lookup_after.get(topic, 0.0):
                    return None  # failed lately: ask again after a pause, not in a tight loop
                log.error("relay_topic_unavailable", topic=topic, error=repr(lookup.exception()))
                self._failures += 1
                self._lookup_after[topic] = time.monotonic() + self.settings.retry_max_backoff_s
            lookup = None
        if lookup is None:
            lookup = self._lookups[topic] = asyncio.ensure_future(producer.partitions_for(topic))
            lookup.add_done_callback(lambda _: self._wake.set())
        return None

    async def _send_partition(self, producer: AIOKafkaProducer, partition: Partition) -> None:
        """Send a partition's rows in record batches, one after another; stop at the first failure."""
        # Dead letters are our own JSON documents about a record, not CloudEvents.
        kind = (
            PLAIN_JSON_HEADERS if partition.topic == self.settings.topic(topics.DEADLETTER) else STRUCTURED_MODE_HEADERS
        )
        headers = [*kind, (EPOCH_HEADER, str(self.epoch).encode())]
        one_at_a_time = (partition.topic, partition.number) in self._one_at_a_time
        rows = partition.rows
        start = 0
        while start < len(rows):
            batch = producer.create_batch()
            end = start
            while end < len(rows) and not (one_at_a_time and end > start):
                row = rows[end]
                key = row["key"].encode() if row["key"] is not None else None
                if batch.append(key=key, value=row["value"], timestamp=None, headers=headers) is None:
                    break  # full: the rest goes in the next batch
                end += 1
            batch.close()
            try:
                self._lease_left()  # never send once the lease may have passed to another replica
                await (await producer.send_batch(batch, partition.topic, partition=partition.number))
            except Exception as exc:
                partition.failure = exc
                return
            partition.sent = start = end

    async def _after_failures(self, conn: asyncpg.Connection, partitions: Sequence[Partition]) -> None:
        for p in partitions:
            where = (p.topic, p.number)
            if p.failure is None:
                self._one_at_a_time.discard(where)
                self._backoff.pop(where, None)
                continue
            if isinstance(p.failure, LeaseLost):
                continue
            if not isinstance(p.failure, REFUSED_FOR_GOOD):
                log.warning("relay_partition_failed", topic=p.topic, partition=p.number, error=repr(p.failure))
                self._failures += 1
                _, delay = self._backoff.get(where, (0.0, 0.05))
                delay = min(delay * 2, self.settings.retry_max_backoff_s)
                self._backoff[where] = (time.monotonic() + delay, delay)
                continue
            if where in self._one_at_a_time:  # the refused batch held this one row: it is the culprit
                await self._park(conn, [(p.rows[p.sent], f"refused by the broker: {p.failure!r}")])
                self._one_at_a_time.discard(where)  # the rest go in batches again
            else:
                log.warning("relay_batch_refused_isolating", topic=p.topic, partition=p.number, error=repr(p.failure))
                self._one_at_a_time.add(where)

    async def _park(self, conn: asyncpg.Connection, rows: Sequence[tuple[asyncpg.Record, str]]) -> None:
        for row, reason in rows:
            log.error(
                "outbox_row_parked_unpublishable",
                schema=self.schema,
                id=row["id"],
                topic=row["topic"],
                key=row["key"],
                reason=reason,
            )
        await conn.executemany(
            f"UPDATE {self.schema}.outbox SET parked_at = now(), parked_reason = $2 WHERE id = $1",
            [(row["id"], reason) for row, reason in rows],
        )


# --- the relay's own process -------------------------------------------------------------------------

#: How often the relay process reports; the parent deems it hung after ``REPORT_STALE_S`` of silence.
REPORT_INTERVAL_S = 1.0
REPORT_STALE_S = 15.0
_PR_SET_PDEATHSIG = 1


def run_relay_process(schema: str, settings: Settings) -> None:
    """The relay child's main: relay ``schema``'s outbox, reporting on the pipe the parent passed, until
    SIGTERM (or the parent's death: Linux then SIGKILLs this process)."""
    parent = int(os.environ.get("RJ_RELAY_PARENT_PID", "0"))
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent and os.getppid() != parent:
        sys.exit(0)  # the parent died before we asked to follow it
    report_fd = int(os.environ.get("RJ_RELAY_REPORT_FD", "-1"))
    out = os.fdopen(report_fd, "w", buffering=1) if report_fd >= 0 else None

    def report(figures: dict[str, Any]) -> None:
        if out is not None:
            with contextlib.suppress(OSError):  # the parent is gone or going: it takes this process along
                out.write(json.dumps(figures) + "\n")

    async def main() -> None:
        relay = OutboxRelay(schema=schema, settings=settings, report=report)
        task = asyncio.create_task(relay.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(REPORT_INTERVAL_S)
                report({**relay.figures(), "published": {}})

        beat = asyncio.create_task(heartbeat())
        try:
            await task
        except asyncio.CancelledError:
            log.info("relay_stopped", schema=schema)
        finally:
            beat.cancel()

    use_event_loop(settings)
    asyncio.run(main())


class RelayProcess:
    """The worker's side of its relay child: starts it, reads its reports into the metrics, tells whether
    it is alive, and ends the worker if it ends."""

    def __init__(self, name: str, settings: Settings) -> None:
        self.name = name
        self.settings = settings
        self.last_report = 0.0  # monotonic
        self.round_age_s = 0.0
        self.process: asyncio.subprocess.Process | None = None

    def alive(self) -> str | None:
        """``None`` while the child runs and reports; else why not (for ``/health/live``)."""
        if self.process is None:
            return None  # not started yet: the worker is still migrating
        if self.process.returncode is not None:
            return f"relay process exited with {self.process.returncode}"
        silent = time.monotonic() - self.last_report
        if silent >= REPORT_STALE_S:
            metrics.RELAY_LEADER.set(0)  # whatever it last said, it cannot be counted on to lead
            return f"relay process silent for {silent:.0f} s"
        if self.round_age_s >= REPORT_STALE_S:
            return f"relay loop stuck for {self.round_age_s:.0f} s"
        return None

    async def run(self) -> None:
        """Run the child until it exits (then return, so that the worker stops) or this task is cancelled."""
        read_fd, write_fd = os.pipe()
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.runtime.relay_main",
                self.name,
                env={
                    **os.environ,
                    # The worker's settings, whether they came from the environment or from code (secrets as they
                    # are, not masked; unset ones left out).
                    **self.settings.as_env(),
                    "RJ_RELAY_PARENT_PID": str(os.getpid()),
                    "RJ_RELAY_REPORT_FD": str(write_fd),
                },
                pass_fds=(write_fd,),
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            os.close(write_fd)
        self.last_report = time.monotonic()
        metrics.RELAY_RUNNING.set(1)
        log.info("relay_process_started", service=self.name, pid=self.process.pid)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
        )
        try:
            while line := await reader.readline():
                self._take(line)
            await self.process.wait()
            log.critical("relay_process_exited", service=self.name, code=self.process.returncode)
        finally:
            metrics.RELAY_RUNNING.set(0)
            metrics.RELAY_LEADER.set(0)
            await self._stop()
            transport.close()

    def _take(self, line: bytes) -> None:
        try:
            figures = json.loads(line)
        except ValueError:
            return
        self.last_report = time.monotonic()
        self.round_age_s = float(figures.get("round_age_s") or 0.0)
        metrics.RELAY_LEADER.set(1 if figures.get("leader") else 0)
        for topic, count in (figures.get("published") or {}).items():
            metrics.EVENTS_PUBLISHED.labels(topic=topic).inc(count)
        if figures.get("failures"):
            metrics.TRANSIENT_FAILURES.labels(operation="relay").inc(figures["failures"])

    async def _stop(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
