"""The facilitator API over HTTP: who is calling (a bearer token, checked by the verifier), what they may see and do
(the policy), reads from the read model, commands onto ``rj.commands`` through the api outbox, and the view log
(rule 8): every response that shows personal data writes ``rj.view.logged`` in the transaction of the read.

The routes only translate: the read model answers reads, ``commands`` sends and follows commands, the policy
decides. Every error is JSON ``{"error": code, "detail": why}``; bad input is a 4xx, never a 500.

This module deliberately has no ``from __future__ import annotations``: FastAPI reads the annotations of the
per-command routes, whose body types are made at run time, and must see the types themselves.
"""

import importlib
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import asyncpg
import structlog
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas import topics
from schemas.api import ViewLogged
from schemas.commands import Command
from schemas.envelope import new_event
from services.api import commands, links, ownership
from services.api.principal import CaseAccess, Principal, Role
from services.runtime import privacy
from services.runtime.db import connect, transaction
from services.runtime.outbox import Outgoing, write_outbox
from services.runtime.settings import Settings

log = structlog.get_logger()

OPENAPI_FILE = Path(__file__).resolve().parent / "openapi.json"
SAFE_TEXT = r"^[^\x00-\x1f\x7f]+$"
"""No control characters in ids and filters: they go to PostgreSQL as text, which refuses NUL."""
WHOLE_FORCE = frozenset({Role.coordinator, Role.auditor})
"""Roles whose lists and queues cover every case of their force; the others see the cases assigned to them."""

PoolSource = Callable[[], Awaitable[asyncpg.Pool]]


class Verifier(Protocol):
    """Turns a bearer token into the caller (``services.api.auth.TokenVerifier``); raises ``auth.Unauthenticated``
    or ``auth.IdentityProviderUnavailable``."""

    def verify(self, token: str) -> Principal: ...


class ReadModel(Protocol):
    """The read side the routes ask (``services.api.queries``); every function runs on the caller's connection."""

    async def case_access(self, conn: asyncpg.Connection, case_id: str) -> CaseAccess | None: ...

    async def list_cases(
        self,
        conn: asyncpg.Connection,
        *,
        force: str,
        facilitator_id: str | None = None,
        status: str | None = None,
        crime_reference: str | None = None,
        limit: int = 50,
        after: str | None = None,
    ) -> Any: ...

    async def case_detail(
        self, conn: asyncpg.Connection, case_id: str, *, personal: bool, view_log: bool = False
    ) -> Any: ...

    async def deadlines(
        self, conn: asyncpg.Connection, *, force: str, facilitator_id: str | None, state: Literal["due", "breached"]
    ) -> list[Any]: ...

    async def indirect_awaiting_approval(
        self, conn: asyncpg.Connection, *, force: str, facilitator_id: str | None
    ) -> list[Any]: ...

    async def command_answers(self, conn: asyncpg.Connection, command_id: str) -> list[Any]: ...


class ViewModels(Protocol):
    """The response models of the reads (``services.api.views``): they make the OpenAPI document."""

    CasePage: type[BaseModel]
    CaseDetail: type[BaseModel]
    Deadline: type[BaseModel]
    IndirectItem: type[BaseModel]


class Policy(Protocol):
    """Who may see and do what (``services.api.policy``)."""

    STAFF_COMMANDS: frozenset[str]

    def may_see(self, principal: Principal, case: CaseAccess) -> bool: ...

    def may_issue(self, principal: Principal, command_type: str) -> bool: ...

    def refusal(self, principal: Principal, command_type: str) -> str | None: ...

    def needs_reason_for_personal_data(self, principal: Principal) -> bool: ...

    def may_see_view_log(self, principal: Principal) -> bool: ...


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error: str = Field(description="A short code: unauthenticated, forbidden, not_found, invalid, conflict, ...")
    detail: str = Field(description="Why, in words safe to show the caller")


