"""The scheduling service's decisions: booking without double-booking, withdrawal, agreements, closure."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta

import pytest

from schemas.commands import CommandRejected
from schemas.common import Actor
from schemas.consent import (
    PARTICIPATION,
    CaseParticipant,
    CaseReadinessLost,
    CaseReadyForMeeting,
    CaseWithdrawalReason,
    CaseWithdrawn,
    ConsentDeclined,
    ConsentGiven,
    ConsentWithdrawn,
    FacilitatorAssigned,
    RecordedThrough,
    RecordingMethod,
)
from schemas.envelope import EventData
from schemas.pii import pii_fields
from schemas.referral import CaseAccepted, Role
from schemas.scheduling import (
    SYSTEM_SCHEDULING,
    AgreementItemCompleted,
    AgreementItemTerms,
    AgreementRecorded,
    BookMeeting,
    CancellationReason,
    CancelMeeting,
    CaseClosed,
    CloseCase,
    ClosureReason,
    CompleteAgreementItem,
    ItemKind,
    MeetingAttendeeRemoved,
    MeetingBooked,
    MeetingCancelled,
    MeetingHeld,
    MeetingKind,
    MeetingProposed,
    MeetingRescheduled,
    MeetingStatus,
    PaymentRecorded,
    ProposeMeeting,
    RecordAgreement,
    RecordAvailability,
    RecordMeetingHeld,
    RecordPayment,
    RegisterFacilitator,
    RegisterVenue,
    RescheduleMeeting,
    TimeWindow,
    VenueKind,
    VisitSlot,
    WeeklyHours,
)
from services.scheduling import domain
from services.scheduling.domain import CaseSchedule, Emit, ResourceBook

NOW = datetime(2030, 1, 1, 8, 0, tzinfo=UTC)
MONDAY = date(2030, 1, 7)
STAFF = Actor(kind="staff", id="staff-7")
SYSTEM = Actor(kind="system", id="consent-service")
_ids = itertools.count(1)


def at(hour: float, day: date = MONDAY) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC) + timedelta(hours=hour)


def resources() -> ResourceBook:
    weekdays = [WeeklyHours(weekday=d, start=time(9), end=time(17)) for d in range(5)]
    book = ResourceBook()
    commands: list[EventData] = [
        RegisterFacilitator(actor=STAFF, facilitator_id="F1", specialist=True, working_hours=weekdays, timezone="UTC"),
        RegisterFacilitator(actor=STAFF, facilitator_id="F2", specialist=False, working_hours=weekdays, timezone="UTC"),
        RegisterFacilitator(actor=STAFF, facilitator_id="F3", specialist=False, working_hours=weekdays, timezone="UTC"),
        RegisterFacilitator(actor=STAFF, facilitator_id="F4", specialist=False, working_hours=weekdays, timezone="UTC"),
        RegisterVenue(actor=STAFF, venue_id="C1", kind=VenueKind.community, name="Community hall", timezone="UTC"),
        RegisterVenue(actor=STAFF, venue_id="C2", kind=VenueKind.community, name="Library", timezone="UTC"),
        RegisterVenue(
            actor=STAFF,
            venue_id="P1",
            kind=VenueKind.prison,
            name="HMP Example",
            visit_slots=[VisitSlot(name="monday-morning", weekday=0, start=time(9), end=time(12))],
            timezone="UTC",
        ),
    ]
    for command in commands:
        _, book, emits = domain.handle(None, book, command, command_id=f"reg-{next(_ids)}", now=NOW)
        assert len(emits) == 1
    return book


def people(
    *, offender: str = "O1", victim: str | None = None, in_custody: bool = False, supporter: bool = False
) -> list[CaseParticipant]:
    found = [
        CaseParticipant(person_id=victim or f"V-{offender}", role=Role.victim, required=True),
        CaseParticipant(person_id=offender, role=Role.offender, required=True, in_custody=in_custody),
    ]
    if supporter:
        found.append(CaseParticipant(person_id=f"S-{offender}", role=Role.supporter, required=False))
    return found


ASSIGNED = ["F1", "F2", "F3", "F4"]


def ready_event(case_id: str, *, facilitators: list[str] = ASSIGNED, **kwargs: bool | str) -> CaseReadyForMeeting:
    sensitive = bool(kwargs.pop("sensitive", False))
    return CaseReadyForMeeting(
        case_id=case_id,
        participants=people(**kwargs),  # type: ignore[arg-type]
        specialist_required=sensitive,
        facilitator_ids=facilitators,
        ready_at=NOW,
        decided_by=SYSTEM,
    )


def plan(
    case_id: str = "A",
    meeting_id: str = "M1",
    start: float = 10,
    hours: float = 1,
    *,
    kind: MeetingKind = MeetingKind.conference,
    lead: str = "F2",
    co: str | None = "F3",
    venue: str | None = "C1",
    slot: str | None = None,
    propose: bool = False,
) -> BookMeeting | ProposeMeeting:
    model = ProposeMeeting if propose else BookMeeting
    return model(
        case_id=case_id,
        actor=STAFF,
        meeting_id=meeting_id,
        kind=kind,
        starts_at=at(start),
        ends_at=at(start + hours),
        lead_facilitator_id=lead,
        co_facilitator_id=co,
        venue_id=venue,
        visit_slot=slot,
    )


class World:
    """Cases and the shared resource book, fed one message at a time."""

    def __init__(self) -> None:
        self.book = resources()
        self.cases: dict[str, CaseSchedule | None] = {}

    def ready(self, case_id: str = "A", *, facilitators: list[str] = ASSIGNED, **kwargs: bool | str) -> World:
        self.send(ready_event(case_id, facilitators=facilitators, **kwargs))
        return self

    def send(self, message: EventData, *, now: datetime = NOW) -> list[Emit]:
        case_id = domain.subject_of(message)
        case, self.book, emits = domain.handle(
            self.cases.get(case_id), self.book, message, command_id=f"cmd-{next(_ids)}", now=now
        )
        self.cases[case_id] = case
        return emits

    def case(self, case_id: str = "A") -> CaseSchedule:
        case = self.cases[case_id]
        assert case is not None
        return case

    def bookings_of(self, meeting_id: str, case_id: str = "A") -> set[str]:
        return {b.resource for b in self.book.bookings if (b.case_id, b.meeting_id) == (case_id, meeting_id)}


def facts(emits: list[Emit]) -> list[type[EventData]]:
    return [type(e.data) for e in emits]


def rejection(emits: list[Emit]) -> str:
    assert facts(emits) == [CommandRejected], emits
    assert emits[0].data.service == "scheduling"  # type: ignore[attr-defined]
    return emits[0].data.reason  # type: ignore[attr-defined, no-any-return]


def withdrawal(case_id: str, person_id: str) -> ConsentWithdrawn:
    return ConsentWithdrawn(
        case_id=case_id,
        person_id=person_id,
        purpose=PARTICIPATION,
        through=RecordedThrough.participant,
        method=RecordingMethod.online,
        withdrawn_at=NOW,
        withdrawn_by=Actor(kind="participant", id=person_id),
        recorded_at=NOW,
    )


def declined(case_id: str, person_id: str) -> ConsentDeclined:
    return ConsentDeclined(
        case_id=case_id,
        person_id=person_id,
        purpose=PARTICIPATION,
        through=RecordedThrough.facilitator,
        method=RecordingMethod.phone,
        declined_at=NOW,
        declined_by=STAFF,
        recorded_at=NOW,
    )


def case_withdrawn(
    case_id: str, reason: CaseWithdrawalReason = CaseWithdrawalReason.consent_withdrawn
) -> CaseWithdrawn:
    """The consent service's participant-facing fact: it names no one."""
    return CaseWithdrawn(case_id=case_id, reason=reason, withdrawn_at=NOW, decided_by=SYSTEM)


