"""The web console under ``/console``: server-rendered pages for facilitators, coordinators and auditors, served by
the API process on the API's port.

Who is signed in: the console is a public client of the force's identity provider (OpenID Connect authorization
code flow with PKCE S256, ``state`` and ``nonce``). The access token it gets is kept in a cookie sealed with
AES-256-GCM (``console_session_key``; HttpOnly, SameSite=Lax, Secure over https) and checked with the API's own
verifier on every request, so an expired or revoked-by-rotation token ends the session as it would end API access.
Every form carries the session's form token (a synchronizer token inside the sealed cookie): a POST without it
changes nothing.

What it reads and sends: only through ``StaffActions``, the functions the API's routes call, so who may see and do
what, the view log (rule 8: every page showing personal data is logged before it is sent, an auditor states why),
idempotency and sealing are the API's own. A command's outcome is shown as ``GET /commands/{id}`` would show it.

Pages work without JavaScript; htmx (vendored, ``static/``) only follows a pending command's outcome in place.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import aiohttp
import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData

from services.api import console_forms
from services.api.console_text import CODES, LANGUAGES, STATEMENT, STATEMENT_TITLE, WELSH_REVIEWED, text
from services.api.links import page_language
from services.api.principal import Principal, Role
from services.runtime.settings import Settings

if TYPE_CHECKING:
    from services.api.http import StaffActions

log = structlog.get_logger()

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
SESSION_COOKIE = "rj_console"
LOGIN_COOKIE = "rj_console_login"
LANGUAGE_COOKIE = "rj_console_lang"
LOGIN_TTL_S = 600
"""How long a sign-in may take between leaving for the identity provider and coming back."""
OUTCOME_WAIT_S = 5.0
"""How long an outcome page waits for the owning service's answer before it shows "pending"."""
_SAFE_ID = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")
_SAFE_TEXT = re.compile(r"^[^\x00-\x1f\x7f]{1,500}$")

_TEMPLATES = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(moment: datetime | None) -> str:
    """A time as staff read it: local (Europe/London), to the minute."""
    if moment is None:
        return "–"
    return moment.astimezone(console_forms.LOCAL_TIME).strftime("%d %b %Y %H:%M")


_TEMPLATES.filters["when"] = _when


# --- the sealed cookies -------------------------------------------------------------------------------------------


