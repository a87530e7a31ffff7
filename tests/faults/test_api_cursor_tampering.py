"""A ``/cases?after=`` cursor is the caller's to alter: whatever it holds (a NUL in the case id, a time PostgreSQL
cannot store, a lone surrogate, random JSON, random bytes), the list answers 200 or a 4xx, never a 500, and the
read model refuses it as ``BadCursor`` before it reaches PostgreSQL. The cursors it hands out still page through.
Runs the real read model, views and policy over a real PostgreSQL."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.api import queries
from services.api.http import create_app
from services.runtime.devstack import database_for_run
from services.runtime.settings import Settings
from tests.integration.test_api_http import COORDINATOR, FixedTokens, bearer, prepare_database

pytestmark = pytest.mark.integration


@dataclass
class Lists:
    client: httpx.AsyncClient
    db: asyncpg.Connection


@pytest.fixture
async def lists(pg_server: str) -> AsyncIterator[Lists]:
    async with database_for_run(pg_server, "rj_api_cursor_tampering") as url:
        await prepare_database(url)
        db = await asyncpg.connect(url)
        start = datetime(2030, 1, 1, tzinfo=UTC)
        await db.executemany(
            "INSERT INTO api.cases (case_id, force, status, sensitive, updated_at) "
            "VALUES ($1, $2, 'referred', false, $3)",
            [(f"C-{n}", COORDINATOR.force, start + timedelta(minutes=n // 2)) for n in range(5)],
        )
        pools: list[asyncpg.Pool] = []

        async def pool() -> asyncpg.Pool:
            if not pools:
                pools.append(await asyncpg.create_pool(url, min_size=1, max_size=2))
            return pools[0]

        app = create_app(pool=pool, verifier=FixedTokens(), settings=Settings(database_url=url))
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api") as client:
                yield Lists(client, db)
        finally:
            await db.close()
            for p in pools:
                await p.close()


def cursor_of(document: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode()


CRAFTED = [
    cursor_of(["2020-01-01T00:00:00+00:00", "a\u0000b"]),  # a NUL, which PostgreSQL text refuses
    cursor_of(["0001-01-01T00:00:00+14:00", "x"]),  # before year 1 once in UTC
    cursor_of(["9999-12-31T23:59:59-14:00", "x"]),  # after year 9999 once in UTC
    cursor_of(["2020-01-01T00:00:00+00:00", "\ud800"]),  # a lone surrogate: not UTF-8
    cursor_of(["2020-01-01T00:00:00", "x"]),  # naive: which zone?
    cursor_of(["2020-01-01T00:00:00+00:00", "x" * 201]),
    cursor_of(["2020-01-01T00:00:00+00:00", ""]),
    cursor_of(["2020-01-01T00:00:00+00:00", "a\x1bb"]),
    cursor_of(["2020-01-01T00:00:00+00:00", 7]),
    cursor_of([1577836800, "x"]),
    cursor_of(["2020-01-01T00:00:00+00:00", "x", "y"]),
    cursor_of({"at": "2020-01-01T00:00:00+00:00"}),
    cursor_of(None),
    "not base64 at all!",
    base64.urlsafe_b64encode(b"\xff\xfe\x00").decode(),
]


@pytest.mark.parametrize("cursor", CRAFTED)
async def test_a_crafted_cursor_is_a_bad_cursor_never_a_database_error(lists: Lists, cursor: str) -> None:
    with pytest.raises(queries.BadCursor):
        await queries.list_cases(lists.db, force=COORDINATOR.force, after=cursor)
    answer = await lists.client.get("/cases", params={"after": cursor}, headers=bearer(COORDINATOR))
    assert answer.status_code in (400, 422), answer.text
    assert answer.json()["error"] in ("bad_cursor", "invalid")


async def test_the_cursors_the_list_hands_out_still_page_through_every_case(lists: Lists) -> None:
    seen: list[str] = []
    after: str | None = None
    while True:
        params = {"limit": "2", **({"after": after} if after else {})}
        page = await lists.client.get("/cases", params=params, headers=bearer(COORDINATOR))
        assert page.status_code == 200, page.text
        seen += [c["case_id"] for c in page.json()["cases"]]
        after = page.json()["next_cursor"]
        if after is None:
            break
    assert sorted(seen) == [f"C-{n}" for n in range(5)] and len(seen) == 5


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
times = st.datetimes(timezones=st.timezones()).map(datetime.isoformat) | st.text(max_size=40)
case_ids = st.text(max_size=30) | st.sampled_from(["C-1", "a\x00b", "\ud800", "x" * 300])
cursors = (
    st.tuples(times, case_ids).map(lambda pair: cursor_of(list(pair)))
    | json_values.map(cursor_of)
    | st.binary(max_size=80).map(lambda raw: base64.urlsafe_b64encode(raw).decode())
    | st.text(max_size=80)
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cursor=cursors)
async def test_no_cursor_whatever_it_holds_gets_a_5xx(lists: Lists, cursor: str) -> None:
    try:
        await queries.list_cases(lists.db, force=COORDINATOR.force, after=cursor)
    except queries.BadCursor:
        pass
    answer = await lists.client.get("/cases", params={"after": cursor}, headers=bearer(COORDINATOR))
    assert answer.status_code < 500, (cursor, answer.text)
