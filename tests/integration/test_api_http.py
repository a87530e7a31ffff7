"""The API's HTTP layer against a real PostgreSQL: tokens, commands into the api outbox, outcomes, the view log.

The read side and the token verifier are small in-test stand-ins (``ReadSide``, ``FixedTokens``): this file tests
the HTTP layer, and the read model and login have tests of their own. Everything written goes to a real database.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import types
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, SecretStr

from schemas.registry import REGISTRY
from services.api import commands
from services.api.principal import CaseAccess, Principal, Role
from services.runtime import keystore, privacy
from services.runtime.db import migrate
from services.runtime.devstack import database_for_run
from services.runtime.fieldcrypt import TOKEN_PREFIX
from services.runtime.keystore import MasterKeys
from services.runtime.settings import Settings


def auth_module() -> types.ModuleType:
    """``services.api.auth`` (the login part); until it is merged, a module with just its two exceptions."""
    try:
        return importlib.import_module("services.api.auth")
    except ImportError:
        shim = types.ModuleType("services.api.auth")

        class Unauthenticated(Exception):
            pass

        class IdentityProviderUnavailable(Exception):
            pass

        shim.Unauthenticated = Unauthenticated  # type: ignore[attr-defined]
        shim.IdentityProviderUnavailable = IdentityProviderUnavailable  # type: ignore[attr-defined]
        sys.modules["services.api.auth"] = shim
        return shim


auth = auth_module()

FORCE = "force-a"
FACILITATOR = Principal(staff_id="F-1", role=Role.facilitator, force=FORCE, name="Fay")
OTHER_FACILITATOR = Principal(staff_id="F-2", role=Role.facilitator, force=FORCE)
VOLUNTEER = Principal(staff_id="V-1", role=Role.volunteer, force=FORCE)
COORDINATOR = Principal(staff_id="C-1", role=Role.coordinator, force=FORCE)
AUDITOR = Principal(staff_id="A-1", role=Role.auditor, force=FORCE)
OTHER_FORCE = Principal(staff_id="C-9", role=Role.coordinator, force="force-b")
TOKENS = {p.staff_id.lower(): p for p in (FACILITATOR, OTHER_FACILITATOR, VOLUNTEER, COORDINATOR, AUDITOR, OTHER_FORCE)}


class FixedTokens:
    """Maps fixed tokens to callers; ``provider-down`` plays an identity provider that cannot be reached."""

    def verify(self, token: str) -> Principal:
        if token == "provider-down":
            raise auth.IdentityProviderUnavailable("JWKS fetch failed")
        if token not in TOKENS:
            raise auth.Unauthenticated("unknown or invalid token")
        return TOKENS[token]


def bearer(principal: Principal) -> dict[str, str]:
    return {"Authorization": f"Bearer {principal.staff_id.lower()}"}


# --- the read side, as small as the routes need -----------------------------------------------------


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CaseSummary(Strict):
    case_id: str
    status: str


class CasePage(Strict):
    cases: list[CaseSummary]
    next: str | None = None


class Participant(Strict):
    person_id: str
    role: str
    name: str | None


class CaseDetail(Strict):
    case_id: str
    participants: list[Participant]
    personal_hidden: bool
    personal_fields: list[str]
    timeline: list[str] = []


class Deadline(Strict):
    case_id: str
    kind: str
    due_at: datetime


class IndirectItem(Strict):
    case_id: str
    item_id: str


class CommandAnswer(Strict):
    command_id: str
    event_id: str
    case_id: str
    event_type: str
    status: str
    reason: str | None
    at: datetime


VIEWS = types.SimpleNamespace(CasePage=CasePage, CaseDetail=CaseDetail, Deadline=Deadline, IndirectItem=IndirectItem)

CASES = {
    "C-1": CaseAccess(case_id="C-1", force=FORCE, facilitator_ids=frozenset({"F-1"})),
    "C-2": CaseAccess(case_id="C-2", force=FORCE, facilitator_ids=frozenset({"F-2"})),
    "C-B": CaseAccess(case_id="C-B", force="force-b", facilitator_ids=frozenset()),
}


@dataclass
class ReadSide:
    """The read model's functions over fixed cases; command answers from the real ``api.command_answers``."""

    cases: dict[str, CaseAccess] = field(default_factory=lambda: dict(CASES))

    async def case_access(self, conn: asyncpg.Connection, case_id: str) -> CaseAccess | None:
        return self.cases.get(case_id)

    async def list_cases(self, conn: asyncpg.Connection, *, force: str, facilitator_id: str | None = None,
                         status: str | None = None, crime_reference: str | None = None,
                         sensitive: bool | None = None, overdue: bool | None = None, limit: int = 50,
                         after: str | None = None) -> CasePage:  # fmt: skip
        if after is not None and after != "page-2":
            raise ValueError("not a cursor this API gave")
        chosen = [
            c for c in self.cases.values()
            if c.force == force and (facilitator_id is None or facilitator_id in c.facilitator_ids)
        ]  # fmt: skip
        return CasePage(cases=[CaseSummary(case_id=c.case_id, status="open") for c in chosen][:limit])

    async def case_detail(
        self, conn: asyncpg.Connection, case_id: str, *, personal: bool, view_log: bool = False
    ) -> CaseDetail | None:
        if case_id not in self.cases:
            return None
        return CaseDetail(
            case_id=case_id,
            participants=[Participant(person_id="P-1", role="victim", name="Vic Tim" if personal else None)],
            personal_hidden=not personal,
            personal_fields=["participants[P-1].name"] if personal else [],
            timeline=["rj.case.opened", *(["rj.view.logged"] if view_log else [])],
        )

    async def deadlines(self, conn: asyncpg.Connection, *, force: str, facilitator_id: str | None,
                        state: Literal["due", "breached"]) -> list[Deadline]:  # fmt: skip
        return [Deadline(case_id="C-1", kind="victim_information", due_at=datetime(2030, 1, 1, tzinfo=UTC))]

    async def indirect_awaiting_approval(self, conn: asyncpg.Connection, *, force: str,
                                         facilitator_id: str | None) -> list[IndirectItem]:  # fmt: skip
        return [IndirectItem(case_id="C-1", item_id="I-1")]

    async def command_answers(self, conn: asyncpg.Connection, command_id: str) -> list[CommandAnswer]:
        rows = await conn.fetch(
            "SELECT command_id, event_id, case_id, event_type, status, reason, at FROM api.command_answers "
            "WHERE command_id = $1",
            command_id,
        )
        return [CommandAnswer(**dict(r)) for r in rows]