# --- booking ------------------------------------------------------------------------------------


def test_a_conference_cannot_be_booked_before_the_case_is_ready() -> None:
    world = World()
    world.send(given("A", "V-O1"))
    assert "not ready" in rejection(world.send(plan()))
    assert world.book.bookings == resources().bookings


def test_a_conference_is_booked_on_a_ready_case() -> None:
    world = World().ready()
    emits = world.send(plan())
    assert facts(emits) == [MeetingBooked]
    booked = emits[0].data
    assert isinstance(booked, MeetingBooked)
    assert booked.facilitator_ids == ["F2", "F3"] and booked.lead_facilitator_id == "F2"
    assert booked.attendee_ids == ["V-O1", "O1"]
    assert world.bookings_of("M1") == {"facilitator:F2", "facilitator:F3", "venue:C1", "person:V-O1", "person:O1"}
    assert world.case().meeting("M1").status is MeetingStatus.booked  # type: ignore[union-attr]


def test_a_proposal_is_checked_like_a_booking_but_holds_nothing() -> None:
    world = World().ready()
    assert facts(world.send(plan(propose=True))) == [MeetingProposed]
    assert world.book.bookings == () and world.case().meetings == ()
    world.send(CaseReadinessLost(case_id="A", reason="unsafe", lost_at=NOW, decided_by=SYSTEM))
    assert "not ready" in rejection(world.send(plan(propose=True)))


