"""The asyncpg pool, the migration runner, and telling transient database failures from permanent ones."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import asyncpg
import structlog

from services.runtime import metrics
from services.runtime.settings import Settings

log = structlog.get_logger()

T = TypeVar("T")


class ConnectionLost(Exception):
    """The database connection broke during the work; whatever the error said, trying again is right."""


# SQLSTATE classes that mean the data is at fault: 22 data exception (e.g. NUL in text, a number out of
# range), 23 integrity constraint violation, 54 program limit exceeded (e.g. a key too long to index).
_DATA_SQLSTATE_CLASSES = ("22", "23", "54")


def is_data_fault(exc: BaseException) -> bool:
    """True when the failure is the data's: retrying cannot help, so the event is dead-lettered.

    That is a PostgreSQL error of a class above, or a ``ValueError`` raised on the data: pydantic's
    ValidationError, our ParseError, text asyncpg cannot encode (its DataError), RecursionError from
    data nested too deep. Everything else (a lost connection, a read-only or full disk, out of memory, a
    lock timeout, a server restarting, a misconfigured client, and a bug in our code) is retried until it
    passes, logged and counted: an incident or a bad deploy must never dead-letter good events.
    """
    if isinstance(exc, ConnectionLost):
        return False
    if isinstance(exc, asyncpg.PostgresError):
        return (exc.sqlstate or "")[:2] in _DATA_SQLSTATE_CLASSES
    if isinstance(exc, asyncpg.InterfaceError) and not isinstance(exc, asyncpg.exceptions._base.DataError):
        return False  # e.g. ClientConfigurationError, which is also a ValueError
    return isinstance(exc, ValueError | RecursionError)


def is_transient(exc: BaseException) -> bool:
    """True for failures to retry (with backoff, for ever), never to dead-letter."""
    return not is_data_fault(exc)


_after_commit: ContextVar[list[Callable[[], object]] | None] = ContextVar("rj_after_commit", default=None)


def after_commit(action: Callable[[], object]) -> None:
    """Run ``action`` once the ``transaction`` the caller works in has committed, never if it rolls back: what
    counts a decision (a metric) counts it once, however often its batch was tried."""
    pending = _after_commit.get()
    if pending is None:
        raise RuntimeError("after_commit outside a transaction(): nothing would run the action")
    pending.append(action)


@asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection from ``pool`` inside a transaction; the ``after_commit`` actions of the work run once it has
    committed. A failure that leaves the connection closed is reported as ``ConnectionLost``: a dropped
    connection surfaces as many different asyncpg errors, and none of them means the work itself is wrong."""
    pending: list[Callable[[], object]] = []
    token = _after_commit.set(pending)
    try:
        async with pool.acquire() as conn:
            try:
                async with conn.transaction():
                    yield conn
            except Exception as exc:
                if conn.is_closed():
                    raise ConnectionLost(repr(exc)) from exc
                raise
    finally:
        _after_commit.reset(token)
    for action in pending:
        action()


async def retry_transient(operation: Callable[[], Awaitable[T]], *, what: str, max_backoff_s: float = 5.0) -> T:
    """Run ``operation`` until it succeeds, backing off on transient failures, for ever: each one is
    logged and counted (``rj_transient_failures_total``) for an operator to alert on. A data fault
    propagates."""
    delay = 0.05
    attempt = 0
    try:
        while True:
            try:
                return await operation()
            except Exception as exc:
                if is_data_fault(exc):
                    raise
                if attempt == 0:
                    metrics.RETRIES_IN_PROGRESS.labels(operation=what).inc()
                attempt += 1
                metrics.TRANSIENT_FAILURES.labels(operation=what).inc()
                log.warning("transient_failure_retrying", what=what, attempt=attempt, error=repr(exc), delay=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_backoff_s)
    finally:
        if attempt:
            metrics.RETRIES_IN_PROGRESS.labels(operation=what).dec()


_application_name = "rj"


def name_sessions(name: str) -> None:
    """What this process's database sessions call themselves from now on (PostgreSQL's ``application_name``, shown in
    ``pg_stat_activity``, its logs and ``pg_stat_statements``' neighbours): which service, or its relay, holds a lock
    or runs a slow query, at a glance. A ``DATABASE_URL`` that names one (``?application_name=``) keeps it."""
    global _application_name
    _application_name = name[:63]  # PostgreSQL keeps 63 bytes of it


