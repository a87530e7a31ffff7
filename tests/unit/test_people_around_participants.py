"""People around the participants (DOMAIN): a parent or guardian of a participant under 18, supporters, advocates
or intermediaries and interpreters, added by staff (``rj.participant.add``), each a participant with a role.

The consent service decides who takes part and what readiness needs; the scheduling service learns them from
consent's facts and follows a parent or guardian's withdrawal as it follows the participant's own."""

from __future__ import annotations

import pytest

from schemas.commands import CommandRejected
from schemas.common import Actor
from schemas.consent import (
    PARTICIPATION,
    AddParticipant,
    CaseReadinessLost,
    CaseReadyForMeeting,
    CaseWithdrawalReason,
    CaseWithdrawn,
    ConsentDeclined,
    ConsentGiven,
    ConsentWithdrawn,
    FacilitatorAssigned,
    ParticipantAdded,
)
from schemas.envelope import EventData
from schemas.pii import pii_fields
from schemas.referral import CaseAccepted, CaseParticipant, Role, SensitivityReason
from schemas.scheduling import CaseClosed, ClosureReason, MeetingBooked
from services.consent import domain
from services.consent.domain import ConsentCase
from services.scheduling import domain as scheduling
from tests.unit.test_consent_domain import (
    CASE,
    FACILITATOR,
    NOW,
    assign,
    decline,
    facts,
    give,
    met,
    rejection,
    risk,
    run,
    withdraw,
)
from tests.unit.test_scheduling_domain import World, plan

CHILD, OFFENDER, GUARDIAN = "victim-1", "offender-1", "guardian-1"


def child_victims_case() -> ConsentCase:
    """Accepted: a victim under 18 (so a sensitive case) and an adult offender, both prepared and consenting;
    assessed, with a specialist facilitator. Everything but a parent or guardian."""
    accepted = CaseAccepted(
        case_id=CASE,
        crime_reference="CR-1",
        specialist_required=True,
        risk_assessment_required=True,
        sensitivity_reasons=[SensitivityReason.victim_under_18],
        participants=[
            CaseParticipant(person_id=CHILD, role=Role.victim, required=True, under_18=True),
            CaseParticipant(person_id=OFFENDER, role=Role.offender, required=True),
        ],
        decided_at=NOW,
        decided_by=Actor(kind="system", id="referral-service"),
        reason="eligible",
    )
    case, emits = run(None, accepted, risk(), assign("fac-senior"), met(CHILD), met(OFFENDER), give(CHILD))
    case, more = run(case, give(OFFENDER))
    assert case is not None and CommandRejected not in facts(emits + more), emits + more
    return case


def add(person: str, role: Role, supports: str = CHILD, **kwargs: object) -> AddParticipant:
    kwargs.setdefault("actor", FACILITATOR)
    return AddParticipant(case_id=CASE, person_id=person, role=role, supports=supports, **kwargs)  # type: ignore[arg-type]


def with_guardian() -> ConsentCase:
    """The child's case, ready: a parent has been added, met and has consented."""
    case, emits = run(child_victims_case(), add(GUARDIAN, Role.parent_guardian), met(GUARDIAN), give(GUARDIAN))
    assert case is not None and case.ready, emits
    return case


# --- the consent service ------------------------------------------------------------------------


def test_under_18_needs_a_parent_or_guardians_consent_as_well_as_their_own() -> None:
    case = child_victims_case()
    assert case.consent(CHILD, PARTICIPATION) is domain.ConsentStatus.given
    assert not case.ready
    assert domain.readiness_gaps(case) == [f"a parent or guardian for {CHILD} (victim, under 18)"]

    case, emits = run(case, add(GUARDIAN, Role.parent_guardian, reason="mother; the victim is 15"))
    assert facts(emits) == [ParticipantAdded]
    assert case is not None and domain.readiness_gaps(case) == [
        f"participation consent from {GUARDIAN} (parent_guardian)",
        f"a preparation meeting with {GUARDIAN} (parent_guardian)",
    ]
    case, emits = run(case, met(GUARDIAN), give(GUARDIAN))
    assert facts(emits)[-2:] == [ConsentGiven, CaseReadyForMeeting]
    (ready,) = [e.data for e in emits if isinstance(e.data, CaseReadyForMeeting)]
    assert {p.person_id for p in ready.participants if p.required} == {CHILD, OFFENDER, GUARDIAN}