def test_a_conference_needs_two_facilitators() -> None:
    world = World().ready()
    assert rejection(world.send(plan(co=None))).startswith("a conference needs two facilitators")
    assert rejection(world.send(plan(co="F2"))).startswith("a conference needs two facilitators")


def test_indirect_rj_has_one_facilitator_and_no_venue() -> None:
    world = World().ready()
    assert "one facilitator and no venue" in rejection(world.send(plan(kind=MeetingKind.indirect)))
    emits = world.send(plan(kind=MeetingKind.indirect, co=None, venue=None))
    assert facts(emits) == [MeetingBooked]
    assert world.bookings_of("M1") == {"facilitator:F2"}


def test_an_offender_in_custody_gets_a_prison_visit_not_a_community_venue() -> None:
    world = World().ready(in_custody=True)
    assert "must be a prison visit" in rejection(world.send(plan(venue="C1")))
    assert "visit slots" in rejection(world.send(plan(venue="P1")))
    assert facts(world.send(plan(venue="P1", slot="monday-morning"))) == [MeetingBooked]


def test_a_prison_visit_is_rejected_when_nobody_is_in_custody() -> None:
    world = World().ready(in_custody=False)
    assert "nobody on this case is in custody" in rejection(world.send(plan(venue="P1", slot="monday-morning")))


def test_a_prison_visit_must_fall_inside_its_visit_slot() -> None:
    world = World().ready(in_custody=True)
    assert "outside visit slot" in rejection(world.send(plan(start=11.5, venue="P1", slot="monday-morning")))


def test_double_booking_a_facilitator_is_rejected() -> None:
    world = World().ready("A").ready("B", offender="O2")
    assert facts(world.send(plan("A", lead="F2", co="F3", venue="C1"))) == [MeetingBooked]
    reason = rejection(world.send(plan("B", start=10.5, lead="F1", co="F3", venue="C2")))
    assert reason == "double booking: facilitator F3 is already booked at an overlapping time"
    assert world.bookings_of("M1", "B") == set()


def test_double_booking_a_venue_is_rejected() -> None:
    world = World().ready("A").ready("B", offender="O2")
    world.send(plan("A", lead="F2", co="F3", venue="C1"))
    reason = rejection(world.send(plan("B", start=9.5, lead="F1", co="F4", venue="C1")))
    assert reason == "double booking: venue C1 is already booked at an overlapping time"


def test_double_booking_a_participant_across_cases_is_rejected() -> None:
    world = World().ready("A", offender="O1").ready("B", offender="O1", victim="V-B")
    world.send(plan("A", lead="F2", co="F3", venue="C1"))
    reason = rejection(world.send(plan("B", lead="F1", co="F4", venue="C2")))
    assert reason == "double booking: participant O1 is already booked at an overlapping time"


