"""Dead letters: what a service could not process, kept whole in its ``dead_letters`` table (bytea, with
a SHA-256) and copied, bounded, onto ``rj.deadletter`` with a pointer to the row; and, after a fix, an
operator's replay of a letter's original onto its source topic (``rj deadletters``)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

import asyncpg
import structlog

from schemas import topics
from schemas.deadletter import DeadLetter
from schemas.envelope import derived_event_id
from services.runtime import metrics, privacy
from services.runtime.kafka import publish_raw
from services.runtime.outbox import Outgoing
from services.runtime.records import Record, printable
from services.runtime.settings import Settings

log = structlog.get_logger()

#: The most of a dead record's bytes copied onto ``rj.deadletter``; the whole is kept in PostgreSQL.
DEAD_LETTER_COPY_BYTES = 64 * 1024


def letter_context(letter_id: str) -> bytes:
    """What a dead letter's sealed original is bound to."""
    return f"dead-letter:{letter_id}".encode()


def copy_context(letter_id: str) -> bytes:
    """What the sealed copy on ``rj.deadletter`` is bound to."""
    return f"rj.deadletter:{letter_id}".encode()


class Letter(Protocol):
    @property
    def record(self) -> Record: ...
    @property
    def reason(self) -> str: ...
    @property
    def event_id(self) -> str | None: ...
    @property
    def event_type(self) -> str | None: ...


async def store_dead_letters(
    conn: asyncpg.Connection, schema: str, service: str, letters: Sequence[Letter]
) -> list[Outgoing]:
    """Keep each letter's whole original in ``dead_letters`` and return its bounded copy for ``rj.deadletter``.
    Every text is made printable and bounded, so that writing a dead letter cannot fail for its data."""
    if not letters:
        return []
    rows, outgoing = [], []
    keys = privacy.batch()
    for item in letters:
        record = item.record
        letter_id = derived_event_id("dead-letter", service, record.topic, str(record.partition), str(record.offset))
        original = record.value or b""
        digest = hashlib.sha256(original).hexdigest()
        reason = printable(item.reason)[:4000]
        event_id = printable(item.event_id)[:200] if item.event_id else None
        event_type = printable(item.event_type)[:200] if item.event_type else None
        # Kept sealed whole: a record we could not read may still hold a victim's details.
        stored = None if record.value is None else await keys.seal_bytes(conn, record.value, letter_context(letter_id))
        rows.append((letter_id, record.topic, record.partition, record.offset, record.key, stored, digest,
                     reason, event_id, event_type))  # fmt: skip
        copy = original[:DEAD_LETTER_COPY_BYTES]
        copied = await keys.seal_bytes(conn, copy, copy_context(letter_id))
        letter = DeadLetter(
            id=letter_id,
            service=service,
            reason=reason,
            source_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key_b64=base64.b64encode(record.key[:DEAD_LETTER_COPY_BYTES]).decode() if record.key else None,
            original_b64=base64.b64encode(copied).decode(),
            sealed=keys.enabled,
            original_size=len(record.value) if record.value is not None else None,
            original_sha256=digest,
            truncated=len(copy) < len(original),
            stored_as=f"{schema}.dead_letters/{letter_id}",
            event_id=event_id,
            event_type=event_type,
            dead_lettered_at=datetime.now(UTC),
        )
        outgoing.append(
            Outgoing(letter_id, topics.DEADLETTER, record.case_key[:200] or None, letter.model_dump_json().encode())
        )
        metrics.DEAD_LETTERS.labels(topic=record.topic).inc()
        log.warning("dead_lettered", service=service, position=record.position, reason=reason[:300])
    await conn.executemany(
        f"""INSERT INTO {schema}.dead_letters (id, source_topic, partition, "offset", key, original,
                original_sha256, reason, event_id, event_type)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING""",
        rows,
    )
    return outgoing


# --- reading dead letters back, and replaying them ------------------------------------------------

#: How much of an original ``show`` and ``list`` read (and preview); a replay sends it whole.
PREVIEW_BYTES = 2048