def test_a_parent_or_guardian_of_a_victim_or_offender_is_required_as_they_are() -> None:
    case, emits = run(child_victims_case(), add(GUARDIAN, Role.parent_guardian))
    (added,) = [e.data for e in emits if isinstance(e.data, ParticipantAdded)]
    assert added.participant == CaseParticipant(
        person_id=GUARDIAN, role=Role.parent_guardian, required=True, supports=CHILD
    )


@pytest.mark.parametrize("decision", [withdraw, decline])
def test_a_parent_or_guardians_withdrawal_or_decline_stops_the_case_like_the_childs_own(decision: object) -> None:
    case, emits = run(with_guardian(), decision(GUARDIAN))  # type: ignore[operator]
    assert facts(emits) in ([ConsentWithdrawn, CaseWithdrawn], [ConsentDeclined, CaseWithdrawn])
    stopped = emits[-1].data
    assert isinstance(stopped, CaseWithdrawn) and stopped.reason is CaseWithdrawalReason.consent_withdrawn
    assert case is not None and case.withdrawn and not case.ready


def test_a_parent_or_guardian_declining_before_consenting_stops_the_case_as_declined() -> None:
    case, _ = run(child_victims_case(), add(GUARDIAN, Role.parent_guardian), met(GUARDIAN))
    case, emits = run(case, decline(GUARDIAN))
    assert facts(emits) == [ConsentDeclined, CaseWithdrawn]
    assert emits[-1].data.reason is CaseWithdrawalReason.consent_declined  # type: ignore[attr-defined]


def test_a_second_parent_added_to_a_ready_case_takes_its_readiness_until_they_consent() -> None:
    case, emits = run(with_guardian(), add("guardian-2", Role.parent_guardian))
    assert facts(emits) == [CaseReadinessLost, ParticipantAdded]  # the verdict on the command comes last
    assert "participation consent from guardian-2 (parent_guardian)" in emits[0].data.reason  # type: ignore[attr-defined]
    case, emits = run(case, met("guardian-2"), give("guardian-2"))
    assert facts(emits)[-1] is CaseReadyForMeeting


def test_supporters_advocates_and_interpreters_do_not_block_readiness_and_their_decisions_stop_nothing() -> None:
    people = [
        add("supporter-1", Role.supporter),
        add("advocate-1", Role.advocate, supports=OFFENDER),
        add("interpreter-1", Role.interpreter, supports=GUARDIAN, language="pl"),
    ]
    case, emits = run(with_guardian(), *people)
    assert facts(emits) == [ParticipantAdded] * 3
    assert case is not None and case.ready
    assert {p.person_id: p.required for p in case.participants if p.supports} == {
        GUARDIAN: True,
        "supporter-1": False,
        "advocate-1": False,
        "interpreter-1": False,
    }
    # Their consent is theirs to give (scheduling books only those who consent); a "no" stops nothing.
    case, emits = run(case, give("advocate-1", themself=True), withdraw("interpreter-1"), decline("supporter-1"))
    assert facts(emits) == [ConsentGiven, ConsentWithdrawn, ConsentDeclined]
    assert case is not None and case.ready and not case.withdrawn


