"""The privacy service's pure decisions: the retention schedule, what is due, erasure plans, holds, rectification."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schemas.commands import CommandRejected
from schemas.common import Actor, Contact
from schemas.privacy import (
    ErasePerson,
    HoldKind,
    LiftRetentionHold,
    ParticipantRectified,
    PersonErased,
    PlaceRetentionHold,
    RectifyParticipant,
    RetentionHoldLifted,
)
from services.privacy.domain import (
    RECTIFIABLE,
    ClosedCase,
    ErasurePlan,
    Period,
    Person,
    RetentionSchedule,
    ScheduleError,
    lift_hold,
    person_erased,
    place_hold,
    plan_erasure,
    rectify,
    retention_due,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DPO = Actor(kind="staff", id="dpo-1")


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        ("24 months", datetime(2026, 1, 31, tzinfo=UTC), datetime(2028, 1, 31, tzinfo=UTC)),
        ("1 month", datetime(2026, 1, 31, tzinfo=UTC), datetime(2026, 2, 28, tzinfo=UTC)),
        ("1 month", datetime(2027, 12, 15, tzinfo=UTC), datetime(2028, 1, 15, tzinfo=UTC)),
        ("2 years", datetime(2024, 2, 29, tzinfo=UTC), datetime(2026, 2, 28, tzinfo=UTC)),
        ("30 days", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 31, tzinfo=UTC)),
        ("5 seconds", NOW, NOW + timedelta(seconds=5)),
        ("1 week", NOW, NOW + timedelta(days=7)),
    ],
)
def test_a_period_ends_on_the_calendar_day_it_names(period: str, start: datetime, end: datetime) -> None:
    assert Period.parse(period).after(start) == end
    assert Period.parse(period).at_least <= end - start


def test_the_most_specific_schedule_entry_applies_and_the_default_keeps_everything_24_months() -> None:
    schedule = RetentionSchedule.parse(
        '{"*": "24 months", "screened_out": "6 months", "*/offender": "12 months", "completed/victim": "36 months"}'
    )
    assert schedule.rule_for("completed", "victim") == ("completed/victim", Period(36, "month"))
    assert schedule.rule_for("screened_out", "offender") == ("screened_out", Period(6, "month"))
    assert schedule.rule_for("completed", "offender") == ("*/offender", Period(12, "month"))
    assert schedule.rule_for("withdrawn", "supporter") == ("*", Period(24, "month"))
    default = RetentionSchedule.parse('{"*": "24 months"}')
    assert default.rule_for("declined", "victim") == ("*", Period(24, "month"))
    assert default.check_every_s == 3600.0
    assert RetentionSchedule.parse('{"*": "2 seconds"}').check_every_s == 0.5


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("not json", "not JSON"),
        ('["*"]', "JSON object"),
        ('{"screened_out": "1 day"}', 'needs a "\\*" entry'),
        ('{"*": "1 day", "finished": "1 day"}', "unknown outcome 'finished'"),
        ('{"*": "1 day", "completed/judge": "1 day"}', "unknown role 'judge'"),
        ('{"*": "soon"}', "'soon' is not a period"),
        ('{"*": 5}', "5 is not a period"),
    ],
)
def test_a_schedule_that_cannot_be_read_is_refused_with_why(text: str, why: str) -> None:
    with pytest.raises(ScheduleError, match=why):
        RetentionSchedule.parse(text)


SCHEDULE = RetentionSchedule.parse('{"*": "10 days", "completed/offender": "1 day"}')
CLOSED = NOW - timedelta(days=2)


def case(*people: Person, outcome: str = "completed") -> ClosedCase:
    return ClosedCase("C1", outcome, CLOSED, people)


def test_retention_erases_each_person_when_their_role_period_ends_and_the_case_with_the_last() -> None:
    victim, offender = Person("V", "victim"), Person("O", "offender")
    due = retention_due(SCHEDULE, case(victim, offender), NOW)
    assert due is not None and not due.whole_case
    assert [(p.person_id, p.rule, p.period, p.due_at) for p in due.people] == [
        ("O", "completed/offender", "1 day", CLOSED + timedelta(days=1))
    ]
    already = Person("O", "offender", erased=True)
    assert retention_due(SCHEDULE, case(victim, already), NOW) is None, "nothing new is due"
    later = retention_due(SCHEDULE, case(victim, already), CLOSED + timedelta(days=10))
    assert later is not None and later.whole_case and [p.person_id for p in later.people] == ["V"]
    assert retention_due(SCHEDULE, case(victim, offender, outcome="withdrawn"), NOW) is None


def test_a_closed_case_with_no_one_indexed_goes_whole_when_its_period_ends() -> None:
    assert retention_due(SCHEDULE, case(), NOW) is None
    due = retention_due(SCHEDULE, case(), CLOSED + timedelta(days=10))
    assert due is not None and due.whole_case and due.people == ()


def erase(case_id: str | None = "C1") -> ErasePerson:
    return ErasePerson(person_id="V", case_id=case_id, reason="asked", actor=DPO)


def test_erasure_covers_the_known_unheld_cases_and_refuses_unknown_or_held_ones() -> None:
    assert plan_erasure(erase(None), "cmd", known_cases={"C1", "C2", "C3"}, held_cases={"C2"}, now=NOW) == (
        ErasurePlan(("C1", "C3"), ("C2",))
    )
    assert plan_erasure(erase(), "cmd", known_cases={"C1", "C2"}, held_cases=set(), now=NOW) == ErasurePlan(("C1",), ())
    unknown = plan_erasure(erase("C9"), "cmd", known_cases={"C1"}, held_cases=set(), now=NOW)
    assert not isinstance(unknown, ErasurePlan) and isinstance(unknown.data, CommandRejected)
    assert unknown.data.reason == "unknown person V on case C9" and unknown.identity == "rejected:cmd"
    held = plan_erasure(erase(), "cmd", known_cases={"C1"}, held_cases={"C1"}, now=NOW)
    assert not isinstance(held, ErasurePlan) and "retention hold: C1" in held.data.reason  # type: ignore[attr-defined]


def test_the_erasure_record_names_the_person_apart_from_person_id_so_its_grounds_outlive_their_key() -> None:
    emit = person_erased(erase(None), "cmd", ErasurePlan(("C1",), ("C2",)), 2, NOW)
    assert isinstance(emit.data, PersonErased) and emit.identity == "erased:cmd"
    assert emit.data.erased_person_id == "V" and emit.data.kept_under_hold == ["C2"] and emit.data.keys_destroyed == 2
    assert "person_id" not in PersonErased.model_fields
    assert erase(None).subject == "person:V" and erase().subject == "C1"


def test_a_hold_is_placed_once_per_kind_and_lifting_says_what_still_holds() -> None:
    place = PlaceRetentionHold(case_id="C1", kind=HoldKind.legal, reason="claim", actor=DPO)
    assert place_hold(place, "p", set(), NOW).data.event_type == "rj.retention-hold.placed"
    again = place_hold(place, "p", {HoldKind.legal}, NOW).data
    assert isinstance(again, CommandRejected) and again.reason == "case already has a legal hold"
    lift = LiftRetentionHold(case_id="C1", kind=HoldKind.legal, reason="settled", actor=DPO)
    lifted = lift_hold(lift, "l", {HoldKind.legal, HoldKind.complaint}, NOW).data
    assert isinstance(lifted, RetentionHoldLifted) and lifted.holds_remaining == [HoldKind.complaint]
    assert isinstance(lift_hold(lift, "l", {HoldKind.complaint}, NOW).data, CommandRejected)


def correction(field: str, value: object) -> RectifyParticipant:
    return RectifyParticipant(case_id="C1", person_id="V", field=field, value=value, reason="typo", actor=DPO)


def test_a_rectification_takes_only_a_participants_personal_fields_with_values_of_their_type() -> None:
    assert {"name", "date_of_birth", "contact", "custody_location"} == RECTIFIABLE
    fixed = rectify(correction("date_of_birth", "1990-05-01"), "r", on_case=True, erased=False, now=NOW).data
    assert isinstance(fixed, ParticipantRectified) and fixed.value == "1990-05-01"
    contact = rectify(correction("contact", {"phone": "+44"}), "r", on_case=True, erased=False, now=NOW).data
    assert isinstance(contact, ParticipantRectified)
    assert contact.value == Contact(phone="+44")
    for bad, why in [
        (correction("role", "offender"), "'role' is not a personal field"),
        (correction("date_of_birth", "yesterday"), "not a valid date_of_birth"),
        (correction("name", {"first": "A"}), "not a valid name"),
    ]:
        refused = rectify(bad, "r", on_case=True, erased=False, now=NOW).data
        assert isinstance(refused, CommandRejected) and refused.reason.startswith(why), refused.reason
    unknown = rectify(correction("name", "A"), "r", on_case=False, erased=False, now=NOW).data
    assert isinstance(unknown, CommandRejected) and unknown.reason == "unknown person V on case C1"
    gone = rectify(correction("name", "A"), "r", on_case=True, erased=True, now=NOW).data
    assert isinstance(gone, CommandRejected) and "was erased" in gone.reason
