"""The API service's Faust app: the read model staff UIs read, kept from the case topics.

rj.referral, rj.consent, rj.scheduling, rj.notify, rj.privacy (every fact, and every answer to a command), rj.api (the
view log) ──► readmodel.take_in ──► schema api (cases, participants, consents, meetings, agreement items, deadlines,
                                          indirect items, notifications, contact log, notes, timeline, command answers)

Its outbox (the view log, participant-link settings, the commands staff send) goes to rj.api and rj.commands through
the runtime's relay, like every service's. The HTTP server runs in the same process; it is wired beside this.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import asyncpg
import uvicorn

from schemas import topics
from services.api import readmodel
from services.api.auth import verifier_from_settings
from services.api.http import create_app
from services.runtime.app import ServiceApp, stop_process_when_it_ends
from services.runtime.db import create_pool
from services.runtime.settings import Settings

TOPICS_IN = (topics.REFERRAL, topics.CONSENT, topics.SCHEDULING, topics.NOTIFY, topics.PRIVACY, topics.API)


class ApiService(ServiceApp):
    """The ``api`` service: a ``ServiceApp`` with schema ``api`` whose intake keeps the read model."""

    FOLLOWER = True

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__("api", migrations="services.api.migrations", settings=settings)
        # Checked now, so that a missing identity provider stops the start with a clear error.
        self.verifier = verifier_from_settings(self.settings)
        self._http_pool: asyncpg.Pool | None = None
        self._http_pool_lock = asyncio.Lock()
        self.http = create_app(pool=self.http_pool, verifier=self.verifier, settings=self.settings)
        self.faust.task(stop_process_when_it_ends(self._serve_http, what="api http server"))

    async def http_pool(self) -> asyncpg.Pool:
        """The HTTP side's own pool (``API_DB_POOL_SIZE``), apart from the one the read model is kept with: a burst
        of requests never holds up the projection, whose answers the requests may be waiting for."""
        async with self._http_pool_lock:
            if self._http_pool is None:
                await self.pool()  # the schema migrated first
                sized = self.settings.model_copy(update={"db_pool_size": self.settings.api_db_pool_size})
                self._http_pool = await create_pool(sized)
        return self._http_pool

    async def _serve_http(self) -> None:
        config = uvicorn.Config(
            self.http,
            host=self.settings.api_host,
            port=self.settings.api_port,
            log_config=None,
            access_log=False,
            lifespan="off",
            proxy_headers=True,
        )
        await _EmbeddedServer(config).serve()


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the Faust worker: the worker owns the signals and the shutdown, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def build(service: ServiceApp | None = None) -> ServiceApp:
    service = service or ApiService()
    service.consume(list(TOPICS_IN), consumes=readmodel.CONSUMES, handler=readmodel.take_in)
    return service
