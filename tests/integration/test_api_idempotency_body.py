"""An Idempotency-Key names one command, body and all: a retry with the same body answers the first command's id
and sends nothing again; the same key with a different body is a 409, never a 202 that silently drops the
second command. The HTTP layer runs over a real PostgreSQL with ``test_api_http``'s stand-in read side."""

from __future__ import annotations

import httpx

from tests.integration.test_api_http import COORDINATOR, FACILITATOR, OTHER_FACILITATOR, Api, api, bearer

__all__ = ["api"]  # the fixture, shared with test_api_http

NOTE = "/cases/C-1/commands/rj.case.add-note"


async def post_note(api: Api, body: dict[str, object], key: str, who: object = FACILITATOR) -> httpx.Response:
    return await api.client.post(NOTE, json=body, headers={**bearer(who), "Idempotency-Key": key})  # type: ignore[arg-type]


async def test_the_same_key_with_another_body_is_409_and_sends_nothing_more(api: Api) -> None:
    first = await post_note(api, {"text": "first"}, "k-1")
    second = await post_note(api, {"text": "second, different"}, "k-1")
    assert first.status_code == 202, first.text
    assert second.status_code == 409, second.text
    assert second.json()["error"] == "conflict"
    assert "different body" in second.json()["detail"]
    assert len(await api.outbox("rj.commands")) == 1


async def test_a_retry_with_the_same_body_in_another_key_order_answers_the_first_id(api: Api) -> None:
    first = await api.client.post(
        NOTE, content=b'{"text": "same", "reason": "why"}',
        headers={**bearer(FACILITATOR), "Idempotency-Key": "k-2", "Content-Type": "application/json"},
    )  # fmt: skip
    again = await api.client.post(
        NOTE, content=b'{"reason": "why", "text": "same"}',
        headers={**bearer(FACILITATOR), "Idempotency-Key": "k-2", "Content-Type": "application/json"},
    )  # fmt: skip
    assert first.status_code == again.status_code == 202, (first.text, again.text)
    assert first.json()["command_id"] == again.json()["command_id"]
    assert len(await api.outbox("rj.commands")) == 1
    digest = await api.db.fetchval("SELECT body_sha256 FROM api.commands_sent")
    assert isinstance(digest, str) and len(digest) == 64


async def test_one_key_used_by_two_people_names_two_commands(api: Api) -> None:
    mine = await post_note(api, {"text": "mine"}, "k-3")
    theirs = await api.client.post(
        "/cases/C-2/commands/rj.case.add-note", json={"text": "theirs"},
        headers={**bearer(OTHER_FACILITATOR), "Idempotency-Key": "k-3"},
    )  # fmt: skip
    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["command_id"] != theirs.json()["command_id"]


async def test_a_command_recorded_before_bodies_were_hashed_still_answers_its_retry(api: Api) -> None:
    first = await post_note(api, {"text": "old"}, "k-4")
    await api.db.execute("UPDATE api.commands_sent SET body_sha256 = NULL")
    again = await post_note(api, {"text": "old"}, "k-4")
    assert again.status_code == 202 and again.json()["command_id"] == first.json()["command_id"]
    assert len(await api.outbox("rj.commands")) == 1


async def test_the_same_key_naming_another_facilitator_to_assign_is_409(api: Api) -> None:
    headers = {**bearer(COORDINATOR), "Idempotency-Key": "k-5"}
    first = await api.client.post("/cases/C-1/commands/rj.facilitator.assign", json={"facilitator_id": "F-1"},
                                  headers=headers)  # fmt: skip
    second = await api.client.post("/cases/C-1/commands/rj.facilitator.assign", json={"facilitator_id": "F-2"},
                                   headers=headers)  # fmt: skip
    assert first.status_code == 202 and second.status_code == 409, (first.text, second.text)
    assert len(await api.outbox("rj.commands")) == 1
