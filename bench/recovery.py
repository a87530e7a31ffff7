"""Recovery benchmark (issue 21): from a service's SIGKILL to its consumer lag back at zero under steady load,
beside the target of 20 s and beside the same run's lag before the kill.

    .venv/bin/python -m bench.recovery --rate 20
    .venv/bin/python -m bench.recovery --rate 20 --service referral --kills 5

It starts its own Tansu broker, a fresh database and fresh topics (bench/steady.py's ``running_stack``), and runs
referral, consent and scheduling as processes on their default settings. For the whole run it feeds a steady load:
``--rate`` upstream cases a second, each a ``crime.recorded`` and an admitted ``crime.outcome-recorded`` on
``crime.events`` (so referral accepts every case, consent starts its preparation and scheduling hears of both:
all three have steady work). Once every service is consuming, and after ``--warmup-s`` more, each round:

1. SIGKILLs ``--service`` (no clean shutdown, no last offset commit) and restarts it at once, as an orchestrator
   would;
2. times, from the kill: the new process started; its consumer group joined (the new process logs
   ``partitions_assigned`` with partitions in it); consuming (the group's committed offsets move past where the
   killed process left them); and caught up (lag at or under the threshold, and staying there for 2 s);
3. lets the stack settle for ``--settle-s`` before the next round.

It prints each round and the median beside the target, the killed service's lag before each kill (the steady-state
baseline: what "back at zero" can mean under this load), the peak lag while it was away, and the CPU the machine
and this run used meanwhile. Figures also go, as JSON, to ``--json`` (default ``.rj/bench/recovery.json``). It exits
non-zero if a round does not catch up within ``--round-timeout-s``, if the median misses the target, or if, once the
load stops, a service has not taken in every case sent.

How to read the numbers. A service's *lag* is its consumer group's (``<topic prefix>rj-<service>-intake``, see
services/runtime/app.py): the sum, over the partitions of every topic the service reads, of the partition's end
offset minus the group's committed offset, sampled about every 0.25 s with an admin client and a consumer of no
group. The services commit offsets only after PostgreSQL has committed the batch, and to Kafka at most once every
``OFFSET_COMMIT_INTERVAL_S`` (1 s by default: where to resume is first the position stored with the data), so the
lag read here counts every record not yet applied and committed, and up to a second's worth more (a service's own
lag gauge counts what it has applied). On Tansu a partition's listed end offset is one past the *start* of its last
record batch, not one past its last record, so a lag of a few records (the rest of that batch) can read 0, or even
negative where the group has committed past the listed end: each partition's lag is clamped at 0. "Back at zero"
is therefore "at or under a small threshold" (``--threshold``, or the baseline's p95 if that is higher: under load
there is always a batch in flight), held for 2 s; the time printed is when that stretch began, so the harness
saw it 2 s later. Recovery includes the new process's start-up (imports, migrations checked, the pool), the group's
rebalance (the dead member is only dropped once its session times out or the rebalance gives up on it) and the
replay of what the killed process had applied but not yet committed to Kafka (which the inbox drops as repeats).
The CPU of a killed process is not in the CPU line (a process that ended meanwhile is lost to it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from bench import steady
from bench.steady import (
    SAMPLE_S,
    Case,
    LagWatch,
    Outgoing,
    Sample,
    Stack,
    cpu_report,
    cpu_snapshot,
    percentiles,
    running_stack,
    send_paced,
    show_defaults,
)
from services.runtime.settings import Settings

TARGET_S = 20.0  # the figure: printed beside the result
HOLD_S = 2.0  # caught up: the lag stays at or under the threshold this long
READY_TIMEOUT_S = 180.0

#: The services killed here and what their lag is summed over.
READS = {service: steady.READS[service] for service in ("referral", "consent", "scheduling")}
SERVICES = tuple(READS)


# --- the load -----------------------------------------------------------------------------------


@dataclass
class Load:
    """Upstream cases sent until ``stop`` is set: a crime and its admitted outcome each."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    cases: list[Case] = field(default_factory=list)

    def records(self, settings: Settings) -> Iterator[Outgoing]:
        while not self.stop.is_set():
            case = Case(f"RC/2026/{len(self.cases):07d}")
            self.cases.append(case)
            for j, (topic, key, value) in enumerate(case.upstream()):
                yield f"{case.reference}#{j}", settings.topic(topic), key.encode(), value


# --- one round ----------------------------------------------------------------------------------


