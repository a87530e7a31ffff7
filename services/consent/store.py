"""The consent service's SQL: one JSON state row per case, locked for the batch that changes it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import asyncpg

from services.consent.domain import ConsentCase
from services.runtime.state import lock_states, save_states

SCHEMA = "consent"
CASES = f"{SCHEMA}.cases"


async def lock_cases(conn: asyncpg.Connection, case_ids: Iterable[str]) -> dict[str, ConsentCase | None]:
    rows = await lock_states(conn, CASES, case_ids)
    return {key: ConsentCase.from_json(state) if state else None for key, state in rows.items()}


async def save_cases(conn: asyncpg.Connection, cases: Mapping[str, ConsentCase | None]) -> None:
    await save_states(conn, CASES, {key: case.to_json() if case else None for key, case in cases.items()})
