"""The outbox relay through what breaks publishing: a row that can never be published, partial failures of
a round, a crash between sending and marking, and a leader frozen mid-work.

Against the real broker and PostgreSQL. The property test runs the relay in this process with a producer
whose calls fail as the real world makes them fail (before or after the broker took the batch, or for
good for a row it refuses); the other tests drive the running services from outside.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from demo import samples
from demo.samples import case_of
from schemas import topics
from services.runtime.db import migrate
from services.runtime.devstack import Broker, create_database, drop_database, free_port
from services.runtime.kafka import ensure_topics
from services.runtime.relay import EPOCH_HEADER, OutboxRelay
from services.runtime.settings import Settings
from tests.faults.test_infrastructure_faults import scrape
from tests.harness import System

pytestmark = pytest.mark.integration


# --- reading a topic with its headers -------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    epoch: int | None


async def read_all(
    bootstrap: str, topic: str, done: Callable[[list[Seen]], bool], *, timeout_s: float = 30, settle_s: float = 0
) -> list[Seen]:
    """Every record on ``topic`` (all partitions, from the beginning) once ``done`` holds of them, and
    whatever else arrives in ``settle_s`` more."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        for _ in range(50):
            numbers = consumer.partitions_for_topic(topic)
            if numbers:
                break
            await consumer._client.force_metadata_update()  # noqa: SLF001 - no public way
            await asyncio.sleep(0.1)
        tps = [TopicPartition(topic, n) for n in sorted(numbers or [])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen: list[Seen] = []
        deadline = time.monotonic() + timeout_s
        while not done(seen):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out reading {topic}; have {len(seen)} records")
            for tp, messages in (await consumer.getmany(timeout_ms=300)).items():
                for m in messages:
                    epoch = dict(m.headers).get(EPOCH_HEADER)
                    seen.append(Seen(tp.partition, m.offset, m.key, m.value, int(epoch) if epoch else None))
        settled = time.monotonic() + settle_s
        while time.monotonic() < settled:
            for tp, messages in (await consumer.getmany(timeout_ms=100)).items():
                for m in messages:
                    epoch = dict(m.headers).get(EPOCH_HEADER)
                    seen.append(Seen(tp.partition, m.offset, m.key, m.value, int(epoch) if epoch else None))
        return seen
    finally:
        await consumer.stop()


def numbers(seen: list[Seen], field: str = "n") -> list[Any]:
    """The ``field`` of each record's JSON value, in partition then offset order."""
    return [json.loads(s.value).get(field) for s in sorted(seen, key=lambda s: (s.partition, s.offset))]


# --- property: partial failures and crashes keep each key's order and lose nothing ---------------------


class Crash(BaseException):
    """The relay's process dies here (nothing after this point runs)."""


@dataclass
class Plan:
    """How the broker and the process behave, call by call: drawn by hypothesis."""

    poison: frozenset[int]  # row numbers the broker refuses for good (too large for it)
    # per send_batch call: ok | lost (failed, never written) | unacked (written, then failed) | crash |
    # slow (written only after the round has given up on it: a late copy)
    faults: list[str]
    calls: int = 0
    dead: bool = False  # the process has crashed: nothing it still runs gets anywhere

    def next(self) -> str:
        fault = self.faults[self.calls] if self.calls < len(self.faults) else "ok"
        self.calls += 1
        return fault


class RecordingBatch:
    """A record batch that remembers which rows it holds (the real builder underneath)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.rows: list[int] = []

    def append(self, *, key: bytes | None, value: bytes, timestamp: int | None, headers: Any) -> Any:
        metadata = self.inner.append(key=key, value=value, timestamp=timestamp, headers=headers)
        if metadata is not None:
            self.rows.append(json.loads(value)["n"])
        return metadata

    def close(self) -> None:
        self.inner.close()


@dataclass
class FaultyProducer:
    """The real producer, with the faults of ``plan`` injected around its sends."""

    real: AIOKafkaProducer
    plan: Plan
    sends: list[list[int]] = field(default_factory=list)
    late: list[asyncio.Future[Any]] = field(default_factory=list)

    async def _late(self, batch: RecordingBatch, topic: str, partition: int) -> Any:
        await asyncio.sleep(SLOW_S)
        return await (await self.real.send_batch(batch.inner, topic, partition=partition))

    @property
    def client(self) -> Any:
        return self.real.client

    async def start(self) -> None:  # the real one is started (and stopped) by the test
        pass

    async def stop(self) -> None:
        pass

    def create_batch(self) -> RecordingBatch:
        return RecordingBatch(self.real.create_batch())

    async def partitions_for(self, topic: str) -> Any:
        return await self.real.partitions_for(topic)

    async def send_batch(self, batch: RecordingBatch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        if self.plan.dead:
            raise Crash()
        fault = self.plan.next()
        if self.plan.poison & set(batch.rows):
            return self._failed(MessageSizeTooLargeError("the broker refuses a record of this batch"))
        if fault == "lost":
            return self._failed(KafkaTimeoutError("lost on the way"))
        if fault == "slow":  # the producer has it and delivers it whatever the relay does meanwhile
            late = asyncio.ensure_future(self._late(batch, topic, partition))
            self.late.append(late)
            return asyncio.shield(late)
        sent = await (await self.real.send_batch(batch.inner, topic, partition=partition))
        self.sends.append(batch.rows)
        if fault == "unacked":
            return self._failed(KafkaTimeoutError("written, but the answer was lost"))
        if fault == "crash":
            self.plan.dead = True
            raise Crash()
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(sent)
        return done

    @staticmethod
    def _failed(exc: Exception) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_exception(exc)
        return future


@pytest.fixture(scope="module")
async def relay_db(pg_server: str) -> AsyncIterator[str]:
    name = f"rj_test_{uuid.uuid4().hex[:10]}"
    url = await create_database(pg_server, name)
    yield url
    await drop_database(pg_server, name)


_runs = itertools.count()
LEASE_S = 0.3  # a round has two thirds of it: a slow send outlives its round
SLOW_S = 0.4
KEYS = ("case-A", "case-B", "case-C", "case-D", None)

Drawn = tuple[list[str | None], frozenset[int], list[str]]  # row keys, poison rows, faults per call
rows_strategy = st.lists(st.sampled_from(KEYS), min_size=1, max_size=60)
plans = st.builds(
    lambda rows, poison, faults: (rows, poison, faults),
    rows_strategy,
    st.frozensets(st.integers(0, 59), max_size=3),
    st.lists(st.sampled_from(["ok"] * 5 + ["lost", "unacked", "crash", "slow"]), max_size=40),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=plans, batch=st.sampled_from([2, 7, 1000]), record_bytes=st.sampled_from([1024, 4096]))
async def test_any_failure_of_a_round_keeps_each_keys_order_loses_nothing_and_parks_only_what_is_refused(
    broker: Broker,
    relay_db: str,
    plan: tuple[list[str | None], frozenset[int], list[str]],
    batch: int,
    record_bytes: int,
) -> None:
    keys, poison_drawn, faults = plan
    poison = frozenset(n for n in poison_drawn if n < len(keys))
    run = next(_runs)
    schema = f"relay_{run}"
    settings_ = Settings(
        kafka_bootstrap_servers=broker.bootstrap,
        database_url=relay_db,
        topic_prefix=f"p{uuid.uuid4().hex[:8]}.",
        topic_partitions=3,
        relay_batch_size=batch,
        max_message_bytes=max(record_bytes, 1024),
        relay_lease_s=LEASE_S,
        retry_max_backoff_s=0.2,
    )
    await ensure_topics(settings_, [topics.REFERRAL])
    conn = await asyncpg.connect(relay_db)
    real = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", enable_idempotence=False,
                            max_batch_size=record_bytes)  # fmt: skip
    await real.start()
    try:
        await migrate(conn, schema, None)
        padding = "x" * (record_bytes // 3)  # a few rows per batch at most, so rounds span several batches
        await conn.executemany(
            f"INSERT INTO {schema}.outbox (event_id, topic, key, value) VALUES ($1, $2, $3, $4)",
            [
                (f"e{n}", topics.REFERRAL, key, json.dumps({"n": n, "pad": padding}).encode())
                for n, key in enumerate(keys)
            ],
        )
        producer = FaultyProducer(real, Plan(poison, faults))
        relay = OutboxRelay(schema=schema, settings=settings_)
        for _ in range(400):
            left = await conn.fetchval(  # rows still to go: not parked, not waiting behind a parked row
                f"""SELECT count(*) FROM {schema}.outbox o WHERE published_at IS NULL AND parked_at IS NULL
                    AND NOT EXISTS (SELECT 1 FROM {schema}.outbox p WHERE p.parked_at IS NOT NULL
                                    AND p.published_at IS NULL AND p.key = o.key AND p.id < o.id)"""
            )
            if not left:
                break
            try:
                assert await relay._hold_lease(conn)  # noqa: SLF001
                if not await relay._relay_round(conn, producer):  # type: ignore[arg-type]  # noqa: SLF001
                    await asyncio.sleep(0.05)  # a failed partition backs off before it is tried again
            except Crash:
                # The process died between the broker taking a batch and the rows being marked: what it had
                # written lands; a new process (no memory of this one) takes over once the lease expired.
                await asyncio.sleep(0.05)
                await real.flush()
                producer.plan.dead = False
                await conn.execute(f"UPDATE {schema}.relay_lease SET expires_at = now() - interval '1 s'")
                relay = OutboxRelay(schema=schema, settings=settings_)
        else:
            raise AssertionError("the relay did not finish")
        await asyncio.gather(*producer.late, return_exceptions=True)  # late copies land, as they would

        parked = {
            int(r["event_id"][1:]): r["parked_reason"]
            for r in await conn.fetch(
                f"SELECT event_id, parked_reason FROM {schema}.outbox WHERE parked_at IS NOT NULL"
            )
        }
        # A key's rows after a refused one wait behind it (keyless rows belong to no case and never wait),
        # so only the first refused row of a key is ever tried, and parked.
        held = {n for n, key in enumerate(keys) if key is not None and any(keys[p] == key and p < n for p in poison)}
        assert set(parked) == poison - held, "exactly the refused rows the relay could try are parked"
        assert all("refused by the broker" in reason for reason in parked.values())
        assert not {int(r["event_id"][1:]) for r in await conn.fetch(
            f"SELECT event_id FROM {schema}.outbox WHERE published_at IS NOT NULL")} & held  # fmt: skip
        wanted = set(range(len(keys))) - poison - held
        seen = await read_all(
            broker.bootstrap,
            settings_.topic(topics.REFERRAL),
            lambda seen: set(numbers(seen)) >= wanted,
            timeout_s=10,
            settle_s=0.3,
        )
        assert set(numbers(seen)) == wanted, "every row neither refused nor behind a refused one is published"
        # Each key's rows first appear in outbox order: a failure never lets a later event overtake.
        first: dict[str | None, list[int]] = defaultdict(list)
        for s in sorted(seen, key=lambda s: (s.partition, s.offset)):
            n = json.loads(s.value)["n"]
            if n not in first[keys[n]]:
                first[keys[n]].append(n)
        for key, order in first.items():
            assert order == sorted(order), f"key {key}: rows arrived as {order}"
    finally:
        await real.stop()
        await conn.close()


async def test_a_leader_that_reaches_the_database_but_not_kafka_gives_the_lease_up_to_one_that_can(
    broker: Broker, relay_db: str
) -> None:
    settings_ = Settings(
        kafka_bootstrap_servers=broker.bootstrap,
        database_url=relay_db,
        topic_prefix=f"p{uuid.uuid4().hex[:8]}.",
        relay_lease_s=0.3,
        relay_poll_interval_s=0.05,
    )
    schema = f"relay_{next(_runs)}"
    await ensure_topics(settings_, [topics.REFERRAL])
    conn = await asyncpg.connect(relay_db)
    real = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", enable_idempotence=False)
    await real.start()
    await migrate(conn, schema, None)
    await conn.executemany(
        f"INSERT INTO {schema}.outbox (event_id, topic, key, value) VALUES ($1, $2, $3, $4)",
        [(f"e{n}", topics.REFERRAL, "case-A", json.dumps({"n": n}).encode()) for n in range(3)],
    )
    cut_off = OutboxRelay(schema=schema, settings=settings_)
    cut_off._make_producer = lambda: FaultyProducer(real, Plan(frozenset(), ["lost"] * 100_000))  # type: ignore[assignment, method-assign, return-value]  # noqa: SLF001
    healthy = OutboxRelay(schema=schema, settings=settings_)
    first = asyncio.create_task(cut_off.run())
    try:
        for _ in range(100):
            if await conn.fetchval(f"SELECT holder FROM {schema}.relay_lease") == cut_off.holder:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the cut-off relay never led")
        second = asyncio.create_task(healthy.run())
        try:
            for _ in range(200):
                published = await conn.fetchval(f"SELECT count(*) FROM {schema}.outbox WHERE published_at IS NOT NULL")
                if published == 3:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the leader that could not publish kept the lease")
            assert await conn.fetchval(f"SELECT holder FROM {schema}.relay_lease") == healthy.holder
        finally:
            second.cancel()
    finally:
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await real.stop()
        await conn.close()


# --- an unpublishable row, through the running service --------------------------------------------------


async def test_a_row_too_large_to_publish_is_parked_its_key_waits_the_rest_flows_and_a_release_sends_all_in_order(
    system: System,
) -> None:
    port = free_port()
    system.start("referral", max_message_bytes=4096, ops_port=port)
    await system.wait_for(lambda: _leading(system), what="a relay to lead")
    keys = ["case-1", "case-2", "case-1", "case-3", "case-1", "case-2"]
    big = 2  # the second row of case-1: too large for MAX_MESSAGE_BYTES
    rows = [
        (f"row-{n}", topics.REFERRAL, key, json.dumps({"n": n, "pad": "x" * (10_000 if n == big else 10)}).encode())
        for n, key in enumerate(keys)
    ]
    conn = await asyncpg.connect(system.settings.database_url)
    try:
        async with conn.transaction():  # as a service's transaction writes them, with the relay's wake-up
            await conn.executemany(
                "INSERT INTO referral.outbox (event_id, topic, key, value) VALUES ($1, $2, $3, $4)", rows
            )
            await conn.execute("SELECT pg_notify('referral_outbox', '')")
    finally:
        await conn.close()
    # And the service's own work flows too.
    await system.publish(samples.on_crime_events(samples.crime_recorded("BIG/1"), samples.outcome_recorded("BIG/1")))

    def complete(seen: list[Seen]) -> bool:
        return {0, 1, 3, 5} <= set(numbers(seen)) and "rj.case.opened" in numbers(seen, "type")

    topic = system.settings.topic(topics.REFERRAL)
    # (and whatever else would go, would have gone within a second)
    seen = await read_all(system.settings.kafka_bootstrap_servers, topic, complete, settle_s=1)
    ours = [n for n in numbers(seen) if n is not None]
    # Case-1's later row (4) waits behind its parked row (2): a receiver never gets it without 2.
    assert sorted(ours) == [0, 1, 3, 5]
    reason = await system.fetchval("SELECT parked_reason FROM referral.outbox WHERE event_id = $1", f"row-{big}")
    assert reason and "MAX_MESSAGE_BYTES" in reason
    assert "outbox_row_parked_unpublishable" in system.logs("referral")

    async def gauge_shows_it() -> bool:
        return _scrape(port).get("rj_outbox_parked") == 1

    await system.wait_for(gauge_shows_it, timeout_s=15, what="rj_outbox_parked to be 1")

    # The operator raises the limit (a redeploy) and releases the row: it goes first, then its key's rest.
    listed = await _cli(system, "outbox", "parked", "--service", "referral", "--json")
    [parked] = json.loads(listed)
    assert parked["event_id"] == f"row-{big}" and parked["waiting_behind"] == 1
    system.service("referral").stop()
    system.start("referral", replica="raised")
    await _cli(system, "outbox", "release", "referral", str(parked["id"]))

    def all_six(seen: list[Seen]) -> bool:
        return set(range(6)) <= set(numbers(seen))

    seen = await read_all(system.settings.kafka_bootstrap_servers, topic, all_six)
    ours = [n for n in numbers(seen) if n is not None]
    for key in set(keys):
        order = [n for n in ours if keys[n] == key]
        assert order == sorted(set(order)), f"{key}: {order}"


# --- a frozen leader -----------------------------------------------------------------------------------


async def test_a_frozen_relay_leader_is_replaced_within_seconds_and_once_thawed_publishes_nothing(
    system: System,
) -> None:
    system.start("referral")
    system.start("referral", replica="b")
    await system.wait_for(lambda: _leading(system), what="a relay to lead")
    holder, epoch = await _lease(system)
    frozen = int(holder.split(":")[1])
    assert frozen not in (system.service("referral").process.pid, system.service("referral-b").process.pid)

    refs = iter(f"FROZEN/{i}" for i in itertools.count())

    async def traffic(n: int) -> None:
        for _ in range(n):
            ref = next(refs)
            await system.publish(samples.on_crime_events(samples.crime_recorded(ref), samples.outcome_recorded(ref)))
            await asyncio.sleep(0.02)

    await traffic(20)
    os.kill(frozen, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        await traffic(20)

        async def new_leader_publishes() -> bool:
            holder_now, epoch_now = await _lease(system)
            published = await system.fetchval(
                "SELECT count(*) FROM referral.outbox WHERE published_at > now() - interval '2 s'"
            )
            return holder_now != holder and epoch_now > epoch and published > 0

        await system.wait_for(new_leader_publishes, timeout_s=10, what="another replica to publish")
        took = time.monotonic() - stopped_at
        assert took < 10, took
    finally:
        os.kill(frozen, signal.SIGCONT)
    await traffic(20)  # the thawed relay finds itself without the lease; the new leader goes on

    async def all_published() -> bool:
        left = await system.fetchval("SELECT count(*) FROM referral.outbox WHERE published_at IS NULL")
        total = await system.fetchval("SELECT count(*) FROM referral.outbox")
        return left == 0 and total > 0

    await system.wait_for(all_published, timeout_s=30, what="every fact published")
    await asyncio.sleep(2)  # what the thawed relay might still send, it would have sent by now
    rows = await system.fetch("SELECT id, event_id FROM referral.outbox")
    ids = {r["event_id"] for r in rows}
    outbox_order = {r["event_id"]: r["id"] for r in rows}
    seen = await read_all(
        system.settings.kafka_bootstrap_servers,
        system.settings.topic(topics.REFERRAL),
        lambda seen: set(numbers(seen, "id")) >= ids,
        settle_s=0.5,
    )
    assert set(numbers(seen, "id")) == ids
    first: dict[bytes | None, list[int]] = defaultdict(list)
    arrived: set[str] = set()
    newest: dict[int, int] = {}
    for s in sorted(seen, key=lambda s: (s.partition, s.offset)):
        event_id = json.loads(s.value)["id"]
        assert s.epoch is not None
        if s.epoch < newest.get(s.partition, 0):
            # A batch the old leader had handed to its producer before it froze may land late, but only as
            # a copy: once thawed it publishes nothing new.
            assert event_id in arrived, "a leader whose term had ended published a new record"
        newest[s.partition] = max(newest.get(s.partition, 0), s.epoch)
        if event_id not in arrived:
            arrived.add(event_id)
            first[s.key].append(outbox_order[event_id])
    for key, order in first.items():
        assert order == sorted(order), f"key {key!r}: first copies out of outbox order"
    assert max(newest.values()) > epoch
    assert "relay_standing_by" in system.logs("referral") + system.logs("referral-b")


# --- helpers -----------------------------------------------------------------------------------------------


async def _lease(system: System) -> tuple[str, int]:
    row = (await system.fetch("SELECT holder, epoch FROM referral.relay_lease"))[0]
    return row["holder"], row["epoch"]


async def _leading(system: System) -> bool:
    return bool(await system.fetchval("SELECT count(*) FROM referral.relay_lease WHERE expires_at > now()"))


async def _cli(system: System, *args: str) -> str:
    """Run ``rj ARGS`` as an operator would, against this system; its output."""
    status, out, err = await system.cli(*args)
    assert status == 0, err
    return out


def _scrape(port: int) -> dict[str, float]:
    try:
        return scrape(port)
    except OSError:
        return {}


async def test_hostile_upstream_input_whose_case_facts_are_too_large_parks_them_and_every_other_case_flows(
    system: System,
) -> None:
    """From outside only: a crime whose victim's name is 600 KB and an outcome whose offender's is too (nothing in
    the upstream contract bounds them; each record is under the broker's 1 MiB) make a case whose facts, which
    carry both participants, no Kafka broker with its default limit would take. They are parked, that case's
    later facts wait behind them, and the other crimes, before and after it, become cases."""
    port = free_port()
    system.start("referral", ops_port=port)
    victim = samples.victim("V-HUGE").model_copy(update={"name": "N" * 600_000})
    outcome = samples.outcome_recorded("HUGE/1")
    outcome = outcome.model_copy(update={"offender": outcome.offender.model_copy(update={"name": "M" * 600_000})})

    def crimes(refs: list[str]) -> list[tuple[str, str, bytes]]:
        return [
            m for r in refs for m in samples.on_crime_events(samples.crime_recorded(r), samples.outcome_recorded(r))
        ]

    before = [f"CALM/{i}" for i in range(5)]
    after = [f"CALM/{i}" for i in range(5, 10)]
    huge = samples.on_crime_events(samples.crime_recorded("HUGE/1", victims=[victim]), outcome)
    await system.publish([*crimes(before), *huge, *crimes(after)])

    calm = {case_of(r) for r in before + after}

    def accepted(messages: list[dict[str, Any]]) -> set[str]:
        return {m["subject"] for m in messages if m.get("type") == "rj.case.accepted"}

    messages = await system.read_until(topics.REFERRAL, lambda ms: accepted(ms) >= calm, settle_s=1)
    huge_case = case_of("HUGE/1")
    out = [m["type"] for m in messages if m["subject"] == huge_case]
    assert "rj.case.opened" not in out and "rj.case.accepted" not in out, out  # (a small fact before them may go)
    parked = await system.fetch(
        "SELECT key, parked_reason, length(value) AS size FROM referral.outbox WHERE parked_at IS NOT NULL"
    )
    assert [r["key"] for r in parked] == [huge_case]
    assert "MAX_MESSAGE_BYTES" in parked[0]["parked_reason"] and parked[0]["size"] > 1024 * 1024
    waiting = await system.fetchval(
        "SELECT count(*) FROM referral.outbox WHERE key = $1 AND published_at IS NULL AND parked_at IS NULL", huge_case
    )
    assert waiting >= 1, "the huge case's later facts wait behind its parked one, kept, not lost"
    assert system.service("referral").running

    async def alerting() -> bool:
        return _scrape(port).get("rj_outbox_parked", 0) >= 1

    await system.wait_for(alerting, timeout_s=15, what="rj_outbox_parked to alert")
