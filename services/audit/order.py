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
import bisect
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


@dataclass(frozen=True)
class _Run:
    """A run as the order holds it: from entry ``start``, consecutive offsets of one partition, 32 bytes of leaf
    hash each (kept as they came: 32 bytes an entry, not an object an entry, for logs of millions)."""

    start: int
    topic: str
    partition: int
    first_offset: int
    leaves: bytes

    @property
    def end(self) -> int:
        return self.start + len(self.leaves) // 32

    def at(self, index: int) -> Placed:
        step = index - self.start
        return Placed(self.topic, self.partition, self.first_offset + step, self.leaves[32 * step : 32 * step + 32])

    def from_index(self, index: int) -> _Run:
        step = index - self.start
        return _Run(index, self.topic, self.partition, self.first_offset + step, self.leaves[32 * step :])


class PublishedOrder:
    """The log's order as its ``rj.audit-entries.appended`` events say, looked up by entry. Events may come more
    than once (a relay re-sends) and in any order; two that place different records at one index are kept as
    the first ``contradiction``."""

    def __init__(self) -> None:
        self._given: set[_Run] = set()
        self._runs: list[_Run] | None = None
        self._starts: list[int] = []
        self._contradiction: Contradiction | None = None

    def add(self, event: AuditEntriesAppended) -> None:
        index = event.first_index
        for run in event.runs:
            given = _Run(index, run.topic, run.partition, run.first_offset, base64.b64decode(run.leaf_hashes))
            self._given.add(given)
            index = given.end
        self._runs = None

    @property
    def contradiction(self) -> Contradiction | None:
        self._index()
        return self._contradiction

    def at(self, index: int) -> Placed | None:
        runs = self._index()
        i = bisect.bisect_right(self._starts, index) - 1
        if i < 0 or index >= runs[i].end:
            return None
        return runs[i].at(index)

    def __len__(self) -> int:
        return sum(run.end - run.start for run in self._index())

    def _index(self) -> list[_Run]:
        """The runs given, without overlaps: where two cover one entry, they must agree on it."""
        if self._runs is not None:
            return self._runs
        kept: list[_Run] = []
        starts: list[int] = []
        self._contradiction = None
        for run in sorted(self._given, key=lambda r: (r.start, -r.end, r.topic, r.partition, r.first_offset)):
            covered = kept[-1].end if kept else 0
            for index in range(run.start, min(run.end, covered)):
                i = bisect.bisect_right(starts, index) - 1
                known = kept[i].at(index) if i >= 0 and index < kept[i].end else None
                if known is not None and known != run.at(index) and self._contradiction is None:
                    self._contradiction = Contradiction(index, known, run.at(index))
            if run.end > covered:
                kept.append(run if run.start >= covered else run.from_index(covered))
                starts.append(kept[-1].start)
        self._runs, self._starts = kept, starts
        return kept
