"""The referral service's SQL: crime files and Victims' Code clocks, read and written a batch at a time."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from schemas.commands import SupportReferralOutcome
from schemas.referral import DeclineReason, EarlierCaseEnded, case_id_for
from schemas.scheduling import ClosureReason
from schemas.upstream import CrimeOutcomeRecorded, CrimeRecorded, ReferralRequested
from services.referral.domain import CaseStatus, CrimeFile, RiskAssessment, SupportClock, VictimClock
from services.referral.reoffending import EndedCase
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
    return await _open_files(conn, rows)


async def read_crime_file(conn: asyncpg.Connection, force: str, crime_reference: str) -> CrimeFile | None:
    """A file as committed, without locking it (to read what it says, e.g. whether its case is sensitive)."""
    rows = await conn.fetch(
        f"SELECT * FROM {SCHEMA}.crime_files WHERE force = $1 AND crime_reference = $2", force, crime_reference
    )
    return next(iter((await _open_files(conn, rows)).values()), None)


async def _open_files(conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> dict[tuple[str, str], CrimeFile]:
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


async def index_file_offenders(conn: asyncpg.Connection, files: Sequence[CrimeFile]) -> None:
    """Index which offenders these files' outcomes name (``file_offenders``, for outcomes read before the case they
    reoffend against ended). Called with the files an outcome changed this batch: the others' rows are there."""
    named = sorted({(f.force, o.offender.person_id, f.crime_reference) for f in files for o in f.outcomes})
    if not named:
        return
    await conn.execute(
        f"""INSERT INTO {SCHEMA}.file_offenders (force, person_id, crime_reference)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING""",
        [n[0] for n in named],
        [n[1] for n in named],
        [n[2] for n in named],
    )


async def files_naming(conn: asyncpg.Connection, offenders: Sequence[tuple[str, str]]) -> list[CrimeFile]:
    """The files (as committed, unlocked) whose outcomes name any of these (force, offender person id) pairs: an
    indexed lookup (``file_offenders``' primary key)."""
    pairs = sorted(set(offenders))
    if not pairs:
        return []
    rows = await conn.fetch(
        f"""SELECT f.* FROM {SCHEMA}.crime_files AS f
            WHERE (f.force, f.crime_reference) IN (
                SELECT o.force, o.crime_reference FROM {SCHEMA}.file_offenders AS o
                JOIN unnest($1::text[], $2::text[]) AS u(force, person_id)
                  ON o.force = u.force AND o.person_id = u.person_id)
            ORDER BY f.force, f.crime_reference""",
        [force for force, _ in pairs],
        [person for _, person in pairs],
    )
    return list((await _open_files(conn, rows)).values())


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


# --- the support-referral clock -----------------------------------------------------------------


async def insert_support_clocks(conn: asyncpg.Connection, clocks: Sequence[SupportClock]) -> None:
    if not clocks:
        return
    await conn.execute(
        f"""INSERT INTO {SCHEMA}.support_clocks (force, crime_reference, person_id, case_id, reported_at, due_by)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                                 $6::timestamptz[])
            ON CONFLICT DO NOTHING""",
        [c.force for c in clocks],
        [c.crime_reference for c in clocks],
        [c.person_id for c in clocks],
        [c.case_id for c in clocks],
        [c.reported_at for c in clocks],
        [c.due_by for c in clocks],
    )


def _support_clock_from_row(row: asyncpg.Record) -> SupportClock:
    return SupportClock(
        crime_reference=row["crime_reference"],
        person_id=row["person_id"],
        force=row["force"],
        case_id=row["case_id"],
        reported_at=row["reported_at"],
        due_by=row["due_by"],
        decided_at=row["decided_at"],
        outcome=SupportReferralOutcome(row["outcome"]) if row["outcome"] else None,
        breached_at=row["breached_at"],
    )


async def lock_support_clock(conn: asyncpg.Connection, case_id: str, person_id: str) -> SupportClock | None:
    row = await conn.fetchrow(
        f"SELECT * FROM {SCHEMA}.support_clocks WHERE case_id = $1 AND person_id = $2 FOR UPDATE",
        case_id,
        person_id,
    )
    return _support_clock_from_row(row) if row else None


