"""``verify_log``'s parallel path (``services.audit.parallel``) over a real PostgreSQL: worker processes each check
ranges of whole chunks over a connection of their own, and the caller joins their chunks as subtrees. Chunks are
made small (``verify.CHUNK``) so that a log of a few hundred entries spans many ranges and workers.

- On any log, tampered with or not, it says exactly what the one-process path says (and so what checking one
  entry at a time says: ``reference_verify``), for the tamperings the one-process path's property test knows.
- Named cases: a changed byte in a later range than the first, deleted last entries, two swapped entries, a head
  whose root is wrong at a size inside a chunk, each named as the one-process path names it.
- A worker that cannot connect, fails inside its range or dies makes verify raise ``VerifyIncomplete``, and
  ``rj audit verify`` exit 2 saying so: never OK.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

import services.cli
from services.audit import parallel, verify
from services.cli import cli
from services.runtime.db import migrate
from services.runtime.devstack import database_for_run
from services.runtime.settings import get_settings
from tests.faults.test_audit_log_properties import (
    KEY,
    PROPERTY,
    append,
    records,
    reference_verify,
    sign_latest,
    tamper,
    tamperings,
)

pytestmark = pytest.mark.integration

CHUNK = 8
COUNT = 200  # 25 chunks, handed out as ranges of 3 (parallel.chunk_checks): more ranges than workers


@pytest.fixture(scope="module")
async def log_url(pg_server: str) -> AsyncIterator[str]:
    async with database_for_run(pg_server, "rj_audit_parallel") as url:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn, "audit", "services.audit.migrations")
        finally:
            await conn.close()
        yield url


@pytest.fixture
async def log(log_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[asyncpg.Connection]:
    """A log of ``COUNT`` entries appended in batches of 7, a head signed after every third batch and at the end
    (sizes inside chunks and at their edges), read in chunks of ``CHUNK``."""
    monkeypatch.setattr(verify, "CHUNK", CHUNK)
    conn = await asyncpg.connect(log_url)
    try:
        await conn.execute("TRUNCATE audit.entries, audit.subtrees, audit.tree_states, audit.signed_heads")
        universe = records(COUNT, seed=11)
        for n, start in enumerate(range(0, COUNT, 7)):
            await append(conn, universe[start : start + 7])
            if n % 3 == 0:
                await sign_latest(conn, timestamp_ms=100 + n)
        await sign_latest(conn, timestamp_ms=10_000)
        yield conn
    finally:
        await conn.close()


async def in_parallel(conn: asyncpg.Connection, url: str, workers: int = 2) -> verify.Verdict:
    return await verify.verify_log(conn, KEY.public_key(), database_url=url, workers=workers)


async def in_one_process(conn: asyncpg.Connection) -> verify.Verdict:
    return await verify.verify_log(conn, KEY.public_key())


def workers_started(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, each worker verify starts is counted: the list gets the size of its spread, one per worker."""
    started: list[int] = []
    starting = parallel._Worker.started

    async def counted(spread: parallel.Spread) -> parallel._Worker:
        started.append(spread.workers)
        return await starting(spread)

    monkeypatch.setattr(parallel._Worker, "started", counted)
    return started


async def run(conn: asyncpg.Connection, *statements: str) -> None:
    async with conn.transaction():  # committed: the workers read over connections of their own
        for statement in statements:
            await conn.execute(statement)


async def test_an_intact_log_verifies_in_parallel_as_in_one_process(log: asyncpg.Connection, log_url: str) -> None:
    ours = await in_parallel(log, log_url)
    assert ours.ok, ours.message
    assert ours == await in_one_process(log) == verify.Verdict(True, f"OK: {COUNT} entries, 11 signed heads verified")
    assert await in_parallel(log, log_url, workers=3) == ours


