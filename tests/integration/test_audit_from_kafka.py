"""``rj audit verify --from-kafka`` when the log's database is lost: the running audit service appends and signs
heads (publishing the order it appended in on rj.audit), the audit schema is dropped, and the tree rebuilt from the
topics alone matches every head the witness file and rj.audit hold; a head from another key, or one whose root
does not match, is named. Real broker, real PostgreSQL, the real ``rj`` command."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from demo import samples
from demo.samples import case_of
from schemas import topics
from schemas.audit import AuditHeadSigned
from schemas.registry import parse_event
from services.audit import fromkafka, heads
from services.runtime.kafka import publish_raw
from tests.harness import System, run_rj
from tests.integration.test_audit_log import appended_per_topic, records_on_topics

pytestmark = pytest.mark.integration


async def heads_on_rj_audit(system: System) -> list[int]:
    """The tree sizes of the heads published on rj.audit so far."""
    reader = await system.reader(topics.AUDIT)
    sizes = []
    for _ in range(5):
        for _, _, value in await reader.read(0.3):
            event = parse_event(value)
            if isinstance(event.data, AuditHeadSigned):
                sizes.append(event.data.tree_size)
    return sizes


async def test_the_log_rebuilt_from_the_topics_alone_matches_every_signed_head_and_a_wrong_head_is_named(
    system: System, tmp_path: Path
) -> None:
    key_file, witness = tmp_path / "log-key.pem", tmp_path / "witness.jsonl"
    audit = {"audit_head_interval_s": 0.5, "audit_signing_key_file": key_file, "audit_witness_file": witness}
    system.settings = system.settings.model_copy(update=audit)
    crime = "WM/2026/710001"
    await system.publish(samples.on_crime_events(samples.crime_recorded(crime), samples.outcome_recorded(crime)))
    await publish_raw(
        system.settings,
        [
            (topics.CRIME_EVENTS, b"WM/2026/710002", b"{not json", None),
            (topics.CRIME_EVENTS, b"WM/2026/710003", None, None),  # type: ignore[list-item]  # a tombstone
            (topics.COMMANDS, case_of(crime).encode(), None, None),  # type: ignore[list-item]
        ],
    )
    system.start("referral")
    system.start("audit", **audit)
    await system.referral_events(lambda events: any(e["type"] == "rj.case.accepted" for e in events))

    async def all_appended() -> bool:
        on_topics, appended = await records_on_topics(system), await appended_per_topic(system)
        caught_up = all(appended.get(where, 0) >= end for where, end in on_topics.items())
        return topics.DEADLETTER in {t for t, _ in on_topics} and caught_up

    await system.wait_for(all_appended, timeout_s=30, what="every record of every topic in the log")
    code, out, err = await system.cli("audit", "sign-head")
    assert code == 0, err
    signed = json.loads(out)["tree_size"]

    # The relay publishes the head (and the order before it) once the CLI's transaction has committed.
    async def published() -> bool:
        return signed in await heads_on_rj_audit(system)

    await system.wait_for(published, timeout_s=30, what=f"the head of size {signed} on rj.audit")
    for name in ("audit", "referral"):
        await asyncio.to_thread(system.service(name).stop)
    covered = max([*(json.loads(line)["tree_size"] for line in witness.read_text().splitlines()),
                   *await heads_on_rj_audit(system)])  # fmt: skip
    if covered not in await heads_on_rj_audit(system):
        # A periodic head signed after ours, whose order the relay had not sent when the service stopped: the
        # outbox keeps it, and the service started again (signing nothing more) sends it.
        system.start("audit", **{**audit, "audit_head_interval_s": 3600})

        async def sent() -> bool:
            return covered in await heads_on_rj_audit(system)

        await system.wait_for(sent, timeout_s=30, what=f"the head of size {covered} on rj.audit")
        await asyncio.to_thread(system.service("audit").stop)
    held = await system.fetchval("SELECT count(*) FROM audit.entries")
    assert covered >= signed > 0 and held >= covered

    await system.fetchval("DROP SCHEMA audit CASCADE")  # the log's database is lost
    lost = system.settings.model_copy(update={"database_url": "postgresql://postgres@127.0.0.1:1/lost"})
    public_key = tmp_path / "log.pub.pem"
    public_key.write_text(heads.public_key_pem(heads.load_signing_key(key_file).public_key()))
    code, out, err = await run_rj(lost, "audit", "verify", "--from-kafka", "--public-key", str(public_key))
    assert code == 0, out + err
    assert out.startswith(f"OK from Kafka: {covered} entries rebuilt from the topics"), out

    # The auditor is handed a head the log's key did not sign, then one it signed over another root.
    witness_lines = len(witness.read_text().splitlines())
    stranger = heads.sign_tree_head(Ed25519PrivateKey.generate(), signed, bytes(32), 1_800_000_000_000)
    forged = tmp_path / "forged.jsonl"
    forged.write_text(witness.read_text() + json.dumps(stranger.to_json()) + "\n")
    code, out, _ = await run_rj(lost, "audit", "verify", "--from-kafka", "--witness", str(forged))
    assert code == 1 and out.startswith(f"FAILED: the head of size {signed} signed"), out
    assert f"(forged.jsonl line {witness_lines + 1}) is of another log" in out

    wrong_root = heads.sign_tree_head(heads.load_signing_key(key_file), signed, bytes(32), 1_800_000_000_000)
    forged.write_text(witness.read_text() + json.dumps(wrong_root.to_json()) + "\n")
    code, out, _ = await run_rj(lost, "audit", "verify", "--from-kafka", "--witness", str(forged))
    assert code == 1 and f"(forged.jsonl line {witness_lines + 1}) does not match the log rebuilt" in out, out


async def test_every_record_is_read_though_the_broker_lists_an_end_inside_the_last_record_batch(
    system: System,
) -> None:
    """Tansu lists a partition's end (ListOffsets) as one past the start of its last record batch: five records
    sent in one batch list an end of 1. Verify reads to the end a fetch answers with (its high watermark), so no
    record of such a batch is left out (left out of rj.audit: the order "not on rj.audit")."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    topic = system.settings.topic(topics.AUDIT)
    producer = AIOKafkaProducer(bootstrap_servers=system.settings.kafka_bootstrap_servers, linger_ms=200)
    await producer.start()
    try:
        sent = [await producer.send(topic, b"not an event %d" % i, key=b"one-key") for i in range(5)]
        placed = {(m.partition, m.offset) for m in await asyncio.gather(*sent)}
    finally:
        await producer.stop()
    (partition,) = {p for p, _ in placed}
    consumer = AIOKafkaConsumer(bootstrap_servers=system.settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        listed = (await consumer.end_offsets([TopicPartition(topic, partition)]))[TopicPartition(topic, partition)]
    finally:
        await consumer.stop()

    read = await fromkafka.read_topics(system.settings, [topics.AUDIT])
    leaves = read.partitions[(topics.AUDIT, partition)]
    assert list(leaves.offsets) == sorted(o for _, o in placed) == [0, 1, 2, 3, 4], (listed, list(leaves.offsets))
    assert read.audit_records == 5 and leaves.read_to == 5
