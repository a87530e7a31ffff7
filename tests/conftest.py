"""Shared fixtures: one real broker per test session, the real PostgreSQL, and a fresh ``System`` per test."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.api.issuer import LocalIssuer
from services.runtime.devstack import Broker, ensure_postgres, start_broker
from tests.harness import System, stopped_systems
from tests.support.notify_standin import REFERENCE_KEY

STATE = Path(__file__).resolve().parent.parent / ".rj" / "test"

# One NOTIFY_REFERENCE_KEY for every test's settings and services (as a deployment has one), so that a test can
# name the reference a notification goes out with (``tests.support.notify_standin.REFERENCES``).
os.environ.setdefault("NOTIFY_REFERENCE_KEY", REFERENCE_KEY)


@pytest.fixture(scope="session")
async def broker() -> AsyncIterator[Broker]:
    STATE.mkdir(parents=True, exist_ok=True)
    broker = start_broker(log_path=STATE / "tansu.log")
    yield broker
    await stopped_systems()  # systems stop their services in the background (System.__aexit__)
    broker.stop()


@pytest.fixture(scope="session")
async def pg_server() -> str:
    # Under pytest-xdist each worker is a process of its own: where an embedded PostgreSQL has to be started (no
    # server on the machine), each starts its own in its own directory rather than two in one.
    return await ensure_postgres(STATE / os.environ.get("PYTEST_XDIST_WORKER", "pg"))


@pytest.fixture(scope="session")
async def issuer() -> AsyncIterator[LocalIssuer]:
    """The force's identity provider as the API sees it: a local OpenID Connect issuer, one per session."""
    STATE.mkdir(parents=True, exist_ok=True)
    from demo.samples import UPSTREAM_SOURCE

    async with LocalIssuer(STATE / "issuer.pem", default_force=UPSTREAM_SOURCE) as issuer:
        yield issuer


@pytest.fixture
async def system(
    broker: Broker, pg_server: str, issuer: LocalIssuer, request: pytest.FixtureRequest
) -> AsyncIterator[System]:
    log_dir = STATE / "logs" / request.node.name
    shutil.rmtree(log_dir, ignore_errors=True)  # keep only this run's logs to read after a failure
    async with System(broker.bootstrap, pg_server, log_dir, issuer=issuer) as system:
        yield system


# The longest modules first (measured with ``--durations``), so that under pytest-xdist (``--dist loadfile``: a
# module's tests in one worker) none of them starts last and runs on alone while the other workers stand idle;
# the many short modules fill in behind them. The order of everything else is left as collected.
LONGEST_FIRST = (
    "tests/faults/test_soak.py",
    "tests/integration/test_referral_faults.py",
    "tests/faults/test_privacy_service.py",
    "tests/browser/test_console.py",
    "tests/faults/test_infrastructure_faults.py",
    "tests/e2e/test_audit_e2e.py",
    "tests/e2e/test_indirect_rj.py",
    "tests/faults/test_operability.py",
    "tests/faults/test_relay.py",
    "tests/faults/test_withdrawal_first.py",
    "tests/faults/test_api_hostile.py",
    "tests/e2e/test_api_facilitator.py",
    "tests/integration/test_audit_from_kafka.py",
    "tests/faults/test_deadletter_replay.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
