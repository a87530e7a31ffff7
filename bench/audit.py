"""Audit log benchmark: the issue's five figures, each printed beside its target (and, where one makes sense, the
machine's ceiling), and written as JSON.

    .venv/bin/python -m bench.audit                        # a 1,000,000-entry log, then the 40,000-event burst
    .venv/bin/python -m bench.audit --events 200000 --skip-lag

1. **verify**: ``verify_log`` over a log of ``--events`` entries as ``rj audit verify`` runs it, in worker
   processes (``services.audit.parallel``, one a core), beside it all in one process (target 300,000 entries/s or
   more). The log is built fast in a fresh database: synthetic records of every topic, with bodies shaped like ours
   (CloudEvents in RFC 8785 bytes with sealed personal values, ~1.5 KB for a case opened, ~0.5 KB for most;
   ``crime.events`` records sealed whole, as opaque bytes), leaves by ``merkle.entry_leaf_hash``, subtrees by
   ``CompactTree.append_with_subtrees``, a tree state per batch of 500 as the service stores them, all written
   with COPY; a signed head every 100,000 entries and one at the end. Before the log is written, its first
   2,000 records are appended through ``store.append`` itself (in a transaction rolled back after) and the rows
   compared with the builder's: the run stops if they differ. Beside it: the CPU an entry (from /proc: steadier
   than the wall clock on a shared machine; in one process, this process and its PostgreSQL backend; in parallel,
   this process, the workers, and the rest of the machine's busy CPU meanwhile), ``rj audit verify`` itself, and
   the ceiling, the same queries reading the same rows in one process and doing nothing with them.
2. **replay**: one case as ``rj audit replay`` reads and folds it (``replay.recorded_facts`` sealed,
   ``timeline_of``, ``state_at``), in process over an open connection (the command's own start-up, about a
   second of imports, is not in it); p50/p99 over ``--samples`` cases drawn at random, about 30 entries each,
   spread over the whole log (target p99 under 20 ms).
3. **export**: ``verify.export_case`` of the same cases (entries, inclusion proofs, the listing signed, the
   earlier heads with their consistency proofs); p50/p99 (target p99 under 50 ms).
4. **append**: ``store.append`` alone, batches of 500 (the service's ``BATCH_SIZE``) one transaction each, on
   top of the built log (target 10,000 entries/s or more).
5. **lag**: every service running (``services.catalog``) on a broker, a database and topics of the run's own; a
   burst of ``--burst`` upstream events (half ``crime.recorded``, half admitted outcomes, as bench/intake.py)
   published at once. The figure is the audit service's own lag: the moment from which every record published on
   any topic it follows (the other services' output included) is in the log within ``CAUGHT_UP_S`` (a follower
   polls every 500 ms) of its publication, measured record by record: each record's Kafka timestamp against the
   first moment the service's stored positions (``audit.consumer_positions``, sampled every 50 ms) pass its offset
   (target within 60 s). Beside it: when the other services wrote their last record, and when the log was level
   with every topic for good (it cannot be before: notify's emails set that moment), the emails notify sent (it is
   given a real SMTP server, aiosmtpd, quiet hours open as within a working day, and the participants' link key:
   the burst's victims are all told), and the ceiling, a plain aiokafka consumer reading every record of every
   topic from offset zero.

The figures go to ``--json`` (default ``.rj/bench/audit.json``) with the load average and core count. The run
exits 1 if a figure misses its target.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import contextlib
import gc
import json
import math
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import rfc8785
from aiokafka import AIOKafkaConsumer, TopicPartition
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from bench.intake import traffic
from bench.steady import Timestamped, catching_mail, machine_ticks, percentiles, running_stack
from schemas import topics
from schemas.referral import case_id_for
from services.api.issuer import LocalIssuer
from services.api.links import new_link_key
from services.audit import canonical, heads, merkle, replay, store
from services.audit.parallel import default_workers
from services.audit.verify import CHUNK, export_case, verify_log
from services.catalog import SERVICES
from services.runtime import privacy
from services.runtime.db import migrate
from services.runtime.devstack import database_for_run, ensure_postgres, free_port
from services.runtime.kafka import publish
from services.runtime.records import Record
from services.runtime.settings import Settings
from services.runtime.topicread import read_from_the_start

STATE = Path(".rj/bench")
BATCH = 500  # the runtime's BATCH_SIZE: one transaction, one tree state, as the service appends
HEAD_EVERY = 100_000
TWINS = 2_000
TARGETS = {
    "verify_entries_per_s": 300_000,
    "replay_p99_ms": 20.0,
    "export_p99_ms": 50.0,
    "append_entries_per_s": 10_000,
    "audit_caught_up_s": 60.0,
}

# How a log of ours divides between topics, roughly as the services produce it: a case's facts, commands and views
# on topics keyed by case id; upstream's records keyed by crime reference; heads keyed by the log id.
TOPIC_SHARES = (
    (topics.CRIME_EVENTS, 0.15),
    (topics.COMMANDS, 0.20),
    (topics.REFERRAL, 0.15),
    (topics.CONSENT, 0.20),
    (topics.SCHEDULING, 0.14),
    (topics.API, 0.10),
    (topics.PRIVACY, 0.02),
    (topics.DEADLETTER, 0.02),
    (topics.AUDIT, 0.02),
)
PARTITIONS = 4
ENTRIES_A_CASE = 30
FORCE = "urn:police:west-mercia:rms"


# --- synthetic bodies shaped like ours ------------------------------------------------------------------------


def _token(rng: random.Random, size: int) -> str:
    """A sealed value as fieldcrypt writes one: ``enc:v1:<key id>:<base64 of nonce, ciphertext and tag>``."""
    return f"enc:v1:{uuid.UUID(int=rng.getrandbits(128))}:" + base64.b64encode(rng.randbytes(12 + size + 16)).decode()


# Each type's data as our services write it; "@T<n>" is a personal value of n bytes, sealed.
_TEMPLATES: dict[str, list[tuple[str, dict[str, Any]]]] = {
    topics.COMMANDS: [
        ("rj.consent.give", {"person_id": "V-1", "through": "facilitator", "method": "in_person"}),
        ("rj.meeting.book", {"meeting_id": "M1", "kind": "conference", "lead_facilitator_id": "F-ANN",
                             "co_facilitator_id": "F-CAL", "venue_id": "V-HUB", "starts_at": "2030-01-07T10:00:00Z",
                             "ends_at": "2030-01-07T11:00:00Z"}),
        ("rj.case.put-on-hold", {"concern": "@T40", "raised_by": "@T20"}),
    ],
    topics.REFERRAL: [
        ("rj.case.opened", {"crime_reference": "WM/2026/000001", "force": FORCE, "route": "upstream",
                            "offence": {"code": "105/1", "category": "violence_against_the_person",
                                        "description": "Common assault"},
                            "participants": [{"person_id": "V-1", "role": "victim", "required": True, "name": "@T20",
                                              "contact": "@T90", "date_of_birth": "@T10"},
                                             {"person_id": "O-1", "role": "offender", "required": True,
                                              "name": "@T20", "contact": "@T30", "date_of_birth": "@T10"}]}),
        ("rj.case.accepted", {"crime_reference": "WM/2026/000001", "needs_specialist": False}),
    ],
    topics.CONSENT: [
        ("rj.consent.given", {"person_id": "V-1", "purpose": "participation", "given_at": "2030-01-07T09:00:00Z",
                              "through": "facilitator", "method": "in_person"}),
        ("rj.facilitator.assigned", {"facilitator_id": "F-ANN"}),
        ("rj.preparation.started", {"participants": [{"person_id": "V-1", "role": "victim", "required": True},
                                                     {"person_id": "O-1", "role": "offender", "required": True}]}),
        ("rj.case.ready-for-meeting", {"ready_at": "2030-01-07T09:00:00Z"}),
    ],
    topics.SCHEDULING: [
        ("rj.meeting.booked", {"meeting_id": "M1", "kind": "conference", "facilitator_ids": ["F-ANN", "F-CAL"],
                               "lead_facilitator_id": "F-ANN", "venue_id": "V-HUB",
                               "starts_at": "2030-01-07T10:00:00Z", "ends_at": "2030-01-07T11:00:00Z"}),
        ("rj.agreement.recorded", {"meeting_id": "M1", "items": [{"item_id": "I1", "kind": "apology",
                                                                 "description": "@T40", "owner_id": "O-1",
                                                                 "due_date": "2030-02-01"}]}),
    ],
    topics.API: [
        ("rj.view.logged", {"viewer_id": "F-ANN", "role": "facilitator", "fields": ["participants[V-1].name",
                                                                                  "participants[V-1].contact"],
                            "reason": None, "viewed_at": "2030-01-07T09:00:00Z"}),
    ],
    topics.PRIVACY: [("rj.person.erased", {"erased_person_id": "V-1", "reason": "@T30", "keys_destroyed": 1})],
    topics.DEADLETTER: [("rj.deadletter.recorded", {"source_topic": "rj.commands", "reason": "no such type"})],
    topics.AUDIT: [("rj.audit.head.signed", {"tree_size": 1, "root_hash": "00" * 32, "signature": "@T64"})],
}  # fmt: skip


def _sealed_values(rng: random.Random, value: Any) -> Any:
    if isinstance(value, str) and value.startswith("@T"):
        return _token(rng, int(value[2:]))
    if isinstance(value, dict):
        return {k: _sealed_values(rng, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_sealed_values(rng, v) for v in value]
    return value


class Bodies:
    """Canonical bodies of synthetic records: each template canonicalised once around holes for the event id,
    subject and time, which are filled per record with text JSON leaves as it is (so the bytes stay canonical)."""

    HOLES = (b"@@id@@", b"@@subject@@", b"@@time@@")

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.parts: dict[str, list[list[bytes]]] = {}
        event_id, subject, moment = (hole.decode() for hole in self.HOLES)
        for topic, templates in _TEMPLATES.items():
            for event_type, data in templates:
                document = {
                    "specversion": "1.0", "id": event_id, "source": f"urn:rj:service:{topic}", "type": event_type,
                    "subject": subject, "time": moment, "datacontenttype": "application/json",
                    "correlationid": event_id, "causationid": event_id,
                    "data": {"case_id": subject, **_sealed_values(rng, data)},
                }  # fmt: skip
                raw = canonical.JSON_KIND + rfc8785.dumps(document)
                self.parts.setdefault(topic, []).append(re.split(b"(" + b"|".join(self.HOLES) + b")", raw))

    def body(self, topic: str, key: str, moment: str) -> bytes:
        if topic == topics.CRIME_EVENTS:  # upstream's record sealed whole: opaque bytes of a sealed record's size
            return canonical.RAW_KIND + self.rng.randbytes(self.rng.randint(700, 1000))
        fill = {self.HOLES[0]: str(uuid.UUID(int=self.rng.getrandbits(128))).encode(), self.HOLES[1]: key.encode(),
                self.HOLES[2]: moment.encode()}  # fmt: skip
        return b"".join(fill.get(part, part) for part in self.rng.choice(self.parts[topic]))


# --- the log, built fast -----------------------------------------------------------------------------------------


@dataclass
class Synthetic:
    records: list[Record]
    bodies: list[bytes]
    cases: dict[str, list[int]]
    """case id -> the indexes of its entries"""


Rows = tuple[list[tuple[Any, ...]], list[tuple[int, int, bytes]], list[tuple[int, bytes, bytes]]]


def synthetic_log(n: int, seed: int = 18) -> Synthetic:
    """``n`` records of every topic, their canonical bodies, and each case's entries (about 30 a case, its keys
    drawn at random, so a case's entries are spread over the whole log)."""
    rng = random.Random(seed)
    bodies = Bodies(rng)
    names, weights = zip(*TOPIC_SHARES, strict=True)
    case_keyed = sum(w for t, w in TOPIC_SHARES if t not in (topics.CRIME_EVENTS, topics.AUDIT))
    case_ids = [case_id_for(FORCE, f"BA/2026/{i:07d}") for i in range(max(1, int(n * case_keyed / ENTRIES_A_CASE)))]
    next_offset: dict[tuple[str, int], int] = {}
    start = datetime(2030, 1, 1, tzinfo=UTC)
    out = Synthetic([], [], {})
    for idx, topic in enumerate(rng.choices(names, weights, k=n)):
        if topic == topics.CRIME_EVENTS:
            key = f"BA/2026/{rng.randrange(len(case_ids)):07d}"
        elif topic == topics.AUDIT:
            key = "00" * 32
        else:
            key = case_ids[rng.randrange(len(case_ids))]
            out.cases.setdefault(key, []).append(idx)
        partition = zlib.crc32(key.encode()) % PARTITIONS
        offset = next_offset.get((topic, partition), 0)
        next_offset[(topic, partition)] = offset + 1
        out.records.append(Record(topic, partition, offset, key.encode(), None))
        out.bodies.append(bodies.body(topic, key, (start + timedelta(seconds=idx)).isoformat()))
    return out


