"""The audit service: every record of every topic appended once, raw, to the Merkle-tree log; a signed tree
head every ``audit_head_interval_s``, stored, published on rj.audit and handed to the witness file.

every topic (schemas.topics.ALL_TOPICS) ──► append (raw: tombstones, non-JSON, unknown types alike)
    ──► audit.entries, audit.subtrees, audit.tree_states (insert-only, as rj_audit_appender)
every audit_head_interval_s ──► sign_head ──► audit.signed_heads, outbox ──► rj.audit, the witness file
    (on rj.audit: rj.audit-entries.appended, the order of the entries since the last head, then rj.audit-head.signed)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas import topics
from schemas.audit import AuditEntriesAppended, AuditHeadSigned
from schemas.envelope import derived_event_id, new_event
from services.audit import canonical, heads, order, store
from services.runtime import privacy
from services.runtime.app import ServiceApp
from services.runtime.db import transaction
from services.runtime.outbox import Outgoing, write_outbox
from services.runtime.records import Record
from services.runtime.settings import Settings

log = structlog.get_logger()
SOURCE = "urn:rj:service:audit"


def sealed_context(record: Record) -> bytes:
    """What an upstream record's sealed copy is bound to (given again to open it)."""
    return f"audit:{record.topic}:{record.partition}:{record.offset}".encode()


async def appended(conn: asyncpg.Connection, record: Record) -> store.Appended:
    """The entry a record becomes: its canonical body, which its leaf commits to (``canonical.entry_body``: a
    function of the record alone, so that the tree can be rebuilt from the topics), and, for upstream's records
    (crime.events), the record itself sealed whole under the day's bucket key: they are not ours to split into
    fields, and they hold personal data, so the body is their digest. A tombstone has no value to seal or
    canonicalise: it is its own kind (``canonical.TOMBSTONE_KIND``), never the same entry as an empty value."""
    body = canonical.entry_body(record.topic, record.value)
    if record.value is None or record.topic not in canonical.KEPT_SEALED_WHOLE:
        return store.Appended(record, body)
    return store.Appended(record, body, await privacy.batch().seal_bytes(conn, record.value, sealed_context(record)))


async def append_batch(conn: asyncpg.Connection, records: Sequence[Record]) -> None:
    batch = [await appended(conn, record) for record in records]
    count = await store.append(conn, batch, datetime.now(UTC))
    log.debug("audit_appended", records=len(records), appended=count)


def signing_key(path: Path) -> Ed25519PrivateKey:
    """The log's key, made (0600) the first time it is asked for."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return heads.generate_signing_key(path)
        except FileExistsError:
            pass  # another process made it meanwhile
    return heads.load_signing_key(path)


def head_event(signed: heads.SignedTreeHead) -> Outgoing:
    """The head as a fact on rj.audit (``AuditHeadSigned``), keyed by the log id; its id is derived from the
    head's log, size and time, so a retried tick cannot publish one head twice."""
    head = signed.head
    document = signed.to_json()
    data = AuditHeadSigned(
        log_id=document["log_id"],
        tree_size=head.tree_size,
        timestamp_ms=head.timestamp_ms,
        root_hash=document["root_hash"],
        signature=document["signature"],
        format_version=document["version"],
    )
    log_id = head.log_id.hex()
    event = new_event(
        data,
        source=SOURCE,
        subject=log_id,
        event_id=derived_event_id(SOURCE, log_id, "head", str(head.tree_size), str(head.timestamp_ms)),
        time=datetime.fromtimestamp(head.timestamp_ms / 1000, UTC),
    )
    return Outgoing.event_of(topics.AUDIT, event)


def signed_head_of(data: AuditHeadSigned) -> heads.SignedTreeHead:
    """The signed tree head a head event carries (``heads.HeadFormatError`` if it is not one)."""
    return heads.SignedTreeHead.from_json(
        {
            "version": data.format_version,
            "log_id": data.log_id,
            "tree_size": data.tree_size,
            "timestamp_ms": data.timestamp_ms,
            "root_hash": data.root_hash,
            "signature": data.signature,
        }
    )


async def sign_head(conn: asyncpg.Connection, settings: Settings) -> tuple[heads.SignedTreeHead, list[Outgoing]]:
    """Sign the log's latest tree state, store the head and return it with what it owes the outbox: the order
    of the entries appended since the order was last published (``order``), then the head. Holds the log still
    meanwhile, so the order covers exactly the entries the head does. Once the transaction has committed, the
    caller hands the head to the witness (``witness``)."""
    await store.lock_log(conn)
    tree = await store.latest_tree(conn)
    key = signing_key(settings.audit_signing_key_file)
    signed = heads.sign_tree_head(key, tree.size, tree.root(), int(datetime.now(UTC).timestamp() * 1000))
    published = await store.order_published_up_to(conn)
    await store.store_head(conn, signed, order_from=published)
    placed = (order.Placed(*row) async for row in store.placed_leaves(conn, published, tree.size))
    appends = await order.appended_events_of(signed.head.log_id.hex(), published, placed)
    return signed, [*(order_event(signed, data) for data in appends), head_event(signed)]


def order_event(signed: heads.SignedTreeHead, data: AuditEntriesAppended) -> Outgoing:
    """Part of the order published with ``signed`` as a fact on rj.audit, keyed by the log id (so in order with
    the head), under an id derived from the entries it covers."""
    log_id = signed.head.log_id.hex()
    event = new_event(
        data,
        source=SOURCE,
        subject=log_id,
        event_id=derived_event_id(SOURCE, log_id, "entries", str(data.first_index), str(data.entries)),
        time=datetime.fromtimestamp(signed.head.timestamp_ms / 1000, UTC),
    )
    return Outgoing.event_of(topics.AUDIT, event)


def witness(path: Path, signed: Sequence[heads.SignedTreeHead]) -> None:
    """Append each signed head as one JSON line to the witness file (the file the data protection officer
    is handed). Written after the head's transaction commits: a head the log does not hold is never handed
    over; a crash in between only leaves one head out, which the next tick's head covers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(head.to_json(), sort_keys=True) + "\n" for head in signed]
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    with os.fdopen(descriptor, "a") as file:
        file.writelines(lines)
        file.flush()
        os.fsync(file.fileno())


class AuditService(ServiceApp):
    FOLLOWER = True

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__("audit", migrations="services.audit.migrations", settings=settings)
        self.consume_raw(topics.ALL_TOPICS, append_batch)
        self.faust.timer(self.settings.audit_head_interval_s, name="audit.sign_head")(self._sign_head)

    async def _sign_head(self) -> None:
        try:
            await sign_and_witness(await self.pool(), self.settings)
        except Exception as exc:  # the next tick tries again; a head is never half-made
            log.error("audit_head_failed", error=repr(exc))


async def sign_and_witness(pool: asyncpg.Pool, settings: Settings) -> heads.SignedTreeHead:
    async with transaction(pool) as conn:
        signed, outgoing = await sign_head(conn, settings)
        await write_outbox(conn, store.SCHEMA, outgoing)
    witness(settings.audit_witness_file, [signed])
    return signed


def build() -> AuditService:
    return AuditService()
