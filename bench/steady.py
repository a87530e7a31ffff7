"""What the latency benchmarks share: a stack of their own, records sent at a steady rate and their arrivals
timed, the broker's round trip alone as the ceiling, and the table of figures.

Each send is timed from its moment on the schedule (one producer: ``linger_ms=0``, ``acks=all``; a sender
fallen behind adds its delay, printed, rather than hiding it), each arrival when a consumer with no group (every
partition assigned, ``fetch_max_wait_ms=5``) hands it over.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import re
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiosmtpd.controller import Controller
from pydantic import SecretStr

from demo import samples
from demo.samples import case_of
from schemas import topics
from services.api import app as api
from services.consent import app as consent
from services.notify import app as notify
from services.notify.channels.reference import new_reference_key
from services.privacy import app as privacy
from services.referral import app as referral
from services.runtime.devstack import Broker, database_for_run, ensure_postgres, free_port, start_broker
from services.runtime.kafka import ensure_topics
from services.runtime.keystore import MasterKeys
from services.runtime.settings import Settings
from services.runtime.supervisor import Supervisor
from services.scheduling import app as scheduling

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

    def check_running(self) -> None:
        """Stop the run if a service has exited."""
        for name, service in self.supervisor.processes.items():
            if not service.running:
                raise SystemExit(f"{name} exited ({service.process.returncode}); see {service.log_path}")

    async def wait_until(
        self, done: Callable[[], bool | Awaitable[bool]], timeout_s: float, progress: Callable[[], str]
    ) -> None:
        """Wait until ``done``; stop the run, saying ``progress()``, if a service exits or the time is up."""
        deadline = time.monotonic() + timeout_s
        while True:
            answer = done()
            if answer if isinstance(answer, bool) else await answer:
                return
            self.check_running()
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


def machine_ticks() -> tuple[int, int]:
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


async def cpu_snapshot(stack: Stack, *, by_service: bool = False) -> CpuSnapshot:
    """CPU used so far by the machine and by this run's processes: the services (each on its own, relay included,
    if ``by_service``), the broker, the benchmark, and the PostgreSQL backends of this run's database."""
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

    processes_of = stack.supervisor.processes.items()
    services = {name: tree([s.process.pid]) for name, s in processes_of} if by_service else {}
    groups = {
        **(services or {"services": tree(s.process.pid for _, s in processes_of)}),
        "broker": tree([stack.broker.process.pid]),
        "benchmark": {os.getpid()},
        "its PostgreSQL backends": {r["pid"] for r in rows},
    }
    return CpuSnapshot(machine_ticks(), processes, groups)


@dataclass(frozen=True)
class CpuUse:
    """Cores busy between two snapshots, of the machine's ``cores``: the machine's, this run's by group, and
    everything else's (other work on the machine competes for the same cores and shows in every figure)."""

    cores: int
    machine: float
    ours: dict[str, float]
    load_average: float  # the 1-minute load average at the second snapshot

    @classmethod
    def between(cls, before: CpuSnapshot, after: CpuSnapshot) -> CpuUse:
        busy, total = (a - b for a, b in zip(after.machine, before.machine, strict=True))
        cores = os.cpu_count() or 1
        wall_ticks = total / cores  # ticks of one core over the window

        def used(pids: set[int]) -> float:
            # A process started meanwhile counts in full; one that ended meanwhile is lost (short-lived ones only).
            ticks = sum(
                after.processes[p][1] - before.processes.get(p, (0, 0))[1] for p in pids if p in after.processes
            )
            return ticks / wall_ticks if wall_ticks else math.nan

        ours = {name: used(pids) for name, pids in after.groups.items()}
        return cls(cores, busy / wall_ticks if wall_ticks else math.nan, ours, os.getloadavg()[0])

    @property
    def this_run(self) -> float:
        return sum(self.ours.values())

    @property
    def everything_else(self) -> float:
        return self.machine - self.this_run

    def __str__(self) -> str:
        parts = ", ".join(f"{name} {v:.2f}" for name, v in self.ours.items())
        return (
            f"CPU meanwhile, in cores of {self.cores}: the machine {self.machine:.2f}; this run {self.this_run:.2f} "
            f"({parts}); everything else {self.everything_else:.2f}; load average {self.load_average:.2f}"
        )


def cpu_report(before: CpuSnapshot, after: CpuSnapshot) -> str:
    """Cores busy between two snapshots, as a line: the machine's, this run's by group, and everything else's."""
    return str(CpuUse.between(before, after))


# --- every service's lag -----------------------------------------------------------------------

SAMPLE_S = 0.25

#: What each service reads (its ``TOPICS_IN``, which its ``build`` consumes): the topics its group's lag is summed over.
READS: dict[str, tuple[str, ...]] = {
    "referral": referral.TOPICS_IN,
    "consent": consent.TOPICS_IN,
    "scheduling": scheduling.TOPICS_IN,
    "notify": notify.TOPICS_IN,
    "privacy": privacy.TOPICS_IN,
    "api": api.TOPICS_IN,
    "audit": tuple(topics.ALL_TOPICS),
}