def session_options(settings: Settings) -> dict[str, Any]:
    """What every database session of a service gets: a bounded connect, a statement timeout on the
    server and on the client, and TCP keepalives from the server, so that a hung or half-open
    connection fails within seconds instead of holding work (or relay leadership) for hours; and its
    prepared statements made again every ``db_statement_replan_s``, so that a plan made for a table when
    it was small does not outlive that."""
    idle = settings.db_keepalive_idle_s
    named = "application_name" in parse_qs(urlsplit(settings.database_url).query)  # the operator's name wins
    return {
        "timeout": 10.0,
        "command_timeout": settings.db_statement_timeout_s + 5,
        "max_cached_statement_lifetime": settings.db_statement_replan_s,
        "server_settings": {
            **({} if named else {"application_name": _application_name}),
            "statement_timeout": str(int(settings.db_statement_timeout_s * 1000)),
            "idle_in_transaction_session_timeout": str(int(settings.db_statement_timeout_s * 2000)),
            "tcp_keepalives_idle": str(idle),
            "tcp_keepalives_interval": str(max(1, idle // 2)),
            "tcp_keepalives_count": "3",
        },
    }


async def connect(settings: Settings) -> asyncpg.Connection:
    """One connection to the service database, with ``session_options``."""
    return await asyncpg.connect(settings.database_url, **session_options(settings))


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A connection going back to the pool keeps its session as it is: asyncpg has already rolled back any
    transaction left open and dropped its listeners' callbacks. Its default reset (``pg_advisory_unlock_all();
    CLOSE ALL; UNLISTEN *; RESET ALL``) is one more round trip to the server on every release, for session state
    our services never leave on a pooled connection: settings are ``SET LOCAL``, ``LISTEN`` is only ever on a
    connection of its own, and so is the one session-level advisory lock (``apply_migrations``)."""


async def create_pool(settings: Settings) -> asyncpg.Pool:
    async def connect() -> asyncpg.Pool:
        return await asyncpg.create_pool(
            settings.database_url,
            min_size=1,
            max_size=settings.db_pool_size,
            reset=_keep_session,
            **session_options(settings),
        )

    return await retry_transient(connect, what="create_pool")


_MIGRATION = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
_RUNTIME_SQL = "services.runtime.migrations"


def _migration_files(package: str) -> list[tuple[str, str]]:
    files = [f for f in resources.files(package).iterdir() if _MIGRATION.match(f.name)]
    return sorted((f.name, f.read_text()) for f in files)


async def migrate(conn: asyncpg.Connection, schema: str, package: str | None) -> list[str]:
    """Apply the runtime's tables (inbox, outbox) and then the service's own migrations to ``schema``."""
    files = [(f"runtime/{name}", sql) for name, sql in _migration_files(_RUNTIME_SQL)]
    files += [(f"service/{name}", sql) for name, sql in (_migration_files(package) if package else [])]
    return await apply_migrations(conn, schema, files)


async def apply_migrations(conn: asyncpg.Connection, schema: str, files: Sequence[tuple[str, str]]) -> list[str]:
    """Apply each ``(name, sql)`` not yet applied to ``schema``, in order (``{schema}`` in the SQL names it).

    Safe to run from several replicas at once: an advisory lock serialises them, and each file is
    applied once, in its own transaction, recorded with its checksum; a file changed after it was
    applied stops the start.
    """
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", schema):
        raise ValueError(f"bad schema name {schema!r}")
    lock_key = int.from_bytes(hashlib.sha256(schema.encode()).digest()[:8], "big", signed=True)
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", lock_key)
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
                    name text PRIMARY KEY, checksum text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["name"]: r["checksum"] for r in await conn.fetch(f"SELECT * FROM {schema}.schema_migrations")}
        for name, sql in files:
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            if name in done:
                if done[name] != checksum:
                    raise RuntimeError(f"migration {name} in schema {schema} changed after it was applied")
                continue
            async with conn.transaction():
                # An index built over a large table may take longer than a session's statement timeout.
                await conn.execute("SET LOCAL statement_timeout = 0")
                await conn.execute(f"SET LOCAL search_path TO {schema}")
                await conn.execute(sql.replace("{schema}", schema))
                await conn.execute(
                    f"INSERT INTO {schema}.schema_migrations (name, checksum) VALUES ($1, $2)", name, checksum
                )
            applied.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", lock_key)
    if applied:
        log.info("migrations_applied", schema=schema, applied=applied)
    return applied
