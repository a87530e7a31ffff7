"""The consent service's SQL: one JSON state row per case, the facilitator directory, and the erasure watch."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

import asyncpg

from schemas.scheduling import FacilitatorRegistered
from services.consent.domain import ConsentCase, erasure_watch, load_case
from services.runtime.state import lock_states, save_states

SCHEMA = "consent"
CASES = f"{SCHEMA}.cases"


async def lock_cases(conn: asyncpg.Connection, case_ids: Iterable[str]) -> dict[str, ConsentCase | None]:
    rows = await lock_states(conn, CASES, case_ids, ConsentCase)
    return {key: load_case(state) if state else None for key, state in rows.items()}


async def save_cases(conn: asyncpg.Connection, cases: Mapping[str, ConsentCase | None]) -> None:
    states = {key: case.to_json() if case else None for key, case in cases.items()}
    await save_states(conn, CASES, states, ConsentCase)


async def record_facilitators(conn: asyncpg.Connection, registrations: Sequence[FacilitatorRegistered]) -> None:
    """Keep the latest registration of each facilitator (a re-registration may change the flag)."""
    await conn.executemany(
        f"""INSERT INTO {SCHEMA}.facilitators AS f (facilitator_id, specialist, registered_at) VALUES ($1, $2, $3)
            ON CONFLICT (facilitator_id) DO UPDATE SET specialist = excluded.specialist,
                registered_at = excluded.registered_at
            WHERE f.registered_at <= excluded.registered_at""",
        [(r.facilitator_id, r.specialist, r.registered_at) for r in registrations],
    )


async def lock_register(conn: asyncpg.Connection, facilitator_ids: Iterable[str]) -> None:
    """Serialise the transactions that read or change the register entry of any of ``facilitator_ids`` (a
    registration and an assignment of the same facilitator come on different partitions, so in transactions
    that may run at once): each waits for the other to commit, then reads what it wrote. Taken first in a
    batch, before any case row, in a fixed order."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('consent.facilitator:' || id, 0)) "
        "FROM unnest($1::text[]) AS id ORDER BY id",
        sorted(set(facilitator_ids)),
    )


async def registrations(
    conn: asyncpg.Connection, facilitator_ids: Iterable[str]
) -> dict[str, FacilitatorRegistered | None]:
    """The register as it stands for each of ``facilitator_ids`` (``None``: not registered)."""
    ids = sorted(set(facilitator_ids))
    rows = await conn.fetch(
        f"""SELECT facilitator_id, specialist, registered_at FROM {SCHEMA}.facilitators
            WHERE facilitator_id = ANY($1::text[])""",
        ids,
    )
    found: dict[str, FacilitatorRegistered | None] = dict.fromkeys(ids)
    for row in rows:
        found[row["facilitator_id"]] = FacilitatorRegistered.model_construct(
            facilitator_id=row["facilitator_id"], specialist=row["specialist"], registered_at=row["registered_at"]
        )
    return found


async def cases_assigned_to(conn: asyncpg.Connection, facilitator_ids: Iterable[str]) -> list[str]:
    """The cases each of ``facilitator_ids`` is assigned to."""
    rows = await conn.fetch(
        f"""SELECT DISTINCT c.key FROM unnest($1::text[]) AS f(id)
            JOIN {CASES} AS c
              ON c.state -> 'facilitators' @> jsonb_build_array(jsonb_build_object('facilitator_id', f.id))""",
        sorted(set(facilitator_ids)),
    )
    return [row["key"] for row in rows]


async def watch_erasures(conn: asyncpg.Connection, cases: Mapping[str, ConsentCase | None]) -> None:
    """Rewrite the erasure sweep's rows for ``cases`` from their state (``domain.erasure_watch``), in the
    transaction that saves them. A row already asked about keeps its ``requested_at``."""
    touched = dict(cases)  # a case whose pending erasure was called off or decided has rows to drop
    if not touched:
        return
    rows = [
        (key, person_id, at, case.force if case else None)
        for key, case in touched.items()
        for person_id, at in erasure_watch(case)
    ]
    await conn.execute(
        f"""DELETE FROM {SCHEMA}.erasure_watch w WHERE w.case_id = ANY($1::text[])
            AND (w.case_id, w.person_id, w.recorded_at) NOT IN
                (SELECT * FROM unnest($2::text[], $3::text[], $4::timestamptz[]))""",
        sorted(touched),
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
    )
    if rows:  # a case that learnt its force late has it on its rows from then on
        await conn.executemany(
            f"""INSERT INTO {SCHEMA}.erasure_watch AS w (case_id, person_id, recorded_at, force) VALUES ($1, $2, $3, $4)
                ON CONFLICT (case_id, person_id) DO UPDATE SET force = excluded.force
                WHERE w.force IS DISTINCT FROM excluded.force""",
            rows,
        )


async def erasures_due(
    conn: asyncpg.Connection, recorded_before: datetime, *, asked_before: datetime, limit: int = 500
) -> dict[str, str | None]:
    """Cases with someone whose decline was recorded before ``recorded_before`` (the grace period has run), not
    asked about since ``asked_before``, with each case's force; marked as asked about now. Rows another replica's
    sweep holds are skipped; no case's state is read."""
    rows = await conn.fetch(
        f"""SELECT case_id, person_id, force FROM {SCHEMA}.erasure_watch
            WHERE recorded_at <= $1 AND (requested_at IS NULL OR requested_at < $2)
            ORDER BY recorded_at, case_id, person_id LIMIT $3 FOR UPDATE SKIP LOCKED""",
        recorded_before,
        asked_before,
        limit,
    )
    if not rows:
        return {}
    await conn.execute(
        f"""UPDATE {SCHEMA}.erasure_watch w SET requested_at = now()
            FROM unnest($1::text[], $2::text[]) AS due(case_id, person_id)
            WHERE w.case_id = due.case_id AND w.person_id = due.person_id""",
        [r["case_id"] for r in rows],
        [r["person_id"] for r in rows],
    )
    return {r["case_id"]: r["force"] for r in rows}
