"""The read model as the real world feeds it, as a property: one case's facts arrive from three topics in any
order, split into any batches, some delivered twice, and some batches lost to a crash after they were folded but
before they committed (rolled back, then delivered again). Whatever happened, the case page is the one the facts
give in the order they were decided. Against the real PostgreSQL and key store."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.api import readmodel
from services.runtime.db import transaction
from services.runtime.privacy import batch_scope
from tests.integration.test_api_read_model_order import case_facts, comparable, detail, feed, pool  # noqa: F401

pytestmark = pytest.mark.integration

FACTS = len(case_facts("any"))


class Crash(Exception):
    """The process died after folding a batch and before its transaction committed."""


async def deliver(pool: asyncpg.Pool, batch: Sequence[Any], *, crash_first: bool) -> None:  # noqa: F811
    if crash_first:
        with pytest.raises(Crash), batch_scope():
            async with transaction(pool) as conn:
                await readmodel.take_in(conn, batch)
                raise Crash
    with batch_scope():
        async with transaction(pool) as conn:
            await readmodel.take_in(conn, batch)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    order=st.permutations(range(FACTS)),
    repeats=st.lists(st.tuples(st.integers(0, FACTS - 1), st.integers(0, FACTS)), max_size=5),
    data=st.data(),
)
async def test_any_order_batching_repeats_and_crashes_give_the_case_its_facts_give_in_order(
    pool: asyncpg.Pool,  # noqa: F811
    order: list[int],
    repeats: list[tuple[int, int]],
    data: st.DataObject,
) -> None:
    expected_id, case_id = f"case-{uuid.uuid4().hex[:8]}", f"case-{uuid.uuid4().hex[:8]}"
    await feed(pool, case_facts(expected_id), one_at_a_time=False)

    facts = case_facts(case_id)
    arrivals = [facts[i] for i in order]
    for fact, position in repeats:  # at-least-once: the same fact again, somewhere later
        arrivals.insert(min(position, len(arrivals)), facts[fact])
    cuts = sorted(data.draw(st.sets(st.integers(1, len(arrivals) - 1), max_size=6), label="cuts"))
    batches = [arrivals[a:b] for a, b in zip([0, *cuts], [*cuts, len(arrivals)], strict=True)]
    crashes = data.draw(st.lists(st.booleans(), min_size=len(batches), max_size=len(batches)), label="crashes")
    for batch, crash in zip(batches, crashes, strict=True):
        await deliver(pool, batch, crash_first=crash)

    expected = await detail(pool, expected_id, personal=True)
    got = await detail(pool, case_id, personal=True)
    assert got is not None and expected is not None
    assert comparable(got) == comparable(expected)
    hidden = await detail(pool, case_id, personal=False)
    assert comparable(hidden) == comparable(await detail(pool, expected_id, personal=False))