def test_back_to_back_meetings_do_not_clash() -> None:
    world = World().ready()
    assert facts(world.send(plan(meeting_id="M1", start=10))) == [MeetingBooked]
    assert facts(world.send(plan(meeting_id="M2", start=11))) == [MeetingBooked]


def test_a_meeting_outside_a_participants_availability_is_rejected() -> None:
    world = World().ready()
    window = TimeWindow(starts_at=at(13), ends_at=at(16))
    world.send(RecordAvailability(case_id="A", actor=STAFF, person_id="V-O1", windows=[window]))
    assert rejection(world.send(plan(start=10))) == "participant V-O1 is not available at that time"
    assert facts(world.send(plan(start=14))) == [MeetingBooked]


def test_a_meeting_outside_a_facilitators_working_hours_is_rejected() -> None:
    world = World().ready()
    assert rejection(world.send(plan(start=18))) == "facilitator F2 does not work at that time"


def test_a_sensitive_case_needs_a_specialist_lead() -> None:
    world = World().ready(sensitive=True)
    assert "specialist lead facilitator" in rejection(world.send(plan(lead="F2", co="F3")))
    assert facts(world.send(plan(lead="F1", co="F3"))) == [MeetingBooked]


def test_a_meeting_cannot_be_booked_in_the_past() -> None:
    world = World().ready()
    assert rejection(world.send(plan(), now=at(12))) == "a meeting cannot be booked in the past"


# --- rescheduling and cancelling ----------------------------------------------------------------


def test_rescheduling_moves_the_bookings() -> None:
    world = World().ready()
    world.send(plan(start=10))
    emits = world.send(RescheduleMeeting(case_id="A", actor=STAFF, meeting_id="M1", starts_at=at(14), ends_at=at(15)))
    assert facts(emits) == [MeetingRescheduled]
    assert emits[0].data.previous_starts_at == at(10)  # type: ignore[attr-defined]
    assert {(b.starts_at, b.ends_at) for b in world.book.bookings} == {(at(14), at(15))}


def test_rescheduling_into_a_clash_is_rejected_and_keeps_the_old_time() -> None:
    world = World().ready("A").ready("B", offender="O2")
    world.send(plan("A", start=10))
    world.send(plan("B", start=14, lead="F1", co="F3", venue="C2"))
    before = world.book
    reason = rejection(
        world.send(RescheduleMeeting(case_id="A", actor=STAFF, meeting_id="M1", starts_at=at(14), ends_at=at(15)))
    )
    assert reason.startswith("double booking: facilitator F3")
    assert world.book == before


def test_cancelling_releases_the_bookings() -> None:
    world = World().ready()
    world.send(plan())
    emits = world.send(CancelMeeting(case_id="A", actor=STAFF, meeting_id="M1", reason="venue flooded"))
    assert facts(emits) == [MeetingCancelled]
    assert emits[0].data.reason_code is CancellationReason.requested  # type: ignore[attr-defined]
    assert world.book.bookings == ()
    assert facts(world.send(plan(meeting_id="M2"))) == [MeetingBooked]


def test_a_cancellation_needs_a_reason() -> None:
    world = World().ready()
    world.send(plan())
    assert rejection(world.send(CancelMeeting(case_id="A", actor=STAFF, meeting_id="M1"))) == (
        "a cancellation needs a reason"
    )


# --- withdrawal ---------------------------------------------------------------------------------


def test_withdrawal_cancels_the_booked_conference() -> None:
    world = World().ready()
    world.send(plan(meeting_id="M1", start=10))
    world.send(plan(meeting_id="M2", start=14))
    emits = world.send(withdrawal("A", "O1"))
    assert facts(emits) == [MeetingCancelled, MeetingCancelled, CaseClosed]
    assert world.book.bookings == ()
    assert {m.status for m in world.case().meetings} == {MeetingStatus.cancelled}
    closed = emits[-1].data
    assert isinstance(closed, CaseClosed) and closed.reason is ClosureReason.withdrawn
    assert facts(world.send(case_withdrawn("A"))) == []  # the consent service's second fact changes nothing


