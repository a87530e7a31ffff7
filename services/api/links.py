"""Participants' withdraw links: a personal, single-purpose, expiring link that lets someone stop taking part
without logging in (DOMAIN stage 3: withdraw at any time, by themselves, with no reason needed).

A link's token is opaque: AES-256-GCM over who it is for (case, person), what it does (withdraw), its own id
and when it expires, under ``settings.participant_link_key``. Whoever holds the key (the notify service, when it
writes a message) can make one; altering a single byte, or another key, makes it refused. ``GET /p/{token}``
only shows a confirmation (mail scanners and previews open links: they must change nothing); ``POST`` sends
``rj.consent.withdraw`` to ``rj.commands`` and marks the link used, in one transaction. The pages say nothing
about the case or anyone on it, come in English and Welsh, and have a "Leave this page quickly" button.

On a sensitive case the links are off until staff turn them on (``set_links_enabled``), since whoever harmed
the participant may control their phone.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from schemas import topics
from schemas.common import Actor
from schemas.consent import PARTICIPATION, RecordedThrough, RecordingMethod, WithdrawConsent
from schemas.envelope import derived_event_id, new_event
from schemas.links import ParticipantLinkIssued, ParticipantLinksChanged
from services.api.participant_text import TEXT
from services.api.principal import Principal
from services.runtime.db import ConnectionLost, transaction
from services.runtime.outbox import Outgoing, write_outbox
from services.runtime.participant_links import (
    MAX_TOKEN_CHARS as MAX_TOKEN_CHARS,
)
from services.runtime.participant_links import (
    PURPOSE_WITHDRAW as PURPOSE_WITHDRAW,
)
from services.runtime.participant_links import (
    LinkClaims as LinkClaims,
)
from services.runtime.participant_links import (
    LinkKeyMissing as LinkKeyMissing,
)
from services.runtime.participant_links import (
    LinkRefused as LinkRefused,
)
from services.runtime.participant_links import (
    Refusal as Refusal,
)
from services.runtime.participant_links import (
    issue_link as issue_link,
)
from services.runtime.participant_links import (
    link_keys as link_keys,
)
from services.runtime.participant_links import (
    mint_link as mint_link,
)
from services.runtime.participant_links import (
    new_link_key as new_link_key,
)
from services.runtime.participant_links import (
    open_link as open_link,
)
from services.runtime.settings import Settings

log = structlog.get_logger()

SCHEMA = "api"
SOURCE = "urn:rj:service:api"


def link_issued(
    *, case_id: str, person_id: str, link_id: str, expires_at: datetime, by: Principal, now: datetime
) -> list[Outgoing]:
    """The fact that ``by`` made a withdraw link for ``person_id``, for the caller to write to the api outbox in
    the transaction that hands the link out: a link acts in a participant's name, so who made it is on record."""
    fact = ParticipantLinkIssued(
        case_id=case_id,
        person_id=person_id,
        link_id=link_id,
        issued_by=Actor(kind="staff", id=by.staff_id),
        issued_at=now,
        expires_at=expires_at,
    )
    return [Outgoing.event_of(topics.API, new_event(fact, source=SOURCE, subject=case_id, time=now, force=by.force))]


# --- which cases allow links ----------------------------------------------------------------------


async def links_allowed(conn: asyncpg.Connection, case_id: str) -> bool:
    """Staff's setting for the case if there is one; otherwise allowed only on a case screened as not sensitive. A
    case the read model has not seen yet, or whose screening (rj.case.accepted) it has not seen yet (``sensitive``
    NULL), is treated as sensitive: better "contact your facilitator" than a link working where it should not."""
    row = await conn.fetchrow(
        f"""SELECT s.enabled, c.sensitive
              FROM (SELECT $1::text AS case_id) k
              LEFT JOIN {SCHEMA}.participant_link_settings s ON s.case_id = k.case_id
              LEFT JOIN {SCHEMA}.cases c ON c.case_id = k.case_id""",
        case_id,
    )
    if row["enabled"] is not None:
        return bool(row["enabled"])
    return row["sensitive"] is False


