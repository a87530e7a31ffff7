"""The service's figures over HTTP, for a force's coordinators and auditors (403 for other roles; another force's cases
are never counted, since every figure is of the caller's force alone):

- ``GET /figures?period=month|quarter&from=&to=``: JSON (``services.api.figures.Figures``);
- ``GET /figures.csv?...``: the same as the Police and Crime Commissioner's quarterly return;
- ``GET /console/figures?...``: the console's page, charts with a table beside each (``services.api.figures_page``),
  and ``GET /console/figures.csv`` for its download link. The page takes its caller from ``page_caller``: the API's
  bearer token by default; the console's sign-in, once it is there, so that a browser session opens it.

Only counts leave the computation, and no count is of fewer than five people where it could say who someone is
(``services.api.figures``): nothing shown is one person's data, so no view is logged.

No ``from __future__ import annotations`` here: FastAPI reads the routes' annotations, which name the caller
dependency given at run time.
"""

import secrets
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, Response

from services.api import figures, figures_page
from services.api.figures import Figures, PeriodKind
from services.api.http import ERRORS, ApiError, PoolSource
from services.api.principal import Principal, Role
from services.runtime import privacy

FIGURES_ROLES = frozenset({Role.coordinator, Role.auditor})
"""Who sees the figures: those who see every case of their force."""

CallerDependency = Callable[..., Awaitable[Principal]]

PeriodParam = Annotated[PeriodKind, Query(description="Months or calendar quarters (UK time)")]
FromParam = Annotated[
    date | None,
    Query(alias="from", description="A day in the first period (default: three periods before the last)"),
]
ToParam = Annotated[date | None, Query(description="A day in the last period (default: today)")]

CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    200: {
        "description": "One row per measure per period, then the whole range's breakdowns and the national figures",
        "content": {"text/csv": {"schema": {"type": "string"}}},
    },
}


def router(pool: PoolSource, *, caller: CallerDependency, page_caller: CallerDependency | None = None) -> APIRouter:
    """The figures' routes; ``caller`` checks the API's bearer token, ``page_caller`` the page's caller (the console's
    sign-in; by default ``caller``)."""
    routes = APIRouter()
    PageCaller = Annotated[Principal, Depends(page_caller or caller)]
    Caller = Annotated[Principal, Depends(caller)]

    async def figures_for(
        principal: Principal, period: PeriodKind, from_day: date | None, to_day: date | None
    ) -> Figures:
        if principal.role not in FIGURES_ROLES:
            raise ApiError(403, "forbidden", "the figures are for coordinators and auditors")
        with privacy.batch_scope():
            async with (await pool()).acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
                try:
                    return await figures.compute(
                        conn, force=principal.force, kind=period, from_day=from_day, to_day=to_day
                    )
                except figures.FiguresRangeError as exc:
                    raise ApiError(422, "invalid", str(exc)) from None

    @routes.get("/figures", response_model=Figures, responses=ERRORS, tags=["figures"])
    async def figures_json(
        principal: Caller, period: PeriodParam = PeriodKind.quarter, from_: FromParam = None, to: ToParam = None
    ) -> Figures:
        """The caller's force's figures per month or quarter (DOMAIN stage 7): referrals, conversion to direct and
        indirect RJ, agreement completion, victim satisfaction, Victims' Code compliance, reoffending of completed
        cases beside those that did not proceed (self-selected, not a controlled comparison), breakdowns by offence
        type and by monitoring category (counts under 5 people withheld), and the national figures with sources.
        Coordinators and auditors only."""
        return await figures_for(principal, period, from_, to)

    @routes.get(
        "/figures.csv", response_class=Response, responses=CSV_RESPONSE, tags=["figures"], summary="Figures as CSV"
    )
    async def figures_csv(
        principal: Caller, period: PeriodParam = PeriodKind.quarter, from_: FromParam = None, to: ToParam = None
    ) -> Response:
        """The figures of ``GET /figures`` as the Police and Crime Commissioner's quarterly return (CSV)."""
        return csv_response(await figures_for(principal, period, from_, to))

    @routes.get("/console/figures", response_class=HTMLResponse, include_in_schema=False)
    async def figures_page_route(
        principal: PageCaller, period: PeriodParam = PeriodKind.quarter, from_: FromParam = None, to: ToParam = None
    ) -> HTMLResponse:
        shown = await figures_for(principal, period, from_, to)
        query = urlencode({"period": shown.period.value, "from": shown.first_day, "to": shown.last_day})
        nonce = secrets.token_urlsafe(16)
        html = figures_page.render(
            shown, nonce=nonce, csv_url=f"/console/figures.csv?{query}", form_action="/console/figures"
        )
        return HTMLResponse(html, headers=page_headers(nonce))

    @routes.get("/console/figures.csv", response_class=Response, include_in_schema=False)
    async def figures_page_csv(
        principal: PageCaller, period: PeriodParam = PeriodKind.quarter, from_: FromParam = None, to: ToParam = None
    ) -> Response:
        return csv_response(await figures_for(principal, period, from_, to))

    return routes


def csv_response(shown: Figures) -> Response:
    name = f"rj-figures-{shown.period.value}-{shown.first_day}-to-{shown.last_day}.csv"
    return Response(
        figures.to_csv(shown),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )


def page_headers(nonce: str) -> dict[str, str]:
    """No script at all, styles only from the page itself, never framed, never cached."""
    return {
        "Cache-Control": "no-store",
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'nonce-{nonce}'; form-action 'self'; frame-ancestors 'none'; "
            "base-uri 'none'"
        ),
        "Referrer-Policy": "same-origin",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
    }
