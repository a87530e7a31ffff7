"""Who made a participant's withdraw link is on record: the API writes ``rj.participant-link.issued`` (who, for whom,
which link, until when) to its outbox in the transaction that hands the link out, and nothing when it refuses."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from services.api import links
from services.api.http import create_app
from services.runtime import privacy
from services.runtime.devstack import database_for_run
from services.runtime.keystore import MasterKeys
from services.runtime.settings import Settings
from tests.integration.test_api_http import COORDINATOR, VIEWS, VOLUNTEER, Api, FixedTokens, ReadSide, Rules, bearer
from tests.integration.test_api_http import prepare_database as prepare_api_database

LINK_KEY = links.new_link_key()


@pytest.fixture
async def api_with_links(pg_server: str) -> AsyncIterator[Api]:
    keys = privacy.Privacy.from_settings(Settings(master_keys=SecretStr(MasterKeys.generate("test1"))))
    before = privacy.installed()
    privacy.install(keys)
    async with database_for_run(pg_server, "rj_api_link_issued") as url:
        await prepare_api_database(url)
        pools: list[asyncpg.Pool] = []

        async def pool() -> asyncpg.Pool:
            if not pools:
                pools.append(await asyncpg.create_pool(url, min_size=1, max_size=4))
            return pools[0]

        settings = Settings(database_url=url, participant_link_key=SecretStr(LINK_KEY))
        app = create_app(pool=pool, verifier=FixedTokens(), settings=settings, read_model=ReadSide(), views=VIEWS,
                         policy=Rules())  # type: ignore[arg-type]  # fmt: skip
        db = await asyncpg.connect(url)
        try:
            await db.execute(
                "INSERT INTO api.cases (case_id, force, sensitive, updated_at) VALUES ('C-1', 'f', false, now())"
            )
            await db.execute(
                "INSERT INTO api.participants (case_id, person_id, role) VALUES ('C-1', 'O-1', 'offender')"
            )
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api") as client:
                yield Api(client, db, url)
        finally:
            await db.close()
            for p in pools:
                await p.close()
            privacy.install(before)


async def test_making_a_withdraw_link_records_who_made_it_for_whom_and_which_link(api_with_links: Api) -> None:
    api = api_with_links
    made = await api.client.post("/cases/C-1/withdraw-links", json={"person_id": "O-1"}, headers=bearer(COORDINATOR))
    assert made.status_code == 200, made.text
    claims = links.open_link(Settings(participant_link_key=SecretStr(LINK_KEY)), made.json()["url"].rsplit("/", 1)[1])

    [issued] = await api.outbox("rj.api")
    assert issued["type"] == "rj.participant-link.issued" and issued["key"] == issued["subject"] == "C-1"
    fact = issued["data"]
    assert fact["issued_by"] == {"kind": "staff", "id": COORDINATOR.staff_id}
    assert (fact["case_id"], fact["person_id"], fact["link_id"]) == ("C-1", "O-1", claims.link_id)
    said = made.json()["expires_at"].replace("Z", "+00:00")
    assert fact["expires_at"].replace("Z", "+00:00") == said == claims.expires_at.isoformat()


async def test_a_refused_link_records_nothing(api_with_links: Api) -> None:
    api = api_with_links
    for who, body in ((VOLUNTEER, {"person_id": "O-1"}), (COORDINATOR, {"person_id": "nobody"})):
        refused = await api.client.post("/cases/C-1/withdraw-links", json=body, headers=bearer(who))
        assert refused.status_code in (403, 404), refused.text
    assert await api.outbox("rj.api") == []