class Rules:
    """The design's policy, enough for the routes: same force; facilitators their own cases; coordinators assign."""

    STAFF_COMMANDS = frozenset(
        t for t in commands.command_models(REGISTRY.models) if t not in {"rj.indirect.release-due",
                                                                         "rj.consent.erasures-due"}
    )  # fmt: skip

    def may_see(self, principal: Principal, case: CaseAccess) -> bool:
        if principal.force != case.force:
            return False
        return principal.role in (Role.coordinator, Role.auditor) or principal.staff_id in case.facilitator_ids

    def refusal(self, principal: Principal, command_type: str) -> str | None:
        if principal.role == Role.auditor:
            return "an auditor may only read"
        if command_type == "rj.facilitator.assign" and principal.role != Role.coordinator:
            return "only a coordinator assigns facilitators"
        if principal.role == Role.volunteer and command_type in {"rj.case.close", "rj.risk-assessment.record"}:
            return "a volunteer may not close a case or record a risk assessment"
        return None

    def may_issue(self, principal: Principal, command_type: str) -> bool:
        return command_type in self.STAFF_COMMANDS and self.refusal(principal, command_type) is None

    def needs_reason_for_personal_data(self, principal: Principal) -> bool:
        return principal.role == Role.auditor

    def may_see_view_log(self, principal: Principal) -> bool:
        return principal.role == Role.auditor


COMMAND_ANSWERS_TABLE = """
    CREATE TABLE IF NOT EXISTS api.command_answers (
        command_id text NOT NULL, event_id text PRIMARY KEY, case_id text, event_type text,
        status text CHECK (status IN ('accepted', 'rejected', 'already_handled', 'unchanged')), reason text,
        at timestamptz)"""


