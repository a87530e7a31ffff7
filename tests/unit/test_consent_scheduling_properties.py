"""Properties of consent and scheduling together, over any sequence of commands and events.

A small world: two cases sharing an offender, three facilitators, a community venue and a prison,
a handful of overlapping time slots. Each step is a command to one service or a withdrawal; what a
service emits is delivered at once to the other, as the topics would. After every step:
(a) no meeting is booked, rescheduled, proposed, held or agreed, and none is pending, without the
    current participation consent of every required participant (rule 1);
(b) no facilitator, venue or participant is booked twice at overlapping times, neither in the resource
    book nor as told by the facts emitted, and the two agree;
and a rejected command changes nothing.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.commands import CommandRejected
from schemas.common import Actor
from schemas.consent import (
    PARTICIPATION,
    AssignFacilitator,
    DeclineConsent,
    GiveConsent,
    RecordedThrough,
    RecordingMethod,
    RecordPreparationMeeting,
    RecordRiskAssessment,
    RiskLevel,
    WithdrawConsent,
    sharing,
)
from schemas.envelope import EventData
from schemas.referral import CaseAccepted, CaseParticipant, Role
from schemas.scheduling import (
    AgreementItemTerms,
    AgreementRecorded,
    BookMeeting,
    CancelMeeting,
    CloseCase,
    ClosureReason,
    CompleteAgreementItem,
    FacilitatorRegistered,
    ItemKind,
    MeetingAttendeeRemoved,
    MeetingBooked,
    MeetingCancelled,
    MeetingHeld,
    MeetingKind,
    MeetingProposed,
    MeetingRescheduled,
    MeetingStatus,
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
from services.consent import domain as consent
from services.scheduling import domain as scheduling

NOW = datetime(2030, 1, 1, 8, 0, tzinfo=UTC)
MONDAY = date(2030, 1, 7)
STAFF = Actor(kind="staff", id="staff-1")

CASES = ("A", "B")
OFFENDER = "O"
PEOPLE = {"A": ("V-A", OFFENDER, "S-A"), "B": ("V-B", OFFENDER)}
EVERYONE = ("V-A", "V-B", OFFENDER, "S-A", "stranger")
FACILITATORS = ("F1", "F2", "F3")  # F1 is the specialist
UNREGISTERED = "F9"
VENUES = ("C1", "P1")  # a community venue, a prison with a Monday-morning visit slot
STARTS = (9.0, 9.5, 10.0, 11.0, 14.0)
HOURS = (1.0, 1.5)
MEETINGS = ("M1", "M2")
ITEMS = ("sorry", "repair")


def at(hour: float) -> datetime:
    return datetime.combine(MONDAY, time(0), tzinfo=UTC) + timedelta(hours=hour)


def required_people(case_id: str) -> tuple[str, ...]:
    return PEOPLE[case_id][:2]


# --- the world ----------------------------------------------------------------------------------

Ledger = dict[tuple[str, str], tuple[frozenset[str], datetime, datetime]]  # (case, meeting) -> what it holds, when


@dataclass
class World:
    in_custody: bool
    sensitive: frozenset[str]
    consent_cases: dict[str, consent.ConsentCase | None] = field(default_factory=dict)
    schedules: dict[str, scheduling.CaseSchedule | None] = field(default_factory=dict)
    book: scheduling.ResourceBook = field(default_factory=scheduling.ResourceBook)
    ledger: Ledger = field(default_factory=dict)
    register: dict[str, bool] = field(default_factory=dict)  # facilitator -> specialist, from rj.facilitator.registered
    ids: Any = field(default_factory=lambda: itertools.count(1))

    def next_id(self) -> str:
        return f"msg-{next(self.ids)}"

    # Delivery between the services, as the topics would carry it.

    def to_consent(self, message: EventData) -> list[EventData]:
        if isinstance(message, FacilitatorRegistered):  # about a facilitator: applies to each case
            return [fact for case_id in list(self.consent_cases) for fact in self.to_consent_case(case_id, message)]
        return self.to_consent_case(message.case_id, message)  # type: ignore[attr-defined]

    def to_consent_case(self, case_id: str, message: EventData) -> list[EventData]:
        before = self.consent_cases.get(case_id)
        # As the wiring does: the specialist flag comes from the register scheduling's facts feed.
        registered = self.register.get(message.facilitator_id) if isinstance(message, AssignFacilitator) else None
        after, emits = consent.handle(
            before, message, command_id=self.next_id(), now=NOW, registered_specialist=registered
        )
        self.consent_cases[case_id] = after
        self.check_rejection_changes_nothing(emits, before, after)
        out = [e.data for e in emits]
        for fact in out:
            if type(fact) in scheduling.HANDLERS:
                out += self.to_scheduling(fact)
        return out

    def to_scheduling(self, message: EventData, *, now: datetime = NOW) -> list[EventData]:
        case_id = scheduling.subject_of(message)
        before, book_before = self.schedules.get(case_id), self.book
        after, self.book, emits = scheduling.handle(before, self.book, message, command_id=self.next_id(), now=now)
        if not isinstance(message, RegisterFacilitator | RegisterVenue):
            self.schedules[case_id] = after
        if [type(e.data) for e in emits] == [CommandRejected]:
            assert (after, self.book) == (before, book_before), "a rejected command changed the schedule"
        out = [e.data for e in emits]
        for fact in out:
            if isinstance(fact, FacilitatorRegistered):
                self.register[fact.facilitator_id] = fact.specialist
        self.record_in_ledger(out)
        self.check_rule_1(out)
        for fact in list(out):
            if type(fact) in consent.HANDLERS:
                out += self.to_consent(fact)
        return out

    def both(self, message: EventData) -> None:
        self.to_consent(message)
        self.to_scheduling(message)

    # The properties.

    def check_rejection_changes_nothing(self, emits: list[consent.Emit], before: object, after: object) -> None:
        if [type(e.data) for e in emits] == [CommandRejected]:
            assert after == before, "a rejected command changed the consent state"

    def consents_now(self, case_id: str) -> bool:
        """Ground truth, from the consent service: every required participant consents to take part now."""
        case = self.consent_cases.get(case_id)
        if case is None or not case.participants:
            return False
        return all(
            case.consent(p.person_id, PARTICIPATION) is consent.ConsentStatus.given
            for p in case.participants
            if p.required
        )

    def check_rule_1(self, facts: list[EventData]) -> None:
        about_a_meeting = (MeetingBooked, MeetingRescheduled, MeetingProposed, MeetingHeld, AgreementRecorded)
        for fact in facts:
            if isinstance(fact, about_a_meeting):
                assert self.consents_now(fact.case_id), f"{fact.event_type} without every required consent"

    def check_invariants(self) -> None:
        for case_id, schedule in self.schedules.items():
            if schedule is not None and schedule.pending:
                assert self.consents_now(case_id), f"case {case_id} holds a meeting without every required consent"
        _no_overlaps([(b.resource, b.starts_at, b.ends_at) for b in self.book.bookings], "the resource book")
        held = [(r, s, e) for rs, s, e in self.ledger.values() for r in rs]
        _no_overlaps(held, "the emitted facts")
        from_facts = {(r, c, m, s, e) for (c, m), (rs, s, e) in self.ledger.items() for r in rs}
        in_book = {(b.resource, b.case_id, b.meeting_id, b.starts_at, b.ends_at) for b in self.book.bookings}
        assert from_facts == in_book, "the resource book disagrees with the facts emitted"

    def record_in_ledger(self, facts: list[EventData]) -> None:
        for fact in facts:
            if isinstance(fact, MeetingBooked | MeetingRescheduled):
                held = {scheduling.facilitator_key(f) for f in fact.facilitator_ids}
                held |= {scheduling.person_key(p) for p in fact.attendee_ids}
                held |= {scheduling.venue_key(fact.venue_id)} if fact.venue_id else set()
                self.ledger[(fact.case_id, fact.meeting_id)] = (frozenset(held), fact.starts_at, fact.ends_at)
            elif isinstance(fact, MeetingCancelled):
                del self.ledger[(fact.case_id, fact.meeting_id)]
            elif isinstance(fact, MeetingAttendeeRemoved):
                resources, starts, ends = self.ledger[(fact.case_id, fact.meeting_id)]
                released = resources - {scheduling.person_key(fact.person_id)}
                self.ledger[(fact.case_id, fact.meeting_id)] = (released, starts, ends)


def _no_overlaps(bookings: list[tuple[str, datetime, datetime]], where: str) -> None:
    for (r1, s1, e1), (r2, s2, e2) in itertools.combinations(bookings, 2):
        assert not (r1 == r2 and s1 < e2 and s2 < e1), f"{r1} is booked twice at once in {where}"


def new_world(in_custody: bool, sensitive: frozenset[str]) -> World:
    world = World(in_custody=in_custody, sensitive=sensitive)
    weekdays = [WeeklyHours(weekday=d, start=time(9), end=time(17)) for d in range(5)]
    for facilitator_id in FACILITATORS:
        world.to_scheduling(
            RegisterFacilitator(
                actor=STAFF,
                facilitator_id=facilitator_id,
                specialist=facilitator_id == "F1",
                working_hours=weekdays,
                timezone="UTC",
            )
        )
    world.to_scheduling(
        RegisterVenue(actor=STAFF, venue_id="C1", kind=VenueKind.community, name="Hall", timezone="UTC")
    )
    slot = VisitSlot(name="monday-morning", weekday=0, start=time(9), end=time(12))
    world.to_scheduling(
        RegisterVenue(actor=STAFF, venue_id="P1", kind=VenueKind.prison, name="HMP", visit_slots=[slot], timezone="UTC")
    )
    return world


def accepted(world: World, case_id: str) -> CaseAccepted:
    roles = (Role.victim, Role.offender, Role.supporter)
    participants = [
        CaseParticipant(
            person_id=person,
            role=role,
            required=role is not Role.supporter,
            in_custody=world.in_custody and role is Role.offender,
        )
        for person, role in zip(PEOPLE[case_id], roles, strict=False)
    ]
    sensitive = case_id in world.sensitive
    return CaseAccepted(
        case_id=case_id,
        crime_reference=f"CR-{case_id}",
        specialist_required=sensitive,
        risk_assessment_required=sensitive,
        sensitivity_reasons=[],
        participants=participants,
        decided_at=NOW,
        decided_by=Actor(kind="system", id="referral-service"),
        reason="eligible",
    )


# --- the steps ----------------------------------------------------------------------------------


def consent_decision(
    verb: str, case_id: str, person: str, purpose: str, themself: bool, decided_at: datetime | None = None
) -> EventData:
    model = {"give": GiveConsent, "decline": DeclineConsent, "withdraw": WithdrawConsent}[verb]
    return model(
        case_id=case_id,
        actor=Actor(kind="participant", id=person) if themself else STAFF,
        person_id=person,
        purpose=purpose,
        through=RecordedThrough.participant if themself else RecordedThrough.facilitator,
        method=RecordingMethod.in_person,
        decided_at=decided_at,
    )


def preparation_meeting(case_id: str, person: str) -> RecordPreparationMeeting:
    return RecordPreparationMeeting(
        case_id=case_id, actor=STAFF, person_id=person, met_at=NOW, method=RecordingMethod.in_person
    )


def prepare(world: World, case_id: str) -> None:
    """Every facilitator assigned (the specialist first), risk assessed, each party met, every consent given."""
    for facilitator_id in FACILITATORS:
        world.to_consent(AssignFacilitator(case_id=case_id, actor=STAFF, facilitator_id=facilitator_id))
    world.to_consent(
        RecordRiskAssessment(case_id=case_id, actor=STAFF, assessed_at=NOW, level=RiskLevel.low, safe_to_proceed=True)
    )
    for person in required_people(case_id):
        world.to_consent(preparation_meeting(case_id, person))
        world.to_consent(consent_decision("give", case_id, person, PARTICIPATION, themself=False))


cases = st.sampled_from(CASES)
STEPS: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
    "accept": st.tuples(st.just("accept"), cases),
    "consent": st.tuples(
        st.just("consent"),
        cases,
        st.sampled_from(("give", "give", "decline", "withdraw", "withdraw")),
        st.sampled_from(EVERYONE),
        st.sampled_from((PARTICIPATION, PARTICIPATION, sharing("statement"))),
        st.booleans(),
        # when the person decided, in hours from now: undated, dated back, or (rejected) too far ahead
        st.sampled_from((None, None, None, -48.0, 1.0)),
    ),
    "assign": st.tuples(st.just("assign"), cases, st.sampled_from((*FACILITATORS, UNREGISTERED))),
    "preparation": st.tuples(st.just("preparation"), cases, st.sampled_from(EVERYONE)),
    "risk": st.tuples(
        st.just("risk"),
        cases,
        st.sampled_from((True, True, True, False)),
        st.sampled_from((0.0, 0.0, -24.0, 1.0)),  # assessed: now, a day ago (older), or (rejected) an hour ahead
    ),
    "meeting": st.tuples(
        st.just("meeting"),
        cases,
        st.sampled_from(MEETINGS),
        st.sampled_from((MeetingKind.conference, MeetingKind.conference, MeetingKind.indirect)),
        st.sampled_from([*itertools.permutations(FACILITATORS, 2), ("F2", "F2")]),  # lead and co-facilitator
        st.sampled_from(("suitable", "suitable", *VENUES)),  # "suitable": the prison when in custody, else C1
        st.sampled_from(STARTS),
        st.sampled_from(HOURS),
        st.booleans(),
    ),
    "reschedule": st.tuples(st.just("reschedule"), cases, st.sampled_from(MEETINGS), st.sampled_from(STARTS)),
    "cancel": st.tuples(st.just("cancel"), cases, st.sampled_from(MEETINGS)),
    "held": st.tuples(
        st.just("held"), cases, st.sampled_from(MEETINGS), st.sampled_from((20.0, 20.0, 9.5))
    ),  # recorded at this hour on the meeting day (9.5 is before most meetings start)
    "availability": st.tuples(st.just("availability"), cases, st.sampled_from(EVERYONE), st.sampled_from(STARTS)),
    "agreement": st.tuples(st.just("agreement"), cases, st.sampled_from(MEETINGS), st.booleans()),
    "pay": st.tuples(st.just("pay"), cases, st.integers(min_value=1, max_value=6)),
    "complete": st.tuples(st.just("complete"), cases, st.sampled_from(ITEMS)),
    "close": st.tuples(
        st.just("close"),
        cases,
        st.sampled_from((ClosureReason.uncontactable, ClosureReason.not_suitable, ClosureReason.completed)),
    ),
}
# How often each kind of step comes up: booking and consent decisions most, closing a case least.
WEIGHTS = {
    "meeting": 16,
    "consent": 8,
    "reschedule": 5,
    "held": 3,
    "agreement": 3,
    "complete": 3,
    "accept": 1,
    "close": 1,
}
steps = st.sampled_from([kind for kind in STEPS for _ in range(WEIGHTS.get(kind, 2))]).flatmap(STEPS.__getitem__)


def apply(world: World, step: tuple[Any, ...]) -> None:
    kind, case_id, *args = step
    if kind == "accept":
        world.both(accepted(world, case_id))
    elif kind == "consent":
        verb, person, purpose, themself, decided = args
        decided_at = None if decided is None else NOW + timedelta(hours=decided)
        world.to_consent(consent_decision(verb, case_id, person, purpose, themself, decided_at))
    elif kind == "assign":
        (facilitator_id,) = args
        world.to_consent(AssignFacilitator(case_id=case_id, actor=STAFF, facilitator_id=facilitator_id))
    elif kind == "preparation":
        (person,) = args
        world.to_consent(preparation_meeting(case_id, person))
    elif kind == "risk":
        safe, hours = args
        world.to_consent(
            RecordRiskAssessment(
                case_id=case_id,
                actor=STAFF,
                assessed_at=NOW + timedelta(hours=hours),
                level=RiskLevel.high,
                safe_to_proceed=safe,
            )
        )
    elif kind == "meeting":
        meeting_id, meeting_kind, (lead, co), venue, start, hours, propose = args
        indirect = meeting_kind is MeetingKind.indirect
        if venue == "suitable":
            venue = "P1" if world.in_custody else "C1"
        model = ProposeMeeting if propose else BookMeeting
        world.to_scheduling(
            model(
                case_id=case_id,
                actor=STAFF,
                meeting_id=meeting_id,
                kind=meeting_kind,
                starts_at=at(start),
                ends_at=at(start + hours),
                lead_facilitator_id=lead,
                co_facilitator_id=None if indirect else co,
                venue_id=None if indirect else venue,
                visit_slot="monday-morning" if venue == "P1" and not indirect else None,
            )
        )
    elif kind == "reschedule":
        meeting_id, start = args
        world.to_scheduling(
            RescheduleMeeting(
                case_id=case_id, actor=STAFF, meeting_id=meeting_id, starts_at=at(start), ends_at=at(start + 1)
            )
        )
    elif kind == "cancel":
        (meeting_id,) = args
        world.to_scheduling(CancelMeeting(case_id=case_id, actor=STAFF, meeting_id=meeting_id, reason="staff ill"))
    elif kind == "held":
        # Recorded at that hour on the meeting day; the other steps keep the world's clock (NOW, before every
        # meeting), which the properties do not depend on.
        meeting_id, hour = args
        held = RecordMeetingHeld(case_id=case_id, actor=STAFF, meeting_id=meeting_id, held_at=at(hour))
        world.to_scheduling(held, now=at(hour))
    elif kind == "availability":
        person, start = args
        window = TimeWindow(starts_at=at(start), ends_at=at(start + 2))
        world.to_scheduling(RecordAvailability(case_id=case_id, actor=STAFF, person_id=person, windows=[window]))
    elif kind == "agreement":
        meeting_id, everyone = args
        items = [
            AgreementItemTerms(
                item_id="sorry", kind=ItemKind.apology, description="x", owner_id=OFFENDER, due_date=MONDAY
            ),
            AgreementItemTerms(
                item_id="repair",
                kind=ItemKind.reparation,
                description="y",
                owner_id=OFFENDER,
                due_date=MONDAY,
                amount_pence=5,
            ),
        ]
        consented = list(required_people(case_id)) if everyone else [OFFENDER]
        world.to_scheduling(
            RecordAgreement(case_id=case_id, actor=STAFF, meeting_id=meeting_id, items=items, consented_by=consented)
        )
    elif kind == "pay":
        (amount,) = args
        world.to_scheduling(
            RecordPayment(case_id=case_id, actor=STAFF, item_id="repair", amount_pence=amount, paid_at=at(21))
        )
    elif kind == "complete":
        (item_id,) = args
        world.to_scheduling(CompleteAgreementItem(case_id=case_id, actor=STAFF, item_id=item_id))
    elif kind == "close":
        (reason,) = args
        world.to_scheduling(CloseCase(case_id=case_id, actor=STAFF, closure_reason=reason, reason="no reply"))


SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# How far each case got before the sequence starts: mostly prepared, so that meetings get booked.
starting_points = st.sampled_from(("prepared", "prepared", "prepared", "accepted", "unknown"))


@SETTINGS
@given(
    in_custody=st.booleans(),
    sensitive=st.frozensets(cases),
    start=st.tuples(starting_points, starting_points),
    sequence=st.lists(steps, min_size=10, max_size=50),
)
def test_rule_1_no_meeting_without_consent_and_no_resource_booked_twice(
    in_custody: bool, sensitive: frozenset[str], start: tuple[str, str], sequence: list[tuple[Any, ...]]
) -> None:
    world = new_world(in_custody, sensitive)
    for case_id, starting_point in zip(CASES, start, strict=True):
        if starting_point != "unknown":
            world.both(accepted(world, case_id))
        if starting_point == "prepared":
            prepare(world, case_id)
    world.check_invariants()
    for step in sequence:
        apply(world, step)
        world.check_invariants()
    for case in world.consent_cases.values():
        assert case is None or consent.ConsentCase.from_json(case.to_json()) == case
    for schedule in world.schedules.values():
        assert schedule is None or scheduling.CaseSchedule.from_json(schedule.to_json()) == schedule
    assert scheduling.ResourceBook.from_json(world.book.to_json()) == world.book


@SETTINGS
@given(
    in_custody=st.booleans(),
    sequence=st.lists(steps, min_size=5, max_size=30),
    withdrawer=st.sampled_from(("V-A", OFFENDER)),
)
def test_a_withdrawal_at_any_point_leaves_nothing_booked_and_the_case_closed(
    in_custody: bool, sequence: list[tuple[Any, ...]], withdrawer: str
) -> None:
    world = new_world(in_custody, frozenset())
    world.both(accepted(world, "A"))
    prepare(world, "A")
    for step in sequence:
        apply(world, step)
    was_closed = world.consent_cases["A"] is not None and world.consent_cases["A"].closed  # type: ignore[union-attr]
    world.to_consent(consent_decision("withdraw", "A", withdrawer, PARTICIPATION, themself=True))
    world.check_invariants()
    schedule = world.schedules["A"]
    assert schedule is not None and schedule.closure is not None
    assert not [m for m in schedule.meetings if m.status is MeetingStatus.booked]
    if not was_closed:
        assert schedule.closure.reason in (ClosureReason.withdrawn, ClosureReason.declined)


booking_steps = st.sampled_from(["meeting"] * 6 + ["reschedule"] * 3 + ["consent"] * 2 + ["cancel", "held"]).flatmap(
    STEPS.__getitem__
)


@SETTINGS
@given(in_custody=st.booleans(), sequence=st.lists(booking_steps, min_size=5, max_size=40))
def test_two_ready_cases_sharing_an_offender_and_staff_never_double_book(
    in_custody: bool, sequence: list[tuple[Any, ...]]
) -> None:
    world = new_world(in_custody, frozenset())
    for case_id in CASES:
        world.both(accepted(world, case_id))
        prepare(world, case_id)
    for step in sequence:
        apply(world, step)
        world.check_invariants()
