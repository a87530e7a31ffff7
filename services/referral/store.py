"""The referral service's SQL: crime files and Victims' Code clocks, read and written a batch at a time."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from schemas.upstream import CrimeOutcomeRecorded, CrimeRecorded, ReferralRequested
from services.referral.domain import CaseStatus, CrimeFile, VictimClock, case_id_for
from services.runtime import privacy

SCHEMA = "referral"


async def lock_crime_files(conn: asyncpg.Connection, references: Sequence[str]) -> dict[str, CrimeFile]:
    """Load (creating where new) and row-lock the files of ``references``, in a fixed order, in one
    statement: ``ON CONFLICT DO UPDATE`` locks an existing row just as ``FOR UPDATE`` would."""
    ordered = sorted(set(references))
    rows = await conn.fetch(
        f"""INSERT INTO {SCHEMA}.crime_files AS f (crime_reference, case_id)
            SELECT * FROM unnest($1::text[], $2::text[]) ORDER BY 1
            ON CONFLICT (crime_reference) DO UPDATE SET updated_at = f.updated_at
            RETURNING *""",
        ordered,
        [case_id_for(r) for r in ordered],
    )
    keys = privacy.batch()  # what upstream told us about people is kept sealed, under the case
    cases = [r["case_id"] for r in rows]
    # Opened as models the batch remembers: a crime or outcome written back unchanged keeps its tokens.
    crimes = await keys.open_models(conn, CrimeRecorded, [r["crime"] for r in rows], cases)
    outcomes = await keys.open_models(conn, CrimeOutcomeRecorded, [r["outcome"] for r in rows], cases)
    requests = await keys.open_json(conn, _Requests, [r["requests"] for r in rows], cases)
    return {
        row["crime_reference"]: _file_from_row(row, crime, outcome, request)
        for row, crime, outcome, request in zip(rows, crimes, outcomes, requests, strict=True)
    }


_Requests = list[ReferralRequested]


def _file_from_row(
    row: asyncpg.Record,
    crime: CrimeRecorded | None,
    outcome: CrimeOutcomeRecorded | None,
    requests: str | bytes | None,
) -> CrimeFile:
    return CrimeFile(
        crime_reference=row["crime_reference"],
        crime=crime,
        outcome=outcome,
        requests=tuple(ReferralRequested.model_validate(r) for r in json.loads(requests or "[]")),
        status=CaseStatus(row["status"]),
        opened_at=row["opened_at"],
        clocked_victims=frozenset(row["clocked_victims"]),
    )


async def save_crime_files(conn: asyncpg.Connection, files: Sequence[CrimeFile]) -> None:
    """Write back a batch of files in one statement (one round trip, however many files), what they hold
    about people sealed."""
    keys, cases = privacy.batch(), [f.case_id for f in files]
    requests = ["[" + ",".join(r.model_dump_json() for r in f.requests) + "]" for f in files]
    await conn.execute(
        f"""UPDATE {SCHEMA}.crime_files AS f
            SET crime = u.crime::jsonb, outcome = u.outcome::jsonb, requests = u.requests::jsonb,
                status = u.status, opened_at = u.opened_at,
                clocked_victims = coalesce(string_to_array(u.clocked, chr(31)), '{{}}'),
                updated_at = now()
            FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::text[])
                 AS u(crime_reference, crime, outcome, requests, status, opened_at, clocked)
            WHERE f.crime_reference = u.crime_reference""",
        [f.crime_reference for f in files],
        await keys.seal_models(conn, CrimeRecorded, [(f.crime, f.case_id) for f in files]),
        await keys.seal_models(conn, CrimeOutcomeRecorded, [(f.outcome, f.case_id) for f in files]),
        await keys.seal_json(conn, _Requests, list(zip(requests, cases, strict=True))),
        [f.status.value for f in files],
        [f.opened_at for f in files],
        # text[][] cannot be ragged, so each file's victims travel as one unit-separator-joined string
        [chr(31).join(sorted(f.clocked_victims)) if f.clocked_victims else None for f in files],
    )


async def insert_clocks(conn: asyncpg.Connection, clocks: Sequence[VictimClock]) -> None:
    if not clocks:
        return
    await conn.execute(
        f"""INSERT INTO {SCHEMA}.victim_clocks
              (crime_reference, person_id, case_id, reported_at, due_by, enhanced_rights)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::bool[])
            ON CONFLICT DO NOTHING""",
        [c.crime_reference for c in clocks],
        [c.person_id for c in clocks],
        [c.case_id for c in clocks],
        [c.reported_at for c in clocks],
        [c.due_by for c in clocks],
        [c.enhanced_rights for c in clocks],
    )


def _clock_from_row(row: asyncpg.Record) -> VictimClock:
    return VictimClock(
        crime_reference=row["crime_reference"],
        person_id=row["person_id"],
        reported_at=row["reported_at"],
        due_by=row["due_by"],
        enhanced_rights=row["enhanced_rights"],
        provided_at=row["provided_at"],
        breached_at=row["breached_at"],
    )


async def lock_clock(conn: asyncpg.Connection, case_id: str, person_id: str) -> VictimClock | None:
    row = await conn.fetchrow(
        f"SELECT * FROM {SCHEMA}.victim_clocks WHERE case_id = $1 AND person_id = $2 FOR UPDATE",
        case_id,
        person_id,
    )
    return _clock_from_row(row) if row else None


async def lock_overdue_clocks(conn: asyncpg.Connection, now: datetime, limit: int = 500) -> list[VictimClock]:
    """Running clocks whose deadline has passed; rows another worker is sweeping are skipped."""
    rows = await conn.fetch(
        f"""SELECT * FROM {SCHEMA}.victim_clocks
            WHERE provided_at IS NULL AND breached_at IS NULL AND due_by <= $1
            ORDER BY due_by LIMIT $2 FOR UPDATE SKIP LOCKED""",
        now,
        limit,
    )
    return [_clock_from_row(r) for r in rows]


async def save_clocks(conn: asyncpg.Connection, clocks: Sequence[VictimClock]) -> None:
    await conn.executemany(
        f"""UPDATE {SCHEMA}.victim_clocks SET provided_at = $3, breached_at = $4
            WHERE crime_reference = $1 AND person_id = $2""",
        [(c.crime_reference, c.person_id, c.provided_at, c.breached_at) for c in clocks],
    )


async def count_open_clocks(conn: asyncpg.Connection) -> tuple[int, int]:
    """Victims' Code deadlines still open: (running and not yet passed, passed unmet)."""
    row = await conn.fetchrow(
        f"""SELECT count(*) FILTER (WHERE breached_at IS NULL) AS due,
                  count(*) FILTER (WHERE breached_at IS NOT NULL) AS overdue
             FROM {SCHEMA}.victim_clocks WHERE provided_at IS NULL"""
    )
    return row["due"], row["overdue"]