def log_rows(records: Sequence[Record], bodies: Sequence[bytes]) -> Rows:
    """The rows of ``audit.entries``, ``audit.subtrees`` and ``audit.tree_states`` for the records appended in
    batches of ``BATCH``, made with the log's own functions (entries without ``appended_at``)."""
    tree = merkle.CompactTree()
    entries: list[tuple[Any, ...]] = []
    subtrees: list[tuple[int, int, bytes]] = []
    states: list[tuple[int, bytes, bytes]] = []
    for idx, (r, body) in enumerate(zip(records, bodies, strict=True)):
        leaf = merkle.entry_leaf_hash(r.topic, r.partition, r.offset, body)
        entries.append((idx, r.topic, r.partition, r.offset, r.case_key, body, leaf))
        for s in tree.append_with_subtrees(leaf):
            level = (s.end - s.start).bit_length() - 1
            subtrees.append((level, s.start >> level, s.hash))
        if tree.size % BATCH == 0 or tree.size == len(records):
            states.append((tree.size, tree.root(), tree.to_bytes()))
    return entries, subtrees, states


async def appender_rows(conn: asyncpg.Connection, records: Sequence[Record], bodies: Sequence[bytes]) -> Rows:
    """The same rows as ``store.append`` writes them, batch by batch, in a transaction rolled back after."""
    appending = conn.transaction()
    await appending.start()
    try:
        for start in range(0, len(records), BATCH):
            batch = list(zip(records[start : start + BATCH], bodies[start : start + BATCH], strict=True))
            await store.append(conn, [store.Appended(r, b) for r, b in batch], datetime.now(UTC))
        entries = await conn.fetch('SELECT idx, topic, partition, "offset", key, body, leaf FROM audit.entries')
        subtrees = await conn.fetch("SELECT level, position, hash FROM audit.subtrees")
        states = await conn.fetch("SELECT size, root, compact FROM audit.tree_states")
        return sorted(map(tuple, entries)), sorted(map(tuple, subtrees)), sorted(map(tuple, states))
    finally:
        await appending.rollback()


