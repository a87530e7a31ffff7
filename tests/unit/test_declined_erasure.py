"""Rule 7 for someone who declines, pure, after the review: who declined (or withdrew), and why, stay readable under
the case's key when the person is erased (a value under their own key would name them by its key id); the erasure
waits for a grace period after the case closes (so every service has acted on the decline first); someone who
declines to take part, or withdraws, is erased alike (unless they consent again while the case is open)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.common import Actor
from schemas.consent import PARTICIPATION, ConsentDeclined, ConsentWithdrawn, RecordedThrough, RecordingMethod, sharing
from schemas.privacy import DeclinedParticipantErased
from services.privacy.domain import DeclineErasure, declined_erasure_due_at, erasure_for_decline
from services.runtime.fieldcrypt import ERASED_TEXT, _encrypt_value, cipher_for
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


async def test_rule_7_who_declined_and_why_are_sealed_under_the_cases_key_and_read_after_their_erasure() -> None:
    after, owners = await sealed_then_erased(ConsentDeclined, declined().model_dump(mode="json"))
    assert owners == {"person_id": CASE_PERSON, "declined_by": CASE_PERSON, "reason": CASE_PERSON}
    assert (after["person_id"], after["declined_by"], after["reason"]) == (
        "S-1",
        HIMSELF.model_dump(),
        "Would rather not say",
    )


async def test_rule_7_who_withdrew_and_why_are_sealed_under_the_cases_key_and_read_after_their_erasure() -> None:
    after, owners = await sealed_then_erased(ConsentWithdrawn, withdrawn().model_dump(mode="json"))
    assert owners == {"person_id": CASE_PERSON, "withdrawn_by": CASE_PERSON, "reason": CASE_PERSON}
    assert (after["person_id"], after["withdrawn_by"], after["reason"]) == (
        "S-1",
        HIMSELF.model_dump(),
        "Changed my mind",
    )


async def test_a_decline_sealed_under_the_persons_own_key_before_the_fix_still_loads_after_their_erasure() -> None:
    store = KeysInMemory()
    keys = KeyCache(store)
    await keys.load(None, pairs={("S-1", CASE)})
    key = keys.for_owner("S-1", CASE)
    old = declined().model_dump(mode="json")
    for name in ("person_id", "declined_by", "reason"):  # the old scheme: every marked field under their key
        old[name] = _encrypt_value(json.dumps(old[name]).encode(), key, name)
    store.shred("S-1", CASE)
    opening = cipher_for(ConsentDeclined).prepare_decrypt(old)
    fresh = KeyCache(store)
    await fresh.load(None, key_ids=opening.key_ids)
    after = ConsentDeclined.model_validate(opening.open(fresh).data)
    assert (after.person_id, after.reason) == (ERASED_TEXT, None)
    assert erasure_for_decline(after, already_erased=False) is DeclineErasure.nothing


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


def test_rule_7_a_decline_or_a_withdrawal_of_participation_schedules_the_persons_erasure_on_the_case() -> None:
    assert erasure_for_decline(declined(), already_erased=False) is DeclineErasure.schedule
    # A decline after consenting is a withdrawal (as the consent service says): erased alike.
    assert erasure_for_decline(withdrawn(), already_erased=False) is DeclineErasure.schedule
    assert erasure_for_decline(declined(sharing("address")), already_erased=False) is DeclineErasure.nothing
    assert erasure_for_decline(declined(), already_erased=True) is DeclineErasure.nothing


def test_rule_7_a_decliner_is_erased_a_grace_period_after_the_case_closes_or_the_decline_whichever_is_later() -> None:
    week = 7 * DAY
    assert declined_erasure_due_at(closed_at=None, recorded_at=NOW, delay=week) is None  # the case is still open
    assert declined_erasure_due_at(closed_at=NOW + DAY, recorded_at=NOW, delay=week) == NOW + 8 * DAY
    assert declined_erasure_due_at(closed_at=NOW - DAY, recorded_at=NOW, delay=week) == NOW + week
