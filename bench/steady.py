"""What the latency benchmarks share: a stack of their own, records sent at a steady rate and their arrivals
timed, the broker's round trip alone as the ceiling, and the table of figures.

Each send is timestamped just before ``send`` (one producer: ``linger_ms=0``, ``acks=all``), each arrival
when a consumer with no group (every partition assigned, ``fetch_max_wait_ms=5``) hands it over.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from pydantic import SecretStr

from demo import samples
from demo.samples import case_of
from schemas import topics
from services.notify.channels.reference import new_reference_key
from services.runtime.devstack import Broker, database_for_run, ensure_postgres, start_broker
from services.runtime.kafka import ensure_topics
from services.runtime.keystore import MasterKeys
from services.runtime.settings import Settings
from services.runtime.supervisor import Supervisor

STATE = Path(".rj/bench")
SCRATCH = "bench.latency-scratch"  # the ceiling's topic (prefixed like the others)
HEADERS = [("content-type", b"application/cloudevents+json")]
ARRIVAL_TIMEOUT_S = 10.0  # after the last send

Outgoing = tuple[str, str, bytes, bytes]  # (what to match the arrival on, prefixed topic, key, value)


# --- the stack of one run -----------------------------------------------------------------------


def show_defaults() -> None:
    """Print whichever batching, fetching and relay settings this version of the services has, as they read them."""
    shown = {k: v for k, v in Settings().model_dump().items() if k.startswith(("batch", "fetch", "relay"))}
    print("services on their defaults: " + ", ".join(f"{k.upper()} {v}" for k, v in shown.items()))


@dataclass
class Stack:
    """A broker, a database and topics of this run's own, the services started on them, and one producer."""

    settings: Settings
    supervisor: Supervisor
    producer: AIOKafkaProducer
    broker: Broker

    def start(self, *services: str) -> None:
        for name in services:
            self.supervisor.start(name)

    async def partitions(self, topic: str) -> set[int]:
        """The partitions of a logical topic."""
        found: set[int] = await self.producer.partitions_for(self.settings.topic(topic))
        return found

    async def wait_until(
        self, done: Callable[[], bool | Awaitable[bool]], timeout_s: float, progress: Callable[[], str]
    ) -> None:
        """Wait until ``done``; stop the run, saying ``progress()``, if a service exits or the time is up."""
        deadline = time.monotonic() + timeout_s
        while True:
            answer = done()
            if answer if isinstance(answer, bool) else await answer:
                return
            for name, service in self.supervisor.processes.items():
                if not service.running:
                    raise SystemExit(f"{name} exited ({service.process.returncode}); see {service.log_path}")
            if time.monotonic() > deadline:
                raise SystemExit(f"not within {timeout_s:g} s: {progress()}")
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running_stack(name: str) -> AsyncIterator[Stack]:
    """A Tansu broker, a fresh database and fresh topics (the scratch topic too); services are started on
    their defaults, only the bootstrap servers, database, topic prefix and master keys set. All stopped on the
    way out."""
    STATE.mkdir(parents=True, exist_ok=True)
    broker = start_broker(log_path=STATE / "tansu.log")
    try:
        server = await ensure_postgres(STATE)
        async with database_for_run(server, "rj_bench") as database_url:
            prefix = f"{name}-{os.getpid()}."
            keys = MasterKeys.generate("bench1")  # personal data sealed, as everywhere
            settings = Settings(
                kafka_bootstrap_servers=broker.bootstrap,
                database_url=database_url,
                topic_prefix=prefix,
                master_keys=SecretStr(keys),
            )
            env = {
                "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                "DATABASE_URL": database_url,
                "TOPIC_PREFIX": prefix,
                "MASTER_KEYS": keys,
                "NOTIFY_REFERENCE_KEY": new_reference_key(),
            }
            await ensure_topics(settings, [*topics.ALL_TOPICS, SCRATCH])
            producer = new_producer(broker.bootstrap)
            await producer.start()
            supervisor = Supervisor(env=env, log_dir=STATE / "logs")
            try:
                yield Stack(settings, supervisor, producer, broker)
            finally:
                supervisor.stop_all()
                await producer.stop()
    finally:
        broker.stop()