@dataclass
class Round:
    number: int
    baseline: list[int]  # the service's lag before the kill: the second half of the warm-up or of the settle
    threshold: int
    restarted_s: float = math.nan  # from the kill, the new process started (Popen returned)
    joined_s: float = math.nan  # the new process logged partitions assigned to it
    consuming_s: float = math.nan  # the group's committed offsets moved past where the killed process left them
    caught_up_s: float = math.nan  # the lag at or under the threshold from here, for HOLD_S
    peak_lag: int = 0  # the service's highest lag from the kill to caught up
    others_peak_lag: dict[str, int] = field(default_factory=dict)  # the other services' meanwhile

    def figures(self) -> dict[str, Any]:
        p50, p95, _, worst = percentiles(self.baseline) if self.baseline else (math.nan,) * 4
        return {
            "round": self.number, "baseline_lag_p50": p50, "baseline_lag_p95": p95, "baseline_lag_max": worst,
            "caught_up_threshold": self.threshold, "restarted_s": self.restarted_s, "joined_s": self.joined_s,
            "consuming_s": self.consuming_s, "caught_up_s": self.caught_up_s, "peak_lag": self.peak_lag,
            "others_peak_lag": self.others_peak_lag,
        }  # fmt: skip


def assigned_in(log_path: Path | None, offset: int) -> bool:
    """Whether the service's log, from ``offset`` on, says partitions were assigned to its intake."""
    if log_path is None:
        return False
    with log_path.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return any("partitions_assigned" in line and "partitions=[]" not in line for line in text.splitlines())


def caught_up_at(samples: Sequence[Sample], service: str, threshold: int, after: float) -> float | None:
    """The start of the first stretch from ``after`` on in which every sample of ``service`` is at or under
    ``threshold`` and which has lasted ``HOLD_S`` (the last sample at least that long after the first)."""
    start: float | None = None
    for s in samples:
        if s.at < after:
            continue
        if s.lag[service] > threshold:
            start = None
        elif start is None:
            start = s.at
        if start is not None and s.at - start >= HOLD_S:
            return start
    return None


async def kill_and_recover(
    stack: Stack, watch: LagWatch, service: str, number: int, baseline_since: float, args: argparse.Namespace
) -> Round:
    baseline = [s.lag[service] for s in watch.since(baseline_since)]
    p95 = percentiles(baseline)[1] if baseline else 0.0
    threshold = max(args.threshold, math.ceil(p95))
    result = Round(number, baseline, threshold)

    old = stack.supervisor.processes[service]
    log_offset = old.log_path.stat().st_size if old.log_path and old.log_path.exists() else 0
    killed_at = time.monotonic()
    old.kill()  # SIGKILL, and reaped
    new = stack.supervisor.start(service)
    result.restarted_s = time.monotonic() - killed_at
    # Where the killed process left its commits: a sample begun after the kill (the new process commits nothing
    # for seconds yet: it has Python, faust and its pool to start, and a group to join).
    while not watch.since(killed_at) and time.monotonic() < killed_at + 10 * SAMPLE_S:
        await asyncio.sleep(SAMPLE_S / 5)
    left_at = max((s.committed[service] for s in watch.since(killed_at - 1.0)), default=0)

    deadline = killed_at + args.round_timeout_s
    while time.monotonic() < deadline:
        if not new.running:
            raise SystemExit(f"{service} exited after its restart ({new.process.returncode}); see {new.log_path}")
        now = time.monotonic()
        if math.isnan(result.joined_s) and assigned_in(new.log_path, log_offset):
            result.joined_s = now - killed_at
        since_kill = watch.since(killed_at)
        if math.isnan(result.consuming_s):
            moved = next((s for s in since_kill if s.committed[service] > left_at), None)
            if moved is not None:
                result.consuming_s = moved.at - killed_at
        if not math.isnan(result.consuming_s):
            start = caught_up_at(since_kill, service, threshold, killed_at + result.consuming_s)
            if start is not None:
                result.caught_up_s = start - killed_at
                away = [s for s in since_kill if s.at <= start]
                result.peak_lag = max(s.lag[service] for s in away)
                result.others_peak_lag = {o: max(s.lag[o] for s in away) for o in SERVICES if o != service}
                return result
        await asyncio.sleep(SAMPLE_S)
    away = watch.since(killed_at)
    result.peak_lag = max((s.lag[service] for s in away), default=0)
    result.others_peak_lag = {o: max((s.lag[o] for s in away), default=0) for o in SERVICES if o != service}
    print(f"round {number}: {service} not caught up within {args.round_timeout_s:g} s of its kill", file=sys.stderr)
    return result


