"""Withdrawal first, with the topics as they really behave: each service reads each topic in order, but late.

The consent and scheduling domains run as the services do: consent reads ``rj.commands``, ``rj.referral`` and
``rj.scheduling``; scheduling reads ``rj.commands``, ``rj.referral`` and ``rj.consent``. Every topic is an
append-only log; each service has its own position in each, and hypothesis chooses which service reads which
topic next, so any delay and any interleaving between topics happens (never a reordering within one topic's
partition, which Kafka does not do). A crash between two steps rolls a transaction back, which is the same as
a read that has not happened yet, so it is covered too; a repeat is dropped by the inbox before the domain.

Properties, checked once everything has been read:
- a meeting is never booked, rescheduled, held or agreed by a command that comes after, in the case's command
  order, a withdrawal or decline the consent service accepted as stopping the case (DOMAIN rule 2);
- a withdrawal consent rejects, or one that cannot stop the case (sharing consent, a participant who is not
  required), does not stop it;
- nothing is left pending; a withdrawn case is closed with nothing booked; a held case has nothing booked;
- nothing is booked without every required participant's current consent (rule 1).

The same properties hold on a child victim's case, where a parent or guardian is required too: their withdrawal
or decline stops the case like the child's own, and a second parent staff add while commands fly may withdraw
before scheduling has heard they were added.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.commands import CommandRejected
from schemas.common import Actor
from schemas.consent import (
    PARTICIPATION,
    AddParticipant,
    AssignFacilitator,
    CaseHeld,
    CaseReadyForMeeting,
    CaseWithdrawn,
    DeclineConsent,
    GiveConsent,
    ParticipantAdded,
    PutCaseOnHold,
    RecordedThrough,
    RecordingMethod,
    RecordPreparationMeeting,
    RecordRiskAssessment,
    ResumeCase,
    RiskAssessmentRecorded,
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
    ClosureReason,
    FacilitatorRegistered,
    ItemKind,
    MeetingBooked,
    MeetingHeld,
    MeetingKind,
    MeetingRescheduled,
    MeetingStatus,
    RecordAgreement,
    RecordMeetingHeld,
    RegisterFacilitator,
    RegisterVenue,
    RescheduleMeeting,
    VenueKind,
    WeeklyHours,
)
from services.consent import domain as consent
from services.scheduling import domain as scheduling

NOW = datetime(2030, 1, 1, 8, 0, tzinfo=UTC)
MONDAY = date(2030, 1, 7)
STAFF = Actor(kind="staff", id="staff-1")
CASE = "A"
VICTIM, OFFENDER, SUPPORTER = "V", "O", "S"
GUARDIAN, SECOND_GUARDIAN, INTERPRETER = "G", "G2", "I"
FACILITATORS = ("F1", "F2")

COMMANDS, REFERRAL, CONSENT, SCHEDULING = "rj.commands", "rj.referral", "rj.consent", "rj.scheduling"
READS = {"consent": (COMMANDS, REFERRAL, SCHEDULING), "scheduling": (COMMANDS, REFERRAL, CONSENT)}
WRITES = {"consent": CONSENT, "scheduling": SCHEDULING}
CONSUMES = {"consent": consent.CONSUMES, "scheduling": scheduling.CONSUMES}


def at(hour: float) -> datetime:
    return datetime.combine(MONDAY, time(0), tzinfo=UTC) + timedelta(hours=hour)


@dataclass
class Fact:
    data: EventData
    cause: str  # the id of the message whose handling emitted it


@dataclass
class World:
    logs: dict[str, list[tuple[str, EventData]]] = field(
        default_factory=lambda: {t: [] for t in (COMMANDS, REFERRAL, CONSENT, SCHEDULING)}
    )
    read: dict[tuple[str, str], int] = field(default_factory=dict)
    consent_cases: dict[str, consent.ConsentCase | None] = field(default_factory=dict)
    schedules: dict[str, scheduling.CaseSchedule | None] = field(default_factory=dict)
    book: scheduling.ResourceBook = field(default_factory=scheduling.ResourceBook)
    emitted: list[Fact] = field(default_factory=list)
    count: int = 0

    def publish(self, topic: str, data: EventData) -> str:
        self.count += 1
        message_id = f"{topic}-{self.count}"
        self.logs[topic].append((message_id, data))
        return message_id

    def unread(self, service: str, topic: str) -> int:
        return len(self.logs[topic]) - self.read.get((service, topic), 0)

    def deliver(self, service: str, topic: str) -> None:
        """``service`` reads its next record of ``topic``, if any, and publishes what it decides."""
        position = self.read.get((service, topic), 0)
        if position >= len(self.logs[topic]):
            return
        self.read[(service, topic)] = position + 1
        message_id, data = self.logs[topic][position]
        if data.event_type not in CONSUMES[service]:
            return
        emits = (
            self.consent_takes(message_id, data) if service == "consent" else self.scheduling_takes(message_id, data)
        )
        for emit in emits:
            self.emitted.append(Fact(emit.data, message_id))
            self.publish(WRITES[service], emit.data)

    def consent_takes(self, message_id: str, data: EventData) -> list[consent.Emit]:
        if isinstance(data, FacilitatorRegistered):  # as the app does: to each case the facilitator is assigned to
            out = []
            for case_id, case in self.consent_cases.items():
                self.consent_cases[case_id], emits = consent.handle(case, data, command_id=message_id, now=NOW)
                out += emits
            return out
        case_id = data.case_id  # type: ignore[attr-defined]
        specialist = False if isinstance(data, AssignFacilitator) else None
        self.consent_cases[case_id], emits = consent.handle(
            self.consent_cases.get(case_id), data, command_id=message_id, now=NOW, registered_specialist=specialist
        )
        return emits

    def scheduling_takes(self, message_id: str, data: EventData) -> list[consent.Emit]:
        now = data.held_at if isinstance(data, RecordMeetingHeld) else NOW
        subject = scheduling.subject_of(data)
        case = None if isinstance(data, RegisterFacilitator | RegisterVenue) else self.schedules.get(subject)
        after, self.book, emits = scheduling.handle(case, self.book, data, command_id=message_id, now=now)
        if not isinstance(data, RegisterFacilitator | RegisterVenue):
            self.schedules[subject] = after
        return emits

    def drain(self, order: list[tuple[str, str]] | None = None) -> None:
        """Read everything, in the given order of (service, topic) first, then round robin until quiet."""
        for service, topic in order or []:
            self.deliver(service, topic)
        while any(self.unread(s, t) for s in READS for t in READS[s]):
            for service, topics in READS.items():
                for topic in topics:
                    self.deliver(service, topic)


def decision(verb: str, person: str, purpose: str = PARTICIPATION, themself: bool = True, reason: str | None = None):  # type: ignore[no-untyped-def]
    model = {"give": GiveConsent, "decline": DeclineConsent, "withdraw": WithdrawConsent}[verb]
    return model(
        case_id=CASE,
        actor=Actor(kind="participant", id=person) if themself else STAFF,
        person_id=person,
        purpose=purpose,
        through=RecordedThrough.participant if themself else RecordedThrough.facilitator,
        method=RecordingMethod.online,
        reason=reason,
    )


def ready_world(*, child: bool = False, extra: tuple[CaseParticipant, ...] = ()) -> World:
    """One case, ready for a meeting, everything read by everyone. A ``child`` victim's case has a parent or
    guardian, added by staff, who has been met and consents; ``extra`` participants come from upstream too, and
    consent."""
    world = World()
    weekdays = [WeeklyHours(weekday=d, start=time(9), end=time(17)) for d in range(5)]
    for f in FACILITATORS:
        world.publish(
            COMMANDS,
            RegisterFacilitator(
                actor=STAFF, facilitator_id=f, specialist=False, working_hours=weekdays, timezone="UTC"
            ),
        )
    world.publish(
        COMMANDS, RegisterVenue(actor=STAFF, venue_id="C1", kind=VenueKind.community, name="Hall", timezone="UTC")
    )
    participants = [
        CaseParticipant(person_id=VICTIM, role=Role.victim, required=True, under_18=child),
        CaseParticipant(person_id=OFFENDER, role=Role.offender, required=True),
        CaseParticipant(person_id=SUPPORTER, role=Role.supporter, required=False),
        *extra,
    ]
    world.publish(
        REFERRAL,
        CaseAccepted(
            case_id=CASE,
            crime_reference="CR-A",
            specialist_required=False,
            risk_assessment_required=False,
            sensitivity_reasons=[],
            participants=participants,
            decided_at=NOW,
            decided_by=Actor(kind="system", id="referral-service"),
            reason="eligible",
        ),
    )
    world.drain()
    for f in FACILITATORS:
        world.publish(COMMANDS, AssignFacilitator(case_id=CASE, actor=STAFF, facilitator_id=f))
    if child:
        world.publish(COMMANDS, adding(GUARDIAN, Role.parent_guardian))
    for person in (VICTIM, OFFENDER, SUPPORTER, *([GUARDIAN] if child else []), *(p.person_id for p in extra)):
        world.publish(
            COMMANDS,
            RecordPreparationMeeting(
                case_id=CASE, actor=STAFF, person_id=person, met_at=NOW, method=RecordingMethod.phone
            ),
        )
        world.publish(COMMANDS, decision("give", person))
    world.drain()
    schedule = world.schedules[CASE]
    assert schedule is not None and schedule.ready
    return world


def adding(person: str, role: Role, language: str | None = None) -> AddParticipant:
    return AddParticipant(case_id=CASE, actor=STAFF, person_id=person, role=role, supports=VICTIM, language=language)


def booking(meeting_id: str, start: float) -> BookMeeting:
    return BookMeeting(
        case_id=CASE,
        actor=STAFF,
        meeting_id=meeting_id,
        kind=MeetingKind.conference,
        starts_at=at(start),
        ends_at=at(start + 1),
        lead_facilitator_id="F1",
        co_facilitator_id="F2",
        venue_id="C1",
    )


UNSAFE = RecordRiskAssessment(case_id=CASE, actor=STAFF, assessed_at=NOW, level=RiskLevel.high, safe_to_proceed=False)


def costs_readiness(data: EventData) -> bool:
    """A command that, if the consent service accepts it, costs the case its readiness: an unsafe assessment, the
    addition of a parent or guardian (required until they consent)."""
    if isinstance(data, RecordRiskAssessment):
        return not data.safe_to_proceed
    return isinstance(data, AddParticipant) and data.role is Role.parent_guardian


def readiness_first(world: World, emitted_before: int, sent_before: int) -> str | None:
    """Why a fact (the ``emitted_before``-th emitted, decided on a command after the first ``sent_before`` of
    rj.commands) should not have been, if so: one of those commands that costs readiness had no verdict yet, or
    consent accepted it and did not find the case ready again before the fact."""
    facts = world.emitted[:emitted_before]
    for message_id, data in world.logs[COMMANDS][:sent_before]:
        if not costs_readiness(data):
            continue
        verdicts = [
            k
            for k, f in enumerate(facts)
            if f.cause == message_id
            and (
                isinstance(f.data, RiskAssessmentRecorded | ParticipantAdded)
                or (isinstance(f.data, CommandRejected) and f.data.service == "consent")
            )
        ]
        if not verdicts:
            return f"decided while {data.event_type} sent before it awaited the consent service's verdict"
        if isinstance(facts[verdicts[0]].data, CommandRejected):
            continue
        if not any(isinstance(f.data, CaseReadyForMeeting) for f in facts[verdicts[0] :]):
            return f"decided after an accepted {data.event_type} sent before it, with no readiness since"
    return None


AGREEMENT = [
    AgreementItemTerms(item_id="sorry", kind=ItemKind.apology, description="x", owner_id=OFFENDER, due_date=MONDAY)
]

people = st.sampled_from((VICTIM, OFFENDER, SUPPORTER))
meetings = st.sampled_from(("M1", "M2"))
command = st.one_of(
    st.builds(booking, meetings, st.sampled_from((9.0, 11.0, 14.0))),
    st.builds(
        lambda m, s: RescheduleMeeting(case_id=CASE, actor=STAFF, meeting_id=m, starts_at=at(s), ends_at=at(s + 1)),
        meetings,
        st.sampled_from((10.0, 15.0)),
    ),
    st.builds(lambda m: RecordMeetingHeld(case_id=CASE, actor=STAFF, meeting_id=m, held_at=at(20)), meetings),
    st.builds(
        lambda m: RecordAgreement(
            case_id=CASE, actor=STAFF, meeting_id=m, items=AGREEMENT, consented_by=[VICTIM, OFFENDER]
        ),
        meetings,
    ),
    st.builds(lambda m: CancelMeeting(case_id=CASE, actor=STAFF, meeting_id=m, reason="ill"), meetings),
    # Withdrawals and declines that stop the case, that cannot (sharing, the supporter), and that consent
    # rejects (staff declining for someone without a reason; someone else speaking for the victim).
    st.builds(lambda p: decision("withdraw", p), people),
    st.builds(lambda p: decision("withdraw", p, sharing("statement")), people),
    st.builds(lambda p: decision("decline", p, themself=False), people),
    st.builds(lambda p: decision("decline", p, themself=False, reason="told us by phone"), people),
    st.just(
        WithdrawConsent(
            case_id=CASE,
            actor=Actor(kind="participant", id=OFFENDER),
            person_id=VICTIM,
            through=RecordedThrough.participant,
            method=RecordingMethod.online,
        )
    ),
    st.just(PutCaseOnHold(case_id=CASE, actor=STAFF, concern="a threat", raised_by="the police")),
    st.just(PutCaseOnHold(case_id=CASE, actor=Actor(kind="participant", id=VICTIM), concern="x", raised_by="me")),
    st.just(ResumeCase(case_id=CASE, actor=STAFF, reason="police checked")),
    st.just(
        RecordRiskAssessment(case_id=CASE, actor=STAFF, assessed_at=NOW, level=RiskLevel.low, safe_to_proceed=True)
    ),
    # A re-assessment that finds it unsafe, and a parent or guardian added (required: the case is not ready until
    # they consent): each costs the case its readiness, which consent says on another topic.
    st.just(UNSAFE),
    st.just(adding(SECOND_GUARDIAN, Role.parent_guardian)),
)
# On a child victim's case: the parent's decisions, a second parent and an interpreter added while commands fly
# (their withdrawals may reach scheduling before it hears they were added), and someone who never takes part.
family = st.sampled_from((GUARDIAN, SECOND_GUARDIAN, INTERPRETER, "nobody"))
child_command = st.one_of(
    command,
    st.builds(lambda p: decision("withdraw", p), family),
    st.builds(lambda p: decision("decline", p, themself=False, reason="told us by phone"), family),
    st.builds(lambda p: decision("give", p), family),
    st.builds(lambda p: decision("withdraw", p, sharing("statement")), family),
    st.just(adding(SECOND_GUARDIAN, Role.parent_guardian)),
    st.just(adding(INTERPRETER, Role.interpreter, "pl")),
    st.builds(
        lambda p: RecordPreparationMeeting(
            case_id=CASE, actor=STAFF, person_id=p, met_at=NOW, method=RecordingMethod.phone
        ),
        family,
    ),
)
reader = st.sampled_from([(s, t) for s in READS for t in READS[s]])
step = st.one_of(st.tuples(st.just("send"), command), st.tuples(st.just("read"), reader))
child_step = st.one_of(st.tuples(st.just("send"), child_command), st.tuples(st.just("read"), reader))

ABOUT_A_MEETING = (MeetingBooked, MeetingRescheduled, MeetingHeld, AgreementRecorded)


def check(world: World) -> None:
    order = {message_id: i for i, (message_id, _) in enumerate(world.logs[COMMANDS])}
    stopped_by = [order[f.cause] for f in world.emitted if isinstance(f.data, CaseWithdrawn) and f.cause in order]
    for fact in world.emitted:
        if isinstance(fact.data, ABOUT_A_MEETING) and fact.cause in order:
            assert not any(w < order[fact.cause] for w in stopped_by), (
                f"{fact.data.event_type} by a command sent after a withdrawal the consent service accepted"
            )
    check_readiness_first(world)
    case = world.consent_cases[CASE]
    schedule = world.schedules[CASE]
    assert case is not None and schedule is not None
    assert schedule.stops_pending == (), "a withdrawal or hold is still pending after everything was read"
    booked = [m for m in schedule.meetings if m.status is MeetingStatus.booked]
    if case.withdrawn:
        assert schedule.closure is not None and schedule.closure.reason in (
            ClosureReason.withdrawn,
            ClosureReason.declined,
        )
        assert not booked
    elif schedule.closure is not None:
        assert schedule.closure.reason not in (ClosureReason.withdrawn, ClosureReason.declined), (
            "a withdrawal the consent service did not accept as stopping the case stopped it"
        )
    if case.hold is not None and schedule.closure is None:
        assert schedule.held and not booked
    if booked:
        required = [p.person_id for p in case.participants if p.required]
        assert all(case.consent(p, PARTICIPATION) is consent.ConsentStatus.given for p in required)
        assert case.hold is None


def check_readiness_first(world: World) -> None:
    """Nothing about a meeting is decided on a command sent after an unsafe assessment or the addition of a
    parent or guardian until the consent service has decided it and, if it accepted it, found the case ready
    again (read in the case's order, however late the consent service's facts come)."""
    order = {message_id: i for i, (message_id, _) in enumerate(world.logs[COMMANDS])}
    for k, fact in enumerate(world.emitted):
        if isinstance(fact.data, ABOUT_A_MEETING) and fact.cause in order:
            why = readiness_first(world, k, order[fact.cause])
            assert why is None, f"{fact.data.event_type} {why}"


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(steps=st.lists(step, min_size=5, max_size=60), tail=st.lists(reader, max_size=20))
def test_rule_2_withdrawal_first_under_any_delay_between_the_topics(
    steps: list[tuple[Any, ...]], tail: list[Any]
) -> None:
    world = ready_world()
    for kind, arg in steps:
        if kind == "send":
            world.publish(COMMANDS, arg)
        else:
            world.deliver(*arg)
    world.drain(tail)
    check(world)


@SETTINGS
@given(steps=st.lists(child_step, min_size=5, max_size=60), tail=st.lists(reader, max_size=20))
def test_withdrawal_first_with_a_parent_or_guardian_under_any_delay_between_the_topics(
    steps: list[tuple[Any, ...]], tail: list[Any]
) -> None:
    world = ready_world(child=True)
    for kind, arg in steps:
        if kind == "send":
            world.publish(COMMANDS, arg)
        else:
            world.deliver(*arg)
    world.drain(tail)
    check(world)


@SETTINGS
@given(
    withdrawer=st.sampled_from((VICTIM, OFFENDER, GUARDIAN)),
    bookings=st.lists(st.sampled_from((9.0, 11.0, 14.0)), min_size=1, max_size=3),
    scheduling_first=st.integers(min_value=0, max_value=8),
)
def test_a_withdrawal_sent_before_a_booking_never_gives_a_booked_meeting_however_late_consent_is(
    withdrawer: str, bookings: list[float], scheduling_first: int
) -> None:
    """The reported race: the booking is sent after the withdrawal; scheduling reads both, and as much else as
    it likes, before the consent service has decided anything. On a child's case, the parent's withdrawal too."""
    world = ready_world(child=withdrawer == GUARDIAN)
    world.publish(COMMANDS, decision("withdraw", withdrawer))
    for i, start in enumerate(bookings):
        world.publish(COMMANDS, booking(f"M{i}", start))
    for _ in range(scheduling_first + len(bookings) + 1):
        world.deliver("scheduling", COMMANDS)
    assert not [f for f in world.emitted if isinstance(f.data, MeetingBooked)]
    world.drain()
    check(world)
    assert not [f for f in world.emitted if isinstance(f.data, MeetingBooked)]
    schedule = world.schedules[CASE]
    assert schedule is not None and schedule.closure is not None


def test_a_second_parents_withdrawal_that_overtakes_their_being_added_holds_the_booking_and_stops_the_case() -> None:
    world = ready_world(child=True)
    world.publish(COMMANDS, adding(SECOND_GUARDIAN, Role.parent_guardian))
    world.publish(COMMANDS, decision("withdraw", SECOND_GUARDIAN))
    world.publish(COMMANDS, booking("M1", 9.0))
    for _ in range(3):
        world.deliver("scheduling", COMMANDS)  # before consent has decided anything
    assert not [f for f in world.emitted if isinstance(f.data, MeetingBooked)]
    world.drain()
    check(world)
    schedule = world.schedules[CASE]
    assert schedule is not None and schedule.closure is not None and schedule.closure.withdrawn_by == SECOND_GUARDIAN


def test_a_rejected_withdrawal_and_a_sharing_withdrawal_do_not_stop_the_case() -> None:
    world = ready_world()
    impostor = WithdrawConsent(
        case_id=CASE,
        actor=Actor(kind="participant", id=OFFENDER),
        person_id=VICTIM,
        through=RecordedThrough.participant,
        method=RecordingMethod.online,
    )
    world.publish(COMMANDS, impostor)
    world.publish(COMMANDS, decision("withdraw", VICTIM, sharing("statement")))
    world.publish(COMMANDS, decision("withdraw", SUPPORTER))
    world.deliver("scheduling", COMMANDS)  # the impostor's withdrawal: pending until consent rejects it
    world.publish(COMMANDS, booking("M1", 9.0))
    world.deliver("scheduling", COMMANDS)
    world.deliver("scheduling", COMMANDS)
    world.deliver("scheduling", COMMANDS)
    world.deliver("scheduling", COMMANDS)  # the booking: refused while the withdrawal is pending
    assert not [f for f in world.emitted if isinstance(f.data, MeetingBooked)]
    world.drain()
    schedule = world.schedules[CASE]
    assert schedule is not None and schedule.closure is None and schedule.stops_pending == ()
    world.publish(COMMANDS, booking("M2", 14.0))  # sent again once consent refused the withdrawal: booked
    world.drain()
    assert [f.data.meeting_id for f in world.emitted if isinstance(f.data, MeetingBooked)] == ["M2"]
    check(world)


def test_a_hold_sent_before_a_booking_refuses_it_and_cancels_what_was_booked() -> None:
    world = ready_world()
    world.publish(COMMANDS, booking("M1", 9.0))
    world.drain()
    world.publish(COMMANDS, PutCaseOnHold(case_id=CASE, actor=STAFF, concern="a threat", raised_by="the police"))
    world.publish(COMMANDS, booking("M2", 14.0))
    world.deliver("scheduling", COMMANDS)
    world.deliver("scheduling", COMMANDS)
    world.drain()
    assert [f.data.meeting_id for f in world.emitted if isinstance(f.data, MeetingBooked)] == ["M1"]
    assert any(isinstance(f.data, CaseHeld) for f in world.emitted)
    schedule = world.schedules[CASE]
    assert schedule is not None and schedule.held and not schedule.pending
    check(world)
    # Resumed and re-assessed: ready again, and a booking goes ahead.
    world.publish(COMMANDS, ResumeCase(case_id=CASE, actor=STAFF, reason="police checked"))
    world.publish(
        COMMANDS,
        RecordRiskAssessment(case_id=CASE, actor=STAFF, assessed_at=NOW, level=RiskLevel.low, safe_to_proceed=True),
    )
    world.drain()
    world.publish(COMMANDS, booking("M3", 14.0))
    world.drain()
    assert [f.data.meeting_id for f in world.emitted if isinstance(f.data, MeetingBooked)] == ["M1", "M3"]
    check(world)


@SETTINGS
@given(
    first=st.sampled_from(("unsafe", "parent")),
    bookings=st.lists(st.sampled_from((9.0, 11.0, 14.0)), min_size=1, max_size=3),
    scheduling_first=st.integers(min_value=0, max_value=8),
)
def test_an_unsafe_assessment_or_a_parent_added_before_a_booking_holds_it_however_late_consent_is(
    first: str, bookings: list[float], scheduling_first: int
) -> None:
    """Staff send an unsafe re-assessment (or add a parent or guardian), then a booking; scheduling reads both, and
    as much else as it likes, before the consent service has said the case is not ready: nothing is booked."""
    world = ready_world()
    world.publish(COMMANDS, UNSAFE if first == "unsafe" else adding(SECOND_GUARDIAN, Role.parent_guardian))
    for i, start in enumerate(bookings):
        world.publish(COMMANDS, booking(f"M{i}", start))
    for _ in range(scheduling_first + len(bookings) + 1):
        world.deliver("scheduling", COMMANDS)
    assert not [f for f in world.emitted if isinstance(f.data, MeetingBooked)]
    world.drain()
    check(world)
    assert not [f for f in world.emitted if isinstance(f.data, MeetingBooked)]
    schedule = world.schedules[CASE]
    assert schedule is not None and schedule.closure is None and not schedule.ready and schedule.stops_pending == ()


def test_a_safe_assessment_stops_nothing_and_a_rejected_one_lifts_the_wait() -> None:
    world = ready_world()
    safe = RecordRiskAssessment(case_id=CASE, actor=STAFF, assessed_at=NOW, level=RiskLevel.low, safe_to_proceed=True)
    world.publish(COMMANDS, safe)
    world.publish(COMMANDS, booking("M1", 9.0))
    world.deliver("scheduling", COMMANDS)
    world.deliver("scheduling", COMMANDS)
    assert [f.data.meeting_id for f in world.emitted if isinstance(f.data, MeetingBooked)] == ["M1"]
    # An unsafe one dated in the future is refused by consent: the case goes on once that is read.
    future = UNSAFE.model_copy(update={"assessed_at": NOW + timedelta(days=30)})
    world.publish(COMMANDS, future)
    world.publish(COMMANDS, booking("M2", 14.0))
    world.deliver("scheduling", COMMANDS)
    world.deliver("scheduling", COMMANDS)
    assert [f.data.meeting_id for f in world.emitted if isinstance(f.data, MeetingBooked)] == ["M1"]
    world.drain()
    schedule = world.schedules[CASE]
    assert schedule is not None and schedule.ready and schedule.stops_pending == ()
    world.publish(COMMANDS, booking("M3", 14.0))
    world.drain()
    assert [f.data.meeting_id for f in world.emitted if isinstance(f.data, MeetingBooked)] == ["M1", "M3"]
    check(world)


def test_an_unsafe_verdict_read_before_scheduling_knows_the_case_is_remembered_for_its_command() -> None:
    """Scheduling, lagging on rj.referral and rj.commands, reads consent's unsafe verdict on a case it has never
    heard of, then the assessment command itself: the verdict came first, so nothing is left pending for ever."""
    verdict = RiskAssessmentRecorded(
        case_id=CASE,
        assessed_at=NOW,
        level=RiskLevel.high,
        safe_to_proceed=False,
        recorded_at=NOW,
        recorded_by=STAFF,
        command_id="assess-1",
    )
    book = scheduling.ResourceBook()
    case, book, emits = scheduling.handle(None, book, verdict, command_id="verdict-1", now=NOW)
    assert case is not None and emits == []
    case, book, emits = scheduling.handle(case, book, UNSAFE, command_id="assess-1", now=NOW)
    assert case is not None and case.stops_pending == ()
