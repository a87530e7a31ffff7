"""The referral service's Faust app: upstream crime events and its own commands in, case facts out.

crime.events, rj.commands, rj.scheduling (rj.case.closed), rj.consent (rj.risk-assessment.recorded)
      ──► take_in ──► referral.crime_files, victim_clocks, support_clocks, risk_assessments, ended_cases
                                      └─► outbox ──► rj.referral
every few seconds ──► flag_overdue_information, flag_overdue_support_referrals,
                      weigh_outcomes_on_file (cases backfilled by migration 007) ──► rj.referral
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from schemas import topics
from schemas.commands import RecordVictimInformationProvided, RecordVictimSupportReferral
from schemas.consent import RiskAssessmentRecorded
from schemas.envelope import CloudEvent
from schemas.pii import monitoring_fields
from schemas.referral import (
    CaseOpened,
    Participant,
    VictimInformationDue,
    VictimInformationProvided,
    VictimSupportReferralDue,
)
from schemas.scheduling import CaseClosed
from schemas.upstream import CrimeOutcomeRecorded, CrimeRecorded, ReferralRequested
from services.referral import domain, reoffending, store
from services.referral.domain import CrimeFile, Emit
from services.runtime import metrics, privacy
from services.runtime.app import ServiceApp
from services.runtime.keystore import MONITORING_PERSON
from services.runtime.outbox import Outgoing, facts

SOURCE = "urn:rj:service:referral"

_MONITORING = tuple(sorted(monitoring_fields(Participant)))
"""A participant's fields the contract marks monitoring data: sealed under the case's monitoring key."""

TOPICS_IN = (topics.CRIME_EVENTS, topics.COMMANDS, topics.SCHEDULING, topics.CONSENT)

UPSTREAM = (CrimeRecorded, CrimeOutcomeRecorded, ReferralRequested)
CONSUMES = frozenset(
    {CrimeRecorded.event_type, CrimeOutcomeRecorded.event_type, ReferralRequested.event_type}
    | {RecordVictimInformationProvided.event_type, RecordVictimSupportReferral.event_type, CaseClosed.event_type}
    | {RiskAssessmentRecorded.event_type}  # rj.consent: the sensitive-case gate on RJ information
)


def publish(
    emits: list[Emit], case_id: str, cause: CloudEvent[Any] | None, now: datetime, force: str
) -> list[Outgoing]:
    return facts(topics.REFERRAL, SOURCE, case_id, emits, cause=cause, now=now, force=force or None)


def force_of(event: CloudEvent[Any]) -> str:
    """The force an upstream event is about: its crime system's CloudEvents ``source`` (see ``case_id_for``)."""
    return event.source


async def take_in(conn: asyncpg.Connection, events: Sequence[CloudEvent[Any]]) -> list[Outgoing]:
    """Apply a batch of new upstream events and commands; return what to publish."""
    now = datetime.now(UTC)
    out: list[Outgoing] = []
    about_files = [e for e in events if isinstance(e.data, (*UPSTREAM, CaseClosed))]
    if about_files:
        out += await _take_in_files(conn, about_files, now)
    assessed = [e.data for e in events if isinstance(e.data, RiskAssessmentRecorded)]
    if assessed:
        await _take_in_assessments(conn, assessed)
    for event in events:
        if isinstance(event.data, RecordVictimInformationProvided):
            out += await _record_information_provided(conn, event, event.data, now)
        elif isinstance(event.data, RecordVictimSupportReferral):
            command = event.data
            support = await store.lock_support_clock(conn, command.case_id, command.person_id)
            support, emits = domain.record_support_referral(support, command, event.id, now)
            if support is not None:
                await store.save_support_clocks(conn, [support])
            out += publish(emits, command.case_id, event, now, support.force if support else "")
    return out


