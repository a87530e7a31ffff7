"""Service processes for the tests, forked from an interpreter that has already imported every service.

A test starts a few service processes, and the suite about three hundred; a fresh interpreter spends 1.2-2 s of
CPU importing a service (faust, aiokafka, asyncpg, the contract's pydantic models...) before it runs a line of its
own. So each pytest worker keeps one *zygote*: ``python -m tests.support.zygote``, which imports every service's
modules once, then forks a child for each service the tests start. The child is a process of its own, in a
session of its own, with exactly the environment and argv it was given, its output appended to its log: from
there it runs ``services.cli`` as ``python -m services.cli serve NAME`` would (``runpy``, as ``-m`` does). Only
the imports are shared, and nothing has run that reads the environment or starts a thread or an event loop
before the fork (the zygote checks that no thread is running when it forks).

What the tests do to a service's process goes to it directly (``os.kill``: SIGTERM, SIGKILL). The zygote is its
parent and reaps it only when asked how it is (``poll``, one pid at a time, as ``subprocess.Popen`` does): until
then an ended child stays a zombie, so its pid cannot be another process's when a test signals it. A zygote that
dies takes its children with it (each dies with its parent); their handles then say so (ended by SIGTERM) and
signal nothing. What differs from a fresh interpreter: the zygote's imports ran with the environment of the pytest
worker, so a request whose environment differs in what is read at import or start-up (``PYTHON*``, ``FAUST_*``,
locale, ``TZ``) is refused, and the working directory is the checkout. ``RJ_TEST_FORK=0`` starts every service as
a fresh interpreter instead (``services.runtime.supervisor.exec_python``).

Protocol (one JSON object a line, on the zygote's stdin and stdout):
    {"spawn": [argv...], "env": {...}, "log": path|null}  ->  {"pid": N}
    {"poll": N}                                           ->  {"status": null | exit code (-signal if killed)}
    anything wrong                                        ->  {"error": why}
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.runtime.supervisor import Launch

ROOT = Path(__file__).resolve().parent.parent.parent


def _preload() -> None:
    """Import what every service imports (its app module and the command line that runs it)."""
    import importlib

    from services.catalog import SERVICES

    importlib.import_module("services.cli")
    for target in SERVICES.values():
        importlib.import_module(target.partition(":")[0])


# --- the zygote (its own process) -------------------------------------------------------------------------------


IMPORT_TIME_ENV = ("PYTHON", "FAUST_", "LC_", "LANG", "TZ")
"""Environment read at import or interpreter start-up: a child must not need other values than the zygote had."""


def _env_mismatch(env: Mapping[str, str]) -> list[str]:
    return sorted(
        key for key in {*env, *os.environ} if key.startswith(IMPORT_TIME_ENV) and env.get(key) != os.environ.get(key)
    )


def _child(argv: Sequence[str], env: Mapping[str, str], log: str | None, keep: Sequence[int]) -> int:
    """In the forked child: become the service's process, run ``python -m services.cli ...``, return its status."""
    try:
        import runpy

        from services.runtime.settings import get_settings
        from services.runtime.supervisor import die_with_parent

        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.setsid()
        die_with_parent()  # the zygote's parent dies -> the zygote -> this
        for fd in keep:
            os.close(fd)
        null = os.open(os.devnull, os.O_RDWR)
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if log else null
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.environ.clear()
        os.environ.update(env)
        get_settings.cache_clear()
        assert argv[:1] == ["-m"], f"only modules run here: {argv!r}"
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        return 0
    except SystemExit as exit_:
        code = exit_.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    except BaseException:
        import traceback

        traceback.print_exc()
        return 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed stream at exit: nothing to keep
                pass


