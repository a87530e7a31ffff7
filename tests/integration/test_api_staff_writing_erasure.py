"""What staff write about a person through the API goes when that person is erased.

A command sent through the API travels on ``rj.commands`` (and waits in ``api.outbox``) with its personal fields
sealed. A field the contract gives to a participant of the case (a note about them, their safe-contact details, a
contact attempt's note) is sealed under that participant's key, as the owning service seals the fact it makes
from it; so destroying their key (their erasure) leaves the command unreadable for that field. A note about the
case, or about an id that is no participant of the case, stays under the case's own key: no key is made for an id
nobody vouched for (a key is how the key store knows a person is on a case).
"""

from __future__ import annotations

from typing import Any

from schemas.consent import AddCaseNote, RecordContactAttempt, RecordSafeContact
from services.runtime import keystore, privacy
from tests.integration.test_api_http import FACILITATOR, Api, api, bearer  # noqa: F401

CASE = "C-1"


async def _participant(to: Api, person_id: str) -> None:
    await to.db.execute(
        "INSERT INTO api.participants (case_id, person_id, role) VALUES ($1, $2, 'victim')", CASE, person_id
    )


async def _send(to: Api, command_type: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await to.client.post(f"/cases/{CASE}/commands/{command_type}", json=body, headers=bearer(FACILITATOR))
    assert response.status_code == 202, response.text
    command_id = response.json()["command_id"]
    [record] = [r for r in await to.outbox("rj.commands") if r["id"] == command_id]
    return record


async def _opened(to: Api, model: Any, record: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    [opened] = await privacy.installed().new_batch().open_documents(to.db, model, [record["data"]], [CASE])
    return opened.data, opened.erased


async def _erase(to: Api, person_id: str) -> None:
    store = privacy.installed().store
    assert store is not None
    await store.destroy(to.db, person_id, CASE, by="test", reason="erasure requested")


async def test_a_note_about_a_participant_is_gone_after_their_erasure_and_a_case_note_stays(api: Api) -> None:  # noqa: F811
    await _participant(api, "V-1")
    about_them = await _send(api, "rj.case.add-note", {"text": "V-1 fears a visit at home", "person_id": "V-1"})
    about_the_case = await _send(api, "rj.case.add-note", {"text": "Referral papers arrived"})
    assert (await _opened(api, AddCaseNote, about_them))[0]["text"] == "V-1 fears a visit at home"

    await _erase(api, "V-1")

    text, erased = await _opened(api, AddCaseNote, about_them)
    assert text["text"] != "V-1 fears a visit at home" and erased == ("$.text",)
    still, erased = await _opened(api, AddCaseNote, about_the_case)
    assert still["text"] == "Referral papers arrived" and erased == ()


async def test_safe_contact_and_attempt_notes_are_the_participants_and_go_with_them(api: Api) -> None:  # noqa: F811
    await _participant(api, "V-1")
    safe = await _send(
        api,
        "rj.contact.record-safe-contact",
        {"person_id": "V-1", "safe_channels": ["phone"], "alternative_phone": "07700 900123",
         "through": "facilitator", "method": "phone"},
    )  # fmt: skip
    attempt = await _send(
        api,
        "rj.contact.record-attempt",
        {"person_id": "V-1", "attempted_at": "2025-01-06T10:00:00Z", "method": "phone", "outcome": "no_answer",
         "note": "His brother answered"},
    )  # fmt: skip

    await _erase(api, "V-1")

    safe_data, safe_erased = await _opened(api, RecordSafeContact, safe)
    assert safe_data["alternative_phone"] is None and "$.alternative_phone" in safe_erased
    attempt_data, attempt_erased = await _opened(api, RecordContactAttempt, attempt)
    assert attempt_data["note"] is None and attempt_erased == ("$.note",)


async def test_a_note_naming_someone_not_on_the_case_is_under_the_case_key_and_makes_no_key_for_them(
    api: Api,  # noqa: F811
) -> None:
    record = await _send(api, "rj.case.add-note", {"text": "Someone called about it", "person_id": "X-unknown"})
    made = await api.db.fetchval(
        f"SELECT count(*) FROM {keystore.SCHEMA}.data_keys WHERE person_id = 'X-unknown'",
    )
    assert made == 0, "a key is how the store knows a person is on a case: none for an id nobody vouched for"
    assert (await _opened(api, AddCaseNote, record))[0]["text"] == "Someone called about it"


async def test_a_note_about_a_person_the_read_model_has_not_caught_up_with_goes_with_their_erasure(
    api: Api,  # noqa: F811
) -> None:
    """The read model follows the services a hop behind: a participant a service has already sealed data of (so the
    key store holds their key on the case) is theirs before the read model lists them."""
    store = privacy.installed().store
    assert store is not None
    await keystore.KeyCache(store).load(api.db, pairs={("V-2", CASE)})  # as referral seals the case opened
    assert await api.db.fetchval("SELECT count(*) FROM api.participants WHERE person_id = 'V-2'") == 0

    record = await _send(api, "rj.case.add-note", {"text": "V-2 asked for a woman facilitator", "person_id": "V-2"})
    await _erase(api, "V-2")

    text, erased = await _opened(api, AddCaseNote, record)
    assert text["text"] != "V-2 asked for a woman facilitator" and erased == ("$.text",)
