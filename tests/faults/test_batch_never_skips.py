"""The batch processor against the real PostgreSQL, fed the records that used to escape a batch.

Each finding of the review of Backbone 1 is reproduced here: records that made the batch body raise
(faust then acked the whole batch), dead letters that could not be written, infrastructure errors
taken for bad data, newer versions skipped, repeated commands left unanswered.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import asyncpg
import pytest
from pydantic import AwareDatetime

from demo import samples
from schemas import topics
from schemas.commands import Command
from schemas.envelope import CloudEvent, new_event
from schemas.registry import REGISTRY, Registry
from services.runtime.db import create_pool, is_data_fault, migrate
from services.runtime.deadletters import DEAD_LETTER_COPY_BYTES
from services.runtime.devstack import create_database, database_name, drop_database
from services.runtime.outbox import Outgoing
from services.runtime.processor import BatchProcessor
from services.runtime.records import Record
from services.runtime.settings import Settings

pytestmark = pytest.mark.integration

SERVICE = "referral"  # the steward of crime.events and rj.commands, and the owner of its commands
SCHEMA = "probe"


@pytest.fixture
async def database(pg_server: str) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    name = f"rj_test_{uuid.uuid4().hex[:10]}"
    url = await create_database(pg_server, name)
    pool = await create_pool(Settings(database_url=url, db_pool_size=2))
    async with pool.acquire() as conn:
        await migrate(conn, SCHEMA, None)
        # A stand-in for a service's state: text columns refuse NUL, as the real ones do.
        await conn.execute(f"CREATE TABLE {SCHEMA}.state (event_id text PRIMARY KEY, subject text NOT NULL)")
    yield url, pool
    await pool.close()
    await drop_database(pg_server, name)


class StoringHandler:
    """Writes each event's subject to a text column, as real handlers do, and answers one fact each."""

    def __init__(self) -> None:
        self.applied: list[str] = []

    async def __call__(self, conn: asyncpg.Connection, events: Sequence[CloudEvent[Any]]) -> list[Outgoing]:
        await conn.executemany(
            f"INSERT INTO {SCHEMA}.state (event_id, subject) VALUES ($1, $2)", [(e.id, e.subject) for e in events]
        )
        self.applied += [e.id for e in events]
        return [Outgoing(f"out-{e.id}", topics.REFERRAL, e.subject, b"{}") for e in events]


def processor(pool: asyncpg.Pool, handler: StoringHandler, registry: Registry = REGISTRY) -> BatchProcessor:
    consumes = frozenset({"crime.recorded", "rj.victim-information.record-provided", "rj.facilitator.register"})
    return BatchProcessor(
        service=SERVICE,
        schema=SCHEMA,
        pool=pool,
        registry=registry,
        consumes=consumes,
        handler=handler,
        max_backoff_s=0.05,
    )


class Feed:
    """Records at consecutive offsets of one partition, as a consumer hands them over."""

    def __init__(self, topic: str = topics.CRIME_EVENTS) -> None:
        self.topic = topic
        self.offset = 0

    def __call__(self, value: bytes | None, key: bytes | None = b"k") -> Record:
        self.offset += 1
        return Record(self.topic, 0, self.offset, key, value)

    def crime(self, ref: str, event_id: str | None = None) -> Record:
        return self(samples.upstream_event(samples.crime_recorded(ref), event_id=event_id), ref.encode())


