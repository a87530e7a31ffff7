"""Follow-up and closures that need evidence (DOMAIN stage 6), through the scheduling domain: agreement items
flagged due soon (working days, bank holidays) and overdue, once each and never while the case is held, pending
a withdrawal's verdict or closed; ``agreement_not_met`` only with an overdue item, naming it; ``uncontactable``
only after the set number of unanswered contact attempts in a row."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.common import Actor
from schemas.consent import (
    PARTICIPATION,
    CaseHeld,
    CaseResumed,
    ConsentDeclined,
    ConsentGiven,
    ConsentWithdrawn,
    ContactAttemptRecorded,
    ContactMethod,
    ContactOutcome,
    PreparationMeetingRecorded,
    PutCaseOnHold,
    RecordedThrough,
    RecordingMethod,
    WithdrawConsent,
)
from schemas.envelope import EventData
from schemas.pii import pii_fields
from schemas.scheduling import (
    AgreementItemDueSoon,
    AgreementItemOverdue,
    AgreementItemTerms,
    AgreementRecorded,
    CaseClosed,
    CloseCase,
    ClosureReason,
    CompleteAgreementItem,
    ItemKind,
    RecordAgreement,
)
from services.runtime.calendar import add_working_days
from services.scheduling import domain
from services.scheduling.domain import CaseSchedule, Emit, Policy
from tests.unit.test_scheduling_domain import STAFF, World, facts, held_world, rejection

SYSTEM = Actor(kind="system", id="consent-service")


def noon(day: date) -> datetime:
    return datetime.combine(day, time(12), tzinfo=UTC)


def agreed(*due: date, world: World | None = None) -> World:
    """A held conference on case A and an agreement with one item per due date (``I1``, ``I2``...), owned by
    the offender O1."""
    world = world or held_world()
    items = [
        AgreementItemTerms(item_id=f"I{n}", kind=ItemKind.work, description="Clean the wall", owner_id="O1", due_date=d)
        for n, d in enumerate(due, 1)
    ]
    recorded = RecordAgreement(case_id="A", actor=STAFF, meeting_id="M1", items=items, consented_by=["V-O1", "O1"])
    assert facts(world.send(recorded)) == [AgreementRecorded]
    return world


def sweep(world: World, on: date | datetime, policy: Policy = domain.DEFAULT_POLICY) -> list[Emit]:
    now = on if isinstance(on, datetime) else noon(on)
    case, emits = domain.follow_up(world.case(), policy=policy, now=now)
    world.cases["A"] = case
    return emits


def attempt(person_id: str, in_a_row: int, *, case_id: str = "A") -> ContactAttemptRecorded:
    reached = in_a_row == 0
    return ContactAttemptRecorded(
        case_id=case_id,
        person_id=person_id,
        attempted_at=noon(date(2030, 1, 7)),
        method=ContactMethod.phone,
        outcome=ContactOutcome.reached if reached else ContactOutcome.no_answer,
        unanswered_in_a_row=in_a_row,
        recorded_at=noon(date(2030, 1, 7)),
        recorded_by=STAFF,
    )


def close(reason: ClosureReason, text: str = "as the record shows") -> CloseCase:
    return CloseCase(case_id="A", actor=STAFF, closure_reason=reason, reason=text)


# --- due soon -----------------------------------------------------------------------------------


def test_stage_6_an_item_is_due_soon_three_working_days_before_across_the_easter_bank_holidays() -> None:
    # Due Wednesday 24 April 2030. Good Friday (19th) and Easter Monday (22nd) are bank holidays, so three
    # working days before is Wednesday 17th (Tue 23, Thu 18, Wed 17), not the Sunday before.
    world = agreed(date(2030, 4, 24))
    assert sweep(world, date(2030, 4, 16)) == []
    emits = sweep(world, date(2030, 4, 17))
    assert facts(emits) == [AgreementItemDueSoon]
    due_soon = emits[0].data
    assert isinstance(due_soon, AgreementItemDueSoon)
    assert (due_soon.item_id, due_soon.owner_id, due_soon.due_date) == ("I1", "O1", date(2030, 4, 24))
    assert emits[0].identity == "item-due-soon:I1"
    for day in (date(2030, 4, 18), date(2030, 4, 22), date(2030, 4, 24)):
        assert sweep(world, day) == []  # once only


def test_stage_6_an_item_due_on_a_monday_is_due_soon_from_the_wednesday_before_the_weekend() -> None:
    world = agreed(date(2030, 1, 14))  # a Monday: Fri 11, Thu 10, Wed 9 are the three working days before
    assert sweep(world, date(2030, 1, 8)) == []
    assert facts(sweep(world, date(2030, 1, 9))) == [AgreementItemDueSoon]


def test_stage_6_the_due_soon_working_days_come_from_the_policy() -> None:
    world = agreed(date(2030, 1, 14))
    one_day = Policy(item_due_soon_working_days=1)
    assert sweep(world, date(2030, 1, 10), one_day) == []  # Thursday: two working days ahead
    assert facts(sweep(world, date(2030, 1, 11), one_day)) == [AgreementItemDueSoon]  # Friday


def test_stage_6_due_dates_are_uk_days_not_utc_days() -> None:
    world = agreed(date(2030, 6, 14))  # a Friday; British Summer Time is UTC+1
    assert sweep(world, datetime(2030, 6, 14, 22, 30, tzinfo=UTC)) != []  # due soon (it is the due date)
    overdue = sweep(world, datetime(2030, 6, 14, 23, 30, tzinfo=UTC))  # 00:30 on Saturday in London
    assert facts(overdue) == [AgreementItemOverdue]


# --- overdue ------------------------------------------------------------------------------------


def test_stage_6_an_overdue_item_is_flagged_once_and_tells_the_victim_nothing_of_the_offender() -> None:
    world = agreed(date(2030, 1, 14), date(2030, 2, 28))
    assert facts(sweep(world, date(2030, 1, 10))) == [AgreementItemDueSoon]
    assert sweep(world, date(2030, 1, 14)) == []  # due today: not yet overdue
    emits = sweep(world, date(2030, 1, 15))
    assert facts(emits) == [AgreementItemOverdue]
    overdue = emits[0].data
    assert isinstance(overdue, AgreementItemOverdue)
    assert (overdue.item_id, overdue.tell_person_ids, overdue.due_date) == ("I1", ["V-O1"], date(2030, 1, 14))
    assert emits[0].identity == "item-overdue:I1"
    assert AgreementItemOverdue.participant_facing
    assert '"O1"' not in overdue.model_dump_json()  # the offender (O1) is named nowhere
    assert {"owner_id", "description"}.isdisjoint(AgreementItemOverdue.model_fields)
    assert pii_fields(AgreementItemOverdue) == set()
    for day in (date(2030, 1, 16), date(2030, 1, 31)):
        assert sweep(world, day) == []  # once only


def test_stage_6_an_item_already_overdue_when_first_swept_is_flagged_overdue_without_a_late_reminder() -> None:
    world = agreed(date(2030, 1, 8))
    assert facts(sweep(world, date(2030, 1, 20))) == [AgreementItemOverdue]
    assert sweep(world, date(2030, 1, 21)) == []


def test_stage_6_a_completed_item_is_never_flagged_overdue() -> None:
    world = agreed(date(2030, 1, 14), date(2030, 3, 1))
    world.send(CompleteAgreementItem(case_id="A", actor=STAFF, item_id="I1"))
    assert sweep(world, date(2030, 1, 20)) == []
    assert [row[0] for row in domain.watched(world.case())] == ["I2"]  # its clock stopped


def test_stage_6_nothing_is_flagged_while_the_case_is_on_hold_and_it_comes_after_the_resume() -> None:
    world = agreed(date(2030, 1, 14))
    hold = PutCaseOnHold(case_id="A", actor=STAFF, concern="A safeguarding concern", raised_by="A teacher")
    world.cases["A"], world.book, _ = domain.handle(world.case(), world.book, hold, command_id="hold-1", now=NOW)
    assert sweep(world, date(2030, 1, 10)) == []  # the hold awaits consent's verdict
    assert domain.watched(world.case()) == []
    concern = {"concern": "A safeguarding concern", "raised_by": "A teacher"}
    world.send(CaseHeld(case_id="A", **concern, held_at=NOW, held_by=STAFF, command_id="hold-1"))
    assert world.case().held and not world.case().stops_pending
    assert sweep(world, date(2030, 1, 20)) == []
    world.send(CaseResumed(case_id="A", reason="Resolved", resumed_at=NOW, resumed_by=STAFF))
    assert facts(sweep(world, date(2030, 1, 21))) == [AgreementItemOverdue]


def test_stage_6_nothing_is_flagged_while_a_withdrawal_awaits_its_verdict_nor_after_closure() -> None:
    world = agreed(date(2030, 1, 14))
    world.send(
        WithdrawConsent(
            case_id="A",
            actor=Actor(kind="participant", id="V-O1"),
            person_id="V-O1",
            through=RecordedThrough.participant,
            method=RecordingMethod.online,
        )
    )
    assert sweep(world, date(2030, 1, 20)) == []
    world.send(close(ClosureReason.not_suitable))  # refused while pending: the case is not closed by it
    assert world.case().closure is None
    world = agreed(date(2030, 1, 14))
    world.send(close(ClosureReason.not_suitable))
    assert world.case().closure is not None
    assert sweep(world, date(2030, 1, 20)) == []
    assert domain.watched(world.case()) == []


NOW = noon(date(2030, 1, 7))


@settings(max_examples=150, deadline=None)
@given(
    offsets=st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=4),
    sweeps=st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=12),
    completed=st.sets(st.integers(min_value=1, max_value=4)),
    working_days=st.integers(min_value=0, max_value=5),
)
def test_stage_6_every_item_is_flagged_at_most_once_each_way_and_the_watch_index_finds_every_flag(
    offsets: list[int], sweeps: list[int], completed: set[int], working_days: int
) -> None:
    """Whatever the due dates, the sweep days and the completions: each item gets at most one due-soon and one
    overdue fact, never an overdue one once completed or before its due date has passed, and a sweep that
    flags anything was led there by the watch rows (the app reads only those)."""
    start = date(2030, 1, 8)
    world = agreed(*(start + timedelta(days=o) for o in offsets))
    policy = Policy(item_due_soon_working_days=working_days)
    for n in completed:
        if n <= len(offsets):
            world.send(CompleteAgreementItem(case_id="A", actor=STAFF, item_id=f"I{n}"), now=NOW)
    seen: list[Emit] = []
    for offset in sorted(sweeps):
        today = start + timedelta(days=offset)
        horizon = add_working_days(today, working_days)
        rows = domain.watched(world.case())
        selected = [
            i for i, due, flag in rows if (flag == "due-soon" and due <= horizon) or (flag == "overdue" and due < today)
        ]
        emits = sweep(world, today, policy)
        assert {e.data.item_id for e in emits} <= set(selected)  # type: ignore[attr-defined]
        for e in emits:
            if isinstance(e.data, AgreementItemOverdue):
                assert e.data.due_date < today
        seen += emits
    identities = [e.identity for e in seen]
    assert len(identities) == len(set(identities))
    assert not any(e.identity == f"item-overdue:I{n}" for e in seen for n in completed)


# --- closing as agreement not met ---------------------------------------------------------------


def test_stage_6_agreement_not_met_is_refused_without_an_overdue_item() -> None:
    world = agreed(date(2030, 1, 14), date(2030, 3, 1))
    refused = world.send(close(ClosureReason.agreement_not_met), now=noon(date(2030, 1, 14)))
    assert rejection(refused) == (
        "a case is closed as agreement_not_met only when an agreement item is overdue and not completed"
    )
    world.send(CompleteAgreementItem(case_id="A", actor=STAFF, item_id="I1"), now=noon(date(2030, 1, 10)))
    refused = world.send(close(ClosureReason.agreement_not_met), now=noon(date(2030, 1, 20)))
    assert "overdue and not completed" in rejection(refused)  # the item that fell due was done


def test_stage_6_agreement_not_met_records_the_overdue_items_by_id() -> None:
    world = agreed(date(2030, 1, 14), date(2030, 1, 15), date(2030, 3, 1))
    emits = world.send(close(ClosureReason.agreement_not_met, "No work done"), now=noon(date(2030, 1, 20)))
    assert facts(emits) == [CaseClosed]
    closed = emits[-1].data
    assert isinstance(closed, CaseClosed)
    assert (closed.reason, closed.failed_item_ids) == (ClosureReason.agreement_not_met, ["I1", "I2"])
    assert "failed_item_ids" not in pii_fields(CaseClosed)


# --- closing as uncontactable -------------------------------------------------------------------


def test_stage_6_uncontactable_is_refused_below_the_attempts_and_accepted_at_them() -> None:
    world = World().ready()
    world.send(attempt("V-O1", 1))
    world.send(attempt("V-O1", 2))
    refused = world.send(close(ClosureReason.uncontactable))
    assert rejection(refused) == (
        "a case is closed as uncontactable only after 3 unanswered contact attempts in a row to a required "
        "participant; the most recorded is 2"
    )
    world.send(attempt("V-O1", 3))
    emits = world.send(close(ClosureReason.uncontactable, "No reply to calls or letters"))
    assert facts(emits) == [CaseClosed]
    assert emits[0].data.reason is ClosureReason.uncontactable  # type: ignore[attr-defined]
    assert emits[0].data.failed_item_ids is None  # type: ignore[attr-defined]


def test_stage_6_attempts_heard_before_the_case_itself_still_count() -> None:
    """The consent service's facts may overtake the referral's ``rj.case.accepted`` (another topic, read at its
    own pace under load): unanswered attempts heard first wait in a skeleton and count once the case arrives, and
    the skeleton alone cannot be closed."""
    from schemas.consent import CaseParticipant
    from schemas.referral import CaseAccepted, Role
    from tests.unit.test_scheduling_domain import NOW
    from tests.unit.test_scheduling_domain import SYSTEM as SYSTEM_REFERRAL

    world = World()
    for n in (1, 2, 3):
        world.send(attempt("V-O1", n))
    assert rejection(world.send(close(ClosureReason.uncontactable))) == "unknown case A"
    world.send(
        CaseAccepted(
            case_id="A", crime_reference="CR-A", specialist_required=False, risk_assessment_required=False,
            sensitivity_reasons=[], decided_at=NOW, decided_by=SYSTEM_REFERRAL, reason="eligible",
            participants=[
                CaseParticipant(person_id="V-O1", role=Role.victim, required=True),
                CaseParticipant(person_id="O1", role=Role.offender, required=True),
            ],
        )
    )  # fmt: skip
    assert not world.case().skeleton and world.case().unanswered_in_a_row("V-O1") == 3
    assert facts(world.send(close(ClosureReason.uncontactable, "No reply to calls"))) == [CaseClosed]


def test_stage_6_an_attempt_that_reached_the_person_resets_the_count() -> None:
    world = World().ready()
    for n in (1, 2, 3):
        world.send(attempt("O1", n))
    world.send(attempt("O1", 0))  # reached
    assert "the most recorded is 0" in rejection(world.send(close(ClosureReason.uncontactable)))
    assert world.case().unanswered_in_a_row("O1") == 0


def in_touch(kind: str, person_id: str, *, through: RecordedThrough = RecordedThrough.participant) -> EventData:
    """The person acting on the case themself (or, with ``through`` a facilitator, staff recording it for them)."""
    at = noon(date(2030, 1, 8))
    by = Actor(kind="participant", id=person_id) if through is RecordedThrough.participant else STAFF
    decision = {"case_id": "A", "person_id": person_id, "through": through, "method": RecordingMethod.online}
    if kind == "given":
        return ConsentGiven(**decision, purpose=PARTICIPATION, given_at=at, given_by=by, recorded_at=at)
    if kind == "withdrawn-sharing":
        return ConsentWithdrawn(**decision, purpose="share:injuries", withdrawn_at=at, withdrawn_by=by, recorded_at=at)
    if kind == "declined-sharing":
        return ConsentDeclined(**decision, purpose="share:injuries", declined_at=at, declined_by=by, recorded_at=at)
    assert kind == "met"
    return PreparationMeetingRecorded(
        case_id="A", person_id=person_id, met_at=at, method=RecordingMethod.in_person, recorded_at=at, recorded_by=STAFF
    )


@pytest.mark.parametrize("kind", ["given", "withdrawn-sharing", "declined-sharing", "met"])
def test_stage_6_the_person_acting_on_the_case_is_not_uncontactable(kind: str) -> None:
    """Three calls went unanswered, then the person gave consent themself (or withdrew a sharing consent, or met a
    facilitator): they are evidently in touch, and the case does not close as uncontactable on the old count."""
    world = World().ready()
    for n in (1, 2, 3):
        world.send(attempt("O1", n))
    assert world.send(in_touch(kind, "O1")) == []
    assert world.case().unanswered_in_a_row("O1") == 0
    assert "the most recorded is 0" in rejection(world.send(close(ClosureReason.uncontactable)))
    world.send(attempt("O1", 1))  # the consent service's next count, from its own log reset the same way
    assert world.case().unanswered_in_a_row("O1") == 1


def test_stage_6_staff_recording_a_decision_for_the_person_leaves_the_count_as_it_was() -> None:
    world = World().ready()
    for n in (1, 2, 3):
        world.send(attempt("O1", n))
    world.send(in_touch("given", "O1", through=RecordedThrough.facilitator))
    assert world.case().unanswered_in_a_row("O1") == 3


def test_stage_6_the_attempts_needed_come_from_the_policy() -> None:
    world = World().ready()
    world.send(attempt("O1", 3))
    _, _, emits = domain.handle(
        world.case(), world.book, close(ClosureReason.uncontactable), command_id="c", now=NOW, policy=Policy(5)
    )
    assert "after 5 unanswered" in rejection(emits)


def test_stage_6_only_a_required_participants_attempts_make_a_case_uncontactable() -> None:
    world = World().ready(supporter=True)
    world.send(attempt("S-O1", 6))  # a supporter: not required
    world.send(attempt("X-9", 6))  # someone the case does not know
    assert "the most recorded is 0" in rejection(world.send(close(ClosureReason.uncontactable)))


def test_stage_6_attempts_on_a_closed_case_change_nothing() -> None:
    world = World().ready()
    world.send(close(ClosureReason.not_suitable))
    before = world.case()
    assert world.send(attempt("O1", 4)) == []
    assert world.case() == before


def test_stage_6_follow_up_state_survives_a_json_round_trip() -> None:
    world = agreed(date(2030, 1, 14))
    world.send(attempt("O1", 2))
    sweep(world, date(2030, 1, 10))
    case = world.case()
    assert CaseSchedule.from_json(case.to_json()) == case
    assert case.agreement is not None and case.agreement.items[0].due_soon_flagged_at == noon(date(2030, 1, 10))


def test_stage_6_an_attempt_on_an_unknown_case_makes_nothing_staff_can_act_on_and_floods_are_bounded() -> None:
    world = World()
    assert world.send(attempt("V-X", 5, case_id="nowhere")) == []
    assert world.case("nowhere").skeleton  # the count waits for the case, which cannot be closed till then
    assert rejection(world.send(close(ClosureReason.not_suitable).model_copy(update={"case_id": "nowhere"}))) == (
        "unknown case nowhere"
    )
    world.ready()
    for n in range(300):
        world.send(attempt(f"stranger-{n}", 9))
    assert len(world.case().unanswered) == 256


def test_stage_6_a_meeting_heard_before_the_case_resets_the_attempts_heard_before_it() -> None:
    """Unanswered attempts, then a facilitator meeting the person, all overtaking the case: the skeleton keeps both in
    order, so once the case arrives the count is 0 and it does not close as uncontactable."""
    world = World()
    for n in (1, 2, 3):
        world.send(attempt("V-O1", n))
    world.send(in_touch("met", "V-O1"))
    world.ready()
    assert world.case().unanswered_in_a_row("V-O1") == 0
    assert "the most recorded is 0" in rejection(world.send(close(ClosureReason.uncontactable)))
