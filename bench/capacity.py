"""Capacity (issue 21): the highest steady rate of cases a second at which, with every service running on this
machine, p99 from an upstream outcome to the victim's email stays under 500 ms and p99 from a withdrawal to every
pending meeting of its case cancelled and its facilitators told stays under 300 ms (target: 50 cases/s or more).

    .venv/bin/python -m bench.capacity --rates 10,20,30,40,50,60 --seconds 30

The stack (bench/steady.py): a Tansu broker, a fresh database and fresh topics of its own, and every service of
services/catalog.py as a process on its default settings (referral, consent, scheduling, notify, privacy, the API
and audit; each worker starts its outbox relay as a child process of its own), notify pointed at a real SMTP
server (aiosmtpd, in this process) with quiet hours open all day, so that every message goes at once.

A step at rate R sends two streams on one schedule, interleaved:

- **outcomes, R a second**: an admitted upstream ``crime.outcome-recorded`` on ``crime.events`` for a crime recorded
  up front, timed from its send's moment on the schedule to the victim's email accepted by the SMTP server (the path of
  bench/notify_latency.py). These are the "cases per second" of the issue: cases coming in.
- **withdrawals, R/10 a second** (``--withdrawal-share``): ``rj.consent.withdraw`` of the victim's participation on
  a case prepared up front with a booked conference (as bench/withdraw_latency.py prepares them), timed to the
  later of (a) its case's ``rj.meeting.cancelled`` published by scheduling (the record's Kafka timestamp, which
  scheduling's relay sets as it hands the record to its producer; every pending meeting: each case has the one)
  and (b) the email notify sends each of the case's two facilitators about the withdrawal
  (``facilitator_withdrawal``, urgent, decided on consent's ``rj.consent.withdrawn``) accepted by the SMTP server,
  matched by its ``Message-ID`` (the outside reference of the notification id notify derives from that fact).
  One withdrawal for every ten cases coming in is our choice, not the issue's: a heavier share than a hub sees
  (most cases are not withdrawn, and not in the same minute), so that the withdrawal path is loaded too.

Preparation is done once for the whole ladder: every step's crimes recorded; every step's withdrawal cases taken to
a booked conference through the services (staff, assignments, consent, availability, booking); one outcome and one
withdrawal through to their emails as a warm-up; then the stack drained. What carries over from step to step: the
same processes, broker and database (whose tables grow with every step's cases and emails), and whatever the
services cache; not the load: after each step, arrivals are waited for until the stack has **drained** (every
service's consumer lag zero, read from Kafka, for 2 s; no outbox row unpublished; nothing of notify's due or being
sent) and 10 s more at most; only then does the next step start. An arrival counts if it comes before that wait
ends (later, or never: missing); a step that does not drain within ``--drain-timeout-s`` ends the ladder. Latency
is timed from each send's moment on the schedule, not from when the bench got to send it (a bench starved of CPU
would otherwise hide its own delay and send below the rate; how far behind it went is printed per step).

Per step it prints p50/p95/p99/max and missing for each path (and, for the withdrawal, the cancellation and the
facilitators' emails alone), the CPU the machine, each service (its relay included), the broker, PostgreSQL and
everything else used while the step sent, and the load average (and, once prepared, the same for the idle stack,
``--idle-s``: what every service polling costs before any case comes in); then the ladder, and the highest rate
that met both targets with nothing missing, beside the target of 50 cases/s. The ladder stops after the first
step that misses a target (``--keep-going`` runs every rate). Figures go, as JSON, to ``--json`` (default
``.rj/bench/capacity.json``). It exits non-zero if that highest rate is under 50 cases/s, or if anything was
missing or a withdrawal was rejected. There is no smoke test of it: the seven services' start alone takes longer
than a test may.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import SecretStr

from bench.steady import (
    ARRIVAL_TIMEOUT_S,
    SAMPLE_S,
    STATE,
    Case,
    CpuUse,
    Figures,
    LagWatch,
    Outgoing,
    Stack,
    Timestamped,
    catching_mail,
    cpu_snapshot,
    listening,
    percentiles,
    report,
    running_stack,
    send_scheduled,
    show_defaults,
)
from bench.withdraw_latency import Followed, pair, prepare_cases, withdrawals
from demo import samples
from schemas import topics
from schemas.consent import ConsentWithdrawn
from schemas.notify import NotificationKind
from services.catalog import SERVICES
from services.notify.channels.reference import References
from services.notify.domain import notification_id
from services.runtime.devstack import free_port
from services.runtime.kafka import publish
from services.runtime.settings import Settings

OUTCOME_TARGET_MS = 500.0
WITHDRAWAL_TARGET_MS = 300.0
TARGET_RATE = 50.0  # cases a second
HOLD_S = 2.0  # drained: every service's lag zero this long
WARM_UP_TIMEOUT_S = 120.0
NOTIFY_BUSY = """SELECT count(*) FROM notify.scheduled_sends
                  WHERE status = 'sending' OR (status = 'waiting' AND due_at <= now())"""


# --- the traffic --------------------------------------------------------------------------------


def outcome(stack: Stack, case: Case) -> Outgoing:
    """The case's admitted outcome from upstream, matched by the victim's address."""
    value = samples.upstream_event(samples.outcome_recorded(case.reference))
    return case.victim_address, stack.settings.topic(topics.CRIME_EVENTS), case.reference.encode(), value


def interleaved(
    stack: Stack, rate: float, share: float, outcomes: Sequence[Case], withdrawing: Iterable[Outgoing]
) -> Iterator[tuple[float, Outgoing]]:
    """Outcomes every 1/rate seconds and withdrawals every 1/(rate × share) seconds (half a gap in), on one
    schedule."""
    sent_out = ((i / rate, outcome(stack, case)) for i, case in enumerate(outcomes))
    every = 1 / (rate * share)
    sent_withdrawn = (((j + 0.5) * every, record) for j, record in enumerate(withdrawing))
    return heapq.merge(sent_out, sent_withdrawn, key=lambda item: item[0])


# --- a run: the stack, what it has prepared and what it follows -----------------------------------------------


@dataclass
class Run:
    stack: Stack
    mail: Timestamped
    followed: Followed  # rj.consent and rj.scheduling, as bench/withdraw_latency.py follows them
    references: References
    watch: LagWatch
    withdrawable: list[Case]  # prepared with a booked conference; case i is pair(i)'s (bench/withdraw_latency.py)
    told: dict[str, tuple[float, float]] = field(default_factory=dict)  # command id -> (cancelled, facilitators told)

    def withdrawing(self, indices: range, whose: dict[str, int]) -> Iterator[Outgoing]:
        """The victim's withdrawal on each of these prepared cases; ``whose`` learns each command's case."""
        for i, record in zip(indices, withdrawals(self.stack, [self.withdrawable[i] for i in indices]), strict=True):
            whose[record[0]] = i
            yield record

    def settle_withdrawals(self, whose: dict[str, int]) -> None:
        """Note each withdrawal whose meeting's cancellation and facilitators' emails have all arrived."""
        waiting = [c for c in whose if c not in self.told]
        if not waiting:
            return
        chains = self.followed.chains()
        facts = {f.cause: f.event_id for f in self.followed.withdrawn.values() if f.kind == ConsentWithdrawn.event_type}
        for command_id in waiting:
            if command_id not in chains or command_id not in facts:
                continue
            emails = [
                self.mail.by_reference.get(
                    self.references.of(notification_id(facts[command_id], NotificationKind.facilitator_withdrawal, f))
                )
                for f in pair(whose[command_id])[:2]
            ]
            if all(at is not None for at in emails):
                self.told[command_id] = (chains[command_id][1].at, max(at for at in emails if at is not None))

    async def drained(self, since: float) -> str | None:
        """None when the stack has drained since ``since`` (monotonic); else what is still busy."""
        recent = self.watch.since(time.monotonic() - HOLD_S)
        if not recent or recent[0].at < since or len(recent) < HOLD_S / SAMPLE_S - 1:
            return "lag not sampled for long enough yet"
        busy = {s: max(sample.lag[s] for sample in recent) for s in recent[0].lag}
        if lagging := {s: n for s, n in busy.items() if n}:
            return f"lag {lagging}"
        conn = await asyncpg.connect(self.stack.settings.database_url)
        try:
            schemas = await conn.fetch("SELECT table_schema FROM information_schema.tables WHERE table_name = 'outbox'")
            unpublished = {}
            for row in schemas:
                schema = row["table_schema"]
                n = await conn.fetchval(f"SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL")
                if n:
                    unpublished[schema] = n
            due = await conn.fetchval(NOTIFY_BUSY)
        finally:
            await conn.close()
        if unpublished:
            return f"unpublished {unpublished}"
        return f"notify has {due} messages due or sending" if due else None

    async def settle(self, arrived: Callable[[], bool], timeout_s: float) -> float | None:
        """Wait until the stack has drained and everything has ``arrived`` (or the drain is ``ARRIVAL_TIMEOUT_S``
        old); the seconds until it drained, or None if it did not within ``timeout_s``."""
        began = time.monotonic()
        drained_at: float | None = None
        busy: str | None = "not asked yet"
        while True:
            self.stack.check_running()
            now = time.monotonic()
            if drained_at is None and (busy := await self.drained(began)) is None:
                drained_at = now
            if drained_at is not None and (arrived() or now - drained_at > ARRIVAL_TIMEOUT_S):
                return drained_at - began
            if now - began > timeout_s:
                print(f"not drained within {timeout_s:g} s: {busy}", file=sys.stderr)
                return None
            await asyncio.sleep(0.25)


# --- a step -------------------------------------------------------------------------------------


@dataclass
class Step:
    rate: float
    withdrawal_rate: float
    outcomes: Figures
    withdrawals: Figures
    cancelled: Figures  # the withdrawal's meeting cancelled alone
    facilitators_told: Figures  # the withdrawal's facilitators' emails alone
    rejected: int
    cpu: CpuUse
    drained_s: float | None

    @property
    def outcome_p99(self) -> float:
        return percentiles(self.outcomes.latencies_ms)[2]

    @property
    def withdrawal_p99(self) -> float:
        return percentiles(self.withdrawals.latencies_ms)[2]

    @property
    def missing(self) -> int:
        return self.outcomes.missing + self.withdrawals.missing

    @property
    def met(self) -> bool:
        return (
            self.outcome_p99 < OUTCOME_TARGET_MS
            and self.withdrawal_p99 < WITHDRAWAL_TARGET_MS
            and not self.missing
            and not self.rejected
        )

    def figures(self) -> dict[str, Any]:
        def path(f: Figures) -> dict[str, Any]:
            p50, p95, p99, worst = percentiles(f.latencies_ms)
            return {"sent": f.sent, "missing": f.missing, "p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "max_ms": worst}

        return {
            "rate_cases_per_s": self.rate, "withdrawals_per_s": self.withdrawal_rate,
            "outcome_to_victim_email": path(self.outcomes),
            "withdraw_to_cancelled_and_told": path(self.withdrawals), "withdraw_to_cancelled": path(self.cancelled),
            "withdraw_to_facilitators_told": path(self.facilitators_told),
            "withdrawals_rejected": self.rejected, "met": self.met, "drained_s": self.drained_s,
            "cpu_cores": self.cpu.cores, "cpu_machine": self.cpu.machine, "cpu_this_run": self.cpu.ours,
            "cpu_everything_else": self.cpu.everything_else, "load_average": self.cpu.load_average,
        }  # fmt: skip


async def run_step(
    run: Run, rate: float, share: float, outcomes: Sequence[Case], indices: range, drain_timeout_s: float
) -> Step:
    whose: dict[str, int] = {}
    cpu_before = await cpu_snapshot(run.stack, by_service=True)
    schedule = interleaved(run.stack, rate, share, outcomes, run.withdrawing(indices, whose))
    sent = await send_scheduled(run.stack.producer, schedule)
    cpu = CpuUse.between(cpu_before, await cpu_snapshot(run.stack, by_service=True))
    sent_out = {c.victim_address: sent[c.victim_address] for c in outcomes}

    def arrived() -> bool:
        run.settle_withdrawals(whose)
        return sent_out.keys() <= run.mail.accepted.keys() and whose.keys() <= run.told.keys()

    drained_s = await run.settle(arrived, drain_timeout_s)
    arrived()
    told = {c: run.told[c] for c in whose if c in run.told}

    def since_sent(at: Callable[[tuple[float, float]], float]) -> Figures:
        return Figures(len(whose), [(at(t) - sent[c]) * 1000 for c, t in told.items()])

    return Step(
        rate=rate,
        withdrawal_rate=rate * share,
        outcomes=Figures.of(sent_out, run.mail.accepted),
        withdrawals=since_sent(max),
        cancelled=since_sent(lambda t: t[0]),
        facilitators_told=since_sent(lambda t: t[1]),
        rejected=sum(c in run.followed.rejected for c in whose),
        cpu=cpu,
        drained_s=drained_s,
    )


def report_step(step: Step) -> None:
    report(
        step.rate,
        [
            (f"outcome → victim's email ({step.rate:g}/s)", step.outcomes),
            (f"withdraw → cancelled + told ({step.withdrawal_rate:g}/s)", step.withdrawals),
            ("  of which: rj.meeting.cancelled published", step.cancelled),
            ("  of which: both facilitators' emails", step.facilitators_told),
        ],
    )
    if step.rejected:
        print(f"{step.rejected} withdrawals rejected", file=sys.stderr)
    drained = "not drained" if step.drained_s is None else f"drained {step.drained_s:.1f} s after the last send"
    print(f"{step.cpu}; {drained}")


def report_ladder(steps: Sequence[Step], highest: float | None) -> None:
    print(f"\ncapacity, every service running (p99 in ms; targets: outcome → victim's email < {OUTCOME_TARGET_MS:g}, "
          f"withdraw → cancelled and facilitators told < {WITHDRAWAL_TARGET_MS:g})")  # fmt: skip
    columns = ("cases/s", "withdr./s", "outcome p99", "withdr. p99", "withdr. n", "missing", "CPU machine", "this run",
               "load")  # fmt: skip
    print("".join(f"{c:>12}" for c in columns) + "   targets")
    for s in steps:
        cells = (f"{s.rate:g}", f"{s.withdrawal_rate:g}", f"{s.outcome_p99:.1f}", f"{s.withdrawal_p99:.1f}",
                 f"{s.withdrawals.sent}", f"{s.missing}", f"{s.cpu.machine:.2f}", f"{s.cpu.this_run:.2f}",
                 f"{s.cpu.load_average:.2f}")  # fmt: skip
        print("".join(f"{c:>12}" for c in cells) + f"   {'met' if s.met else 'MISSED'}")
    shown = "none" if highest is None else f"{highest:g} cases/s"
    verdict = "met" if highest is not None and highest >= TARGET_RATE else "MISSED"
    print(f"highest rate meeting both targets: {shown}; the issue's target {TARGET_RATE:g} cases/s or more: {verdict}")
    if any(s.withdrawals.sent < 100 for s in steps):
        print("(a p99 of under 100 withdrawals is nearly their maximum: longer steps or --withdrawal-share steady it)")
    if highest is not None and any(not s.met and s.rate < highest for s in steps):
        print("(a lower rate missed a target: the machine's load varied, or the ladder's steps are too short)")


# --- the run ------------------------------------------------------------------------------------


async def prepare(run: Run, crimes: Sequence[Case], warm_up: tuple[Case, int], drain_timeout_s: float) -> None:
    began = time.monotonic()
    await publish(run.stack.settings, (samples.on_crime_events(samples.crime_recorded(c.reference))[0] for c in crimes))
    print(f"{len(crimes)} crimes recorded upstream, for the outcomes")
    await prepare_cases(run.stack, run.followed, run.withdrawable)
    warm, i = warm_up
    whose: dict[str, int] = {}
    sent = await send_scheduled(run.stack.producer, [(0.0, outcome(run.stack, warm)), *(
        (0.0, w) for w in run.withdrawing(range(i, i + 1), whose))])  # fmt: skip

    def arrived() -> bool:
        run.settle_withdrawals(whose)
        return warm.victim_address in run.mail.accepted and whose.keys() <= run.told.keys()

    await run.stack.wait_until(arrived, WARM_UP_TIMEOUT_S, lambda: "the warm-up's emails have not all arrived")
    if await run.settle(arrived, drain_timeout_s) is None:
        raise SystemExit("the stack did not drain after the preparation")
    took = (run.mail.accepted[warm.victim_address] - sent[warm.victim_address]) * 1000
    print(f"prepared, warmed up and drained: {time.monotonic() - began:.1f} s (the warm-up's outcome {took:.0f} ms)")


async def measure(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    rates = sorted(args.rates)
    counts = [(round(r * args.seconds), round(r * args.withdrawal_share * args.seconds)) for r in rates]
    crimes = [Case(f"CP/2026/{i:07d}") for i in range(sum(n for n, _ in counts) + 1)]
    withdrawable = [Case(f"CW/2026/{i:07d}") for i in range(sum(n for _, n in counts) + 1)]
    print(f"ladder: {', '.join(f'{r:g}' for r in rates)} cases/s for {args.seconds:g} s each, with a withdrawal for "
          f"every {1 / args.withdrawal_share:g} cases; preparing {len(crimes) - 1} crimes and "
          f"{len(withdrawable) - 1} cases with a booked conference (one more of each to warm up)")  # fmt: skip
    reference_key = stack.supervisor.env["NOTIFY_REFERENCE_KEY"]
    references = References.from_settings(Settings(notify_reference_key=SecretStr(reference_key)))
    bootstrap = stack.settings.kafka_bootstrap_servers
    followed = Followed()
    with catching_mail() as (mail, mail_env):
        async with (
            listening(bootstrap, stack.settings.topic(topics.CONSENT), await stack.partitions(topics.CONSENT),
                      followed.on_record, at_publication=True),
            listening(bootstrap, stack.settings.topic(topics.SCHEDULING), await stack.partitions(topics.SCHEDULING),
                      followed.on_record, at_publication=True),
        ):  # fmt: skip
            own = {
                "notify": mail_env,
                # No one signs in during the run: the API needs an identity provider named, never asked.
                "api": {"API_PORT": str(free_port()), "OIDC_ISSUER": "https://idp.bench.invalid",
                        "OIDC_JWKS_URL": "https://idp.bench.invalid/jwks"},
                "audit": {"AUDIT_SIGNING_KEY_FILE": str(STATE / "capacity-audit-key.pem"),
                          "AUDIT_WITNESS_FILE": str(STATE / "capacity-audit-witness.jsonl")},
            }  # fmt: skip
            for name in SERVICES:
                stack.supervisor.start(name, own.get(name))
            print(f"services: {', '.join(SERVICES)}")
            watch = await LagWatch.of(stack, SERVICES)
            async with watch.watching():
                run = Run(stack, mail, followed, references, watch, withdrawable)
                prepare_began = time.monotonic()
                await prepare(run, crimes, (crimes[-1], len(withdrawable) - 1), args.drain_timeout_s)
                prepared_s = time.monotonic() - prepare_began
                idle_before = await cpu_snapshot(stack, by_service=True)
                await asyncio.sleep(args.idle_s)
                idle = CpuUse.between(idle_before, await cpu_snapshot(stack, by_service=True))
                print(f"the stack idle for {args.idle_s:g} s: {idle}")
                steps: list[Step] = []
                first_crime = first_withdrawal = 0
                for rate, (n_out, n_withdrawn) in zip(rates, counts, strict=True):
                    print(f"\n--- {rate:g} cases/s and {rate * args.withdrawal_share:g} withdrawals/s, "
                          f"{args.seconds:g} s: {n_out} outcomes, {n_withdrawn} withdrawals")  # fmt: skip
                    step = await run_step(
                        run,
                        rate,
                        args.withdrawal_share,
                        crimes[first_crime : first_crime + n_out],
                        range(first_withdrawal, first_withdrawal + n_withdrawn),
                        args.drain_timeout_s,
                    )
                    first_crime, first_withdrawal = first_crime + n_out, first_withdrawal + n_withdrawn
                    steps.append(step)
                    report_step(step)
                    if step.drained_s is None or (not step.met and not args.keep_going):
                        break
    met = [s.rate for s in steps if s.met]
    highest = max(met) if met else None
    report_ladder(steps, highest)
    not_run = rates[len(steps) :]
    if not_run:
        print(f"not run: {', '.join(f'{r:g}' for r in not_run)} cases/s (the ladder stops at the first step that "
              "misses a target or does not drain; --keep-going runs every rate)")  # fmt: skip
    return {
        "bench": "capacity", "services": list(SERVICES), "seconds_per_step": args.seconds,
        "withdrawal_share": args.withdrawal_share, "outcome_target_p99_ms": OUTCOME_TARGET_MS,
        "withdrawal_target_p99_ms": WITHDRAWAL_TARGET_MS, "target_rate_cases_per_s": TARGET_RATE,
        "preparation_s": prepared_s, "idle_s": args.idle_s, "idle_cpu_machine": idle.machine,
        "idle_cpu_this_run": idle.ours, "idle_cpu_everything_else": idle.everything_else,
        "steps": [s.figures() for s in steps], "not_run": not_run,
        "highest_rate_meeting_targets": highest,
        "target_met": highest is not None and highest >= TARGET_RATE,
        "anything_missing": any(s.missing or s.rejected for s in steps),
    }  # fmt: skip


async def main(args: argparse.Namespace) -> int:
    show_defaults()
    async with running_stack("capacity") as stack:
        figures = await measure(stack, args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=1))
    print(f"figures written to {args.json}")
    return 0 if figures["target_met"] and not figures["anything_missing"] else 1


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=lambda s: [float(r) for r in s.split(",")], default=[10.0, 20.0, 30.0, 40.0,
                        50.0, 60.0], help="the ladder: cases (outcomes) a second, comma-separated")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=30.0, help="how long each step sends for")
    parser.add_argument("--withdrawal-share", type=float, default=0.1, help="withdrawals per case coming in")
    parser.add_argument("--keep-going", action="store_true", help="run every rate, not only until a step misses")
    parser.add_argument("--drain-timeout-s", type=float, default=300.0, help="a step not drained by then ends it")
    parser.add_argument("--idle-s", type=float, default=5.0, help="how long the CPU of the idle stack is measured")
    parser.add_argument("--json", type=Path, default=STATE / "capacity.json")
    args = parser.parse_args(argv)
    if not args.rates or min(args.rates) <= 0 or not 0 < args.withdrawal_share <= 1:
        parser.error("--rates must be positive and --withdrawal-share in (0, 1]")
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
