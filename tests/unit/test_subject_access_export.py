"""Subject access, pure: a person's export takes in the facts that name them only under the case's key (who
declined or withdrew, who was removed from a meeting), opened with the case's key, and nothing of anyone else."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pydantic_core

from schemas.common import Actor
from schemas.consent import PARTICIPATION, ConsentDeclined, ConsentWithdrawn, RecordedThrough, RecordingMethod
from schemas.envelope import EventData, new_event
from schemas.scheduling import MeetingAttendeeRemoved
from services.privacy.export import FactRecord, parse_records, select_personal_data
from services.runtime.fieldcrypt import cipher_for
from services.runtime.keystore import CASE_PERSON, KeyCache
from tests.unit.test_declined_participants import KeysInMemory

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
CASE = "C-1"
HIM = "S-1"
STAFF = Actor(kind="staff", id="facilitator-1")
SCHEDULING = Actor(kind="system", id="scheduling-service")


def declined(person_id: str) -> ConsentDeclined:
    return ConsentDeclined(
        case_id=CASE,
        person_id=person_id,
        purpose=PARTICIPATION,
        through=RecordedThrough.participant,
        method=RecordingMethod.phone,
        declined_at=NOW,
        declined_by=Actor(kind="participant", id=person_id),
        recorded_at=NOW,
        reason="Would rather not say",
    )


def withdrawn(person_id: str) -> ConsentWithdrawn:
    return ConsentWithdrawn(
        case_id=CASE,
        person_id=person_id,
        purpose=PARTICIPATION,
        through=RecordedThrough.facilitator,
        method=RecordingMethod.phone,
        withdrawn_at=NOW,
        withdrawn_by=STAFF,
        recorded_at=NOW,
        reason="Told the facilitator",
    )


def removed(person_id: str) -> MeetingAttendeeRemoved:
    return MeetingAttendeeRemoved(
        case_id=CASE, meeting_id="M1", person_id=person_id, removed_at=NOW, removed_by=SCHEDULING
    )


async def sealed_records(store: KeysInMemory, facts: list[EventData]) -> list[FactRecord]:
    """Each fact sealed as the services seal it, as a record on a fact topic."""
    records = []
    for offset, fact in enumerate(facts):
        pending = cipher_for(type(fact)).prepare_encrypt(fact.model_dump(mode="json"), CASE)
        keys = KeyCache(store)
        await keys.load(None, pairs=pending.owners)
        event = new_event(fact, source="urn:test", subject=CASE, time=NOW).model_dump(mode="json")
        event["data"] = pending.seal(keys)
        records.append(FactRecord("consent", 0, offset, CASE, pydantic_core.to_json(event)))
    return records


async def export_of(store: KeysInMemory, records: list[FactRecord], person_id: str) -> list[dict[str, Any]]:
    owners = {k.key_id: (k.person_id, k.case_id) for k in store.keys.values()}
    keys = KeyCache(store)
    await keys.load(None, pairs={(person_id, CASE), (CASE_PERSON, CASE)})
    cases = select_personal_data(
        parse_records(records), person_id, owners=owners, keys=keys, erased_cases=set(), roles={CASE: "supporter"}
    )
    return [c.as_json() for c in cases]


async def test_the_export_takes_in_a_persons_own_decline_withdrawal_and_removal_sealed_under_the_cases_key() -> None:
    store = KeysInMemory()
    records = await sealed_records(
        store, [declined(HIM), removed(HIM), withdrawn(HIM), declined("S-2"), removed("S-2")]
    )
    (case,) = await export_of(store, records, HIM)
    events = {e["type"]: e for e in case["events"]}
    assert [e["type"] for e in case["events"]] == [
        "rj.consent.declined",
        "rj.meeting.attendee-removed",
        "rj.consent.withdrawn",
    ], "the person's own facts only, not S-2's"
    assert events["rj.consent.declined"]["data"] == {
        "person_id": HIM,
        "declined_by": {"kind": "participant", "id": HIM},
        "reason": "Would rather not say",
    }
    assert events["rj.meeting.attendee-removed"]["data"] == {"person_id": HIM}
    # Who recorded the withdrawal is a member of staff: not the person's data, left out.
    assert events["rj.consent.withdrawn"]["data"] == {"person_id": HIM, "reason": "Told the facilitator"}
    assert "S-2" not in str(case)


async def test_the_export_of_someone_else_on_the_case_holds_nothing_of_the_decliners() -> None:
    store = KeysInMemory()
    records = await sealed_records(store, [declined(HIM), removed(HIM)])
    assert await export_of(store, records, "S-2") == []