def test_an_interpreter_is_recorded_with_the_language_they_interpret() -> None:
    _, emits = run(child_victims_case(), add("interpreter-1", Role.interpreter, supports=OFFENDER, language="pa-IN"))
    (added,) = [e.data for e in emits if isinstance(e.data, ParticipantAdded)]
    assert (added.participant.role, added.participant.supports, added.participant.language) == (
        Role.interpreter,
        OFFENDER,
        "pa-IN",
    )


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (
            add("someone", Role.supporter, actor=Actor(kind="participant", id=CHILD)),
            "only staff may send rj.participant.add",
        ),
        (add("victim-2", Role.victim), "a victim comes from the referral, not from staff"),
        (add("offender-2", Role.offender), "a offender comes from the referral, not from staff"),
        (add(OFFENDER, Role.supporter), f"{OFFENDER} already takes part in this case"),
        (add(CHILD, Role.parent_guardian), f"{CHILD} already takes part in this case"),
        (
            add("x", Role.supporter, supports="nobody"),
            "nobody is not a participant in this case: nobody to take part for",
        ),
        (add("interpreter-1", Role.interpreter), "an interpreter needs the language they interpret"),
        (add("supporter-1", Role.supporter, language="en"), "only an interpreter has a language"),
    ],
)
def test_adding_someone_is_refused_with_the_reason(command: AddParticipant, reason: str) -> None:
    case = child_victims_case()
    after, emits = run(case, command)
    assert rejection(emits) == reason
    assert after == case


def test_a_parent_or_guardian_takes_part_only_for_a_victim_or_offender() -> None:
    case, _ = run(child_victims_case(), add("supporter-1", Role.supporter))
    after, emits = run(case, add(GUARDIAN, Role.parent_guardian, supports="supporter-1"))
    assert rejection(emits) == "a parent or guardian takes part for a victim or offender; supporter-1 is a supporter"
    assert after == case


def test_nobody_is_added_to_a_withdrawn_closed_or_unknown_case() -> None:
    withdrawn, _ = run(child_victims_case(), withdraw(OFFENDER))
    assert rejection(run(withdrawn, add(GUARDIAN, Role.parent_guardian))[1]).startswith("case is withdrawn")
    closed, _ = run(
        child_victims_case(),
        CaseClosed(case_id=CASE, reason=ClosureReason.not_suitable, closed_at=NOW, closed_by=FACILITATOR),
    )
    assert rejection(run(closed, add(GUARDIAN, Role.parent_guardian))[1]) == "case is closed"
    assert rejection(run(None, add(GUARDIAN, Role.parent_guardian))[1]).startswith("unknown case")


def test_an_added_participant_travels_as_ids_and_a_role_and_staff_words_are_personal_data() -> None:
    """Need-to-know: the fact is staff-only, names no contact details, and seals why the person was added."""
    assert not ParticipantAdded.participant_facing
    assert pii_fields(CaseParticipant) == set()
    assert set(CaseParticipant.model_fields) == {
        "person_id", "role", "required", "in_custody", "under_18", "supports", "language",
    }  # fmt: skip
    assert pii_fields(ParticipantAdded) == {"reason"}
    _, emits = run(child_victims_case(), add(GUARDIAN, Role.parent_guardian, reason="mother"))
    (added,) = [e.data for e in emits if isinstance(e.data, ParticipantAdded)]
    assert (added.added_by, added.added_at, added.reason) == (FACILITATOR, NOW, "mother")


# --- the scheduling service ---------------------------------------------------------------------


def tell(world: World, emits: list[domain.Emit]) -> None:
    """Deliver the consent service's facts to scheduling, as rj.consent would."""
    for emit in emits:
        if type(emit.data) in scheduling.HANDLERS:
            world.send(emit.data)


def schedule(world: World) -> scheduling.CaseSchedule:
    return world.case(CASE)


def booking() -> EventData:
    return plan(CASE, lead="F1", co="F2")


def guardian_world() -> World:
    """Scheduling has heard the child's case is ready, with the parent among its required participants, and that
    facilitators F1 (a specialist) and F2 are assigned to it."""
    world = World()
    _, emits = run(child_victims_case(), add(GUARDIAN, Role.parent_guardian), met(GUARDIAN), give(GUARDIAN))
    tell(world, emits)
    for facilitator in ("F1", "F2"):
        world.send(
            FacilitatorAssigned(
                case_id=CASE, facilitator_id=facilitator, specialist=True, assigned_at=NOW, assigned_by=FACILITATOR
            )
        )
    assert schedule(world).ready and schedule(world).participant(GUARDIAN) is not None
    return world


