"""The privacy service's SQL: its index of people on cases, closures, holds; and what the key store holds
about a person (read only: keys are created and destroyed through ``services.runtime.keystore``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import asyncpg

from schemas.common import Actor
from schemas.privacy import PERSON_SUBJECT_PREFIX, HoldKind
from services.privacy.domain import ClosedCase, Person
from services.runtime.keystore import SCHEMA as KEYSTORE

SCHEMA = "privacy"


async def record_people(conn: asyncpg.Connection, people: Sequence[tuple[str, str, str]]) -> None:
    """Index (case id, person id, role) from opened cases; a person already indexed keeps their row."""
    if not people:
        return
    await conn.execute(
        f"""INSERT INTO {SCHEMA}.case_people (case_id, person_id, role)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING""",
        *zip(*people, strict=True),
    )


async def record_closures(conn: asyncpg.Connection, closures: Sequence[tuple[str, str, datetime]]) -> None:
    """(case id, outcome, closed at): a case's first closure is the one its retention counts from."""
    if not closures:
        return
    await conn.execute(
        f"""INSERT INTO {SCHEMA}.cases AS c (case_id, outcome, closed_at)
            SELECT DISTINCT ON (case_id) * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
                AS u(case_id, outcome, closed_at)
            ON CONFLICT (case_id) DO UPDATE SET outcome = excluded.outcome, closed_at = excluded.closed_at
            WHERE c.closed_at IS NULL""",
        *zip(*closures, strict=True),
    )


async def lock_case(conn: asyncpg.Connection, case_id: str) -> None:
    """Serialise what changes a case's holds with the retention sweep (which skips a locked case)."""
    await conn.execute(
        f"""INSERT INTO {SCHEMA}.cases AS c (case_id) VALUES ($1)
            ON CONFLICT (case_id) DO UPDATE SET case_id = c.case_id""",
        case_id,
    )


async def holds_on(conn: asyncpg.Connection, case_ids: Iterable[str]) -> dict[str, set[HoldKind]]:
    rows = await conn.fetch(
        f"SELECT case_id, kind FROM {SCHEMA}.retention_holds WHERE case_id = ANY($1::text[])", sorted(set(case_ids))
    )
    held: dict[str, set[HoldKind]] = {}
    for row in rows:
        held.setdefault(row["case_id"], set()).add(HoldKind(row["kind"]))
    return held


async def place_hold(conn: asyncpg.Connection, case_id: str, kind: HoldKind, at: datetime, by: str) -> None:
    await conn.execute(
        f"INSERT INTO {SCHEMA}.retention_holds (case_id, kind, placed_at, placed_by) VALUES ($1, $2, $3, $4)",
        case_id,
        kind.value,
        at,
        by,
    )


async def lift_hold(conn: asyncpg.Connection, case_id: str, kind: HoldKind) -> None:
    await conn.execute(f"DELETE FROM {SCHEMA}.retention_holds WHERE case_id = $1 AND kind = $2", case_id, kind.value)


async def cases_of(conn: asyncpg.Connection, person_id: str, case_id: str | None = None) -> set[str]:
    """The cases we hold ``person_id`` on (or just ``case_id``, if so): from our index and the key store's keys."""
    rows = await conn.fetch(
        f"""SELECT case_id FROM {SCHEMA}.case_people WHERE person_id = $1 AND ($2::text IS NULL OR case_id = $2)
            UNION
            SELECT case_id FROM {KEYSTORE}.data_keys WHERE person_id = $1 AND ($2::text IS NULL OR case_id = $2)
              AND NOT starts_with(case_id, $3)""",
        person_id,
        case_id,
        PERSON_SUBJECT_PREFIX,  # a person-wide command's own subject (its sealed reason's key) is no case
    )
    return {row["case_id"] for row in rows}


async def roles_of(conn: asyncpg.Connection, person_id: str) -> dict[str, str]:
    """Case id -> the person's role there, from our index."""
    rows = await conn.fetch(f"SELECT case_id, role FROM {SCHEMA}.case_people WHERE person_id = $1", person_id)
    return {row["case_id"]: row["role"] for row in rows}


async def erased_cases_of(conn: asyncpg.Connection, person_id: str) -> set[str]:
    """The cases where the person's data key is destroyed."""
    rows = await conn.fetch(
        f"SELECT case_id FROM {KEYSTORE}.data_keys WHERE person_id = $1 AND destroyed_at IS NOT NULL", person_id
    )
    return {row["case_id"] for row in rows}


async def on_case(conn: asyncpg.Connection, case_id: str, person_id: str) -> bool:
    return bool(await cases_of(conn, person_id, case_id))


async def mark_erased(conn: asyncpg.Connection, pairs: Sequence[tuple[str, str]], at: datetime) -> None:
    """(case id, person id) erased at ``at`` (the first erasure is kept)."""
    if not pairs:
        return
    await conn.execute(
        f"""UPDATE {SCHEMA}.case_people AS p SET erased_at = $3
            FROM unnest($1::text[], $2::text[]) AS e(case_id, person_id)
            WHERE p.case_id = e.case_id AND p.person_id = e.person_id AND p.erased_at IS NULL""",
        *zip(*pairs, strict=True),
        at,
    )