async def test_a_changed_byte_in_a_later_range_is_named_as_one_process_names_it(
    log: asyncpg.Connection, log_url: str
) -> None:
    at = 5 * CHUNK + 3  # in the third range: the second worker's first
    row = await log.fetchrow('SELECT topic, partition, "offset" FROM audit.entries WHERE idx = $1', at)
    assert row is not None
    await run(log, f"UPDATE audit.entries SET body = set_byte(body, 1, get_byte(body, 1) # 1) WHERE idx = {at}")
    ours = await in_parallel(log, log_url)
    place = f"entry {at} ({row['topic']}/{row['partition']}@{row['offset']})"
    assert ours == verify.Verdict(False, f"{place}: its body does not hash to its stored leaf (changed since appended)")
    assert ours == await in_one_process(log)


async def test_deleted_last_entries_are_named_as_one_process_names_them(log: asyncpg.Connection, log_url: str) -> None:
    await run(log, f"DELETE FROM audit.entries WHERE idx >= {COUNT - 13}")
    ours = await in_parallel(log, log_url)
    assert ours == verify.Verdict(
        False, f"entry {COUNT - 13} is missing: the log recorded {COUNT} entries, holds {COUNT - 13}"
    )
    assert ours == await in_one_process(log)


async def test_two_swapped_entries_in_two_ranges_are_named_as_one_process_names_them(
    log: asyncpg.Connection, log_url: str
) -> None:
    first, second = 2 * CHUNK + 1, 9 * CHUNK + 6
    await run(
        log,
        f"UPDATE audit.entries SET idx = -1 WHERE idx = {first}",
        f"UPDATE audit.entries SET idx = {first} WHERE idx = {second}",
        f"UPDATE audit.entries SET idx = {second} WHERE idx = -1",
    )
    ours = await in_parallel(log, log_url)
    assert not ours.ok and ours.message.startswith(f"entry {first} (")
    assert ours.message.endswith("not the leaf the tree was built with here (moved or swapped)")
    assert ours == await in_one_process(log)