class SessionBox:
    """Seals small JSON documents for cookies with AES-256-GCM; ``purpose`` is bound in as associated data, so a
    sign-in cookie can never be passed off as a session. The first key seals; every key opens (rotation)."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys or any(len(key) != 32 for key in keys):
            raise ValueError("CONSOLE_SESSION_KEY must be base64 of 32 bytes (AES-256), comma-separated if several")
        self._keys = keys

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionBox:
        """The keys ``console_session_key`` names, or one made now (sessions then end with the process)."""
        entries = [e.strip() for e in settings.console_session_key.get_secret_value().split(",") if e.strip()]
        if not entries:
            log.info("console_session_key_generated", why="CONSOLE_SESSION_KEY is not set")
            return cls([os.urandom(32)])
        try:
            return cls([base64.b64decode(entry, validate=True) for entry in entries])
        except (binascii.Error, ValueError):
            raise ValueError("CONSOLE_SESSION_KEY is not base64") from None

    def seal(self, purpose: str, document: dict[str, Any], ttl_s: float) -> str:
        nonce = os.urandom(12)
        plain = json.dumps({**document, "exp": time.time() + ttl_s}, separators=(",", ":")).encode()
        box = AESGCM(self._keys[0]).encrypt(nonce, plain, purpose.encode())
        return base64.urlsafe_b64encode(nonce + box).rstrip(b"=").decode()

    def open(self, purpose: str, sealed: str | None) -> dict[str, Any] | None:
        """The document, if ``sealed`` is one of ours for ``purpose`` and has not expired; None otherwise."""
        if not sealed or len(sealed) > 8192:
            return None
        try:
            raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
        except (binascii.Error, ValueError):
            return None
        for key in self._keys:
            try:
                document = json.loads(AESGCM(key).decrypt(raw[:12], raw[12:], purpose.encode()))
            except (InvalidTag, ValueError):
                continue
            if isinstance(document, dict) and isinstance(document.get("exp"), int | float):
                return document if document["exp"] > time.time() else None
            return None
        return None


def new_session_key() -> str:
    """A fresh value for ``CONSOLE_SESSION_KEY``."""
    return base64.b64encode(os.urandom(32)).decode()


# --- signing in: OpenID Connect, authorization code with PKCE ----------------------------------------------------


class SignInUnavailable(Exception):
    """The identity provider could not be reached, or answered with something that is not OpenID Connect."""


class SignInFailed(Exception):
    """The sign-in came back wrong: a state that is not ours, a code refused, a token that does not verify."""


class IdentityProvider:
    """The force's identity provider as the console uses it: its discovery document (cached), and the code exchange
    (a form POST to its token endpoint; the console is a public client, so PKCE is what binds the code to us)."""

    def __init__(self, settings: Settings) -> None:
        self.issuer = settings.oidc_issuer.rstrip("/")
        self.client_id = settings.console_client_id
        self._endpoints: dict[str, str] | None = None

    async def endpoints(self) -> dict[str, str]:
        if self._endpoints is None:
            document = await self._call("GET", f"{self.issuer}/.well-known/openid-configuration")
            ends = {name: document.get(name) for name in ("authorization_endpoint", "token_endpoint")}
            if not all(isinstance(url, str) and url.startswith(("http://", "https://")) for url in ends.values()):
                raise SignInUnavailable("the identity provider's discovery document names no code flow endpoints")
            self._endpoints = {name: str(url) for name, url in ends.items()}
        return self._endpoints

    async def exchange(self, code: str, verifier: str, redirect_uri: str) -> dict[str, Any]:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": self.client_id,
            "code_verifier": verifier,
        }
        return await self._call("POST", (await self.endpoints())["token_endpoint"], form=form)

    async def _call(self, method: str, url: str, form: dict[str, str] | None = None) -> dict[str, Any]:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
                async with session.request(method, url, data=form) as answer:
                    document = await answer.json(content_type=None)
                    status = answer.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise SignInUnavailable(f"{url}: {exc!r}") from exc
        if not isinstance(document, dict):
            raise SignInUnavailable(f"{url} answered with something other than a JSON object")
        if status == 400 and form is not None:
            raise SignInFailed(f"the identity provider refused the code: {document.get('error')}")
        if status != 200:
            raise SignInUnavailable(f"{url} answered {status}")
        return document


def pkce_pair() -> tuple[str, str]:
    """A PKCE code verifier and its S256 challenge (RFC 7636)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def safe_next(value: str | None) -> str:
    """Where to go after signing in or switching language: a console path of ours, never another site."""
    if not value or not value.startswith("/console") or value.startswith("//") or "\\" in value:
        return "/console/"
    if any(ord(ch) < 32 for ch in value) or len(value) > 2000:
        return "/console/"
    return value


# --- the pages ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signed:
    """A signed-in member of staff: who the token says they are, and their session's form token."""

    principal: Principal
    csrf: str


class Redirect(Exception):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


class FormRefused(Exception):
    """A POST without the session's form token (or with another's): nothing is done."""


def language(request: Request) -> str:
    chosen = request.cookies.get(LANGUAGE_COOKIE)
    return chosen if chosen in LANGUAGES else page_language(request)


def render(
    request: Request, template: str, *, status: int = 200, signed: Signed | None = None, **context: Any
) -> HTMLResponse:
    """A console page: the words in the caller's language, the layout's navigation, and headers that keep it out
    of caches (it may show personal data) and other sites' frames, scripts and styles."""
    lang = language(request)
    t = text(lang)
    html = _TEMPLATES.get_template(f"console/{template}").render(
        request=request,
        lang=lang,
        t=t,
        signed=signed,
        path=request.url.path,
        here=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        welsh_reviewed=WELSH_REVIEWED,
        codes=CODES,
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=page_headers(lang))


