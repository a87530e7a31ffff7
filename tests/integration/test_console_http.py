"""The console over HTTP against the real PostgreSQL read model: nobody is shown a page without signing in; a form
POST without the session's form token changes nothing; with it, the command goes the API's own way (recorded, its
personal words sealed in the outbox); a page showing personal data is view-logged as the API logs it, and an auditor
sees personal data only after stating why; a session whose token no longer verifies sends the browser to sign in;
a sign-in that comes back with a state that is not its own is refused."""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from bench.api_reads import case_facts, force_of
from services.api import auth, readmodel
from services.api.console import LOGIN_COOKIE, SESSION_COOKIE, SessionBox
from services.api.http import create_app
from services.api.principal import Principal, Role
from services.runtime import privacy
from services.runtime.db import create_pool, migrate, transaction
from services.runtime.devstack import create_database, drop_database
from services.runtime.keystore import MasterKeys, ensure_schema
from services.runtime.privacy import Privacy, batch_scope
from services.runtime.settings import Settings

pytestmark = pytest.mark.integration

KEY = os.urandom(32)
FORCE = force_of(0)
CALLERS = {
    "coordinator": Principal(staff_id="C-1", role=Role.coordinator, force=FORCE),
    "auditor": Principal(staff_id="A-1", role=Role.auditor, force=FORCE),
}


class Tokens:
    def verify(self, token: str) -> Principal:
        if token not in CALLERS:
            raise auth.Unauthenticated("the token has expired")
        return CALLERS[token]


@dataclass
class Console:
    client: httpx.AsyncClient
    db: asyncpg.Pool
    case_id: str

    def sign_in_as(self, token: str, csrf: str = "form-token") -> None:
        sealed = SessionBox([KEY]).seal("session", {"token": token, "csrf": csrf}, ttl_s=600)
        self.client.cookies.set(SESSION_COOKIE, sealed)

    async def count(self, sql: str) -> int:
        async with self.db.acquire() as conn:
            return int(await conn.fetchval(sql))