@pytest.mark.parametrize("stop", [withdrawal, declined], ids=["withdrawn", "declined"])
def test_a_closure_by_withdrawal_never_says_who_withdrew_but_staff_can_still_tell(
    stop: Callable[[str, str], ConsentWithdrawn | ConsentDeclined],
) -> None:
    world = World().ready()
    world.send(plan())
    emits = world.send(stop("A", "O1").model_copy(update={"reason": "I am frightened of him"}))
    assert facts(emits) == [MeetingCancelled, CaseClosed]
    closed = emits[-1].data
    assert isinstance(closed, CaseClosed) and (closed.reason, closed.closed_by) == (
        ClosureReason.withdrawn,
        SYSTEM_SCHEDULING,
    )
    told = " ".join(e.data.model_dump_json() for e in emits)
    assert "O1" not in told and "frightened" not in told
    assert closed.detail is None and "withdrawn_by" not in closed.model_dump()
    assert world.case().closure is not None and world.case().closure.withdrawn_by == "O1"  # for staff, in our state


def test_a_case_level_withdrawal_heard_alone_still_stops_the_case_without_knowing_who() -> None:
    world = World().ready()
    world.send(plan())
    emits = world.send(case_withdrawn("A"))
    assert facts(emits) == [MeetingCancelled, CaseClosed]
    assert world.book.bookings == ()
    assert world.case().closure is not None and world.case().closure.withdrawn_by is None
    assert rejection(world.send(plan(meeting_id="M2"))) == "case is closed (withdrawn)"


def test_cancellations_after_a_withdrawal_never_say_who_withdrew() -> None:
    world = World().ready()
    world.send(plan())
    emits = world.send(withdrawal("A", "V-O1"))
    cancelled = emits[0].data
    assert isinstance(cancelled, MeetingCancelled)
    assert cancelled.reason_code is CancellationReason.case_withdrawn
    assert "V-O1" not in cancelled.model_dump_json()


def test_a_booking_that_arrives_after_a_withdrawal_is_rejected() -> None:
    world = World().ready()
    world.send(withdrawal("A", "V-O1"))
    assert rejection(world.send(plan())) == "case is closed (withdrawn)"
    assert world.book.bookings == ()


def test_a_case_withdrawn_before_it_was_ready_is_closed_as_declined() -> None:
    world = World()
    emits = world.send(case_withdrawn("A", CaseWithdrawalReason.consent_declined))
    assert facts(emits) == [CaseClosed]
    assert emits[0].data.reason is ClosureReason.declined  # type: ignore[attr-defined]


def test_a_supporters_withdrawal_releases_only_their_place() -> None:
    world = World().ready(supporter=True)
    world.send(given("A", "S-O1"))
    world.send(plan())
    assert "person:S-O1" in world.bookings_of("M1")
    emits = world.send(withdrawal("A", "S-O1"))
    assert facts(emits) == [MeetingAttendeeRemoved]
    assert world.bookings_of("M1") == {"facilitator:F2", "facilitator:F3", "venue:C1", "person:V-O1", "person:O1"}
    assert world.case().closure is None


def test_readiness_lost_cancels_pending_meetings_but_keeps_the_case_open() -> None:
    world = World().ready()
    world.send(plan())
    lost = CaseReadinessLost(case_id="A", reason="unsafe", lost_at=NOW, decided_by=SYSTEM)
    emits = world.send(lost)
    assert facts(emits) == [MeetingCancelled]
    assert world.case().closure is None and not world.case().ready
    assert "not ready" in rejection(world.send(plan(meeting_id="M2")))


# --- agreement and closure ----------------------------------------------------------------------


def held(meeting_id: str = "M1", held_at: datetime | None = None) -> RecordMeetingHeld:
    return RecordMeetingHeld(case_id="A", actor=STAFF, meeting_id=meeting_id, held_at=held_at or at(10))