# --- the run ------------------------------------------------------------------------------------


async def wait_ready(stack: Stack, watch: LagWatch, threshold: int) -> None:
    """Until every service's group has committed offsets and its lag has been at or under the threshold once
    since (what start-up left to read is read)."""
    began = time.monotonic()
    while True:
        for name, process in stack.supervisor.processes.items():
            if not process.running:
                raise SystemExit(f"{name} exited ({process.process.returncode}); see {process.log_path}")
        ready = []
        for service in SERVICES:
            committing = [s for s in watch.samples if s.committed[service] > 0]
            ready.append(bool(committing) and any(s.lag[service] <= threshold for s in committing))
        if all(ready):
            print(f"every service consuming and caught up once: {time.monotonic() - began:.1f} s after start")
            return
        if time.monotonic() - began > READY_TIMEOUT_S:
            late = [s for s, ok in zip(SERVICES, ready, strict=True) if not ok]
            last = watch.samples[-1].lag if watch.samples else {}
            raise SystemExit(f"not consuming and caught up within {READY_TIMEOUT_S:g} s: {late} (lag now {last})")
        await asyncio.sleep(SAMPLE_S)


async def taken_in(stack: Stack, cases: list[Case], timeout_s: float) -> dict[str, int]:
    """Once the load has stopped: the cases each service took in (referral accepted, consent and scheduling have a
    row of), counted until every service has them all or ``timeout_s`` has passed."""
    ids = [c.case_id for c in cases]
    references = [c.reference for c in cases]
    accepted = "SELECT count(*) FROM referral.crime_files WHERE status = 'accepted' AND crime_reference = ANY($1)"
    deadline = time.monotonic() + timeout_s
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        while True:
            counts = {"referral": int(await conn.fetchval(accepted, references))}
            for schema in ("consent", "scheduling"):
                sql = f"SELECT count(*) FROM {schema}.cases WHERE key = ANY($1)"
                counts[schema] = int(await conn.fetchval(sql, ids))
            if all(n == len(cases) for n in counts.values()) or time.monotonic() > deadline:
                return counts
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


def report(service: str, rate: float, rounds: list[Round]) -> None:
    print(f"\nrecovery of {service} at {rate:g} cases/s: SIGKILL, restarted at once (times in s from the kill)")
    print("lag in records, clamped at 0 per partition (Tansu lists a partition's end as one past the start of its")
    print(f"last batch, so a few records can read 0); caught up = lag <= threshold for {HOLD_S:g} s, from its start;")
    print("threshold = the larger of --threshold and the baseline's p95; baseline = the lag before the kill")
    columns = ["base p50", "base p95", "base max", "threshold", "restarted", "joined", "consuming", "caught up",
               "peak lag"]  # fmt: skip
    print(f"{'round':<8}" + "".join(f"{c:>11}" for c in columns))

    def cell(v: float) -> str:
        return f"{'-':>11}" if math.isnan(v) else f"{v:>11.2f}"

    for r in rounds:
        f = r.figures()
        line = f"{r.number:<8}" + "".join(f"{f[k]:>11.0f}" for k in ("baseline_lag_p50", "baseline_lag_p95",
                                                                       "baseline_lag_max"))  # fmt: skip
        line += f"{r.threshold:>11}" + "".join(cell(v) for v in (r.restarted_s, r.joined_s, r.consuming_s))
        line += cell(r.caught_up_s) + f"{r.peak_lag:>11,}"
        print(line)
    recovered = [r.caught_up_s for r in rounds if not math.isnan(r.caught_up_s)]
    if recovered:
        median = statistics.median(recovered)
        verdict = "met" if median <= TARGET_S and len(recovered) == len(rounds) else "MISSED"
        print(f"median kill -> caught up: {median:.2f} s ({len(recovered)} of {len(rounds)} rounds caught up); "
              f"target {TARGET_S:g} s: {verdict}")  # fmt: skip
    else:
        print(f"no round caught up; target {TARGET_S:g} s: MISSED")


