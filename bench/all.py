"""Every benchmark, one after another (``rj bench``): each prints its table beside its own ceiling, as when run by
hand, and what each printed is kept as JSON in ``.rj/bench/`` (``<name>.json`` where the benchmark writes its own
figures, and ``all.json``: each benchmark's command, exit status, seconds, load average before and after, and
what it printed).

    rj bench                 # every benchmark at its quick size (a few minutes each at most)
    rj bench --full          # the sizes the README's figures were measured at (an hour and more)
    rj bench --only audit --only notify_latency

Figures mean little on a busy machine: the load average before and after each run is kept beside it, and a
benchmark run while another program keeps the cores busy should be run again. A benchmark's exit status is
non-zero where it missed its target or lost an event; ``rj bench`` goes on with the rest and exits non-zero if
any did.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".rj" / "bench"


@dataclass(frozen=True)
class Bench:
    name: str
    what: str
    quick: tuple[str, ...]
    full: tuple[str, ...] = ()


BENCHES: tuple[Bench, ...] = (
    Bench(
        "intake", "upstream events to cases, beside a faust agent doing nothing", ("--events", "10000", "--runs", "1")
    ),
    Bench("intake_cost", "what a batch of intake costs, step by step", ("--events", "5000", "--rounds", "1")),
    Bench("fieldcrypt", "sealing and opening personal fields, beside parsing alone", ("--events", "500")),
    Bench(
        "latency", "a command to its fact (consent), beside the broker round trip", ("--rate", "10", "--seconds", "15")
    ),
    Bench(
        "withdraw_latency",
        "a withdrawal to its meeting's cancellation (two hops, two relays)",
        ("--rate", "10", "--seconds", "15"),
    ),
    Bench(
        "notify_latency",
        "an upstream outcome to the victim's email at a real SMTP server",
        ("--rate", "50", "--seconds", "20", "--json", str(STATE / "notify_latency.json")),
        ("--rate", "50", "--seconds", "60", "--json", str(STATE / "notify_latency.json")),
    ),
    Bench(
        "capacity",
        "every service running: the highest rate at which outcome → email and withdrawal → cancelled and told meet p99",
        ("--rates", "10,20", "--seconds", "10", "--json", str(STATE / "capacity.json")),
        ("--rates", "10,20,30,40,50,60", "--seconds", "30", "--json", str(STATE / "capacity.json")),
    ),
    Bench(
        "recovery",
        "a service's SIGKILL to its lag back at zero under steady load",
        ("--rate", "20", "--kills", "3", "--json", str(STATE / "recovery.json")),
        ("--rate", "20", "--kills", "10", "--json", str(STATE / "recovery.json")),
    ),
    Bench(
        "api_reads",
        "the API's reads over a large read model",
        ("--cases", "10000", "--requests", "300", "--fill-budget", "60"),
        ("--cases", "100000", "--requests", "2000"),
    ),
    Bench(
        "audit",
        "the audit log: verify, replay, export, append; lag after a burst",
        (
            "--events",
            "100000",
            "--runs",
            "1",
            "--samples",
            "100",
            "--append",
            "10000",
            "--burst",
            "5000",
            "--json",
            str(STATE / "audit.json"),
        ),  # fmt: skip
        (
            "--json",
            str(STATE / "audit.json"),
        ),
    ),
)


def run_all(only: Sequence[str] = (), *, full: bool = False) -> int:
    """Run the benchmarks named in ``only`` (all when empty) in turn; 0 if each exited 0."""
    unknown = sorted(set(only) - {b.name for b in BENCHES})
    if unknown:
        raise SystemExit(f"no such benchmark: {', '.join(unknown)} (there are: {', '.join(b.name for b in BENCHES)})")
    STATE.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    for bench in BENCHES:
        if only and bench.name not in only:
            continue
        args = bench.full if full else bench.quick  # a benchmark's own defaults are its full size
        command = [sys.executable, "-m", f"bench.{bench.name}", *args]
        print(f"\n=== {bench.name}: {bench.what}\n$ {' '.join(command[1:])}", flush=True)
        load_before, started = os.getloadavg(), time.monotonic()
        process = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        printed = "\n".join(line for line in process.stdout.splitlines() if not _is_log_line(line))
        print(printed, flush=True)
        result = {
            "name": bench.name,
            "what": bench.what,
            "command": command[1:],
            "exit_status": process.returncode,
            "seconds": round(time.monotonic() - started, 1),
            "cores": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "printed": printed,
        }
        results.append(result)
        (STATE / f"{bench.name}.run.json").write_text(json.dumps(result, indent=1))
    (STATE / "all.json").write_text(json.dumps(results, indent=1))
    print(f"\n{'benchmark':<18}{'exit':>5}{'seconds':>9}  load before -> after")
    for r in results:
        before, after = r["load_average_before"][0], r["load_average_after"][0]
        print(f"{r['name']:<18}{r['exit_status']:>5}{r['seconds']:>9.1f}  {before:.2f} -> {after:.2f}")
    print(f"figures written to {STATE / 'all.json'}")
    return 0 if all(r["exit_status"] == 0 for r in results) else 1


def _is_log_line(line: str) -> bool:
    """The services' and the harness's structured log lines, which the benchmarks let through: not figures."""
    return len(line) > 27 and line[:4].isdigit() and line[4] == "-" and " [" in line[:40]