def held_world() -> World:
    world = World().ready()
    world.send(plan())
    assert facts(world.send(held(), now=at(11))) == [MeetingHeld]
    return world


def agreement(consented_by: list[str]) -> RecordAgreement:
    items = [
        AgreementItemTerms(
            item_id="sorry", kind=ItemKind.apology, description="A letter", owner_id="O1", due_date=MONDAY
        ),
        AgreementItemTerms(
            item_id="repair",
            kind=ItemKind.reparation,
            description="The fence",
            owner_id="O1",
            due_date=MONDAY,
            amount_pence=10_000,
        ),
    ]
    return RecordAgreement(case_id="A", actor=STAFF, meeting_id="M1", items=items, consented_by=consented_by)


def test_an_agreement_needs_every_required_participants_consent() -> None:
    world = held_world()
    assert rejection(world.send(agreement(["O1"]))) == (
        "the agreement needs the recorded consent of every party; missing: V-O1"
    )
    assert facts(world.send(agreement(["O1", "V-O1"]))) == [AgreementRecorded]


def test_an_agreement_needs_a_held_meeting() -> None:
    world = World().ready()
    world.send(plan())
    assert "has not been held" in rejection(world.send(agreement(["O1", "V-O1"])))


def test_a_meeting_is_not_held_before_it_starts() -> None:
    world = World().ready()
    world.send(plan())
    assert "not held before then" in rejection(world.send(held(held_at=at(9)), now=at(11)))


def test_reparation_is_done_when_payments_reach_the_amount() -> None:
    world = held_world()
    world.send(agreement(["O1", "V-O1"]))
    emits = world.send(RecordPayment(case_id="A", actor=STAFF, item_id="repair", amount_pence=4_000, paid_at=at(12)))
    assert facts(emits) == [PaymentRecorded]
    emits = world.send(RecordPayment(case_id="A", actor=STAFF, item_id="repair", amount_pence=6_000, paid_at=at(13)))
    assert facts(emits) == [PaymentRecorded, AgreementItemCompleted]
    assert emits[1].data.by_payments is True  # type: ignore[attr-defined]
    assert "not a reparation" in rejection(
        world.send(RecordPayment(case_id="A", actor=STAFF, item_id="sorry", amount_pence=1, paid_at=at(13)))
    )


def test_case_closes_as_completed_when_every_item_is_done() -> None:
    world = held_world()
    world.send(agreement(["O1", "V-O1"]))
    world.send(plan(meeting_id="M2", start=14))  # a follow-up that will not be needed
    assert facts(world.send(CompleteAgreementItem(case_id="A", actor=STAFF, item_id="sorry"))) == [
        AgreementItemCompleted
    ]
    assert world.send(CompleteAgreementItem(case_id="A", actor=STAFF, item_id="sorry")) == []  # a repeat is harmless
    emits = world.send(CompleteAgreementItem(case_id="A", actor=STAFF, item_id="repair"))
    assert facts(emits) == [AgreementItemCompleted, MeetingCancelled, CaseClosed]
    assert emits[-1].data.reason is ClosureReason.completed  # type: ignore[attr-defined]
    assert world.bookings_of("M2") == set()
    assert rejection(world.send(plan(meeting_id="M3"))) == "case is closed (completed)"


def test_closing_as_not_proceeded_with_cancels_pending_meetings() -> None:
    world = World().ready()
    world.send(plan())
    emits = world.send(
        CloseCase(case_id="A", actor=STAFF, closure_reason=ClosureReason.not_suitable, reason="risk reassessed")
    )
    assert facts(emits) == [MeetingCancelled, CaseClosed]
    closed = emits[-1].data
    assert isinstance(closed, CaseClosed)
    assert (closed.reason, closed.closed_by, closed.detail) == (
        ClosureReason.not_suitable,
        STAFF,
        "risk reassessed",
    )
    assert world.book.bookings == ()


