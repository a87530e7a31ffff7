"""The operations endpoint of a service process: health for the orchestrator, metrics for Prometheus.

- ``GET /health/live``: 200 while every essential part of the process (its intake, its relay) runs and
  reports; 503 otherwise, so the process is restarted.
- ``GET /health/ready``: 200 when the service can do its work: it holds partitions and its database
  answers; 503 with what is missing otherwise (the process is not restarted for that).
- ``GET /metrics``: every ``rj_*`` metric in Prometheus' text format.

Each answer is JSON naming every check and its state, so that an operator reads why at a glance.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

log = structlog.get_logger()

#: A check answers ``None`` when all is well, or why not. It must answer within ``CHECK_TIMEOUT_S``.
Check = Callable[[], Awaitable[str | None]]
CHECK_TIMEOUT_S = 2.0


@dataclass
class Health:
    live: dict[str, Check] = field(default_factory=dict)
    ready: dict[str, Check] = field(default_factory=dict)

    async def verdict(self, checks: dict[str, Check]) -> tuple[bool, dict[str, str]]:
        async def run(check: Check) -> str | None:
            try:
                return await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
            except TimeoutError:
                return f"no answer within {CHECK_TIMEOUT_S} s"
            except Exception as exc:
                return repr(exc)

        names = list(checks)
        problems = await asyncio.gather(*(run(checks[n]) for n in names))
        report = {n: p or "ok" for n, p in zip(names, problems, strict=True)}
        return all(p is None for p in problems), report


def make_app(health: Health) -> web.Application:
    async def answer(checks: dict[str, Check]) -> web.Response:
        ok, report = await health.verdict(checks)
        body = json.dumps({"status": "ok" if ok else "failing", "checks": report})
        return web.Response(status=200 if ok else 503, text=body, content_type="application/json")

    async def live(_: web.Request) -> web.Response:
        return await answer(health.live)

    async def ready(_: web.Request) -> web.Response:
        return await answer(health.ready)

    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(REGISTRY))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(health: Health, port: int, address: str) -> web.AppRunner | None:
    """Serve the endpoint on ``address:port`` until the runner is cleaned up (port 0: not at all)."""
    if not port:
        return None
    runner = web.AppRunner(make_app(health), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, address, port).start()
    log.info("ops_serving", port=port, address=address)
    return runner
