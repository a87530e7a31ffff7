"""Reoffending after a case ended, pure (DOMAIN stage 7): the evaluation figure's source.

A case ends either at screening (declined: RJ never began) or, once accepted, by its closure (completed, or one
of the reasons it did not proceed). Its offenders are remembered with the case (``EndedCase``); a later
``crime.outcome-recorded`` from the same force, about another crime, naming one of them is a reoffence of that
case: one ``rj.case.reoffence-recorded`` per (case, later crime), however often upstream repeats itself.

Only a finding against the offender counts (``is_finding_against``), and only for an offence after the ended case's
own crime. An outcome can be read before the closure it follows (the two travel on different topics): when a case
ends, the outcomes already on file naming its offenders are looked at too (``app``), so none is missed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from schemas.common import SYSTEM_REFERRAL
from schemas.referral import CaseDeclined, DeclineReason, EarlierCaseEnded, ReoffenceRecorded
from schemas.scheduling import ClosureReason
from schemas.upstream import CrimeOutcomeRecorded, CrimeRecorded, Outcome
from services.referral.domain import CaseStatus, CrimeFile
from services.runtime.calendar import LONDON
from services.runtime.decision import Emit


@dataclass(frozen=True)
class EndedCase:
    case_id: str
    force: str
    crime_reference: str
    ended_as: EarlierCaseEnded
    ended_at: datetime
    offender_ids: frozenset[str]
    closure_reason: ClosureReason | None = None
    decline_reason: DeclineReason | None = None
    reoffences: frozenset[str] = frozenset()  # the later crime references already recorded against it
    crime_at: datetime | None = None  # when the case's own crime happened (occurred, else reported); None: unknown


def crime_at_of(file: CrimeFile) -> datetime | None:
    """When a file's crime happened, as well as we know: occurred, else reported."""
    return (file.crime.occurred_at or file.crime.reported_at) if file.crime is not None else None


def case_ending(
    before: CrimeFile,
    after: CrimeFile,
    emits: list[Emit],
    closure: tuple[ClosureReason, datetime] | None = None,
) -> EndedCase | None:
    """The case that a decision on a file ended, if it ended one: a closure of its accepted case (``closure``:
    the reason and when), or a decline at screening. The offenders remembered are those who took part (a
    closed case) or every offender upstream named (a case screened out)."""
    declined = next((e.data for e in emits if isinstance(e.data, CaseDeclined)), None)
    if declined is not None:
        return EndedCase(
            case_id=declined.case_id,
            force=after.force,
            crime_reference=after.crime_reference,
            ended_as=EarlierCaseEnded.screened_out,
            ended_at=declined.decided_at,
            offender_ids=frozenset(o.offender.person_id for o in after.outcomes),
            decline_reason=declined.reason,
            crime_at=crime_at_of(after),
        )
    if closure is None or before.status is not CaseStatus.accepted:
        return None
    if after.status is CaseStatus.accepted and after.referral == before.referral:
        return None  # not this file's current case: nothing closed here
    reason, closed_at = closure
    return EndedCase(
        case_id=before.case_id,
        force=before.force,
        crime_reference=before.crime_reference,
        ended_as=EarlierCaseEnded.closed,
        ended_at=closed_at,
        offender_ids=frozenset(o.offender.person_id for o in before.admitted),
        closure_reason=reason,
        crime_at=crime_at_of(before),
    )


def rj_completed(case: EndedCase) -> bool | None:
    """Whether the case's RJ was completed: false for a case screened out (it never began); for a closed case, from
    its closure reason, or None (unknown) when that was never kept (migration 007's backfill)."""
    if case.ended_as is EarlierCaseEnded.screened_out:
        return False
    return None if case.closure_reason is None else case.closure_reason is ClosureReason.completed


def offence_date_of(outcome: CrimeOutcomeRecorded, crime: CrimeRecorded | None, now: datetime) -> datetime:
    """When the later offence happened, as well as we know: the crime's ``occurred_at``, else its
    ``reported_at``, else the outcome's ``recorded_at``, else when we learnt of it."""
    if crime is not None:
        return crime.occurred_at or crime.reported_at
    return outcome.recorded_at or now


def is_finding_against(outcome: CrimeOutcomeRecorded) -> bool:
    """Whether an outcome finds against the offender, so that it counts as reoffending: a conviction always; a
    caution or community resolution (each needs an admission) unless the record says they deny it; a charge (an
    accusation, not a finding) only with an admission; no further action never."""
    match outcome.outcome:
        case Outcome.convicted:
            return True
        case Outcome.cautioned | Outcome.community_resolution:
            return outcome.admitted_responsibility is not False
        case Outcome.charged:
            return outcome.admitted_responsibility is True
        case _:
            return False


def record_reoffence(
    case: EndedCase,
    outcome: CrimeOutcomeRecorded,
    force: str,
    later_crime: CrimeRecorded | None,
    now: datetime,
) -> tuple[EndedCase, list[Emit]]:
    """A later outcome naming one of the ended case's offenders, from the same force, about another crime, that
    finds against them for an offence after the case's own crime: a reoffence, recorded once per later crime.
    Anything else changes nothing."""
    offender = outcome.offender.person_id
    if force != case.force or outcome.crime_reference == case.crime_reference:
        return case, []
    if offender not in case.offender_ids or outcome.crime_reference in case.reoffences:
        return case, []
    if not is_finding_against(outcome):
        return case, []
    committed = offence_date_of(outcome, later_crime, now)
    if case.crime_at is not None and committed <= case.crime_at:
        return case, []  # committed before (or with) the case's own crime: not a reoffence after it
    fact = ReoffenceRecorded(
        case_id=case.case_id,
        crime_reference=case.crime_reference,
        force=case.force or None,
        person_id=offender,
        later_crime_reference=outcome.crime_reference,
        offence_date=committed.astimezone(LONDON).date(),
        later_outcome=outcome.outcome,
        ended_as=case.ended_as,
        closure_reason=case.closure_reason,
        decline_reason=case.decline_reason,
        rj_completed=rj_completed(case),
        recorded_at=now,
        decided_by=SYSTEM_REFERRAL,
    )
    case = replace(case, reoffences=case.reoffences | {outcome.crime_reference})
    return case, [Emit(fact, f"reoffence:{outcome.crime_reference}")]


def record_reoffences_on_file(
    case: EndedCase, files: Sequence[CrimeFile], now: datetime
) -> tuple[EndedCase, list[Emit]]:
    """A case just ended: the outcomes already on file (read before its closure, or long before) naming its
    offenders, each weighed as if it came now."""
    emits: list[Emit] = []
    for file in files:
        for outcome in file.outcomes:
            case, more = record_reoffence(case, outcome, file.force, file.crime, now)
            emits += more
    return case, emits
