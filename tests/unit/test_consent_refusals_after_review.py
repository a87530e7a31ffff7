"""The consent service's refusals after the review, pure: a participant learns from a refusal neither whether a case
exists nor whether someone takes part in it (the speaker is checked first, then one neutral sentence); nothing more
is taken about a person whose erasure was decided; a state saved before pending erasures were kept gets them."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.commands import CommandRejected
from schemas.common import Actor, Channel
from schemas.consent import (
    AddCaseNote,
    AddParticipant,
    ContactMethod,
    ContactOutcome,
    DeclineConsent,
    GiveConsent,
    ParticipantErasureDue,
    PutCaseOnHold,
    RecordContactAttempt,
    RecordedThrough,
    RecordingMethod,
    RecordPreparationMeeting,
    RecordSafeContact,
    WithdrawConsent,
    sharing,
)
from schemas.referral import Role
from services.consent import domain as consent
from tests.unit.test_declined_erasure import CASE, DAY, DELAY, NOW, STAFF, ask, decision, open_case, step

STRANGER = Actor(kind="participant", id="X-9")


def safe_contact(person_id: str, actor: Actor, through: RecordedThrough) -> RecordSafeContact:
    return RecordSafeContact(
        case_id=CASE,
        actor=actor,
        person_id=person_id,
        safe_channels=[Channel.email],
        through=through,
        method=RecordingMethod.online,
    )


def as_sent(kind: type[Any], actor: Actor, person_id: str, case_id: str = CASE) -> Any:
    if kind is RecordSafeContact:
        command = safe_contact(person_id, actor, RecordedThrough.participant)
    else:
        command = decision(kind, person_id=person_id).model_copy(update={"actor": actor})
    return command.model_copy(update={"case_id": case_id})


def reason(case: consent.ConsentCase | None, command: Any) -> str:
    _, facts = step(case, command, NOW)
    (refused,) = facts
    assert isinstance(refused, CommandRejected)
    return refused.reason


PARTICIPANT_SENDS = [GiveConsent, DeclineConsent, WithdrawConsent, RecordSafeContact]


@pytest.mark.parametrize("kind", PARTICIPANT_SENDS)
def test_rule_3_a_participant_naming_someone_else_is_told_the_same_whether_the_case_or_person_exists(
    kind: type[Any],
) -> None:
    case = open_case()
    for named in ("V-1", "nobody"):  # someone taking part, someone not
        answers = {
            reason(case, as_sent(kind, STRANGER, named)),
            reason(None, as_sent(kind, STRANGER, named, case_id="no-such-case")),  # no case at all
        }
        (said,) = answers
        assert said.endswith(f"must come from {named} themself")


@pytest.mark.parametrize("kind", PARTICIPANT_SENDS)
def test_rule_3_a_participant_speaking_for_themself_gets_one_neutral_refusal_for_every_other_reason(
    kind: type[Any],
) -> None:
    case = open_case()
    closed = consent.replace(case, closed=True)
    held, _ = step(case, PutCaseOnHold(case_id=CASE, actor=STAFF, concern="c", raised_by="police"), NOW)
    stranger = Actor(kind="participant", id="nobody")
    answers = {
        reason(None, as_sent(kind, Actor(kind="participant", id="V-1"), "V-1", case_id="no-such-case")),
        reason(case, as_sent(kind, stranger, "nobody")),  # not taking part
        reason(closed, as_sent(kind, Actor(kind="participant", id="V-1"), "V-1")),
    }
    if kind is GiveConsent:
        answers.add(reason(held, as_sent(kind, Actor(kind="participant", id="V-1"), "V-1")))
    assert answers == {consent.REFUSAL_TO_A_PARTICIPANT}


def test_rule_3_staff_keep_the_precise_reason() -> None:
    command = decision(GiveConsent, person_id="nobody").model_copy(
        update={"actor": STAFF, "through": RecordedThrough.facilitator}
    )
    assert reason(open_case(), command) == "nobody is not a participant in this case"
    assert "unknown case" in reason(None, command.model_copy(update={"case_id": "no-such-case"}))


def test_rule_3_a_participant_sending_a_staff_command_is_told_so_before_anything_about_the_case() -> None:
    note = AddCaseNote(case_id="no-such-case", actor=Actor(kind="participant", id="V-1"), text="hello")
    assert reason(None, note) == reason(open_case(), note.model_copy(update={"case_id": CASE}))
    assert reason(None, note) == "only staff may send rj.case.add-note"


# --- someone whose erasure was decided ------------------------------------------------------------


def erased_supporter() -> consent.ConsentCase:
    case, _ = step(open_case(), decision(WithdrawConsent), NOW, command_id="withdraw-1")
    case, facts = ask(case, NOW + DELAY)
    assert [type(f) for f in facts] == [ParticipantErasureDue]
    return case  # type: ignore[no-any-return]


def staff(kind: type[Any], **fields: Any) -> Any:
    return decision(kind).model_copy(
        update={"actor": STAFF, "through": RecordedThrough.facilitator, "reason": "on the phone", **fields}
    )


LATER = NOW + DELAY + DAY

ABOUT_THE_ERASED = {
    "decline after withdrawing": staff(DeclineConsent),
    "withdraw a sharing consent": staff(WithdrawConsent, purpose=sharing("address")),
    "safe contact": safe_contact("S-1", STAFF, RecordedThrough.facilitator),
    "contact attempt": RecordContactAttempt(
        case_id=CASE,
        actor=STAFF,
        person_id="S-1",
        attempted_at=LATER,
        method=ContactMethod.letter,
        outcome=ContactOutcome.no_answer,
    ),
    "note": AddCaseNote(case_id=CASE, actor=STAFF, person_id="S-1", text="Rang again"),
    "preparation meeting": RecordPreparationMeeting(
        case_id=CASE, actor=STAFF, person_id="S-1", met_at=LATER, method=RecordingMethod.in_person
    ),
    "someone added for them": AddParticipant(
        case_id=CASE, actor=STAFF, person_id="I-1", role=Role.interpreter, supports="S-1", language="pl"
    ),
}


@pytest.mark.parametrize("what", sorted(ABOUT_THE_ERASED))
def test_rule_7_nothing_more_is_taken_about_someone_whose_erasure_was_decided(what: str) -> None:
    case = erased_supporter()
    if what == "preparation meeting":
        case = consent.replace(case, facilitators=(consent.AssignedFacilitator("F-1", False),))
    after, facts = step(case, ABOUT_THE_ERASED[what], LATER)
    (refused,) = facts
    assert isinstance(refused, CommandRejected) and after == case
    assert "erased" in refused.reason and "rj.participant.add" in refused.reason
    assert ask(after, LATER + 2 * DELAY)[1] == [], "no second erasure-due"


def test_rule_7_the_advice_to_staff_says_what_they_can_do_for_a_victim_or_offender() -> None:
    refusal = consent._erased_after_declining(erased_supporter(), "S-1")
    assert refusal is not None and "new referral" in refusal


# --- a state saved before pending erasures were kept ---------------------------------------------


def test_rule_7_a_decline_stored_before_pending_erasures_were_kept_is_due_a_grace_period_after_it() -> None:
    case, _ = step(open_case(), decision(GiveConsent, person_id="V-1"), NOW)
    case, _ = step(case, decision(DeclineConsent), NOW + DAY)  # the supporter: declined
    case, _ = step(case, decision(WithdrawConsent, person_id="V-1"), NOW + 2 * DAY)
    stored = case.to_json()
    for key in ('"erasures_pending"', '"erasure_due"'):  # the old shape had neither
        stored = stored.replace(key, '"not_kept_then' + key[1:])
    loaded = consent.load_case(stored)
    assert consent.erasure_watch(loaded) == [("S-1", NOW + DAY), ("V-1", NOW + 2 * DAY)]
    assert consent.load_case(case.to_json()) == case, "a state of now is loaded as it is"
    _, facts = ask(loaded, NOW + DAY + DELAY)
    (due,) = facts
    assert isinstance(due, ParticipantErasureDue)
    assert (due.person_id, due.declined_at, due.due_at) == ("S-1", NOW + DAY, NOW + DAY + DELAY)
    assert due.declined_by == consent.DECLINER_NOT_RECORDED


def test_a_case_of_now_with_nobody_pending_is_loaded_as_it_is() -> None:
    case = open_case()
    assert consent.load_case(case.to_json()) == case