class Me(BaseModel):
    """The caller as their token vouches for them, and the commands their role may send."""

    model_config = ConfigDict(extra="forbid")

    staff_id: str
    role: Role
    force: str
    name: str | None = None
    commands: list[str] = Field(description="Command types this caller may send")


class ApiError(Exception):
    """An answer other than success, with the status, code and words the caller gets."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers


def no_such_case() -> ApiError:
    # The same answer for a case that does not exist and one the caller may not see: it says nothing of which.
    return ApiError(404, "not_found", "no such case")


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": words}
    for status, words in {
        400: "The request cannot be answered as asked (a bad cursor, say)",
        401: "No token, or one that is unknown, expired or altered",
        403: "The caller's role may not do this",
        404: "No such thing, or not one the caller may see",
        422: "The input breaks a rule; the detail names the field",
        503: "The identity provider cannot be reached to check the token",
    }.items()
}
COMMAND_ERRORS = {
    **ERRORS,
    409: {"model": ErrorBody, "description": "The Idempotency-Key was used before for another command or body"},
    413: {"model": ErrorBody, "description": "The body is larger than the API reads (api_max_body_bytes)"},
}

CaseId = Annotated[str, PathParam(min_length=1, max_length=200, pattern=SAFE_TEXT, description="The case id")]
Filter = Annotated[str | None, Query(min_length=1, max_length=200, pattern=SAFE_TEXT)]
ViewReason = Annotated[str | None, Query(min_length=1, max_length=500, pattern=SAFE_TEXT)]
ViewReasonHeader = Annotated[str | None, Header(alias="X-View-Reason", min_length=1, max_length=500, pattern=SAFE_TEXT)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=SAFE_TEXT,
        description="Send the same key again to retry safely: the same command id, sent once",
    ),
]


def create_app(
    *,
    pool: PoolSource,
    verifier: Verifier,
    settings: Settings,
    read_model: ReadModel | None = None,
    views: ViewModels | None = None,
    policy: Policy | None = None,
) -> FastAPI:
    """The API's ASGI application. ``pool`` gives the service's database pool (made on first use); the read model,
    its response models and the policy default to ``services.api.queries``, ``.views`` and ``.policy``."""
    read: ReadModel = read_model or importlib.import_module("services.api.queries")  # type: ignore[assignment]
    models: ViewModels = views or importlib.import_module("services.api.views")  # type: ignore[assignment]
    rules: Policy = policy or importlib.import_module("services.api.policy")  # type: ignore[assignment]

    app = FastAPI(
        title="Restorative justice facilitator API",
        version="1",
        description=__doc__,
        responses={500: {"model": ErrorBody, "description": "A fault of ours; the detail never says more"}},
    )
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    waiters = commands.AnswerWaiters(lambda: connect(settings))
    app.state.answer_waiters = waiters
    staff = StaffActions(pool=pool, verifier=verifier, read=read, rules=rules, waiters=waiters)
    app.state.staff = staff
    bearer = HTTPBearer(auto_error=False, description="An access token from the force's identity provider")

    async def caller(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
        if credentials is None:
            raise ApiError(401, "unauthenticated", "a bearer token is required", {"WWW-Authenticate": "Bearer"})
        return await staff.principal(credentials.credentials)

    Caller = Annotated[Principal, Depends(caller)]
    visible_case = staff.visible_case

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.error, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid", describe_errors(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
        headers = exc.headers
        if exc.status_code == 405:  # every method the path has, not only those of the first route that matched it
            allowed = {
                method
                for route in app.routes
                if isinstance(route, APIRoute) and route.path_regex.match(request.url.path)
                for method in route.methods or ()
            }
            headers = {"Allow": ", ".join(sorted(allowed))}
        return error_response(exc.status_code, codes.get(exc.status_code, "error"), str(exc.detail), headers)

    @app.exception_handler(Exception)
    async def fault(_request: Request, exc: Exception) -> JSONResponse:
        log.error("api_request_failed", error=repr(exc))
        return error_response(500, "internal", "something went wrong on our side; it has been logged")

    @app.get("/me", response_model=Me, responses=ERRORS, tags=["staff"])
    async def me(principal: Caller) -> Me:
        """Who the token says the caller is."""
        allowed = staff.commands_for(principal)
        return Me(
            staff_id=principal.staff_id, role=principal.role, force=principal.force, name=principal.name,
            commands=allowed,
        )  # fmt: skip

    @app.get("/cases", response_model=models.CasePage, responses=ERRORS, tags=["cases"])
    async def list_cases(
        principal: Caller,
        status: Filter = None,
        facilitator: Filter = None,
        crime_reference: Filter = None,
        sensitive: bool | None = None,
        overdue: bool | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        after: Annotated[str | None, Query(min_length=1, max_length=500, pattern=SAFE_TEXT)] = None,
    ) -> Any:
        """Cases of the caller's force, most recently changed first (no personal data); ``after`` is the
        ``next`` cursor of the page before. Facilitators and volunteers see the cases assigned to them.
        ``sensitive`` keeps only sensitive cases (or only the others); ``overdue=true`` only cases with a deadline
        passed unmet."""
        return await staff.list_cases(
            principal, status=status, facilitator=facilitator, crime_reference=crime_reference,
            sensitive=sensitive, overdue=overdue, limit=limit, after=after,
        )  # fmt: skip

    @app.get("/cases/{case_id}", response_model=models.CaseDetail, responses=ERRORS, tags=["cases"])
    async def case_page(
        principal: Caller,
        case_id: CaseId,
        reason: ViewReason = None,
        view_reason: ViewReasonHeader = None,
        personal: Annotated[
            bool,
            Query(description="false: the page without personal values (nothing to log), e.g. for a UI polling status"),
        ] = True,
    ) -> Any:
        """One case in full. An auditor sees personal data only when they state why (``X-View-Reason`` or
        ``?reason=``); every response that shows any is logged (``rj.view.logged``) before it is sent. An auditor's
        timeline also holds the view log's entries (who viewed the case's personal data, when, which fields, why);
        no other role's does."""
        return await staff.case_page(principal, case_id, reason=view_reason or reason, personal=personal)

    @app.get("/deadlines", response_model=list[models.Deadline], responses=ERRORS, tags=["queues"])  # type: ignore[name-defined]
    async def deadlines(principal: Caller, state: Literal["due", "breached"] = "due") -> Any:
        """Victims' Code clocks and agreement items due soon (``due``) or passed unmet (``breached``)."""
        return await staff.deadlines(principal, state)

    @app.get(
        "/indirect-items/awaiting-approval",
        response_model=list[models.IndirectItem],  # type: ignore[name-defined]
        responses=ERRORS,
        tags=["queues"],
    )
    async def indirect_awaiting_approval(principal: Caller) -> Any:
        """Indirect-RJ items (letters, recordings) waiting for a facilitator to screen them."""
        return await staff.indirect_awaiting_approval(principal)

    @app.get("/commands/{command_id}", response_model=commands.CommandOutcome, responses=ERRORS, tags=["commands"])
    async def command_outcome(
        principal: Caller,
        command_id: Annotated[str, PathParam(min_length=1, max_length=200, pattern=SAFE_TEXT)],
        wait: Annotated[float, Query(ge=0, le=commands.MAX_WAIT_S, description="seconds to wait for an answer")] = 0,
    ) -> commands.CommandOutcome:
        """What became of a command; with ``wait``, held open until its first answer comes or the time is up."""
        return await staff.command_outcome(principal, command_id, wait)

    for command_type, model in staff.case_commands.items():
        add_command_route(app, command_type, model, caller=caller, staff=staff)
    for command_type, registration in commands.registration_models(rules.STAFF_COMMANDS).items():
        add_registration_route(app, command_type, registration, caller=caller, pool=pool, rules=rules)

    @app.put(
        "/cases/{case_id}/participant-links",
        response_model=LinksSetting,
        responses=ERRORS,
        tags=["participant links"],
    )
    async def set_participant_links(principal: Caller, case_id: CaseId, body: LinksSetting) -> LinksSetting:
        """Turn participants' withdraw links on or off for a case (off by default on a sensitive case)."""
        if principal.role not in LINK_SETTERS:
            raise ApiError(403, "forbidden", f"a {principal.role} may not change a case's participant links")
        async with transaction(await pool()) as conn:
            await visible_case(conn, principal, case_id)
            facts = await links.set_links_enabled(
                conn, case_id=case_id, enabled=body.enabled, by=principal, reason=body.reason
            )
            await write_outbox(conn, commands.SCHEMA, facts)
        return body

    @app.post(
        "/cases/{case_id}/withdraw-links",
        response_model=WithdrawLink,
        responses=ERRORS,
        tags=["participant links"],
    )
    async def make_withdraw_link(principal: Caller, case_id: CaseId, body: WithdrawLinkFor) -> WithdrawLink:
        """A participant's personal, single-purpose, expiring link to withdraw their consent (for a message to
        them); refused where links are off for the case. Who made it, for whom, is recorded
        (``rj.participant-link.issued`` on ``rj.api``)."""
        if principal.role not in LINK_SETTERS:
            raise ApiError(403, "forbidden", f"a {principal.role} may not make participants' links")
        async with transaction(await pool()) as conn:
            await visible_case(conn, principal, case_id)
            if not await conn.fetchval(
                "SELECT true FROM api.participants WHERE case_id = $1 AND person_id = $2", case_id, body.person_id
            ):
                raise ApiError(404, "not_found", "no such participant on this case")
            if not await links.links_allowed(conn, case_id):
                raise ApiError(409, "links_off", "participant links are off for this case (a sensitive case)")
            now = datetime.now(UTC)
            try:
                url, link_id, expires_at = links.issue_link(
                    settings, case_id=case_id, person_id=body.person_id, now=now
                )
            except links.LinkKeyMissing:
                raise ApiError(409, "links_unconfigured", "no participant link key is configured") from None
            issued = links.link_issued(
                case_id=case_id, person_id=body.person_id, link_id=link_id, expires_at=expires_at, by=principal, now=now
            )
            await write_outbox(conn, commands.SCHEMA, issued)  # no link is handed out without its record
        return WithdrawLink(url=url, expires_at=expires_at)

    app.include_router(links.participant_router(pool, settings))
    # The web console, in this process and on this port, over the same staff actions (a late import: it uses
    # this module's ApiError and StaffActions).
    console = importlib.import_module("services.api.console")
    console.mount(app, staff, settings)

    from services.api import figures_http  # here: it builds on this module's errors and pool type

    # The figures' JSON and CSV take the API's bearer token; their page, the console's sign-in.
    app.include_router(figures_http.router(pool, caller=caller, page_caller=console.page_caller(staff, settings)))

    return app


