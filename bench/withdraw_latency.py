"""Latency benchmark: a withdrawal to its meeting's cancellation (two hops, two outbox relays) at a steady rate,
beside the broker round trip alone.

    .venv/bin/python -m bench.withdraw_latency --rate 10 --seconds 60

The path: ``rj.consent.withdraw`` (a victim withdrawing participation) on ``rj.commands``; the consent service
applies it and its relay publishes ``rj.consent.withdrawn`` and ``rj.case.withdrawn`` on ``rj.consent``; the
scheduling service applies the first of those, cancels the case's booked meeting, and its relay publishes
``rj.meeting.cancelled`` on ``rj.scheduling``.

It starts its own Tansu broker, a fresh database and fresh topics, and runs the referral, consent and
scheduling services as processes on their default settings (bench/steady.py). It prepares one case with a
booked conference per measured command, up front, through the services as outside clients do (upstream
events on ``crime.events``, commands on ``rj.commands``), the sequence of tests/e2e/test_case_lifecycle.py:

1. staff: ``PAIRS`` pairs of facilitators and one community venue per pair, registered; a crime and an
   admitted outcome per case; waits until consent has every case in preparation and knows every facilitator;
2. per case: a pair assigned, a preparation meeting and participation consent for victim and offender, a
   risk assessment where consent asks for one, each participant's availability; waits until consent has
   the case ready for a meeting and scheduling has heard so;
3. per case: a conference booked (case i with pair i mod ``PAIRS``, every pair's meetings half an hour
   apart, so nothing is double-booked); waits until every case has ``rj.meeting.booked``.

Where a UI would read a service's view (consent knows the facilitators, scheduling knows the case is ready),
it reads the service's table as the e2e tests do. Then it measures, one after the other:

- the ceiling: a record sent to a scratch topic and received back by a consumer, at the same rate;
- withdrawal to cancellation: one ``rj.consent.withdraw`` per case every 1/rate seconds, until its
  ``rj.meeting.cancelled`` arrives. An arrival is matched to its command by the causation chain: the
  cancellation's ``causationid`` is the consent fact scheduling acted on, whose ``causationid`` is the
  command's id (so the figure also says which consent fact carried the withdrawal across: the staff-only
  ``rj.consent.withdrawn``, which comes first; ``rj.case.withdrawn`` is participant-facing and has no cause).

Beside the figures it prints where the time went, per withdrawal (``--timelines`` writes them to a CSV file):
when each service's transaction began (its inbox's ``received_at``, the transaction's start, on the
database's clock, which is the machine's), when it committed (the ``NOTIFY`` that ``write_outbox`` sends the
relay, heard by the benchmark too: the first heard after the transaction began), when each relay marked the
fact sent (its outbox's ``published_at``, after the broker acknowledged it), and the arrivals at the
benchmark's consumer; and the CPU the machine, this run's processes and everything else used meanwhile.

A module of its own rather than a ``--path`` of bench/latency.py: its preparation (a third service, staff,
six kinds of command), its matching (a chain across two topics) and its breakdown share nothing with the
one-hop benchmark but what bench/steady.py holds, and two paths through one ``measure`` would be two
benchmarks told apart by ``if``. It exits non-zero if a command is rejected at any stage or a cancellation
(or a probe) has not arrived 10 s after the last send; it never judges the timings.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import csv
import json
import math
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
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
    percentiles,
    report,
    running_stack,
    send_paced,
    show_defaults,
)
from demo import samples
from schemas import topics
from schemas.commands import CommandRejected
from schemas.consent import (
    CaseReadyForMeeting,
    CaseWithdrawn,
    ConsentWithdrawn,
    PreparationStarted,
    RecordRiskAssessment,
    RiskLevel,
)
from schemas.scheduling import (
    AvailabilityRecorded,
    BookMeeting,
    FacilitatorRegistered,
    MeetingBooked,
    MeetingCancelled,
    MeetingKind,
    RecordAvailability,
    TimeWindow,
    VenueRegistered,
)
from services.runtime.kafka import publish
from services.runtime.outbox import notify_channel

SERVICES = ("referral", "consent", "scheduling")
# A team's worth of staff: each facilitator holds (rate x seconds) / PAIRS bookings, which scheduling loads
# for every case they touch. One pair and one venue for every case would make that every booking there is.
PAIRS = 10
SLOT = timedelta(minutes=30)  # between one pair's meetings
MEETING = timedelta(minutes=10)
STAGE_TIMEOUT_S = 300.0
TARGET_P99_MS = 150.0  # the figure: printed beside the result, never asserted
WITHDRAWAL_FACTS = (ConsentWithdrawn.event_type, CaseWithdrawn.event_type)


# --- the traffic --------------------------------------------------------------------------------


def pair(i: int) -> tuple[str, str, str]:
    """The lead, the co-facilitator and the venue of case ``i``."""
    k = i % PAIRS
    return f"F-{2 * k + 1:02d}", f"F-{2 * k + 2:02d}", f"V-{k + 1:02d}"


def staff() -> list[tuple[str, str, bytes]]:
    facilitator_ids = [f for k in range(PAIRS) for f in pair(k)[:2]]
    return [*samples.facilitators(*facilitator_ids), *(samples.community_venue(pair(k)[2]) for k in range(PAIRS))]


def meeting_time(i: int, first: datetime) -> TimeWindow:
    """Case ``i``'s meeting: its pair's (i // PAIRS)-th slot from ``first`` (a midnight: no slot straddles one)."""
    starts = first + (i // PAIRS) * SLOT
    return TimeWindow(starts_at=starts, ends_at=starts + MEETING)


def preparation(case: Case, i: int, meeting: TimeWindow, risk_assessment: bool) -> list[tuple[str, str, bytes]]:
    """What a facilitator does before booking: be assigned with a co-facilitator, meet each party, record their
    consent (after assessing risk where it is required), and record when each can attend."""
    lead, co, _ = pair(i)
    people = [case.victim_id, case.offender_id]
    commands = []
    if risk_assessment:  # before anyone is contacted
        assessment = RecordRiskAssessment(
            case_id=case.case_id,
            actor=samples.STAFF,
            assessed_at=datetime.now(UTC),
            level=RiskLevel.low,
            safe_to_proceed=True,
        )
        commands.append(samples.command(assessment))
    commands += samples.prepare(case.case_id, people, [lead, co])
    around = TimeWindow(starts_at=meeting.starts_at - timedelta(hours=1), ends_at=meeting.ends_at + timedelta(hours=1))
    for person_id in people:
        availability = RecordAvailability(
            case_id=case.case_id, actor=samples.STAFF, person_id=person_id, windows=[around]
        )
        commands.append(samples.command(availability))
    return commands


def booking(case: Case, i: int, meeting: TimeWindow) -> tuple[str, str, bytes]:
    lead, co, venue = pair(i)
    return samples.command(
        BookMeeting(
            case_id=case.case_id,
            actor=samples.STAFF,
            meeting_id=f"M-{case.reference}",
            kind=MeetingKind.conference,
            starts_at=meeting.starts_at,
            ends_at=meeting.ends_at,
            lead_facilitator_id=lead,
            co_facilitator_id=co,
            venue_id=venue,
        )
    )


def withdrawals(stack: Stack, cases: list[Case]) -> Iterator[Outgoing]:
    """The victim's withdrawal of participation for each case, built just before it is sent."""
    for case in cases:
        topic, key, value = samples.consent(case.case_id, case.victim_id, withdraw=True)
        yield json.loads(value)["id"], stack.settings.topic(topic), key.encode(), value


# --- what arrives -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    event_id: str
    kind: str  # its type
    cause: str | None  # its causationid
    at: float


@dataclass
class Followed:
    """What the benchmark follows on ``rj.consent`` and ``rj.scheduling``."""

    preparing: dict[str, bool] = field(default_factory=dict)  # case id -> whether it needs a risk assessment
    ready: set[str] = field(default_factory=set)  # case ids
    availability: Counter[str] = field(default_factory=Counter)  # case id -> participants' availability recorded
    booked: set[str] = field(default_factory=set)  # case ids
    registered: set[str] = field(default_factory=set)  # facilitator and venue ids
    rejected: dict[str, str] = field(default_factory=dict)  # command id -> reason
    withdrawn: dict[str, Arrival] = field(default_factory=dict)  # consent's withdrawal facts, by event id
    cancelled: dict[str, Arrival] = field(default_factory=dict)  # rj.meeting.cancelled, by case id

    def on_record(self, arrived: float, record: ConsumerRecord) -> None:
        event = json.loads(record.value)
        kind, subject, cause = event.get("type"), event.get("subject"), event.get("causationid")
        if kind == PreparationStarted.event_type:
            self.preparing[subject] = event["data"]["risk_assessment_required"]
        elif kind == CaseReadyForMeeting.event_type:
            self.ready.add(subject)
        elif kind == AvailabilityRecorded.event_type:
            self.availability[subject] += 1
        elif kind == MeetingBooked.event_type:
            self.booked.add(subject)
        elif kind in (FacilitatorRegistered.event_type, VenueRegistered.event_type):
            self.registered.add(subject)
        elif kind == CommandRejected.event_type and cause:
            self.rejected.setdefault(cause, event["data"]["reason"])
        elif kind in WITHDRAWAL_FACTS:
            self.withdrawn.setdefault(event["id"], Arrival(event["id"], kind, cause, arrived))
        elif kind == MeetingCancelled.event_type:
            self.cancelled.setdefault(subject, Arrival(event["id"], kind, cause, arrived))

    def chains(self) -> dict[str, tuple[Arrival, Arrival]]:
        """Command id -> (the consent fact scheduling acted on, the cancellation), by the causation chain."""
        out = {}
        for cancelled in self.cancelled.values():
            fact = self.withdrawn.get(cancelled.cause or "")
            if fact is not None and fact.cause is not None:
                out[fact.cause] = (fact, cancelled)
        return out

    def settled(self) -> set[str]:
        return self.chains().keys() | self.rejected.keys()

    def no_rejections(self) -> None:
        if self.rejected:
            reasons = Counter(self.rejected.values()).most_common(3)
            raise SystemExit(f"{len(self.rejected)} commands rejected while preparing: {reasons}")


# --- preparing the cases ------------------------------------------------------------------------


async def count_rows(stack: Stack, sql: str, *args: Any) -> int:
    """A count from a service's table (0 while the service has not made it yet)."""
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        return int(await conn.fetchval(sql, *args))
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return 0
    finally:
        await conn.close()


async def prepare_cases(stack: Stack, followed: Followed, cases: list[Case]) -> None:
    ids = [c.case_id for c in cases]
    wanted = set(ids)
    facilitator_ids = [f for k in range(PAIRS) for f in pair(k)[:2]]
    first = datetime.combine(datetime.now(UTC).date() + timedelta(days=2), datetime.min.time(), tzinfo=UTC)
    meetings = [meeting_time(i, first) for i in range(len(cases))]

    began = time.monotonic()
    await publish(stack.settings, [*staff(), *(m for case in cases for m in case.upstream())])

    async def consent_knows_staff() -> bool:
        sql = "SELECT count(*) FROM consent.facilitators WHERE facilitator_id = ANY($1::text[])"
        return await count_rows(stack, sql, facilitator_ids) == len(facilitator_ids)

    await stack.wait_until(
        lambda: wanted <= followed.preparing.keys(),
        STAGE_TIMEOUT_S,
        lambda: f"only {len(wanted & followed.preparing.keys())} of {len(wanted)} cases in preparation",
    )
    staff_ids = {*facilitator_ids, *(pair(k)[2] for k in range(PAIRS))}
    await stack.wait_until(
        lambda: staff_ids <= followed.registered, STAGE_TIMEOUT_S, lambda: "scheduling has not registered all staff"
    )
    await stack.wait_until(consent_knows_staff, STAGE_TIMEOUT_S, lambda: "consent does not know every facilitator")
    followed.no_rejections()
    print(f"{len(cases)} cases in preparation, {PAIRS} pairs and venues known: {time.monotonic() - began:.1f} s")

    await publish(
        stack.settings,
        (
            m
            for i, case in enumerate(cases)
            for m in preparation(case, i, meetings[i], followed.preparing[case.case_id])
        ),
    )

    async def schedulable() -> bool:
        if not (wanted <= followed.ready and all(followed.availability[c] >= 2 for c in ids)):
            followed.no_rejections()
            return False
        sql = "SELECT count(*) FROM scheduling.cases WHERE key = ANY($1::text[]) AND state->>'ready' = 'true'"
        return await count_rows(stack, sql, ids) == len(ids)

    await stack.wait_until(
        schedulable, STAGE_TIMEOUT_S, lambda: f"only {len(wanted & followed.ready)} of {len(wanted)} cases ready"
    )
    print(f"{len(cases)} cases ready for a meeting: {time.monotonic() - began:.1f} s")

    await publish(stack.settings, (booking(case, i, meetings[i]) for i, case in enumerate(cases)))

    def all_booked() -> bool:
        followed.no_rejections()
        return wanted <= followed.booked

    await stack.wait_until(
        all_booked, STAGE_TIMEOUT_S, lambda: f"only {len(wanted & followed.booked)} of {len(wanted)} meetings booked"
    )
    print(f"{len(cases)} conferences booked: {time.monotonic() - began:.1f} s")


# --- where the time went ------------------------------------------------------------------------


@dataclass(frozen=True)
class Timeline:
    """One withdrawal's moments, in seconds on the benchmark's ``perf_counter`` clock."""

    sent: float
    consent_began: float  # consent's transaction that took the command in began
    consent_committed: float  # the first commit of consent's outbox heard after that (its NOTIFY)
    consent_relayed: float  # consent's relay marked the withdrawal fact sent
    consent_arrived: float  # that fact reached the benchmark's consumer
    scheduling_began: float  # scheduling's transaction that took the fact in began
    scheduling_committed: float  # the first commit of scheduling's outbox heard after that
    scheduling_relayed: float  # scheduling's relay marked the cancellation sent
    cancelled_arrived: float  # the cancellation reached the benchmark's consumer
    ambiguous: bool  # another commit of the same outbox was heard before a relay's mark: the commit may be its


POINTS = (
    ("consent's transaction begins (inbox received_at)", "consent_began"),
    ("consent commits (its NOTIFY heard here)", "consent_committed"),
    ("consent's relay has the fact acked (outbox published_at)", "consent_relayed"),
    ("the consent fact arrives here", "consent_arrived"),
    ("scheduling's transaction begins (inbox received_at)", "scheduling_began"),
    ("scheduling commits (its NOTIFY heard here)", "scheduling_committed"),
    ("scheduling's relay has the cancellation acked (published_at)", "scheduling_relayed"),
    ("rj.meeting.cancelled arrives here", "cancelled_arrived"),
)


@contextlib.asynccontextmanager
async def hearing_commits(stack: Stack, schemas: Sequence[str]) -> AsyncIterator[dict[str, list[float]]]:
    """While inside, when each commit that wrote to a schema's outbox was heard: ``write_outbox`` notifies the
    relay's channel, and PostgreSQL delivers a notification to every listener when the transaction commits."""
    heard: dict[str, list[float]] = {schema: [] for schema in schemas}
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        for schema in schemas:
            await conn.add_listener(
                notify_channel(schema), lambda *_, times=heard[schema]: times.append(time.perf_counter())
            )
        yield heard
    finally:
        await conn.close()


def first_after(times: list[float], moment: float) -> float:
    i = bisect.bisect_left(times, moment)
    return times[i] if i < len(times) else math.nan


def heard_between(times: list[float], start: float, end: float) -> int:
    return bisect.bisect_right(times, end) - bisect.bisect_left(times, start)


async def timelines(
    stack: Stack,
    sent: dict[str, float],
    chains: dict[str, tuple[Arrival, Arrival]],
    commits: dict[str, list[float]],
    wall_minus_perf: float,
) -> list[Timeline]:
    """Each matched withdrawal's moments: the services' from their inbox and outbox tables, the commits heard."""
    conn = await asyncpg.connect(stack.settings.database_url)
    try:

        async def moments(sql: str, ids: Sequence[str]) -> dict[str, float]:
            rows = await conn.fetch(sql, list(ids))
            return {r["event_id"]: r["at"].timestamp() - wall_minus_perf for r in rows if r["at"] is not None}

        received = "SELECT event_id, received_at AS at FROM {}.inbox WHERE event_id = ANY($1::text[])"
        published = "SELECT event_id, published_at AS at FROM {}.outbox WHERE event_id = ANY($1::text[])"
        facts = [fact.event_id for fact, _ in chains.values()]
        cancellations = [cancelled.event_id for _, cancelled in chains.values()]
        consent_began = await moments(received.format("consent"), list(chains))
        consent_relayed = await moments(published.format("consent"), facts)
        scheduling_began = await moments(received.format("scheduling"), facts)
        scheduling_relayed = await moments(published.format("scheduling"), cancellations)
    finally:
        await conn.close()
    out = []
    for command_id, (fact, cancelled) in chains.items():
        if command_id not in sent:
            continue
        try:
            began = (consent_began[command_id], scheduling_began[fact.event_id])
            relayed = (consent_relayed[fact.event_id], scheduling_relayed[cancelled.event_id])
        except KeyError:
            continue  # not in the tables (should not happen): left out of the breakdown, counted in its title
        consent, scheduling = commits["consent"], commits["scheduling"]
        out.append(
            Timeline(
                sent=sent[command_id],
                consent_began=began[0],
                consent_committed=first_after(consent, began[0]),
                consent_relayed=relayed[0],
                consent_arrived=fact.at,
                scheduling_began=began[1],
                scheduling_committed=first_after(scheduling, began[1]),
                scheduling_relayed=relayed[1],
                cancelled_arrived=cancelled.at,
                ambiguous=heard_between(consent, began[0], relayed[0]) > 1
                or heard_between(scheduling, began[1], relayed[1]) > 1,
            )
        )
    return out


def report_timelines(lines: list[Timeline], matched: int) -> None:
    print(f"\nwhere the time went: {len(lines)} of {matched} withdrawals (ms since the send's moment on the schedule;")
    print("the database clock for the services' moments: the transaction's start, the relay's mark after the ack)")
    if ambiguous := sum(line.ambiguous for line in lines):
        print(f"({ambiguous} heard another commit of the same outbox in between: theirs may be taken for a commit)")
    width = max(len(label) for label, _ in POINTS) + 4
    print(f"{'':<{width}}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}")
    for label, name in POINTS:
        values = [v for line in lines if not math.isnan(v := (getattr(line, name) - line.sent) * 1000)]
        print(f"{label:<{width}}" + "".join(f"{v:>9.1f}" for v in percentiles(values)))
    print("each from the one before (ms; an arrival here may precede its relay's mark, which waits for the ack)")
    previous = "sent"
    for label, name in POINTS:
        values = [v for line in lines if not math.isnan(v := (getattr(line, name) - getattr(line, previous)) * 1000)]
        print(f"{'+ ' + label:<{width}}" + "".join(f"{v:>9.1f}" for v in percentiles(values)))
        previous = name


def write_timelines(lines: list[Timeline], path: Path) -> None:
    """One row per withdrawal: when it was sent (s since the first send), then each moment in ms since its send."""
    first = min((line.sent for line in lines), default=0.0)
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["sent_s", *(name for _, name in POINTS), "ambiguous"])
        for line in sorted(lines, key=lambda line: line.sent):
            moments = (f"{(getattr(line, name) - line.sent) * 1000:.2f}" for _, name in POINTS)
            out.writerow([f"{line.sent - first:.3f}", *moments, int(line.ambiguous)])
    print(f"each withdrawal's moments: {path}")


# --- the run ------------------------------------------------------------------------------------


async def measure(stack: Stack, rate: float, count: int, probe_count: int, timelines_csv: Path | None) -> int:
    settings = stack.settings
    cases = [Case(f"WD/2026/{i:07d}") for i in range(count)]
    followed = Followed()
    bootstrap = settings.kafka_bootstrap_servers
    consent, scheduling = settings.topic(topics.CONSENT), settings.topic(topics.SCHEDULING)
    async with (
        listening(bootstrap, consent, await stack.partitions(topics.CONSENT), followed.on_record),
        listening(bootstrap, scheduling, await stack.partitions(topics.SCHEDULING), followed.on_record),
    ):
        stack.start(*SERVICES)
        await prepare_cases(stack, followed, cases)

        ceiling = await measure_ceiling(stack, rate, probe_count)

        print(f"withdrawals: {count} at {rate:g}/s, one per case")
        async with hearing_commits(stack, ["consent", "scheduling"]) as commits:
            wall_minus_perf = time.time() - time.perf_counter()
            cpu_before = await cpu_snapshot(stack)
            sent = await send_paced(stack.producer, rate, withdrawals(stack, cases))
            await await_arrivals(sent, followed.settled)
            cpu = cpu_report(cpu_before, await cpu_snapshot(stack))
        chains = {i: chain for i, chain in followed.chains().items() if i in sent}
        lines = await timelines(stack, sent, chains, commits, wall_minus_perf)

    path = Figures(len(sent), [(cancelled.at - sent[i]) * 1000 for i, (_, cancelled) in chains.items()])
    hop1 = Figures(len(sent), [(fact.at - sent[i]) * 1000 for i, (fact, _) in chains.items()])
    hop2 = Figures(len(sent), [(cancelled.at - fact.at) * 1000 for fact, cancelled in chains.values()])
    report(
        rate,
        [
            ("ceiling: broker round trip", ceiling),
            ("rj.consent.withdraw → rj.meeting.cancelled", path),
            ("  hop 1: withdraw → consent fact here", hop1),
            ("  hop 2: consent fact here → cancelled", hop2),
        ],
    )
    p99 = percentiles(path.latencies_ms)[2]
    print(f"the issue's target: p99 under {TARGET_P99_MS:g} ms; this run's p99 {p99:.1f} ms")
    acted_on = Counter(fact.kind for fact, _ in chains.values())
    print("scheduling cancelled on: " + ", ".join(f"{kind} ×{n}" for kind, n in acted_on.items()))
    report_timelines(lines, len(chains))
    print(cpu)
    if timelines_csv is not None:
        write_timelines(lines, timelines_csv)

    failed = False
    if rejected := {i: r for i, r in followed.rejected.items() if i in sent}:
        print(f"{len(rejected)} withdrawals rejected, e.g. {next(iter(rejected.values()))}", file=sys.stderr)
        failed = True
    if path.missing - len(rejected) > 0 or ceiling.missing:
        print(f"not arrived within {ARRIVAL_TIMEOUT_S:g} s of the last send", file=sys.stderr)
        failed = True
    return 1 if failed else 0


async def main(rate: float, seconds: float, probe_count: int, timelines_csv: Path | None) -> int:
    show_defaults()
    async with running_stack("withdraw") as stack:
        return await measure(stack, rate, round(rate * seconds), probe_count, timelines_csv)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=10.0, help="withdrawals (and probes) per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to send withdrawals for")
    parser.add_argument("--probes", type=int, default=200, help="records for the broker round trip (the ceiling)")
    parser.add_argument("--timelines", type=Path, help="write each withdrawal's moments to this CSV file")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.rate, args.seconds, args.probes, args.timelines)))