# --- the machine ---------------------------------------------------------------------------------


def _process_ticks() -> dict[int, tuple[int, int]]:
    """Every process: pid -> (parent pid, CPU ticks used so far, user and system)."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        out[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return out


def _machine_ticks() -> tuple[int, int]:
    """(busy, all) CPU ticks of the machine so far."""
    with open("/proc/stat") as f:
        ticks = [int(t) for t in f.readline().split()[1:9]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return sum(ticks) - idle, sum(ticks)


@dataclass(frozen=True)
class CpuSnapshot:
    machine: tuple[int, int]
    processes: dict[int, tuple[int, int]]
    groups: dict[str, set[int]]  # a group's processes, their descendants included


async def cpu_snapshot(stack: Stack) -> CpuSnapshot:
    """CPU used so far by the machine and by this run's processes: the services, the broker, the benchmark,
    and the PostgreSQL backends of this run's database."""
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    processes = _process_ticks()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in processes.items():
        children.setdefault(parent, []).append(pid)

    def tree(roots: Iterable[int]) -> set[int]:
        found, todo = set(), list(roots)
        while todo:
            pid = todo.pop()
            if pid not in found:
                found.add(pid)
                todo += children.get(pid, [])
        return found

    groups = {
        "services": tree(s.process.pid for s in stack.supervisor.processes.values()),
        "broker": tree([stack.broker.process.pid]),
        "benchmark": {os.getpid()},
        "its PostgreSQL backends": {r["pid"] for r in rows},
    }
    return CpuSnapshot(_machine_ticks(), processes, groups)


def cpu_report(before: CpuSnapshot, after: CpuSnapshot) -> str:
    """Cores busy between two snapshots: the machine's, this run's by group, and everything else's (other
    work on the machine competes for the same cores and shows in every figure)."""
    busy, total = (a - b for a, b in zip(after.machine, before.machine, strict=True))
    cores = os.cpu_count() or 1
    wall_ticks = total / cores  # ticks of one core over the window

    def used(pids: set[int]) -> float:
        # A process started meanwhile counts in full; one that ended meanwhile is lost (short-lived ones only).
        ticks = sum(after.processes[p][1] - before.processes.get(p, (0, 0))[1] for p in pids if p in after.processes)
        return ticks / wall_ticks if wall_ticks else math.nan

    ours = {name: used(pids) for name, pids in after.groups.items()}
    machine = busy / wall_ticks if wall_ticks else math.nan
    parts = ", ".join(f"{name} {v:.2f}" for name, v in ours.items())
    return (
        f"CPU meanwhile, in cores of {cores}: the machine {machine:.2f}; this run {sum(ours.values()):.2f} ({parts}); "
        f"everything else {machine - sum(ours.values()):.2f}; load average {os.getloadavg()[0]:.2f}"
    )


# --- cases ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A case as upstream refers it: one crime, its victim and an offender who admitted it."""

    reference: str

    @property
    def case_id(self) -> str:
        return case_of(self.reference)

    @property
    def victim_id(self) -> str:
        return f"V-{self.reference}"

    @property
    def offender_id(self) -> str:
        return f"O-{self.reference}"

    def upstream(self) -> list[tuple[str, str, bytes]]:
        """A crime with this victim, and an admitted outcome: enough for referral to accept the case."""
        crime = samples.crime_recorded(self.reference, victims=[samples.victim(self.victim_id)])
        return samples.on_crime_events(crime, samples.outcome_recorded(self.reference))


# --- sending and receiving ----------------------------------------------------------------------


def new_producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks="all", enable_idempotence=False)