def page_headers(lang: str) -> dict[str, str]:
    return {
        "Cache-Control": "no-store",
        "Content-Language": lang,
        "Referrer-Policy": "same-origin",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
            "form-action 'self'; base-uri 'none'; frame-ancestors 'none'; object-src 'none'"
        ),
    }


def _error_page(request: Request, status: int, heading: str, detail: str, signed: Signed | None) -> HTMLResponse:
    return render(request, "error.html", status=status, signed=signed, heading=heading, detail=detail)


class ConsoleRoute(APIRoute):
    """Every console route answers in HTML whatever happens: a redirect to sign in, an API refusal shown as a page
    (its status kept), a form without its token refused, and our own faults as a page that says only that."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            from services.api.http import ApiError

            t = text(language(request))
            try:
                return await handle(request)
            except Redirect as redirect:
                return RedirectResponse(redirect.url, status_code=303)
            except FormRefused:
                return _error_page(request, 403, t("csrf.title"), t("csrf.body"), None)
            except ApiError as exc:
                heading = {404: t("error.not_found"), 403: t("error.forbidden")}.get(exc.status, t("error.title"))
                detail = t("error.not_found_body") if exc.status == 404 else exc.detail
                return _error_page(request, exc.status, heading, detail, None)
            except RequestValidationError:
                return _error_page(request, 404, t("error.not_found"), t("error.not_found_body"), None)
            except Exception as exc:  # a fault of ours: logged, and a page that says no more
                log.error("console_request_failed", path=request.url.path, error=repr(exc))
                return _error_page(request, 500, t("error.title"), t("error.internal"), None)

        return console_handler


async def session_of(request: Request, staff: StaffActions, box: SessionBox) -> Signed:
    """The signed-in caller, their token checked by the API's verifier now; else ``Redirect`` to sign in."""
    from services.api.http import ApiError

    session = box.open("session", request.cookies.get(SESSION_COOKIE))
    back = urlencode({"next": safe_next(request.url.path + (f"?{request.url.query}" if request.url.query else ""))})
    if session is None:
        raise Redirect(f"/console/sign-in?{back}")
    try:
        principal = await staff.principal(str(session.get("token", "")))
    except ApiError as exc:
        if exc.status == 401:
            raise Redirect(f"/console/sign-in?expired=1&{back}") from None
        raise
    return Signed(principal=principal, csrf=str(session.get("csrf", "")))


def page_caller(staff: StaffActions, settings: Settings) -> Callable[[Request], Coroutine[Any, Any, Principal]]:
    """A route dependency for console pages served by other routers (the figures page): the session's member of
    staff (or an API client's bearer token), else a 303 to the sign-in page (an HTTP exception, since only the
    console's own routes turn ``Redirect`` into one)."""
    box = SessionBox.from_settings(settings)

    async def caller(request: Request) -> Principal:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token:  # an API client fetching the page: its own token, as anywhere
            return await staff.principal(token.strip())
        try:
            return (await session_of(request, staff, box)).principal
        except Redirect as redirect:
            raise HTTPException(303, "sign in first", headers={"Location": redirect.url}) from None

    return caller


def mount(app: FastAPI, staff: StaffActions, settings: Settings) -> None:
    """Serve the console (``/console``) and its static files from ``app``."""
    app.include_router(console_router(staff, settings))
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")