async def dead_letters(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch(f'SELECT * FROM {SCHEMA}.dead_letters ORDER BY "offset"')


async def outbox(pool: asyncpg.Pool, topic: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(f"SELECT value FROM {SCHEMA}.outbox WHERE topic = $1 ORDER BY id", topic)
    return [json.loads(r["value"]) for r in rows]


def facilitator_in_zone(zone: str) -> bytes:
    _, _, value = samples.facilitators("F-1")[0]
    document = json.loads(value)
    document["data"]["timezone"] = zone
    return json.dumps(document).encode()


async def test_records_that_used_to_escape_a_batch_are_dead_lettered_and_every_good_one_applied(
    database: tuple[str, asyncpg.Pool],
) -> None:
    _, pool = database
    handler = StoringHandler()
    feed = Feed()
    good = [feed.crime(f"WM/{i}", f"good-{i}") for i in range(6)]
    commands = Feed(topics.COMMANDS)
    bad_records = [
        feed(None),  # a tombstone
        feed(b'{"specversion": "1.0", "type": "crime.rec\xffrded", "id": "x"}'),  # invalid UTF-8 inside `type`
        feed(b"\x00\x01binary"),
        feed(b"[" * 100_000 + b"]" * 100_000),  # nesting deeper than any parser's stack
        feed(b'"just a string"'),
        commands(facilitator_in_zone("Europe"), b"F-1"),  # ZoneInfo("Europe") raises IsADirectoryError
        feed.crime("WM/NUL\x00REF"),  # parses; PostgreSQL refuses NUL in text (SQLSTATE 22021)
    ]
    batch = [good[0], *bad_records[:3], good[1], good[2], *bad_records[3:], *good[3:]]

    await processor(pool, handler).process(batch)

    assert handler.applied == [f"good-{i}" for i in range(6)]
    letters = await dead_letters(pool)
    assert [(r["source_topic"], r["offset"]) for r in letters] == sorted(
        [(r.topic, r.offset) for r in bad_records], key=lambda t: t[1]
    )
    reasons = {r["offset"]: r["reason"] for r in letters}
    assert "tombstone" in reasons[bad_records[0].offset]
    assert "not JSON" in reasons[bad_records[1].offset]
    assert "unknown time zone 'Europe'" in reasons[bad_records[5].offset]
    assert "CharacterNotInRepertoire" in reasons[bad_records[6].offset] or "0x00" in reasons[bad_records[6].offset]
    # Whatever the bytes were, the whole original is kept, and its Kafka copy is there too.
    for row, record in zip(letters, sorted(bad_records, key=lambda r: r.offset), strict=True):
        assert row["original"] == record.value
    on_kafka = await outbox(pool, topics.DEADLETTER)
    assert len(on_kafka) == len(bad_records)


async def test_a_malformed_command_is_dead_lettered_and_answered_by_its_owner(
    database: tuple[str, asyncpg.Pool],
) -> None:
    _, pool = database
    owner = processor(pool, StoringHandler())
    owner.service = "scheduling"  # the owner of rj.facilitator.register
    await owner.process([Feed(topics.COMMANDS)(facilitator_in_zone("Europe"), b"F-1")])

    (letter,) = await dead_letters(pool)
    (rejected,) = [e for e in await outbox(pool, topics.SCHEDULING) if e.get("type") == "rj.command.rejected"]
    assert "unknown time zone 'Europe'" in letter["reason"]
    assert "unknown time zone 'Europe'" in rejected["data"]["reason"] and rejected["subject"] == "F-1"


async def test_a_record_too_big_for_a_dead_letter_on_kafka_is_kept_whole_and_copied_in_part(
    database: tuple[str, asyncpg.Pool],
) -> None:
    _, pool = database
    feed = Feed()
    huge = feed(b'{"type": "crime.recorded", "data": "' + b"x" * 900_000 + b'"}')
    await processor(pool, StoringHandler()).process([huge])

    (row,) = await dead_letters(pool)
    assert row["original"] == huge.value
    (letter,) = await outbox(pool, topics.DEADLETTER)
    assert letter["truncated"] is True and letter["original_size"] == len(huge.value or b"")
    assert len(letter["original_b64"]) <= DEAD_LETTER_COPY_BYTES * 4 // 3 + 4
    assert letter["stored_as"] == f"{SCHEMA}.dead_letters/{row['id']}"


async def test_a_key_that_postgresql_cannot_store_still_makes_a_dead_letter(database: tuple[str, asyncpg.Pool]) -> None:
    _, pool = database
    feed = Feed()
    await processor(pool, StoringHandler()).process([feed(b"{oops", key=b"bad\x00key\xff")])

    (row,) = await dead_letters(pool)
    assert row["key"] == b"bad\x00key\xff"


@pytest.mark.parametrize(
    ("sqlstate", "data_fault"),
    [
        ("53100", False),  # disk full
        ("53200", False),  # out of memory
        ("25006", False),  # read-only transaction (a failover)
        ("55P03", False),  # lock not available (lock timeout)
        ("57P01", False),  # admin shutdown
        ("XX000", False),  # internal error: not the data's fault as far as we can tell
        ("22021", True),  # bad byte sequence (NUL in text)
        ("22003", True),  # number out of range
        ("23505", True),  # unique violation
        ("54000", True),  # program limit exceeded: a key too long to index
    ],
)
def test_only_errors_in_the_data_are_permanent(sqlstate: str, data_fault: bool) -> None:
    error = asyncpg.PostgresError.new({"C": sqlstate, "M": "simulated", "S": "ERROR"})
    assert is_data_fault(error) is data_fault


@pytest.mark.parametrize(
    ("error", "data_fault"),
    [
        (ValueError("bad value"), True),
        (RecursionError("too deep"), True),
        (asyncpg.exceptions._base.DataError("cannot encode"), True),  # text asyncpg cannot send
        (asyncpg.exceptions.ClientConfigurationError("bad sslrootcert"), False),  # a ValueError, not the data's
        (TypeError("a bug in a new deploy"), False),  # retried (and alerted on) until it is fixed
        (AttributeError("a bug"), False),
        (MemoryError(), False),
    ],
)
def test_a_bug_or_a_misconfiguration_is_retried_and_only_bad_data_is_dead_lettered(
    error: BaseException, data_fault: bool
) -> None:
    assert is_data_fault(error) is data_fault


async def test_a_read_only_database_holds_the_batch_until_it_is_writable_and_dead_letters_nothing(
    database: tuple[str, asyncpg.Pool], pg_server: str
) -> None:
    url, pool = database
    name = database_name(url)
    feed = Feed()
    batch = [feed.crime(f"WM/{i}", f"ro-{i}") for i in range(3)] + [feed(b"{not json")]
    admin = await asyncpg.connect(pg_server)
    handler = StoringHandler()
    try:
        await admin.execute(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
        await pool.expire_connections()  # new connections take the setting
        work = asyncio.create_task(processor(pool, handler).process(batch))
        await asyncio.sleep(1.0)
        assert not work.done() and handler.applied == []  # held, retrying: neither applied nor skipped
        await admin.execute(f"ALTER DATABASE {name} SET default_transaction_read_only = off")
        await pool.expire_connections()
        await asyncio.wait_for(work, 30)
    finally:
        await admin.execute(f"ALTER DATABASE {name} RESET default_transaction_read_only")
        await admin.close()
    assert handler.applied == ["ro-0", "ro-1", "ro-2"]
    assert len(await dead_letters(pool)) == 1  # only the record that is not JSON


PROVIDED_AT = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


class GiveNote(Command):
    """A command type whose v2 adds a field; v1 of this build cannot read v2."""

    event_type: ClassVar[str] = "rj.victim-information.record-provided"
    version: ClassVar[int] = 2

    person_id: str
    provided_at: AwareDatetime
    note: str


def newer(event_id: str, case: str) -> bytes:
    return new_event(
        GiveNote(case_id=case, actor=samples.STAFF, person_id="V", provided_at=PROVIDED_AT, note="by phone"),
        source="urn:test",
        subject=case,
        event_id=event_id,
    ).to_json()


def current(event_id: str, case: str, reason: str | None = None) -> bytes:
    from schemas.commands import RecordVictimInformationProvided

    data = RecordVictimInformationProvided(
        case_id=case, actor=samples.STAFF, person_id="V", provided_at=PROVIDED_AT, reason=reason
    )
    return new_event(data, source="urn:test", subject=case, event_id=event_id).to_json()


async def test_an_event_newer_than_the_service_parks_its_case_in_order_until_the_upgrade(
    database: tuple[str, asyncpg.Pool],
) -> None:
    _, pool = database
    feed = Feed(topics.COMMANDS)
    batch = [
        feed(current("a-1", "case-A"), b"case-A"),
        feed(newer("a-2", "case-A"), b"case-A"),
        feed(current("b-1", "case-B"), b"case-B"),
        feed(current("a-3", "case-A"), b"case-A"),
    ]
    handler = StoringHandler()
    await processor(pool, handler).process(batch[:3])
    await processor(pool, handler).process(batch[3:])  # a later batch: still behind the parked one

    assert handler.applied == ["a-1", "b-1"]
    parked = await pool.fetch(f"SELECT case_key, value FROM {SCHEMA}.parked ORDER BY seq")
    assert [r["case_key"] for r in parked] == ["case-A", "case-A"]
    assert await dead_letters(pool) == []
    assert await processor(pool, handler).release_parked() == 0  # the same version still cannot read it

    # The upgrade: this build knows v2 (and reads v1 through an upcaster).
    upgraded = Registry([m for t, m in REGISTRY.models.items() if t != GiveNote.event_type] + [GiveNote])
    upgraded.upcaster(GiveNote.event_type, 1)(lambda data: {**data, "note": ""})
    assert await processor(pool, handler, upgraded).release_parked() == 2

    assert handler.applied == ["a-1", "b-1", "a-2", "a-3"]
    assert await pool.fetchval(f"SELECT count(*) FROM {SCHEMA}.parked") == 0
    # Once released, the case flows again.
    await processor(pool, handler, upgraded).process([feed(current("a-4", "case-A"), b"case-A")])
    assert handler.applied[-1] == "a-4"


async def test_a_repeated_command_is_answered_and_a_redelivered_one_is_not(database: tuple[str, asyncpg.Pool]) -> None:
    _, pool = database
    feed = Feed(topics.COMMANDS)
    first = feed(current("cmd-1", "case-R"), b"case-R")
    again = feed(current("cmd-1", "case-R"), b"case-R")  # the UI sent it again: same id, new offset
    handler = StoringHandler()
    await processor(pool, handler).process([first])
    await processor(pool, handler).process([first])  # redelivered after a crash: not a repeat to answer
    await processor(pool, handler).process([again])

    assert handler.applied == ["cmd-1"]
    answers = [e for e in await outbox(pool, topics.REFERRAL) if e.get("type") == "rj.command.already-handled"]
    assert len(answers) == 1
    assert answers[0]["data"]["command_id"] == "cmd-1" and answers[0]["subject"] == "case-R"


async def test_an_unknown_command_type_is_rejected_by_the_steward_and_passed_over_by_the_others(
    database: tuple[str, asyncpg.Pool],
) -> None:
    _, pool = database
    unknown = json.loads(current("cmd-x", "case-U"))
    unknown["type"] = "rj.case.teleport"
    record = Feed(topics.COMMANDS)(json.dumps(unknown).encode(), b"case-U")

    await processor(pool, StoringHandler()).process([record])
    other = BatchProcessor(
        service="consent",  # not the steward of rj.commands
        schema=SCHEMA,
        pool=pool,
        registry=REGISTRY,
        consumes=frozenset(),
        handler=StoringHandler(),
    )
    await other.process([record, Record(topics.COMMANDS, 0, 99, None, None)])

    (answer,) = await outbox(pool, topics.REFERRAL)
    assert (
        answer["type"] == "rj.command.rejected"
        and "unknown command type 'rj.case.teleport'" in answer["data"]["reason"]
    )
    assert await dead_letters(pool) == []


def test_every_command_type_has_one_owner_that_consumes_it() -> None:
    from schemas.registry import COMMAND_OWNER
    from services.consent.app import CONSUMES as CONSENT
    from services.notify.app import CONSUMES as NOTIFY
    from services.privacy.app import CONSUMES as PRIVACY
    from services.referral.app import CONSUMES as REFERRAL
    from services.scheduling.domain import CONSUMES as SCHEDULING

    consumed = {
        "referral": REFERRAL,
        "consent": CONSENT,
        "scheduling": SCHEDULING,
        "privacy": PRIVACY,
        "notify": NOTIFY,
    }
    # Every Command is owned (registrations, which are not about a case, are owned too).
    assert {t for t, m in REGISTRY.models.items() if issubclass(m, Command)} <= set(COMMAND_OWNER)
    for command_type, owner in COMMAND_OWNER.items():
        assert command_type in consumed[owner], f"{owner} owns {command_type} but does not consume it"


async def test_a_repeated_registration_is_answered_on_its_subject(database: tuple[str, asyncpg.Pool]) -> None:
    _, pool = database
    feed = Feed(topics.COMMANDS)
    _, key, value = samples.facilitators("F-9")[0]
    owner = processor(pool, StoringHandler())
    owner.service = "scheduling"
    await owner.process([feed(value, key.encode())])
    await owner.process([feed(value, key.encode())])  # the UI sent it again

    (answer,) = [e for e in await outbox(pool, topics.SCHEDULING) if e.get("type") == "rj.command.already-handled"]
    assert answer["subject"] == "F-9" and answer["data"]["command_type"] == "rj.facilitator.register"
    assert await dead_letters(pool) == []


class FailingHandler(StoringHandler):
    async def __call__(self, conn: asyncpg.Connection, events: Sequence[CloudEvent[Any]]) -> list[Outgoing]:
        if any(e.id == "doomed" for e in events):
            raise ValueError("the domain cannot take this command")
        return await super().__call__(conn, events)


async def test_a_command_that_cannot_be_applied_is_dead_lettered_and_its_sender_answered(
    database: tuple[str, asyncpg.Pool],
) -> None:
    _, pool = database
    feed = Feed(topics.COMMANDS)
    handler = FailingHandler()
    await processor(pool, handler).process(
        [feed(current("doomed", "case-D"), b"case-D"), feed(current("ok", "case-D"))]
    )

    assert handler.applied == ["ok"]
    (letter,) = await dead_letters(pool)
    assert letter["event_id"] == "doomed"
    (rejected,) = [e for e in await outbox(pool, topics.REFERRAL) if e.get("type") == "rj.command.rejected"]
    assert rejected["data"]["command_id"] == "doomed" and "cannot take this command" in rejected["data"]["reason"]


async def test_a_case_still_too_new_does_not_hold_back_the_release_of_others(
    database: tuple[str, asyncpg.Pool],
) -> None:
    _, pool = database
    feed = Feed(topics.COMMANDS)
    far_future = json.loads(newer("z-1", "case-Z"))
    far_future["dataschema"] = far_future["dataschema"].replace(":v2", ":v9")
    handler = StoringHandler()
    await processor(pool, handler).process(
        [
            feed(json.dumps(far_future).encode(), b"case-Z"),  # parked first: even the upgrade cannot read v9
            feed(newer("y-1", "case-Y"), b"case-Y"),
        ]
    )
    upgraded = Registry([m for t, m in REGISTRY.models.items() if t != GiveNote.event_type] + [GiveNote])
    assert await processor(pool, handler, upgraded).release_parked(limit=1) == 1

    assert handler.applied == ["y-1"]
    assert [r["case_key"] for r in await pool.fetch(f"SELECT case_key FROM {SCHEMA}.parked")] == ["case-Z"]


async def test_keyless_records_do_not_wait_behind_a_keyless_parked_one(database: tuple[str, asyncpg.Pool]) -> None:
    _, pool = database
    feed = Feed(topics.COMMANDS)
    handler = StoringHandler()
    await processor(pool, handler).process([feed(newer("n-1", "case-N"), None), feed(current("n-2", "case-M"), None)])

    assert handler.applied == ["n-2"]
    assert await pool.fetchval(f"SELECT count(*) FROM {SCHEMA}.parked") == 1


async def test_a_key_too_long_to_index_still_parks_by_its_hash(database: tuple[str, asyncpg.Pool]) -> None:
    _, pool = database
    key = b"k" * 10_000
    await processor(pool, StoringHandler()).process([Feed(topics.COMMANDS)(newer("l-1", "case-L"), key)])

    (row,) = await pool.fetch(f"SELECT case_key, key FROM {SCHEMA}.parked")
    assert row["case_key"].startswith("sha256:") and row["key"] == key


async def test_a_case_released_in_parts_keeps_its_order(database: tuple[str, asyncpg.Pool]) -> None:
    _, pool = database
    feed = Feed(topics.COMMANDS)
    handler = StoringHandler()
    await processor(pool, handler).process(
        [feed(newer("p-1", "case-P"), b"case-P"), feed(current("p-2", "case-P"), b"case-P")]
        + [feed(current("p-3", "case-P"), b"case-P")]
    )
    upgraded = Registry([m for t, m in REGISTRY.models.items() if t != GiveNote.event_type] + [GiveNote])
    upgraded.upcaster(GiveNote.event_type, 1)(lambda data: {**data, "note": ""})
    assert await processor(pool, handler, upgraded).release_parked(limit=2) == 2  # p-3 still parked behind
    assert await processor(pool, handler, upgraded).release_parked(limit=2) == 1

    assert handler.applied == ["p-1", "p-2", "p-3"]
    assert await pool.fetchval(f"SELECT count(*) FROM {SCHEMA}.parked") == 0