def group_of(settings: Settings, service: str) -> str:
    """A service's consumer group, as ``ServiceApp._start_intake`` names it."""
    return f"{settings.topic_prefix}rj-{service}-intake"


@dataclass(frozen=True)
class Sample:
    at: float  # monotonic, when the committed offsets were asked for (the end offsets are asked for after)
    lag: dict[str, int]  # by service: records on its topics its group has not committed, per partition clamped at 0
    committed: dict[str, int]  # by service: the sum of its group's committed offsets (none counts as 0)


@dataclass
class LagWatch:
    """Every service's lag, sampled every ``SAMPLE_S`` by a task of its own while inside ``watching``.

    A service's lag is its consumer group's: the sum, over the partitions of every topic it reads, of the
    partition's end offset minus the group's committed offset. Services commit to Kafka at most once every
    ``OFFSET_COMMIT_INTERVAL_S``, so this trails what they have applied by up to that; and on Tansu a partition's
    listed end is one past the *start* of its last record batch, so a few records can read 0 (each partition's
    lag is clamped at 0)."""

    settings: Settings
    partitions: dict[str, list[TopicPartition]]  # by service, as on the broker
    samples: list[Sample] = field(default_factory=list)
    errors: int = 0

    @classmethod
    async def of(cls, stack: Stack, services: Iterable[str]) -> LagWatch:
        """A watch on ``services`` (each read as ``READS`` says) of the stack's broker."""
        partitions = {
            service: [TopicPartition(stack.settings.topic(t), p) for t in READS[service]
                      for p in sorted(await stack.partitions(t))]
            for service in services
        }  # fmt: skip
        return cls(stack.settings, partitions)

    def since(self, moment: float) -> list[Sample]:
        return [s for s in self.samples if s.at >= moment]

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[None]:
        bootstrap = self.settings.kafka_bootstrap_servers
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        ends = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        await admin.start()
        await ends.start()
        task = asyncio.create_task(self._sample_forever(admin, ends))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await ends.stop()
            await admin.close()

    async def _sample_forever(self, admin: AIOKafkaAdminClient, ends: AIOKafkaConsumer) -> None:
        every = sorted({tp for tps in self.partitions.values() for tp in tps})
        coordinators: dict[str, int] = {}
        began = time.monotonic()
        for n in itertools.count():
            try:
                self.samples.append(await self._sample(admin, ends, every, coordinators))
            except Exception as exc:  # a slow or refused request: this sample is missing, the next one is taken
                self.errors += 1
                coordinators.clear()
                if self.errors <= 3:
                    print(f"(a lag sample failed: {exc!r})", file=sys.stderr)
            await asyncio.sleep(max(0.0, began + (n + 1) * SAMPLE_S - time.monotonic()))

    async def _sample(
        self,
        admin: AIOKafkaAdminClient,
        ends: AIOKafkaConsumer,
        every: list[TopicPartition],
        coordinators: dict[str, int],
    ) -> Sample:
        at = time.monotonic()
        committed: dict[str, dict[TopicPartition, int]] = {}
        # Committed offsets first, end offsets after: a record published in between counts as lag, never the
        # other way round.
        for service, tps in self.partitions.items():
            group = group_of(self.settings, service)
            if group not in coordinators:
                coordinators[group] = await admin.find_coordinator(group)
            offsets = await admin.list_consumer_group_offsets(group, coordinators[group], partitions=tps)
            committed[service] = {tp: max(offsets[tp].offset, 0) if tp in offsets else 0 for tp in tps}
        end = await ends.end_offsets(every)
        lag = {s: sum(max(end[tp] - offset, 0) for tp, offset in c.items()) for s, c in committed.items()}
        return Sample(at, lag, {s: sum(c.values()) for s, c in committed.items()})


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
    def victim_address(self) -> str:
        """The victim's email address (``demo.samples.victim``'s), as the SMTP server sees it."""
        return f"{self.victim_id.lower()}@example.org"

    @property
    def offender_id(self) -> str:
        return f"O-{self.reference}"

    def upstream(self) -> list[tuple[str, str, bytes]]:
        """A crime with this victim, and an admitted outcome: enough for referral to accept the case."""
        crime = samples.crime_recorded(self.reference, victims=[samples.victim(self.victim_id)])
        return samples.on_crime_events(crime, samples.outcome_recorded(self.reference))


# --- mail --------------------------------------------------------------------------------------

ALWAYS_OPEN = "mon-sun 00:00-24:00; hol 00:00-24:00"  # quiet hours open all day: every message goes at once
MESSAGE_ID = re.compile(rb"^Message-ID:\s*<([^@>]+)@", re.IGNORECASE | re.MULTILINE)


