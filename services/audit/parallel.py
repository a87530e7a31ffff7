"""Verifying ranges of the audit log in worker processes, each with a connection of its own, for ``verify_log``
to join as subtrees (its parallel path).

A worker is a Python process of its own (``python -m services.audit.parallel``). It is handed the database URL and
the snapshot that the caller's transaction exported, then ranges of whole chunks, one at a time; for each it reads
its chunks in that snapshot (the next chunk's query under way while this one is hashed) and answers their
``chunks.ChunkCheck``, stopping at the first chunk with a problem or with fewer rows than a chunk, where the caller
stops too. It is given no tree and no other worker's answer, and trusts nothing stored but the bodies it reads.
The caller hands out ranges in index order as workers come free, so a worker slowed by other work on the machine
takes fewer, and takes the answers back in index order.

Why processes started here rather than ``concurrent.futures.ProcessPoolExecutor``: a pool's ``spawn`` and
``forkserver`` workers each import the caller's ``__main__`` module before any work (measured here: rj's CLI takes
0.5 s to import, the benchmark's module 1 s), where this module's own ``-m`` imports only what checking needs
(0.12 to 0.17 s); and a worker whose answer is no longer needed (a problem found before its range) can be ended
at once. Forking the caller is out: it runs an asyncio loop and holds a connection. A worker that fails, cannot
connect or dies makes the whole verify fail (``VerifyIncomplete``), never pass.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import pickle
import re
import site
import struct
import sys
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import asyncpg

import services
from services.audit.chunks import ChunkCheck, check_chunk, chunks_read

MAX_WORKERS: Final = 8
TASK_CHUNKS: Final = 8
"""The most chunks a worker is handed at a time: small enough that the ranges spread evenly over workers that run
at different speeds, and that little is read past a problem; each range costs a transaction and one chunk's query
not overlapped with hashing."""

_COMMAND: list[str] = [sys.executable, "-P", "-m", "services.audit.parallel"]
"""``-P``: the working directory is not put first on the worker's path, so a ``services`` package wherever verify is
run from is never the one imported (and handed the database's address)."""
_FRAME: Final = struct.Struct(">I")
_SNAPSHOT: Final = re.compile(r"[0-9A-Fa-f]+-[0-9A-Fa-f]+(-[0-9]+)?")


class VerifyIncomplete(RuntimeError):
    """Verify could not finish: a worker failed, could not connect or died. Nothing is known of the log."""


@dataclass(frozen=True)
class Spread:
    """How to spread verifying over workers: where they connect, the snapshot they read in, how many."""

    database_url: str
    snapshot: str
    workers: int


def default_workers() -> int:
    """One worker a core, at most ``MAX_WORKERS``: checking is CPU-bound, in the workers and the database."""
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


async def chunk_checks(spread: Spread, chunk: int, end: int, sizes: Sequence[int]) -> AsyncGenerator[ChunkCheck, None]:
    """The checks of the chunks of ``chunk`` entries from entry 0 towards ``end``, in index order, from
    ``spread.workers`` workers. A range's checks end early at its first chunk with a problem or with fewer rows:
    the caller stops there. ``sizes``, sorted, are the tree sizes to report on (``chunks.check_chunk``). Close it
    (``contextlib.aclosing``) when stopping early: every worker is ended."""
    if not _SNAPSHOT.fullmatch(spread.snapshot):
        raise ValueError(f"not a snapshot id: {spread.snapshot!r}")
    span = chunk * max(1, min(TASK_CHUNKS, -(-end // chunk) // (spread.workers * 4)))
    ranges = -(-end // span)
    loop = asyncio.get_running_loop()
    answers: dict[int, asyncio.Future[list[ChunkCheck]]] = {}
    handed = 0
    failure: VerifyIncomplete | None = None

    def answer(n: int) -> asyncio.Future[list[ChunkCheck]]:
        return answers.setdefault(n, loop.create_future())

    def fail(error: VerifyIncomplete) -> None:
        nonlocal failure
        failure = failure or error
        for n, waiting in answers.items():
            if n >= handed and not waiting.done():
                waiting.set_exception(failure)

    async def drive(worker: _Worker) -> None:
        nonlocal handed
        while failure is None and handed < ranges:
            n, handed = handed, handed + 1
            first, last = n * span, min((n + 1) * span, end)
            try:
                checks = await worker.checks(first, last, chunk, _between(sizes, first, last))
            except Exception as error:  # whatever it is, the range is unchecked: verify must not go on as if it were
                failed = error if isinstance(error, VerifyIncomplete) else VerifyIncomplete(f"{worker}: {error!r}")
                answer(n).set_exception(failed)
                fail(failed)
                return
            answer(n).set_result(checks)

    workers: list[_Worker] = []
    driving: list[asyncio.Task[None]] = []
    try:
        for _ in range(min(spread.workers, ranges)):
            workers.append(await _Worker.started(spread))
        driving = [asyncio.create_task(drive(worker)) for worker in workers]
        for n in range(ranges):
            if failure is not None and n >= handed:
                raise failure
            checks = await answer(n)
            _expect(checks, n * span, min((n + 1) * span, end), chunk)
            for check in checks:
                yield check
    finally:
        for task in driving:
            task.cancel()
        await asyncio.gather(*driving, return_exceptions=True)
        await asyncio.gather(*(worker.ended() for worker in workers))
        for waiting in answers.values():  # an answer never taken must not be reported as never retrieved
            if waiting.done() and not waiting.cancelled():
                waiting.exception()


def _between(sizes: Sequence[int], first: int, last: int) -> list[int]:
    """The sizes that end within ``[first, last)``'s leaves: ``first < size <= last``."""
    return list(sizes[bisect.bisect_right(sizes, first) : bisect.bisect_right(sizes, last)])


def _expect(checks: list[ChunkCheck], first: int, last: int, chunk: int) -> None:
    """A range's checks are its chunks in order, from its first, up to its last or to one where checking stops."""
    starts = [c.start for c in checks]
    stops = [c.problem is not None or c.rows < chunk for c in checks]
    in_order = bool(checks) and starts == list(range(first, first + chunk * len(checks), chunk))
    if not in_order or any(stops[:-1]) or not (stops[-1] or starts[-1] == last - chunk):
        raise VerifyIncomplete(f"a worker answered for entries [{first}, {last}) with chunks from {starts}")


class _Worker:
    """One worker process, as its caller sees it: ranges sent on its standard input, checks read back."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.busy = False

    @classmethod
    async def started(cls, spread: Spread) -> _Worker:
        # The worker imports the same `services` as this process, wherever the interpreter would find another first
        # (an installed package is found anyway, and its site directory must not be put before the standard library).
        here = str(Path(services.__file__).resolve().parent.parent)
        installed = here in {*site.getsitepackages(), site.getusersitepackages()}
        path = os.pathsep.join(p for p in ("" if installed else here, os.environ.get("PYTHONPATH")) if p)
        process = await asyncio.create_subprocess_exec(
            *_COMMAND,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, **({"PYTHONPATH": path} if path else {})},
        )
        assert process.stdin is not None
        process.stdin.write(_frame((spread.database_url, spread.snapshot)))  # never on its command line
        return cls(process)

    async def checks(self, first: int, last: int, chunk: int, sizes: list[int]) -> list[ChunkCheck]:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        what = f"{self} on entries [{first}, {last})"
        self.busy = True
        try:
            stdin.write(_frame((first, last, chunk, sizes)))
            await stdin.drain()
            size = _FRAME.unpack(await stdout.readexactly(_FRAME.size))[0]
            status, value = pickle.loads(await stdout.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError) as error:
            code = await self.process.wait()
            raise VerifyIncomplete(f"{what}: it ended with status {code} before answering") from error
        self.busy = False
        if status != "checks":
            raise VerifyIncomplete(f"{what}: {value}")
        return value  # type: ignore[no-any-return]

    async def ended(self) -> None:
        """Ended: told there is no more when idle (it closes its connection), killed when still checking or when
        it has not ended a few seconds after being told."""
        if self.process.returncode is None and not self.busy and self.process.stdin is not None:
            self.process.stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), 5)
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()

    def __str__(self) -> str:
        return f"verify worker {self.process.pid}"


def _frame(value: object) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _FRAME.pack(len(data)) + data


# --- the worker's side -----------------------------------------------------------------------------------------


def _received(stream: IO[bytes]) -> Any:
    """The next frame, or None at the end of the stream (the caller has no more)."""
    header = stream.read(_FRAME.size)
    if not header:
        return None
    data = stream.read(_FRAME.unpack(header)[0])
    return pickle.loads(data)


def _send(stream: IO[bytes], status: str, value: object) -> None:
    stream.write(_frame((status, value)))
    stream.flush()


async def _serve(database_url: str, snapshot: str, ranges: IO[bytes], answers: IO[bytes]) -> int:
    if not _SNAPSHOT.fullmatch(snapshot):
        _send(answers, "error", f"not a snapshot id: {snapshot!r}")
        return 1
    try:
        conn = await asyncpg.connect(database_url, timeout=10, command_timeout=60)
    except Exception as error:  # the caller reports it, by name
        _send(answers, "error", f"cannot connect to the database: {type(error).__name__}: {error}")
        return 1
    try:
        # Reading the next range blocks the loop, which has nothing else to do meanwhile: no query is under way.
        while (task := _received(ranges)) is not None:
            first, last, chunk, sizes = task
            try:
                checks = await _checked(conn, snapshot, first, last, chunk, sizes)
            except Exception as error:
                _send(answers, "error", f"{type(error).__name__}: {error}")
                return 1
            _send(answers, "checks", checks)
    finally:
        await conn.close()
    return 0


async def _checked(
    conn: asyncpg.Connection, snapshot: str, first: int, last: int, chunk: int, sizes: list[int]
) -> list[ChunkCheck]:
    checks = []
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")  # checked against _SNAPSHOT: no quote in it
        async with contextlib.aclosing(chunks_read(conn, first, chunk, last)) as reading:
            async for start, rows, stored in reading:
                checks.append(check_chunk(start, rows, stored, sizes))
                if checks[-1].problem is not None:
                    break
    return checks


def main() -> int:
    answers = os.fdopen(os.dup(1), "wb")  # the answers' own descriptor: anything printed goes to stderr instead
    os.dup2(2, 1)
    ranges = sys.stdin.buffer
    database_url, snapshot = _received(ranges)
    return asyncio.run(_serve(database_url, snapshot, ranges, answers))


if __name__ == "__main__":
    sys.exit(main())