async def _take_in_files(
    conn: asyncpg.Connection, about_files: Sequence[CloudEvent[Any]], now: datetime
) -> list[Outgoing]:
    out: list[Outgoing] = []
    keys = await _file_keys(conn, about_files)
    files = await store.lock_crime_files(conn, list(keys.values()))
    new_clocks, new_support_clocks, ended = [], [], []
    for event in about_files:
        if event.id not in keys:
            continue  # the closure of a case no file knows (not ours to reopen)
        key = keys[event.id]
        before = files[key]
        closure = None
        if isinstance(event.data, CaseClosed):
            closure = (event.data.reason, event.data.closed_at)
            files[key], emits = domain.record_case_closed(before, event.data.case_id, event.data.closed_at, now)
        elif isinstance(event.data, CrimeRecorded):
            files[key], emits = domain.record_crime(before, event.data, now)
        elif isinstance(event.data, CrimeOutcomeRecorded):
            files[key], emits = domain.record_outcome(before, event.data, now)
        else:
            files[key], emits = domain.record_request(before, event.data, now)
        new_clocks += [domain.clock_from(e.data, key[0]) for e in emits if isinstance(e.data, VictimInformationDue)]
        new_support_clocks += [
            domain.support_clock_from(e.data, key[0]) for e in emits if isinstance(e.data, VictimSupportReferralDue)
        ]
        if (ending := reoffending.case_ending(before, files[key], emits, closure)) is not None:
            ended.append(ending)
        # A case opened now is told with its people's monitoring data, sealed under the case's monitoring key: made
        # with the keys the file is sealed under next, not in a round trip of its own when the facts are sealed.
        privacy.batch().expect(
            (MONITORING_PERSON, e.data.case_id)
            for e in emits
            if isinstance(e.data, CaseOpened)
            and any(getattr(p, name) is not None for p in e.data.participants for name in _MONITORING)
        )
        out += publish(emits, files[key].case_id, event, now, key[0])
    outcomes = [e for e in about_files if isinstance(e.data, CrimeOutcomeRecorded) and e.id in keys]
    # Before either path reads the reoffending index: a closure and an outcome about the same offender, committed
    # at once by two replicas, would each miss the other's write.
    await store.lock_offenders(
        conn,
        [(c.force, person) for c in ended for person in c.offender_ids]
        + [(force_of(e), e.data.offender.person_id) for e in outcomes],
    )
    await store.save_crime_files(conn, list(files.values()))
    await store.index_file_offenders(conn, [files[keys[e.id]] for e in outcomes])
    await store.insert_clocks(conn, new_clocks)
    await store.insert_support_clocks(conn, new_support_clocks)
    await store.insert_ended_cases(conn, ended)
    if ended:
        out += await _reoffences_on_file(conn, [c.case_id for c in ended], now)
    if outcomes:
        out += await _take_in_reoffences(conn, outcomes, {e.id: files[keys[e.id]] for e in outcomes}, now)
    return out


async def _take_in_reoffences(
    conn: asyncpg.Connection, outcomes: Sequence[CloudEvent[Any]], files: dict[str, CrimeFile], now: datetime
) -> list[Outgoing]:
    """Each outcome naming an offender of an ended case of the same force, about another crime: a reoffence."""
    out: list[Outgoing] = []
    ended = {
        c.case_id: c
        for c in await store.lock_ended_cases_of(conn, [(force_of(e), e.data.offender.person_id) for e in outcomes])
    }
    changed: set[str] = set()
    for event in outcomes:
        for case_id, case in ended.items():
            case, emits = reoffending.record_reoffence(case, event.data, force_of(event), files[event.id].crime, now)
            if emits:
                ended[case_id], changed = case, changed | {case_id}
                out += publish(emits, case_id, event, now, case.force)
    await store.save_reoffences(conn, [ended[c] for c in sorted(changed)])
    return out


async def _reoffences_on_file(conn: asyncpg.Connection, case_ids: Sequence[str], now: datetime) -> list[Outgoing]:
    """Cases that just ended: outcomes already on file naming their offenders (read before the closure, which
    travels on another topic) are reoffences too, if they find against them for a later offence."""
    return await _weigh_on_file(conn, await store.lock_ended_cases(conn, case_ids), now)


async def _weigh_on_file(
    conn: asyncpg.Connection, cases: Sequence[reoffending.EndedCase], now: datetime
) -> list[Outgoing]:
    out: list[Outgoing] = []
    files = await store.files_naming(conn, [(c.force, person) for c in cases for person in c.offender_ids])
    changed = []
    for case in cases:
        case, emits = reoffending.record_reoffences_on_file(case, files, now)
        if emits:
            changed.append(case)
            out += publish(emits, case.case_id, None, now, case.force)
    await store.save_reoffences(conn, changed)
    return out


async def weigh_outcomes_on_file(conn: asyncpg.Connection) -> list[Outgoing]:
    """The cases migration 007 backfilled ended before the service followed reoffending, so outcomes on file
    then were never weighed against them: weigh them once, a batch a sweep (a reoffence is recorded once per
    (case, later crime) whatever runs twice). Outcomes arriving since find these cases in the index themselves."""
    cases = await store.lock_ended_cases_to_weigh(conn)
    if not cases:
        return []
    out = await _weigh_on_file(conn, cases, datetime.now(UTC))
    await store.mark_on_file_weighed(conn, [c.case_id for c in cases])
    return out