class StaffActions:
    """What staff may read and do, whoever asks for it: the API's routes, and the web console in the same process
    (``services.api.console``), which calls these very functions so that policy, idempotency, sealing and the view
    log are the same however a member of staff works. Each raises ``ApiError`` with what the caller is told."""

    def __init__(
        self, *, pool: PoolSource, verifier: Verifier, read: ReadModel, rules: Policy, waiters: commands.AnswerWaiters
    ) -> None:
        self.pool = pool
        self.verifier = verifier
        self.read = read
        self.rules = rules
        self.waiters = waiters
        self.case_commands: dict[str, type[Command]] = commands.command_models(rules.STAFF_COMMANDS)
        self.body_models: dict[str, type[BaseModel]] = {
            command_type: commands.body_model(model) for command_type, model in self.case_commands.items()
        }

    async def principal(self, token: str) -> Principal:
        """Who an access token says is calling: 401 when it proves nothing, 503 when the provider is unreachable."""
        auth = importlib.import_module("services.api.auth")
        try:
            principal: Principal = await run_in_threadpool(self.verifier.verify, token)
        except auth.Unauthenticated as exc:
            raise ApiError(
                401, "unauthenticated", str(exc), {"WWW-Authenticate": 'Bearer error="invalid_token"'}
            ) from None
        except auth.IdentityProviderUnavailable as exc:
            log.warning("identity_provider_unavailable", error=str(exc))
            raise ApiError(
                503, "identity_provider_unavailable", "the identity provider cannot be reached; try again shortly"
            ) from None
        return principal

    def commands_for(self, principal: Principal) -> list[str]:
        """The command types ``principal``'s role may send, sorted."""
        return sorted(t for t in self.rules.STAFF_COMMANDS if self.rules.may_issue(principal, t))

    async def visible_case(self, conn: asyncpg.Connection, principal: Principal, case_id: str) -> CaseAccess:
        access = await self.read.case_access(conn, case_id)
        if access is None or not self.rules.may_see(principal, access):
            raise no_such_case()
        return access

    @staticmethod
    def scope(principal: Principal, facilitator: str | None) -> str | None:
        """Whose cases a list covers: any facilitator's (or all) for a whole-force role, else the caller's own."""
        return facilitator if principal.role in WHOLE_FORCE else principal.staff_id

    async def list_cases(
        self,
        principal: Principal,
        *,
        status: str | None = None,
        facilitator: str | None = None,
        crime_reference: str | None = None,
        sensitive: bool | None = None,
        overdue: bool | None = None,
        limit: int = 50,
        after: str | None = None,
    ) -> Any:
        # Only the filters asked for are passed on: a read model that knows fewer still answers the rest.
        optional = {
            name: value for name, value in (("sensitive", sensitive), ("overdue", overdue)) if value is not None
        }
        async with transaction(await self.pool()) as conn:
            try:
                return await self.read.list_cases(
                    conn, force=principal.force, facilitator_id=self.scope(principal, facilitator), status=status,
                    crime_reference=crime_reference, limit=limit, after=after, **optional,
                )  # fmt: skip
            except ValueError as exc:  # the read model refuses a cursor it did not make
                raise ApiError(400, "bad_cursor", str(exc) or "the cursor is not one this API gave") from None

    async def case_page(self, principal: Principal, case_id: str, *, reason: str | None, personal: bool) -> Any:
        """One case in full; personal values only when asked for and, for an auditor, with a stated ``reason``.
        A page that shows any writes ``rj.view.logged`` in the read's transaction, before it is returned."""
        with privacy.batch_scope():
            async with transaction(await self.pool()) as conn:
                access = await self.visible_case(conn, principal, case_id)
                needs_reason = self.rules.needs_reason_for_personal_data(principal)
                personal = personal and (reason is not None or not needs_reason)
                detail = await self.read.case_detail(
                    conn, case_id, personal=personal, view_log=self.rules.may_see_view_log(principal)
                )
                if detail is None:
                    raise no_such_case()
                shown = list(getattr(detail, "personal_fields", None) or [])
                if shown:
                    await write_outbox(
                        conn, commands.SCHEMA, [view_logged(principal, access, shown, reason, what="case page")]
                    )
        return detail

    async def deadlines(self, principal: Principal, state: Literal["due", "breached"]) -> list[Any]:
        async with transaction(await self.pool()) as conn:
            return await self.read.deadlines(
                conn, force=principal.force, facilitator_id=self.scope(principal, None), state=state
            )

    async def indirect_awaiting_approval(self, principal: Principal) -> list[Any]:
        async with transaction(await self.pool()) as conn:
            return await self.read.indirect_awaiting_approval(
                conn, force=principal.force, facilitator_id=self.scope(principal, None)
            )

    async def command_outcome(self, principal: Principal, command_id: str, wait: float) -> commands.CommandOutcome:
        """What became of a command the caller may see (404 otherwise), waiting up to ``wait`` s for an answer."""
        async with (await self.pool()).acquire() as conn:
            sent = await commands.sent_command(conn, command_id)
            if sent is None:
                raise ApiError(404, "not_found", "no such command")
            if sent.command_type in commands.REGISTRATIONS:  # about a facilitator or venue: its sender's to see
                if sent.staff_id != principal.staff_id:
                    raise ApiError(404, "not_found", "no such command")
            else:
                access = await self.read.case_access(conn, sent.case_id)
                if access is None or not self.rules.may_see(principal, access):
                    raise ApiError(404, "not_found", "no such command")
        answers = await self.waiters.wait(await self.pool(), command_id, self.read.command_answers, wait)
        return commands.outcome(sent, answers)

    async def send_case_command(
        self, principal: Principal, case_id: str, command_type: str, body: BaseModel, idempotency_key: str | None
    ) -> str:
        """Send ``command_type`` about ``case_id`` with ``body`` (its ``body_models`` type) as ``principal``; the
        command's id. 404 for a case they may not see, 403 for a command their role may not send, 422 for a
        command its own rules refuse, 409 for an Idempotency-Key used for another command."""
        model = self.case_commands.get(command_type)
        if model is None:
            raise ApiError(404, "not_found", f"no such command: {command_type}")
        refuse_control_characters(body.model_dump(mode="json"))
        try:
            command = commands.build_command(model, body, case_id=case_id, staff_id=principal.staff_id)
        except ValidationError as exc:  # the command's own rules, beyond the body's fields, refused it
            raise ApiError(422, "invalid", describe_errors(exc.errors(), prefix=("body",))) from None
        command_id = commands.command_id_for(principal.staff_id, idempotency_key)
        with privacy.batch_scope():
            async with transaction(await self.pool()) as conn:
                access = await self.visible_case(conn, principal, case_id)
                if not self.rules.may_issue(principal, command_type):
                    refusal = self.rules.refusal(principal, command_type)
                    raise ApiError(403, "forbidden", refusal or f"a {principal.role} may not send {command_type}")
                await refuse_another_forces_resources(conn, command, command_type, force=access.force)
                try:
                    await commands.send_command(
                        conn, command, command_id=command_id, staff_id=principal.staff_id, force=access.force
                    )
                except commands.IdempotencyKeyReused as exc:
                    raise ApiError(409, "conflict", str(exc)) from None
        return command_id


