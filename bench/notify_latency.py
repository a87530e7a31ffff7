"""Notify latency: from an upstream ``crime.outcome-recorded`` (on ``crime.events``) to the victim's email accepted
by a real SMTP server (aiosmtpd, timestamped in its handler), at a steady rate, with referral and notify running
and quiet hours open all day.

    .venv/bin/python -m bench.notify_latency --rate 50 --seconds 30

Each case's crime is recorded up front (no case opens without an admitted outcome); then one outcome per case is
sent every 1/rate seconds. The ceiling printed beside it is the same run's SMTP round trip alone (aiosmtplib to the
same server). Target: p99 < 200 ms. Figures go to stdout and, as JSON, to ``--json`` (default
``.rj/bench/notify_latency.json``).

Beneath them, where the time goes: from the same send to each stage the databases recorded for the case (referral's
intake of the outcome, its fact published by its relay, notify's intake of that fact, the victim's message claimed
by the sender, its result recorded), each as a row of the same table. A stage's time is PostgreSQL's ``now()`` (the
start of the transaction that wrote it) or the sender's clock (the claim), so a row says when that step *began*."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path

import asyncpg

from bench.steady import (
    Case,
    Figures,
    Stack,
    catching_mail,
    percentiles,
    report,
    running_stack,
    send_paced,
    show_defaults,
)
from demo import samples
from schemas import topics
from services.runtime.kafka import publish

TARGET_P99_MS = 200.0


async def smtp_ceiling(port: int, count: int, rate: float) -> Figures:
    import aiosmtplib

    sent: dict[str, float] = {}
    arrived: dict[str, float] = {}
    for i in range(count):
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "probe@bench", f"probe-{i}@bench", "probe"
        message.set_content("probe")
        sent[str(i)] = time.perf_counter()
        await aiosmtplib.send(message, hostname="127.0.0.1", port=port, use_tls=False, start_tls=False)
        arrived[str(i)] = time.perf_counter()
        await asyncio.sleep(1 / rate)
    return Figures.of(sent, arrived)


def _perf(at: datetime | None) -> float | None:
    """A database timestamp on this process's ``perf_counter`` scale (same machine, same clock)."""
    return None if at is None else at.timestamp() - (time.time() - time.perf_counter())


async def stages(
    database_url: str, cases: list[Case], outcome_ids: dict[str, str]
) -> list[tuple[str, dict[str, float]]]:
    """When each step of each case's path began, by the victim's address (``sent``'s keys), read back from the
    services' own tables: inbox ``received_at``, outbox ``created_at``/``published_at``, the scheduled send's
    ``created_at``/``claimed_at``/``finished_at``."""
    address = {c.case_id: c.victim_address for c in cases}
    conn = await asyncpg.connect(database_url)
    try:
        taken = await conn.fetch("SELECT event_id, received_at FROM referral.inbox WHERE event_id = ANY($1)",
                                 list(outcome_ids.values()))  # fmt: skip
        by_event = {r["event_id"]: r["received_at"] for r in taken}
        # Referral's facts about a case written in the transaction that took its outcome in: the first of them.
        facts = await conn.fetch(
            """SELECT DISTINCT ON (o.key) o.key, o.event_id, o.created_at, o.published_at, n.received_at
                 FROM referral.outbox o JOIN referral.inbox i ON i.received_at = o.created_at
                 LEFT JOIN notify.inbox n ON n.event_id = o.event_id
                WHERE o.key = ANY($1) AND i.event_id = ANY($2)
                ORDER BY o.key, o.id""",
            list(address), list(outcome_ids.values()),
        )  # fmt: skip
        sends = await conn.fetch(
            """SELECT DISTINCT ON (case_id) case_id, created_at, claimed_at, finished_at FROM notify.scheduled_sends
                WHERE case_id = ANY($1) AND recipient_kind <> 'staff' ORDER BY case_id, created_at""",
            list(address),
        )
    finally:
        await conn.close()
    out: dict[str, dict[str, float]] = {k: {} for k in ("referral took", "fact published", "notify took",
                                                         "victim's send written", "claimed", "recorded")}  # fmt: skip
    for case in cases:
        at = _perf(by_event.get(outcome_ids[case.case_id]))
        if at is not None:
            out["referral took"][address[case.case_id]] = at
    for row in facts:
        for label, column in (("fact published", "published_at"), ("notify took", "received_at")):
            if (at := _perf(row[column])) is not None:
                out[label][address[row["key"]]] = at
    for row in sends:
        for label, column in (("victim's send written", "created_at"), ("claimed", "claimed_at"),
                              ("recorded", "finished_at")):  # fmt: skip
            if (at := _perf(row[column])) is not None:
                out[label][address[row["case_id"]]] = at
    return list(out.items())


async def measure(stack: Stack, rate: float, count: int, out: Path) -> int:
    with catching_mail() as (handler, mail):
        port = int(mail["NOTIFY_SMTP_PORT"])
        stack.start("referral")
        stack.supervisor.start("notify", mail)
        cases = [Case(f"NL/2026/{i:07d}") for i in range(count)]
        await publish(stack.settings, [samples.on_crime_events(samples.crime_recorded(c.reference))[0] for c in cases])
        warm = Case("NL/2026/warm-up")
        await publish(stack.settings, warm.upstream())
        address = warm.victim_address
        await stack.wait_until(lambda: address in handler.accepted, 120, lambda: "no warm-up email")
        ceiling = await smtp_ceiling(port, 200, rate)
        outcome_ids = {c.case_id: str(uuid.uuid4()) for c in cases}
        outcomes = (
            (c.victim_address, stack.settings.topic(topics.CRIME_EVENTS), c.reference.encode(),
             samples.upstream_event(samples.outcome_recorded(c.reference), event_id=outcome_ids[c.case_id]))
            for c in cases
        )  # fmt: skip
        sent = await send_paced(stack.producer, rate, outcomes)
        deadline = time.perf_counter() + 30
        while not sent.keys() <= handler.accepted.keys() and time.perf_counter() < deadline:
            await asyncio.sleep(0.1)
        steps = await stages(stack.settings.database_url, cases, outcome_ids)
    figures = Figures.of(sent, handler.accepted)
    report(rate, [("ceiling: SMTP round trip alone", ceiling), ("outcome-recorded → email accepted", figures)])
    report(rate, [(f"  → {label}", Figures.of(sent, at)) for label, at in steps])
    p50, p95, p99, worst = percentiles(figures.latencies_ms)
    print(f"target p99 < {TARGET_P99_MS:g} ms: {'met' if p99 < TARGET_P99_MS else 'MISSED'} (p99 {p99:.1f} ms)")
    c50, _, c99, _ = percentiles(ceiling.latencies_ms)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "bench": "notify_latency", "rate_per_s": rate, "cases": count, "sent": figures.sent,
        "missing": figures.missing, "p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "max_ms": worst,
        "target_p99_ms": TARGET_P99_MS, "ceiling_smtp_p50_ms": c50, "ceiling_smtp_p99_ms": c99,
    }, indent=2))  # fmt: skip
    return 1 if figures.missing else 0


async def main(rate: float, seconds: float, out: Path) -> int:
    show_defaults()
    async with running_stack("notify-latency") as stack:
        return await measure(stack, rate, round(rate * seconds), out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=50.0, help="outcomes (cases) per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--json", type=Path, default=Path(".rj/bench/notify_latency.json"))
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.rate, args.seconds, args.json)))
