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

Sending, timing and the ceiling are bench/steady.py's (also used by bench/withdraw_latency.py). It prints
p50, p95, p99 and max of both, and exits non-zero if a command is rejected or a fact (or a probe) has not
arrived 10 s after the last send.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiokafka import ConsumerRecord

from bench.steady import (
    ARRIVAL_TIMEOUT_S,
    Case,
    Figures,
    Outgoing,
    Stack,
    await_arrivals,
    cpu_report,
    cpu_snapshot,
    listening,
    measure_ceiling,
    report,
    running_stack,
    send_paced,
    show_defaults,
)
from demo import samples
from schemas import topics
from schemas.commands import CommandRejected
from schemas.consent import ConsentGiven, PreparationStarted
from services.runtime.kafka import publish
from services.runtime.settings import Settings

PREPARATION_TIMEOUT_S = 300.0
SERVICES = ("referral", "consent")


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


# --- the traffic --------------------------------------------------------------------------------


def consent_commands(settings: Settings, cases: list[Case]) -> Iterator[Outgoing]:
    """The victim's participation consent for each case, built just before it is sent."""
    for case in cases:
        topic, key, value = samples.consent(case.case_id, case.victim_id)
        yield json.loads(value)["id"], settings.topic(topic), key.encode(), value


# --- the run ------------------------------------------------------------------------------------


async def measure(stack: Stack, rate: float, count: int, probe_count: int) -> int:
    settings = stack.settings
    cases = [Case(f"LT/2026/{i:07d}") for i in range(count)]
    facts = ConsentFacts()
    consent_partitions = await stack.partitions(topics.CONSENT)
    async with listening(
        settings.kafka_bootstrap_servers, settings.topic(topics.CONSENT), consent_partitions, facts.on_record
    ):
        stack.start(*SERVICES)
        began = time.monotonic()
        await publish(settings, (m for case in cases for m in case.upstream()))
        wanted = {c.case_id for c in cases}
        await stack.wait_until(
            lambda: wanted <= facts.prepared,
            PREPARATION_TIMEOUT_S,
            lambda: f"only {len(wanted & facts.prepared)} of {len(wanted)} cases in preparation",
        )
        print(f"{count} cases in preparation after {time.monotonic() - began:.1f} s")

        ceiling = await measure_ceiling(stack, rate, probe_count)

        print(f"commands: {count} at {rate:g}/s, one per case")
        cpu_before = await cpu_snapshot(stack)
        commands_sent = await send_paced(stack.producer, rate, consent_commands(settings, cases))
        await await_arrivals(commands_sent, facts.settled)
        cpu = cpu_report(cpu_before, await cpu_snapshot(stack))

    commands = Figures.of(commands_sent, facts.given)
    report(rate, [("ceiling: broker round trip", ceiling), ("rj.consent.give → given", commands)])
    print(cpu)
    failed = False
    if rejected := {i: r for i, r in facts.rejected.items() if i in commands_sent}:
        print(f"{len(rejected)} commands rejected, e.g. {next(iter(rejected.values()))}", file=sys.stderr)
        failed = True
    if commands.missing - len(rejected) > 0 or ceiling.missing:
        print(f"not arrived within {ARRIVAL_TIMEOUT_S:g} s of the last send", file=sys.stderr)
        failed = True
    return 1 if failed else 0


async def main(rate: float, seconds: float, probe_count: int) -> int:
    show_defaults()
    async with running_stack("latency") as stack:
        return await measure(stack, rate, round(rate * seconds), probe_count)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=10.0, help="commands (and probes) per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to send commands for")
    parser.add_argument("--probes", type=int, default=200, help="records for the broker round trip (the ceiling)")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.rate, args.seconds, args.probes)))