async def lock_overdue_support_clocks(conn: asyncpg.Connection, now: datetime, limit: int = 500) -> list[SupportClock]:
    """Running support-referral clocks whose deadline has passed (the partial index ``support_clocks_running``);
    rows another worker is sweeping are skipped."""
    rows = await conn.fetch(
        f"""SELECT * FROM {SCHEMA}.support_clocks
            WHERE decided_at IS NULL AND breached_at IS NULL AND due_by <= $1
            ORDER BY due_by LIMIT $2 FOR UPDATE SKIP LOCKED""",
        now,
        limit,
    )
    return [_support_clock_from_row(r) for r in rows]


async def save_support_clocks(conn: asyncpg.Connection, clocks: Sequence[SupportClock]) -> None:
    await conn.executemany(
        f"""UPDATE {SCHEMA}.support_clocks SET decided_at = $4, outcome = $5, breached_at = $6
            WHERE force = $1 AND crime_reference = $2 AND person_id = $3""",
        [
            (c.force, c.crime_reference, c.person_id, c.decided_at, c.outcome.value if c.outcome else None,
             c.breached_at)
            for c in clocks
        ],
    )  # fmt: skip


# --- risk assessments (the sensitive-case gate on RJ information) --------------------------------


async def read_assessments(conn: asyncpg.Connection, case_id: str) -> list[RiskAssessment]:
    """Every risk assessment recorded for the case, in the order they were made."""
    rows = await conn.fetch(f"SELECT * FROM {SCHEMA}.risk_assessments WHERE case_id = $1 ORDER BY assessed_at", case_id)
    return [RiskAssessment(r["case_id"], r["assessed_at"], r["safe_to_proceed"]) for r in rows]


async def save_assessments(conn: asyncpg.Connection, assessments: Sequence[RiskAssessment]) -> None:
    """Keep every assessment (the gate asks which stood at a moment); a repeat changes nothing, and of two made
    at the same moment the unsafe one stands (``domain.latest_assessment``)."""
    await conn.executemany(
        f"""INSERT INTO {SCHEMA}.risk_assessments (case_id, assessed_at, safe_to_proceed) VALUES ($1, $2, $3)
            ON CONFLICT (case_id, assessed_at) DO UPDATE
            SET safe_to_proceed = {SCHEMA}.risk_assessments.safe_to_proceed AND excluded.safe_to_proceed""",
        sorted((a.case_id, a.assessed_at, a.safe_to_proceed) for a in assessments),
    )


# --- ended cases and reoffending ----------------------------------------------------------------


async def lock_offenders(conn: asyncpg.Connection, offenders: Sequence[tuple[str, str]]) -> None:
    """Serialise the transactions that read or change the reoffending index of any of these (force, offender
    person id) pairs: a case's closure (rj.scheduling, keyed by the case) and an outcome naming its offender
    (crime.events, keyed by the crime reference) come on different partitions, so in transactions that may run at
    once; each must see what the other committed, or neither records the reoffence. A transaction-scoped
    advisory lock per offender, taken once a batch, after its file rows and before reading the index, in a fixed
    order (as consent's ``lock_register``)."""
    pairs = sorted(set(offenders))
    if not pairs:
        return
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('referral.offender:' || u.force || chr(31) || u.person, 0)) "
        "FROM unnest($1::text[], $2::text[]) AS u(force, person) ORDER BY u.force, u.person",
        [force for force, _ in pairs],
        [person for _, person in pairs],
    )


