"""A running system for one test: a fresh database, fresh topics, and real service processes.

Everything goes through the real broker (one Tansu per test session) and the real PostgreSQL; each
``System`` has its own topic prefix and database, so tests never see each other's events.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import SecretStr

from demo.reader import TopicReader
from schemas import topics
from schemas.registry import REGISTRY
from services.api.issuer import LocalIssuer
from services.api.links import new_link_key
from services.api.principal import Role
from services.runtime.devstack import create_database, drop_database, free_port
from services.runtime.kafka import ensure_topics, publish
from services.runtime.keystore import MasterKeys
from services.runtime.privacy import Privacy
from services.runtime.settings import Settings
from services.runtime.supervisor import ServiceProcess, Supervisor
from tests.support import zygote

ROOT = Path(__file__).resolve().parent.parent  # the checkout, where ``python -m services.cli`` resolves


async def run_rj(settings: Settings, *args: str) -> tuple[int, str, str]:
    """``rj ARGS`` as an operator runs it, in a process of its own with ``settings`` and no others (none
    inherited from this process's environment): (exit status, stdout, stderr)."""
    inherited = {k: v for k, v in os.environ.items() if k.lower() not in type(settings).model_fields}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", *args,
        cwd=ROOT, env={**inherited, **settings.as_env()},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class System:
    def __init__(
        self, bootstrap: str, server_url: str, log_dir: Path, *, issuer: LocalIssuer | None = None, **overrides: Any
    ) -> None:
        self.run_id = uuid.uuid4().hex[:10]
        self.issuer = issuer
        api_port = free_port()
        login = {"oidc_issuer": issuer.url, "oidc_jwks_url": issuer.jwks_url} if issuer else {}
        self.server_url = server_url
        self.database = f"rj_test_{self.run_id}"
        self.settings = Settings(
            **{
                "kafka_bootstrap_servers": bootstrap,
                "database_url": "",
                "topic_prefix": f"t{self.run_id}.",
                # Tansu answers a group's first join after about half the session timeout, rounded up to
                # a second: 6 s costs 3 s a join, 2 s costs 1 s. Every service joins twice when it starts
                # (Faust's own group, then the intake's), and every replica, restart and takeover again.
                "kafka_session_timeout_s": 2.0,
                "kafka_heartbeat_interval_s": 0.5,
                # An idle consumer asks the broker again every FETCH_MAX_WAIT_MS. At the 50 ms default (chosen for
                # latency under load) the embedded broker spends about a third of a core on one idle system's
                # fetches, 6% at 500 ms: two workers' systems at once starved the services of CPU. No test times
                # a hop, so the tests take the cheaper polling; ``bench/`` measures latency at the default.
                "fetch_max_wait_ms": 500,
                "deadline_sweep_interval_s": 0.5,
                "relay_poll_interval_s": 0.2,
                "retry_max_backoff_s": 1.0,
                "master_keys": SecretStr(MasterKeys.generate("test1")),
                "api_port": api_port,
                "public_base_url": f"http://127.0.0.1:{api_port}",
                "participant_link_key": SecretStr(new_link_key()),
                **login,
                **overrides,
            }
        )
        self.log_dir = log_dir
        self.supervisor: Supervisor | None = None
        self._readers: list[TopicReader] = []

    async def __aenter__(self) -> System:
        url = await create_database(self.server_url, self.database)
        self.settings = self.settings.model_copy(update={"database_url": url})
        await ensure_topics(self.settings)
        self.supervisor = Supervisor(env=self.settings.as_env(), log_dir=self.log_dir, launch=zygote.launcher())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.supervisor is not None
        for reader in self._readers:
            await reader.stop()
        # A Faust worker takes about two seconds to stop cleanly. Nothing of the test depends on it, and
        # the next test has its own topics, groups and database, so the stopping and the dropping go on
        # beside the next test; ``stopped_systems`` waits for them all before the broker stops.
        processes = list(self.supervisor.processes.values())
        for service in processes:
            if service.running:
                service.process.send_signal(signal.SIGTERM)
        task = asyncio.create_task(self._reap(processes), name=f"stop system {self.run_id}")
        _stopping.append(task)

    async def _reap(self, processes: list[ServiceProcess], timeout_s: float = 15) -> None:
        """What ``Supervisor.stop_all`` does after its SIGTERMs, without holding up the event loop."""
        deadline = time.monotonic() + timeout_s
        while any(service.running for service in processes) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for service in processes:
            service.kill()  # only one that did not stop in time
        await drop_database(self.server_url, self.database)

    # --- services ---------------------------------------------------------------------------------

    def start(self, name: str, replica: str = "", **settings: Any) -> ServiceProcess:
        """Start a service process (another ``replica`` of it beside the first, if named); ``settings``
        override this system's settings for it alone."""
        assert self.supervisor is not None
        return self.supervisor.start(name, {k.upper(): str(v) for k, v in settings.items()}, replica=replica)

    def service(self, name: str) -> ServiceProcess:
        assert self.supervisor is not None
        return self.supervisor.processes[name]

    def logs(self, name: str) -> str:
        path = self.service(name).log_path
        return path.read_text(errors="replace") if path and path.exists() else ""

    # --- the API ------------------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.api_port}"

    def token(self, staff_id: str, role: Role | str, force: str | None = None) -> str:
        """An access token from the session's identity provider (``force``: the samples' force)."""
        from demo.samples import UPSTREAM_SOURCE

        assert self.issuer is not None, "this System has no identity provider"
        return self.issuer.mint(staff_id, Role(role), force or UPSTREAM_SOURCE)

    # --- Kafka --------------------------------------------------------------------------------------

    async def publish(self, messages: Iterable[tuple[str, str | None, bytes]]) -> int:
        return await publish(self.settings, messages)

    async def reader(self, *names: str) -> TopicReader:
        reader = TopicReader(self.settings, names)
        await reader.start()
        self._readers.append(reader)
        return reader

    async def read_until(
        self,
        topic: str,
        done: Callable[[list[dict[str, Any]]], bool],
        timeout_s: float = 45,
        settle_s: float = 0.0,
    ) -> list[dict[str, Any]]:
        """Every message on ``topic`` (decoded JSON) once ``done`` holds, plus what comes in ``settle_s``."""
        reader = await self.reader(topic)
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while not done(messages):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out on {topic}; have {len(messages)}: {messages[-5:]}")
            messages += [json.loads(v) for _, _, v in await reader.read(0.3)]
        end = time.monotonic() + settle_s
        while time.monotonic() < end:
            messages += [json.loads(v) for _, _, v in await reader.read(0.3)]
        return messages

    async def referral_events(self, done: Callable[[list[dict[str, Any]]], bool], **kw: Any) -> list[dict[str, Any]]:
        return await self.read_until(topics.REFERRAL, done, **kw)

    # --- the rj command ----------------------------------------------------------------------------

    async def cli(self, *args: str) -> tuple[int, str, str]:
        """``rj ARGS`` as an operator runs it, in a process of its own with this system's settings:
        (exit status, stdout, stderr)."""
        return await run_rj(self.settings, *args)

    # --- PostgreSQL -------------------------------------------------------------------------------

    async def unseal(self, blob: bytes, context: bytes) -> bytes | None:
        """Bytes a service sealed whole (a parked event, a dead letter, its copy), opened as an operator's
        tools open them, with this system's master keys."""
        conn = await asyncpg.connect(self.settings.database_url)
        try:
            return await Privacy.from_settings(self.settings).new_batch().open_bytes(conn, blob, context)
        finally:
            await conn.close()

    async def opened(self, event: dict[str, Any]) -> dict[str, Any]:
        """An event read off a topic with its sealed values opened, as a service holding the keys sees it."""
        model = REGISTRY.model(event["type"])
        conn = await asyncpg.connect(self.settings.database_url)
        try:
            [data] = await Privacy.from_settings(self.settings).new_batch().open_documents(conn, model, [event["data"]])
        finally:
            await conn.close()
        return {**event, "data": data.data}

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.settings.database_url)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    async def fetchval(self, sql: str, *args: Any) -> Any:
        conn = await asyncpg.connect(self.settings.database_url)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    async def wait_for(self, check: Callable[[], Awaitable[bool]], timeout_s: float = 45, what: str = "") -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if await check():
                    return
            except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
                pass  # the service has not migrated yet
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or check.__name__}")
            await asyncio.sleep(0.1)


_stopping: list[asyncio.Task[None]] = []  # kept until awaited, so what went wrong in one is raised


async def stopped_systems() -> None:
    """Wait until every ``System`` that has been left has stopped its services and dropped its database;
    raises what went wrong in any of them."""
    while _stopping:
        tasks = list(_stopping)
        _stopping.clear()
        await asyncio.gather(*tasks)


def of_type(messages: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    return [m for m in messages if m.get("type") == event_type]


def types_count(event_type: str, n: int) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda ms: len(of_type(ms, event_type)) >= n
