"""What a sealed value still says in clear: the key id in its token, and its length.

A token is ``enc:v1:<key id>:<ciphertext>``: the key id is in clear, and the same person's key seals their data on
``rj.case.opened``. A value about who withdrew or declined sealed under that person's own key would name them to
anyone who matches the key ids, whatever ``CasePii`` does for ``person_id``. And sealing preserves length: a value
whose length differs by outcome says the outcome. These tests seal the facts as a service seals them (the real
cipher, keys in memory) and look only at what a reader without keys sees.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from schemas.common import Actor, Channel
from schemas.consent import (
    PARTICIPATION,
    SAFE_CONTACT_BREACH_WIDTH,
    CaseWithdrawalReason,
    CaseWithdrawn,
    ConsentDeclined,
    ConsentWithdrawn,
    ContactAttemptRecorded,
    ContactMethod,
    ContactOutcome,
    RecordedThrough,
    RecordingMethod,
    SafeContactBreach,
)
from schemas.privacy import DeclinedParticipantErased
from schemas.referral import Participant, Role
from schemas.scheduling import (
    CancellationReason,
    CaseClosed,
    ClosureReason,
    MeetingAttendeeRemoved,
    MeetingCancelled,
)
from services.consent.domain import ConsentCase
from services.runtime.fieldcrypt import cipher_for, is_token, token_key_id
from services.runtime.keystore import CASE_PERSON, KeyCache
from tests.unit.test_consent_contact_and_survey import VICTIM, attempt, safe_contact
from tests.unit.test_consent_domain import accepted_case, run
from tests.unit.test_declined_participants import KeysInMemory

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
CASE = "C-1"
PERSON = "S-1"
HIMSELF = Actor(kind="participant", id=PERSON)
STAFF = Actor(kind="staff", id="facilitator-1")
SYSTEM = Actor(kind="system", id="scheduling-service")


def tokens_by_field(document: dict[str, Any]) -> list[tuple[str, str]]:
    """Each token on the fact with the name of the top-level field it sits in."""
    return [(name, t) for name, value in document.items() for t in tokens(value)]


def tokens(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [t for v in value.values() for t in tokens(v)]
    if isinstance(value, list):
        return [t for v in value for t in tokens(v)]
    return [value] if is_token(value) else []


async def sealed(store: KeysInMemory, fact: BaseModel, case_id: str = CASE) -> dict[str, Any]:
    pending = cipher_for(type(fact)).prepare_encrypt(fact.model_dump(mode="json"), case_id)
    keys = KeyCache(store)
    await keys.load(None, pairs=pending.owners)
    return pending.seal(keys)


async def their_key_id(store: KeysInMemory) -> str:
    """The key id an eavesdropper reads off the person's data on ``rj.case.opened``."""
    opened = await sealed(store, Participant(person_id=PERSON, role=Role.offender, required=True, name="Sam Q"))
    return token_key_id(opened["name"])


def facts_about_who_withdrew_or_declined() -> list[BaseModel]:
    """Every fact written because ``PERSON`` withdrew or declined, by any service, with every optional field set."""
    decision = {
        "case_id": CASE,
        "person_id": PERSON,
        "purpose": PARTICIPATION,
        "through": RecordedThrough.participant,
        "method": RecordingMethod.online,
        "recorded_at": NOW,
        "reason": "He still drives past my house",
        "command_id": "cmd-1",
    }
    return [
        ConsentDeclined(**decision, declined_at=NOW, declined_by=HIMSELF),
        ConsentWithdrawn(**decision, withdrawn_at=NOW, withdrawn_by=HIMSELF),
        CaseWithdrawn(case_id=CASE, reason=CaseWithdrawalReason.consent_withdrawn, withdrawn_at=NOW, decided_by=STAFF),
        MeetingAttendeeRemoved(case_id=CASE, meeting_id="M-1", person_id=PERSON, removed_at=NOW, removed_by=SYSTEM),
        MeetingCancelled(
            case_id=CASE,
            meeting_id="M-1",
            reason_code=CancellationReason.case_withdrawn,
            reason="stopped",
            cancelled_at=NOW,
            cancelled_by=SYSTEM,
        ),
        CaseClosed(case_id=CASE, reason=ClosureReason.withdrawn, closed_at=NOW, closed_by=SYSTEM),
        DeclinedParticipantErased(
            case_id=CASE,
            erased_person_id=PERSON,
            role="offender",
            decline_id="d-1",
            declined_at=NOW,
            declined_by=HIMSELF,
            kept=["person_id"],
            kept_under_hold=False,
            keys_destroyed=1,
            erased_at=NOW,
        ),
    ]


async def test_rule_2_no_sealed_value_on_a_fact_about_who_withdrew_or_declined_is_under_their_own_key() -> None:
    """The key ids of every sealed value on those facts, matched against the key id of the person's data on the
    case opened: none is theirs (else the match names who withdrew), but for the reason they gave, which is under
    their key so that erasing them erases it (rule 7; the README's known gaps say what that costs)."""
    store = KeysInMemory()
    theirs = await their_key_id(store)
    for fact in facts_about_who_withdrew_or_declined():
        document = await sealed(store, fact)
        assert PERSON not in str(document), fact.event_type
        key_ids = {token_key_id(t) for name, t in tokens_by_field(document) if name != "reason"}
        assert theirs not in key_ids, f"{fact.event_type} has a value under the person's own key"
    declined = await sealed(store, facts_about_who_withdrew_or_declined()[0])
    assert is_token(declined["reason"]) and is_token(declined["declined_by"])