async def insert_ended_cases(conn: asyncpg.Connection, cases: Sequence[EndedCase]) -> None:
    """Remember cases that ended, and index their offenders by (force, person id); an ending seen again (a
    replayed closure) changes nothing."""
    if not cases:
        return
    await conn.executemany(
        f"""INSERT INTO {SCHEMA}.ended_cases
              (case_id, force, crime_reference, ended_as, closure_reason, decline_reason, ended_at, offender_ids,
               crime_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING""",
        [
            (c.case_id, c.force, c.crime_reference, c.ended_as.value,
             c.closure_reason.value if c.closure_reason else None, c.decline_reason.value if c.decline_reason else None,
             c.ended_at, sorted(c.offender_ids), c.crime_at)
            for c in cases
        ],
    )  # fmt: skip
    await conn.execute(
        f"""INSERT INTO {SCHEMA}.ended_case_offenders (force, person_id, case_id)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING""",
        [c.force for c in cases for _ in c.offender_ids],
        [p for c in cases for p in sorted(c.offender_ids)],
        [c.case_id for c in cases for _ in c.offender_ids],
    )


async def lock_ended_cases_of(conn: asyncpg.Connection, offenders: Sequence[tuple[str, str]]) -> list[EndedCase]:
    """The ended cases of these (force, offender person id) pairs, row-locked in case order: an indexed lookup
    (``ended_case_offenders``' primary key)."""
    pairs = sorted(set(offenders))
    if not pairs:
        return []
    rows = await conn.fetch(
        f"""SELECT e.* FROM {SCHEMA}.ended_cases AS e
            WHERE e.case_id IN (SELECT o.case_id FROM {SCHEMA}.ended_case_offenders AS o
                                JOIN unnest($1::text[], $2::text[]) AS u(force, person_id)
                                  ON o.force = u.force AND o.person_id = u.person_id)
            ORDER BY e.case_id FOR UPDATE""",
        [force for force, _ in pairs],
        [person for _, person in pairs],
    )
    return [_ended_case_from_row(r) for r in rows]


async def lock_ended_cases(conn: asyncpg.Connection, case_ids: Sequence[str]) -> list[EndedCase]:
    """These ended cases as stored (an ending seen again keeps what it recorded), row-locked in case order."""
    rows = await conn.fetch(
        f"SELECT * FROM {SCHEMA}.ended_cases WHERE case_id = ANY($1::text[]) ORDER BY case_id FOR UPDATE",
        sorted(set(case_ids)),
    )
    return [_ended_case_from_row(r) for r in rows]


async def lock_ended_cases_to_weigh(conn: asyncpg.Connection, limit: int = 200) -> list[EndedCase]:
    """Ended cases whose outcomes already on file were never weighed against them (migration 007's backfill), a
    batch in case order; rows another worker is weighing are skipped (the partial index
    ``ended_cases_on_file_unweighed``)."""
    rows = await conn.fetch(
        f"""SELECT * FROM {SCHEMA}.ended_cases WHERE NOT on_file_weighed
            ORDER BY case_id LIMIT $1 FOR UPDATE SKIP LOCKED""",
        limit,
    )
    return [_ended_case_from_row(r) for r in rows]


async def mark_on_file_weighed(conn: asyncpg.Connection, case_ids: Sequence[str]) -> None:
    await conn.execute(
        f"UPDATE {SCHEMA}.ended_cases SET on_file_weighed = true WHERE case_id = ANY($1::text[])", list(case_ids)
    )


def _ended_case_from_row(r: asyncpg.Record) -> EndedCase:
    return EndedCase(
        case_id=r["case_id"],
        force=r["force"],
        crime_reference=r["crime_reference"],
        ended_as=EarlierCaseEnded(r["ended_as"]),
        ended_at=r["ended_at"],
        offender_ids=frozenset(r["offender_ids"]),
        closure_reason=ClosureReason(r["closure_reason"]) if r["closure_reason"] else None,
        decline_reason=DeclineReason(r["decline_reason"]) if r["decline_reason"] else None,
        reoffences=frozenset(r["reoffences"]),
        crime_at=r["crime_at"],
    )


async def save_reoffences(conn: asyncpg.Connection, cases: Sequence[EndedCase]) -> None:
    await conn.executemany(
        f"UPDATE {SCHEMA}.ended_cases SET reoffences = $2 WHERE case_id = $1",
        [(c.case_id, sorted(c.reoffences)) for c in cases],
    )