@pytest.mark.parametrize("reason", [ClosureReason.completed, ClosureReason.withdrawn, ClosureReason.declined])
def test_completion_and_withdrawal_cannot_be_claimed_by_command(reason: ClosureReason) -> None:
    world = World().ready()
    assert "follows from the process" in rejection(
        world.send(CloseCase(case_id="A", actor=STAFF, closure_reason=reason, reason="all done"))
    )


def test_staff_closing_a_case_must_say_why() -> None:
    world = World().ready()
    for reason in (None, " "):
        refused = world.send(
            CloseCase(case_id="A", actor=STAFF, closure_reason=ClosureReason.not_suitable, reason=reason)
        )
        assert rejection(refused) == "a reason is required when staff close a case"


def test_a_command_on_an_unknown_case_is_rejected() -> None:
    assert rejection(World().send(plan("nowhere"))) == "unknown case nowhere"


# --- storage and wiring helpers -----------------------------------------------------------------


def test_schedule_and_book_survive_a_json_round_trip() -> None:
    world = held_world()
    world.send(agreement(["O1", "V-O1"]))
    world.send(
        RecordAvailability(
            case_id="A", actor=STAFF, person_id="O1", windows=[TimeWindow(starts_at=at(9), ends_at=at(17))]
        )
    )
    assert CaseSchedule.from_json(world.case().to_json()) == world.case()
    assert ResourceBook.from_json(world.book.to_json()) == world.book


def test_resources_touched_names_everything_a_booking_checks() -> None:
    world = World().ready()
    keys = domain.resources_touched(world.case(), plan(venue="C1"))
    assert keys == {"facilitator:F2", "facilitator:F3", "venue:C1", "person:V-O1", "person:O1"}


def given(case_id: str, person_id: str) -> ConsentGiven:
    return ConsentGiven(
        case_id=case_id,
        person_id=person_id,
        purpose=PARTICIPATION,
        through=RecordedThrough.facilitator,
        method=RecordingMethod.in_person,
        given_at=NOW,
        given_by=STAFF,
        recorded_at=NOW,
    )


# --- the review's fixes -------------------------------------------------------------------------


def test_a_meeting_cannot_be_recorded_as_held_before_it_starts() -> None:
    world = World().ready()
    world.send(plan(start=10))
    reason = rejection(world.send(held(held_at=at(10)), now=at(9.5)))
    assert "cannot be recorded as held before it starts" in reason
    assert world.case().meeting("M1").status is MeetingStatus.booked  # type: ignore[union-attr]


def test_a_meeting_cannot_be_recorded_as_held_at_a_time_still_to_come() -> None:
    world = World().ready()
    world.send(plan(start=10))
    assert "in the future" in rejection(world.send(held(held_at=at(11) + timedelta(minutes=6)), now=at(11)))
    assert facts(world.send(held(held_at=at(11) + timedelta(minutes=4)), now=at(11))) == [MeetingHeld]


def test_a_booking_with_a_facilitator_not_assigned_to_the_case_is_rejected() -> None:
    world = World().ready(facilitators=["F2"])
    assert rejection(world.send(plan(lead="F2", co="F3"))) == "facilitator F3 is not assigned to this case"
    assert rejection(world.send(plan(lead="F3", co="F2"))) == "facilitator F3 is not assigned to this case"
    indirect = plan(kind=MeetingKind.indirect, lead="F4", co=None, venue=None)
    assert rejection(world.send(indirect)) == "facilitator F4 is not assigned to this case"
    assert world.book.bookings == ()


def test_a_facilitator_assigned_after_readiness_can_be_booked() -> None:
    world = World().ready(facilitators=["F2"])
    assigned = FacilitatorAssigned(
        case_id="A", facilitator_id="F3", specialist=False, assigned_at=NOW, assigned_by=STAFF
    )
    assert world.send(assigned) == []
    assert facts(world.send(plan(lead="F2", co="F3"))) == [MeetingBooked]
    assert FacilitatorAssigned.event_type in domain.CONSUMES