async def test_rule_7_who_declined_or_withdrew_is_under_the_cases_key_and_why_under_theirs() -> None:
    for fact in facts_about_who_withdrew_or_declined()[:2]:
        pending = cipher_for(type(fact)).prepare_encrypt(fact.model_dump(mode="json"), CASE)
        owners = {slot.field: slot.owner or CASE_PERSON for slot in pending.slots}
        assert owners.pop("reason") == PERSON, owners
        assert set(owners.values()) == {CASE_PERSON}, owners


# --- the safe-contact breach: sealed at one length, under the case's key -----------------------------------


def attempts_for_each_outcome() -> dict[str, ContactAttemptRecorded]:
    """A contact attempt that broke nothing, and one that broke each rule of the safe-contact record."""
    case: ConsentCase | None = accepted_case()
    case, _ = run(case, safe_contact(VICTIM, Channel.phone, Channel.letter, voicemail_ok=False))
    by_outcome: dict[str, ContactAttemptRecorded] = {}
    for name, method, outcome in (
        ("none", ContactMethod.phone, ContactOutcome.no_answer),
        ("channel", ContactMethod.sms, ContactOutcome.no_answer),
        ("address", ContactMethod.letter, ContactOutcome.undeliverable),
        ("voicemail", ContactMethod.phone, ContactOutcome.message_left),
    ):
        _, emits = run(case, attempt(method=method, outcome=outcome))
        (fact,) = [e.data for e in emits if isinstance(e.data, ContactAttemptRecorded)]
        by_outcome[name] = fact
    return by_outcome


async def test_rule_3_the_sealed_breach_values_are_the_same_length_whatever_the_outcome() -> None:
    facts = attempts_for_each_outcome()
    assert [f.breached_safe_contact for f in facts.values()] == [False, True, True, True]
    assert len({f.safe_contact_breach for f in facts.values()}) == 4  # each says what it broke
    store = KeysInMemory()
    documents = {name: await sealed(store, fact) for name, fact in facts.items()}
    for field in ("breached_safe_contact", "safe_contact_breach"):
        lengths = {name: len(document[field]) for name, document in documents.items()}
        assert all(is_token(d[field]) for d in documents.values())
        assert len(set(lengths.values())) == 1, f"{field}: {lengths}"


async def test_rule_6_the_breach_flag_and_its_detail_are_under_the_cases_key_and_outlive_the_persons_erasure() -> None:
    fact = attempts_for_each_outcome()["channel"]
    pending = cipher_for(ContactAttemptRecorded).prepare_encrypt(fact.model_dump(mode="json"), CASE)
    owners = {slot.field: slot.owner or CASE_PERSON for slot in pending.slots}
    assert owners["breached_safe_contact"] == owners["safe_contact_breach"] == CASE_PERSON
    store = KeysInMemory()
    document = await sealed(store, fact)
    await KeyCache(store).load(None, pairs={(VICTIM, CASE)})  # her key on the case (her data on the case opened)
    store.shred(VICTIM, CASE)  # she is erased
    opening = cipher_for(ContactAttemptRecorded).prepare_decrypt(document)
    fresh = KeyCache(store)
    await fresh.load(None, key_ids=opening.key_ids)
    after = ContactAttemptRecorded.model_validate(opening.open(fresh).data)
    assert (after.breached_safe_contact, after.safe_contact_breach) == (True, fact.safe_contact_breach)


def test_a_breach_code_travels_padded_to_one_width_and_reads_back_as_itself() -> None:
    for code in SafeContactBreach:
        fact = attempts_for_each_outcome()["none"].model_copy(update={"safe_contact_breach": code})
        wire = fact.model_dump(mode="json")["safe_contact_breach"]
        assert len(wire) == SAFE_CONTACT_BREACH_WIDTH and wire.strip() == code.value
        assert ContactAttemptRecorded.model_validate_json(fact.model_dump_json()).safe_contact_breach is code


def test_a_v1_breach_detail_reads_as_its_code() -> None:
    """v1 wrote free text (or "") under the person's key; once erased it reads as the schema's stand-in."""
    v1 = attempts_for_each_outcome()["none"].model_dump(mode="json")
    for text, code in (
        ("", SafeContactBreach.none),
        ("victim-1's safe-contact record does not list sms as a safe channel", SafeContactBreach.unsafe_channel),
        (
            "victim-1's safe-contact record has no address safe for a visit: not their home, and no alternative "
            "address",
            SafeContactBreach.no_safe_address,
        ),
        ("victim-1's safe-contact record does not allow leaving a voicemail", SafeContactBreach.voicemail_not_allowed),
        ("[erased]", SafeContactBreach.unknown),
    ):
        assert ContactAttemptRecorded.model_validate({**v1, "safe_contact_breach": text}).safe_contact_breach is code
