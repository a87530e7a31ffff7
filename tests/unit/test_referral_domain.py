"""Referral decisions, pure: opening, screening and the Victims' Code clock, in any order of arrival."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from demo import samples
from schemas.commands import CommandRejected, RecordVictimInformationProvided
from schemas.common import Actor
from schemas.referral import (
    CaseAccepted,
    CaseDeclined,
    CaseOpened,
    OffenderJoined,
    VictimInformationDue,
    VictimInformationOverdue,
    case_id_for,
)
from schemas.upstream import CrimeOutcomeRecorded, CrimeRecorded, Requester, RiskFlag, Victim
from services.referral import domain
from services.referral.domain import CaseStatus, CrimeFile
from services.runtime.calendar import add_working_days, deadline_after, is_working_day

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
REF = "WM/2026/000123"


def apply(file: CrimeFile, payload: object) -> tuple[CrimeFile, list[domain.Emit]]:
    if isinstance(payload, CrimeRecorded):
        return domain.record_crime(file, payload, NOW)
    if isinstance(payload, CrimeOutcomeRecorded):
        return domain.record_outcome(file, payload, NOW)
    return domain.record_request(file, payload, NOW)  # type: ignore[arg-type]


def run(*payloads: object) -> tuple[CrimeFile, list[domain.Emit]]:
    file, emitted = CrimeFile(REF), []
    for payload in payloads:
        file, emits = apply(file, payload)
        emitted += emits
    return file, emitted


def types(emits: list[domain.Emit]) -> list[str]:
    return [e.data.event_type for e in emits]


@pytest.mark.parametrize("order", list(itertools.permutations(range(2))))
def test_a_recorded_crime_and_an_admitted_outcome_open_and_accept_one_case_in_either_order(
    order: tuple[int, ...],
) -> None:
    payloads = [samples.crime_recorded(REF), samples.outcome_recorded(REF)]
    file, emits = run(*[payloads[i] for i in order])
    assert file.status is CaseStatus.accepted
    assert types(emits).count("rj.case.opened") == 1
    assert types(emits).count("rj.case.accepted") == 1


WMP, WARKS = "urn:police:west-mercia:rms", "urn:police:warwickshire:athena"


def test_the_case_id_is_derived_from_the_force_and_the_crime_reference() -> None:
    assert case_id_for(WMP, REF) == case_id_for(WMP, f"  {REF} ")
    assert case_id_for(WMP, REF) != case_id_for(WMP, "WM/2026/000124")
    assert case_id_for(WMP, REF) != case_id_for(WARKS, REF), "two forces' crimes with one reference: two cases"
    assert case_id_for(WMP, REF, 2) not in (case_id_for(WMP, REF), case_id_for(WARKS, REF, 2))
    assert CrimeFile(REF, force=WMP).case_id == case_id_for(WMP, REF)
    assert CrimeFile(REF, force=WMP, referral=2).case_id == case_id_for(WMP, REF, 2)
    # The rule, written out for the teams who code against it (the README gives it too):
    namespace = uuid.UUID("5d9a3c1e-7f2b-4e8a-b6c4-1a2b3c4d5e6f")
    assert case_id_for(WMP, REF) == str(uuid.uuid5(namespace, f"{WMP}\x1f{REF}"))
    assert case_id_for(WMP, REF, 3) == str(uuid.uuid5(namespace, f"{WMP}\x1f{REF}\x1f3"))
    assert case_id_for("", REF) == str(uuid.uuid5(namespace, REF)), "cases opened before forces keep their ids"


def test_no_case_opens_without_an_identified_victim() -> None:
    file, emits = run(
        samples.crime_recorded(REF, victims=[]), samples.outcome_recorded(REF), samples.referral_requested(REF)
    )
    assert file.status is CaseStatus.no_case
    assert emits == []


def test_no_case_opens_for_an_offender_who_denies_responsibility_without_a_request() -> None:
    file, emits = run(samples.crime_recorded(REF), samples.outcome_recorded(REF, admitted=False))
    assert file.status is CaseStatus.no_case
    assert types(emits) == ["rj.victim-information.due", "rj.victim-support.referral-due"]


def test_a_request_opens_the_case_and_screening_waits_for_the_offender() -> None:
    file, emits = run(samples.crime_recorded(REF), samples.referral_requested(REF))
    assert file.status is CaseStatus.awaiting_offender
    assert types(emits) == ["rj.victim-information.due", "rj.victim-support.referral-due", "rj.case.opened"]
    opened = emits[2].data
    assert isinstance(opened, CaseOpened)
    assert [r.route for r in opened.routes] == ["request"]

    file, emits = apply(file, samples.outcome_recorded(REF, admitted=False))
    assert file.status is CaseStatus.declined
    (declined,) = [e.data for e in emits]
    assert isinstance(declined, CaseDeclined)
    assert declined.reason == "offender_denies_responsibility"


@pytest.mark.parametrize(
    ("flags", "victim", "reasons"),
    [
        ([RiskFlag.domestic_abuse], samples.victim("V1"), ["domestic_abuse"]),
        ([RiskFlag.sexual_offence, RiskFlag.hate_crime], samples.victim("V1"), ["sexual_offence", "hate_crime"]),
        ([], samples.victim("V1", born=date(2010, 1, 1)), ["victim_under_18"]),
        ([], samples.victim("V1", vulnerable=True), ["victim_vulnerable"]),
        ([], samples.victim("V1", born=date(2008, 11, 20)), []),  # eighteen five days before reporting
    ],
)
def test_sensitive_cases_need_a_specialist_and_a_risk_assessment(
    flags: list[RiskFlag], victim: Victim, reasons: list[str]
) -> None:
    crime = samples.crime_recorded(REF, victims=[victim], reported_at=datetime(2026, 11, 25, 9, tzinfo=UTC))
    file, emits = run(crime, samples.outcome_recorded(REF, risk_flags=flags))
    (accepted,) = [e.data for e in emits if isinstance(e.data, CaseAccepted)]
    assert accepted.sensitivity_reasons == reasons
    assert accepted.specialist_required is bool(reasons)
    assert accepted.risk_assessment_required is bool(reasons)


def test_accepted_cases_name_every_required_participant() -> None:
    _, emits = run(samples.crime_recorded(REF), samples.outcome_recorded(REF, in_custody=True))
    (accepted,) = [e.data for e in emits if isinstance(e.data, CaseAccepted)]
    roles = {p.role: p for p in accepted.participants}
    assert roles["victim"].required and roles["offender"].required
    assert roles["offender"].in_custody
    # ...and no more: who they are and how to reach them travel, sealed, on rj.case.opened only (whether they are
    # under 18, whom they take part for and an interpreter's language are what consent and scheduling act on).
    fields = {"person_id", "role", "required", "in_custody", "under_18", "supports", "language"}
    assert set(type(accepted.participants[0]).model_fields) == fields
    (opened,) = [e.data for e in emits if isinstance(e.data, CaseOpened)]
    assert {p.role: p for p in opened.participants}["offender"].custody_location == "HMP Hewell"


def test_a_victim_or_offender_under_18_when_the_case_is_accepted_is_marked_so() -> None:
    """A parent or guardian's consent will be needed as well as theirs (the consent service's readiness)."""
    crime = samples.crime_recorded(REF, victims=[samples.victim("V1", born=date(2010, 1, 1)), samples.victim("V2")])
    _, emits = run(crime, samples.outcome_recorded(REF))
    (accepted,) = [e.data for e in emits if isinstance(e.data, CaseAccepted)]
    under_18 = {p.person_id: p.under_18 for p in accepted.participants}
    assert under_18 == {"V1": True, "V2": False, f"O-{REF}": False}


def test_a_later_outcome_does_not_rescreen_a_settled_case() -> None:
    file, _ = run(samples.crime_recorded(REF), samples.outcome_recorded(REF))
    file, emits = apply(file, samples.outcome_recorded(REF, admitted=False))
    assert file.status is CaseStatus.accepted
    assert emits == []


def test_an_outcome_older_than_the_one_already_known_does_not_replace_it() -> None:
    newer = samples.outcome_recorded(REF)
    older = samples.outcome_recorded(REF, admitted=False).model_copy(
        update={"recorded_at": newer.recorded_at - timedelta(days=1)}  # type: ignore[operator]
    )
    file, _ = run(newer)
    file, _ = apply(file, older)
    assert file.outcome == newer
    file, emits = apply(file, samples.crime_recorded(REF))
    assert file.status is CaseStatus.accepted


def test_a_second_victim_added_by_an_amended_record_gets_their_own_clock() -> None:
    file, first = run(samples.crime_recorded(REF, victims=[samples.victim("V1")]))
    file, second = apply(file, samples.crime_recorded(REF, victims=[samples.victim("V1"), samples.victim("V2")]))
    clocks = [e.data for e in first + second if isinstance(e.data, VictimInformationDue)]
    assert [c.person_id for c in clocks] == ["V1", "V2"]


upstream_payloads = st.lists(
    st.sampled_from(["crime", "admitted", "denied", "request", "flagged"]), min_size=1, max_size=8
)


@settings(max_examples=200, deadline=None)
@given(upstream_payloads)
def test_any_order_and_any_repeats_open_at_most_one_case_and_screen_it_at_most_once(kinds: list[str]) -> None:
    make = {
        "crime": lambda: samples.crime_recorded(REF),
        "admitted": lambda: samples.outcome_recorded(REF),
        "denied": lambda: samples.outcome_recorded(REF, admitted=False),
        "request": lambda: samples.referral_requested(REF),
        "flagged": lambda: samples.outcome_recorded(REF, risk_flags=[RiskFlag.hate_crime]),
    }
    payloads = [make[k]() for k in kinds]
    file, emits = run(*payloads)
    assert types(emits).count("rj.case.opened") <= 1
    assert types(emits).count("rj.case.accepted") + types(emits).count("rj.case.declined") <= 1
    assert types(emits).count("rj.victim-information.due") == (1 if "crime" in kinds else 0)
    outcomes = [k for k in kinds if k in ("admitted", "denied", "flagged")]
    if "crime" in kinds and ("request" in kinds or (outcomes and outcomes[-1] != "denied")):
        assert file.is_open
    # Replaying everything again (re-sent upstream, perhaps under new event ids) decides nothing new.
    again = file
    for payload in payloads:
        again, more = apply(again, payload)
        assert more == []
    assert again.status is file.status


# --- the Victims' Code calendar ---------------------------------------------------------------


def test_weekends_and_england_and_wales_bank_holidays_are_not_working_days() -> None:
    assert not is_working_day(date(2025, 12, 25))  # Christmas Day
    assert not is_working_day(date(2025, 12, 26))  # Boxing Day
    assert not is_working_day(date(2026, 8, 31))  # Summer bank holiday (England and Wales, not Scotland)
    assert not is_working_day(date(2026, 11, 28))  # a Saturday
    assert is_working_day(date(2026, 11, 25))


@pytest.mark.parametrize(
    ("start", "days", "due"),
    [
        (date(2026, 11, 25), 5, date(2026, 12, 2)),  # Wednesday: across one weekend
        (date(2025, 12, 19), 5, date(2025, 12, 30)),  # Friday: a weekend, Christmas and Boxing Day
        (date(2025, 12, 24), 1, date(2025, 12, 29)),  # Christmas Eve, enhanced rights
        (date(2026, 4, 2), 1, date(2026, 4, 7)),  # Maundy Thursday: Good Friday, weekend, Easter Monday
        (date(2026, 11, 28), 1, date(2026, 11, 30)),  # reported on a Saturday
    ],
)
def test_working_days_are_counted_from_the_day_after_reporting(start: date, days: int, due: date) -> None:
    assert add_working_days(start, days) == due


def test_a_deadline_ends_at_midnight_uk_time_and_reporting_late_in_the_evening_counts_as_that_uk_day() -> None:
    # 23:30 UTC on 30 June is already 1 July in London (BST).
    due_date, due_by = deadline_after(datetime(2026, 6, 30, 23, 30, tzinfo=UTC), 1)
    assert due_date == date(2026, 7, 2)
    assert due_by == datetime(2026, 7, 2, 23, 0, tzinfo=UTC)


def test_enhanced_rights_shorten_the_deadline_to_one_working_day() -> None:
    crime = samples.crime_recorded(
        REF,
        reported_at=datetime(2026, 11, 27, 10, tzinfo=UTC),  # a Friday
        victims=[samples.victim("V1", enhanced=True), samples.victim("V2")],
    )
    _, emits = run(crime)
    due = {e.data.person_id: e.data for e in emits if isinstance(e.data, VictimInformationDue)}
    assert due["V1"].due_date == date(2026, 11, 30) and due["V1"].working_days == 1
    assert due["V2"].due_date == date(2026, 12, 4) and due["V2"].working_days == 5


def clock(**kw: object) -> domain.VictimClock:
    base = dict(
        crime_reference=REF,
        person_id="V1",
        reported_at=datetime(2026, 11, 20, tzinfo=UTC),
        due_by=datetime(2026, 11, 28, tzinfo=UTC),
        enhanced_rights=False,
        force=WMP,
        case_id=case_id_for(WMP, REF),
    )
    return domain.VictimClock(**{**base, **kw})  # type: ignore[arg-type]


def test_a_deadline_passed_unmet_is_flagged_once() -> None:
    flagged, emits = domain.flag_breach(clock(), datetime(2026, 11, 28, 0, 1, tzinfo=UTC))
    assert [type(e.data) for e in emits] == [VictimInformationOverdue]
    assert domain.flag_breach(flagged, datetime(2026, 11, 29, tzinfo=UTC))[1] == []


def test_a_deadline_not_yet_passed_or_met_is_not_a_breach() -> None:
    assert domain.flag_breach(clock(), datetime(2026, 11, 27, 23, 59, tzinfo=UTC))[1] == []
    assert domain.flag_breach(clock(provided_at=datetime(2026, 11, 21, tzinfo=UTC)), NOW)[1] == []


def provided(at: datetime) -> RecordVictimInformationProvided:
    return RecordVictimInformationProvided(
        case_id=case_id_for(WMP, REF), actor=Actor(kind="staff", id="f-1"), person_id="V1", provided_at=at
    )


def test_recording_information_given_stops_the_clock_and_a_repeat_changes_nothing() -> None:
    stopped, emits = domain.record_information_provided(
        clock(), provided(datetime(2026, 11, 21, tzinfo=UTC)), "c1", NOW
    )
    assert stopped is not None and stopped.provided_at is not None
    assert emits[0].data.on_time is True  # type: ignore[attr-defined]
    assert domain.record_information_provided(stopped, provided(NOW), "c2", NOW)[1] == []


def test_information_recorded_for_someone_with_no_clock_is_rejected_with_the_reason() -> None:
    _, emits = domain.record_information_provided(None, provided(NOW), "c1", NOW)
    (rejected,) = [e.data for e in emits]
    assert isinstance(rejected, CommandRejected)
    assert "no Victims' Code clock" in rejected.reason


# --- a closed case referred again ----------------------------------------------------------------


def test_a_closed_case_is_referred_again_as_a_new_case_by_a_new_request() -> None:
    file, _ = run(samples.crime_recorded(REF), samples.outcome_recorded(REF))
    first = file.case_id
    assert file.status is CaseStatus.accepted
    # A closure of some other case (an earlier referral's, say) changes nothing.
    closed_at = NOW
    assert domain.record_case_closed(file, "another-case", closed_at, NOW) == (file, [])
    file, emits = domain.record_case_closed(file, first, closed_at, NOW)
    assert file.status is CaseStatus.closed and emits == []
    # Upstream corrections after the closure open nothing.
    file, emits = apply(file, samples.outcome_recorded(REF))
    assert emits == [] and file.status is CaseStatus.closed
    request = samples.referral_requested(REF, by=Requester.victim, person_id=f"V-{REF}")
    file, emits = apply(file, request)
    assert types(emits) == ["rj.case.opened", "rj.case.accepted"]
    assert file.referral == 2 and file.case_id == case_id_for("", REF, 2) != first
    assert all(e.data.case_id == file.case_id for e in emits)  # type: ignore[attr-defined]
    opened = emits[0].data
    assert isinstance(opened, CaseOpened) and opened.referral == 2
    # The same request again is a repeat, not a third case.
    again, emits = apply(file, request)
    assert (again, emits) == (file, [])


def test_several_offenders_of_one_crime_are_participants_of_one_case() -> None:
    """Each offender has their own outcome; those who accept responsibility take part, in one case: the first
    one's opens and screens it, a later one joins it. One who denies it takes no part, and the case is declined
    only when no offender accepts it."""
    first = samples.outcome_recorded(REF, offender="O-1", risk_flags=[RiskFlag.hate_crime])
    second = samples.outcome_recorded(REF, offender="O-2")
    denies = samples.outcome_recorded(REF, offender="O-3", admitted=False)
    file, emits = run(samples.crime_recorded(REF), denies, first)
    assert file.status is CaseStatus.accepted
    (accepted,) = [e.data for e in emits if isinstance(e.data, CaseAccepted)]
    assert [p.person_id for p in accepted.participants if p.role == "offender"] == ["O-1"]
    assert accepted.sensitivity_reasons == ["hate_crime"]
    file, emits = apply(file, second)
    (joined,) = [e.data for e in emits]
    assert isinstance(joined, OffenderJoined) and joined.case_id == accepted.case_id
    assert (joined.participant.person_id, joined.participant.role, joined.participant.required) == (
        "O-2",
        "offender",
        True,
    )
    assert joined.details.name == "Offender O-2"  # personal data, sealed on the wire like rj.case.opened's
    # The same outcome again, or an older one arriving late, changes nothing; the one who denies never joins.
    for late in (second, second.model_copy(update={"recorded_at": second.recorded_at - timedelta(days=1)})):  # type: ignore[operator]
        again, emits = apply(file, late)
        assert (again, emits) == (file, [])
    assert [o.offender.person_id for o in file.admitted] == ["O-1", "O-2"]
    # Referred on a request, and nobody accepts responsibility: declined.
    file, emits = run(samples.crime_recorded(REF), samples.referral_requested(REF), denies)
    assert types(emits)[-1] == "rj.case.declined"


def test_a_request_read_before_the_closure_it_came_after_still_refers_the_crime_again() -> None:
    """The request (crime.events) and the closure (rj.scheduling) are not ordered against each other."""
    file, _ = run(samples.crime_recorded(REF), samples.outcome_recorded(REF))
    first = file.case_id
    closed_at = datetime.now(UTC)
    request = samples.referral_requested(REF).model_copy(update={"requested_at": closed_at + timedelta(days=30)})
    file, emits = apply(file, request)
    assert emits == [] and file.status is CaseStatus.accepted  # read first: the case is still open here
    file, emits = domain.record_case_closed(file, first, closed_at, NOW)
    assert types(emits) == ["rj.case.opened", "rj.case.accepted"] and file.referral == 2


def test_a_file_from_before_forces_keeps_its_case_ids() -> None:
    legacy = CrimeFile(REF, force=WMP, legacy_id=True)
    assert legacy.case_id == case_id_for("", REF)
    assert replace(legacy, referral=2).case_id == case_id_for("", REF, 2)