def test_scheduling_learns_an_added_parent_or_guardian_as_required() -> None:
    world = guardian_world()
    guardian = schedule(world).participant(GUARDIAN)
    assert guardian is not None and guardian.required and guardian.supports == CHILD
    assert GUARDIAN in schedule(world).consenting


def test_a_parent_or_guardians_withdrawal_holds_the_case_in_scheduling_until_consent_closes_it() -> None:
    world = guardian_world()
    command = withdraw(GUARDIAN, themself=True)
    world.send(command)
    assert [s.person_id for s in schedule(world).stops_pending] == [GUARDIAN]
    assert "withdrawal" in rejection(world.send(booking()))
    tell(world, run(with_guardian(), command)[1])
    closure = schedule(world).closure
    assert closure is not None and closure.reason is ClosureReason.withdrawn and closure.withdrawn_by == GUARDIAN
    assert schedule(world).stops_pending == ()


def test_a_withdrawal_by_someone_scheduling_does_not_know_yet_is_held_pending_until_consents_verdict() -> None:
    """A second parent added to a ready case withdraws at once: their withdrawal, sent after they were added, can
    reach scheduling before ``rj.participant.added`` does. It may stop the case: nothing is booked until consent
    has decided."""
    world = guardian_world()
    command = withdraw("guardian-2", themself=True)
    world.send(command)
    assert [s.person_id for s in schedule(world).stops_pending] == ["guardian-2"]
    assert "withdrawal" in rejection(world.send(booking()))
    _, emits = run(with_guardian(), add("guardian-2", Role.parent_guardian), command)
    assert facts(emits) == [CaseReadinessLost, ParticipantAdded, ConsentWithdrawn, CaseWithdrawn]
    tell(world, emits)
    assert schedule(world).stops_pending == () and schedule(world).closure is not None


def test_a_withdrawal_by_someone_who_is_not_a_participant_is_lifted_by_consents_rejection() -> None:
    world = guardian_world()
    command = withdraw("stranger", themself=True)
    after, world.book, _ = scheduling.handle(schedule(world), world.book, command, command_id="w-1", now=NOW)
    world.cases[CASE] = after
    assert schedule(world).stops_pending
    _, emits = domain.handle(with_guardian(), command, command_id="w-1", now=NOW)
    assert rejection(emits) == domain.REFUSAL_TO_A_PARTICIPANT, "a participant is not told who takes part"
    world.send(emits[0].data)
    assert schedule(world).stops_pending == () and schedule(world).closure is None
    assert facts(world.send(booking())) == [MeetingBooked]


def test_an_added_supporter_attends_only_once_they_consent_and_their_withdrawal_is_passed_over() -> None:
    world = guardian_world()
    case, emits = run(with_guardian(), add("supporter-1", Role.supporter))
    tell(world, emits)
    (booked,) = [e.data for e in world.send(booking()) if isinstance(e.data, MeetingBooked)]
    assert "supporter-1" not in booked.attendee_ids and GUARDIAN in booked.attendee_ids
    case, emits = run(case, give("supporter-1"))
    tell(world, emits)
    (booked,) = [
        e.data for e in world.send(plan(CASE, "M2", 14, lead="F1", co="F2")) if isinstance(e.data, MeetingBooked)
    ]
    assert "supporter-1" in booked.attendee_ids
    world.send(withdraw("supporter-1", themself=True))
    assert schedule(world).stops_pending == ()


def test_a_participant_added_before_scheduling_heard_the_case_accepted_is_kept() -> None:
    world = World()
    case = child_victims_case()
    _, emits = run(case, add(GUARDIAN, Role.parent_guardian))
    tell(world, emits)  # rj.consent overtook rj.referral
    accepted = CaseAccepted(
        case_id=CASE,
        crime_reference="CR-1",
        specialist_required=True,
        risk_assessment_required=True,
        sensitivity_reasons=[SensitivityReason.victim_under_18],
        participants=list(case.participants),
        decided_at=NOW,
        decided_by=Actor(kind="system", id="referral-service"),
        reason="eligible",
    )
    world.send(accepted)
    assert [p.person_id for p in schedule(world).participants] == [GUARDIAN, CHILD, OFFENDER]
    assert schedule(world).specialist_required
