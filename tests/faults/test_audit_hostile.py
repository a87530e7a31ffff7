"""The audit service under hostile records, driven from outside as a broken or malicious producer would: records
on the topics it follows that no service can read (tombstones, bytes that are not UTF-8, values of ~900 KB, JSON
with duplicate keys, NaN or integers beyond 2**53, a wrong specversion, a type's version from the future, no
key, garbage headers), published while good events flow through the referral and consent services, and the
audit service killed (SIGKILL) in the middle and started again.

Whatever it is given, every record of every topic is in the log exactly once (by topic, partition and offset,
read back from the broker itself), the log verifies, and nothing upstream sent (``crime.events``) is held in
clear: not a name from a good crime event, nor one hidden in a record no one can parse.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from demo import samples
from schemas import topics
from schemas.kafka_binding import STRUCTURED_MODE_HEADERS
from services.audit import canonical
from tests.harness import System

pytestmark = pytest.mark.integration

MARKER = "Wilhelmina Zebedee-Crumpet"  # a victim's name: never to be found in clear in the log
HUGE = 900 * 1024
Record = tuple[str, bytes | None, bytes | None, tuple[tuple[str, bytes], ...]]  # topic, key, value, headers


def envelope(event_type: str, **fields: object) -> dict[str, object]:
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "urn:hostile",
        "type": event_type,
        "subject": f"case-{uuid.uuid4().hex[:8]}",
        "time": datetime.now(UTC).isoformat(),
        "data": {"case_id": "case-hostile"},
        **fields,
    }


def hostile(round_: int) -> list[tuple[Record, str]]:
    """One of every kind of record the audit log must keep as it came, on the topics it follows, each with how it
    must be kept: "json" (RFC 8785 bytes), "raw" (its bytes as sent), "sealed" (upstream's, encrypted whole) or
    "tombstone"."""
    headers = STRUCTURED_MODE_HEADERS
    garbage = (("content-type", b"\xff\x00not/a-type"), ("", b""), ("\u2603" * 40, os.urandom(300)))
    crime = samples.upstream_event(samples.crime_recorded(f"HA/{round_}/1")).replace(b"Victim V-HA", MARKER.encode())
    deep = b'{"a": ' + b"[" * 3000 + b"]" * 3000 + b"}"
    future = envelope("rj.consent.given", dataschema="urn:rj:schema:rj.consent.given:v99")
    huge_event = json.dumps(envelope("rj.consent.given", pad="x" * HUGE)).encode()
    huge_crime = crime[:-1] + b', "pad": "' + MARKER.encode() * (HUGE // 30) + b'"}'
    not_utf8 = b'{"specversion": "1.0", "type": "rj.consent.gi\xff\xfe"}'
    case = b"case-hostile"

    def event(event_type: str, **fields: object) -> bytes:
        return json.dumps(envelope(event_type, **fields)).encode()

    return [
        ((topics.CONSENT, case, None, headers), "tombstone"),
        ((topics.CRIME_EVENTS, b"HA/tomb", None, headers), "tombstone"),
        ((topics.COMMANDS, case, None, ()), "tombstone"),
        ((topics.COMMANDS, case, not_utf8, headers), "raw"),
        ((topics.NOTIFY, b"\xff\xfe\xfd", b"\xff\xfe\xfd\x00\x80", headers), "raw"),  # not UTF-8, key nor value
        ((topics.CONSENT, case, huge_event, headers), "json"),
        ((topics.CRIME_EVENTS, b"HA/huge", huge_crime, headers), "sealed"),
        ((topics.REFERRAL, case, b'{"id": "1", "id": "2", "type": "rj.case.opened"}', headers), "raw"),
        ((topics.SCHEDULING, case, b'{"specversion": "1.0", "value": NaN, "more": Infinity}', headers), "raw"),
        ((topics.PRIVACY, case, event("rj.person.erased", n=2**60), headers), "raw"),
        ((topics.API, case, event("rj.view.logged", specversion="0.3"), headers), "json"),
        ((topics.CONSENT, case, json.dumps(future).encode(), headers), "json"),
        ((topics.COMMANDS, None, event("rj.case.add-note"), headers), "json"),  # no key
        ((topics.DEADLETTER, None, b"", headers), "raw"),  # empty, not a tombstone
        ((topics.AUDIT, b"log", event("rj.audit.head.signed"), garbage), "json"),
        ((topics.COMMANDS, case, event("rj.case.add-note"), garbage), "json"),
        ((topics.CRIME_EVENTS, b"HA/garbage", crime, garbage), "sealed"),  # a name in a record sealed whole
        ((topics.CRIME_EVENTS, b"HA/dup", crime[:-1] + b', "id": "again"}', headers), "sealed"),  # a duplicate key
        ((topics.REFERRAL, case, deep, headers), "raw"),  # deeper than a parser will go
        ((topics.CONSENT, case, b'{"text": "\\ud800 a lone surrogate"}', headers), "raw"),
    ]


def good(round_: int, crimes: int) -> list[Record]:
    """Upstream's crimes and admitted outcomes, each victim named by the marker."""
    out: list[Record] = []
    for i in range(crimes):
        ref = f"GA/{round_}/{i}"
        victim = samples.victim(f"V-{ref}").model_copy(update={"name": MARKER})
        out += [
            (t, k.encode(), v, STRUCTURED_MODE_HEADERS)
            for t, k, v in samples.on_crime_events(
                samples.crime_recorded(ref, victims=[victim]), samples.outcome_recorded(ref)
            )
        ]
    return out


async def publish(system: System, records: list[Record]) -> dict[tuple[str, int, int], Record]:
    """Publish as they are; where each landed (logical topic, partition, offset)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=system.settings.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=False,
        max_request_size=4 * 1024 * 1024,
        linger_ms=2,
    )
    await producer.start()
    try:
        sent = [
            await producer.send(system.settings.topic(t), v, key=k, headers=list(h))  # type: ignore[arg-type]
            for t, k, v, h in records
        ]
        landed = await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return {(r[0], m.partition, m.offset): r for r, m in zip(records, landed, strict=True)}


async def every_record_on_the_topics(system: System) -> dict[tuple[str, int, int], bytes | None]:
    """Every record the broker holds on every topic, by place, read from offset 0 with no consumer group; read until
    nothing new comes for a while (the broker's own end offsets can lag what it holds)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=system.settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",  # a seek_to_beginning can be overtaken by the reset assign starts
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        parts = [
            TopicPartition(system.settings.topic(t), p)
            for t in topics.ALL_TOPICS
            for p in range(system.settings.topic_partitions)
        ]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        held: dict[tuple[str, int, int], bytes | None] = {}
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 3:
            batches = await consumer.getmany(timeout_ms=300)
            for tp, messages in batches.items():
                for m in messages:
                    held[(tp.topic.removeprefix(system.settings.topic_prefix), tp.partition, m.offset)] = m.value
            if any(batches.values()):
                quiet_since = time.monotonic()
        return held
    finally:
        await consumer.stop()


async def appended(system: System) -> dict[tuple[str, int, int], bytes]:
    rows = await system.fetch('SELECT topic, partition, "offset", body FROM audit.entries')
    return {(r["topic"], r["partition"], r["offset"]): bytes(r["body"]) for r in rows}


async def test_hostile_records_on_every_topic_and_a_killed_audit_service_leave_every_record_once_and_nothing_in_clear(
    system: System, tmp_path: Path
) -> None:
    audit = {
        "audit_head_interval_s": 3600,  # heads on demand only: the topics hold still once the services are done
        "audit_signing_key_file": tmp_path / "log-key.pem",
        "audit_witness_file": tmp_path / "witness.jsonl",
    }
    system.settings = system.settings.model_copy(update=audit)
    for name in ("referral", "consent"):
        system.start(name)
    system.start("audit", **audit)

    pairs = [*hostile(1), *hostile(2)]
    kept = dict(pairs)
    first, second = [r for r, _ in pairs[: len(pairs) // 2]], [r for r, _ in pairs[len(pairs) // 2 :]]
    published = await publish(system, [*good(1, 600), *first])

    async def appending() -> bool:
        return bool(await system.fetchval("SELECT count(*) FROM audit.entries"))

    await system.wait_for(appending, what="the audit service to append")
    system.service("audit").kill()  # SIGKILL: no clean shutdown, no offset commit
    at_kill = await system.fetchval("SELECT count(*) FROM audit.entries")
    published |= await publish(system, [*second, *good(2, 100)])
    system.start("audit", **audit)
    cases = [samples.case_of(f"GA/{r}/{i}") for r, n in ((1, 600), (2, 100)) for i in range(n)]

    async def consent_took_every_case() -> bool:
        sql = "SELECT count(*) FROM consent.cases WHERE key = ANY($1::text[])"
        return bool(await system.fetchval(sql, cases) == len(cases))

    await system.wait_for(consent_took_every_case, timeout_s=180, what="the good cases through referral and consent")

    async def exactly_the_topics() -> bool:
        held = await every_record_on_the_topics(system)
        return held.keys() == (await appended(system)).keys()

    await system.wait_for(exactly_the_topics, timeout_s=120, what="every record on the topics appended")
    held = await every_record_on_the_topics(system)
    log = await appended(system)
    assert log.keys() == held.keys() and published.keys() <= log.keys()
    assert 0 < at_kill < len(log)
    count, distinct, last = (
        await system.fetch('SELECT count(*), count(DISTINCT (topic, partition, "offset")), max(idx) FROM audit.entries')
    )[0]
    assert count == distinct == len(held) == last + 1, "each record once, at gap-free indexes"

    # Each record as it came: JSON in RFC 8785 form where that keeps it exactly, its bytes as sent where it would
    # not, upstream's sealed whole.
    for place, record in published.items():
        topic, _, value, _ = record
        body, how = log[place], kept.get(record, "sealed" if topic == topics.CRIME_EVENTS else "json")
        if how == "json":
            assert value is not None and body[:1] == canonical.JSON_KIND, place
            assert canonical.from_canonical(body) == json.loads(value), place
        elif how == "raw":
            assert body == canonical.RAW_KIND + (value or b""), place
        elif how == "sealed":  # the leaf commits to the record's digest; the record itself is kept sealed beside it
            assert value and body == canonical.DIGEST_KIND + hashlib.sha256(value).digest(), place
        elif how == "tombstone":
            assert body == canonical.TOMBSTONE_KIND, place

    # Nothing from crime.events in clear anywhere in the log (its facts and dead letters are sealed too), neither in
    # the entries' bodies nor in the upstream records kept sealed beside them.
    for column in ("body", "sealed_record"):
        in_clear = f"SELECT count(*) FROM audit.entries WHERE position($1::bytea in {column}) > 0"
        assert await system.fetchval(in_clear, MARKER.encode()) == 0, column
    kept_sealed = "SELECT count(*) FROM audit.entries WHERE topic = $1 AND body != $2 AND sealed_record IS NULL"
    assert await system.fetchval(kept_sealed, topics.CRIME_EVENTS, canonical.TOMBSTONE_KIND) == 0

    code, out, err = await system.cli("audit", "sign-head")
    assert code == 0, out + err
    code, out, err = await system.cli("audit", "verify")
    assert code == 0 and out.startswith("OK:"), out + err
    assert system.service("audit").running, system.logs("audit")[-3000:]