@contextlib.asynccontextmanager
async def listening(
    bootstrap: str, topic: str, partitions: Iterable[int], on_record: Callable[[float, ConsumerRecord], None]
) -> AsyncIterator[None]:
    """While inside, hand every record on ``topic`` (from its beginning) to ``on_record`` with its arrival time:
    a consumer with no group, assigned every partition, polling with ``fetch_max_wait_ms=5``."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=5,
    )
    await consumer.start()

    async def receive() -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            arrived = time.perf_counter()
            for records in batches.values():
                for record in records:
                    on_record(arrived, record)

    task: asyncio.Task[None] | None = None
    try:
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        task = asyncio.create_task(receive())
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await consumer.stop()


async def send_paced(producer: AIOKafkaProducer, rate: float, outgoing: Iterable[Outgoing]) -> dict[str, float]:
    """Send one record every 1/rate seconds on a fixed schedule (a late send does not shift the ones after it),
    and wait until the broker has them all. Returns when each was handed to ``send``, by its match id."""
    sent: dict[str, float] = {}
    deliveries: list[asyncio.Future[object]] = []
    start = time.perf_counter()
    for i, (match_id, topic, key, value) in enumerate(outgoing):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[match_id] = time.perf_counter()
        deliveries.append(await producer.send(topic, value, key=key, headers=HEADERS))
    await asyncio.gather(*deliveries)
    return sent


async def await_arrivals(sent: dict[str, float], settled: Callable[[], set[str]]) -> None:
    """Wait until every sent id is settled, or until ``ARRIVAL_TIMEOUT_S`` after the last send."""
    deadline = max(sent.values(), default=time.perf_counter()) + ARRIVAL_TIMEOUT_S
    while not sent.keys() <= settled() and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)


# --- the ceiling --------------------------------------------------------------------------------


@dataclass
class Probes:
    """Arrivals on the scratch topic, by record key."""

    arrived: dict[str, float] = field(default_factory=dict)

    def on_record(self, arrived: float, record: ConsumerRecord) -> None:
        self.arrived.setdefault(record.key.decode(), arrived)

    def settled(self) -> set[str]:
        return set(self.arrived)


def probes(settings: Settings, count: int) -> Iterator[Outgoing]:
    """Records for the ceiling: the size of a consent command, each keyed (and matched) by its own key."""
    for i in range(count):
        _, _, value = samples.consent(case_of(f"PROBE/{i:07d}"), "V-PROBE")
        key = f"probe-{i}"
        yield key, settings.topic(SCRATCH), key.encode(), value


async def measure_ceiling(stack: Stack, rate: float, count: int) -> Figures:
    """The broker's round trip alone: ``count`` records to the scratch topic and back, at ``rate``."""
    scratch = stack.settings.topic(SCRATCH)
    print(f"ceiling: {count} records at {rate:g}/s through {scratch}")
    arrivals = Probes()
    async with listening(
        stack.settings.kafka_bootstrap_servers, scratch, await stack.partitions(SCRATCH), arrivals.on_record
    ):
        sent = await send_paced(stack.producer, rate, probes(stack.settings, count))
        await await_arrivals(sent, arrivals.settled)
    return Figures.of(sent, arrivals.arrived)


# --- figures ------------------------------------------------------------------------------------


def percentiles(values: Sequence[float]) -> tuple[float, float, float, float]:
    """p50, p95, p99 and max (NaN for none)."""
    if len(values) <= 1:
        only = values[0] if values else math.nan
        return only, only, only, only
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98], max(values)


@dataclass(frozen=True)
class Figures:
    sent: int
    latencies_ms: list[float]

    @classmethod
    def of(cls, sent: dict[str, float], arrived: dict[str, float]) -> Figures:
        return cls(len(sent), [(arrived[i] - t) * 1000 for i, t in sent.items() if i in arrived])

    @property
    def missing(self) -> int:
        return self.sent - len(self.latencies_ms)


def report(rate: float, rows: Sequence[tuple[str, Figures]]) -> None:
    width = max(32, *(len(label) + 2 for label, _ in rows))
    print(f"\nlatency at {rate:g}/s (ms, from just before send to arrival at the consumer)")
    print(f"{'':<{width}}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}{'sent':>8}{'received':>10}{'missing':>9}")
    for label, figures in rows:
        numbers = "".join(f"{v:>9.1f}" for v in percentiles(figures.latencies_ms))
        counts = f"{figures.sent:>8}{len(figures.latencies_ms):>10}{figures.missing:>9}"
        print(f"{label:<{width}}{numbers}{counts}")
