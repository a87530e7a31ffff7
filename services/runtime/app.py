"""The Faust app factory: one ``ServiceApp`` per service wires its topics to its batch handler.

A service declares what it consumes and how it decides; the runtime supplies the rest: the pool,
migrations on start, the batch loop (``BatchConsumer`` + ``BatchProcessor``, aiokafka directly, offsets
committed after PostgreSQL), parked events released after an upgrade, periodic jobs that write through
the outbox, the outbox relay, and the metrics endpoint.
"""

from __future__ import annotations

import asyncio
import gc
import os
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
import faust
import structlog

from schemas.registry import REGISTRY, Registry
from services.runtime import keystore, metrics, ops, privacy
from services.runtime.consumer import BatchConsumer, BatchSteps
from services.runtime.db import connect, create_pool, migrate, name_sessions, retry_transient, transaction
from services.runtime.housekeeping import prune, shred_expired_days
from services.runtime.kafka import ensure_topics, topic_problems
from services.runtime.outbox import Outgoing, write_outbox
from services.runtime.processor import BatchHandler, BatchProcessor
from services.runtime.rawbatch import RawBatchSteps, RawHandler
from services.runtime.relay import RelayProcess
from services.runtime.settings import Settings, get_settings, use_event_loop

log = structlog.get_logger()

#: How often the gauges that need asking (lag, outbox backlog) are refreshed.
FIGURES_INTERVAL_S = 5.0
#: The fetch loop goes round at least every second; this long without shows a hung intake.
INTAKE_STALL_S = 30.0

PeriodicJob = Callable[[asyncpg.Connection], Awaitable[Sequence[Outgoing]]]


GC_THRESHOLDS = (500_000, 20, 100)
"""The cyclic collector's thresholds in a worker (after start-up is frozen with ``gc.freeze``). Batches allocate many
short-lived objects (records, parsed events, facts, sealed documents): with the default (700) the collector ran every
few hundred allocations and re-scanned every long-lived object each time, about three times the cost of validation
itself. The young generation counts containers allocated and not yet freed, so a high threshold means it runs only when
cyclic garbage (or a batch's live objects) has built up: at 50,000 it still took 9% of referral's CPU over 40,000
events (11% with encryption; measured with ``gc.callbacks``), at 500,000 under 2%, for 12 MB more at the peak."""


class Worker(faust.Worker):
    """faust's worker without its terminal spinner. The spinner's log handler set the root logger to DEBUG, so every
    debug line of aiokafka and faust was built as a record (and only then dropped): at 50 cases/s about a twelfth
    of referral's CPU, measured with py-spy, most of it aiokafka's fetcher logging each fetch it plans."""

    def on_setup_root_logger(self, logger: Any, level: int) -> None:
        self.spinner = None


def stop_process_when_it_ends(run: Callable[[], Awaitable[None]], *, what: str) -> Callable[[], Awaitable[None]]:
    """``run`` as a worker task that must never end: if it does, for any reason but shutdown, the whole
    process exits, so that it is restarted. A live process that no longer consumes (or no longer
    publishes) would look healthy and do nothing."""

    async def guarded() -> None:
        try:
            await run()
            reason = "returned"
        except asyncio.CancelledError:
            raise  # the worker is shutting down
        except BaseException as exc:
            reason = repr(exc)
        log.critical("essential_task_stopped_exiting", task=what, reason=reason)
        os._exit(70)  # EX_SOFTWARE; no clean shutdown could be trusted to finish

    guarded.__name__ = getattr(run, "__name__", "essential_task")
    return guarded


def make_faust_app(app_id: str, settings: Settings) -> faust.App:
    # Faust wants a data directory even with in-memory tables; keep it out of the working tree.
    datadir = Path(tempfile.gettempdir()) / "rj-faust" / f"{app_id}-{os.getpid()}"
    datadir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        app_id,
        broker=[f"kafka://{s.strip()}" for s in settings.kafka_bootstrap_servers.split(",")],
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        autodiscover=False,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_rebalance_timeout=settings.kafka_rebalance_timeout_s,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_s,
        producer_acks=-1,
    )


