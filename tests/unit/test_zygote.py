"""The tests' service processes, forked from a zygote that has imported the services (``tests.support.zygote``),
behave as ``subprocess.Popen``'s would: exactly the argv and environment given, output appended to the log, the
exit status or the signal that ended them, and a signal to one that has ended goes nowhere."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.zygote import Zygote


@pytest.fixture(scope="module")
def zygote() -> Iterator[Zygote]:
    zygote = Zygote()
    yield zygote
    zygote.close()


def test_a_forked_process_gets_its_argv_and_only_its_environment_and_its_exit_status(
    zygote: Zygote, tmp_path: Path
) -> None:
    log = tmp_path / "echo.log"
    log.write_text("before\n")
    env = {k: v for k, v in os.environ.items() if k != "HOME"}
    process = zygote.launch(["-m", "tests.support.echo_process", "3"], {**env, "RJ_ECHO": "yes"}, log)
    assert process.wait(30) == 3 and process.returncode == 3
    assert log.read_text() == "before\nargv ['3'] RJ_ECHO yes HOME None\n"  # appended; nothing inherited
    assert zygote.launch(["-m", "tests.support.echo_process"], env, None).wait(30) == 0


def test_a_killed_process_says_which_signal_and_a_finished_one_is_not_signalled_again(
    zygote: Zygote, tmp_path: Path
) -> None:
    process = zygote.launch(["-m", "tests.support.echo_process", "sleep"], dict(os.environ), tmp_path / "sleep.log")
    assert process.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(0.2)
    process.kill()
    assert process.wait(30) == -signal.SIGKILL
    process.terminate()  # gone: nothing is signalled (its pid may be another process's by now)
    assert process.poll() == -signal.SIGKILL


def test_what_was_read_at_import_cannot_differ_and_a_dead_zygotes_children_are_ended_and_not_signalled(
    tmp_path: Path,
) -> None:
    zygote = Zygote()
    try:
        with pytest.raises(RuntimeError, match="PYTHONHASHSEED"):
            zygote.launch(["-m", "tests.support.echo_process"], {**os.environ, "PYTHONHASHSEED": "7"}, None)
        process = zygote.launch(["-m", "tests.support.echo_process", "sleep"], dict(os.environ), tmp_path / "x.log")
        assert process.poll() is None
    finally:
        zygote.close()  # its children die with it
    assert process.poll() == -signal.SIGTERM
    process.kill()  # signals nothing: the pid is no longer known to be this process's
    assert zygote.launch(["-m", "tests.support.echo_process", "4"], dict(os.environ), None).wait(30) == 4  # a new one
    zygote.close()