@pytest.fixture
async def console(pg_server: str) -> AsyncIterator[Console]:
    name = f"rj_test_{uuid.uuid4().hex[:10]}"
    url = await create_database(pg_server, name)
    settings = Settings(
        database_url=url,
        master_keys=SecretStr(MasterKeys.generate("t1")),
        console_session_key=SecretStr(base64.b64encode(KEY).decode()),
        oidc_issuer="http://127.0.0.1:9",
    )
    pool = await create_pool(settings.model_copy(update={"db_pool_size": 2}))
    async with pool.acquire() as conn:
        await migrate(conn, "api", "services.api.migrations")
        await ensure_schema(conn)
    before = privacy.installed()
    privacy.install(Privacy.from_settings(settings))
    facts = case_facts(0)
    with batch_scope():
        async with transaction(pool) as conn:
            await readmodel.take_in(conn, facts)

    async def pool_source() -> asyncpg.Pool:
        return pool

    app = create_app(pool=pool_source, verifier=Tokens(), settings=settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://127.0.0.1:8080") as client:
        yield Console(client, pool, facts[0].subject or "")
    privacy.install(before)
    await pool.close()
    await drop_database(pg_server, name)


async def test_nobody_is_shown_a_console_page_without_signing_in(console: Console) -> None:
    for path in ("/console/", f"/console/cases/{console.case_id}", "/console/deadlines", "/console/indirect"):
        answer = await console.client.get(path)
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/console/sign-in?next={quote(path, safe='')}"
    statement = await console.client.get("/console/accessibility")
    assert statement.status_code == 200 and "Accessibility statement" in statement.text


async def test_a_form_without_the_sessions_form_token_changes_nothing_and_one_with_it_sends_the_command(
    console: Console,
) -> None:
    console.sign_in_as("coordinator")
    action = f"/console/cases/{console.case_id}/actions/rj.case.add-note"
    for token in (None, "another-sessions-token"):
        form = {"text": "Left a voicemail", **({"csrf": token} if token else {})}
        refused = await console.client.post(action, data=form)
        assert refused.status_code == 403 and "could not be sent" in refused.text
    assert await console.count("SELECT count(*) FROM api.commands_sent") == 0

    form = {"text": "Left a voicemail", "csrf": "form-token", "idempotency_key": "note-1"}
    sent = await console.client.post(action, data=form)
    assert sent.status_code == 303, sent.text
    assert sent.headers["location"].startswith(f"/console/cases/{console.case_id}/commands/")
    again = await console.client.post(action, data=form)  # a second click on the same form: the same command
    assert again.headers["location"] == sent.headers["location"]
    assert await console.count("SELECT count(*) FROM api.commands_sent") == 1
    async with console.db.acquire() as conn:
        [value] = [r["value"] for r in await conn.fetch("SELECT value FROM api.outbox WHERE topic = 'rj.commands'")]
    assert json.loads(value)["type"] == "rj.case.add-note"
    assert b"Left a voicemail" not in bytes(value), "the note travels sealed, as the API sends it"


async def test_a_form_with_a_problem_names_it_and_sends_nothing(console: Console) -> None:
    console.sign_in_as("coordinator")
    answer = await console.client.post(
        f"/console/cases/{console.case_id}/actions/rj.case.add-note", data={"text": "", "csrf": "form-token"}
    )
    assert answer.status_code == 400 and 'href="#text"' in answer.text and "<title>Error:" in answer.text
    assert await console.count("SELECT count(*) FROM api.commands_sent") == 0


async def test_the_case_page_is_view_logged_and_an_auditor_sees_personal_data_only_with_a_reason(
    console: Console,
) -> None:
    logged = "SELECT count(*) FROM api.outbox WHERE topic = 'rj.api'"
    console.sign_in_as("coordinator")
    page = await console.client.get(f"/console/cases/{console.case_id}")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert await console.count(logged) == 1

    console.sign_in_as("auditor")
    hidden = await console.client.get(f"/console/cases/{console.case_id}")
    assert hidden.status_code == 200 and "Personal details are hidden" in hidden.text
    assert await console.count(logged) == 1, "nothing personal shown, nothing logged"
    shown = await console.client.get(f"/console/cases/{console.case_id}", params={"reason": "SAR-2026-118"})
    assert shown.status_code == 200 and "Personal details are hidden" not in shown.text
    async with console.db.acquire() as conn:
        last = await conn.fetchval("SELECT value FROM api.outbox WHERE topic = 'rj.api' ORDER BY id DESC LIMIT 1")
    view = json.loads(last)["data"]
    assert view["viewer_id"] == "A-1" and view["reason"] == "SAR-2026-118"
    refused = await console.client.post(
        f"/console/cases/{console.case_id}/actions/rj.case.add-note", data={"text": "x", "csrf": "form-token"}
    )
    assert refused.status_code == 403, "auditors send no commands, from the console either"


async def test_a_session_whose_token_no_longer_verifies_is_sent_to_sign_in(console: Console) -> None:
    console.sign_in_as("expired-token")
    answer = await console.client.get("/console/")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/console/sign-in?expired=1")


async def test_a_sign_in_that_comes_back_with_a_state_that_is_not_its_own_is_refused(console: Console) -> None:
    login = SessionBox([KEY]).seal("login", {"state": "ours", "nonce": "n", "verifier": "v", "next": "/console/"}, 600)
    console.client.cookies.set(LOGIN_COOKIE, login)
    answer = await console.client.get("/console/callback", params={"state": "theirs", "code": "stolen"})
    assert answer.status_code == 303 and answer.headers["location"] == "/console/sign-in?failed=1"
    assert SESSION_COOKIE not in answer.cookies


async def test_the_figures_page_opens_in_a_console_session_and_sends_others_to_sign_in(console: Console) -> None:
    """The console's "Figures" link works for a signed-in coordinator; without a session the page and its CSV send
    the browser to sign in, and a session of a role the figures are not for is refused."""
    for path in ("/console/figures", "/console/figures.csv"):
        answer = await console.client.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"] == f"/console/sign-in?next={quote(path, safe='')}"
    console.sign_in_as("coordinator")
    page = await console.client.get("/console/figures?period=quarter")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "Shapland" in page.text
    download = await console.client.get("/console/figures.csv?period=quarter")
    assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
    console.sign_in_as("expired-token")
    answer = await console.client.get("/console/figures")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/console/sign-in?expired=1")