async def prepare_database(url: str) -> None:
    """The api schema as the service migrates it, the key store, and (until the read model's migration is merged)
    the read model's ``command_answers`` table as the design gives it."""
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn, "api", "services.api.migrations")
        await keystore.ensure_schema(conn)
        await conn.execute(COMMAND_ANSWERS_TABLE)
    finally:
        await conn.close()


def app_for(url: str, read: ReadSide | None = None) -> FastAPI:
    """The API over the database at ``url``; its pool is made on first use, in the loop that serves."""
    from services.api.http import create_app

    pools: list[asyncpg.Pool] = []

    async def pool() -> asyncpg.Pool:
        if not pools:
            pools.append(await asyncpg.create_pool(url, min_size=1, max_size=4))
        return pools[0]

    app = create_app(pool=pool, verifier=FixedTokens(), settings=Settings(database_url=url), read_model=read or
                     ReadSide(), views=VIEWS, policy=Rules())  # type: ignore[arg-type]  # fmt: skip
    app.state.pools = pools
    return app


@dataclass
class Api:
    client: httpx.AsyncClient
    db: asyncpg.Connection
    url: str

    async def outbox(self, topic: str) -> list[dict[str, Any]]:
        rows = await self.db.fetch("SELECT key, value FROM api.outbox WHERE topic = $1 ORDER BY id", topic)
        return [{"key": r["key"], **json.loads(r["value"])} for r in rows]


@pytest.fixture
async def api(pg_server: str) -> AsyncIterator[Api]:
    keys = privacy.Privacy.from_settings(Settings(master_keys=SecretStr(MasterKeys.generate("test1"))))
    before = privacy.installed()
    privacy.install(keys)
    async with database_for_run(pg_server, "rj_api_http") as url:
        await prepare_database(url)
        app = app_for(url)
        db = await asyncpg.connect(url)
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api") as client:
                yield Api(client, db, url)
        finally:
            await db.close()
            await app.state.answer_waiters.close()
            for pool in app.state.pools:
                await pool.close()
            privacy.install(before)


# --- who is calling -----------------------------------------------------------------------------------