async def set_links_enabled(
    conn: asyncpg.Connection, *, case_id: str, enabled: bool, by: Principal, reason: str | None
) -> list[Outgoing]:
    """Turn the links on or off for ``case_id``, as ``by`` decided; the fact saying so, for the caller to write to
    the api outbox in the same transaction. Who may do it is the caller's policy to decide."""
    now = datetime.now(UTC)
    fact = ParticipantLinksChanged(
        case_id=case_id,
        enabled=enabled,
        changed_by=Actor(kind="staff", id=by.staff_id),
        changed_at=now,
        reason=reason,
    )
    await conn.execute(
        f"""INSERT INTO {SCHEMA}.participant_link_settings (case_id, enabled, changed_by, changed_at, reason)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (case_id) DO UPDATE SET enabled = excluded.enabled, changed_by = excluded.changed_by,
                changed_at = excluded.changed_at, reason = excluded.reason""",
        case_id,
        enabled,
        by.staff_id,
        now,
        reason,
    )
    return [Outgoing.event_of(topics.API, new_event(fact, source=SOURCE, subject=case_id, time=now, force=by.force))]


# --- using a link ---------------------------------------------------------------------------------


async def _case_force(conn: asyncpg.Connection, case_id: str) -> str | None:
    return await conn.fetchval(f"SELECT force FROM {SCHEMA}.cases WHERE case_id = $1", case_id)  # type: ignore[no-any-return]


async def _was_used(conn: asyncpg.Connection, link_id: str) -> bool:
    return bool(await conn.fetchval(f"SELECT 1 FROM {SCHEMA}.participant_links_used WHERE link_id = $1", link_id))


async def withdraw_through_link(conn: asyncpg.Connection, claims: LinkClaims, *, now: datetime) -> None:
    """Mark the link used and send the participant's withdrawal, in the caller's transaction; ``LinkRefused``
    (``used``) if it was used before, (``not_allowed``) if links are off on the case. No reason is asked or
    sent: a participant never has to say why."""
    if not await links_allowed(conn, claims.case_id):
        raise LinkRefused(Refusal.not_allowed)
    taken = await conn.fetchval(
        f"""INSERT INTO {SCHEMA}.participant_links_used (link_id, case_id, used_at) VALUES ($1, $2, $3)
            ON CONFLICT (link_id) DO NOTHING RETURNING 1""",
        claims.link_id,
        claims.case_id,
        now,
    )
    if taken is None:
        raise LinkRefused(Refusal.used)
    command = WithdrawConsent(
        case_id=claims.case_id,
        actor=Actor(kind="participant", id=claims.person_id),
        person_id=claims.person_id,
        purpose=PARTICIPATION,
        through=RecordedThrough.participant,
        method=RecordingMethod.online,
    )
    event = new_event(
        command,
        source=SOURCE,
        subject=claims.case_id,
        # One link sends one command, whatever happens to the request: its id is the link's.
        event_id=derived_event_id(SOURCE, claims.case_id, "participant-link", claims.link_id),
        time=now,
        force=await _case_force(conn, claims.case_id),
    )
    await write_outbox(conn, SCHEMA, [Outgoing.event_of(topics.COMMANDS, event)])


# --- the pages ------------------------------------------------------------------------------------

_TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)

_STATUS = {Refusal.expired: 410, Refusal.used: 410, Refusal.altered: 404, Refusal.not_allowed: 403}

_INFRASTRUCTURE_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionLost, OSError, TimeoutError)


def page_language(request: Request) -> str:
    """``cy`` or ``en``: the ``lang`` query parameter if it names one, else the first of them the browser's
    Accept-Language prefers, else English."""
    chosen = request.query_params.get("lang", "").strip().lower()
    if chosen in ("cy", "en"):
        return chosen
    best, best_q = "en", 0.0
    for part in request.headers.get("accept-language", "")[:500].split(","):
        tag, _, params = part.strip().partition(";")
        primary = tag.strip().lower().split("-")[0]
        if primary not in ("cy", "en"):
            continue
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        if q > best_q:
            best, best_q = primary, q
    return best