async def build_log(conn: asyncpg.Connection, key: Ed25519PrivateKey, n: int) -> dict[str, list[int]]:
    """The log of ``n`` synthetic entries written, checked against the appender first; each case's entries.

    Only the cases are kept: millions of Python objects left behind would make every garbage collection of the
    timed steps walk them all, which ``rj audit verify``, a process of its own, never pays."""
    began = time.monotonic()
    log = synthetic_log(n)
    twins = min(TWINS, n)
    built = log_rows(log.records[:twins], log.bodies[:twins])
    if tuple(sorted(part) for part in built) != await appender_rows(conn, log.records[:twins], log.bodies[:twins]):
        raise SystemExit("the builder's rows differ from what store.append writes for the same records")
    if any(b[:1] == canonical.JSON_KIND and canonical.canonical_record(b[1:]) != b for b in log.bodies[:twins]):
        raise SystemExit("a synthetic body is not in canonical form")
    print(f"builder checked: its rows for the first {twins:,} records are store.append's, batch by batch")

    entries, subtrees, states = log_rows(log.records, log.bodies)
    made = time.monotonic()
    now = datetime.now(UTC)
    await conn.copy_records_to_table(
        "entries", schema_name="audit", records=[(*e[:5], now, *e[5:]) for e in entries],
        columns=["idx", "topic", "partition", "offset", "key", "appended_at", "body", "leaf"],
    )  # fmt: skip
    await conn.copy_records_to_table("subtrees", schema_name="audit", records=subtrees)
    await conn.copy_records_to_table(
        "tree_states", schema_name="audit", records=states, columns=["size", "root", "compact"]
    )
    roots = {size: root for size, root, _ in states}
    async with conn.transaction():
        for size in [*range(HEAD_EVERY, n, HEAD_EVERY), n]:
            root = roots.get(size) or merkle.MemoryTree([e[6] for e in entries[:size]]).root()
            await store.store_head(conn, heads.sign_tree_head(key, size, root, 1_893_456_000_000 + size))
    await conn.execute("ANALYZE audit.entries; ANALYZE audit.subtrees; ANALYZE audit.tree_states")
    body_bytes = sum(map(len, log.bodies))
    print(
        f"log built: {n:,} entries ({body_bytes / max(n, 1):.0f} bytes a body on average), {len(subtrees):,} subtrees, "
        f"{len(states):,} tree states, {len(range(HEAD_EVERY, n, HEAD_EVERY)) + 1} signed heads, "
        f"{len(log.cases):,} cases; {time.monotonic() - began:.0f} s ({made - began:.0f} s of it in Python)"
    )
    cases = log.cases
    del log, entries, subtrees, states, built
    gc.collect()
    return cases