async def test_a_request_without_a_token_or_with_an_unknown_one_is_401_with_www_authenticate(api: Api) -> None:
    for headers in ({}, {"Authorization": "Bearer garbage"}, {"Authorization": "Basic Zm9vOmJhcg=="}):
        response = await api.client.get("/cases/C-1", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.json()["error"] == "unauthenticated"
    assert await api.outbox("rj.api") == []


async def test_an_identity_provider_that_cannot_be_reached_is_503_not_401(api: Api) -> None:
    response = await api.client.get("/me", headers={"Authorization": "Bearer provider-down"})
    assert response.status_code == 503
    assert response.json()["error"] == "identity_provider_unavailable"


async def test_me_says_who_the_token_names_and_what_they_may_send(api: Api) -> None:
    response = await api.client.get("/me", headers=bearer(VOLUNTEER))
    assert response.status_code == 200
    assert response.json()["staff_id"] == "V-1"
    assert "rj.case.close" not in response.json()["commands"]
    assert "rj.case.add-note" in response.json()["commands"]


# --- commands -------------------------------------------------------------------------------------------


async def test_a_command_is_answered_202_and_written_for_rj_commands_with_the_actor_from_the_token(api: Api) -> None:
    response = await api.client.post(
        "/cases/C-1/commands/rj.case.add-note", json={"text": "Met the victim at home"}, headers=bearer(FACILITATOR)
    )
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["case_id"] == "C-1" and answer["command_type"] == "rj.case.add-note"
    assert answer["status_url"] == f"/commands/{answer['command_id']}"
    [sent] = await api.outbox("rj.commands")
    assert sent["key"] == "C-1" and sent["subject"] == "C-1" and sent["force"] == FORCE
    assert sent["id"] == answer["command_id"] and sent["type"] == "rj.case.add-note"
    assert sent["data"]["actor"] == {"kind": "staff", "id": "F-1"}
    assert sent["data"]["case_id"] == "C-1"
    assert sent["data"]["text"].startswith(TOKEN_PREFIX), "the note is personal data: sealed in the outbox"
    row = await api.db.fetchrow("SELECT * FROM api.commands_sent WHERE command_id = $1", answer["command_id"])
    assert (row["case_id"], row["command_type"], row["staff_id"]) == ("C-1", "rj.case.add-note", "F-1")


async def test_a_body_that_names_the_actor_or_the_case_is_refused(api: Api) -> None:
    for extra in ({"actor": {"kind": "staff", "id": "C-1"}}, {"case_id": "C-2"}):
        response = await api.client.post(
            "/cases/C-1/commands/rj.case.add-note", json={"text": "note", **extra}, headers=bearer(FACILITATOR)
        )
        assert response.status_code == 422
        assert next(iter(extra)) in response.json()["detail"]
    assert await api.outbox("rj.commands") == []


async def test_a_retried_post_with_the_same_idempotency_key_answers_the_same_id_and_sends_once(api: Api) -> None:
    headers = {**bearer(FACILITATOR), "Idempotency-Key": "close-once"}
    first = await api.client.post("/cases/C-1/commands/rj.case.close", json={"closure_reason": "completed"},
                                  headers=headers)  # fmt: skip
    again = await api.client.post("/cases/C-1/commands/rj.case.close", json={"closure_reason": "completed"},
                                  headers=headers)  # fmt: skip
    assert first.status_code == again.status_code == 202
    assert first.json()["command_id"] == again.json()["command_id"]
    assert len(await api.outbox("rj.commands")) == 1
    other = await api.client.post("/cases/C-1/commands/rj.case.resume", json={}, headers=headers)
    assert other.status_code == 409, "the same key for another command is a conflict, not a silent repeat"
    assert len(await api.outbox("rj.commands")) == 1


async def test_an_invalid_body_is_422_naming_the_field_never_500(api: Api) -> None:
    cases = [
        ({"closure_reason": "bored"}, "closure_reason"),
        ({}, "closure_reason"),
        ({"closure_reason": "completed", "reason": 12}, "reason"),
        (["completed"], "body"),
    ]
    for body, named in cases:
        response = await api.client.post("/cases/C-1/commands/rj.case.close", json=body, headers=bearer(FACILITATOR))
        assert response.status_code in (400, 422), response.text
        if named:
            assert named in response.json()["detail"]
    broken = await api.client.post("/cases/C-1/commands/rj.case.close", content=b"{not json",
                                   headers={**bearer(FACILITATOR), "Content-Type": "application/json"})  # fmt: skip
    assert broken.status_code == 422 and broken.json()["error"] == "invalid"
    assert await api.outbox("rj.commands") == []


async def test_a_case_the_caller_may_not_see_is_the_same_404_as_one_that_does_not_exist(api: Api) -> None:
    body = {"text": "a note"}
    unknown = await api.client.post("/cases/C-404/commands/rj.case.add-note", json=body, headers=bearer(FACILITATOR))
    not_mine = await api.client.post("/cases/C-2/commands/rj.case.add-note", json=body, headers=bearer(FACILITATOR))
    other_force = await api.client.get("/cases/C-1", headers=bearer(OTHER_FORCE))
    unknown_read = await api.client.get("/cases/C-404", headers=bearer(OTHER_FORCE))
    assert unknown.status_code == not_mine.status_code == other_force.status_code == unknown_read.status_code == 404
    assert unknown.json() == not_mine.json() == other_force.json() == unknown_read.json()
    assert await api.outbox("rj.commands") == []


async def test_a_command_the_role_may_not_send_is_403_saying_why(api: Api) -> None:
    assign = await api.client.post("/cases/C-1/commands/rj.facilitator.assign", json={"facilitator_id": "F-3"},
                                   headers=bearer(FACILITATOR))  # fmt: skip
    assert assign.status_code == 403
    assert "coordinator" in assign.json()["detail"]
    audit = await api.client.post("/cases/C-1/commands/rj.case.add-note", json={"text": "x"}, headers=bearer(AUDITOR))
    assert audit.status_code == 403 and "auditor" in audit.json()["detail"]
    assert await api.outbox("rj.commands") == []


async def test_the_outcome_is_pending_then_answers_as_soon_as_an_answer_is_recorded(api: Api) -> None:
    sent = await api.client.post("/cases/C-1/commands/rj.case.close", json={"closure_reason": "completed"},
                                 headers=bearer(FACILITATOR))  # fmt: skip
    command_id = sent.json()["command_id"]
    pending = await api.client.get(f"/commands/{command_id}", headers=bearer(FACILITATOR))
    assert pending.status_code == 200 and pending.json()["status"] == "pending" and pending.json()["facts"] == []

    async def answer_later() -> None:
        await asyncio.sleep(0.5)
        async with api.db.transaction():
            await api.db.execute(
                "INSERT INTO api.command_answers VALUES ($1, 'E-1', 'C-1', 'rj.case.closed', 'accepted', NULL, now())",
                command_id,
            )
            await api.db.execute("SELECT pg_notify('rj_api_answers', $1)", command_id)

    loop = asyncio.get_running_loop()
    started = loop.time()
    answering = asyncio.create_task(answer_later())
    waited = await api.client.get(f"/commands/{command_id}", params={"wait": 2}, headers=bearer(FACILITATOR))
    took = loop.time() - started
    await answering
    assert waited.status_code == 200
    assert waited.json()["status"] == "accepted"
    assert [f["event_id"] for f in waited.json()["facts"]] == ["E-1"]
    assert 0.4 < took < 1.5, f"answered {took:.2f} s after asking: it should come as soon as the answer lands"
    hidden = await api.client.get(f"/commands/{command_id}", headers=bearer(OTHER_FACILITATOR))
    assert hidden.status_code == 404


async def test_long_polls_hold_no_pooled_connection_so_other_requests_and_answers_go_on(api: Api) -> None:
    """Twelve waits on a pool of four: each borrows a connection only to look, so the case page answers while they
    wait, and an answer recorded meanwhile reaches every waiter (one LISTEN connection wakes them all)."""
    sent = await api.client.post("/cases/C-1/commands/rj.case.resume", json={}, headers=bearer(FACILITATOR))
    command_id = sent.json()["command_id"]
    polls = [
        asyncio.create_task(api.client.get(f"/commands/{command_id}", params={"wait": 20}, headers=bearer(FACILITATOR)))
        for _ in range(12)
    ]
    await asyncio.sleep(0.5)
    page = await api.client.get("/cases/C-1", params={"personal": "false"}, headers=bearer(FACILITATOR))
    assert page.status_code == 200
    assert not any(p.done() for p in polls), "the page was answered while every long-poll still waited"
    async with api.db.transaction():
        await api.db.execute(
            "INSERT INTO api.command_answers VALUES ($1, 'E-9', 'C-1', 'rj.case.resumed', 'accepted', NULL, now())",
            command_id,
        )
        await api.db.execute("SELECT pg_notify('rj_api_answers', $1)", command_id)
    answers = await asyncio.gather(*polls)
    assert all(a.status_code == 200 and a.json()["status"] == "accepted" for a in answers)


async def test_a_rejected_command_shows_the_reason(api: Api) -> None:
    sent = await api.client.post("/cases/C-1/commands/rj.case.resume", json={}, headers=bearer(FACILITATOR))
    command_id = sent.json()["command_id"]
    await api.db.execute(
        "INSERT INTO api.command_answers VALUES ($1, 'E-9', 'C-1', 'rj.command.rejected', 'rejected', "
        "'the case is not on hold', now())",
        command_id,
    )
    outcome = (await api.client.get(f"/commands/{command_id}", headers=bearer(FACILITATOR))).json()
    assert outcome["status"] == "rejected" and outcome["reason"] == "the case is not on hold"


# --- reads and the view log ----------------------------------------------------------------------------


async def test_the_case_page_with_personal_data_logs_the_view_and_without_it_logs_nothing(api: Api) -> None:
    shown = await api.client.get("/cases/C-1", headers=bearer(FACILITATOR))
    assert shown.status_code == 200 and shown.json()["participants"][0]["name"] == "Vic Tim"
    [logged] = await api.outbox("rj.api")
    assert logged["type"] == "rj.view.logged" and logged["key"] == "C-1" and logged["force"] == FORCE
    assert logged["data"]["viewer_id"] == "F-1" and logged["data"]["role"] == "facilitator"
    assert logged["data"]["fields"] == ["participants[P-1].name"] and logged["data"]["what"] == "case page"

    hidden = await api.client.get("/cases/C-1", headers=bearer(AUDITOR))
    assert hidden.status_code == 200 and hidden.json()["personal_hidden"] is True
    assert len(await api.outbox("rj.api")) == 1, "a page without personal data is not a view of it"


async def test_an_auditor_sees_personal_data_only_with_a_reason_and_the_reason_is_logged(api: Api) -> None:
    without = await api.client.get("/cases/C-2", headers=bearer(AUDITOR))
    assert without.json()["participants"][0]["name"] is None
    header = await api.client.get("/cases/C-2", headers={**bearer(AUDITOR), "X-View-Reason": "complaint 42"})
    query = await api.client.get("/cases/C-2", params={"reason": "case review"}, headers=bearer(AUDITOR))
    assert header.json()["participants"][0]["name"] == query.json()["participants"][0]["name"] == "Vic Tim"
    logged = await api.outbox("rj.api")
    assert [e["data"]["reason"] for e in logged] == ["complaint 42", "case review"]
    assert {e["data"]["viewer_id"] for e in logged} == {"A-1"}
    too_long = await api.client.get("/cases/C-2", params={"reason": "x" * 501}, headers=bearer(AUDITOR))
    assert too_long.status_code == 422 and "reason" in too_long.json()["detail"]


async def test_only_an_auditors_case_page_asks_the_read_model_for_the_view_log(api: Api) -> None:
    audited = await api.client.get("/cases/C-1", headers=bearer(AUDITOR))
    assert audited.json()["timeline"] == ["rj.case.opened", "rj.view.logged"]
    for caller in (FACILITATOR, COORDINATOR):
        page = await api.client.get("/cases/C-1", headers=bearer(caller))
        assert page.status_code == 200 and page.json()["timeline"] == ["rj.case.opened"]


async def test_a_page_whose_view_cannot_be_logged_is_not_shown(api: Api) -> None:
    # The log is written before the response: when writing it fails, the caller gets no personal data.
    await api.db.execute("ALTER TABLE api.outbox ADD CONSTRAINT no_view_logs CHECK (topic <> 'rj.api')")
    app = app_for(api.url)
    try:
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            response = await client.get("/cases/C-1", headers=bearer(FACILITATOR))
    finally:
        for pool in app.state.pools:
            await pool.close()
    assert response.status_code == 500
    assert "Vic Tim" not in response.text and response.json()["error"] == "internal"


async def test_lists_and_queues_cover_the_callers_force_or_their_own_cases(api: Api) -> None:
    mine = await api.client.get("/cases", headers=bearer(FACILITATOR))
    everyone = await api.client.get("/cases", headers=bearer(COORDINATOR))
    assert [c["case_id"] for c in mine.json()["cases"]] == ["C-1"]
    assert [c["case_id"] for c in everyone.json()["cases"]] == ["C-1", "C-2"]
    bad_cursor = await api.client.get("/cases", params={"after": "forged"}, headers=bearer(COORDINATOR))
    assert bad_cursor.status_code == 400 and bad_cursor.json()["error"] == "bad_cursor"
    assert (await api.client.get("/deadlines", params={"state": "breached"}, headers=bearer(FACILITATOR))).is_success
    assert (
        await api.client.get("/deadlines", params={"state": "soon"}, headers=bearer(FACILITATOR))
    ).status_code == 422
    queue = await api.client.get("/indirect-items/awaiting-approval", headers=bearer(COORDINATOR))
    assert queue.json() == [{"case_id": "C-1", "item_id": "I-1"}]
