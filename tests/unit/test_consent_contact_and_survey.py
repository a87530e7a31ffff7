"""The consent service's contact log, case notes, safe contact and satisfaction survey, as pure decisions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.commands import CommandRejected
from schemas.common import Actor, Channel
from schemas.consent import (
    NOTE_MAX_CHARS,
    AddCaseNote,
    AddParticipant,
    CaseNoteAdded,
    ContactAttemptRecorded,
    ContactMethod,
    ContactOutcome,
    PutCaseOnHold,
    RecordContactAttempt,
    RecordedThrough,
    RecordingMethod,
    RecordSafeContact,
    RecordSurveyResponse,
    SafeContactBreach,
    SafeContactRecorded,
    SurveyInvited,
    SurveyResponseRecorded,
)
from schemas.pii import pii_fields
from schemas.referral import CaseParticipant, Role
from schemas.scheduling import CaseClosed, ClosureReason
from services.consent import domain
from services.consent.contact import ContactLog
from services.consent.domain import ConsentCase
from services.consent.evaluation import survey_invitees
from services.runtime.decision import Emit
from tests.unit.test_consent_domain import (
    CASE,
    FACILITATOR,
    NOW,
    accepted,
    accepted_case,
    assign,
    decline,
    facts,
    give,
    met,
    ready_case,
    rejection,
    run,
    withdraw,
)

VICTIM, OFFENDER, SUPPORTER = "victim-1", "offender-1", "supporter-1"


def attempt(
    person: str = VICTIM,
    outcome: ContactOutcome = ContactOutcome.no_answer,
    method: ContactMethod = ContactMethod.phone,
    at_minutes: int = 0,
    actor: Actor = FACILITATOR,
) -> RecordContactAttempt:
    return RecordContactAttempt(
        case_id=CASE,
        actor=actor,
        person_id=person,
        attempted_at=NOW - timedelta(hours=2) + timedelta(minutes=at_minutes),
        method=method,
        outcome=outcome,
    )


def safe_contact(person: str = VICTIM, *channels: Channel, **kwargs: object) -> RecordSafeContact:
    fields: dict[str, object] = {
        "through": RecordedThrough.facilitator,
        "method": RecordingMethod.phone,
        "actor": FACILITATOR,
        **kwargs,
    }
    return RecordSafeContact(case_id=CASE, person_id=person, safe_channels=list(channels), **fields)  # type: ignore[arg-type]


def closed(reason: ClosureReason = ClosureReason.completed) -> CaseClosed:
    return CaseClosed(case_id=CASE, reason=reason, closed_at=NOW, closed_by=FACILITATOR)


def answer(person: str = VICTIM, *, score: int = 4, actor: Actor | None = None) -> RecordSurveyResponse:
    return RecordSurveyResponse(
        case_id=CASE,
        actor=actor or Actor(kind="participant", id=person),
        person_id=person,
        satisfied=True,
        score=score,
        comments="It helped me move on",
    )


def counts(emits: list[Emit]) -> list[int]:
    return [e.data.unanswered_in_a_row for e in emits if isinstance(e.data, ContactAttemptRecorded)]


BREACH_FIELDS = {"breached_safe_contact", "safe_contact_breach"}


def breach(emits: list[Emit]) -> tuple[bool, SafeContactBreach]:
    (fact,) = [e.data for e in emits if isinstance(e.data, ContactAttemptRecorded)]
    return fact.breached_safe_contact, fact.safe_contact_breach


def invited(emits: list[Emit]) -> list[str]:
    return [e.data.person_id for e in emits if isinstance(e.data, SurveyInvited)]


# --- contact log --------------------------------------------------------------------------------


def test_contact_attempts_count_the_unanswered_ones_since_the_person_was_last_reached() -> None:
    _, emits = run(
        accepted_case(),
        attempt(at_minutes=1),
        attempt(outcome=ContactOutcome.message_left, at_minutes=2),
        attempt(outcome=ContactOutcome.undeliverable, method=ContactMethod.letter, at_minutes=3),
        attempt(outcome=ContactOutcome.reached, at_minutes=4),
        attempt(at_minutes=5),
        attempt(OFFENDER, at_minutes=6),
    )
    assert counts(emits) == [1, 2, 3, 0, 1, 1]


def test_an_unanswered_attempt_recorded_late_does_not_count_when_they_were_reached_after_it() -> None:
    case, emits = run(accepted_case(), attempt(outcome=ContactOutcome.reached, at_minutes=10), attempt(at_minutes=5))
    assert counts(emits) == [0, 0]
    _, emits = run(case, attempt(at_minutes=20))
    assert counts(emits) == [1]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.booleans()), max_size=12))
def test_the_count_is_the_unanswered_attempts_after_the_latest_reached_one_in_any_recording_order(
    attempts: list[tuple[int, bool]],
) -> None:
    log = ContactLog(VICTIM)
    base = NOW - timedelta(hours=2)
    for minute, reached in attempts:
        log = log.after(
            base + timedelta(minutes=minute), ContactOutcome.reached if reached else ContactOutcome.no_answer
        )
    last_reached = max((m for m, r in attempts if r), default=None)
    expected = sum(1 for m, r in attempts if not r and (last_reached is None or m > last_reached))
    assert log.unanswered_in_a_row == expected


def test_a_contact_attempt_is_refused_for_an_unknown_case_or_person() -> None:
    _, emits = run(None, attempt())
    assert "unknown case" in rejection(emits)
    _, emits = run(accepted_case(), attempt("stranger-9"))
    assert rejection(emits) == "stranger-9 is not a participant in this case"


def test_rule_2_a_contact_attempt_is_refused_on_a_closed_or_withdrawn_case() -> None:
    case, _ = run(accepted_case(), closed(ClosureReason.not_suitable))
    _, emits = run(case, attempt())
    assert rejection(emits) == "case is closed"
    case, _ = run(ready_case(), withdraw(OFFENDER))
    _, emits = run(case, attempt())
    assert "case is withdrawn" in rejection(emits)


def test_a_contact_attempt_is_refused_while_the_case_is_on_hold() -> None:
    hold = PutCaseOnHold(case_id=CASE, actor=FACILITATOR, concern="threats", raised_by="caseworker")
    case, _ = run(accepted_case(), hold)
    _, emits = run(case, attempt())
    assert "on hold" in rejection(emits)


def test_rule_4_a_contact_attempt_on_a_sensitive_case_is_refused_before_the_risk_assessment() -> None:
    _, emits = run(accepted_case(sensitive=True), attempt())
    assert "a risk assessment must be recorded before any contact" in rejection(emits)


def test_a_contact_attempt_is_recorded_by_staff_only_and_not_in_the_future() -> None:
    _, emits = run(accepted_case(), attempt(actor=Actor(kind="participant", id=VICTIM)))
    assert rejection(emits) == "only staff may send rj.contact.record-attempt"
    _, emits = run(accepted_case(), attempt(at_minutes=600))
    assert "attempted_at" in rejection(emits) and "in the future" in rejection(emits)


# --- safe contact -------------------------------------------------------------------------------


def test_safe_contact_an_attempt_by_a_channel_the_record_does_not_list_is_flagged() -> None:
    case, emits = run(accepted_case(), safe_contact(VICTIM, Channel.email, Channel.phone))
    assert facts(emits) == [SafeContactRecorded]
    _, emits = run(case, attempt(method=ContactMethod.sms))
    assert breach(emits) == (True, SafeContactBreach.unsafe_channel)
    _, emits = run(case, attempt(method=ContactMethod.email))
    assert breach(emits) == (False, SafeContactBreach.none)
    _, emits = run(case, attempt(OFFENDER, method=ContactMethod.sms))  # someone else's record is not theirs
    assert breach(emits) == (False, SafeContactBreach.none)


def test_safe_contact_no_voicemail_flags_a_message_left_by_phone() -> None:
    case, _ = run(accepted_case(), safe_contact(VICTIM, Channel.phone, voicemail_ok=False))
    case, emits = run(case, attempt(outcome=ContactOutcome.message_left))
    assert breach(emits) == (True, SafeContactBreach.voicemail_not_allowed)
    _, emits = run(case, attempt(outcome=ContactOutcome.no_answer, at_minutes=1))
    assert breach(emits) == (False, SafeContactBreach.none) and counts(emits) == [2]


def test_safe_contact_no_letters_or_visits_to_a_shared_home_without_an_alternative_address() -> None:
    case, _ = run(accepted_case(), safe_contact(VICTIM, Channel.letter, letters_to_home_ok=False))
    for method in (ContactMethod.letter, ContactMethod.visit):
        _, emits = run(case, attempt(method=method))
        flagged, detail = breach(emits)
        assert flagged and detail is SafeContactBreach.no_safe_address
    case, _ = run(case, safe_contact(VICTIM, Channel.letter, alternative_address="c/o Victim Support, 1 High St"))
    _, emits = run(case, attempt(method=ContactMethod.letter))
    assert breach(emits) == (False, SafeContactBreach.none)


def test_safe_contact_the_latest_record_wins() -> None:
    case, _ = run(accepted_case(), safe_contact(VICTIM, Channel.sms), safe_contact(VICTIM, Channel.email))
    _, emits = run(case, attempt(method=ContactMethod.sms))
    assert breach(emits)[1] is SafeContactBreach.unsafe_channel
    assert case is not None and len(case.safe_contacts) == 1


def test_safe_contact_is_agreed_through_the_person_themself_or_a_facilitator() -> None:
    themself = Actor(kind="participant", id=VICTIM)
    _, emits = run(
        accepted_case(), safe_contact(VICTIM, Channel.email, through=RecordedThrough.participant, actor=themself)
    )
    assert facts(emits) == [SafeContactRecorded]
    _, emits = run(
        accepted_case(), safe_contact(OFFENDER, Channel.email, through=RecordedThrough.participant, actor=themself)
    )
    assert rejection(emits) == "an agreement through the participant must come from offender-1 themself"
    _, emits = run(accepted_case(), safe_contact(VICTIM, Channel.email, actor=themself))
    assert rejection(emits) == "an agreement through a facilitator must be recorded by a member of staff"
    _, emits = run(accepted_case(), safe_contact("stranger-9", Channel.email))
    assert rejection(emits) == "stranger-9 is not a participant in this case"


def test_safe_contact_is_recorded_on_a_held_or_withdrawn_case_but_not_a_closed_one() -> None:
    hold = PutCaseOnHold(case_id=CASE, actor=FACILITATOR, concern="threats", raised_by="caseworker")
    _, emits = run(accepted_case(), hold, safe_contact(VICTIM))
    assert facts(emits)[-1] is SafeContactRecorded
    _, emits = run(ready_case(), withdraw(OFFENDER), safe_contact(VICTIM))
    assert facts(emits)[-1] is SafeContactRecorded
    _, emits = run(accepted_case(), closed(), safe_contact(VICTIM))
    assert rejection(emits[-1:]) == "case is closed"


def test_rule_3_every_safe_contact_detail_is_personal_data() -> None:
    details = {
        "safe_channels",
        "voicemail_ok",
        "letters_to_home_ok",
        "alternative_address",
        "alternative_phone",
        "alternative_email",
    }
    assert details <= pii_fields(SafeContactRecorded)
    assert details <= pii_fields(RecordSafeContact)
    assert "person_id" not in pii_fields(SafeContactRecorded)  # it owns the details: their key seals them


# --- notes --------------------------------------------------------------------------------------


def test_a_case_note_is_staff_only_bounded_and_about_a_participant_if_anyone() -> None:
    note = AddCaseNote(case_id=CASE, actor=FACILITATOR, text="Prefers mornings", person_id=VICTIM)
    _, emits = run(accepted_case(), note)
    assert facts(emits) == [CaseNoteAdded] and emits[0].data.text == "Prefers mornings"  # type: ignore[attr-defined]
    _, emits = run(accepted_case(), note.model_copy(update={"actor": Actor(kind="participant", id=VICTIM)}))
    assert rejection(emits) == "only staff may send rj.case.add-note"
    _, emits = run(accepted_case(), note.model_copy(update={"person_id": "stranger-9"}))
    assert rejection(emits) == "stranger-9 is not a participant in this case"
    _, emits = run(None, note)
    assert "unknown case" in rejection(emits)
    _, emits = run(accepted_case(), closed(), note)
    assert rejection(emits[-1:]) == "case is closed"
    with pytest.raises(ValidationError):
        AddCaseNote(case_id=CASE, actor=FACILITATOR, text="x" * (NOTE_MAX_CHARS + 1))
    assert "text" in pii_fields(CaseNoteAdded)


# --- evaluation ---------------------------------------------------------------------------------


def test_the_survey_invites_victims_and_offenders_once_when_the_case_closes() -> None:
    case, emits = run(ready_case(), closed())
    assert invited(emits) == [VICTIM, OFFENDER]  # the supporter takes part for someone else: not invited
    _, emits = run(case, closed())
    assert emits == []


def test_rule_2_no_survey_invitation_on_a_case_closed_withdrawn_or_declined() -> None:
    for reason in (ClosureReason.withdrawn, ClosureReason.declined):
        _, emits = run(ready_case(), closed(reason))
        assert invited(emits) == []
    _, emits = run(ready_case(), withdraw(VICTIM), closed(ClosureReason.not_suitable))
    assert invited(emits) == []  # consent saw it withdrawn, whatever the closure says


def test_rule_2_a_participant_who_withdrew_or_declined_is_not_invited() -> None:
    _, emits = run(ready_case(), withdraw(SUPPORTER), closed())
    assert invited(emits) == [VICTIM, OFFENDER]
    guardian = AddParticipant(
        case_id=CASE, actor=FACILITATOR, person_id="guardian-1", role=Role.parent_guardian, supports=VICTIM
    )
    _, emits = run(ready_case(), guardian, closed(ClosureReason.not_suitable))
    assert invited(emits) == [VICTIM, OFFENDER, "guardian-1"]
    _, emits = run(accepted_case(), decline(SUPPORTER), closed(ClosureReason.not_suitable))
    assert invited(emits) == [VICTIM, OFFENDER]


def test_no_survey_invitation_when_nobody_may_be_contacted_at_closure() -> None:
    hold = PutCaseOnHold(case_id=CASE, actor=FACILITATOR, concern="threats", raised_by="caseworker")
    _, emits = run(ready_case(), hold, closed(ClosureReason.not_suitable))
    assert invited(emits) == []
    _, emits = run(accepted_case(sensitive=True), closed(ClosureReason.not_suitable))
    assert invited(emits) == []


def test_a_survey_response_is_recorded_once_from_someone_invited() -> None:
    case, _ = run(ready_case(), closed())
    case, emits = run(case, answer())
    assert facts(emits) == [SurveyResponseRecorded]
    response = emits[0].data
    assert isinstance(response, SurveyResponseRecorded)
    assert (response.role, response.score, response.satisfied) == (Role.victim, 4, True)
    assert "comments" in pii_fields(SurveyResponseRecorded)
    _, emits = run(case, answer())
    assert rejection(emits) == "victim-1 has already answered the satisfaction survey on this case"
    _, emits = run(case, answer(OFFENDER, actor=FACILITATOR))
    assert facts(emits) == [SurveyResponseRecorded]


def test_a_survey_response_is_refused_without_an_invitation() -> None:
    case, _ = run(ready_case(), closed())
    _, emits = run(case, answer(SUPPORTER, actor=FACILITATOR))
    assert rejection(emits) == "supporter-1 was not invited to the satisfaction survey on this case"
    _, emits = run(ready_case(), answer(actor=FACILITATOR))  # not closed: nobody invited yet
    assert rejection(emits) == "victim-1 was not invited to the satisfaction survey on this case"
    case, _ = run(ready_case(), closed(ClosureReason.withdrawn))
    _, emits = run(case, answer(actor=FACILITATOR))
    assert "was not invited" in rejection(emits)
    _, emits = run(case, answer())  # to the participant: the neutral refusal
    assert rejection(emits) == PROBE_MESSAGE
    _, emits = run(None, answer(actor=FACILITATOR))
    assert "unknown case" in rejection(emits)
    case, _ = run(ready_case(), closed())
    _, emits = run(case, answer(actor=Actor(kind="participant", id=OFFENDER)))
    assert rejection(emits) == PROBE_MESSAGE


@pytest.mark.parametrize("score", [0, 6, -1])
def test_a_survey_score_outside_1_to_5_is_refused_by_the_contract(score: int) -> None:
    with pytest.raises(ValidationError, match="score"):
        answer(score=score)


def test_a_closed_case_unknown_to_consent_invites_no_one() -> None:
    case, emits = run(None, closed())
    assert emits == [] and isinstance(case, ConsentCase) and case.closed


# --- review fixes: nothing one participant sends tells them another's status ----------------------


PROBE_MESSAGE = domain.SURVEY_REFUSAL_TO_A_PARTICIPANT


def test_rule_2_a_survey_response_for_someone_else_tells_the_sender_nothing_of_them() -> None:
    """The victim sending a response in the offender's name gets one neutral answer, whether the offender was
    invited (did not withdraw), already answered, was never invited, or is nobody on the case."""
    as_victim = Actor(kind="participant", id=VICTIM)
    invited_case, _ = run(ready_case(), closed())
    answered_case, _ = run(invited_case, answer(OFFENDER))
    not_invited_case, _ = run(ready_case(), closed(ClosureReason.withdrawn))
    answers = {
        rejection(run(case, answer(person, actor=as_victim))[1])
        for case in (invited_case, answered_case, not_invited_case, ready_case())
        for person in (OFFENDER, "stranger-9")
    }
    assert answers == {PROBE_MESSAGE}


def test_rule_2_a_consent_decision_for_someone_else_does_not_say_whether_they_take_part() -> None:
    as_victim = Actor(kind="participant", id=VICTIM)
    for decide in (withdraw, decline):
        for person in (OFFENDER, "stranger-9"):
            _, emits = run(ready_case(), decide(person, themself=True, actor=as_victim))
            assert rejection(emits) == f"a decision through the participant must come from {person} themself"
    for person in (OFFENDER, "stranger-9"):
        _, emits = run(accepted_case(), safe_contact(person, through=RecordedThrough.participant, actor=as_victim))
        assert rejection(emits) == f"an agreement through the participant must come from {person} themself"


# --- review fixes: the published count is the log's ---------------------------------------------


def test_a_reached_attempt_recorded_late_publishes_the_count_since_the_latest_reach() -> None:
    """Reached at 10:01, unanswered at 10:10, 10:11 and 10:12, then a "reached" at 10:05 recorded late: it
    changes nothing, and the fact says so (3), as the log does."""
    case, emits = run(
        accepted_case(),
        attempt(outcome=ContactOutcome.reached, at_minutes=1),
        attempt(at_minutes=10),
        attempt(at_minutes=11),
        attempt(at_minutes=12),
        attempt(outcome=ContactOutcome.reached, at_minutes=5),
    )
    assert counts(emits) == [0, 1, 2, 3, 3]
    assert case is not None and case.contact_log(VICTIM).unanswered_in_a_row == 3


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.booleans()), max_size=10))
def test_the_published_count_is_the_logs_count_after_each_attempt_in_any_recording_order(
    attempts: list[tuple[int, bool]],
) -> None:
    case: ConsentCase | None = accepted_case()
    for n, (minute, reached) in enumerate(attempts):
        outcome = ContactOutcome.reached if reached else ContactOutcome.no_answer
        case, emits = run(case, attempt(outcome=outcome, at_minutes=minute))
        seen = attempts[: n + 1]
        last_reached = max((m for m, r in seen if r), default=None)
        expected = sum(1 for m, r in seen if not r and (last_reached is None or m > last_reached))
        assert counts(emits) == [expected]
        assert case is not None and case.contact_log(VICTIM).unanswered_in_a_row == expected


# --- review fixes: an attempt that broke the safe-contact record is recorded, sealed ------------------


def test_rule_6_an_attempt_that_broke_the_safe_contact_record_is_recorded_with_a_staff_only_sealed_flag() -> None:
    case, _ = run(accepted_case(), safe_contact(VICTIM, Channel.letter, Channel.phone, letters_to_home_ok=False))
    case, emits = run(case, attempt(method=ContactMethod.letter, outcome=ContactOutcome.undeliverable))
    assert facts(emits) == [ContactAttemptRecorded] and counts(emits) == [1]
    flagged, detail = breach(emits)
    assert flagged and detail is SafeContactBreach.no_safe_address
    _, emits = run(case, attempt(at_minutes=1))  # a phone call the record allows: flag down, count goes on
    assert breach(emits) == (False, SafeContactBreach.none) and counts(emits) == [2]
    assert BREACH_FIELDS <= pii_fields(ContactAttemptRecorded)  # sealed (under the case's key), never in clear


def test_rule_3_no_rejection_of_a_contact_attempt_says_anything_of_the_safe_contact_record() -> None:
    restrictive = safe_contact(VICTIM, Channel.email, voicemail_ok=False, letters_to_home_ok=False)
    case, _ = run(accepted_case(), restrictive)
    for method in ContactMethod:
        for outcome in ContactOutcome:
            _, emits = run(case, attempt(method=method, outcome=outcome))
            assert facts(emits) == [ContactAttemptRecorded], (method, outcome)
    _, emits = run(case, attempt(method=ContactMethod.letter, actor=Actor(kind="participant", id=VICTIM)))
    assert rejection(emits) == "only staff may send rj.contact.record-attempt"


# --- review fixes: the person acting on the case is in touch ------------------------------------------


def test_the_person_acting_on_the_case_resets_their_count_of_unanswered_attempts() -> None:
    """Three calls went unanswered, then the person acted on the case themself (at ``NOW``, after the calls)."""
    unreached, _ = run(accepted_case(), assign(), *[attempt(at_minutes=m) for m in (1, 2, 3)])
    assert unreached is not None and unreached.contact_log(VICTIM).unanswered_in_a_row == 3
    for in_touch in (
        give(VICTIM, themself=True),
        withdraw(VICTIM, "share:statement", themself=True),
        decline(VICTIM, "share:statement", themself=True),
        met(VICTIM),
    ):
        case, emits = run(unreached, in_touch)
        assert CommandRejected not in facts(emits)
        assert case is not None and case.contact_log(VICTIM).unanswered_in_a_row == 0, in_touch
        _, emits = run(case, attempt(at_minutes=124))  # a call after it: the count starts again
        assert counts(emits) == [1]
    # Staff recording a decision for the person (by letter, or on their behalf) is not them in touch.
    case, _ = run(unreached, give(VICTIM))
    assert case is not None and case.contact_log(VICTIM).unanswered_in_a_row == 3


# --- review fixes: who is invited -----------------------------------------------------------------


def person(person_id: str, role: Role, *, required: bool = True, supports: str | None = None) -> CaseParticipant:
    return CaseParticipant(person_id=person_id, role=role, required=required, supports=supports)


def test_survey_invitees_leave_out_whoever_declined_or_withdrew_taking_part() -> None:
    """The pure policy: the case as the referral service makes it never reaches this (see ``evaluation``), so the
    filter is tested here and on a case the contract allows."""
    people = [
        person(VICTIM, Role.victim),
        person(OFFENDER, Role.offender),
        person("guardian-1", Role.parent_guardian, supports=VICTIM),
    ]
    for said_no in (set(), {VICTIM}, {"guardian-1"}, {VICTIM, OFFENDER, "guardian-1"}):
        invitees = survey_invitees(
            people,
            ClosureReason.completed,
            withdrawn_case=False,
            contact_barred=False,
            said_no=lambda p, no=said_no: p in no,  # type: ignore[misc]
            out_of_reach=lambda _: True,  # only on an uncontactable closure
        )
        assert [p.person_id for p in invitees] == [p.person_id for p in people if p.person_id not in said_no]


def test_rule_2_a_victim_who_is_not_required_and_declined_is_not_invited() -> None:
    """The contract allows a participant who is not required: a second victim whose decline stops nothing."""
    second = person("victim-2", Role.victim, required=False)
    event = accepted().model_copy(update={"participants": [*accepted().participants, second]})
    case, _ = domain.handle(None, event, command_id="accepted", now=NOW)
    _, emits = run(case, decline("victim-2", themself=True), closed())
    assert invited(emits) == [VICTIM, OFFENDER]


def test_an_uncontactable_closure_invites_nobody_the_service_could_not_reach() -> None:
    """The offender never answered; the victim was reached, then met. Closed uncontactable: only the victim is
    invited. A victim reached once but unanswered three times since is not invited either."""
    offender_silent = [attempt(OFFENDER, at_minutes=m) for m in (1, 2, 3)]
    case, _ = run(accepted_case(), attempt(outcome=ContactOutcome.reached), *offender_silent)
    _, emits = run(case, closed(ClosureReason.uncontactable))
    assert invited(emits) == [VICTIM]
    _, emits = run(case, closed(ClosureReason.not_suitable))  # any other closure: both, as before
    assert invited(emits) == [VICTIM, OFFENDER]
    gone_quiet, _ = run(case, *[attempt(at_minutes=m) for m in (4, 5, 6)])
    _, emits = run(gone_quiet, closed(ClosureReason.uncontactable))
    assert invited(emits) == []
    _, emits = run(gone_quiet, assign(), met(VICTIM), closed(ClosureReason.uncontactable))
    assert invited(emits) == [VICTIM]  # met after the calls: in touch
    closing = closed(ClosureReason.uncontactable)
    _, emits = domain.handle(gone_quiet, closing, command_id="closed", now=NOW, uncontactable_after_attempts=4)
    assert invited(emits) == [VICTIM, OFFENDER]  # three unanswered do not meet a setting of four, for either


# --- review fixes (2): an uncontactable closure decides by the unanswered count only -------------------


def test_rule_2_an_uncontactable_closure_invites_a_victim_whose_consent_staff_recorded_with_no_attempt() -> None:
    """The victim's consent came through a facilitator (a letter, a call not logged as an attempt): the contact log
    has nothing for her, so she never "met" the threshold; the offender went unanswered three times. Closed
    uncontactable: the victim is invited, as on any closure; the offender is not."""
    case, _ = run(accepted_case(), give(VICTIM), *[attempt(OFFENDER, at_minutes=m) for m in (1, 2, 3)])
    assert case is not None and case.contact_log(VICTIM).last_reached_at is None
    _, emits = run(case, closed(ClosureReason.uncontactable))
    assert invited(emits) == [VICTIM]
    # Two unanswered attempts to her do not meet the setting of three either: she is invited.
    case, _ = run(case, attempt(at_minutes=4), attempt(at_minutes=5))
    _, emits = run(case, closed(ClosureReason.uncontactable))
    assert invited(emits) == [VICTIM]


# --- review fixes (2): a survey response refused to a participant says nothing of the case ---------------------


def test_rule_2_a_participant_is_refused_alike_for_an_unknown_case_no_invitation_or_someone_else() -> None:
    """Case ids are derived from (force, crime reference): a participant must not learn from a refusal whether an RJ
    case exists for a crime, whether someone was invited (did not withdraw), or whether they themself take part.
    Staff get the precise reason."""
    as_victim = Actor(kind="participant", id=VICTIM)
    invited_case, _ = run(ready_case(), closed())
    withdrawn_case, _ = run(ready_case(), closed(ClosureReason.withdrawn))
    open_case = ready_case()
    refusals = {
        rejection(run(None, answer())[1]),  # no such case
        rejection(run(withdrawn_case, answer())[1]),  # not invited: the case closed withdrawn
        rejection(run(open_case, answer())[1]),  # not invited: not closed yet
        rejection(run(invited_case, answer(SUPPORTER, actor=Actor(kind="participant", id=SUPPORTER)))[1]),
        rejection(run(invited_case, answer("stranger-9", actor=Actor(kind="participant", id="stranger-9")))[1]),
        rejection(run(invited_case, answer(OFFENDER, actor=as_victim))[1]),  # someone else
        rejection(run(None, answer(OFFENDER, actor=as_victim))[1]),
    }
    assert refusals == {PROBE_MESSAGE}
    assert "unknown case" in rejection(run(None, answer(actor=FACILITATOR))[1])
    assert rejection(run(withdrawn_case, answer(actor=FACILITATOR))[1]) == (
        "victim-1 was not invited to the satisfaction survey on this case"
    )
    assert rejection(run(invited_case, answer("stranger-9", actor=FACILITATOR))[1]) == (
        "stranger-9 is not a participant in this case"
    )