class Timestamped:
    """The SMTP server's handler: when each message was accepted, by recipient and by its outside reference (the
    local part of its ``Message-ID``: ``References.of`` its notification id, services/notify/channels/reference.py)."""

    def __init__(self) -> None:
        self.accepted: dict[str, float] = {}
        self.by_reference: dict[str, float] = {}

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        now = time.perf_counter()
        for rcpt in envelope.rcpt_tos:
            self.accepted.setdefault(rcpt.lower(), now)
        if found := MESSAGE_ID.search(envelope.content, 0, 16_384):  # among the headers, which come first
            self.by_reference.setdefault(found.group(1).decode(), now)
        return "250 OK"


@contextlib.contextmanager
def catching_mail() -> Iterator[tuple[Timestamped, dict[str, str]]]:
    """A real SMTP server (aiosmtpd on 127.0.0.1, a free port) timestamping what it accepts, and the settings that
    point notify at it with quiet hours open all day."""
    handler, port = Timestamped(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, {"NOTIFY_SMTP_HOST": "127.0.0.1", "NOTIFY_SMTP_PORT": str(port), "NOTIFY_SMTP_TLS": "none",
                        "NOTIFY_QUIET_HOURS": ALWAYS_OPEN}  # fmt: skip
    finally:
        controller.stop()


# --- sending and receiving ----------------------------------------------------------------------


def new_producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks="all", enable_idempotence=False)


PUBLISHED_WAIT_MS = 500
"""How long a listener timing records at their publication waits on an idle fetch (as the followers do)."""


@contextlib.asynccontextmanager
async def listening(
    bootstrap: str,
    topic: str,
    partitions: Iterable[int],
    on_record: Callable[[float, ConsumerRecord], None],
    *,
    at_publication: bool = False,
) -> AsyncIterator[None]:
    """While inside, hand every record on ``topic`` (from its beginning) to ``on_record`` with its arrival time:
    a consumer with no group, assigned every partition, polling with ``fetch_max_wait_ms=5``.

    ``at_publication``: hand it the moment the record was published instead (its Kafka timestamp, set by the
    publishing relay's producer, on the ``perf_counter`` clock), and poll every ``PUBLISHED_WAIT_MS``: the time
    then does not depend on how often this consumer asks, and a consumer asking every 5 ms costs the broker about
    0.05 of a core (measured on Tansu, 4 partitions), which a capacity figure should not pay for its own measuring."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=PUBLISHED_WAIT_MS if at_publication else 5,
    )
    await consumer.start()

    async def receive() -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            arrived = time.perf_counter()
            behind = time.time() - arrived  # wall clock minus perf_counter: a record's timestamp on this clock
            for records in batches.values():
                for record in records:
                    on_record(record.timestamp / 1000 - behind if at_publication else arrived, record)

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
    and wait until the broker has them all. Returns each record's moment on the schedule, by its match id
    (``send_scheduled``)."""
    return await send_scheduled(producer, ((i / rate, record) for i, record in enumerate(outgoing)))


async def send_scheduled(producer: AIOKafkaProducer, schedule: Iterable[tuple[float, Outgoing]]) -> dict[str, float]:
    """Send each record at its moment (seconds from the first send, in order; a late send does not shift the
    ones after it), and wait until the broker has them all. Returns each record's moment, by its match id: the
    time it was due, not when it went, so that a sender fallen behind its schedule (this process starved of CPU)
    adds its delay to the latency instead of hiding it and lowering the rate (coordinated omission). How far
    behind the sends went is printed."""
    sent: dict[str, float] = {}
    late: list[float] = []
    deliveries: list[asyncio.Future[object]] = []
    start = time.perf_counter()
    for at, (match_id, topic, key, value) in schedule:
        due = start + at
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        late.append(max(0.0, time.perf_counter() - due))
        sent[match_id] = due
        deliveries.append(await producer.send(topic, value, key=key, headers=HEADERS))
    await asyncio.gather(*deliveries)
    if late:
        span = time.perf_counter() - start
        print(
            f"sends: {len(late)} in {span:.1f} s ({len(late) / max(span, 1e-9):.1f}/s); behind schedule p99 "
            f"{percentiles(late)[2] * 1000:.1f} ms, max {max(late) * 1000:.1f} ms (counted in the latencies)"
        )
    return sent


async def await_arrivals(sent: dict[str, float], settled: Callable[[], set[str]]) -> None:
    """Wait until every sent id is settled, or until ``ARRIVAL_TIMEOUT_S`` after the last send (``sent`` holds the
    sends' moments on the schedule: a sender fallen behind sent its last later, and it gets its full wait too)."""
    deadline = max([*sent.values(), time.perf_counter()]) + ARRIVAL_TIMEOUT_S
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
    print(f"\nlatency at {rate:g}/s (ms, from each send's moment on the schedule to arrival at the consumer)")
    print(f"{'':<{width}}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}{'sent':>8}{'received':>10}{'missing':>9}")
    for label, figures in rows:
        numbers = "".join(f"{v:>9.1f}" for v in percentiles(figures.latencies_ms))
        counts = f"{figures.sent:>8}{len(figures.latencies_ms):>10}{figures.missing:>9}"
        print(f"{label:<{width}}{numbers}{counts}")
