"""The wire format other teams code against, read off the real broker: structured-mode CloudEvents."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from demo import samples
from demo.reader import RawRecord, TopicReader
from schemas import topics
from schemas.audit import AuditEntriesAppended, AuditHeadSigned
from schemas.registry import parse_event
from services.audit.app import signed_head_of, signing_key
from services.audit.heads import verify_tree_head
from tests.harness import System

pytestmark = pytest.mark.integration

# Spelled out rather than imported from schemas.kafka_binding: the test holds the code to the binding's text.
STRUCTURED_MODE = [b"application/cloudevents+json"]


def content_types(record: RawRecord) -> list[bytes | None]:
    return [value for name, value in record.headers if name == "content-type"]


async def read_records_until(
    reader: TopicReader, enough: int, timeout_s: float = 45, settle_s: float = 1.0
) -> list[RawRecord]:
    """At least ``enough`` records, plus whatever else arrives in ``settle_s`` (so a stray one is seen too)."""
    records: list[RawRecord] = []
    deadline = time.monotonic() + timeout_s
    while len(records) < enough:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out with {len(records)} of {enough} records")
        records += await reader.read_records(0.3)
    end = time.monotonic() + settle_s
    while time.monotonic() < end:
        records += await reader.read_records(0.3)
    return records


async def test_every_fact_the_relay_publishes_carries_the_cloudevents_structured_mode_content_type(
    system: System,
) -> None:
    refs = [f"WM/2026/2000{n:02d}" for n in range(6)]  # several keys, so several partitions and batches
    await system.publish(
        samples.on_crime_events(
            *[p for ref in refs for p in (samples.crime_recorded(ref), samples.outcome_recorded(ref))]
        )
    )
    system.start("referral")

    # Each case yields opened, accepted, victim-information.due and victim-support.referral-due.
    records = await read_records_until(await system.reader(topics.REFERRAL), enough=4 * len(refs))

    assert {json.loads(r.value)["type"] for r in records} == {
        "rj.case.opened",
        "rj.case.accepted",
        "rj.victim-information.due",
        "rj.victim-support.referral-due",
    }
    assert {json.loads(r.value)["specversion"] for r in records} == {"1.0"}  # the value is the whole event
    unlabelled = [(r.key, r.headers) for r in records if content_types(r) != STRUCTURED_MODE]
    assert unlabelled == []


async def test_events_published_by_the_test_and_demo_helper_carry_the_same_content_type(system: System) -> None:
    ref = "WM/2026/200100"
    await system.publish(samples.on_crime_events(samples.crime_recorded(ref), samples.outcome_recorded(ref)))

    records = await read_records_until(await system.reader(topics.CRIME_EVENTS), enough=2, settle_s=0)

    assert [content_types(r) for r in records] == [STRUCTURED_MODE, STRUCTURED_MODE]


async def test_the_audit_logs_heads_and_append_order_on_rj_audit_are_structured_mode_facts_of_the_contract(
    system: System, tmp_path: Path
) -> None:
    key_file = tmp_path / "log-key.pem"
    system.start("audit", audit_head_interval_s=0.3, audit_signing_key_file=key_file)

    # The log appends its own heads too, so a head signed after one is appended comes with the order of its record.
    reader = await system.reader(topics.AUDIT)
    records: list[RawRecord] = []
    deadline = time.monotonic() + 45
    while not any(parse_event(r.value).type == AuditEntriesAppended.event_type for r in records):
        assert time.monotonic() < deadline, f"no order published in {len(records)} records"
        records += await reader.read_records(0.3)

    assert [content_types(r) for r in records] == [STRUCTURED_MODE] * len(records)
    events = [parse_event(r.value) for r in records]
    assert len({e.id for e in events}) == len(events)  # each once
    heads = [e.data for e in events if isinstance(e.data, AuditHeadSigned)]
    orders = [e.data for e in events if isinstance(e.data, AuditEntriesAppended)]
    assert heads and orders and len(heads) + len(orders) == len(events)
    public_key = signing_key(key_file).public_key()
    assert all(verify_tree_head(public_key, signed_head_of(head)) for head in heads)
    assert {run.topic for order in orders for run in order.runs} == {topics.AUDIT}