def console_router(staff: StaffActions, settings: Settings) -> APIRouter:  # noqa: C901 - one closure per page
    from services.api.http import ApiError

    router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
    box = SessionBox.from_settings(settings)
    provider = IdentityProvider(settings)
    base = settings.public_base_url.rstrip("/")
    redirect_uri = f"{base}/console/callback"
    secure = base.startswith("https://")

    def cookie(response: Response, name: str, value: str, *, max_age: int | None = None) -> None:
        response.set_cookie(name, value, max_age=max_age, path="/console", httponly=True, secure=secure, samesite="lax")

    async def signed_in(request: Request) -> Signed:
        return await session_of(request, staff, box)

    async def posted(request: Request, signed: Signed) -> FormData:
        form = await request.form()
        token = form.get("csrf")
        if not isinstance(token, str) or not signed.csrf or not hmac.compare_digest(token, signed.csrf):
            raise FormRefused()
        return form

    # --- signing in and out ---

    @router.get("/sign-in")
    async def sign_in_page(request: Request) -> Response:
        notice = next(
            (key for key, flag in (("sign_in.signed_out", "signed_out"), ("sign_in.expired", "expired"),
                                   ("sign_in.failed", "failed")) if request.query_params.get(flag)),
            None,
        )  # fmt: skip
        start = "/console/sign-in/start?" + urlencode({"next": safe_next(request.query_params.get("next"))})
        return render(request, "sign_in.html", notice=notice, start=start)

    @router.get("/sign-in/start")
    async def sign_in_start(request: Request) -> Response:
        try:
            authorize = (await provider.endpoints())["authorization_endpoint"]
        except SignInUnavailable as exc:
            log.warning("console_sign_in_unavailable", error=str(exc))
            t = text(language(request))
            return _error_page(request, 503, t("error.title"), t("sign_in.unavailable"), None)
        verifier, challenge = pkce_pair()
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        back = safe_next(request.query_params.get("next"))
        login = {"state": state, "nonce": nonce, "verifier": verifier, "next": back}
        query = urlencode(
            {
                "response_type": "code",
                "client_id": provider.client_id,
                "redirect_uri": redirect_uri,
                "scope": "openid",
                "state": state,
                "nonce": nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "ui_locales": language(request),
            }
        )
        response = RedirectResponse(f"{authorize}?{query}", status_code=303)
        cookie(response, LOGIN_COOKIE, box.seal("login", login, LOGIN_TTL_S), max_age=LOGIN_TTL_S)
        return response

    @router.get("/callback")
    async def callback(request: Request) -> Response:
        login = box.open("login", request.cookies.get(LOGIN_COOKIE))
        state = request.query_params.get("state", "")
        code = request.query_params.get("code", "")
        try:
            if login is None or not state or not hmac.compare_digest(state, str(login["state"])):
                raise SignInFailed("the sign-in came back without the state it left with")
            if not code:
                raise SignInFailed(f"the identity provider said {request.query_params.get('error', 'no code')}")
            tokens = await provider.exchange(code, str(login["verifier"]), redirect_uri)
            access, id_token = tokens.get("access_token"), tokens.get("id_token")
            if not isinstance(access, str) or not isinstance(id_token, str):
                raise SignInFailed("the identity provider's answer has no access token or ID token")
            verify_id_token = getattr(staff.verifier, "verify_id_token", None)
            if verify_id_token is None:
                raise SignInFailed("this API's verifier cannot check ID tokens")
            from fastapi.concurrency import run_in_threadpool

            from services.api.auth import Unauthenticated

            try:
                await run_in_threadpool(
                    verify_id_token, id_token, client_id=provider.client_id, nonce=str(login["nonce"])
                )
            except Unauthenticated as exc:
                raise SignInFailed(str(exc)) from None
            principal = await staff.principal(access)  # the API's own check, as on every request after this
        except SignInUnavailable as exc:
            log.warning("console_sign_in_unavailable", error=str(exc))
            t = text(language(request))
            return _error_page(request, 503, t("error.title"), t("sign_in.unavailable"), None)
        except (SignInFailed, ApiError) as exc:
            log.warning("console_sign_in_failed", error=str(exc))
            response = RedirectResponse("/console/sign-in?failed=1", status_code=303)
            response.delete_cookie(LOGIN_COOKIE, path="/console")
            return response
        log.info("console_signed_in", staff_id=principal.staff_id, role=str(principal.role))
        session = {"token": access, "csrf": secrets.token_urlsafe(32)}
        ttl = float(tokens.get("expires_in") or 3600)
        response = RedirectResponse(safe_next(str(login.get("next"))), status_code=303)
        cookie(response, SESSION_COOKIE, box.seal("session", session, ttl))
        response.delete_cookie(LOGIN_COOKIE, path="/console")
        return response

    @router.post("/sign-out")
    async def sign_out(request: Request) -> Response:
        signed = await signed_in(request)
        await posted(request, signed)
        response = RedirectResponse("/console/sign-in?signed_out=1", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/console")
        return response

    @router.get("/language")
    async def switch_language(request: Request) -> Response:
        chosen = request.query_params.get("to", "en")
        response = RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
        response.set_cookie(
            LANGUAGE_COOKIE, chosen if chosen in LANGUAGES else "en", max_age=365 * 24 * 3600, path="/console",
            secure=secure, samesite="lax", httponly=True,
        )  # fmt: skip
        return response

    @router.get("/accessibility")
    async def accessibility(request: Request) -> Response:
        session = box.open("session", request.cookies.get(SESSION_COOKIE))
        return render(
            request, "accessibility.html", signed_out=session is None, statement=STATEMENT,
            statement_title=STATEMENT_TITLE,
        )  # fmt: skip

    # --- lists ---

    @router.get("/")
    async def case_list(request: Request) -> Response:
        signed = await signed_in(request)
        query = request.query_params
        status = query.get("status") or None
        if status is not None and status not in CODES["status"]:
            status = None
        facilitator = (query.get("facilitator") or "").strip() or None
        if facilitator is not None and not _SAFE_ID.match(facilitator):
            facilitator = None
        sensitive = {"yes": True, "no": False}.get(query.get("sensitive", ""))
        overdue = True if query.get("overdue") == "yes" else None
        after = query.get("after") or None
        if after is not None and not _SAFE_TEXT.match(after):
            after = None
        page = await staff.list_cases(
            signed.principal, status=status, facilitator=facilitator, sensitive=sensitive, overdue=overdue,
            after=after, limit=25,
        )  # fmt: skip
        filters = {
            "status": status or "",
            "facilitator": facilitator or "",
            "sensitive": query.get("sensitive", ""),
            "overdue": overdue is True,
        }
        next_query = {k: v for k, v in {**filters, "overdue": "yes" if overdue else ""}.items() if v}
        next_url = f"/console/?{urlencode({**next_query, 'after': page.next_cursor})}" if page.next_cursor else None
        return render(
            request, "cases.html", signed=signed, page=page, filters=filters, next_url=next_url,
            whole_force=signed.principal.role in (Role.coordinator, Role.auditor),
        )  # fmt: skip

    @router.get("/deadlines")
    async def deadlines(request: Request) -> Response:
        signed = await signed_in(request)
        breached = await staff.deadlines(signed.principal, "breached")
        due = await staff.deadlines(signed.principal, "due")
        return render(request, "deadlines.html", signed=signed, breached=breached, due=due)

    @router.get("/indirect")
    async def indirect_queue(request: Request) -> Response:
        signed = await signed_in(request)
        items = await staff.indirect_awaiting_approval(signed.principal)
        allowed = set(staff.commands_for(signed.principal))
        return render(
            request, "indirect.html", signed=signed, items=items, allowed=allowed, key=lambda: str(uuid.uuid4())
        )

    # --- one case ---

    def case_id_of(value: str) -> str:
        if not _SAFE_ID.match(value):
            raise ApiError(404, "not_found", "no such case")
        return value

    @router.get("/cases/{case_id}/commands/{command_id}")
    async def outcome(request: Request, case_id: str, command_id: str) -> Response:
        signed = await signed_in(request)
        case_id = case_id_of(case_id)
        if not _SAFE_ID.match(command_id):
            raise ApiError(404, "not_found", "no such command")
        partial = request.headers.get("HX-Request") == "true"
        result = await staff.command_outcome(signed.principal, command_id, 10.0 if partial else OUTCOME_WAIT_S)
        context: dict[str, Any] = {"case_id": case_id, "result": result, "self_url": request.url.path}
        if partial:
            return render(request, "_outcome_status.html", signed=signed, **context)
        return render(request, "outcome.html", signed=signed, **context)

    @router.get("/cases/{case_id}/actions/{command_type}")
    async def action_page(request: Request, case_id: str, command_type: str) -> Response:
        signed = await signed_in(request)
        case_id = case_id_of(case_id)
        if command_type not in console_forms.ACTIONS or command_type not in staff.body_models:
            raise ApiError(404, "not_found", "no such action")
        names = {f.name for f in console_forms.ACTIONS[command_type]}
        preset = {k: v for k, v in request.query_params.items() if k in names}
        return await action_form(request, signed, case_id, command_type, entered=preset)

    async def action_form(
        request: Request,
        signed: Signed,
        case_id: str,
        command_type: str,
        *,
        entered: Mapping[str, Any] | None = None,
        problems: Mapping[str, str] | None = None,
        key: str | None = None,
        status: int = 200,
    ) -> Response:
        detail = await staff.case_page(signed.principal, case_id, reason=None, personal=False)  # nothing to log
        fields = console_forms.ACTIONS[command_type]
        defaults = {
            "now": console_forms.local_input(),
            "me": signed.principal.staff_id,
            "new": f"M-{secrets.token_hex(3).upper()}",
        }
        values = {f.name: defaults.get(f.default, f.default) for f in fields}
        values.update(entered or {})
        t = text(language(request))
        words = {code: t(f"problem.{code}") for code in ("required", "time", "amount")}
        return render(
            request, "action.html", status=status, signed=signed, case=detail, command_type=command_type,
            fields=fields, item_fields=console_forms.ITEM_FIELDS, rows=range(console_forms.AGREEMENT_ROWS),
            values=values, problems={k: words.get(v, v) for k, v in (problems or {}).items()},
            key=key or str(uuid.uuid4()),
            allowed=command_type in staff.commands_for(signed.principal),
        )  # fmt: skip

    @router.post("/cases/{case_id}/actions/{command_type}")
    async def act(request: Request, case_id: str, command_type: str) -> Response:
        signed = await signed_in(request)
        form = await posted(request, signed)
        case_id = case_id_of(case_id)
        if command_type not in console_forms.ACTIONS or command_type not in staff.body_models:
            raise ApiError(404, "not_found", "no such action")
        key = form.get("idempotency_key")
        key = key if isinstance(key, str) and _SAFE_ID.match(key) else None
        parsed = console_forms.read_form(command_type, form, form.getlist)
        body = console_forms.check(staff.body_models[command_type], parsed)
        if body is None:
            return await action_form(
                request, signed, case_id, command_type, entered=parsed.entered, problems=parsed.problems, key=key,
                status=400,
            )  # fmt: skip
        try:
            command_id = await staff.send_case_command(signed.principal, case_id, command_type, body, key)
        except ApiError as exc:
            if exc.status not in (409, 422):
                raise
            return await action_form(
                request, signed, case_id, command_type, entered=parsed.entered, problems={"reason": exc.detail},
                key=None if exc.status == 409 else key, status=exc.status,
            )  # fmt: skip
        raise Redirect(f"/console/cases/{case_id}/commands/{command_id}")

    @router.get("/cases/{case_id}")
    async def case_page(request: Request, case_id: str) -> Response:
        signed = await signed_in(request)
        case_id = case_id_of(case_id)
        reason = (request.query_params.get("reason") or "").strip() or None
        if reason is not None and not _SAFE_TEXT.match(reason):
            reason = None
        detail = await staff.case_page(signed.principal, case_id, reason=reason, personal=True)
        allowed = [c for c in console_forms.ACTIONS if c in set(staff.commands_for(signed.principal))]
        roles = {p.person_id: p.role for p in detail.participants}
        return render(
            request, "case.html", signed=signed, case=detail, allowed=allowed, roles=roles, reason=reason,
            asks_reason=signed.principal.role is Role.auditor, key=lambda: str(uuid.uuid4()),
        )  # fmt: skip

    return router