async def test_left_to_choose_it_starts_workers_only_for_a_log_of_parallel_from_chunks_or_more(
    log: asyncpg.Connection, log_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = workers_started(monkeypatch)
    cores = parallel.default_workers()  # one a core: on one core, none ever
    for parallel_from, workers in ((COUNT // CHUNK + 1, []), (COUNT // CHUNK, [cores] * cores if cores > 1 else [])):
        monkeypatch.setattr(verify, "PARALLEL_FROM", parallel_from)
        started.clear()
        assert (await verify.verify_log(log, KEY.public_key(), database_url=log_url)).ok
        assert started == workers


@pytest.mark.parametrize("size", [13 * CHUNK + 5, 3 * CHUNK, 1], ids=["inside a chunk", "a range's end", "first"])
async def test_a_head_whose_root_is_wrong_is_named_at_the_entry_that_completes_it(
    log: asyncpg.Connection, log_url: str, size: int
) -> None:
    await tamper(log, ("wrong root", size))
    row = await log.fetchrow('SELECT topic, partition, "offset" FROM audit.entries WHERE idx = $1', size - 1)
    assert row is not None
    ours = await in_parallel(log, log_url)
    assert ours == verify.Verdict(
        False,
        f"entry {size - 1} ({row['topic']}/{row['partition']}@{row['offset']}): "
        f"the signed head of size {size} does not match the log rebuilt up to here",
    )
    assert ours == await in_one_process(log)


@PROPERTY
@given(data=st.data())
async def test_both_paths_say_the_same_about_any_tampering(
    log: asyncpg.Connection, log_url: str, data: st.DataObject
) -> None:
    """One log for all examples (each example's tampering is undone by rebuilding it is too slow for hypothesis):
    tampered inside a transaction that the workers cannot see would prove nothing, so each example commits its
    tampering, checks, and restores the log from a copy taken first."""
    await run(
        log,
        "CREATE TEMP TABLE IF NOT EXISTS kept_entries AS TABLE audit.entries",
        "CREATE TEMP TABLE IF NOT EXISTS kept_subtrees AS TABLE audit.subtrees",
        "CREATE TEMP TABLE IF NOT EXISTS kept_heads AS TABLE audit.signed_heads",
    )
    try:
        for what in data.draw(tamperings(COUNT), label="tampering"):
            await tamper(log, what)
        ours = await in_parallel(log, log_url, workers=data.draw(st.integers(2, 3), label="workers"))
        assert ours == await in_one_process(log) == await reference_verify(log, KEY.public_key())
    finally:
        await run(
            log,
            "TRUNCATE audit.entries, audit.subtrees, audit.signed_heads",
            "INSERT INTO audit.entries SELECT * FROM kept_entries",
            "INSERT INTO audit.subtrees SELECT * FROM kept_subtrees",
            "INSERT INTO audit.signed_heads SELECT * FROM kept_heads",
        )


async def test_a_worker_that_cannot_connect_fails_verify(log: asyncpg.Connection, unused_tcp_port: int) -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{unused_tcp_port}/nowhere"
    with pytest.raises(verify.VerifyIncomplete, match="cannot connect to the database"):
        await in_parallel(log, nowhere)


async def test_a_worker_that_fails_inside_its_range_fails_verify(log: asyncpg.Connection, log_url: str) -> None:
    """A snapshot that is not (or no longer) exported: the worker's transaction cannot start."""
    spread = parallel.Spread(log_url, "00000003-000000AB-1", 2)
    with pytest.raises(verify.VerifyIncomplete, match="invalid snapshot identifier"):
        async with aclosing(parallel.chunk_checks(spread, CHUNK, COUNT, [])) as checks:
            async for _ in checks:
                pass


async def test_a_worker_that_dies_fails_verify(
    log: asyncpg.Connection, log_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parallel, "_COMMAND", [sys.executable, "-c", "import os; os._exit(3)"])
    with pytest.raises(verify.VerifyIncomplete, match="ended with status 3 before answering"):
        await in_parallel(log, log_url)


def test_rj_audit_verify_checks_in_workers_and_exits_2_when_one_dies(
    log: asyncpg.Connection, log_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(KEY.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    key_file.chmod(0o600)
    environment: dict[str, Any] = {
        "DATABASE_URL": log_url,
        "AUDIT_SIGNING_KEY_FILE": str(key_file),
        "AUDIT_VERIFY_WORKERS": "2",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    # Its logging would be bound to the runner's captured stderr, closed after it, for the rest of the session.
    monkeypatch.setattr(services.cli, "configure_logging", lambda *_: None)
    get_settings.cache_clear()
    try:
        started = workers_started(monkeypatch)
        done = CliRunner().invoke(cli, ["audit", "verify"])
        assert (done.exit_code, done.output.strip()) == (0, f"OK: {COUNT} entries, 11 signed heads verified")
        assert started == [2, 2]

        monkeypatch.setattr(parallel, "_COMMAND", [sys.executable, "-c", "import os; os._exit(3)"])
        done = CliRunner().invoke(cli, ["audit", "verify"])
        assert done.exit_code == 2, done.output
        assert done.output.startswith("FAILED: verify could not finish, the log is not verified: verify worker ")
    finally:
        get_settings.cache_clear()


async def test_workers_never_import_a_services_package_from_where_verify_is_run(
    log: asyncpg.Connection, log_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker is handed the database's address: it must run our code, not whatever ``services`` the working
    directory holds (``python -m`` would put that first on its path)."""
    decoy = tmp_path / "services" / "audit"
    decoy.mkdir(parents=True)
    for package in (tmp_path / "services", decoy):
        (package / "__init__.py").write_text("")
    (decoy / "parallel.py").write_text("import os\nos._exit(7)\n")
    monkeypatch.chdir(tmp_path)
    ours = await in_parallel(log, log_url)
    assert ours == verify.Verdict(True, f"OK: {COUNT} entries, 11 signed heads verified")


async def test_a_worker_answer_that_leaves_out_a_head_inside_its_chunk_fails_verify(
    log: asyncpg.Connection, log_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller checks that each chunk answered for every signed head's size inside it: one left out would
    otherwise never be compared with the rebuilt tree."""
    answered = verify.chunks.check_chunk

    def forgetful(start: int, rows: Any, stored: Any, sizes: Any) -> Any:
        return answered(start, rows, stored, [])

    monkeypatch.setattr(verify.chunks, "check_chunk", forgetful)
    with pytest.raises(verify.VerifyIncomplete, match="did not answer for every head in it"):
        await in_one_process(log)