def _render(request: Request, page: str, status: int, *, exit_url: str) -> HTMLResponse:
    lang = page_language(request)
    nonce = secrets.token_urlsafe(16)
    text = TEXT[lang]
    html = _TEMPLATES.get_template("participant/page.html").render(
        lang=lang,
        t=text,
        page=text.pages[page],
        show_form=page == "confirm",
        exit_url=exit_url,
        nonce=nonce,
    )
    return HTMLResponse(
        html,
        status_code=status,
        headers={
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Robots-Tag": "noindex, nofollow",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Content-Language": lang,
            "Vary": "Accept-Language",
            "Content-Security-Policy": (
                f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
                "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
            ),
        },
    )


_PAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": why, "content": {"text/html": {"schema": {"type": "string"}}}}
    for status, why in (
        (403, "Links are off on this case"),
        (404, "Not a link of ours (altered, truncated, or made with another key)"),
        (410, "The link expired, or was used"),
        (503, "The database could not be reached; nothing was done"),
    )
}


def participant_router(pool: Callable[[], Awaitable[asyncpg.Pool]], settings: Settings) -> APIRouter:
    """``GET``/``HEAD /p/{token}``: the confirmation page, changing nothing; ``POST /p/{token}``: the withdrawal.
    With no usable link key (``PARTICIPANT_LINK_KEY``) every link answers as one that does not work, and the
    start says so in the log."""
    router = APIRouter(tags=["participant"])
    exit_url = settings.participant_link_exit_url
    try:
        link_keys(settings)
        configured = True
    except LinkKeyMissing as exc:
        log.error("participant_links_unconfigured", reason=str(exc))
        configured = False

    def refused(request: Request, refusal: Refusal) -> HTMLResponse:
        return _render(request, refusal.value, _STATUS[refusal], exit_url=exit_url)

    def unavailable(request: Request, exc: BaseException) -> HTMLResponse:
        log.warning("participant_link_database_unavailable", error=repr(exc))
        return _render(request, "unavailable", 503, exit_url=exit_url)

    @router.get(
        "/p/{token}",
        response_class=HTMLResponse,
        responses=_PAGE_RESPONSES,
        summary="A participant's withdraw link: the confirmation page (changes nothing)",
    )
    async def confirm_withdrawal(token: str, request: Request) -> HTMLResponse:
        if not configured:
            return refused(request, Refusal.altered)
        try:
            claims = open_link(settings, token)
            async with (await pool()).acquire() as conn:
                if not await links_allowed(conn, claims.case_id):
                    raise LinkRefused(Refusal.not_allowed)
                if await _was_used(conn, claims.link_id):
                    raise LinkRefused(Refusal.used)
        except LinkRefused as refusal:
            return refused(request, refusal.reason_code)
        except _INFRASTRUCTURE_FAILURES as exc:
            return unavailable(request, exc)
        return _render(request, "confirm", 200, exit_url=exit_url)

    # HEAD (link checkers) answers as GET does; one operation in the OpenAPI document, not two with one id.
    router.add_api_route(
        "/p/{token}", confirm_withdrawal, methods=["HEAD"], response_class=HTMLResponse, include_in_schema=False
    )

    @router.post(
        "/p/{token}",
        response_class=HTMLResponse,
        responses=_PAGE_RESPONSES,
        summary="A participant's withdraw link: withdraw consent to take part (once)",
    )
    async def withdraw(token: str, request: Request) -> HTMLResponse:
        if not configured:
            return refused(request, Refusal.altered)
        try:
            claims = open_link(settings, token)
            async with transaction(await pool()) as conn:
                await withdraw_through_link(conn, claims, now=datetime.now(UTC))
        except LinkRefused as refusal:
            return refused(request, refusal.reason_code)
        except _INFRASTRUCTURE_FAILURES as exc:
            return unavailable(request, exc)
        log.info("participant_withdrew_through_link", case_id=claims.case_id, link_id=claims.link_id)
        return _render(request, "done", 200, exit_url=exit_url)

    return router