# --- verify, replay, export, append ---------------------------------------------------------------------------------


def backend_cpu_s(pid: int) -> float:
    """CPU seconds (user and system) of a PostgreSQL backend on this machine, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds every core of the machine has spent busy (not idle or waiting on I/O) since boot, /proc/stat."""
    busy, _ = machine_ticks()
    return busy / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    """CPU seconds of this process's children that have ended (the verify workers, once verify has ended them)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def measure_verify(
    conn: asyncpg.Connection, database_url: str, key: Ed25519PrivateKey, n: int, runs: int
) -> dict[str, Any]:
    """``verify_log`` in this process, as an auditor runs it (worker processes, one a core) and all in this one
    process, the runs interleaved so that both meet the machine as it is; then ``rj audit verify``; then reading
    alone. The CPU an entry: in one process, this process and its PostgreSQL backend; in parallel, this process,
    the workers, and the rest of the machine's busy CPU meanwhile (their backends, and whatever else runs)."""
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    figures: dict[str, dict[str, list[float]]] = {"parallel": {}, "one process": {}}
    for run in range(runs):
        for how, url in (("parallel", database_url), ("one process", None)):
            taken = figures[how]
            began, cpu, server = time.perf_counter(), time.process_time(), backend_cpu_s(pid)
            workers, machine = children_cpu_s(), machine_busy_s()
            verdict = await verify_log(conn, key.public_key(), database_url=url)
            elapsed, cpu, server = time.perf_counter() - began, time.process_time() - cpu, backend_cpu_s(pid) - server
            workers, machine = children_cpu_s() - workers, machine_busy_s() - machine
            if not verdict.ok:
                raise SystemExit(f"verify ({how}) failed on the built log: {verdict.message}")
            taken.setdefault("rates", []).append(n / elapsed)
            if how == "parallel":
                split = {"here": cpu, "workers": workers, "rest of the machine": machine - cpu - workers}
            else:
                split = {"here": cpu, "PostgreSQL": server}
            for part, seconds in split.items():
                taken.setdefault(part, []).append(seconds / n * 1e6)
            print(
                f"verify run {run + 1}, {how}: {elapsed:.2f} s, {n / elapsed:,.0f} entries/s; CPU an entry "
                + ", ".join(f"{seconds / n * 1e6:.2f} us {part}" for part, seconds in split.items())
                + f"; load {os.getloadavg()[0]:.1f} ({verdict.message})"
            )
    # The command an auditor runs, a process of its own (its start-up, about a second of imports, included).
    key_file = STATE / "audit-bench-key.pem"
    key_file.unlink(missing_ok=True)
    descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    env = {**os.environ, "DATABASE_URL": database_url, "AUDIT_SIGNING_KEY_FILE": str(key_file), "LOG_LEVEL": "WARNING"}
    command = []
    for _ in range(runs):
        began = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "services.cli", "audit", "verify"], env=env, capture_output=True,
                              text=True, timeout=1200)  # fmt: skip
        command.append(n / (time.perf_counter() - began))
        if done.returncode != 0:
            raise SystemExit(f"rj audit verify failed: {done.stdout}{done.stderr[-2000:]}")
        print(f"rj audit verify: {n / command[-1]:.2f} s, {command[-1]:,.0f} entries/s; {done.stdout.strip()}")
    began = time.perf_counter()
    read = 0
    reading = asyncio.ensure_future(store.entry_chunk(conn, 0, CHUNK))
    while True:  # as verify_log reads: the next chunk's query under way while this one is looked at
        rows, _ = await reading
        read += len(rows)
        if len(rows) < CHUNK:
            break
        reading = asyncio.ensure_future(store.entry_chunk(conn, read, read + CHUNK))
        await asyncio.sleep(0)
    ceiling = read / (time.perf_counter() - began)
    print(f"ceiling: the same queries reading the {read:,} entries, nothing done with them: {ceiling:,.0f} entries/s")
    parallel, alone = figures["parallel"], figures["one process"]
    print(
        f"verify: {statistics.median(parallel['rates']):,.0f} entries/s with {default_workers()} workers, "
        f"{statistics.median(alone['rates']):,.0f} in one process, {statistics.median(command):,.0f} as rj audit "
        f"verify; reading alone in one process {ceiling:,.0f} (medians)"
    )
    return {
        "entries_per_s": statistics.median(parallel["rates"]), "runs_entries_per_s": parallel["rates"],
        "workers": default_workers(),
        "cpu_us_an_entry": {part: statistics.median(v) for part, v in parallel.items() if part != "rates"},
        "one_process_entries_per_s": statistics.median(alone["rates"]),
        "one_process_runs_entries_per_s": alone["rates"],
        "one_process_cpu_us_an_entry": {part: statistics.median(v) for part, v in alone.items() if part != "rates"},
        "command_entries_per_s": statistics.median(command), "ceiling_reading_entries_per_s": ceiling,
    }  # fmt: skip


