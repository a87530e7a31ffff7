"""Withdrawal first, as an outside client sees it: commands on ``rj.commands``, facts read back, the consent
service late.

The reported race: a booking sent after a withdrawal was accepted because the scheduling service learnt of
the withdrawal only from consent's fact, on another topic (13 of 46 bookings, 0.37 to 0.68 s after the case
was withdrawn). Here the consent service is stopped while, for each of many ready cases, a withdrawal and
then a booking are published: the scheduling service must refuse every such booking while the withdrawal
awaits consent's verdict, and once consent is back every one of those cases is closed with nothing ever
booked. Withdrawals consent rejects (someone speaking for another) and withdrawals of consent to share one
piece of information do not stop their cases, and hostile records in between change nothing.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from demo import samples
from demo.samples import STAFF, UPSTREAM_SOURCE, command, facilitators
from schemas import topics
from schemas.common import Actor
from schemas.consent import PutCaseOnHold, RecordedThrough, RecordingMethod, WithdrawConsent, sharing
from schemas.scheduling import BookMeeting, MeetingKind
from tests.e2e.conftest import facilitators_known, facts, next_week, prepare
from tests.harness import System, of_type

pytestmark = pytest.mark.integration

STOPPED, REJECTED, SHARING, HELD = 200, 20, 20, 10
CASES = STOPPED + REJECTED + SHARING + HELD


def booking(case_id: str, i: int, meeting_id: str = "M1") -> tuple[str, str, bytes]:
    starts = next_week(hour=0) + timedelta(minutes=30 * i)
    return command(
        BookMeeting(
            case_id=case_id,
            actor=STAFF,
            meeting_id=meeting_id,
            kind=MeetingKind.indirect,
            starts_at=starts,
            ends_at=starts + timedelta(minutes=20),
            lead_facilitator_id="F-ANN",
        )
    )


def withdrawal(case_id: str, person_id: str, *, by: str | None = None, purpose: str = "participation") -> bytes:
    return command(
        WithdrawConsent(
            case_id=case_id,
            actor=Actor(kind="participant", id=by or person_id),
            person_id=person_id,
            purpose=purpose,
            through=RecordedThrough.participant,
            method=RecordingMethod.online,
        )
    )[2]


async def referred_cases(system: System, prefix: str, n: int) -> list[tuple[str, str, str]]:
    """``n`` crimes with admitted outcomes, published at once; (case id, victim, offender) once consent has
    taken every one into preparation."""
    refs = [f"{prefix}{i:05d}" for i in range(n)]
    await system.publish(
        [m for r in refs for m in samples.on_crime_events(samples.crime_recorded(r), samples.outcome_recorded(r))]
    )
    cases = [(samples.case_of(r), f"V-{r}", f"O-{r}") for r in refs]
    ids = {c for c, _, _ in cases}
    await system.read_until(
        topics.CONSENT,
        lambda ms: len({m["subject"] for m in of_type(ms, "rj.preparation.started") if m["subject"] in ids}) == n,
        timeout_s=120,
    )
    return cases


async def test_rule_2_a_withdrawal_before_a_booking_never_gives_a_booked_meeting_however_late_consent_is(
    system: System,
) -> None:
    for name in ("referral", "consent", "scheduling"):
        system.start(name)
    await system.publish(facilitators("F-ANN"))
    await facilitators_known(system, "F-ANN")
    cases = await referred_cases(system, "WM/2026/8", CASES)
    await system.publish([m for case_id, v, o in cases for m in prepare(case_id, [v, o], ["F-ANN"])])

    async def all_ready() -> bool:
        sql = "SELECT count(*) FROM scheduling.cases WHERE state->>'ready' = 'true'"
        return await system.fetchval(sql) == CASES

    await system.wait_for(all_ready, what="scheduling to hear every case is ready")

    # The consent service is down: nothing it decides reaches anyone until it is back.
    system.service("consent").stop()
    stopped = cases[:STOPPED]  # hundreds of withdrawals, each followed by a booking, consent down throughout
    rejected = cases[STOPPED : STOPPED + REJECTED]
    shared = cases[STOPPED + REJECTED : STOPPED + REJECTED + SHARING]
    held = cases[STOPPED + REJECTED + SHARING :]
    messages: list[tuple[str, str | None, bytes]] = []
    for i, case in enumerate(cases):
        case_id, victim, offender = case
        if case in stopped:
            first = withdrawal(case_id, victim if i % 2 else offender)
            messages += [(topics.COMMANDS, case_id, first), (topics.COMMANDS, case_id, first)]  # sent twice
        elif case in rejected:
            messages.append((topics.COMMANDS, case_id, withdrawal(case_id, victim, by=offender)))  # not theirs to say
        elif case in shared:
            messages.append((topics.COMMANDS, case_id, withdrawal(case_id, victim, purpose=sharing("statement"))))
        else:
            hold = PutCaseOnHold(case_id=case_id, actor=STAFF, concern="threats reported", raised_by="police")
            messages.append(command(hold))
        # Hostile records on the same partition, between the withdrawal and the booking.
        messages += [(topics.COMMANDS, case_id, None), (topics.COMMANDS, case_id, b"\xff\xfe not json")]
        messages.append(booking(case_id, i))
    await system.publish(messages)

    # Every booking behind a withdrawal or hold is refused while consent has not decided; the sharing ones go.
    waiting = [c for c, _, _ in (*stopped, *rejected, *held)]
    answers = await system.read_until(
        topics.SCHEDULING,
        lambda ms: (
            len([m for m in of_type(ms, "rj.command.rejected") if m["subject"] in waiting]) >= len(waiting)
            and len([m for m in of_type(ms, "rj.meeting.booked")]) >= SHARING
        ),
        timeout_s=90,
    )
    refused = {m["subject"]: m["data"]["reason"] for m in of_type(answers, "rj.command.rejected")}
    assert set(refused) == set(waiting)
    assert all("awaiting the consent service's decision" in r for r in refused.values()), refused
    assert {m["subject"] for m in of_type(answers, "rj.meeting.booked")} == {c for c, _, _ in shared}

    # Consent is back: it decides each withdrawal and hold in turn.
    system.start("consent")
    closed = await system.read_until(
        topics.SCHEDULING,
        lambda ms: len(of_type(ms, "rj.case.closed")) >= STOPPED,
        timeout_s=90,
    )
    assert {m["subject"] for m in of_type(closed, "rj.case.closed")} == {c for c, _, _ in stopped}
    for case_id, _, _ in rejected:
        (reason,) = [m["data"]["reason"] for m in await facts(system, topics.CONSENT, case_id, "rj.command.rejected")]
        assert "must come from" in reason
    await facts(system, topics.CONSENT, held[-1][0], "rj.case.held")

    # A rejected withdrawal stopped nothing: the same booking, sent again, goes ahead. A held case books nothing.
    pending_lifted = [c for c, _, _ in rejected]

    async def lifted() -> bool:
        sql = "SELECT count(*) FROM scheduling.cases WHERE key = ANY($1::text[]) AND state->'stops_pending' = '[]'"
        return await system.fetchval(sql, pending_lifted) == len(pending_lifted)

    await system.wait_for(lifted, what="scheduling to hear consent's rejections")
    again = [booking(case[0], i, "M2") for i, case in enumerate(cases) if case in rejected]
    await system.publish(again + [booking(case_id, CASES + i, "M2") for i, (case_id, _, _) in enumerate(held)])
    everything = await system.read_until(
        topics.SCHEDULING,
        lambda ms: (
            len(of_type(ms, "rj.meeting.booked")) >= SHARING + REJECTED
            and len([m for m in of_type(ms, "rj.command.rejected") if m["subject"] in {c for c, _, _ in held}])
            >= 2 * HELD
        ),
        timeout_s=60,
        settle_s=1.0,
    )
    booked = [m for m in of_type(everything, "rj.meeting.booked")]
    assert {m["subject"] for m in booked} == {c for c, _, _ in (*shared, *rejected)}
    assert not {m["subject"] for m in booked} & {c for c, _, _ in (*stopped, *held)}
    held_ids = {c for c, _, _ in held}
    on_hold = [m for m in of_type(everything, "rj.command.rejected") if m["subject"] in held_ids]
    assert sum("the case is on hold" in m["data"]["reason"] for m in on_hold) == HELD
    # Every fact about a case, on every topic, says whose case it is (the runtime's answer to a repeated command,
    # ``rj.command.already-handled``, goes to its sender and does not: it knows the command, not the case; nor does
    # the consent service's rejection, which carries the force its command came with, here none, so that it reads
    # the same whether or not the case exists).
    ids = {c for c, _, _ in cases}
    for topic in (topics.CONSENT, topics.SCHEDULING):
        about = [m for m in await system.read_until(topic, lambda ms: True, settle_s=0.5) if m["subject"] in ids]
        answers = {"rj.command.already-handled"} | ({"rj.command.rejected"} if topic == topics.CONSENT else set())
        missing = sorted({m["type"] for m in about if m.get("force") != UPSTREAM_SOURCE and m["type"] not in answers})
        assert about and not missing, f"{topic}: {missing} without the case's force"
    # No booking anywhere came after its case's withdrawal was accepted, and nothing is left pending.
    sql = "SELECT count(*) FROM scheduling.cases WHERE state->'stops_pending' <> '[]'"
    assert await system.fetchval(sql) == 0


async def test_rule_2_with_scheduling_late_on_rj_commands_consents_verdicts_overtake_and_nothing_is_left_pending(
    system: System,
) -> None:
    """The other way round: scheduling is down while consent decides every withdrawal, so consent's verdicts
    (rejections, withdrawals) are on ``rj.consent`` before scheduling reads the commands they answer. However
    scheduling then interleaves the two topics, a rejected withdrawal stops nothing, an accepted one closes its
    case with nothing booked, and no case is left pending."""
    n = 40
    for name in ("referral", "consent", "scheduling"):
        system.start(name)
    await system.publish(facilitators("F-ANN"))
    await facilitators_known(system, "F-ANN")
    cases = await referred_cases(system, "WM/2026/9", n)
    await system.publish([m for case_id, v, o in cases for m in prepare(case_id, [v, o], ["F-ANN"])])

    async def all_ready() -> bool:
        return await system.fetchval("SELECT count(*) FROM scheduling.cases WHERE state->>'ready' = 'true'") == n

    await system.wait_for(all_ready, what="scheduling to hear every case is ready")
    system.service("scheduling").stop()
    messages: list[tuple[str, str | None, bytes]] = []
    for i, (case_id, victim, offender) in enumerate(cases):
        if i % 2:
            messages.append((topics.COMMANDS, case_id, withdrawal(case_id, victim)))
        else:
            messages.append((topics.COMMANDS, case_id, withdrawal(case_id, victim, by=offender)))  # rejected
        messages.append(booking(case_id, i))
    await system.publish(messages)
    await system.read_until(
        topics.CONSENT,
        lambda ms: (
            len([m for m in of_type(ms, "rj.command.rejected") if m["data"]["command_type"] == "rj.consent.withdraw"])
            >= n // 2
            and len(of_type(ms, "rj.case.withdrawn")) >= n // 2
        ),
        timeout_s=60,
    )
    system.start("scheduling")  # now the verdicts are there before the commands they answer
    withdrawn = {c for i, (c, _, _) in enumerate(cases) if i % 2}
    closed = await system.read_until(
        topics.SCHEDULING, lambda ms: len(of_type(ms, "rj.case.closed")) >= len(withdrawn), timeout_s=90, settle_s=1.0
    )
    assert {m["subject"] for m in of_type(closed, "rj.case.closed")} == withdrawn
    assert not {m["subject"] for m in of_type(closed, "rj.meeting.booked")} & withdrawn

    withdrawals = [c["id"] for _, _, value in messages if (c := json.loads(value))["type"] == "rj.consent.withdraw"]

    async def nothing_pending() -> bool:
        """Every withdrawal read by scheduling (a case whose withdrawal is not read yet has nothing pending *yet*),
        and none left pending."""
        sql = """SELECT (SELECT count(*) FROM scheduling.cases WHERE state->'stops_pending' <> '[]'),
                        (SELECT count(*) FROM scheduling.inbox WHERE event_id = ANY($1::text[]))"""
        [row] = await system.fetch(sql, withdrawals)
        return tuple(row) == (0, len(withdrawals))

    await system.wait_for(nothing_pending, what="no case left pending")
    # A booking sent now on a case whose withdrawal was rejected goes ahead.
    kept = [(i, c) for i, (c, _, _) in enumerate(cases) if c not in withdrawn]
    await system.publish([booking(c, n + i, "M2") for i, c in kept])
    booked = await system.read_until(
        topics.SCHEDULING,
        lambda ms: (
            {m["subject"] for m in of_type(ms, "rj.meeting.booked") if m["data"]["meeting_id"] == "M2"}
            == {c for _, c in kept}
        ),
        timeout_s=60,
    )
    assert not {m["subject"] for m in of_type(booked, "rj.meeting.booked")} & withdrawn
