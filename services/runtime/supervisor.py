"""Runs services as child processes, one per service, the way containers run them in production."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


def die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it when its parent dies, so a killed test run or
    dev stack never leaves brokers and services behind. (No-op where prctl is unavailable.)"""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


_PR_SET_PDEATHSIG = 1


class ChildProcess(Protocol):
    """What a service's process offers (``subprocess.Popen``'s names, so that one is one)."""

    @property
    def pid(self) -> int: ...
    @property
    def returncode(self) -> int | None: ...
    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...


Launch = Callable[[Sequence[str], Mapping[str, str], Path | None], ChildProcess]
"""Starts ``python ARGV`` with exactly ``env``, its output appended to the file named (None: nowhere)."""


def exec_python(argv: Sequence[str], env: Mapping[str, str], log_path: Path | None) -> ChildProcess:
    """A fresh interpreter, in a session of its own, that dies with this process."""
    out = open(log_path, "ab") if log_path else None  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            [sys.executable, *argv],
            env=dict(env),
            stdout=out or subprocess.DEVNULL,
            stderr=out or subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    finally:
        if out:
            out.close()


@dataclass
class ServiceProcess:
    name: str
    process: ChildProcess
    log_path: Path | None

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no offset commit, no flush. What a crash looks like."""
        if self.running:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 15) -> None:
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Supervisor:
    env: Mapping[str, str]
    log_dir: Path | None = None
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    launch: Launch = exec_python
    """How a process is started: a fresh interpreter each (what a container does); the tests fork them from an
    interpreter that has already imported the services (``tests.support.zygote``), the same code from ``main``."""

    def start(self, name: str, extra_env: Mapping[str, str] | None = None, *, replica: str = "") -> ServiceProcess:
        """Start service ``name``; a ``replica`` name runs another process of it beside the first."""
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        label = f"{name}-{replica}" if replica else name
        log_path = self.log_dir / f"{label}.log" if self.log_dir else None
        process = self.launch(
            ["-m", "services.cli", "serve", name], {**os.environ, **self.env, **(extra_env or {})}, log_path
        )
        self.processes[label] = ServiceProcess(label, process, log_path)
        return self.processes[label]

    def stop_all(self) -> None:
        for proc in self.processes.values():
            if proc.running:
                proc.process.send_signal(signal.SIGTERM)
        for proc in self.processes.values():
            proc.stop()
