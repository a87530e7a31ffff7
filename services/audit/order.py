"""The order the log appended records in, as published on rj.audit (``rj.audit-entries.appended``), and read back.

Kafka orders records only within a partition; the log interleaves every partition of every topic as it reads
them, and its tree is over that interleaving. So, before each signed head, the audit service publishes the
entries appended since the previous head: runs of records at consecutive offsets of one partition, each record
with its leaf hash. From the topics and these events alone the tree can be rebuilt in the very order it was
built, and every head checked (``fromkafka``).

Nothing here is trusted: a changed order or leaf gives another root than the signed one. The leaf hashes are
there to name the first entry whose record on its topic is not what the log appended (without them a mismatch
could only be placed between two heads), and to stand in for a record that a topic's retention has removed.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass
from typing import Final, NamedTuple

from schemas.audit import AppendedRun, AuditEntriesAppended

ENTRIES_PER_EVENT: Final = 2048
"""Up to 2,048 entries in one event: about 90 KB of leaf hashes, well under a broker's 1 MB limit."""


class Placed(NamedTuple):
    """One entry of the log: where its record is, and its leaf hash."""

    topic: str
    partition: int
    offset: int
    leaf: bytes


class OrderWriter:
    """Entries, fed in index order from ``first_index``, made into events of at most ``ENTRIES_PER_EVENT``
    entries each; a record joins the run before it when it is the next offset of the same partition."""

    def __init__(self, log_id: str, first_index: int) -> None:
        self.log_id = log_id
        self._index = first_index
        self._runs: list[AppendedRun] = []
        self._run: list[Placed] = []
        self._held = 0

    def add(self, entry: Placed) -> AuditEntriesAppended | None:
        """Take the next entry; the event it completes, if it completes one."""
        last = self._run[-1] if self._run else None
        if last is None or entry[:3] != (last.topic, last.partition, last.offset + 1):
            self._close_run()
        self._run.append(entry)
        self._held += 1
        return self.finish() if self._held == ENTRIES_PER_EVENT else None

    def finish(self) -> AuditEntriesAppended | None:
        """The event of the entries taken since the last one (None if there are none)."""
        self._close_run()
        if not self._runs:
            return None
        event = AuditEntriesAppended(log_id=self.log_id, first_index=self._index, runs=self._runs)
        self._index, self._held, self._runs = self._index + self._held, 0, []
        return event

    def _close_run(self) -> None:
        if self._run:
            first = self._run[0]
            leaves = base64.b64encode(b"".join(p.leaf for p in self._run)).decode()
            self._runs.append(AppendedRun(topic=first.topic, partition=first.partition, first_offset=first.offset,
                                          count=len(self._run), leaf_hashes=leaves))  # fmt: skip
            self._run = []


def appended_events(log_id: str, first_index: int, placed: Iterable[Placed]) -> list[AuditEntriesAppended]:
    """The entries ``first_index`` onwards (``placed``, in index order) as ``rj.audit-entries.appended`` events."""
    writer = OrderWriter(log_id, first_index)
    events = [event for entry in placed if (event := writer.add(entry)) is not None]
    last = writer.finish()
    return events if last is None else [*events, last]


async def appended_events_of(
    log_id: str, first_index: int, placed: AsyncIterable[Placed]
) -> list[AuditEntriesAppended]:
    """``appended_events`` over entries read a chunk at a time (never all held at once)."""
    writer = OrderWriter(log_id, first_index)
    events = [event async for entry in placed if (event := writer.add(entry)) is not None]
    last = writer.finish()
    return events if last is None else [*events, last]


@dataclass(frozen=True)
class Contradiction:
    """Two published orders that place different entries at one index."""

    index: int
    first: Placed
    second: Placed


class PublishedOrder:
    """The log's order as its ``rj.audit-entries.appended`` events say, indexed by entry. Events may come more
    than once (a relay re-sends) and in any order; two that place different records at one index are kept as
    the first ``Contradiction``."""

    def __init__(self) -> None:
        self._entries: dict[int, Placed] = {}
        self.contradiction: Contradiction | None = None

    def add(self, event: AuditEntriesAppended) -> None:
        index = event.first_index
        for run in event.runs:
            for step, leaf in enumerate(run.leaves()):
                placed = Placed(run.topic, run.partition, run.first_offset + step, leaf)
                known = self._entries.setdefault(index, placed)
                if known != placed and self.contradiction is None:
                    self.contradiction = Contradiction(index, known, placed)
                index += 1

    def at(self, index: int) -> Placed | None:
        return self._entries.get(index)

    def __len__(self) -> int:
        return len(self._entries)
