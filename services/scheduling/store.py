"""The scheduling service's SQL: case schedules as JSON rows; facilitators, venues and bookings as rows.

Every scheduling transaction first takes one advisory lock on the resource book, so checks for clashes
never race across replicas (meetings are booked at human pace: the serialisation costs nothing that
matters). The bookings table's exclusion constraint backs the check up.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import date, datetime

import asyncpg
from pydantic import TypeAdapter

from services.runtime.state import lock_states, save_states
from services.scheduling.domain import (
    Booking,
    CaseSchedule,
    FacilitatorProfile,
    ResourceBook,
    VenueProfile,
    release_watch,
    watched,
)

SCHEMA = "scheduling"
CASES = f"{SCHEMA}.cases"
_FACILITATOR = TypeAdapter(FacilitatorProfile)
_VENUE = TypeAdapter(VenueProfile)
_BOOK_LOCK = int.from_bytes(hashlib.sha256(b"scheduling.resource-book").digest()[:8], "big", signed=True)


async def lock_resource_book(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _BOOK_LOCK)


async def lock_cases(conn: asyncpg.Connection, case_ids: Iterable[str]) -> dict[str, CaseSchedule | None]:
    rows = await lock_states(conn, CASES, case_ids, CaseSchedule)
    return {key: CaseSchedule.from_json(state) if state else None for key, state in rows.items()}


async def save_cases(conn: asyncpg.Connection, cases: Mapping[str, CaseSchedule | None]) -> None:
    states = {key: case.to_json() if case else None for key, case in cases.items()}
    await save_states(conn, CASES, states, CaseSchedule)


async def watch_items(conn: asyncpg.Connection, cases: Mapping[str, CaseSchedule | None]) -> None:
    """Rewrite the follow-up sweep's rows for ``cases`` from their state (``domain.watched``). A case that has
    never had an agreement has no rows, and is skipped."""
    with_agreement = {key: case for key, case in cases.items() if case is not None and case.agreement is not None}
    if not with_agreement:
        return
    await conn.execute(f"DELETE FROM {SCHEMA}.item_watch WHERE case_id = ANY($1::text[])", sorted(with_agreement))
    rows = [(key, *row) for key, case in with_agreement.items() for row in watched(case)]
    if rows:
        await conn.executemany(
            f"INSERT INTO {SCHEMA}.item_watch (case_id, item_id, due_date, flag) VALUES ($1, $2, $3, $4)", rows
        )


async def cases_to_follow_up(conn: asyncpg.Connection, today: date, horizon: date, limit: int = 500) -> list[str]:
    """Cases with an item to flag: due soon (due by ``horizon``) or overdue (due before ``today``). Read without
    locks: the sweep then locks the cases themselves, in the same order as every other transaction."""
    rows = await conn.fetch(
        f"""SELECT DISTINCT case_id FROM {SCHEMA}.item_watch
            WHERE (flag = 'due-soon' AND due_date <= $2) OR (flag = 'overdue' AND due_date < $1)
            ORDER BY case_id LIMIT $3""",
        today,
        horizon,
        limit,
    )
    return [r["case_id"] for r in rows]


async def watch_releases(conn: asyncpg.Connection, cases: Mapping[str, CaseSchedule | None]) -> None:
    """Rewrite the release sweep's rows for ``cases`` from their state (``domain.release_watch``), in the
    transaction that saves them. A case that has never had an indirect item has no rows, and is skipped. A row
    whose due time is unchanged keeps its ``next_ask_at``: rewriting a case while its command waits to be read
    does not send the command again."""
    touched = {key: case for key, case in cases.items() if case is None or case.indirect.items}
    if not touched:
        return
    rows = [
        (key, item_id, due_at, case.force if case is not None else None)
        for key, case in touched.items()
        for item_id, due_at in release_watch(case)
    ]
    await conn.execute(
        f"""DELETE FROM {SCHEMA}.release_watch w WHERE w.case_id = ANY($1::text[])
            AND (w.case_id, w.item_id) NOT IN (SELECT * FROM unnest($2::text[], $3::text[]))""",
        sorted(touched),
        [r[0] for r in rows],
        [r[1] for r in rows],
    )
    if rows:
        await conn.executemany(
            f"""INSERT INTO {SCHEMA}.release_watch AS w (case_id, item_id, due_at, next_ask_at, force)
                VALUES ($1, $2, $3, $3, $4)
                ON CONFLICT (case_id, item_id) DO UPDATE SET
                    next_ask_at = CASE WHEN w.due_at = excluded.due_at THEN w.next_ask_at ELSE excluded.next_ask_at END,
                    due_at = excluded.due_at,
                    force = excluded.force""",
            rows,
        )


async def timed_releases_due(
    conn: asyncpg.Connection, now: datetime, *, ask_again_at: datetime, limit: int = 500
) -> list[tuple[str, str | None]]:
    """Cases with an item due (``release_watch``) whose next ask has come, earliest first, as ``(case id, force)``;
    each row's next ask is put off to ``ask_again_at``. Reads the ``next_ask_at`` index; rows another replica's
    sweep holds are skipped, so replicas share the work; no case's state is read (nothing here can fail to
    decode)."""
    rows = await conn.fetch(
        f"""SELECT case_id, item_id, force FROM {SCHEMA}.release_watch
            WHERE next_ask_at <= $1
            ORDER BY next_ask_at LIMIT $2 FOR UPDATE SKIP LOCKED""",
        now,
        limit,
    )
    if not rows:
        return []
    await conn.execute(
        f"""UPDATE {SCHEMA}.release_watch w SET next_ask_at = $1
            FROM unnest($2::text[], $3::text[]) AS due(case_id, item_id)
            WHERE w.case_id = due.case_id AND w.item_id = due.item_id""",
        ask_again_at,
        [r["case_id"] for r in rows],
        [r["item_id"] for r in rows],
    )
    return list(dict.fromkeys((r["case_id"], r["force"]) for r in rows))


async def load_book(conn: asyncpg.Connection, resources: Iterable[str]) -> ResourceBook:
    """Every facilitator and venue, and the bookings of ``resources``."""
    facilitators = await conn.fetch(f"SELECT profile FROM {SCHEMA}.facilitators ORDER BY facilitator_id")
    venues = await conn.fetch(f"SELECT profile FROM {SCHEMA}.venues ORDER BY venue_id")
    bookings = await conn.fetch(
        f"SELECT resource, case_id, meeting_id, starts_at, ends_at FROM {SCHEMA}.bookings "
        "WHERE resource = ANY($1::text[])",
        sorted(set(resources)),
    )
    return ResourceBook(
        facilitators=tuple(_FACILITATOR.validate_json(r["profile"]) for r in facilitators),
        venues=tuple(_VENUE.validate_json(r["profile"]) for r in venues),
        bookings=tuple(Booking(**dict(r)) for r in bookings),
    )


async def save_book(conn: asyncpg.Connection, before: ResourceBook, after: ResourceBook) -> None:
    new_facilitators = [f for f in after.facilitators if f not in before.facilitators]
    new_venues = [v for v in after.venues if v not in before.venues]
    if new_facilitators:
        await conn.executemany(
            f"INSERT INTO {SCHEMA}.facilitators (facilitator_id, profile) VALUES ($1, $2::jsonb) "
            "ON CONFLICT (facilitator_id) DO UPDATE SET profile = excluded.profile",
            [(f.facilitator_id, _profile_json(f)) for f in new_facilitators],
        )
    if new_venues:
        await conn.executemany(
            f"INSERT INTO {SCHEMA}.venues (venue_id, profile) VALUES ($1, $2::jsonb) "
            "ON CONFLICT (venue_id) DO UPDATE SET profile = excluded.profile",
            [(v.venue_id, _profile_json(v)) for v in new_venues],
        )
    released = set(before.bookings) - set(after.bookings)
    held = set(after.bookings) - set(before.bookings)
    if released:
        await conn.executemany(
            f"DELETE FROM {SCHEMA}.bookings WHERE resource = $1 AND case_id = $2 AND meeting_id = $3",
            [(b.resource, b.case_id, b.meeting_id) for b in released],
        )
    if held:
        await conn.executemany(
            f"INSERT INTO {SCHEMA}.bookings (resource, case_id, meeting_id, starts_at, ends_at) "
            "VALUES ($1, $2, $3, $4, $5)",
            [(b.resource, b.case_id, b.meeting_id, b.starts_at, b.ends_at) for b in held],
        )


def _profile_json(profile: FacilitatorProfile | VenueProfile) -> str:
    if isinstance(profile, FacilitatorProfile):
        return _FACILITATOR.dump_json(profile).decode()
    return _VENUE.dump_json(profile).decode()
