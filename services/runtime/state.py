"""Keyed JSON state rows: load a batch's keys under row locks, write them back in one statement.

Plumbing for services whose state per key (a case, say) is one JSON document decided by pure code.
The table needs ``key text PRIMARY KEY, state jsonb, updated_at timestamptz``. Given the document's type,
the personal values it marks are sealed on save and opened on load (``services.runtime.privacy``), under
the key's case: the key must then be the case id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import asyncpg

from services.runtime import privacy


async def lock_states(
    conn: asyncpg.Connection, table: str, keys: Iterable[str], model: type[Any] | None = None
) -> dict[str, str | bytes | None]:
    """The state of each key (``None`` where there is none yet), every row locked until commit.

    Keys are locked in sorted order, so two transactions over overlapping keys cannot deadlock; a
    placeholder row is made for an unknown key so that it can be locked too (``save_states`` removes it
    again if it is still empty).
    """
    ordered = sorted(set(keys))
    if not ordered:
        return {}
    # One statement: ``ON CONFLICT DO UPDATE`` locks an existing row just as ``FOR UPDATE`` would.
    rows = await conn.fetch(
        f"""INSERT INTO {table} AS t (key) SELECT unnest($1::text[]) ORDER BY 1
            ON CONFLICT (key) DO UPDATE SET updated_at = t.updated_at
            RETURNING key, state""",
        ordered,
    )
    states = [row["state"] for row in rows]
    if model is not None:
        states = await privacy.batch().open_json(conn, model, states, [row["key"] for row in rows])
    return {row["key"]: state for row, state in zip(rows, states, strict=True)}


async def save_states(
    conn: asyncpg.Connection, table: str, states: Mapping[str, str | None], model: type[Any] | None = None
) -> None:
    keys = list(states)
    documents = [states[k] for k in keys]
    if model is not None:
        documents = await privacy.batch().seal_json(conn, model, list(zip(documents, keys, strict=True)))
    await conn.execute(
        f"""UPDATE {table} AS t SET state = u.state::jsonb, updated_at = now()
            FROM unnest($1::text[], $2::text[]) AS u(key, state) WHERE t.key = u.key""",
        keys,
        documents,
    )
    await conn.execute(f"DELETE FROM {table} WHERE key = ANY($1::text[]) AND state IS NULL", keys)
