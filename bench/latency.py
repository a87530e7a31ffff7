"""Latency benchmark: one hop from a command to its fact at a steady rate, beside the broker round trip alone.

    .venv/bin/python -m bench.latency --rate 10 --seconds 60

It starts its own Tansu broker, a fresh database and fresh topics, and runs the referral and consent
services as processes on their default settings (only the bootstrap servers, database and topic prefix
are set). It prepares one case per measured command up front: a crime and an admitted outcome each, and
waits until consent has every case in preparation (``rj.preparation.started``). Then it measures:

- the ceiling: a record sent to a scratch topic and received back by a consumer, at the same rate;
- command to fact: ``rj.consent.give`` (the victim's participation consent) on ``rj.commands``, one case
  per command, one command every 1/rate seconds, until ``rj.consent.given`` with that command as its
  ``causationid`` arrives on ``rj.consent``.

Each send is timestamped just before ``send`` (one producer: ``linger_ms=0``, ``acks=all``), each arrival
when a consumer with no group (every partition assigned, ``fetch_max_wait_ms=5``) hands it over. It prints
p50, p95, p99 and max of both, and exits non-zero if a command is rejected or a fact (or a probe) has not
arrived 10 s after the last send.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from schemas import topics
from schemas.commands import CommandRejected
from schemas.consent import ConsentGiven, PreparationStarted
from services import samples
from services.referral.domain import case_id_for
from services.runtime.devstack import database_for_run, ensure_postgres, start_broker
from services.runtime.kafka import ensure_topics, publish
from services.runtime.settings import Settings
from services.runtime.supervisor import Supervisor

STATE = Path(".rj/bench")
SCRATCH = "bench.latency-scratch"  # the ceiling's topic (prefixed like the others)
HEADERS = [("content-type", b"application/cloudevents+json")]
ARRIVAL_TIMEOUT_S = 10.0  # after the last send
PREPARATION_TIMEOUT_S = 300.0
SERVICES = ("referral", "consent")

Outgoing = tuple[str, str, bytes, bytes]  # (what to match the arrival on, prefixed topic, key, value)


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


# --- what arrives -------------------------------------------------------------------------------


@dataclass
class ConsentFacts:
    """What the benchmark follows on ``rj.consent``: cases in preparation, and the outcome of each command."""

    prepared: set[str] = field(default_factory=set)  # case ids
    given: dict[str, float] = field(default_factory=dict)  # command id -> arrival of its rj.consent.given
    rejected: dict[str, str] = field(default_factory=dict)  # command id -> reason

    def on_record(self, arrived: float, record: ConsumerRecord) -> None:
        event = json.loads(record.value)
        kind, cause = event.get("type"), event.get("causationid")
        if kind == PreparationStarted.event_type:
            self.prepared.add(event["subject"])
        elif kind == ConsentGiven.event_type and cause:
            self.given.setdefault(cause, arrived)
        elif kind == CommandRejected.event_type and cause:
            self.rejected.setdefault(cause, event["data"]["reason"])

    def settled(self) -> set[str]:
        return self.given.keys() | self.rejected.keys()


@dataclass
class Probes:
    """Arrivals on the scratch topic, by record key."""

    arrived: dict[str, float] = field(default_factory=dict)

    def on_record(self, arrived: float, record: ConsumerRecord) -> None:
        self.arrived.setdefault(record.key.decode(), arrived)

    def settled(self) -> set[str]:
        return set(self.arrived)


# --- the traffic --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    reference: str

    @property
    def case_id(self) -> str:
        return case_id_for(self.reference)

    @property
    def victim_id(self) -> str:
        return f"V-{self.reference}"

    def upstream(self) -> list[tuple[str, str, bytes]]:
        """A crime with this victim, and an admitted outcome: enough for referral to accept the case."""
        crime = samples.crime_recorded(self.reference, victims=[samples.victim(self.victim_id)])
        return samples.on_crime_events(crime, samples.outcome_recorded(self.reference))


def consent_commands(settings: Settings, cases: list[Case]) -> Iterator[Outgoing]:
    """The victim's participation consent for each case, built just before it is sent."""
    for case in cases:
        topic, key, value = samples.consent(case.case_id, case.victim_id)
        yield json.loads(value)["id"], settings.topic(topic), key.encode(), value


def probes(settings: Settings, count: int) -> Iterator[Outgoing]:
    """Records for the ceiling: the size of a consent command, each keyed (and matched) by its own key."""
    for i in range(count):
        _, _, value = samples.consent(case_id_for(f"PROBE/{i:07d}"), "V-PROBE")
        key = f"probe-{i}"
        yield key, settings.topic(SCRATCH), key.encode(), value