#: A letter older than this share of the retention window is not replayed unless the operator insists:
#: other services reading its topic may have pruned its id from their inboxes and would apply it again.
REPLAY_WINDOW_SHARE = 0.9


class DeadLetterError(Exception):
    """What an operator asked of a dead letter cannot be done; the message says why."""


class UnknownDeadLetter(DeadLetterError):
    pass


class ReplayRefused(DeadLetterError):
    pass


class ReplayNotSent(DeadLetterError):
    """The replay was recorded (and the letter's inbox claim released) but its record was not sent."""


@dataclass(frozen=True)
class StoredLetter:
    """A dead letter as its service keeps it, with the head of its original and where the inbox now has
    its event id as taken in."""

    service: str  # also the schema it lives in
    id: str
    source_topic: str
    partition: int
    offset: int
    key: bytes | None
    head: bytes  # the first PREVIEW_BYTES of the original
    size: int | None  # None: a tombstone
    original_sha256: str
    reason: str
    event_id: str | None
    event_type: str | None
    dead_lettered_at: datetime
    replays: int
    replayed_at: datetime | None
    replayed_to: str | None  # where the last replay's copy went; None if it was never confirmed sent
    claimed_at: str | None  # the inbox position of its event id, if the inbox has it
    erased: bool = False  # its original was sealed under a day's key that retention has destroyed

    @property
    def position(self) -> str:
        return f"{self.source_topic}:{self.partition}:{self.offset}"

    @property
    def tombstone(self) -> bool:
        return self.size is None and not self.erased

    @property
    def claim(self) -> str:
        """What the inbox says about the letter's event id, in words."""
        if self.event_id is None:
            return "no event id was read from it"
        if self.claimed_at is None:
            return "not in the inbox"
        if self.claimed_at == self.position:
            return "claimed by this letter (a copy of it would be dropped as a repeat until it is replayed)"
        return f"taken in from {self.claimed_at}"

    def preview(self, limit: int = 400) -> str:
        if self.erased:
            return "(erased: its day's key was destroyed when its retention ran out)"
        if self.size is None:
            return "(a tombstone: no value)"
        text = printable_preview(self.head[:limit])
        return text + (f"... ({self.size - limit} more bytes)" if self.size > limit else "")

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "service": self.service,
            "source_topic": self.source_topic,
            "partition": self.partition,
            "offset": self.offset,
            "position": self.position,
            "key": printable_preview(self.key) if self.key is not None else None,
            "size": self.size,
            "original_sha256": self.original_sha256,
            "reason": self.reason,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "dead_lettered_at": self.dead_lettered_at.isoformat(),
            "replayed": self.replays > 0,
            "replays": self.replays,
            "replayed_at": self.replayed_at.isoformat() if self.replayed_at else None,
            "replayed_to": self.replayed_to,
            "inbox_claim": self.claimed_at,
            "preview": self.preview(PREVIEW_BYTES),
        }


def printable_preview(data: bytes) -> str:
    """``data`` as text safe for a terminal: UTF-8 where it is, escapes for other bytes and for control
    characters (a poison record may carry terminal escape sequences)."""
    return terminal_safe(data.decode("utf-8", "backslashreplace"))


def terminal_safe(text: str) -> str:
    """``text`` with every control character but a newline escaped (``\\x1b``)."""
    return "".join(c if c.isprintable() or c == "\n" else c.encode("unicode_escape").decode() for c in text)


def _select(schema: str) -> str:
    return f"""SELECT d.id, d.source_topic, d.partition, d."offset", d.key,
                      d.original,
                      d.original_sha256, d.reason, d.event_id, d.event_type, d.dead_lettered_at,
                      d.replays, d.replayed_at, d.replayed_to, i.position AS claimed_at
               FROM {schema}.dead_letters d LEFT JOIN {schema}.inbox i ON i.event_id = d.event_id"""


