"""Participants' withdraw links through their HTTP router alone, against the real PostgreSQL: opening a link
changes nothing (whoever opens it: a mail scanner, a preview); confirming sends exactly one withdrawal in the
participant's name and uses the link up; a bad link gets a plain message and a 4xx, never a 500; the pages come
in English and Welsh, hold nothing of the case or anyone, and have a way out; a sensitive case refuses links until
staff turn them on."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from schemas import topics
from schemas.consent import RecordedThrough, RecordingMethod, WithdrawConsent
from schemas.links import ParticipantLinksChanged
from schemas.registry import REGISTRY
from services.api.links import links_allowed, mint_link, new_link_key, participant_router, set_links_enabled
from services.api.principal import Principal, Role
from services.runtime import privacy
from services.runtime.db import migrate, transaction
from services.runtime.devstack import database_for_run
from services.runtime.keystore import KeyStore, MasterKeys, ensure_schema
from services.runtime.outbox import write_outbox
from services.runtime.settings import Settings

pytestmark = pytest.mark.integration

FORCE = "police-x"
EXIT_URL = "https://www.bbc.co.uk/weather"
SCANNER = "Mozilla/5.0 (compatible; Microsoft Office Protection; SafeLinks URL scanner)"
COORDINATOR = Principal(staff_id="C-ANN", role=Role.coordinator, force=FORCE)


@pytest.fixture(scope="module")
async def database(pg_server: str) -> AsyncIterator[str]:
    async with database_for_run(pg_server, prefix="rj_links") as url:
        conn = await asyncpg.connect(url)
        try:
            await ensure_schema(conn)
            await migrate(conn, "api", "services.api.migrations")
            # The read model's case table (part A's migration creates it with more columns): only what links read.
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS api.cases (
                       case_id text PRIMARY KEY, force text, sensitive boolean NOT NULL DEFAULT false,
                       updated_at timestamptz NOT NULL)"""
            )
        finally:
            await conn.close()
        yield url


@pytest.fixture(scope="module")
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture(autouse=True)
def sealing() -> Iterator[None]:
    """The API process seals personal fields as every service does: the tests run with encryption on."""
    before = privacy.installed()
    keys = MasterKeys.from_settings(Settings(master_keys=SecretStr(MasterKeys.generate("links1"))))
    privacy.install(privacy.Privacy(KeyStore(keys)))
    yield
    privacy.install(before)


@pytest.fixture(scope="module")
def settings(database: str) -> Settings:
    return Settings(
        database_url=database,
        participant_link_key=SecretStr(new_link_key()),
        public_base_url="http://rj.test",
        participant_link_exit_url=EXIT_URL,
    )


def app_with(pool_of: Callable[[], Awaitable[asyncpg.Pool]], settings: Settings) -> FastAPI:
    app = FastAPI()
    app.include_router(participant_router(pool_of, settings))
    return app


