"""Rule 7 for someone who declines, pure, after the review: who declined (or withdrew) stays readable under the
case's key when the person is erased, their reason goes with them; the consent service decides, in case order, that
the erasure is due a grace period after the decline itself, the case open or closed, unless they consented again
first (and refuses their consent after that); the privacy service erases on that decision, a hold deferring it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.commands import CommandRejected
from schemas.common import Actor
from schemas.consent import (
    PARTICIPATION,
    SYSTEM_CONSENT,
    ConsentDeclined,
    ConsentWithdrawn,
    DecideErasuresDue,
    DeclineConsent,
    GiveConsent,
    ParticipantErasureDue,
    RecordedThrough,
    RecordingMethod,
    WithdrawConsent,
    sharing,
)
from schemas.envelope import derived_event_id
from schemas.privacy import DeclinedParticipantErased
from schemas.referral import CaseAccepted, CaseParticipant, Role
from schemas.scheduling import CaseClosed, ClosureReason
from services.consent import domain as consent
from services.privacy.domain import DueErasure, erasure_when_due
from services.runtime.fieldcrypt import ERASED_TEXT, _seal_value, cipher_for
from services.runtime.keystore import CASE_PERSON, KeyCache
from tests.unit.test_declined_participants import KeysInMemory

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
CASE = "C-1"
HIMSELF = Actor(kind="participant", id="S-1")
DAY = timedelta(days=1)


def declined(purpose: str = PARTICIPATION, person_id: str = "S-1", by: Actor = HIMSELF) -> ConsentDeclined:
    return ConsentDeclined(
        case_id=CASE,
        person_id=person_id,
        purpose=purpose,
        through=RecordedThrough.participant,
        method=RecordingMethod.phone,
        declined_at=NOW,
        declined_by=by,
        recorded_at=NOW,
        reason="Would rather not say",
    )


def withdrawn() -> ConsentWithdrawn:
    return ConsentWithdrawn(
        case_id=CASE,
        person_id="S-1",
        purpose=PARTICIPATION,
        through=RecordedThrough.participant,
        method=RecordingMethod.online,
        withdrawn_at=NOW,
        withdrawn_by=HIMSELF,
        recorded_at=NOW,
        reason="Changed my mind",
    )


async def sealed_then_erased(model: type[Any], document: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """``document`` sealed as a service seals it, then opened after the person's key on the case is destroyed;
    and whose key each marked field went under."""
    store = KeysInMemory()
    pending = cipher_for(model).prepare_encrypt(document, CASE)
    owners = {slot.field: slot.owner or CASE_PERSON for slot in pending.slots}
    keys = KeyCache(store)
    await keys.load(None, pairs=pending.owners)
    sealed = pending.seal(keys)
    assert "S-1" not in str(sealed), "never in clear"
    await keys.load(None, pairs={("S-1", CASE)})  # their key on the case (their data on the case opened)
    store.shred("S-1", CASE)
    opening = cipher_for(model).prepare_decrypt(sealed)
    fresh = KeyCache(store)
    await fresh.load(None, key_ids=opening.key_ids)
    return model.model_validate(opening.open(fresh).data).model_dump(mode="json"), owners


async def test_rule_7_who_declined_reads_after_their_erasure_and_why_does_not() -> None:
    after, owners = await sealed_then_erased(ConsentDeclined, declined().model_dump(mode="json"))
    assert owners == {"person_id": CASE_PERSON, "declined_by": CASE_PERSON, "reason": "S-1"}
    assert (after["person_id"], after["declined_by"], after["reason"]) == ("S-1", HIMSELF.model_dump(), None)


async def test_rule_7_who_withdrew_reads_after_their_erasure_and_why_does_not() -> None:
    after, owners = await sealed_then_erased(ConsentWithdrawn, withdrawn().model_dump(mode="json"))
    assert owners == {"person_id": CASE_PERSON, "withdrawn_by": CASE_PERSON, "reason": "S-1"}
    assert (after["person_id"], after["withdrawn_by"], after["reason"]) == ("S-1", HIMSELF.model_dump(), None)


async def test_a_decline_sealed_under_the_persons_own_key_before_the_fix_still_loads_after_their_erasure() -> None:
    store = KeysInMemory()
    keys = KeyCache(store)
    await keys.load(None, pairs={("S-1", CASE)})
    key = keys.for_owner("S-1", CASE)
    old = declined().model_dump(mode="json")
    for name in ("person_id", "declined_by", "reason"):  # the old scheme: every marked field under their key
        old[name] = _seal_value(keys, key, name, json.dumps(old[name]).encode())
    store.shred("S-1", CASE)
    opening = cipher_for(ConsentDeclined).prepare_decrypt(old)
    fresh = KeyCache(store)
    await fresh.load(None, key_ids=opening.key_ids)
    after = ConsentDeclined.model_validate(opening.open(fresh).data)
    assert (after.person_id, after.reason) == (ERASED_TEXT, None)


async def test_the_declined_participant_erased_fact_seals_the_role_beside_the_id() -> None:
    fact = DeclinedParticipantErased(
        case_id=CASE,
        erased_person_id="S-1",
        role="victim",
        decline_id="d-1",
        declined_at=NOW,
        declined_by=HIMSELF,
        kept=["person_id"],
        kept_under_hold=False,
        keys_destroyed=1,
        erased_at=NOW,
    )
    pending = cipher_for(DeclinedParticipantErased).prepare_encrypt(fact.model_dump(mode="json"), CASE)
    owners = {slot.field: slot.owner or CASE_PERSON for slot in pending.slots}
    assert owners == {"erased_person_id": CASE_PERSON, "role": CASE_PERSON, "declined_by": CASE_PERSON}


def erasure_due(person_id: str = "S-1") -> ParticipantErasureDue:
    return ParticipantErasureDue(
        case_id=CASE,
        person_id=person_id,
        decline_id="d-1",
        declined_at=NOW,
        declined_by=HIMSELF,
        recorded_at=NOW,
        due_at=NOW + DAY,
        decided_at=NOW + DAY,
        decided_by=SYSTEM_CONSENT,
    )


def test_rule_7_the_privacy_service_erases_on_the_consent_services_decision_a_hold_defers_it_a_repeat_is_nothing() -> (
    None
):
    assert erasure_when_due(erasure_due(), already_erased=False, held=False) is DueErasure.erase
    assert erasure_when_due(erasure_due(), already_erased=False, held=True) is DueErasure.keep_until_hold_lifted
    assert erasure_when_due(erasure_due(), already_erased=True, held=False) is DueErasure.nothing
    assert erasure_when_due(erasure_due(), already_erased=True, held=True) is DueErasure.nothing


# --- the consent service's decision --------------------------------------------------------------

DELAY = 7 * DAY
STAFF = Actor(kind="staff", id="facilitator-1")


def open_case() -> consent.ConsentCase:
    people = [
        CaseParticipant(person_id="V-1", role=Role.victim, required=True),
        CaseParticipant(person_id="O-1", role=Role.offender, required=True),
        CaseParticipant(person_id="S-1", role=Role.supporter, required=False, supports="V-1"),
    ]
    accepted = CaseAccepted(
        case_id=CASE,
        crime_reference="CR-1",
        specialist_required=False,
        risk_assessment_required=False,
        sensitivity_reasons=[],
        participants=people,
        decided_at=NOW,
        decided_by=Actor(kind="system", id="referral-service"),
        reason="eligible",
    )
    case, _ = consent.handle(None, accepted, command_id="accepted", now=NOW)
    assert case is not None
    return case


def decision(kind: type[Any], person_id: str = "S-1", purpose: str = PARTICIPATION) -> Any:
    return kind(
        case_id=CASE,
        actor=Actor(kind="participant", id=person_id),
        person_id=person_id,
        purpose=purpose,
        through=RecordedThrough.participant,
        method=RecordingMethod.online,
    )


def step(case: consent.ConsentCase | None, message: Any, at: datetime, command_id: str = "c") -> tuple[Any, list[Any]]:
    case, emits = consent.handle(case, message, command_id=command_id, now=at, declined_erasure_delay=DELAY)
    return case, [e.data for e in emits]


def ask(case: consent.ConsentCase | None, at: datetime) -> tuple[Any, list[Any]]:
    return step(case, DecideErasuresDue(case_id=CASE, actor=SYSTEM_CONSENT), at, command_id=f"ask-{at.isoformat()}")


def test_rule_7_a_supporter_who_declines_on_an_open_case_is_due_for_erasure_a_grace_period_after_the_decline() -> None:
    case, facts = step(open_case(), decision(DeclineConsent), NOW, command_id="decline-1")
    (declined_fact,) = facts
    assert consent.erasure_watch(case) == [("S-1", NOW)]
    case, facts = ask(case, NOW + DELAY - timedelta(seconds=1))
    assert facts == [] and consent.erasure_watch(case) == [("S-1", NOW)], "not before the grace period has run"
    case, facts = ask(case, NOW + DELAY)
    (due,) = facts
    assert isinstance(due, ParticipantErasureDue) and not case.closed, "the case stays open: the erasure is due"
    decline_id = derived_event_id(consent.SOURCE, CASE, "consent-declined:decline-1")
    assert (due.person_id, due.decline_id, due.declined_by, due.due_at) == ("S-1", decline_id, HIMSELF, NOW + DELAY)
    assert consent.erasure_watch(case) == []
    assert ask(case, NOW + 2 * DELAY)[1] == [], "decided once"


def test_rule_7_a_withdrawal_of_participation_is_due_alike_a_sharing_decline_is_not() -> None:
    case, _ = step(open_case(), decision(GiveConsent), NOW)
    case, _ = step(case, decision(DeclineConsent, purpose=sharing("address")), NOW)
    assert consent.erasure_watch(case) == []
    case, _ = step(case, decision(WithdrawConsent), NOW + DAY)
    assert consent.erasure_watch(case) == [("S-1", NOW + DAY)]
    _, facts = ask(case, NOW + DAY + DELAY)
    assert [type(f) for f in facts] == [ParticipantErasureDue]


def test_rule_7_someone_who_consents_again_before_the_deadline_is_never_erased() -> None:
    case, _ = step(open_case(), decision(DeclineConsent), NOW)
    case, _ = step(case, decision(GiveConsent), NOW + DAY)
    assert consent.erasure_watch(case) == []
    assert ask(case, NOW + 2 * DELAY)[1] == []


def test_rule_7_a_decliner_is_due_for_erasure_after_the_case_closes_too() -> None:
    case, _ = step(open_case(), decision(DeclineConsent, person_id="V-1"), NOW)
    closed = CaseClosed(case_id=CASE, reason=ClosureReason.declined, closed_at=NOW, closed_by=SYSTEM_CONSENT)
    case, _ = step(case, closed, NOW)
    _, facts = ask(case, NOW + DELAY)
    assert [(type(f), f.person_id) for f in facts] == [(ParticipantErasureDue, "V-1")]


def test_rule_7_a_consent_after_the_erasure_is_refused_with_a_reason_staff_can_act_on() -> None:
    case, _ = step(open_case(), decision(DeclineConsent), NOW)
    case, _ = ask(case, NOW + DELAY)
    for purpose in (PARTICIPATION, sharing("address")):
        themself = decision(GiveConsent, purpose=purpose)
        by_staff = themself.model_copy(update={"actor": STAFF, "through": RecordedThrough.facilitator})
        after, facts = step(case, by_staff, NOW + DELAY + DAY)
        (refused,) = facts
        assert isinstance(refused, CommandRejected) and after == case
        assert "erased" in refused.reason and "rj.participant.add" in refused.reason
        after, facts = step(case, themself, NOW + DELAY + DAY)
        assert [f.reason for f in facts] == [consent.REFUSAL_TO_A_PARTICIPANT] and after == case


def test_the_erasure_question_comes_from_the_consent_service_alone() -> None:
    case, _ = step(open_case(), decision(DeclineConsent), NOW)
    after, facts = step(case, DecideErasuresDue(case_id=CASE, actor=STAFF), NOW + DELAY)
    assert [type(f) for f in facts] == [CommandRejected] and after == case