async def measure_replay_and_export(
    conn: asyncpg.Connection, key: Ed25519PrivateKey, log: dict[str, list[int]], size: int, samples: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each drawn case replayed then exported, in turn, so both share the machine's state of the moment."""
    rng = random.Random(5)
    cases = rng.sample(sorted(log), min(samples + 20, len(log)))
    replays, exports, facts, entries = [], [], [], []
    for n, case_id in enumerate(cases):
        began = time.perf_counter()
        with privacy.batch_scope():
            recorded = await replay.recorded_facts(conn, case_id)
        now = datetime.now(UTC)
        replay.timeline_of(replay.facts_up_to(recorded, now))
        replay.state_at(case_id, recorded, now)
        replayed = time.perf_counter()
        document = await export_case(conn, key, case_id)
        exported = time.perf_counter()
        if n >= 20:  # the first ones warm the statement caches
            replays.append((replayed - began) * 1000)
            exports.append((exported - replayed) * 1000)
            facts.append(len(recorded))
            entries.append(len(document["entries"]))
    if not all(facts):
        raise SystemExit("a case replayed to no facts: the synthetic bodies are not read as events")
    spread = [max(log[c]) - min(log[c]) for c in cases]
    print(f"{len(replays)} cases, {statistics.mean(entries):.1f} entries each on average (spread over "
          f"{statistics.mean(spread) / max(size, 1):.0%} of the log)")  # fmt: skip
    p50, p95, p99, top = percentiles(replays)
    replay_figures = {
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "max_ms": top,
        "facts_a_case": statistics.mean(facts),
    }
    p50, p95, p99, top = percentiles(exports)
    export_figures = {
        "p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "max_ms": top, "entries_a_case": statistics.mean(entries),
        "earlier_heads": len(document["earlier_heads"]),
    }  # fmt: skip
    return replay_figures, export_figures


async def measure_append(conn: asyncpg.Connection, count: int) -> dict[str, Any]:
    """``store.append`` in batches of ``BATCH``, a transaction each, continuing the log."""
    size = await store.recorded_size(conn)
    more = synthetic_log(count, seed=19)
    shifted = [Record(r.topic, r.partition, r.offset + 10_000_000, r.key, None) for r in more.records]
    batches = [
        [store.Appended(r, b) for r, b in zip(shifted[i : i + BATCH], more.bodies[i : i + BATCH], strict=True)]
        for i in range(0, count, BATCH)
    ]
    began = time.perf_counter()
    for batch in batches:
        async with conn.transaction():
            await store.append(conn, batch, datetime.now(UTC))
    elapsed = time.perf_counter() - began
    assert await store.recorded_size(conn) == size + count
    print(f"append: {count:,} entries in {len(batches)} batches of {BATCH} on a log of {size:,}: {elapsed:.2f} s")
    return {"entries_per_s": count / elapsed, "batch": BATCH, "log_size_before": size}


# --- lag after a burst with every service running -------------------------------------------------------------------


async def end_offsets(
    consumer: AIOKafkaConsumer, parts: list[TopicPartition], prefix: str
) -> dict[tuple[str, int], int]:
    ends = await consumer.end_offsets(parts)
    return {(tp.topic.removeprefix(prefix), tp.partition): end for tp, end in ends.items()}


async def audit_positions(conn: asyncpg.Connection) -> dict[tuple[str, int], int]:
    rows = await conn.fetch("SELECT topic, partition, next_offset FROM audit.consumer_positions")
    return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}


