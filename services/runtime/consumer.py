"""The batch consumer: Kafka records to ``BatchProcessor`` with offsets committed only after PostgreSQL.

Faust stays the worker framework (it runs this as a task, with the timers and the relay), but the
records do not go through its stream: faust's ``take_events`` acks a batch when its generator is
closed by an exception and costs ~150 us an event. Here aiokafka is used directly:

- ``getmany`` hands over whatever the background fetcher has buffered, at once: batches are large
  under load and little waits when idle (a long poll: the broker holds a fetch at most ``FETCH_MAX_WAIT_MS``,
  ``FOLLOWER_FETCH_MAX_WAIT_MS`` for audit and the API's read model; Kafka answers as soon as a record arrives,
  Tansu not always: see ``Settings.fetch_max_wait_ms``).
- Records are queued per *lane*, one lane per partition number. A case's key lands on the same
  partition number in every topic, so a lane holds everything about its cases; one transaction is in
  flight per lane, which keeps each case's order, while lanes overlap parsing, deciding and SQL.
- A lane's offsets are committed after its transaction commits (by a committer that coalesces, at most every
  ``OFFSET_COMMIT_INTERVAL_S``: where to resume is first the position stored with the data), and
  again, synchronously, when a rebalance takes its partitions away. A lane that falls behind pauses
  its partitions instead of buffering without bound.
- On a rebalance the listener finishes the batch in flight (or, past a deadline, abandons it: the
  transaction rolls back and the new owner replays it; the inbox makes overlap harmless), commits,
  and drops what was queued for the partitions that leave.
- Anything unexpected stops the consumer and the process with it, so that it is restarted: a live
  process that consumes nothing is never an outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError

from services.runtime import metrics
from services.runtime.records import Record
from services.runtime.settings import Settings

log = structlog.get_logger()


Item = TypeVar("Item")


class BatchSteps(Protocol[Item]):
    """How a batch is applied, in two steps: ``prepare`` is pure (parsing, triage) and may run while the
    lane's previous batch is still committing; ``commit`` is the one transaction, never two at once."""

    def prepare(self, records: Sequence[Record]) -> Sequence[Item | None]: ...

    async def commit(self, items: Sequence[Item]) -> None: ...

    async def stored_positions(self) -> dict[tuple[str, int], int]:
        """The next offset to read per (logical topic, partition), as stored with the applied data."""
        ...


class _Entry(NamedTuple):
    """A record queued in a lane, with the assignment (generation) it was fetched under."""

    tp: TopicPartition
    record: Record
    generation: int


@dataclass
class _Flight:
    """The one batch of a lane being committed."""

    entries: list[_Entry]
    task: asyncio.Task[None]
    taken_at: float  # loop time the batch's records were taken from the lane
    # Set by a revoke for a batch already in flight when it began: its records were current when it
    # started, so once it commits its offsets count (and are committed before the partitions move).
    counts: bool = False


@dataclass
class _Lane:
    """Everything queued for one partition number, and the one batch of it in flight."""

    number: int
    queue: list[_Entry] = field(default_factory=list)
    has_work: asyncio.Event = field(default_factory=asyncio.Event)
    flight: _Flight | None = None
    task: asyncio.Task[None] | None = None