async def _letter(conn: asyncpg.Connection, schema: str, row: asyncpg.Record) -> StoredLetter:
    """The letter of ``row``, its original opened (it is kept sealed whole)."""
    stored: bytes | None = row["original"]
    original = None if stored is None else await privacy.batch().open_bytes(conn, stored, letter_context(row["id"]))
    return StoredLetter(
        service=schema,
        id=row["id"],
        source_topic=row["source_topic"],
        partition=row["partition"],
        offset=row["offset"],
        key=row["key"],
        head=(original or b"")[:PREVIEW_BYTES],
        size=None if stored is None else len(original) if original is not None else None,
        erased=stored is not None and original is None,
        original_sha256=row["original_sha256"],
        reason=row["reason"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        dead_lettered_at=row["dead_lettered_at"],
        replays=row["replays"],
        replayed_at=row["replayed_at"],
        replayed_to=row["replayed_to"],
        claimed_at=row["claimed_at"],
    )


async def _fetch(conn: asyncpg.Connection, schema: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Rows of a service's letters; none when the service never ran here (no schema yet)."""
    if await conn.fetchval("SELECT to_regclass($1)", f"{schema}.dead_letters") is None:
        return []
    try:
        return await conn.fetch(sql, *args)
    except asyncpg.UndefinedColumnError as exc:
        raise DeadLetterError(
            f"the {schema} schema has no replay columns yet (migration runtime/003_dead_letter_replays.sql): "
            "run `rj migrate`, or start the service at this version"
        ) from exc


async def list_dead_letters(
    conn: asyncpg.Connection, services: Sequence[str], *, limit: int = 100
) -> list[StoredLetter]:
    """The newest ``limit`` dead letters of ``services``, newest first."""
    letters = [
        await _letter(conn, schema, row)
        for schema in services
        for row in await _fetch(conn, schema, f"{_select(schema)} ORDER BY d.dead_lettered_at DESC LIMIT $1", limit)
    ]
    return sorted(letters, key=lambda letter: letter.dead_lettered_at, reverse=True)[:limit]


async def find_dead_letter(conn: asyncpg.Connection, letter_id: str, services: Sequence[str]) -> StoredLetter | None:
    """The letter ``letter_id`` of whichever of ``services`` holds it (its id names the service)."""
    for schema in services:
        rows = await _fetch(conn, schema, f"{_select(schema)} WHERE d.id = $1", letter_id)
        if rows:
            return await _letter(conn, schema, rows[0])
    return None


@dataclass(frozen=True)
class Replay:
    """What a replay did. ``released``: the letter's inbox claim was released and the original sent;
    ``unclaimed``: there was no claim to release (no event id, or written without one), the original was
    sent; ``applied_elsewhere``: another copy of the event id was taken in since, so nothing was done."""

    letter: StoredLetter
    outcome: Literal["released", "unclaimed", "applied_elsewhere"]
    claim: str | None = None  # applied_elsewhere: the inbox position of the copy taken in
    sent_to: str | None = None  # where the replayed copy went

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.letter.id,
            "service": self.letter.service,
            "event_id": self.letter.event_id,
            "outcome": self.outcome,
            "replayed": self.sent_to is not None,
            "inbox_claim": self.claim,
            "sent_to": self.sent_to,
        }


async def replay_dead_letter(
    conn: asyncpg.Connection,
    settings: Settings,
    letter_id: str,
    services: Sequence[str],
    *,
    past_window: bool = False,
) -> Replay:
    """Send a dead letter's original bytes (and key) again to its source topic and partition, so that its
    service processes it again after a fix.

    First, in one transaction, the letter's event id is released from the inbox, but only where the
    inbox took it in from this very record (a copy of that id taken in since was applied, or dead-lettered
    as another letter, and stays), and the replay is recorded; only then is the record sent (acks=all),
    so the copy can never meet its own claim and be dropped as a repeat. If a copy was applied since,
    nothing is sent: it would be dropped anyway, and a command sent again is answered "already handled".

    Raises ``UnknownDeadLetter``, ``ReplayRefused`` (a tombstone; an id held by a later letter; a letter
    too old for the retention window, unless ``past_window``), ``ReplayNotSent`` (recorded, not sent)."""
    letter = await find_dead_letter(conn, letter_id, services)
    if letter is None:
        raise UnknownDeadLetter(f"no dead letter {letter_id!r} in any of: {', '.join(services)}")
    schema = letter.service
    if letter.erased:
        raise ReplayRefused(f"dead letter {letter_id} is past its retention: its original is erased")
    if letter.tombstone:
        raise ReplayRefused(f"dead letter {letter_id} is a tombstone (a record with no value): nothing to replay")
    too_old = timedelta(seconds=settings.retention_window_s * REPLAY_WINDOW_SHARE)
    if datetime.now(UTC) - letter.dead_lettered_at > too_old and not past_window:
        raise ReplayRefused(
            f"dead letter {letter_id} is older than {REPLAY_WINDOW_SHARE:.0%} of the retention window "
            f"({settings.retention_window_s:.0f} s): other services reading {letter.source_topic} may have pruned "
            "its event id and would apply the copy again; --past-window replays it all the same"
        )
    outcome: Literal["released", "unclaimed"] = "unclaimed"
    async with conn.transaction():
        row = await conn.fetchrow(
            f"SELECT key, original FROM {schema}.dead_letters WHERE id = $1 FOR UPDATE", letter_id
        )  # one replay of a letter at a time
        if row is None:
            raise UnknownDeadLetter(f"dead letter {letter_id!r} of {schema} is gone")
        original = await privacy.batch().open_bytes(conn, row["original"], letter_context(letter_id))
        if original is None:
            raise ReplayRefused(f"dead letter {letter_id} is past its retention: its original is erased")
        if letter.event_id is not None:
            released = await conn.fetchval(
                f"DELETE FROM {schema}.inbox WHERE event_id = $1 AND position = $2 RETURNING position",
                letter.event_id,
                letter.position,
            )
            if released:
                outcome = "released"
            else:
                claim = await conn.fetchval(f"SELECT position FROM {schema}.inbox WHERE event_id = $1", letter.event_id)
                if claim is not None:
                    return await _taken_in_since(conn, letter, claim)
        await conn.execute(
            f"UPDATE {schema}.dead_letters SET replays = replays + 1, replayed_at = now(), replayed_to = NULL "
            "WHERE id = $1",
            letter_id,
        )
    try:
        sent = await publish_raw(settings, [(letter.source_topic, row["key"], original, letter.partition)])
    except Exception as exc:
        log.error("dead_letter_replay_not_sent", service=schema, letter=letter_id, error=repr(exc))
        note = " and its inbox claim released" if outcome == "released" else ""
        raise ReplayNotSent(
            f"the replay of {letter_id} was recorded{note}, but sending it to {letter.source_topic} failed "
            f"({exc!r}): replay it again"
        ) from exc
    sent_to = sent[0].position
    await conn.execute(f"UPDATE {schema}.dead_letters SET replayed_to = $2 WHERE id = $1", letter_id, sent_to)
    log.warning(
        "dead_letter_replayed", service=schema, letter=letter_id, event_id=letter.event_id, outcome=outcome,
        position=letter.position, sent_to=sent_to,
    )  # fmt: skip
    return Replay(letter, outcome, sent_to=sent_to)


async def _taken_in_since(conn: asyncpg.Connection, letter: StoredLetter, claim: str) -> Replay:
    """The inbox has the letter's event id from another record: applied, or dead-lettered again."""
    holder = await conn.fetchval(
        f"""SELECT id FROM {letter.service}.dead_letters
            WHERE source_topic || ':' || partition || ':' || "offset" = $1 AND id <> $2""",
        claim,
        letter.id,
    )
    if holder is not None:
        raise ReplayRefused(
            f"event {letter.event_id} was dead-lettered again from a later copy at {claim} (dead letter {holder}), "
            f"which holds its inbox claim: replay {holder} instead"
        )
    log.info("dead_letter_replay_not_needed", service=letter.service, letter=letter.id, taken_in_from=claim)
    return Replay(letter, "applied_elsewhere", claim=claim)
