"""Facilitator and venue ids are global across forces, so the API keeps who registered each one first
(``api.registration_owners``): another force can neither re-register it, nor assign that facilitator, nor book
that venue or facilitator. The answers say nothing of whose the id is.

The HTTP layer runs with the real policy (registrations are a coordinator's) over a real PostgreSQL; the read
side is ``test_api_http``'s small stand-in with fixed cases (C-1 of force-a, C-B of force-b)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from services.api.http import create_app
from services.api.principal import Principal, Role
from services.runtime import privacy
from services.runtime.devstack import database_for_run
from services.runtime.keystore import MasterKeys
from services.runtime.settings import Settings
from tests.integration.test_api_http import (
    COORDINATOR,
    FACILITATOR,
    OTHER_FORCE,
    TOKENS,
    VIEWS,
    Api,
    FixedTokens,
    ReadSide,
    bearer,
    prepare_database,
)

#: A second coordinator of force-a: registrations belong to the force, not to whoever sent the first one.
SAME_FORCE_COORDINATOR = Principal(staff_id="C-2", role=Role.coordinator, force=COORDINATOR.force)

FACILITATOR_BODY: dict[str, Any] = {
    "facilitator_id": "F-SHARED",
    "specialist": True,
    "working_hours": [{"weekday": 0, "start": "09:00", "end": "17:00"}],
}
VENUE_BODY: dict[str, Any] = {"venue_id": "V-SHARED", "kind": "community", "name": "Town hall"}


@pytest.fixture
async def api(pg_server: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Api]:
    monkeypatch.setitem(TOKENS, SAME_FORCE_COORDINATOR.staff_id.lower(), SAME_FORCE_COORDINATOR)
    keys = privacy.Privacy.from_settings(Settings(master_keys=SecretStr(MasterKeys.generate("test1"))))
    before = privacy.installed()
    privacy.install(keys)
    async with database_for_run(pg_server, "rj_api_registration_owners") as url:
        await prepare_database(url)
        pools: list[asyncpg.Pool] = []

        async def pool() -> asyncpg.Pool:
            if not pools:
                pools.append(await asyncpg.create_pool(url, min_size=1, max_size=4))
            return pools[0]

        app = create_app(
            pool=pool, verifier=FixedTokens(), settings=Settings(database_url=url), read_model=ReadSide(),  # type: ignore[arg-type]
            views=VIEWS,  # type: ignore[arg-type]
        )  # fmt: skip
        db = await asyncpg.connect(url)
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api") as client:
                yield Api(client, db, url)
        finally:
            await db.close()
            for p in pools:
                await p.close()
            privacy.install(before)


async def register(api: Api, who: Principal, command_type: str, body: dict[str, Any]) -> httpx.Response:
    return await api.client.post(f"/registrations/{command_type}", json=body, headers=bearer(who))


async def test_the_first_registration_claims_the_id_for_its_force_and_the_force_may_update_it(api: Api) -> None:
    first = await register(api, COORDINATOR, "rj.facilitator.register", FACILITATOR_BODY)
    update = await register(api, SAME_FORCE_COORDINATOR, "rj.facilitator.register", {**FACILITATOR_BODY,
                                                                                    "specialist": False})  # fmt: skip
    assert first.status_code == update.status_code == 202, (first.text, update.text)
    owners = await api.db.fetch("SELECT resource_type, resource_id, force FROM api.registration_owners")
    assert [tuple(r) for r in owners] == [("facilitator", "F-SHARED", COORDINATOR.force)]
    assert len(await api.outbox("rj.commands")) == 2


@pytest.mark.parametrize(
    ("command_type", "body", "words"),
    [
        ("rj.facilitator.register", FACILITATOR_BODY, "no such facilitator"),
        ("rj.venue.register", VENUE_BODY, "no such venue"),
    ],
)
async def test_another_force_cannot_re_register_an_id_and_is_told_nothing_of_whose_it_is(
    api: Api, command_type: str, body: dict[str, Any], words: str
) -> None:
    assert (await register(api, COORDINATOR, command_type, body)).status_code == 202
    theirs = await register(api, OTHER_FORCE, command_type, body)
    assert theirs.status_code == 404, theirs.text
    assert theirs.json() == {"error": "not_found", "detail": words}
    assert COORDINATOR.force not in theirs.text
    sent = await api.outbox("rj.commands")
    assert len(sent) == 1 and sent[0]["data"]["actor"]["id"] == COORDINATOR.staff_id
    [owner] = await api.db.fetch("SELECT force FROM api.registration_owners")
    assert owner["force"] == COORDINATOR.force


async def test_two_forces_registering_one_new_id_at_once_leave_exactly_one_owner(api: Api) -> None:
    answers = await asyncio.gather(
        *(register(api, who, "rj.venue.register", VENUE_BODY) for who in (COORDINATOR, OTHER_FORCE) * 3)
    )
    statuses = sorted(a.status_code for a in answers)
    [owner] = await api.db.fetch("SELECT force FROM api.registration_owners")
    winners = [a for a, who in zip(answers, (COORDINATOR, OTHER_FORCE) * 3, strict=True) if who.force == owner["force"]]
    assert all(a.status_code == 202 for a in winners)
    assert statuses == [202, 202, 202, 404, 404, 404]
    assert len(await api.outbox("rj.commands")) == 3


async def test_a_coordinator_cannot_assign_another_forces_facilitator(api: Api) -> None:
    other = {**FACILITATOR_BODY, "facilitator_id": "F-B"}
    assert (await register(api, OTHER_FORCE, "rj.facilitator.register", other)).status_code == 202
    before = len(await api.outbox("rj.commands"))
    assigned = await api.client.post(
        "/cases/C-1/commands/rj.facilitator.assign", json={"facilitator_id": "F-B"}, headers=bearer(COORDINATOR)
    )
    assert assigned.status_code == 404, assigned.text
    assert assigned.json() == {"error": "not_found", "detail": "no such facilitator"}
    assert len(await api.outbox("rj.commands")) == before
    # one of the force's own, or one never registered through the API, is assigned as before
    assert (await register(api, COORDINATOR, "rj.facilitator.register", FACILITATOR_BODY)).status_code == 202
    for facilitator_id in ("F-SHARED", FACILITATOR.staff_id):
        ok = await api.client.post(
            "/cases/C-1/commands/rj.facilitator.assign", json={"facilitator_id": facilitator_id},
            headers=bearer(COORDINATOR),
        )  # fmt: skip
        assert ok.status_code == 202, ok.text


BOOKING: dict[str, Any] = {
    "meeting_id": "M-1",
    "kind": "conference",
    "starts_at": "2030-01-07T10:00:00+00:00",
    "ends_at": "2030-01-07T12:00:00+00:00",
    "lead_facilitator_id": FACILITATOR.staff_id,
}


@pytest.mark.parametrize(
    ("command_type", "field", "body"),
    [
        ("rj.meeting.book", "venue_id", {**BOOKING, "venue_id": "V-B"}),
        ("rj.meeting.propose", "venue_id", {**BOOKING, "venue_id": "V-B"}),
        ("rj.meeting.book", "lead_facilitator_id", {**BOOKING, "lead_facilitator_id": "F-B"}),
        ("rj.meeting.book", "co_facilitator_id", {**BOOKING, "co_facilitator_id": "F-B"}),
        ("rj.meeting.reschedule", "venue_id", {k: BOOKING[k] for k in ("meeting_id", "starts_at", "ends_at")}
         | {"venue_id": "V-B"}),
    ],
)  # fmt: skip
async def test_a_booking_naming_another_forces_venue_or_facilitator_is_422_naming_the_field(
    api: Api, command_type: str, field: str, body: dict[str, Any]
) -> None:
    assert (await register(api, OTHER_FORCE, "rj.venue.register", {**VENUE_BODY, "venue_id": "V-B"})).is_success
    other_facilitator = {**FACILITATOR_BODY, "facilitator_id": "F-B"}
    assert (await register(api, OTHER_FORCE, "rj.facilitator.register", other_facilitator)).is_success
    before = len(await api.outbox("rj.commands"))
    booked = await api.client.post(f"/cases/C-1/commands/{command_type}", json=body, headers=bearer(FACILITATOR))
    assert booked.status_code == 422, booked.text
    assert booked.json()["error"] == "invalid"
    assert f"body.{field}" in booked.json()["detail"]
    assert OTHER_FORCE.force not in booked.text
    assert len(await api.outbox("rj.commands")) == before


async def test_a_booking_naming_the_forces_own_venue_and_facilitators_goes_through(api: Api) -> None:
    assert (await register(api, COORDINATOR, "rj.venue.register", VENUE_BODY)).is_success
    body = {**BOOKING, "venue_id": "V-SHARED", "co_facilitator_id": "F-UNREGISTERED"}
    booked = await api.client.post("/cases/C-1/commands/rj.meeting.book", json=body, headers=bearer(FACILITATOR))
    assert booked.status_code == 202, booked.text


async def test_the_same_idempotency_key_with_another_registration_body_is_409_and_sends_nothing_more(
    api: Api,
) -> None:
    headers = {**bearer(COORDINATOR), "Idempotency-Key": "reg-1"}
    first = await api.client.post("/registrations/rj.venue.register", json=VENUE_BODY, headers=headers)
    again = await api.client.post("/registrations/rj.venue.register", json=VENUE_BODY, headers=headers)
    other = await api.client.post(
        "/registrations/rj.venue.register", json={**VENUE_BODY, "name": "Library"}, headers=headers
    )
    assert first.status_code == again.status_code == 202 and other.status_code == 409, (first.text, other.text)
    assert first.json()["command_id"] == again.json()["command_id"]
    assert len(await api.outbox("rj.commands")) == 1