async def measure(stack: Stack, args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    settings = stack.settings
    watch = await LagWatch.of(stack, SERVICES)
    load = Load()
    print(f"load: {args.rate:g} cases/s (a crime and an admitted outcome each) on crime.events, the whole run")
    async with watch.watching():
        stack.start(*SERVICES)
        sending = asyncio.create_task(send_paced(stack.producer, 2 * args.rate, load.records(settings)))
        try:
            await wait_ready(stack, watch, args.threshold)
            cpu_before = await cpu_snapshot(stack)
            print(f"warm-up: {args.warmup_s:g} s; then {args.kills} rounds of SIGKILL and restart of {args.service}")
            settled_from = time.monotonic() + args.warmup_s / 2  # the warm-up's second half: the baseline
            await asyncio.sleep(args.warmup_s)
            rounds: list[Round] = []
            for number in range(1, args.kills + 1):
                r = await kill_and_recover(stack, watch, args.service, number, settled_from, args)
                rounds.append(r)
                others = ", ".join(f"{s} {v:,}" for s, v in r.others_peak_lag.items())
                print(f"round {number}: caught up {r.caught_up_s:.2f} s after the kill (joined {r.joined_s:.2f} s, "
                      f"consuming {r.consuming_s:.2f} s), peak lag {r.peak_lag:,} (meanwhile {others})")  # fmt: skip
                if number < args.kills:
                    await asyncio.sleep(args.settle_s)
                    settled_from = time.monotonic() - args.settle_s / 2  # the settle's second half: the baseline
            cpu = cpu_report(cpu_before, await cpu_snapshot(stack))
        finally:
            load.stop.set()
            sent = await sending
        print(f"load stopped: {len(load.cases):,} cases ({len(sent):,} records) sent; waiting for every service")
        taken = await taken_in(stack, load.cases, 60.0)
    report(args.service, args.rate, rounds)
    whole = [s.lag[args.service] for s in watch.samples]
    print(f"{args.service}'s lag over the run: p50 {percentiles(whole)[0]:.0f}, max {max(whole, default=0):,} records "
          f"({len(watch.samples):,} samples, {watch.errors} failed)")  # fmt: skip
    print(cpu)
    lost = {s: len(load.cases) - n for s, n in taken.items() if n < len(load.cases)}
    print(f"cases taken in of {len(load.cases):,} sent: " + ", ".join(f"{s} {n:,}" for s, n in taken.items()))
    if lost:
        print(f"not taken in once the load stopped: {lost}", file=sys.stderr)
    recovered = [r.caught_up_s for r in rounds if not math.isnan(r.caught_up_s)]
    median = statistics.median(recovered) if recovered else math.nan
    met = len(recovered) == len(rounds) and median <= TARGET_S
    figures = {
        "bench": "recovery", "service": args.service, "rate_cases_per_s": args.rate, "warmup_s": args.warmup_s,
        "settle_s": args.settle_s, "kills": args.kills, "threshold_records": args.threshold, "hold_s": HOLD_S,
        "sample_s": SAMPLE_S, "target_s": TARGET_S, "median_caught_up_s": median, "met": met,
        "rounds": [r.figures() for r in rounds],
        "cases_sent": len(load.cases), "cases_taken_in": taken, "lag_samples": len(watch.samples),
        "lag_samples_failed": watch.errors, "cpu": cpu,
    }  # fmt: skip
    return figures, met and not lost


async def main(args: argparse.Namespace) -> int:
    if args.service not in READS:
        raise SystemExit(f"--service must be one of {', '.join(READS)}")
    if args.kills < 1:
        raise SystemExit("--kills must be 1 or more")
    show_defaults()
    async with running_stack("recovery") as stack:
        figures, ok = await measure(stack, args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=1, default=str))
    print(f"figures written to {args.json}")
    return 0 if ok else 1


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=20.0, help="upstream cases per second (two records each)")
    parser.add_argument("--service", default="consent", help=f"the service killed: one of {', '.join(READS)}")
    parser.add_argument("--warmup-s", type=float, default=15.0, help="steady load before the first kill")
    parser.add_argument("--kills", type=int, default=3, help="rounds of kill, restart and recovery")
    parser.add_argument("--settle-s", type=float, default=10.0, help="between one round's recovery and the next kill")
    parser.add_argument("--threshold", type=int, default=10, help="lag (records) counted as caught up, at least")
    parser.add_argument("--round-timeout-s", type=float, default=120.0, help="a round not caught up by then failed")
    parser.add_argument("--json", type=Path, default=Path(".rj/bench/recovery.json"))
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