async def _take_in_assessments(conn: asyncpg.Connection, assessed: Sequence[RiskAssessmentRecorded]) -> None:
    await store.save_assessments(
        conn, [domain.RiskAssessment(a.case_id, a.assessed_at, a.safe_to_proceed) for a in assessed]
    )


async def _record_information_provided(
    conn: asyncpg.Connection, event: CloudEvent[Any], command: RecordVictimInformationProvided, now: datetime
) -> list[Outgoing]:
    clock = await store.lock_clock(conn, command.case_id, command.person_id)
    sensitivity: list[domain.SensitivityReason] = []
    assessments: list[domain.RiskAssessment] = []
    if clock is not None and clock.provided_at is None:
        file = await store.read_crime_file(conn, clock.force, clock.crime_reference)
        sensitivity = domain.sensitivity_reasons(file) if file is not None and file.crime is not None else []
        assessments = await store.read_assessments(conn, clock.case_id) if sensitivity else []
    clock, emits = domain.record_information_provided(
        clock, command, event.id, now, sensitivity=sensitivity, assessments=assessments
    )
    if clock is not None:
        await store.save_clocks(conn, [clock])
    if any(isinstance(e.data, VictimInformationProvided) and e.data.before_contact_allowed for e in emits):
        metrics.RJ_INFORMATION_BEFORE_CONTACT_ALLOWED.inc()
    return publish(emits, command.case_id, event, now, clock.force if clock else "")


async def _file_keys(conn: asyncpg.Connection, events: Sequence[CloudEvent[Any]]) -> dict[str, tuple[str, str]]:
    """The file (force, crime reference) each event is about: an upstream event's from its source and reference,
    a closure's from the case id (absent when no file's current case is that one)."""
    closed = [e.data.case_id for e in events if isinstance(e.data, CaseClosed)]
    by_case = await store.files_of_cases(conn, closed) if closed else {}
    keys = {}
    for event in events:
        if isinstance(event.data, CaseClosed):
            if event.data.case_id in by_case:
                keys[event.id] = by_case[event.data.case_id]
        else:
            keys[event.id] = (force_of(event), event.data.crime_reference)
    return keys


async def flag_overdue_information(conn: asyncpg.Connection) -> list[Outgoing]:
    """Flag every Victims' Code deadline that has passed unmet."""
    now = datetime.now(UTC)
    flagged, out = [], []
    for clock in await store.lock_overdue_clocks(conn, now):
        clock, emits = domain.flag_breach(clock, now)
        flagged.append(clock)
        out += publish(emits, clock.case_id, None, now, clock.force)
    await store.save_clocks(conn, flagged)
    due, overdue = await store.count_open_clocks(conn)
    metrics.VICTIMS_CODE_DEADLINES.labels(state="due").set(due)
    metrics.VICTIMS_CODE_DEADLINES.labels(state="overdue").set(overdue)
    return out


async def flag_overdue_support_referrals(conn: asyncpg.Connection) -> list[Outgoing]:
    """Flag every support-referral deadline (the Victims' Code's second clock) that has passed unmet."""
    now = datetime.now(UTC)
    flagged, out = [], []
    for clock in await store.lock_overdue_support_clocks(conn, now):
        clock, emits = domain.flag_support_breach(clock, now)
        flagged.append(clock)
        out += publish(emits, clock.case_id, None, now, clock.force)
    await store.save_support_clocks(conn, flagged)
    return out


def build(service: ServiceApp | None = None) -> ServiceApp:
    service = service or ServiceApp("referral", migrations="services.referral.migrations")
    # rj.scheduling: a case's closure, after which a new request refers the crime again as a new case (and
    # reoffending is followed). rj.consent: risk assessments, which gate RJ information on a sensitive case.
    service.consume(list(TOPICS_IN), consumes=CONSUMES, handler=take_in)
    service.every(service.settings.deadline_sweep_interval_s, flag_overdue_information, name="victims_code_sweep")
    service.every(
        service.settings.deadline_sweep_interval_s, flag_overdue_support_referrals, name="victim_support_sweep"
    )
    service.every(service.settings.deadline_sweep_interval_s, weigh_outcomes_on_file, name="reoffences_on_file")
    return service
