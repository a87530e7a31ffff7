"""The audit service appends every record of every topic once, raw, and its log verifies, exports and fails
where it was tampered with. Real broker, real PostgreSQL, the real ``rj audit`` commands."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from pathlib import Path

import asyncpg
import pytest

from demo import samples
from demo.samples import case_of
from schemas import topics
from services.runtime.kafka import publish_raw
from services.runtime.topicread import read_from_the_start
from tests.harness import System

pytestmark = pytest.mark.integration


async def records_on_topics(system: System) -> dict[tuple[str, int], int]:
    """The offset after the last record of every partition of every topic that holds records (each read to its
    high watermark: the broker's listed end may fall inside its last batch)."""
    spans = await read_from_the_start(system.settings, topics.ALL_TOPICS, lambda *_: None)
    return {where: span.end for where, span in spans.items() if span.end}


async def appended_per_topic(system: System) -> dict[tuple[str, int], int]:
    """The next offset after the last appended, per partition (UNIQUE topic/partition/offset: each once)."""
    rows = await system.fetch('SELECT topic, partition, max("offset") + 1 AS n FROM audit.entries GROUP BY 1, 2')
    return {(r["topic"], r["partition"]): r["n"] for r in rows}


async def test_every_record_is_appended_once_verifies_exports_and_tampering_is_named(
    system: System, tmp_path: Path
) -> None:
    audit = {
        "audit_head_interval_s": 0.5,
        "audit_signing_key_file": tmp_path / "log-key.pem",
        "audit_witness_file": tmp_path / "witness.jsonl",
    }
    system.settings = system.settings.model_copy(update=audit)
    crime = "WM/2026/700001"
    case = case_of(crime)
    await system.publish(samples.on_crime_events(samples.crime_recorded(crime), samples.outcome_recorded(crime)))
    await publish_raw(
        system.settings,
        [
            (topics.CRIME_EVENTS, b"WM/2026/700002", b"{not json", None),
            (topics.CRIME_EVENTS, b"WM/2026/700003", None, None),  # type: ignore[list-item]  # a tombstone
            (topics.COMMANDS, case.encode(), None, None),  # type: ignore[list-item]  # a tombstone on the case
            (topics.COMMANDS, case.encode(), b"", None),  # and an empty value: another entry
        ],
    )
    system.start("referral")
    system.start("audit", **audit)
    await system.referral_events(lambda events: any(e["type"] == "rj.case.accepted" for e in events))

    async def all_appended() -> bool:
        on_topics = await records_on_topics(system)
        names = {topic for topic, _ in on_topics}
        appended = await appended_per_topic(system)
        caught_up = all(appended.get(where, 0) >= end for where, end in on_topics.items())  # (heads go on coming)
        return {topics.DEADLETTER, topics.AUDIT} <= names and caught_up and set(appended) == set(on_topics)

    try:
        await system.wait_for(all_appended, timeout_s=30, what="every record of every topic in the log once")
    except AssertionError as error:
        have = await appended_per_topic(system)
        raise AssertionError(f"{error}: {await records_on_topics(system)} vs {have}") from None
    assert await system.fetchval("SELECT count(DISTINCT idx) = max(idx) + 1 FROM audit.entries")
    # Upstream's four (two events, the malformed one, the tombstone) are all there: each value sealed whole beside
    # its entry, whose body (what its leaf commits to) is the value's SHA-256; the tombstone has nothing to seal.
    rows = await system.fetch(
        'SELECT partition, "offset", body, sealed_record FROM audit.entries WHERE topic = $1', topics.CRIME_EVENTS
    )
    assert len(rows) == 4 and [bytes(r["body"]) for r in rows].count(b"T") == 1
    opened = []
    for r in rows:
        if r["sealed_record"] is None:
            assert bytes(r["body"]) == b"T"
            continue
        assert b"not json" not in r["sealed_record"]
        context = f"audit:{topics.CRIME_EVENTS}:{r['partition']}:{r['offset']}".encode()
        value = await system.unseal(bytes(r["sealed_record"]), context)
        assert value is not None and bytes(r["body"]) == b"D" + hashlib.sha256(value).digest()
        opened.append(value)
    assert b"{not json" in opened
    witnessed = [json.loads(line) for line in (tmp_path / "witness.jsonl").read_text().splitlines()]
    assert witnessed and all(h["tree_size"] >= 0 for h in witnessed)

    code, out, err = await system.cli("audit", "verify")
    assert code == 0, out + err

    export = tmp_path / "case.json"
    code, out, err = await system.cli("audit", "sign-head")
    assert code == 0, err
    code, out, err = await system.cli("audit", "export", "--case", case, "--out", str(export))
    assert code == 0, err
    code, out, err = await system.cli("audit", "check", str(export))
    assert code == 0 and out.startswith("OK:"), out + err
    document = json.loads(export.read_text())
    assert len(document["entries"]) >= 6
    on_commands = [base64.b64decode(e["canonical"]) for e in document["entries"] if e["topic"] == topics.COMMANDS]
    assert on_commands == [b"T", b"R"]  # the tombstone and the empty value, exported as two different entries
    code, out, err = await system.cli("audit", "replay", "--case", case, "--json")
    assert code == 0 and json.loads(out)["state"]["status"] == "accepted", out + err
    raw = bytearray(export.read_bytes())
    spot = raw.index(b'"canonical": "') + 20
    raw[spot] = ord("A") if raw[spot] != ord("A") else ord("B")
    export.write_bytes(bytes(raw))
    code, out, _ = await system.cli("audit", "check", str(export))
    assert code == 1 and out.startswith("FAILED:"), out

    conn = await asyncpg.connect(system.settings.database_url)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL ROLE rj_audit_appender")
            for statement in (
                "UPDATE audit.entries SET key = 'x' WHERE idx = 0",
                "DELETE FROM audit.entries WHERE idx = 0",
                "TRUNCATE audit.entries",
                "UPDATE audit.signed_heads SET tree_size = 0",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    async with conn.transaction():
                        await conn.execute(statement)
    finally:
        await conn.close()
    # The log holds still while it is tampered with: both have stopped (a stopping audit service still appends what
    # it has taken) before the log is copied.
    system.service("audit").process.terminate()
    system.service("referral").process.terminate()
    await asyncio.to_thread(system.service("audit").stop)
    await asyncio.to_thread(system.service("referral").stop)

    await system.fetchval("CREATE TABLE public.entries_copy AS SELECT * FROM audit.entries")

    async def verify_after(*statements: str) -> str:
        conn = await asyncpg.connect(system.settings.database_url)
        try:
            async with conn.transaction():
                for statement in statements:
                    await conn.execute(statement)
            code, out, _ = await system.cli("audit", "verify")
            async with conn.transaction():
                await conn.execute("DELETE FROM audit.entries")
                await conn.execute("INSERT INTO audit.entries SELECT * FROM public.entries_copy")
        finally:
            await conn.close()
        assert code == 1 and out.startswith("FAILED:"), out
        return out

    changed = await verify_after("UPDATE audit.entries SET body = body || '\\x00'::bytea WHERE idx = 2")
    assert "entry 2 (" in changed and "changed since appended" in changed
    last = await system.fetchval("SELECT max(idx) FROM audit.entries")
    deleted = await verify_after(f"DELETE FROM audit.entries WHERE idx >= {last - 1}")
    assert f"entry {last - 1} is missing" in deleted
    swapped = await verify_after(
        "UPDATE audit.entries SET idx = -1 WHERE idx = 1",
        "UPDATE audit.entries SET idx = 1 WHERE idx = 2",
        "UPDATE audit.entries SET idx = 2 WHERE idx = -1",
    )
    assert "entry 1 (" in swapped and "moved or swapped" in swapped
    code, out, _ = await system.cli("audit", "verify")
    assert code == 0, out
