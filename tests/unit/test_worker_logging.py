"""The worker leaves library debug logging off: faust's terminal spinner set the root logger to DEBUG, and every
aiokafka debug line was then built as a record before it was dropped (a twelfth of a service's CPU under load)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import faust
import pytest

from services.runtime.app import Worker


@pytest.fixture
def root_logger_restored() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers


def set_up(worker_class: type[faust.Worker]) -> None:
    app = faust.App("logging-test", broker="kafka://127.0.0.1:1")
    worker = worker_class(app, loglevel="WARNING", quiet=True, redirect_stdouts=False, stdout=io.StringIO())
    worker._setup_logging()


def test_the_workers_logging_leaves_library_debug_lines_unbuilt(root_logger_restored: None) -> None:
    set_up(faust.Worker)
    assert logging.getLogger("aiokafka.consumer.fetcher").isEnabledFor(logging.DEBUG), "faust's own does: the premise"
    logging.getLogger().setLevel(logging.WARNING)

    set_up(Worker)
    assert not logging.getLogger("aiokafka.consumer.fetcher").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("aiokafka").isEnabledFor(logging.WARNING)