async def read_everything(
    settings: Settings, published_at: dict[tuple[str, int], list[tuple[int, float]]]
) -> tuple[int, float]:
    """The ceiling: every record of every topic read from offset zero by a plain consumer; (records, seconds).
    Each record's (offset, timestamp in seconds) goes into ``published_at`` by (topic, partition)."""
    count = 0

    def take(topic: str, partition: int, record: Any) -> None:
        nonlocal count
        count += 1
        published_at.setdefault((topic, partition), []).append((record.offset, record.timestamp / 1000))

    began = time.perf_counter()
    await read_from_the_start(settings, topics.ALL_TOPICS, take)
    return count, time.perf_counter() - began


LAG_LIMIT_S = 600
WARM_UP_FROM = 9_000_000
CAUGHT_UP_S = 1.0  # "no lag" for a follower that polls every FOLLOWER_FETCH_MAX_WAIT_MS (500 ms) and appends
POSITIONS_EVERY_S = 0.05


@dataclass
class Coverage:
    """The audit service's stored positions (``audit.consumer_positions``, written in each appending batch's
    transaction), as (wall-clock moment, position) by (topic, partition), taken every ``POSITIONS_EVERY_S``: a
    record is in the log from the first moment its partition's position passes its offset."""

    moments: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    positions: dict[tuple[str, int], list[int]] = field(default_factory=dict)

    def note(self, at: float, where: tuple[str, int], position: int) -> None:
        known = self.positions.setdefault(where, [])
        if not known or position > known[-1]:
            known.append(position)
            self.moments.setdefault(where, []).append(at)

    def logged_at(self, where: tuple[str, int], offset: int) -> float | None:
        known = self.positions.get(where, [])
        i = bisect.bisect_right(known, offset)
        return self.moments[where][i] if i < len(known) else None

    def delays(
        self, published_at: dict[tuple[str, int], list[tuple[int, float]]], since: float, until: float
    ) -> list[tuple[float, float, float]]:
        """For each record published from ``since`` until ``until`` (the watch's end): (published, in the log, how
        long it waited), in seconds since ``since``. A record's wait is measured to the first sample that saw it
        logged, so it is over by up to a sample's interval, never under. One not logged by ``until`` waited for
        ever (in the log at ``until``, waiting ``inf``), unless it was published within ``CAUGHT_UP_S`` of it (not
        yet late: left out, as is what came after)."""
        out = []
        for where, records in published_at.items():
            for offset, published in records:
                if not since <= published <= until:
                    continue
                logged = self.logged_at(where, offset)
                if logged is not None:
                    out.append((published - since, logged - since, max(0.0, logged - published)))
                elif published < until - CAUGHT_UP_S:
                    out.append((published - since, until - since, math.inf))
        return out


def _seconds(value: float) -> float | None:
    """A wait for JSON: None for a record never logged."""
    return round(value, 2) if math.isfinite(value) else None


async def _stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _watch_positions(database_url: str, coverage: Coverage) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        while True:
            positions = await audit_positions(conn)
            at = time.time()
            for where, position in positions.items():
                coverage.note(at, where, position)
            await asyncio.sleep(POSITIONS_EVERY_S)
    finally:
        await conn.close()


async def measure_lag(burst: int) -> dict[str, Any]:
    async with running_stack("bench-audit") as stack, LocalIssuer(STATE / "audit_issuer.pem") as issuer:
        with catching_mail() as (mailbox, mail):
            return await _measure_lag(stack, issuer, mailbox, mail, burst)