def serve() -> None:
    # The protocol gets fds of its own; 0 and 1 go to /dev/null and stderr, so nothing the imports print mixes in.
    requests, replies = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(2, 1)
    from services.runtime.supervisor import die_with_parent

    die_with_parent()
    _preload()
    import asyncio

    assert asyncio.get_event_loop_policy()._local._loop is None, "an import made an event loop: forks would share it"  # type: ignore[attr-defined]
    gc.collect()
    gc.freeze()  # what the imports made stays shared with the children, not copied as their collector touches it

    children: dict[int, int | None] = {}  # pid -> how it ended (None: not reaped yet)

    def spawn(request: dict[str, Any]) -> dict[str, Any]:
        if threading.active_count() != 1:
            return {"error": f"{threading.active_count()} threads running: not forking"}
        if mismatch := _env_mismatch(request["env"]):
            return {"error": f"the zygote imported with other values of {mismatch}: start it with RJ_TEST_FORK=0"}
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as error:
            return {"error": f"fork failed: {error}"}
        if pid == 0:
            os._exit(_child(request["spawn"], request["env"], request["log"], (requests, replies, null)))
        children[pid] = None
        return {"pid": pid}

    def poll(pid: int) -> dict[str, Any]:
        if pid not in children:
            return {"error": f"pid {pid} is not a child of this zygote"}
        if children[pid] is None:
            reaped, status = os.waitpid(pid, os.WNOHANG)  # a zombie until now: its pid was not reused
            if reaped:
                children[pid] = os.waitstatus_to_exitcode(status)
        status_ = children[pid]
        if status_ is not None:
            del children[pid]  # asked once: the handle keeps it, and the pid may be a new child's next
        return {"status": status_}

    reader = os.fdopen(requests, "rb", buffering=0)
    pending = b""
    while True:
        chunk = reader.read(65536)
        if not chunk:
            return  # the tests' process has gone
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request = json.loads(line)
            answer = poll(request["poll"]) if "poll" in request else spawn(request)
            os.write(replies, json.dumps(answer).encode() + b"\n")


# --- the tests' side --------------------------------------------------------------------------------------------


class Zygote:
    """The pytest worker's handle on its zygote (started on first use, gone with the worker)."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def _ask(
        self, request: dict[str, Any], zygote: subprocess.Popen[bytes] | None = None
    ) -> tuple[dict[str, Any], subprocess.Popen[bytes]]:
        """Ask the zygote (``zygote``: only that one, not a new one started in its place): its answer, and which
        zygote gave it."""
        with self._lock:
            if zygote is None and (self._process is None or self._process.poll() is not None):
                from services.runtime.supervisor import die_with_parent

                self._process = subprocess.Popen(
                    [sys.executable, "-m", "tests.support.zygote"],
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    start_new_session=True,  # a Ctrl-C to the test run is not the zygote's
                    preexec_fn=die_with_parent,
                )
            process = zygote or self._process
            assert process is not None and process.stdin is not None and process.stdout is not None
            try:
                process.stdin.write(json.dumps(request).encode() + b"\n")
                process.stdin.flush()
                line = process.stdout.readline()
            except BrokenPipeError:
                line = b""
        if not line:
            raise ZygoteGone(f"the zygote (pid {process.pid}) has gone")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"zygote: {answer['error']}")
        return answer, process

    def launch(self, argv: Sequence[str], env: Mapping[str, str], log_path: Path | None) -> ForkedProcess:
        answer, zygote = self._ask({"spawn": list(argv), "env": dict(env), "log": str(log_path) if log_path else None})
        return ForkedProcess(self, zygote, answer["pid"])

    def close(self) -> None:
        """Stop the zygote (its children die with it)."""
        with self._lock:
            if self._process is not None:
                self._process.kill()
                self._process.wait()
                self._process = None


class ZygoteGone(RuntimeError):
    pass


class ForkedProcess:
    """A service's process forked by the zygote, with ``subprocess.Popen``'s names."""

    def __init__(self, zygote: Zygote, parent: subprocess.Popen[bytes], pid: int) -> None:
        self._zygote = zygote
        self._parent = parent
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self.returncode = self._zygote._ask({"poll": self.pid}, self._parent)[0]["status"]
            except ZygoteGone:
                self.returncode = -signal.SIGTERM  # it died with its zygote (``die_with_parent``)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0)
            time.sleep(0.02)
        return code

    def send_signal(self, sig: int) -> None:
        # Not reaped until ``poll`` says it ended, so the pid is still this process's (or its zombie's).
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


_zygote: Zygote | None = None


def launcher() -> Launch:
    """The launch function for a ``Supervisor``: forks from this worker's zygote, or (``RJ_TEST_FORK=0``) a fresh
    interpreter each."""
    from services.runtime.supervisor import exec_python

    if os.environ.get("RJ_TEST_FORK", "1") == "0":
        return exec_python
    global _zygote
    if _zygote is None:
        _zygote = Zygote()
    return _zygote.launch


if __name__ == "__main__":
    serve()
