"""The referral service's SQL: crime files and Victims' Code clocks, read and written a batch at a time."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from schemas.referral import case_id_for
from schemas.upstream import CrimeOutcomeRecorded, CrimeRecorded, ReferralRequested
from services.referral.domain import CaseStatus, CrimeFile, VictimClock
from services.runtime import privacy

SCHEMA = "referral"


async def lock_crime_files(
    conn: asyncpg.Connection, files: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], CrimeFile]:
    """Load (creating where new) and row-lock the ``files`` named (force, crime reference), in a fixed order, in
    one statement: ``ON CONFLICT DO UPDATE`` locks an existing row just as ``FOR UPDATE`` would."""
    ordered = sorted(set(files))
    # A file from before forces were told apart (force '') is adopted by the first force to speak of its crime;
    # it keeps its case ids (``legacy_id``).
    await conn.execute(
        f"""UPDATE {SCHEMA}.crime_files AS f SET force = u.force
            FROM unnest($1::text[], $2::text[]) AS u(force, ref)
            WHERE f.force = '' AND f.crime_reference = u.ref AND u.force <> ''
              AND NOT EXISTS (SELECT 1 FROM {SCHEMA}.crime_files AS g
                              WHERE g.force = u.force AND g.crime_reference = u.ref)""",
        [force for force, _ in ordered],
        [ref for _, ref in ordered],
    )
    rows = await conn.fetch(
        f"""INSERT INTO {SCHEMA}.crime_files AS f (force, crime_reference, case_id)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ORDER BY 1, 2
            ON CONFLICT (force, crime_reference) DO UPDATE SET updated_at = f.updated_at
            RETURNING *""",
        [force for force, _ in ordered],
        [ref for _, ref in ordered],
        [case_id_for(force, ref) for force, ref in ordered],
    )
    keys = privacy.batch()  # what upstream told us about people is kept sealed, under the case
    cases = [r["case_id"] for r in rows]
    # Opened as models the batch remembers: a crime or outcome written back unchanged keeps its tokens.
    crimes = await keys.open_models(conn, CrimeRecorded, [r["crime"] for r in rows], cases)
    outcomes = await keys.open_models(conn, CrimeOutcomeRecorded, [r["outcome"] for r in rows], cases)
    requests = await keys.open_json(conn, _Requests, [r["requests"] for r in rows], cases)
    others = await keys.open_json(conn, _Outcomes, [r["co_outcomes"] for r in rows], cases)
    return {
        (row["force"], row["crime_reference"]): _file_from_row(row, crime, outcome, request, other)
        for row, crime, outcome, request, other in zip(rows, crimes, outcomes, requests, others, strict=True)
    }


_Requests = list[ReferralRequested]
_Outcomes = list[CrimeOutcomeRecorded]


async def files_of_cases(conn: asyncpg.Connection, case_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """The file (force, crime reference) of each of ``case_ids`` that is a file's current case."""
    rows = await conn.fetch(
        f"SELECT case_id, force, crime_reference FROM {SCHEMA}.crime_files WHERE case_id = ANY($1::text[])",
        list(case_ids),
    )
    return {r["case_id"]: (r["force"], r["crime_reference"]) for r in rows}


def _file_from_row(
    row: asyncpg.Record,
    crime: CrimeRecorded | None,
    outcome: CrimeOutcomeRecorded | None,
    requests: str | bytes | None,
    others: str | bytes | None,
) -> CrimeFile:
    return CrimeFile(
        crime_reference=row["crime_reference"],
        force=row["force"],
        referral=row["referral"],
        legacy_id=row["legacy_id"],
        crime=crime,
        outcome=outcome,
        requests=tuple(ReferralRequested.model_validate(r) for r in json.loads(requests or "[]")),
        co_outcomes=tuple(CrimeOutcomeRecorded.model_validate(o) for o in json.loads(others or "[]")),
        status=CaseStatus(row["status"]),
        opened_at=row["opened_at"],
        clocked_victims=frozenset(row["clocked_victims"]),
    )


async def save_crime_files(conn: asyncpg.Connection, files: Sequence[CrimeFile]) -> None:
    """Write back a batch of files in one statement (one round trip, however many files), what they hold
    about people sealed."""
    keys, cases = privacy.batch(), [f.case_id for f in files]
    requests = ["[" + ",".join(r.model_dump_json() for r in f.requests) + "]" for f in files]
    others = ["[" + ",".join(o.model_dump_json() for o in f.co_outcomes) + "]" for f in files]
    await conn.execute(
        f"""UPDATE {SCHEMA}.crime_files AS f
            SET crime = u.crime::jsonb, outcome = u.outcome::jsonb, requests = u.requests::jsonb,
                status = u.status, opened_at = u.opened_at,
                clocked_victims = coalesce(string_to_array(u.clocked, chr(31)), '{{}}'),
                referral = u.referral, case_id = u.case_id, co_outcomes = u.others::jsonb, updated_at = now()
            FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::text[],
                        $8::text[], $9::int[], $10::text[], $11::text[])
                 AS u(crime_reference, crime, outcome, requests, status, opened_at, clocked, force, referral, case_id,
                      others)
            WHERE f.force = u.force AND f.crime_reference = u.crime_reference""",
        [f.crime_reference for f in files],
        await keys.seal_models(conn, CrimeRecorded, [(f.crime, f.case_id) for f in files]),
        await keys.seal_models(conn, CrimeOutcomeRecorded, [(f.outcome, f.case_id) for f in files]),
        await keys.seal_json(conn, _Requests, list(zip(requests, cases, strict=True))),
        [f.status.value for f in files],
        [f.opened_at for f in files],
        # text[][] cannot be ragged, so each file's victims travel as one unit-separator-joined string
        [chr(31).join(sorted(f.clocked_victims)) if f.clocked_victims else None for f in files],
        [f.force for f in files],
        [f.referral for f in files],
        cases,
        await keys.seal_json(conn, _Outcomes, list(zip(others, cases, strict=True))),
    )


async def insert_clocks(conn: asyncpg.Connection, clocks: Sequence[VictimClock]) -> None:
    if not clocks:
        return
    await conn.execute(
        f"""INSERT INTO {SCHEMA}.victim_clocks
              (crime_reference, person_id, case_id, reported_at, due_by, enhanced_rights, force)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::bool[],
                                 $7::text[])
            ON CONFLICT DO NOTHING""",
        [c.crime_reference for c in clocks],
        [c.person_id for c in clocks],
        [c.case_id for c in clocks],
        [c.reported_at for c in clocks],
        [c.due_by for c in clocks],
        [c.enhanced_rights for c in clocks],
        [c.force for c in clocks],
    )


def _clock_from_row(row: asyncpg.Record) -> VictimClock:
    return VictimClock(
        crime_reference=row["crime_reference"],
        person_id=row["person_id"],
        force=row["force"],
        case_id=row["case_id"],
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
            WHERE crime_reference = $1 AND person_id = $2 AND force = $5""",
        [(c.crime_reference, c.person_id, c.provided_at, c.breached_at, c.force) for c in clocks],
    )


async def count_open_clocks(conn: asyncpg.Connection) -> tuple[int, int]:
    """Victims' Code deadlines still open: (running and not yet passed, passed unmet)."""
    row = await conn.fetchrow(
        f"""SELECT count(*) FILTER (WHERE breached_at IS NULL) AS due,
                  count(*) FILTER (WHERE breached_at IS NOT NULL) AS overdue
             FROM {SCHEMA}.victim_clocks WHERE provided_at IS NULL"""
    )
    return row["due"], row["overdue"]
