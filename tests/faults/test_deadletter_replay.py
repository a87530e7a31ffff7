"""Replaying a dead letter after a fix, through the ``rj deadletters`` command, against the real broker,
PostgreSQL and a running service: the event is then applied exactly once, the letter shows as replayed,
and an inbox claim that is not the letter's own is never released."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from demo import samples
from demo.samples import case_of
from schemas import topics
from services.runtime.db import migrate
from services.runtime.deadletters import ReplayRefused, replay_dead_letter, store_dead_letters
from services.runtime.outbox import claim_inbox, write_outbox
from services.runtime.records import Record
from tests.e2e.conftest import facts
from tests.harness import System

pytestmark = pytest.mark.integration

SERVICES = ["referral", "consent", "scheduling"]


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


async def rj(system: System, *args: str) -> Result:
    """``rj deadletters ...`` as an operator runs it, in a process of its own with the system's settings."""
    return Result(*await system.cli("deadletters", *args))


async def execute(system: System, sql: str) -> None:
    conn = await asyncpg.connect(system.settings.database_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def test_a_dead_letter_replayed_after_the_fix_is_applied_exactly_once_and_shows_as_replayed(
    system: System,
) -> None:
    system.start("referral")

    async def migrated() -> bool:
        return bool(await system.fetchval("SELECT count(*) FROM referral.crime_files") == 0)

    await system.wait_for(migrated, what="the referral service to migrate its schema")
    # The defect: a constraint the accepting of a case violates (class 23, so the event is dead-lettered).
    await execute(
        system,
        "ALTER TABLE referral.crime_files ADD CONSTRAINT not_screened_yet "
        "CHECK (status NOT IN ('accepted', 'declined'))",
    )
    ref = "DL/2026/1"
    case_id = case_of(ref)
    crime, outcome = samples.on_crime_events(samples.crime_recorded(ref), samples.outcome_recorded(ref))
    outcome_id = json.loads(outcome[2])["id"]
    await system.publish([crime, outcome])

    async def dead_lettered() -> bool:
        return bool(await system.fetchval("SELECT count(*) FROM referral.dead_letters") == 1)

    await system.wait_for(dead_lettered, what="the outcome to be dead-lettered")
    [letter] = (await rj(system, "list", "--json")).json()
    assert letter["event_id"] == outcome_id and letter["service"] == "referral"
    assert "not_screened_yet" in letter["reason"]
    assert letter["replayed"] is False and letter["inbox_claim"] == letter["position"]
    human = await rj(system, "show", letter["id"])
    assert human.code == 0 and "not_screened_yet" in human.out and "never" in human.out

    await execute(system, "ALTER TABLE referral.crime_files DROP CONSTRAINT not_screened_yet")  # the fix
    replayed = await rj(system, "replay", letter["id"])
    assert replayed.code == 0, replayed.err
    assert f"released the inbox claim of event {outcome_id}" in replayed.out

    accepted = await facts(system, topics.REFERRAL, case_id, "rj.case.accepted", settle_s=2)
    assert len(accepted) == 1
    assert await system.fetchval("SELECT status FROM referral.crime_files WHERE case_id = $1", case_id) == "accepted"
    shown = (await rj(system, "show", letter["id"], "--json")).json()
    assert shown["replayed"] is True and shown["replays"] == 1 and shown["replayed_at"] is not None
    assert shown["replayed_to"].startswith(f"{topics.CRIME_EVENTS}:{letter['partition']}:")
    assert shown["inbox_claim"] == shown["replayed_to"], "the event was taken in from the replayed copy"
    sha256 = hashlib.sha256(outcome[2]).hexdigest()
    assert shown["original_sha256"] == sha256 and shown["size"] == len(outcome[2])
    reader = await system.reader(topics.CRIME_EVENTS)
    on_topic = await read_all(reader)
    assert [v for _, _, v in on_topic].count(outcome[2]) == 2, "the original and its replayed copy, byte for byte"

    # Replayed again: its event id was since taken in from another copy (the replayed one).
    again = await rj(system, "replay", letter["id"], "--json")
    assert again.code == 0, again.err
    assert again.json()["outcome"] == "applied_elsewhere" and again.json()["inbox_claim"] == shown["replayed_to"]
    assert (
        await system.fetchval("SELECT position FROM referral.inbox WHERE event_id = $1", outcome_id)
        == shown["replayed_to"]
    ), "the inbox is left alone"
    assert (await rj(system, "show", letter["id"], "--json")).json()["replays"] == 1
    assert await read_all(reader) == [], "nothing is sent again"
    await asyncio.sleep(2)
    accepted = await facts(system, topics.REFERRAL, case_id, "rj.case.accepted", settle_s=1)
    assert len(accepted) == 1
    assert await system.fetchval("SELECT count(*) FROM referral.dead_letters") == 1


async def read_all(reader: Any) -> list[tuple[str, bytes | None, bytes]]:
    seen: list[tuple[str, bytes | None, bytes]] = []
    while batch := await reader.read(1.0):
        seen += batch
    return seen


# --- what cannot be replayed, or not yet: no service needed ---------------------------------------------


@dataclass(frozen=True)
class Letter:
    record: Record
    reason: str
    event_id: str | None
    event_type: str | None = "crime.outcome-recorded"


async def dead_letter(conn: asyncpg.Connection, record: Record, event_id: str | None, claim: bool = True) -> str:
    """Dead-letter ``record`` as the processor does: the letter, and its event id claimed at its position."""
    async with conn.transaction():
        if event_id and claim:
            await claim_inbox(conn, "referral", [(event_id, record.position)])
        [copy] = await store_dead_letters(conn, "referral", "referral", [Letter(record, "broken", event_id)])
        await write_outbox(conn, "referral", [copy])
    return copy.event_id


@pytest.fixture
async def referral_db(system: System) -> Any:
    conn = await asyncpg.connect(system.settings.database_url)
    await migrate(conn, "referral", "services.referral.migrations")
    yield conn
    await conn.close()


async def test_a_tombstone_or_an_unknown_id_cannot_be_replayed_and_the_command_says_so(
    system: System, referral_db: asyncpg.Connection
) -> None:
    tombstone = await dead_letter(referral_db, Record(topics.CRIME_EVENTS, 1, 7, b"REF/1", None), None)

    refused = await rj(system, "replay", tombstone)
    assert refused.code != 0 and "tombstone" in refused.err
    unknown = await rj(system, "replay", "no-such-letter")
    assert unknown.code != 0 and "no dead letter 'no-such-letter'" in unknown.err
    assert (await rj(system, "show", "no-such-letter")).code != 0
    assert (await rj(system, "show", tombstone, "--json")).json()["replays"] == 0


async def test_a_letter_whose_event_was_dead_lettered_again_from_a_later_copy_points_at_that_letter(
    system: System, referral_db: asyncpg.Connection
) -> None:
    event_id = str(uuid.uuid4())
    value = json.dumps({"id": event_id, "type": "crime.outcome-recorded"}).encode()
    first = await dead_letter(referral_db, Record(topics.CRIME_EVENTS, 2, 10, b"REF/2", value), event_id)
    # Replayed before the fix was complete: the copy was dead-lettered again, and now holds the claim.
    await referral_db.execute("DELETE FROM referral.inbox WHERE event_id = $1", event_id)
    second = await dead_letter(referral_db, Record(topics.CRIME_EVENTS, 2, 99, b"REF/2", value), event_id)

    with pytest.raises(ReplayRefused, match=f"replay {second} instead"):
        await replay_dead_letter(referral_db, system.settings, first, SERVICES)
    position = await referral_db.fetchval("SELECT position FROM referral.inbox WHERE event_id = $1", event_id)
    assert position == f"{topics.CRIME_EVENTS}:2:99", "the later letter keeps its claim"

    done = await replay_dead_letter(referral_db, system.settings, second, SERVICES)
    assert done.outcome == "released" and done.sent_to is not None
    assert done.sent_to.startswith(f"{topics.CRIME_EVENTS}:2:"), "the copy goes to the partition the original came from"
    assert await referral_db.fetchval("SELECT count(*) FROM referral.inbox WHERE event_id = $1", event_id) == 0


async def test_a_letter_older_than_the_retention_window_allows_is_replayed_only_when_the_operator_insists(
    system: System, referral_db: asyncpg.Connection
) -> None:
    value = json.dumps({"id": "never-claimed", "type": "crime.outcome-recorded"}).encode()
    letter = await dead_letter(referral_db, Record(topics.CRIME_EVENTS, 0, 5, None, value), "never-claimed", False)
    old = datetime.now(UTC) - timedelta(seconds=system.settings.retention_window_s * 0.95)
    await referral_db.execute("UPDATE referral.dead_letters SET dead_lettered_at = $1 WHERE id = $2", old, letter)

    refused = await rj(system, "replay", letter)
    assert refused.code != 0 and "retention window" in refused.err
    assert (await rj(system, "show", letter, "--json")).json()["replays"] == 0

    insisted = await rj(system, "replay", letter, "--past-window", "--json")
    assert insisted.code == 0, insisted.err
    assert insisted.json()["outcome"] == "unclaimed" and insisted.json()["sent_to"] == f"{topics.CRIME_EVENTS}:0:0"
    reader = await system.reader(topics.CRIME_EVENTS)
    assert [(k, v) for _, k, v in await read_all(reader)] == [(None, value)]