class BatchConsumer(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self,
        *,
        settings: Settings,
        group_id: str,
        topics: Sequence[str],
        steps: BatchSteps[Any],
        name: str,
        fetch_max_wait_ms: int | None = None,
    ) -> None:
        self.settings = settings
        self.fetch_max_wait_ms = settings.fetch_max_wait_ms if fetch_max_wait_ms is None else fetch_max_wait_ms
        self.group_id = group_id
        self.topics = list(topics)  # as on the broker (prefixed)
        self.steps = steps
        self.name = name
        self.batch_size = settings.batch_size
        self._lanes: dict[int, _Lane] = {}
        self._done: dict[TopicPartition, int] = {}  # next offset to commit, per partition
        self._committed: dict[TopicPartition, int] = {}
        self._commit_wanted = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._failed: asyncio.Future[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        # Bumped when a rebalance has ended an assignment. A record fetched under an earlier one is never
        # applied nor counted: its partition's position restarts from the committed offset on every
        # assignment (here or elsewhere), so it is read again, in order, by whoever owns it now.
        self._generation = 0
        # Set while the assignment is settled: cleared from the start of a rebalance (revoke) to the end of
        # the new assignment's listener, during which no lane starts a transaction.
        self._settled = asyncio.Event()
        self.applied = 0
        self.running = False  # between start and stop of the Kafka consumer
        self.last_poll = 0.0  # loop time the fetch loop last went round (at least every second)

    def assignment(self) -> set[TopicPartition]:
        """The partitions this replica holds now."""
        return set(self._consumer.assignment()) if self._consumer is not None and self.running else set()

    def report_lag(self) -> None:
        """Set ``rj_consumer_lag`` for each partition held: records on it not yet committed by this replica."""
        consumer = self._consumer
        if consumer is None:
            return
        for tp in self.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            # What is applied, not what Kafka has been told yet (that lags by up to OFFSET_COMMIT_INTERVAL_S).
            committed = max(self._committed.get(tp, 0), self._done.get(tp, 0), 0)
            topic = tp.topic.removeprefix(self.settings.topic_prefix)
            metrics.CONSUMER_LAG.labels(topic=topic, partition=str(tp.partition)).set(max(highwater - committed, 0))

    # --- running ------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until cancelled. Raises if anything goes wrong that retrying cannot mend."""
        settings = self.settings
        failed = self._failed = asyncio.get_running_loop().create_future()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            # Range, not aiokafka's default round robin: with equal partition counts, a member gets the
            # same partition numbers of every topic, so a lane really holds everything about its cases.
            partition_assignment_strategy=(RangePartitionAssignor,),
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            max_partition_fetch_bytes=settings.fetch_max_partition_bytes,
            session_timeout_ms=int(settings.kafka_session_timeout_s * 1000),
            rebalance_timeout_ms=int(settings.kafka_rebalance_timeout_s * 1000),
            heartbeat_interval_ms=int(settings.kafka_heartbeat_interval_s * 1000),
        )
        self._consumer = consumer
        consumer.subscribe(self.topics, listener=self)
        await consumer.start()
        self.running = True
        committer = asyncio.create_task(self._commit_forever(), name=f"{self.name}-committer")
        log.info("consumer_started", consumer=self.name, topics=self.topics, group=self.group_id)
        try:
            while True:
                self.last_poll = asyncio.get_running_loop().time()
                fetch = asyncio.ensure_future(self._fetch(consumer))
                await asyncio.wait({fetch, failed}, return_when=asyncio.FIRST_COMPLETED)
                if failed.done():
                    fetch.cancel()
                    failed.result()  # raises what stopped a lane
                generation, batches = fetch.result()
                if generation == self._generation:  # else a rebalance ran since: read again from commits
                    for tp, messages in batches.items():
                        self._enqueue(tp, messages, generation)
                if committer.done():
                    committer.result()
        finally:
            committer.cancel()
            for lane in self._lanes.values():
                if lane.task:
                    lane.task.cancel()
            # Batches already in the database get a moment to finish, so their offsets are committed and
            # the next owner does not replay them (it would be harmless, only slower).
            flights = {lane.flight.task: lane for lane in self._lanes.values() if lane.flight}
            with contextlib.suppress(Exception):
                if flights:
                    await asyncio.wait(flights, timeout=2)
                for task, lane in flights.items():
                    if task.done() and not task.cancelled() and task.exception() is None:
                        await self._land(lane)
                    else:
                        task.cancel()
                await asyncio.wait_for(self._commit(), 5)
            self.running = False
            await consumer.stop()

    async def _fetch(self, consumer: AIOKafkaConsumer) -> tuple[int, dict[TopicPartition, list[Any]]]:
        """What the fetcher has buffered, with the generation it belongs to: read as ``getmany`` returns
        (it may have waited through a whole rebalance, and then holds records of the new assignment)."""
        batches = await consumer.getmany(timeout_ms=1000)
        return self._generation, batches

    def _enqueue(self, tp: TopicPartition, messages: Sequence[object], generation: int) -> None:
        if not messages:
            return
        lane = self._lanes.get(tp.partition)
        if lane is None:
            lane = self._lanes[tp.partition] = _Lane(tp.partition)
            lane.task = asyncio.create_task(self._work(lane), name=f"{self.name}-lane-{tp.partition}")
        topic = tp.topic.removeprefix(self.settings.topic_prefix)
        metrics.EVENTS_CONSUMED.labels(topic=topic).inc(len(messages))
        lane.queue += [
            _Entry(tp, Record(topic, m.partition, m.offset, m.key, m.value), generation)  # type: ignore[attr-defined]
            for m in messages
        ]
        lane.has_work.set()
        if len(lane.queue) >= 4 * self.batch_size:
            self._pause({e.tp for e in lane.queue})  # resumed when the lane catches up

    async def _work(self, lane: _Lane) -> None:
        try:
            while True:
                if not lane.has_work.is_set():
                    await self._land(lane)  # nothing to prepare meanwhile: see the batch in flight through
                await lane.has_work.wait()
                taken, lane.queue = lane.queue[: self.batch_size], lane.queue[self.batch_size :]
                if not lane.queue:
                    lane.has_work.clear()
                if not taken:
                    continue
                taken_at = asyncio.get_running_loop().time()
                # Parse while the previous batch commits: the CPU works while PostgreSQL does.
                prepared = self.steps.prepare([e.record for e in taken])
                await self._land(lane)  # one transaction in flight per lane, so a case keeps its order
                await self._settled.wait()  # what a rebalance under way makes stale is known once it ends
                kept = [(e, item) for e, item in zip(taken, prepared, strict=True) if e.generation == self._generation]
                items = [item for _, item in kept if item is not None]
                commit = asyncio.create_task(self.steps.commit(items), name=f"{self.name}-commit-{lane.number}")
                lane.flight = _Flight([e for e, _ in kept], commit, taken_at)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.critical("consumer_lane_failed", consumer=self.name, lane=lane.number, error=repr(exc))
            if self._failed and not self._failed.done():
                self._failed.set_exception(exc)
            raise

    async def _land(self, lane: _Lane) -> None:
        """Wait for the lane's batch in flight; then its offsets may be committed."""
        flight = lane.flight
        if flight is None:
            return
        try:
            await asyncio.shield(flight.task)
        except BaseException:
            current = asyncio.current_task()
            if current and current.cancelling():
                raise  # this lane itself is being stopped
            if lane.flight is not flight:
                return  # a rebalance abandoned it: whatever became of it, its records are read again
            raise
        if lane.flight is not flight:
            return  # abandoned by a rebalance (or already landed by it)
        lane.flight = None
        self.applied += len(flight.entries)
        metrics.BATCH_SIZE.observe(len(flight.entries))
        metrics.BATCH_DURATION.observe(asyncio.get_running_loop().time() - flight.taken_at)
        for entry in flight.entries:
            if flight.counts or entry.generation == self._generation:
                self._done[entry.tp] = max(self._done.get(entry.tp, 0), entry.record.offset + 1)
        self._commit_wanted.set()
        if len(lane.queue) < self.batch_size:
            self._resume_lane(lane)

    def _pause(self, tps: set[TopicPartition]) -> None:
        assert self._consumer is not None
        assigned = self._consumer.assignment()
        self._consumer.pause(*[tp for tp in tps if tp in assigned])

    def _resume_lane(self, lane: _Lane) -> None:
        assert self._consumer is not None
        paused = [tp for tp in self._consumer.paused() if tp.partition == lane.number]
        assigned = self._consumer.assignment()
        if paused:
            self._consumer.resume(*[tp for tp in paused if tp in assigned])

    # --- offsets ------------------------------------------------------------------------------------

    async def _commit_forever(self) -> None:
        while True:
            await self._commit_wanted.wait()
            self._commit_wanted.clear()
            await self._commit()
            # What lands meanwhile is committed together, next time round (a revoke or a stop commits at once).
            await asyncio.sleep(self.settings.offset_commit_interval_s)

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        """Commit what has been applied and not committed yet. A failure is only logged: the records
        are redelivered, and the inbox drops what was already applied."""
        assert self._consumer is not None
        async with self._commit_lock:
            assigned = self._consumer.assignment()
            # Never backwards: a record fetched before a rebalance may be applied after it, behind what the
            # partition's new owner (or this consumer, again) has committed since.
            offsets = {
                tp: offset
                for tp, offset in self._done.items()
                if offset > self._committed.get(tp, -1) and tp in assigned and (only is None or tp in only)
            }
            if not offsets:
                return
            try:
                await self._consumer.commit(offsets)
            except KafkaError as exc:
                log.warning("offset_commit_failed", consumer=self.name, error=repr(exc))
                return
            self._committed.update(offsets)

    # --- rebalances (aiokafka awaits these while the group rebalances) ---------------------------------

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # aiokafka's group protocol is eager: a rebalance revokes every partition this member has, and
        # each assignment restarts positions from the committed offsets. So everything fetched and not
        # yet committed may be let go here; it is read again by whoever owns its partition next.
        self._generation += 1  # first: nothing fetched before this point is applied or counted from now
        self._settled.clear()
        leaving = set(revoked)
        try:
            if leaving:
                log.info("partitions_revoked", consumer=self.name, partitions=len(leaving))
            for lane in self._lanes.values():
                lane.queue = [e for e in lane.queue if e.tp not in leaving]
                if not lane.queue:
                    lane.has_work.clear()
            # The batches in flight now finish (and count) or, past one shared deadline, are abandoned:
            # the transaction rolls back, and whoever owns the partition replays it.
            flying = {lane.flight.task: (lane, lane.flight) for lane in self._lanes.values() if lane.flight}
            for _, flight in flying.values():
                flight.counts = True
            if flying:
                _, late = await asyncio.wait(flying, timeout=self.settings.kafka_rebalance_timeout_s / 2)
                for task, (lane, flight) in flying.items():
                    if lane.flight is not flight:
                        continue  # its lane landed it meanwhile
                    if task in late:
                        log.warning("batch_abandoned_on_rebalance", consumer=self.name, lane=lane.number)
                        lane.flight = None
                        task.cancel()
                    else:
                        await self._land(lane)
            await self._commit(only=leaving)
        finally:
            for tp in leaving:
                self._done.pop(tp, None)
                self._committed.pop(tp, None)
                with contextlib.suppress(KeyError):  # no longer ours: its lag is another replica's to report
                    metrics.CONSUMER_LAG.remove(tp.topic.removeprefix(self.settings.topic_prefix), str(tp.partition))

    async def _stored_positions(self) -> dict[tuple[str, int], int] | None:
        """The positions stored with the data, or ``None`` if the database does not answer soon (the group
        waits for this listener, with no heartbeat)."""
        deadline = asyncio.get_running_loop().time() + self.settings.kafka_rebalance_timeout_s / 2
        while True:
            try:
                return await asyncio.wait_for(self.steps.stored_positions(), 1.0)
            except Exception as exc:
                if asyncio.get_running_loop().time() > deadline:
                    log.warning("stored_positions_unavailable", consumer=self.name, error=repr(exc))
                    return None
                await asyncio.sleep(0.2)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        try:
            await self._start_assignment(assigned)
        except asyncio.CancelledError:
            raise  # shutting down
        except Exception as exc:
            # aiokafka would log this and go on, with no lane ever applying again: stop the consumer (and
            # the process) instead, so that it is restarted and joins afresh.
            log.critical("assignment_failed", consumer=self.name, error=repr(exc))
            if self._failed is not None and not self._failed.done():
                self._failed.set_exception(exc)
            raise

    async def _start_assignment(self, assigned: list[TopicPartition]) -> None:
        consumer = self._consumer
        assert consumer is not None
        found = await self._stored_positions()
        stored = found or {}
        starts: dict[TopicPartition, int] = {}
        unknown: list[TopicPartition] = []  # neither committed nor stored: from the beginning of the log
        ahead: dict[TopicPartition, int] = {}
        for tp in assigned:  # where this assignment starts: commits only ever move forward from here
            committed = await consumer.committed(tp)
            self._committed[tp] = max(self._committed.get(tp, -1), committed if committed is not None else -1)
            # The database is ahead when the group's offsets were lost (expired, reset, a new group id):
            # resume where the applied data is, rather than replay the topic from its beginning.
            mine = stored.get((tp.topic.removeprefix(self.settings.topic_prefix), tp.partition), -1)
            if mine > self._committed[tp]:
                ahead[tp] = mine
            elif self._committed[tp] >= 0:
                starts[tp] = self._committed[tp]
            else:
                unknown.append(tp)
        if found is None and unknown:
            # No commit in Kafka for these (a new or expired group) and the database away: starting from the
            # log's beginning could replay what was applied long ago. Stop; the restart joins afresh.
            # (Where Kafka has a commit it is at most a batch or two behind the data: the inbox covers that,
            # so a database blip during a rebalance does not stop the consumer.)
            raise RuntimeError("stored positions unavailable for partitions Kafka has no commit for")
        ends = await consumer.end_offsets(list(ahead)) if ahead else {}
        for tp, position in ahead.items():
            if position > ends[tp]:
                # Beyond the partition's end: the topic was recreated (or the data belongs to another
                # deployment's topics). Seeking there would skip what is on it: Kafka's offset it is.
                log.error("stored_position_beyond_partition_end", consumer=self.name,
                          partition=f"{tp.topic}:{tp.partition}", stored=position, end=ends[tp])  # fmt: skip
                if self._committed[tp] >= 0:
                    starts[tp] = self._committed[tp]
                else:
                    unknown.append(tp)
                continue
            log.warning("resuming_from_stored_position", consumer=self.name, partition=f"{tp.topic}:{tp.partition}",
                        committed=self._committed[tp], stored=position)  # fmt: skip
            starts[tp] = position
            self._done[tp] = position  # and Kafka is told
        if unknown:
            starts.update({tp: int(offset) for tp, offset in (await consumer.beginning_offsets(unknown)).items()})
        # The fetcher starts on an assignment at once, from Kafka's committed offsets, while this listener
        # is still awaiting: what it handed over meanwhile may be from before the stored position. So, with
        # no await in between: every partition is put where it must start, and everything fetched until
        # now belongs to an earlier generation (never applied; read again from these starts).
        for tp, start in starts.items():
            consumer.seek(tp, start)
        self._generation += 1
        self._settled.set()
        named = sorted(f"{t.topic}:{t.partition}" for t in assigned)
        log.info("partitions_assigned", consumer=self.name, partitions=named)