def test_a_facilitator_assignment_heard_before_the_case_starts_a_skeleton_schedule() -> None:
    world = World()
    assigned = FacilitatorAssigned(
        case_id="A", facilitator_id="F3", specialist=False, assigned_at=NOW, assigned_by=STAFF
    )
    world.send(assigned)
    world.ready(facilitators=["F2"])
    assert world.case().facilitator_ids == {"F2", "F3"}
    assert CaseSchedule.from_json(world.case().to_json()) == world.case()


def test_a_participant_removed_again_after_rejoining_is_a_second_removal_fact() -> None:
    world = World().ready(supporter=True)
    world.send(given("A", "S-O1"))
    world.send(plan(start=10))
    first = world.send(withdrawal("A", "S-O1"))
    world.send(given("A", "S-O1"))
    world.send(RescheduleMeeting(case_id="A", actor=STAFF, meeting_id="M1", starts_at=at(14), ends_at=at(15)))
    assert "person:S-O1" in world.bookings_of("M1")
    second = world.send(withdrawal("A", "S-O1"))
    assert facts(first) == facts(second) == [MeetingAttendeeRemoved]
    assert first[0].identity != second[0].identity
    assert "person:S-O1" not in world.bookings_of("M1")


def test_a_removals_identity_is_the_same_when_the_same_fact_is_replayed() -> None:
    world = World().ready(supporter=True)
    world.send(given("A", "S-O1"))
    world.send(plan())
    case, book = world.case(), world.book
    once = domain.handle(case, book, withdrawal("A", "S-O1"), command_id="evt-9", now=NOW)
    again = domain.handle(case, book, withdrawal("A", "S-O1"), command_id="evt-9", now=NOW)
    assert once == again and once[2][0].identity == "attendee-removed:M1:S-O1:evt-9"


def test_declining_after_having_consented_closes_the_case_as_withdrawn() -> None:
    world = World().ready()
    world.send(plan())
    emits = world.send(declined("A", "O1"))
    assert facts(emits) == [MeetingCancelled, CaseClosed]
    closed = emits[-1].data
    assert isinstance(closed, CaseClosed) and closed.reason is ClosureReason.withdrawn
    assert world.case().closure is not None and world.case().closure.withdrawn_by == "O1"


def test_declining_without_having_consented_closes_the_case_as_declined() -> None:
    world = World()
    world.send(
        CaseAccepted(
            case_id="A",
            crime_reference="CR-A",
            specialist_required=False,
            risk_assessment_required=False,
            sensitivity_reasons=[],
            participants=[
                CaseParticipant(person_id="V-O1", role=Role.victim, required=True),
                CaseParticipant(person_id="O1", role=Role.offender, required=True),
            ],
            decided_at=NOW,
            decided_by=SYSTEM,
            reason="eligible",
        )
    )
    world.send(given("A", "V-O1"))
    emits = world.send(declined("A", "O1"))
    assert facts(emits) == [CaseClosed]
    assert emits[-1].data.reason is ClosureReason.declined  # type: ignore[attr-defined]


def test_who_withdrew_and_staff_words_are_marked_as_personal_data() -> None:
    assert {"person_id", "withdrawn_by", "reason"} <= pii_fields(ConsentWithdrawn)
    assert {"person_id", "declined_by", "reason"} <= pii_fields(ConsentDeclined)
    assert "detail" in pii_fields(CaseClosed)
    assert "person_id" in pii_fields(MeetingAttendeeRemoved)
    assert "reason" in pii_fields(MeetingRescheduled)
    assert "reason" in pii_fields(MeetingCancelled)


def test_the_facts_participants_are_told_have_no_field_for_who_withdrew() -> None:
    assert CaseWithdrawn.model_fields.keys() == {"case_id", "reason", "withdrawn_at", "decided_by"}
    assert CaseClosed.model_fields.keys() == {
        "case_id",
        "reason",
        "closed_at",
        "closed_by",
        "detail",
        "failed_item_ids",
    }
    assert CaseWithdrawn.participant_facing and CaseClosed.participant_facing
    assert not ConsentWithdrawn.participant_facing and not ConsentDeclined.participant_facing