async def _measure_lag(
    stack: Any, issuer: Any, mailbox: Timestamped, mail: dict[str, str], burst: int
) -> dict[str, Any]:
    """The burst with notify doing its whole job: a real SMTP server to send to, quiet hours open (every victim's
    email goes at once, as within a working day), and the participants' link key the API has."""
    settings = stack.settings
    link_key = new_link_key()
    extra = {
        "api": {"API_PORT": str(free_port()), "OIDC_ISSUER": issuer.url, "OIDC_JWKS_URL": issuer.jwks_url,
                "PARTICIPANT_LINK_KEY": link_key},
        "notify": {**mail, "PARTICIPANT_LINK_KEY": link_key},
        "audit": {"AUDIT_SIGNING_KEY_FILE": str(STATE / "audit-lag-key.pem"),
                  "AUDIT_WITNESS_FILE": str(STATE / "audit-lag-witness.jsonl")},
    }  # fmt: skip
    for name in SERVICES:
        stack.supervisor.start(name, extra.get(name))
    conn = await _connected_when_migrated(settings.database_url)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    parts = [TopicPartition(settings.topic(t), p) for t in topics.ALL_TOPICS for p in range(settings.topic_partitions)]
    coverage = Coverage()
    watch = asyncio.create_task(_watch_positions(settings.database_url, coverage))
    try:

        async def lag() -> int:
            ends = await end_offsets(consumer, parts, settings.topic_prefix)
            at = await audit_positions(conn)
            return sum(max(0, end - at.get(where, 0)) for where, end in ends.items())

        # A few events first, through every service: every consumer group has joined before the burst.
        await publish(settings, traffic(20, first=WARM_UP_FROM))  # crimes of their own: the burst's are all new
        await stack.wait_until(lambda: _zero(lag), 120, lambda: "the warm-up never reached the audit log")
        await asyncio.sleep(2)
        await stack.wait_until(lambda: _zero(lag), 120, lambda: "the warm-up never reached the audit log")
        messages = traffic(burst)
        print(f"lag: every service running ({', '.join(SERVICES)}); {len(messages):,} upstream events at once")
        before = sum((await end_offsets(consumer, parts, settings.topic_prefix)).values())
        began, began_perf, began_wall = time.monotonic(), time.perf_counter(), time.time()
        await publish(settings, messages)
        published = time.monotonic() - began
        samples: list[tuple[float, int, int]] = []  # (seconds since the burst began, records on topics, lag)
        while True:
            ends = await end_offsets(consumer, parts, settings.topic_prefix)
            at = await audit_positions(conn)
            behind = sum(max(0, end - at.get(where, 0)) for where, end in ends.items())
            samples.append((time.monotonic() - began, sum(ends.values()), behind))
            settled = [s for s in samples if s[0] >= samples[-1][0] - 5]
            drained = all(s[1:] == (samples[-1][1], 0) for s in settled) and len(settled) > 5
            if (samples[-1][0] > 10 and drained) or samples[-1][0] > LAG_LIMIT_S:
                break
            await asyncio.sleep(0.5)
        ended_wall = time.time()
        await _stopped(watch)
        final = samples[-1][1]
        if drained:
            drained_at = next(t for t, total, behind in samples if all(s[2] == 0 for s in samples if s[0] >= t))
            last_record_at = next(t for t, total, _ in samples if total == final)
        else:  # the system was still at work: the audit figure stands on what was published until now
            drained_at = last_record_at = None
            print(f"lag: the services still at work after {LAG_LIMIT_S} s ({behind:,} records not yet in the log)")
        peak = max(behind for _, _, behind in samples)
        appended = await conn.fetchval("SELECT count(*) FROM audit.entries")
        sends = {
            f"{r['kind']} {r['status']}{f' ({r[2]})' if r[2] else ''}": r[3]
            for r in await conn.fetch(
                """SELECT kind, status, detail, count(*) FROM notify.scheduled_sends GROUP BY 1, 2, 3 ORDER BY 1, 2"""
            )
        }
        # Each email by its Message-ID (the notification it carries), counted from the burst on: not the warm-up's.
        during = [at - began_perf for at in mailbox.by_reference.values() if at >= began_perf]
        emails, last_email = len(during), max(during, default=0.0)
        published_at: dict[tuple[str, int], list[tuple[int, float]]] = {}
        read, seconds = await read_everything(settings, published_at)
    finally:
        await _stopped(watch)
        await consumer.stop()
        await conn.close()
    # Every record since the burst must carry the moment it was published. (Not to the record: on Tansu a
    # partition's listed end is the start of its last record batch, so ``before`` may leave out a few.)
    stamped = sum(1 for records in published_at.values() for _, at in records if at >= began_wall)
    if stamped < 0.99 * (read - before):
        raise SystemExit(f"only {stamped:,} of the {read - before:,} records since the burst are timestamped after it")
    behind_s = coverage.delays(published_at, began_wall, ended_wall)
    caught_up_at = max((logged for _, logged, delay in behind_s if delay > CAUGHT_UP_S), default=0.0)
    after = [delay for published_s, _, delay in behind_s if published_s >= caught_up_at]
    p50, _, p99, _ = percentiles(after)
    worst = max((delay for _, _, delay in behind_s), default=0.0)
    # How long the log kept records waiting, by when they were published: the most, in each window of 10 s.
    windows: dict[int, float] = {}
    for published_s, _, delay in behind_s:
        windows[int(published_s // 10)] = max(windows.get(int(published_s // 10), 0.0), delay)
    by_window = [_seconds(windows.get(w, 0.0)) for w in range(max(windows, default=-1) + 1)]
    print(
        f"lag: the burst published in {published:.1f} s; audit's lag back to zero at {caught_up_at:.1f} s (every "
        f"record published from then on in the log within {CAUGHT_UP_S:.0f} s: p50 {p50 * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms over {len(after):,} records); at most {worst:.1f} s and {peak:,} records "
        f"behind the topics"
    )
    level = (
        f"the other services' last record at {last_record_at:.1f} s, the log level with it for good at "
        f"{drained_at:.1f} s"
        if drained
        else f"the services still at work at {LAG_LIMIT_S} s"
    )
    print(f"lag: notify's sends, by kind and status: {sends}")
    print(f"lag: the longest wait in the log of a record published in each 10 s from the burst on (s): {by_window}")
    print(
        f"lag: {level}; {appended:,} entries appended; {emails:,} emails accepted by the SMTP server from the "
        f"burst on ({len(messages) // 2:,} cases), the last at {last_email:.1f} s"
    )
    print(f"ceiling: a plain consumer reads the {read:,} records of every topic from offset zero in {seconds:.1f} s "
          f"({read / seconds:,.0f} records/s)")  # fmt: skip
    return {
        "audit_caught_up_s": caught_up_at, "caught_up_within_s": CAUGHT_UP_S, "records_after": len(after),
        "p50_behind_after_s": p50, "p99_behind_after_s": p99, "longest_wait_by_10s": by_window, "drained_s": drained_at,
        "burst_events": len(messages), "published_in_s": published,
        "other_services_last_record_s": last_record_at, "peak_lag_records": peak, "longest_wait_s": _seconds(worst),
        "entries_appended": appended, "notify_sends": sends, "records_on_topics": final, "emails_accepted": emails,
        "last_email_s": last_email, "ceiling_plain_read_records_per_s": read / seconds,
    }  # fmt: skip


async def _zero(lag: Any) -> bool:
    return bool(await lag() == 0)


async def _connected_when_migrated(database_url: str) -> asyncpg.Connection:
    while True:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.fetchval("SELECT count(*) FROM audit.consumer_positions")
            return conn
        except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
            await conn.close()
            await asyncio.sleep(0.5)


async def measure_log(args: argparse.Namespace) -> dict[str, Any]:
    """Verify, replay, export and append over a log of ``args.events`` entries built in a fresh database."""
    key = Ed25519PrivateKey.generate()
    results: dict[str, Any] = {}
    async with database_for_run(await ensure_postgres(STATE), "rj_bench_audit") as database_url:
        conn = await asyncpg.connect(database_url)
        try:
            await migrate(conn, "audit", "services.audit.migrations")
            log = await build_log(conn, key, args.events)
            results["verify"] = await measure_verify(conn, database_url, key, args.events, args.runs)
            results["replay"], results["export"] = await measure_replay_and_export(
                conn, key, log, args.events, args.samples
            )
            results["append"] = await measure_append(conn, args.append)
        finally:
            await conn.close()
    return results


# --- the run ---------------------------------------------------------------------------------------------------------


def report(results: dict[str, Any]) -> bool:
    """Print each figure beside its target; whether all are met."""
    rows = [
        ("verify (1)", "verify", "entries_per_s", "verify_entries_per_s", ">=", "entries/s"),
        ("one-case replay p99", "replay", "p99_ms", "replay_p99_ms", "<", "ms"),
        ("one-case export with proofs p99", "export", "p99_ms", "export_p99_ms", "<", "ms"),
        ("append alone", "append", "entries_per_s", "append_entries_per_s", ">=", "entries/s"),
        ("audit lag back to zero after the burst", "lag", "audit_caught_up_s", "audit_caught_up_s", "<=", "s"),
    ]
    print("\nfigure                                    measured        target")
    met = True
    for label, section, name, target_name, sense, unit in rows:
        if section not in results:
            continue
        value, target = results[section][name], TARGETS[target_name]
        ok = value >= target if sense == ">=" else value < target if sense == "<" else value <= target
        met = met and ok
        label = label.replace("(1)", f"({results['events']:,} entries)")
        print(f"{label:<42}{value:>12,.1f} {unit:<9} {sense} {target:,} {'' if ok else ' MISSED'}")
        results[section]["target"], results[section]["met"] = target, ok
    return met


async def main(args: argparse.Namespace) -> int:
    STATE.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"events": args.events, "cores": os.cpu_count(), "load_average_before": os.getloadavg()}
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} cores")
    if not args.skip_log:
        results |= await measure_log(args)
    if not args.skip_lag:
        results["lag"] = await measure_lag(args.burst)
    results["load_average_after"] = os.getloadavg()
    met = report(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1, default=str))
    print(f"figures written to {args.json}")
    return 0 if met else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="entries in the log")
    parser.add_argument("--runs", type=int, default=3, help="verify runs")
    parser.add_argument("--samples", type=int, default=500, help="cases replayed and exported")
    parser.add_argument("--append", type=int, default=50_000, help="entries appended through store.append")
    parser.add_argument("--burst", type=int, default=40_000, help="upstream events in the burst")
    parser.add_argument("--skip-log", action="store_true", help="leave out the log's figures (only the burst)")
    parser.add_argument("--skip-lag", action="store_true", help="leave out the burst with every service running")
    parser.add_argument("--json", type=Path, default=STATE / "audit.json", help="where the figures are written")
    sys.exit(asyncio.run(main(parser.parse_args())))