@pytest.fixture
async def client(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async def pool_of() -> asyncpg.Pool:
        return pool

    transport = httpx.ASGITransport(app_with(pool_of, settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://rj.test") as client:
        yield client


_cases = iter(range(1, 1_000_000))


async def new_case(pool: asyncpg.Pool, *, sensitive: bool = False, in_read_model: bool = True) -> str:
    case_id = f"case-links-{next(_cases):04d}-{'s' if sensitive else 'o'}"
    if in_read_model:
        await pool.execute(
            "INSERT INTO api.cases (case_id, force, sensitive, updated_at) VALUES ($1, $2, $3, now())",
            case_id,
            FORCE,
            sensitive,
        )
    return case_id


def path_of(link: str) -> str:
    return link.removeprefix("http://rj.test")


async def outbox(pool: asyncpg.Pool, case_id: str) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT topic, key, value FROM api.outbox WHERE key = $1 ORDER BY id", case_id)


async def used(pool: asyncpg.Pool, case_id: str) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM api.participant_links_used WHERE case_id = $1", case_id))


def assert_private_page(response: httpx.Response, *secrets: str) -> None:
    """Headers every participant page carries, and nothing of the case or anyone on it in the page."""
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "noindex" in response.headers["x-robots-tag"]
    assert response.headers["content-type"].startswith("text/html")
    for secret in secrets:
        assert secret not in response.text
    assert "Traceback" not in response.text and "Internal Server Error" not in response.text


def assert_quick_exit(response: httpx.Response) -> None:
    exit_link = re.search(r'<a class="quick-exit" id="quick-exit" href="([^"]+)"', response.text)
    assert exit_link and exit_link.group(1) == EXIT_URL  # works without JavaScript, as a plain link
    assert "window.location.replace(exit.href)" in response.text  # with it, replaces this page in the history


# --- GET shows, POST withdraws ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "headers"),
    [("GET", {}), ("HEAD", {}), ("GET", {"User-Agent": SCANNER})],
    ids=["browser", "head", "link-scanner"],
)
async def test_opening_a_link_shows_the_confirmation_and_changes_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool, settings: Settings, method: str, headers: dict[str, str]
) -> None:
    case_id = await new_case(pool)
    link = mint_link(settings, case_id=case_id, person_id="V-ALICE")
    for _ in range(3):
        response = await client.request(method, path_of(link), headers=headers)
        assert response.status_code == 200
        assert_private_page(response, case_id, "V-ALICE")
    assert await outbox(pool, case_id) == []
    assert await used(pool, case_id) == 0
    if method == "GET":
        assert "Do you want to stop taking part?" in response.text
        assert '<form method="post" action="?lang=en">' in response.text
        assert_quick_exit(response)
    # The link still works afterwards: opening it did not use it up.
    assert (await client.post(path_of(link))).status_code == 200


async def test_confirming_sends_one_withdrawal_in_the_participants_name_and_uses_the_link(
    client: httpx.AsyncClient, pool: asyncpg.Pool, settings: Settings
) -> None:
    case_id = await new_case(pool)
    link = mint_link(settings, case_id=case_id, person_id="V-ALICE")

    response = await client.post(path_of(link))

    assert response.status_code == 200
    assert "If you have asked to stop taking part, your facilitator will be in touch." in response.text
    assert_private_page(response, case_id, "V-ALICE")
    assert_quick_exit(response)
    [row] = await outbox(pool, case_id)
    assert (row["topic"], row["key"]) == (topics.COMMANDS, case_id)
    event = REGISTRY.parse(row["value"])
    assert (event.type, event.subject, event.force) == ("rj.consent.withdraw", case_id, FORCE)
    command = event.data
    assert isinstance(command, WithdrawConsent)
    assert command.case_id == case_id and command.person_id == "V-ALICE"
    assert (command.actor.kind, command.actor.id) == ("participant", "V-ALICE")
    assert (command.through, command.method, command.purpose) == (
        RecordedThrough.participant,
        RecordingMethod.online,
        "participation",
    )
    assert command.reason is None  # never asked, never sent
    assert json.loads(row["value"])["data"]["reason"] is None
    assert await used(pool, case_id) == 1

    again = await client.post(path_of(link))
    assert again.status_code == 410
    assert page_text(again) == page_text(response), "a used link reads as the withdrawal did"
    assert_private_page(again, case_id, "V-ALICE")
    assert len(await outbox(pool, case_id)) == 1
    shown = await client.get(path_of(link))
    assert shown.status_code == 410 and page_text(shown) == page_text(response)


async def test_two_confirmations_at_once_send_one_withdrawal(
    client: httpx.AsyncClient, pool: asyncpg.Pool, settings: Settings
) -> None:
    case_id = await new_case(pool)
    path = path_of(mint_link(settings, case_id=case_id, person_id="V-ALICE"))
    responses = await asyncio.gather(*(client.post(path) for _ in range(4)))
    assert sorted(r.status_code for r in responses) == [200, 410, 410, 410]
    assert len(await outbox(pool, case_id)) == 1


async def test_each_link_of_a_person_is_used_once_and_only_its_own(
    client: httpx.AsyncClient, pool: asyncpg.Pool, settings: Settings
) -> None:
    case_id = await new_case(pool)
    first = mint_link(settings, case_id=case_id, person_id="V-ALICE")
    second = mint_link(settings, case_id=case_id, person_id="O-BOB")
    assert (await client.post(path_of(first))).status_code == 200
    assert (await client.get(path_of(second))).status_code == 200
    assert (await client.post(path_of(second))).status_code == 200
    actors = [REGISTRY.parse(r["value"]).data.actor.id for r in await outbox(pool, case_id)]  # type: ignore[attr-defined]
    assert actors == ["V-ALICE", "O-BOB"]


# --- bad links ------------------------------------------------------------------------------------


def flipped(link: str) -> str:
    """The link with one bit of one byte in the middle of its token changed."""
    token = link.rsplit("/", 1)[1]
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return "/p/" + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


async def test_a_bad_link_gets_a_plain_message_and_a_4xx_never_a_500(
    client: httpx.AsyncClient, pool: asyncpg.Pool, settings: Settings
) -> None:
    case_id = await new_case(pool)
    other_key = settings.model_copy(update={"participant_link_key": SecretStr(new_link_key())})
    long_ago = datetime.now(UTC) - timedelta(days=60)
    cases = {
        "expired": (path_of(mint_link(settings, case_id=case_id, person_id="V-A", now=long_ago)), 410, "has expired"),
        "altered": (flipped(mint_link(settings, case_id=case_id, person_id="V-A")), 404, "does not work"),
        "wrong key": (path_of(mint_link(other_key, case_id=case_id, person_id="V-A")), 404, "does not work"),
        "garbage": ("/p/hello-there", 404, "does not work"),
        "symbols": ("/p/%00%ff%3Cscript%3E", 404, "does not work"),
        "huge": ("/p/" + "A" * 60_000, 404, "does not work"),  # httpx sends at most 64 KiB of URL
    }
    for name, (path, status, message) in cases.items():
        for method in ("GET", "HEAD", "POST"):
            response = await client.request(method, path)
            assert response.status_code == status, (name, method)
            if method != "HEAD":
                assert message in response.text, (name, method)
                assert_private_page(response, case_id, "V-A", "<script>")
                assert_quick_exit(response)
    assert await outbox(pool, case_id) == []
    assert await used(pool, case_id) == 0


async def test_without_a_link_key_every_link_gets_the_plain_message(pool: asyncpg.Pool, settings: Settings) -> None:
    case_id = await new_case(pool)
    link = mint_link(settings, case_id=case_id, person_id="V-A")

    async def pool_of() -> asyncpg.Pool:
        return pool

    unkeyed = settings.model_copy(update={"participant_link_key": SecretStr("")})
    transport = httpx.ASGITransport(app_with(pool_of, unkeyed))
    async with httpx.AsyncClient(transport=transport, base_url="http://rj.test") as client:
        for method in ("GET", "POST"):
            response = await client.request(method, path_of(link))
            assert response.status_code == 404 and "does not work" in response.text
    assert await outbox(pool, case_id) == []


async def test_when_the_database_is_down_nothing_happens_and_the_page_says_try_later(
    database: str, pool: asyncpg.Pool, settings: Settings
) -> None:
    case_id = await new_case(pool)
    link = mint_link(settings, case_id=case_id, person_id="V-A")
    closed = await asyncpg.create_pool(database, min_size=1, max_size=1)
    await closed.close()

    async def pool_of() -> asyncpg.Pool:
        return closed

    transport = httpx.ASGITransport(app_with(pool_of, settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://rj.test") as client:
        for method in ("GET", "POST"):
            response = await client.request(method, path_of(link))
            assert response.status_code == 503 and "Try again later" in response.text
    assert await outbox(pool, case_id) == [] and await used(pool, case_id) == 0
    assert (await client_post(pool, settings, link)).status_code == 200  # the link still works afterwards


async def client_post(pool: asyncpg.Pool, settings: Settings, link: str) -> httpx.Response:
    async def pool_of() -> asyncpg.Pool:
        return pool

    transport = httpx.ASGITransport(app_with(pool_of, settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://rj.test") as client:
        return await client.post(path_of(link))


# --- Welsh ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "accept_language", "lang"),
    [
        ("?lang=cy", "", "cy"),
        ("", "cy", "cy"),
        ("", "cy-GB,cy;q=0.9,en-GB;q=0.8", "cy"),
        ("", "en-GB,en;q=0.9,cy;q=0.3", "en"),
        ("", "fr-FR, de;q=0.5", "en"),
        ("", "cy;q=nonsense, en", "en"),
        ("?lang=en", "cy", "en"),
        ("?lang=xx", "cy", "cy"),
    ],
)
async def test_the_page_is_in_welsh_when_asked_by_the_link_or_by_the_browser(
    client: httpx.AsyncClient, pool: asyncpg.Pool, settings: Settings, query: str, accept_language: str, lang: str
) -> None:
    case_id = await new_case(pool)
    path = path_of(mint_link(settings, case_id=case_id, person_id="V-A")) + query
    headers = {"Accept-Language": accept_language} if accept_language else {}
    response = await client.get(path, headers=headers)
    assert response.status_code == 200
    assert f'<html lang="{lang}">' in response.text
    assert response.headers["content-language"] == lang
    if lang == "cy":
        assert "Ydych chi am roi&#39;r gorau i gymryd rhan?" in response.text
        assert "Gadael y dudalen hon yn gyflym" in response.text
        assert '<a href="?lang=en" hreflang="en" lang="en">English</a>' in response.text
    else:
        assert "Do you want to stop taking part?" in response.text
        assert "Leave this page quickly" in response.text


async def test_welsh_carries_through_the_confirmation_and_the_refusals(
    client: httpx.AsyncClient, pool: asyncpg.Pool, settings: Settings
) -> None:
    case_id = await new_case(pool)
    path = path_of(mint_link(settings, case_id=case_id, person_id="V-A"))
    assert '<form method="post" action="?lang=cy">' in (await client.get(path + "?lang=cy")).text
    done = await client.post(path + "?lang=cy")
    assert done.status_code == 200 and "bydd eich hwylusydd yn cysylltu â chi" in done.text
    again = await client.post(path, headers={"Accept-Language": "cy"})
    assert again.status_code == 410 and "bydd eich hwylusydd yn cysylltu â chi" in again.text
    garbage = await client.get("/p/garbage?lang=cy")
    assert garbage.status_code == 404 and "Nid yw&#39;r ddolen hon yn gweithio" in garbage.text


# --- sensitive cases ------------------------------------------------------------------------------


async def test_a_sensitive_case_refuses_links_until_staff_turn_them_on(
    client: httpx.AsyncClient, pool: asyncpg.Pool, settings: Settings
) -> None:
    case_id = await new_case(pool, sensitive=True)
    path = path_of(mint_link(settings, case_id=case_id, person_id="V-A"))
    for method in ("GET", "POST"):
        response = await client.request(method, path)
        assert response.status_code == 403 and "your facilitator will be in touch" in response.text
        assert_private_page(response, case_id, "V-A")
    assert await outbox(pool, case_id) == [] and await used(pool, case_id) == 0

    async with transaction(pool) as conn:
        messages = await set_links_enabled(
            conn, case_id=case_id, enabled=True, by=COORDINATOR, reason="Victim asked for a link at the meeting"
        )
        await write_outbox(conn, "api", messages)

    [message] = messages
    assert (message.topic, message.key) == (topics.API, case_id)
    [row] = await outbox(pool, case_id)
    event = REGISTRY.parse(row["value"])
    assert (event.type, event.subject, event.force) == ("rj.participant-links.changed", case_id, FORCE)
    fact = event.data
    assert isinstance(fact, ParticipantLinksChanged)
    assert fact.enabled and fact.changed_by.id == "C-ANN" and fact.changed_by.kind == "staff"
    assert fact.reason == "Victim asked for a link at the meeting"
    setting = await pool.fetchrow("SELECT * FROM api.participant_link_settings WHERE case_id = $1", case_id)
    assert (setting["enabled"], setting["changed_by"]) == (True, "C-ANN")

    assert (await client.get(path)).status_code == 200
    assert (await client.post(path)).status_code == 200
    assert [r["topic"] for r in await outbox(pool, case_id)] == [topics.API, topics.COMMANDS]


async def test_staff_can_turn_links_off_on_any_case_and_back_on(
    client: httpx.AsyncClient, pool: asyncpg.Pool, settings: Settings
) -> None:
    case_id = await new_case(pool)
    path = path_of(mint_link(settings, case_id=case_id, person_id="V-A"))
    async with transaction(pool) as conn:
        assert await links_allowed(conn, case_id)
        await set_links_enabled(conn, case_id=case_id, enabled=False, by=COORDINATOR, reason=None)
        assert not await links_allowed(conn, case_id)
    assert (await client.post(path)).status_code == 403
    async with transaction(pool) as conn:
        await set_links_enabled(conn, case_id=case_id, enabled=True, by=COORDINATOR, reason=None)
    assert (await client.post(path)).status_code == 200


async def test_a_case_the_read_model_has_not_seen_is_treated_as_sensitive(
    client: httpx.AsyncClient, pool: asyncpg.Pool, settings: Settings
) -> None:
    case_id = await new_case(pool, in_read_model=False)
    path = path_of(mint_link(settings, case_id=case_id, person_id="V-A"))
    assert (await client.post(path)).status_code == 403
    assert await outbox(pool, case_id) == []


# --- what the pages tell whoever holds the phone ----------------------------------------------------


def page_text(response: httpx.Response) -> str:
    """The page without its per-response nonce: what a reader of the screen (or of the HTML) learns."""
    return re.sub(r'nonce="[^"]*"', "", response.text)


@pytest.mark.parametrize("lang", ["en", "cy"])
async def test_a_withdrawal_a_used_link_and_a_refused_case_show_the_same_page(
    client: httpx.AsyncClient, pool: asyncpg.Pool, settings: Settings, lang: str
) -> None:
    """Whoever holds the phone may not be the participant: the page must not tell them whether the withdrawal went,
    had gone already, or was refused on a sensitive case. Only the status code (for the log) differs."""
    case_id, sensitive_case = await new_case(pool), await new_case(pool, sensitive=True)
    path = path_of(mint_link(settings, case_id=case_id, person_id="V-A")) + f"?lang={lang}"
    done = await client.post(path)
    used_up = await client.post(path)
    shown_used = await client.get(path)
    refused = await client.post(path_of(mint_link(settings, case_id=sensitive_case, person_id="V-B")) + f"?lang={lang}")
    assert (done.status_code, used_up.status_code, shown_used.status_code, refused.status_code) == (200, 410, 410, 403)
    assert page_text(done) == page_text(used_up) == page_text(shown_used) == page_text(refused)
    for word in ("used", "cannot", "received", "defnyddio", "ellir", "dod i law"):
        assert word not in done.text
    expired = await client.get(
        path_of(mint_link(settings, case_id=case_id, person_id="V-A", ttl_s=-60)) + f"?lang={lang}"
    )
    altered = await client.get(f"/p/garbage?lang={lang}")
    assert len({page_text(done), page_text(expired), page_text(altered)}) == 3, "expired and altered say so plainly"