async def cases_erased_whole(conn: asyncpg.Connection) -> list[tuple[str, datetime]]:
    """Every case whose retention erased it whole, and when."""
    rows = await conn.fetch(
        f"SELECT case_id, retention_erased_at FROM {SCHEMA}.cases WHERE retention_erased_at IS NOT NULL"
    )
    return [(r["case_id"], r["retention_erased_at"]) for r in rows]


async def mark_case_erased(conn: asyncpg.Connection, case_id: str, at: datetime) -> None:
    await conn.execute(f"UPDATE {SCHEMA}.cases SET retention_erased_at = $2 WHERE case_id = $1", case_id, at)
    await conn.execute(
        f"UPDATE {SCHEMA}.case_people SET erased_at = $2 WHERE case_id = $1 AND erased_at IS NULL", case_id, at
    )


async def lock_closed_cases(conn: asyncpg.Connection, closed_before: datetime, limit: int) -> list[ClosedCase]:
    """Closed cases (closed at or before ``closed_before``) not yet wholly erased, with no hold standing,
    locked; a case another transaction holds (a hold being placed, another replica's sweep) is skipped."""
    cases = await conn.fetch(
        f"""SELECT case_id, outcome, closed_at FROM {SCHEMA}.cases c
            WHERE closed_at IS NOT NULL AND closed_at <= $1 AND retention_erased_at IS NULL
              AND NOT EXISTS (SELECT 1 FROM {SCHEMA}.retention_holds h WHERE h.case_id = c.case_id)
            ORDER BY swept_at NULLS FIRST, closed_at LIMIT $2 FOR UPDATE SKIP LOCKED""",
        closed_before,
        limit,
    )
    if not cases:
        return []
    # In turn: what is looked at now goes to the back of the queue, due or not.
    await conn.execute(
        f"UPDATE {SCHEMA}.cases SET swept_at = now() WHERE case_id = ANY($1::text[])", [c["case_id"] for c in cases]
    )
    # Holds again, now that the cases are locked: the statement above judged them by its own snapshot, and a
    # hold committed while it ran would not be seen there. A hold placed from now on waits for our lock.
    held = await holds_on(conn, [c["case_id"] for c in cases])
    cases = [c for c in cases if c["case_id"] not in held]
    if not cases:
        return []
    people = await conn.fetch(
        f"""SELECT case_id, person_id, role, erased_at IS NOT NULL AS erased FROM {SCHEMA}.case_people
            WHERE case_id = ANY($1::text[]) ORDER BY case_id, person_id""",
        [c["case_id"] for c in cases],
    )
    on: dict[str, list[Person]] = {}
    for p in people:
        on.setdefault(p["case_id"], []).append(Person(p["person_id"], p["role"], p["erased"]))
    return [ClosedCase(c["case_id"], c["outcome"], c["closed_at"], tuple(on.get(c["case_id"], ()))) for c in cases]


async def defer_erasures(
    conn: asyncpg.Connection, person_id: str, case_ids: Iterable[str], command_id: str, asked_by: Actor, at: datetime
) -> None:
    """Keep an erasure of ``person_id`` on each held case, to carry out when its last hold is lifted."""
    await conn.executemany(
        f"""INSERT INTO {SCHEMA}.deferred_erasures
                (case_id, person_id, command_id, asked_by_kind, asked_by_id, asked_at)
            VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (case_id, person_id) DO NOTHING""",
        [(case_id, person_id, command_id, asked_by.kind, asked_by.id, at) for case_id in sorted(set(case_ids))],
    )


async def take_deferred_erasures(conn: asyncpg.Connection, case_id: str) -> list[asyncpg.Record]:
    """The erasures kept on ``case_id`` (removed: the caller carries them out in this transaction)."""
    return await conn.fetch(
        f"""DELETE FROM {SCHEMA}.deferred_erasures WHERE case_id = $1
            RETURNING person_id, command_id, asked_by_kind, asked_by_id""",
        case_id,
    )


# --- someone who declines (rule 7) ---------------------------------------------------------------


async def keep_declined_erasure(
    conn: asyncpg.Connection,
    case_id: str,
    person_id: str,
    decline_id: str,
    declined_at: datetime,
    recorded_at: datetime,
    declined_by: Actor,
) -> None:
    """An erasure the consent service made due while a retention hold stands on the case: carried out when its
    last hold is lifted (``take_declined_erasures``). A repeat keeps the first."""
    await conn.execute(
        f"""INSERT INTO {SCHEMA}.declined_erasures
                (case_id, person_id, decline_id, declined_at, recorded_at, declined_by_kind, declined_by_id)
            VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (case_id, person_id) DO NOTHING""",
        case_id,
        person_id,
        decline_id,
        declined_at,
        recorded_at,
        declined_by.kind,
        declined_by.id,
    )


async def take_declined_erasures(conn: asyncpg.Connection, case_id: str) -> list[asyncpg.Record]:
    """The decliners' erasures a hold kept on ``case_id`` (removed: the caller carries them out in this
    transaction)."""
    return await conn.fetch(
        f"""DELETE FROM {SCHEMA}.declined_erasures WHERE case_id = $1
            RETURNING person_id, decline_id, declined_at, declined_by_kind, declined_by_id""",
        case_id,
    )