def add_command_route(
    app: FastAPI,
    command_type: str,
    model: type[Command],
    *,
    caller: Callable[..., Awaitable[Principal]],
    staff: "StaffActions",
) -> None:
    """``POST /cases/{case_id}/commands/{command_type}``, its body the command without the case and the actor."""
    body_type = staff.body_models[command_type]

    async def post_command(
        principal: Annotated[Principal, Depends(caller)],
        case_id: CaseId,
        body: body_type,  # type: ignore[valid-type]
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        command_id = await staff.send_case_command(principal, case_id, command_type, body, idempotency_key)
        return accepted(command_id, case_id, command_type)

    add_send_route(app, f"/cases/{{case_id}}/commands/{command_type}", post_command, command_type, model)


def add_registration_route(
    app: FastAPI,
    command_type: str,
    model: type[BaseModel],
    *,
    caller: Callable[..., Awaitable[Principal]],
    pool: PoolSource,
    rules: Policy,
) -> None:
    """``POST /registrations/{command_type}``: register or update a facilitator or a venue (not about a case)."""
    body_type = commands.body_model(model)  # type: ignore[arg-type]

    async def post_registration(
        principal: Annotated[Principal, Depends(caller)],
        body: body_type,  # type: ignore[valid-type]
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        fields: dict[str, Any] = body.model_dump()  # type: ignore[attr-defined]
        refuse_control_characters(body.model_dump(mode="json"))  # type: ignore[attr-defined]
        if not rules.may_issue(principal, command_type):
            why = rules.refusal(principal, command_type) or f"a {principal.role} may not send {command_type}"
            raise ApiError(403, "forbidden", why)
        try:
            command = model.model_validate({**fields, "actor": {"kind": "staff", "id": principal.staff_id}})
        except ValidationError as exc:
            raise ApiError(422, "invalid", describe_errors(exc.errors(), prefix=("body",))) from None
        command_id = commands.command_id_for(principal.staff_id, idempotency_key)
        subject = getattr(command, commands.REGISTRATIONS[command_type])
        resource = ownership.RESOURCE_OF_REGISTRATION[command_type]
        async with transaction(await pool()) as conn:
            if not await ownership.claim(conn, resource, subject, force=principal.force, staff_id=principal.staff_id):
                raise ApiError(404, "not_found", f"no such {resource}")  # another force's: say nothing of whose
            try:
                await commands.send_registration(
                    conn, command, command_id=command_id, staff_id=principal.staff_id, force=principal.force
                )
            except commands.IdempotencyKeyReused as exc:
                raise ApiError(409, "conflict", str(exc)) from None
        return accepted(command_id, subject, command_type)

    add_send_route(app, f"/registrations/{command_type}", post_registration, command_type, model)


def accepted(command_id: str, subject: str, command_type: str) -> JSONResponse:
    """The 202 a sent command is answered with: its id, and where its outcome will be."""
    answer = commands.CommandAccepted(
        command_id=command_id, case_id=subject, command_type=command_type, status_url=f"/commands/{command_id}"
    )
    return JSONResponse(answer.model_dump(mode="json"), status_code=202)


def add_send_route(
    app: FastAPI, path: str, endpoint: Callable[..., Awaitable[JSONResponse]], command_type: str, model: type
) -> None:
    """``POST path`` sending ``command_type``, documented by its model, named for the command."""
    endpoint.__name__ = "send_" + command_type.replace(".", "_").replace("-", "_")
    app.post(
        path,
        status_code=202,
        response_model=commands.CommandAccepted,
        responses=COMMAND_ERRORS,
        tags=["commands"],
        summary=f"Send {command_type}",
        description=(model.__doc__ or "").strip() or None,
    )(endpoint)


async def refuse_another_forces_resources(
    conn: asyncpg.Connection, command: Command, command_type: str, *, force: str
) -> None:
    """A command naming a facilitator or venue another force registered: 404 when the command is about that
    facilitator (assigning one), else 422 naming the field. Neither says whose it is."""
    foreign = await ownership.fields_naming_another_forces(conn, command, force=force)
    if not foreign:
        return
    if command_type in ownership.ABOUT_THE_RESOURCE:
        raise ApiError(404, "not_found", f"no such {ownership.RESOURCE_OF_FIELD[foreign[0]]}")
    raise ApiError(
        422, "invalid", "; ".join(f"body.{field}: no such {ownership.RESOURCE_OF_FIELD[field]}" for field in foreign)
    )


#: Who may turn participants' links on or off for a case, and make one for a participant.
LINK_SETTERS = frozenset({Role.facilitator, Role.coordinator})


class LinksSetting(BaseModel):
    """Whether participants of a case may withdraw through their personal link, and why it was changed."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool
    reason: str | None = Field(default=None, min_length=1, max_length=500, pattern=SAFE_TEXT)


class WithdrawLinkFor(BaseModel):
    """Whose withdraw link to make (a person id may hold any character, so it goes in the body, not the path)."""

    model_config = ConfigDict(extra="forbid")
    person_id: str = Field(min_length=1, max_length=200, pattern=SAFE_TEXT)


class WithdrawLink(BaseModel):
    """A participant's withdraw link: send it to them alone."""

    model_config = ConfigDict(extra="forbid")
    url: str
    expires_at: datetime


def view_logged(
    principal: Principal, access: CaseAccess, fields: list[str], reason: str | None, *, what: str
) -> Outgoing:
    """Rule 8: the record of ``principal`` being shown ``fields`` of a case, for ``rj.api``, keyed by the case."""
    fact = ViewLogged(
        case_id=access.case_id, viewer_id=principal.staff_id, role=str(principal.role),
        viewed_at=datetime.now(UTC), fields=fields, reason=reason, what=what,
    )  # fmt: skip
    event = new_event(fact, source=commands.SOURCE, subject=access.case_id, force=access.force)
    return Outgoing.event_of(topics.API, event)


class BodyLimit:
    """Refuses a request body over ``max_bytes`` with 413 before a route holds it in memory (FastAPI reads a body
    whole before it validates it, and a command far larger than any real one could not be published to Kafka):
    one that declares itself too large (Content-Length) at once, one streamed without a length (chunked) as soon
    as it passes the limit. Bodies a route never reads are never read here either."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(413, "too_large", self._why())(scope, receive, send)
            return
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # FastAPI passes HTTPExceptions on; the app's handler makes it JSON
                    raise StarletteHTTPException(413, self._why())
            return message

        await self.app(scope, receive_within_limit, send)

    def _why(self) -> str:
        return f"the request body is larger than this API accepts ({self.max_bytes} bytes)"


def error_response(status: int, error: str, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def refuse_control_characters(document: Any, where: str = "body") -> None:
    """422 for a body holding control characters other than tab and line breaks: no UI sends them, PostgreSQL
    (where every service keeps what a command says) refuses NUL outright, and escape sequences in an id would
    reach the services' logs and terminals."""
    if isinstance(document, str):
        if _CONTROL_CHARACTERS.search(document):
            raise ApiError(422, "invalid", f"{where}: control characters are not accepted (only tab and line breaks)")
    elif isinstance(document, dict):
        for key, value in document.items():
            refuse_control_characters(value, f"{where}.{key}")
    elif isinstance(document, list):
        for index, value in enumerate(document):
            refuse_control_characters(value, f"{where}.{index}")


def describe_errors(errors: Any, prefix: tuple[str, ...] = ()) -> str:
    """Pydantic's errors as one line naming each field and why (``body.reason: String should have ...``)."""
    parts = []
    for err in list(errors)[:5]:
        where = ".".join(str(p) for p in (*prefix, *err.get("loc", ()))) or "(request)"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


# --- the OpenAPI document, committed beside this module ------------------------------------------


class _NoLogins:
    def verify(self, token: str) -> Principal:
        raise RuntimeError("the OpenAPI export serves no requests")


async def _no_pool() -> asyncpg.Pool:
    raise RuntimeError("the OpenAPI export serves no requests")


def openapi_document(app: FastAPI | None = None) -> str:
    """The OpenAPI document of ``app`` (default: the API as deployed) as the committed file holds it."""
    if app is None:
        # A throwaway link key: the document does not depend on it, and without one the link routes log a warning.
        settings = Settings(participant_link_key=SecretStr(links.new_link_key()))
        app = create_app(pool=_no_pool, verifier=_NoLogins(), settings=settings)
    return json.dumps(app.openapi(), indent=2, ensure_ascii=False) + "\n"


def write_openapi(path: Path = OPENAPI_FILE, app: FastAPI | None = None) -> None:
    path.write_text(openapi_document(app))


def openapi_is_current(path: Path = OPENAPI_FILE, app: FastAPI | None = None) -> bool:
    """Whether the committed document is the one the code makes (UIs and schemathesis read the file)."""
    return path.exists() and path.read_text() == openapi_document(app)
