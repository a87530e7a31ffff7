"""Runs services as child processes, one per service, the way containers run them in production."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


def die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it when its parent dies, so a killed test run or
    dev stack never leaves brokers and services behind. (No-op where prctl is unavailable.)"""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


_PR_SET_PDEATHSIG = 1


@dataclass
class ServiceProcess:
    name: str
    process: subprocess.Popen[bytes]
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

    def start(self, name: str, extra_env: Mapping[str, str] | None = None, *, replica: str = "") -> ServiceProcess:
        """Start service ``name``; a ``replica`` name runs another process of it beside the first."""
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        label = f"{name}-{replica}" if replica else name
        log_path = self.log_dir / f"{label}.log" if self.log_dir else None
        out = open(log_path, "ab") if log_path else None  # noqa: SIM115 - handed to the child
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", name],
            env={**os.environ, **self.env, **(extra_env or {})},
            stdout=out or subprocess.DEVNULL,
            stderr=out or subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        if out:
            out.close()
        self.processes[label] = ServiceProcess(label, process, log_path)
        return self.processes[label]

    def stop_all(self) -> None:
        for proc in self.processes.values():
            if proc.running:
                proc.process.send_signal(signal.SIGTERM)
        for proc in self.processes.values():
            proc.stop()