# --- figures ------------------------------------------------------------------------------------


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

    def row(self, label: str) -> str:
        ms = self.latencies_ms
        cuts = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else [math.nan] * 99
        p50, p95, p99 = (ms[0], ms[0], ms[0]) if len(ms) == 1 else (cuts[49], cuts[94], cuts[98])
        peak = max(ms, default=math.nan)
        numbers = "".join(f"{v:>9.1f}" for v in (p50, p95, p99, peak))
        return f"{label:<32}{numbers}{self.sent:>8}{len(ms):>10}{self.missing:>9}"


def report(rate: float, ceiling: Figures, commands: Figures) -> None:
    print(f"\nlatency at {rate:g}/s (ms, from just before send to arrival at the consumer)")
    print(f"{'':<32}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}{'sent':>8}{'received':>10}{'missing':>9}")
    print(ceiling.row("ceiling: broker round trip"))
    print(commands.row("rj.consent.give → given"))


# --- the run ------------------------------------------------------------------------------------


async def wait_prepared(facts: ConsentFacts, cases: list[Case], supervisor: Supervisor) -> None:
    wanted = {c.case_id for c in cases}
    deadline = time.monotonic() + PREPARATION_TIMEOUT_S
    while not wanted <= facts.prepared:
        for name, service in supervisor.processes.items():
            if not service.running:
                raise SystemExit(f"{name} exited ({service.process.returncode}); see {service.log_path}")
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(wanted & facts.prepared)} of {len(wanted)} cases in preparation")
        await asyncio.sleep(0.1)


async def measure(bootstrap: str, database_url: str, rate: float, count: int, probe_count: int) -> int:
    prefix = f"latency-{os.getpid()}."
    settings = Settings(kafka_bootstrap_servers=bootstrap, database_url=database_url, topic_prefix=prefix)
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "DATABASE_URL": database_url, "TOPIC_PREFIX": prefix}
    await ensure_topics(settings, [*topics.ALL_TOPICS, SCRATCH])
    cases = [Case(f"LT/2026/{i:07d}") for i in range(count)]
    facts, arrivals = ConsentFacts(), Probes()
    consent_topic, scratch_topic = settings.topic(topics.CONSENT), settings.topic(SCRATCH)

    producer = new_producer(bootstrap)
    await producer.start()
    supervisor = Supervisor(env=env, log_dir=STATE / "logs")
    try:
        consent_partitions = await producer.partitions_for(consent_topic)
        scratch_partitions = await producer.partitions_for(scratch_topic)
        async with listening(bootstrap, consent_topic, consent_partitions, facts.on_record):
            for name in SERVICES:
                supervisor.start(name)
            began = time.monotonic()
            await publish(settings, (m for case in cases for m in case.upstream()))
            await wait_prepared(facts, cases, supervisor)
            print(f"{count} cases in preparation after {time.monotonic() - began:.1f} s")

            print(f"ceiling: {probe_count} records at {rate:g}/s through {scratch_topic}")
            async with listening(bootstrap, scratch_topic, scratch_partitions, arrivals.on_record):
                probes_sent = await send_paced(producer, rate, probes(settings, probe_count))
                await await_arrivals(probes_sent, arrivals.settled)

            print(f"commands: {count} at {rate:g}/s, one per case")
            commands_sent = await send_paced(producer, rate, consent_commands(settings, cases))
            await await_arrivals(commands_sent, facts.settled)
    finally:
        supervisor.stop_all()
        await producer.stop()

    ceiling = Figures.of(probes_sent, arrivals.arrived)
    commands = Figures.of(commands_sent, facts.given)
    report(rate, ceiling, commands)
    failed = False
    if rejected := {i: r for i, r in facts.rejected.items() if i in commands_sent}:
        print(f"{len(rejected)} commands rejected, e.g. {next(iter(rejected.values()))}", file=sys.stderr)
        failed = True
    if commands.missing - len(rejected) > 0 or ceiling.missing:
        print(f"not arrived within {ARRIVAL_TIMEOUT_S:g} s of the last send", file=sys.stderr)
        failed = True
    return 1 if failed else 0


async def main(rate: float, seconds: float, probe_count: int) -> int:
    count = round(rate * seconds)
    # Whichever batching and fetching settings this version of the services has, as the services will read them.
    shown = {k: v for k, v in Settings().model_dump().items() if k.startswith(("batch", "fetch", "relay"))}
    print("services on their defaults: " + ", ".join(f"{k.upper()} {v}" for k, v in shown.items()))
    STATE.mkdir(parents=True, exist_ok=True)
    broker = start_broker(log_path=STATE / "tansu.log")
    try:
        server = await ensure_postgres(STATE)
        async with database_for_run(server, "rj_bench") as database_url:
            return await measure(broker.bootstrap, database_url, rate, count, probe_count)
    finally:
        broker.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=10.0, help="commands (and probes) per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to send commands for")
    parser.add_argument("--probes", type=int, default=200, help="records for the broker round trip (the ceiling)")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.rate, args.seconds, args.probes)))