class ServiceApp:
    FOLLOWER: ClassVar[bool] = False
    """A service no latency target reads through (audit, the API's read model): its consumer lets the
    broker hold a fetch for ``FOLLOWER_FETCH_MAX_WAIT_MS`` rather than ``FETCH_MAX_WAIT_MS``, so that it costs the
    broker and itself far less while records trickle in (see ``Settings.follower_fetch_max_wait_ms``)."""

    def __init__(
        self,
        name: str,
        *,
        migrations: str,
        settings: Settings | None = None,
        registry: Registry = REGISTRY,
    ) -> None:
        self.name = name
        self.schema = name
        self.migrations = migrations
        self.settings = settings or get_settings()
        self.registry = registry
        # Personal data is sealed wherever this service writes it: no master keys, no start (unless
        # encryption is switched off on purpose, to measure it).
        self.privacy = privacy.Privacy.from_settings(self.settings)
        privacy.install(self.privacy)
        self.faust = make_faust_app(f"{self.settings.topic_prefix}rj-{name}", self.settings)
        self.relay = RelayProcess(name, self.settings)
        self._pool: asyncpg.Pool | None = None
        self._ready_lock = asyncio.Lock()
        self.processor: BatchProcessor | None = None
        self.consumer: BatchConsumer | None = None
        self._topic_problems: list[str] = []
        self._health_conn: asyncpg.Connection | None = None
        self.health = ops.Health(live={"relay": self._relay_alive}, ready={"database": self._database_answers})
        self.faust.task(stop_process_when_it_ends(self._start_relay, what=f"{name} outbox relay"))
        self.faust.task(self._serve_ops)
        self.faust.timer(FIGURES_INTERVAL_S, name=f"{name}.report_outbox")(self._report_outbox)
        self.faust.timer(self.settings.housekeeping_interval_s, name=f"{name}.housekeeping")(self._housekeep)

    async def pool(self) -> asyncpg.Pool:
        """The database pool, created (and the schema migrated) on first use."""
        async with self._ready_lock:
            if self._pool is None:
                pool = await create_pool(self.settings)

                async def run_migrations() -> None:
                    # On a connection of its own, closed after: the migrations' session-level advisory lock never
                    # rides on a pooled connection (which keeps its session when it goes back to the pool).
                    conn = await connect(self.settings)
                    try:
                        await migrate(conn, self.schema, self.migrations)
                        if self.privacy.enabled:
                            await keystore.ensure_schema(conn)
                    finally:
                        await conn.close()

                await retry_transient(run_migrations, what="migrate")
                self._pool = pool
        return self._pool

    def consume(self, topic_names: Sequence[str], *, consumes: frozenset[str], handler: BatchHandler) -> None:
        """Feed every event of the ``consumes`` types on ``topic_names`` to ``handler``, in batches.

        The records bypass faust's stream (see ``services.runtime.consumer``): a task of the worker
        consumes with aiokafka and commits offsets only after PostgreSQL has committed the batch.
        """
        settings = self.settings

        async def steps() -> BatchProcessor:
            processor = self.processor = BatchProcessor(
                service=self.name,
                schema=self.schema,
                pool=await self.pool(),
                registry=self.registry,
                consumes=consumes,
                handler=handler,
                max_backoff_s=settings.retry_max_backoff_s,
                privacy=self.privacy,
            )
            # What waited for this version goes first, then the stream (which parks behind what still waits).
            while await processor.release_parked():
                pass
            return processor

        self._start_intake(topic_names, steps)

        async def release_parked() -> None:
            # Another replica may have been upgraded, or this one's first pass left some: keep looking
            # (and keep the parked gauge, which alerts, up to date).
            if self.processor is not None:
                await self.processor.release_parked()

        self.faust.timer(settings.parked_check_interval_s, name=f"{self.name}.release_parked")(release_parked)

    def consume_raw(self, topic_names: Sequence[str], handler: RawHandler) -> None:
        """Hand every record of ``topic_names`` to ``handler`` untouched (no parsing, inbox or dead letters),
        in batches, offsets committed after PostgreSQL: see ``services.runtime.rawbatch``."""

        async def steps() -> RawBatchSteps:
            return RawBatchSteps(
                service=self.name,
                schema=self.schema,
                pool=await self.pool(),
                handler=handler,
                privacy=self.privacy,
                max_backoff_s=self.settings.retry_max_backoff_s,
            )

        self._start_intake(topic_names, steps)

    def _start_intake(self, topic_names: Sequence[str], steps: Callable[[], Awaitable[BatchSteps[Any]]]) -> None:
        """The intake task (a ``BatchConsumer`` over ``topic_names`` driving the batch ``steps`` it is given once
        the database is ready), the health checks on it, and its lag gauge."""
        settings = self.settings

        async def intake() -> None:
            batch_steps = await steps()
            await ensure_topics(settings)
            await self._check_topics()
            consumer = self.consumer = BatchConsumer(
                settings=settings,
                group_id=f"{settings.topic_prefix}rj-{self.name}-intake",
                topics=[settings.topic(t) for t in topic_names],
                steps=batch_steps,
                name=f"{self.name}-intake",
                fetch_max_wait_ms=settings.follower_fetch_max_wait_ms if self.FOLLOWER else settings.fetch_max_wait_ms,
            )
            await consumer.run()

        intake.__name__ = f"{self.name}_intake"
        self.health.live["intake"] = self._intake_alive
        self.health.ready["partitions"] = self._holds_partitions
        self.health.ready["topics"] = self._topics_as_contracted
        self.faust.task(stop_process_when_it_ends(intake, what=f"{self.name} intake"))

        async def report_lag() -> None:
            if self.consumer is not None:
                self.consumer.report_lag()

        self.faust.timer(FIGURES_INTERVAL_S, name=f"{self.name}.report_lag")(report_lag)

    def every(self, seconds: float, job: PeriodicJob, *, name: str) -> None:
        """Run ``job`` periodically in a transaction; what it returns goes to the outbox with its changes."""

        async def tick() -> None:
            pool = await self.pool()

            async def attempt() -> None:
                with privacy.batch_scope(self.privacy):
                    async with transaction(pool) as conn:
                        await write_outbox(conn, self.schema, await job(conn))

            try:
                await retry_transient(attempt, what=name, max_backoff_s=self.settings.retry_max_backoff_s)
            except Exception as exc:  # a bug in a job must not stop the worker; it is retried next tick
                log.error("periodic_job_failed", job=name, error=repr(exc))

        tick.__name__ = name
        self.faust.timer(seconds, name=f"{self.name}.{name}")(tick)

    # --- operations: /health and /metrics ---------------------------------------------------------

    async def _serve_ops(self) -> None:
        loop = type(asyncio.get_running_loop())
        metrics.EVENT_LOOP.labels("uvloop" if loop.__module__.startswith("uvloop") else "asyncio").set(1)
        await ops.serve(self.health, self.settings.ops_port, self.settings.ops_address)

    async def _housekeep(self) -> None:
        """Prune what the retention window no longer needs (every replica may; deleting is idempotent)."""
        if self._pool is None:
            return
        try:
            await prune(self._pool, self.schema, self.settings.retention_window_s)
            retention_ms = self.settings.deadletter_retention_ms
            if self.privacy.store is not None and retention_ms > 0:
                async with self._pool.acquire() as conn:
                    await shred_expired_days(conn, self.privacy.store, retention_ms / 1000)
        except Exception as exc:  # a bug here must not stop the worker; the next run tries again
            log.error("housekeeping_failed", error=repr(exc))

    async def _report_outbox(self) -> None:
        """Set the outbox gauges: rows waiting for the relay, the age of the oldest, rows parked."""
        if self._pool is None:
            return
        try:
            waiting = await self._pool.fetchrow(
                f"""SELECT count(*) AS n, extract(epoch FROM clock_timestamp() - min(created_at)) AS age
                    FROM {self.schema}.outbox WHERE published_at IS NULL AND parked_at IS NULL""",
                timeout=2.0,
            )
            parked = await self._pool.fetchval(
                f"SELECT count(*) FROM {self.schema}.outbox WHERE published_at IS NULL AND parked_at IS NOT NULL",
                timeout=2.0,
            )
        except Exception as exc:  # the database is away: the figures wait, health says why
            log.warning("outbox_figures_unavailable", error=repr(exc))
            return
        metrics.OUTBOX_BACKLOG.set(waiting["n"])
        metrics.OUTBOX_OLDEST_AGE.set(float(waiting["age"] or 0.0))
        metrics.OUTBOX_PARKED.set(parked)

    async def _check_topics(self) -> None:
        """Tell an operator (readiness, an error log) when a topic keeps records for less time than the
        contract says: rj.* is the audit trail, and a broker default of 7 days would lose it."""
        try:
            problems = await topic_problems(self.settings)
        except Exception as exc:
            problems = [f"topic configuration unreadable: {exc!r}"]
        for problem in problems:
            log.error("topic_misconfigured", problem=problem)
        self._topic_problems = problems

    async def _topics_as_contracted(self) -> str | None:
        return "; ".join(self._topic_problems) or None

    async def _database_answers(self) -> str | None:
        """The database answers on a connection of the check's own: the pool's may all be busy with
        batches under load, which is not the database being down."""
        if self._pool is None:
            return "not connected yet"
        if self._health_conn is None or self._health_conn.is_closed():
            self._health_conn = await asyncpg.connect(self.settings.database_url, timeout=1.5)
        try:
            await self._health_conn.fetchval("SELECT 1", timeout=1.0)
        except Exception:
            self._health_conn.terminate()
            self._health_conn = None
            raise
        return None

    async def _intake_alive(self) -> str | None:
        consumer = self.consumer
        if consumer is None or not consumer.running:
            return None  # starting: waiting for the database, migrations or the broker
        quiet = asyncio.get_running_loop().time() - consumer.last_poll
        return None if quiet < INTAKE_STALL_S else f"the fetch loop has not gone round for {quiet:.0f} s"

    async def _holds_partitions(self) -> str | None:
        consumer = self.consumer
        if consumer is None or not consumer.running:
            return "intake not started"
        return None if consumer.assignment() else "no partitions assigned to this replica"

    async def _start_relay(self) -> None:
        await ensure_topics(self.settings)
        await self.pool()  # the relay's tables exist once the schema is migrated
        await self.relay.run()

    async def _relay_alive(self) -> str | None:
        return self.relay.alive()

    def run_worker(self) -> None:
        """Run this service as a Faust worker until SIGINT/SIGTERM."""
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        name_sessions(f"rj-{self.name}")
        use_event_loop(self.settings)
        worker = Worker(self.faust, loglevel="WARNING", quiet=True, redirect_stdouts=False)
        worker.execute_from_commandline()
