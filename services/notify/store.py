"""The notify service's SQL: one sealed JSON state row per case, staff's and venues' registrations, and the table
of scheduled sends (every message decided, waiting, sending, and how it ended)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from pydantic import BaseModel, ConfigDict

from schemas.common import Channel
from schemas.notify import CancelReason, NotificationKind, RecipientKind
from schemas.pii import CasePii
from schemas.scheduling import FacilitatorRegistered, VenueRegistered
from services.notify.domain import Cancel, Intent, NotifyCase
from services.runtime import privacy
from services.runtime.state import lock_states, save_states

SCHEMA = "notify"
CASES = f"{SCHEMA}.cases"
SENDS = f"{SCHEMA}.scheduled_sends"
DUE_CHANNEL = "notify_due"
"""The channel the intake's transaction notifies on commit (``pg_notify``) and the sender listens on."""
SENDER_LOCK_SPACE = 0x6E6F7466
"""The first key of the two-key advisory locks that say a sender process is alive (the second: its id). The
two-key space never meets the one-key locks other code takes (migrations, the resource book)."""


class SendIntent(BaseModel):
    """The sealed part of a scheduled send: who it is for (under the case's key) and what its context is built
    from (ids, times and kinds only)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    recipient_id: Annotated[str, CasePii]
    cause_event_id: str
    facts: dict[str, Any] = {}


# --- cases -------------------------------------------------------------------------------------------------


async def lock_cases(conn: asyncpg.Connection, case_ids: Iterable[str]) -> dict[str, NotifyCase | None]:
    rows = await lock_states(conn, CASES, case_ids, NotifyCase)
    return {key: NotifyCase.from_json(state) if state else None for key, state in rows.items()}


async def save_cases(conn: asyncpg.Connection, cases: Mapping[str, NotifyCase | None]) -> None:
    states = {key: case.to_json() if case else None for key, case in cases.items()}
    await save_states(conn, CASES, states, NotifyCase)


async def read_case(conn: asyncpg.Connection, case_id: str) -> NotifyCase | None:
    """The case as it stands, opened, without locking it (the sender reads; only intake writes)."""
    return (await read_cases(conn, [case_id])).get(case_id)


async def read_cases(conn: asyncpg.Connection, case_ids: Iterable[str]) -> dict[str, NotifyCase]:
    """The cases as they stand, opened, in one query, without locking them; a case not (or no longer) held is
    absent."""
    rows = await conn.fetch(f"SELECT key, state FROM {CASES} WHERE key = ANY($1::text[])", list(set(case_ids)))
    opened = await privacy.batch().open_json(conn, NotifyCase, [r["state"] for r in rows], [r["key"] for r in rows])
    return {r["key"]: NotifyCase.from_json(state) for r, state in zip(rows, opened, strict=True) if state}


# --- registrations ---------------------------------------------------------------------------------------


async def record_facilitators(conn: asyncpg.Connection, facts: Sequence[FacilitatorRegistered]) -> None:
    await conn.executemany(
        f"""INSERT INTO {SCHEMA}.facilitators AS f (facilitator_id, email, display_name, registered_at)
            VALUES ($1, $2, $3, $4)
            ON CONFLICT (facilitator_id) DO UPDATE SET email = excluded.email, display_name = excluded.display_name,
                registered_at = excluded.registered_at
            WHERE f.registered_at <= excluded.registered_at""",
        [(f.facilitator_id, f.email, f.display_name, f.registered_at) for f in facts],
    )


async def record_venues(conn: asyncpg.Connection, facts: Sequence[VenueRegistered]) -> None:
    await conn.executemany(
        f"""INSERT INTO {SCHEMA}.venues AS v (venue_id, name, address, arrival, registered_at)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (venue_id) DO UPDATE SET name = excluded.name, address = excluded.address,
                arrival = excluded.arrival, registered_at = excluded.registered_at
            WHERE v.registered_at <= excluded.registered_at""",
        [(v.venue_id, v.name, v.address, v.arrival, v.registered_at) for v in facts],
    )


async def facilitator(conn: asyncpg.Connection, facilitator_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT * FROM {SCHEMA}.facilitators WHERE facilitator_id = $1", facilitator_id)


async def venue(conn: asyncpg.Connection, venue_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT * FROM {SCHEMA}.venues WHERE venue_id = $1", venue_id)


# --- scheduled sends ----------------------------------------------------------------------------------------


async def schedule(
    conn: asyncpg.Connection, case_id: str, force: str | None, intents: Sequence[Intent], *, failed: bool = False
) -> list[Intent]:
    """Insert ``intents`` (``failed``: recorded as failed at once, for no channel); return those not there before
    (a replay inserts nothing). The sender is woken when the transaction commits."""
    inserted = await schedule_many(conn, [(case_id, force, intents)], failed=failed)
    return [i for i in intents if i.notification_id in inserted]


async def schedule_many(
    conn: asyncpg.Connection,
    groups: Sequence[tuple[str, str | None, Sequence[Intent]]],
    *,
    failed: bool = False,
) -> set[str]:
    """``schedule`` for the intents of many cases, (case id, force, intents) each, in one statement with their
    keys loaded in one round trip; the notification ids inserted."""
    rows = [(case_id, force, i) for case_id, force, intents in groups for i in intents]
    if not rows:
        return set()
    sealed = await privacy.batch().seal_models(
        conn,
        SendIntent,
        [(SendIntent(recipient_id=i.recipient_id, cause_event_id=i.cause_event_id, facts=i.facts), case_id)
         for case_id, _, i in rows],
    )  # fmt: skip
    status = "failed" if failed else "waiting"
    inserted = await conn.fetch(
        f"""INSERT INTO {SENDS} (notification_id, case_id, force, kind, recipient_kind, channel, about, attempt,
                urgent, due_at, intent, status, detail, finished_at)
            SELECT n, ca, f, k, rk, c, a, att, u, d, i, $2, CASE WHEN $2 = 'failed' THEN 'no_safe_channel' END,
                   CASE WHEN $2 = 'failed' THEN now() END
              FROM unnest($1::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[], $8::bool[],
                          $9::timestamptz[], $10::text[], $11::text[], $12::text[])
                   AS t(n, k, rk, c, a, att, u, d, i, ca, f)
            ON CONFLICT (notification_id) DO NOTHING RETURNING notification_id""",
        [i.notification_id for _, _, i in rows],
        status,
        [i.kind.value for _, _, i in rows],
        [i.recipient_kind.value for _, _, i in rows],
        [i.channel.value if i.channel else None for _, _, i in rows],
        [i.about for _, _, i in rows],
        [i.attempt for _, _, i in rows],
        [i.urgent for _, _, i in rows],
        [i.due_at for _, _, i in rows],
        sealed,
        [case_id for case_id, _, _ in rows],
        [force for _, force, _ in rows],
    )
    done = {r["notification_id"] for r in inserted}
    if done and not failed:
        await conn.execute("SELECT pg_notify($1, '')", DUE_CHANNEL)
    return done


async def open_intents(conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> list[SendIntent]:
    opened = await privacy.batch().open_models(
        conn, SendIntent, [r["intent"] for r in rows], [r["case_id"] for r in rows]
    )
    return [o for o in opened if o is not None]


async def cancel_waiting(
    conn: asyncpg.Connection, case_id: str, cancels: Sequence[Cancel]
) -> list[tuple[asyncpg.Record, SendIntent, CancelReason]]:
    """Cancel the case's waiting sends that any of ``cancels`` matches, and those claimed whose channel has not been
    called yet (``send_started_at``: set under the row's lock by ``start_sending``, so the two never both win);
    return them, as they were, with why."""
    if not cancels:
        return []
    rows = await conn.fetch(
        f"""SELECT * FROM {SENDS}
             WHERE case_id = $1 AND (status = 'waiting' OR (status = 'sending' AND send_started_at IS NULL))
             ORDER BY notification_id FOR UPDATE""",
        case_id,
    )
    if not rows:
        return []
    intents = await open_intents(conn, rows)
    chosen: list[tuple[asyncpg.Record, SendIntent, CancelReason]] = []
    for row, intent in zip(rows, intents, strict=True):
        match = next(
            (
                c
                for c in cancels
                if c.matches(
                    recipient_id=intent.recipient_id,
                    recipient_kind=RecipientKind(row["recipient_kind"]),
                    kind=NotificationKind(row["kind"]),
                    about=row["about"],
                )
            ),
            None,
        )
        if match is not None:
            chosen.append((row, intent, match.reason))
    if chosen:
        await conn.execute(
            f"""UPDATE {SENDS} AS s SET status = 'cancelled', detail = u.reason, finished_at = now()
                FROM unnest($1::text[], $2::text[]) AS u(id, reason) WHERE s.notification_id = u.id""",
            [r["notification_id"] for r, _, _ in chosen],
            [reason.value for _, _, reason in chosen],
        )
    return chosen


async def withdraw_letters(
    conn: asyncpg.Connection, case_id: str, cancels: Sequence[Cancel]
) -> list[tuple[asyncpg.Record, SendIntent, CancelReason]]:
    """Take back the case's queued letters not printed yet that any of ``cancels`` matches (a withdrawal's cancel
    keeps the closure notice): withdrawn from the queue, their sends cancelled; return them, with why."""
    if not cancels:
        return []
    rows = await conn.fetch(
        f"""SELECT s.* FROM {SENDS} s JOIN {SCHEMA}.letters l ON l.notification_id = s.notification_id
             WHERE s.case_id = $1 AND s.status = 'sent' AND s.channel = 'letter'
               AND l.printed_at IS NULL AND l.withdrawn_at IS NULL
             ORDER BY s.notification_id FOR UPDATE OF s, l""",
        case_id,
    )
    if not rows:
        return []
    intents = await open_intents(conn, rows)
    chosen = [
        (row, intent, match.reason)
        for row, intent in zip(rows, intents, strict=True)
        if (match := _first_match(cancels, row, intent)) is not None
    ]
    if chosen:
        ids, reasons = [r["notification_id"] for r, _, _ in chosen], [reason.value for _, _, reason in chosen]
        await conn.execute(
            f"""UPDATE {SCHEMA}.letters AS l SET withdrawn_at = now(), withdrawn_reason = u.reason
                FROM unnest($1::text[], $2::text[]) AS u(id, reason) WHERE l.notification_id = u.id""",
            ids,
            reasons,
        )
        await conn.execute(
            f"""UPDATE {SENDS} AS s SET status = 'cancelled', detail = 'letter withdrawn: ' || u.reason,
                    finished_at = now()
                FROM unnest($1::text[], $2::text[]) AS u(id, reason) WHERE s.notification_id = u.id""",
            ids,
            reasons,
        )
    return chosen


def _first_match(cancels: Sequence[Cancel], row: asyncpg.Record, intent: SendIntent) -> Cancel | None:
    return next(
        (
            c
            for c in cancels
            if c.matches(
                recipient_id=intent.recipient_id,
                recipient_kind=RecipientKind(row["recipient_kind"]),
                kind=NotificationKind(row["kind"]),
                about=row["about"],
            )
        ),
        None,
    )


async def hold_sender_id(conn: asyncpg.Connection) -> int:
    """A fresh id for this sender process, locked (session-level advisory lock) on ``conn`` for as long as that
    connection lives: while it is held, no other replica takes the rows this process claimed; once the process
    is gone (and its connection with it) the lock is free and its ``sending`` rows are in doubt at once."""
    while True:
        claimer = int(await conn.fetchval(f"SELECT nextval('{SCHEMA}.sender_ids')"))
        if await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", SENDER_LOCK_SPACE, claimer):
            return claimer


async def claim_due(
    conn: asyncpg.Connection, now: datetime, limit: int, claimer: int | None = None
) -> list[asyncpg.Record]:
    """Mark up to ``limit`` due sends ``sending`` by ``claimer`` (another replica skips what this one holds); the
    caller commits before sending, so a crash while sending leaves them ``sending``: in doubt, never silently
    waiting again."""
    return await conn.fetch(
        f"""UPDATE {SENDS} AS s SET status = 'sending', tries = s.tries + 1, claimed_at = $1, claimed_by = $3
             WHERE s.notification_id IN (
                 SELECT notification_id FROM {SENDS} WHERE status = 'waiting' AND due_at <= $1
                 ORDER BY urgent DESC, due_at LIMIT $2 FOR UPDATE SKIP LOCKED)
            RETURNING s.*""",
        now,
        limit,
        claimer,
    )


async def claim_in_doubt(
    conn: asyncpg.Connection,
    claimed_before: datetime,
    limit: int,
    claimer: int | None = None,
    busy: Sequence[str] = (),
) -> list[asyncpg.Record]:
    """Sends in doubt, claimed again by ``claimer`` to be resolved (``services.notify.sender.resolve_in_doubt``):
    those ``sending`` since before ``claimed_before`` (the lease), and, at once, those whose claimer's lock is
    free (its process died mid-send). The lock is tried for the transaction only (``pg_try_advisory_xact_lock``):
    it fails while the live claimer holds it, and is let go at commit. Rows this process claimed itself are its
    own sends in flight, left to the lease; ``busy`` (this process's sends still running) never are: a send past
    the lease but still waiting on its channel is not in doubt, and taking it as such could send it twice."""
    return await conn.fetch(
        f"""UPDATE {SENDS} AS s SET claimed_at = now(), claimed_by = $3
             WHERE s.notification_id IN (
                 SELECT notification_id FROM {SENDS}
                  WHERE status = 'sending' AND notification_id <> ALL($4::text[])
                    AND (claimed_at < $1
                         OR (claimed_by IS NOT NULL AND claimed_by IS DISTINCT FROM $3
                             AND pg_try_advisory_xact_lock({SENDER_LOCK_SPACE}, claimed_by)))
                 ORDER BY claimed_at LIMIT $2 FOR UPDATE SKIP LOCKED)
            RETURNING s.*""",
        claimed_before,
        limit,
        claimer,
        list(busy),
    )


async def lock_sending(
    conn: asyncpg.Connection, notification_id: str, claimer: int | None = None
) -> asyncpg.Record | None:
    """The send, locked, if it is still ``sending`` and still ``claimer``'s (None: a stop cancelled it, another
    replica finished it, or another replica took it over as in doubt after the lease: then it is theirs to send,
    and only theirs)."""
    return await conn.fetchrow(
        f"""SELECT * FROM {SENDS} WHERE notification_id = $1 AND status = 'sending'
                AND claimed_by IS NOT DISTINCT FROM $2 FOR UPDATE""",
        notification_id,
        claimer,
    )


async def lock_sending_many(
    conn: asyncpg.Connection, notification_ids: Sequence[str], claimer: int | None = None
) -> set[str]:
    """``lock_sending`` for many sends at once (locked in id order): the ids still ``sending`` and ``claimer``'s."""
    rows = await conn.fetch(
        f"""SELECT notification_id FROM {SENDS} WHERE notification_id = ANY($1::text[]) AND status = 'sending'
                AND claimed_by IS NOT DISTINCT FROM $2 ORDER BY notification_id FOR UPDATE""",
        list(notification_ids),
        claimer,
    )
    return {r["notification_id"] for r in rows}


async def mark_started(conn: asyncpg.Connection, notification_id: str, now: datetime) -> None:
    """The channel is about to be called: from here on a stop no longer cancels this send (it may go out)."""
    await mark_started_many(conn, [notification_id], now)


async def mark_started_many(conn: asyncpg.Connection, notification_ids: Sequence[str], now: datetime) -> None:
    # The lease runs from here too: a send in doubt by lease is one whose channel call has outlasted it, not one
    # that waited long to be started.
    await conn.execute(
        f"UPDATE {SENDS} SET send_started_at = now(), claimed_at = $2 WHERE notification_id = ANY($1::text[])",
        list(notification_ids),
        now,
    )


async def count_doubt_round(conn: asyncpg.Connection, notification_id: str) -> int:
    """One more time its provider could not be asked about a send in doubt; how many so far (0: not sending)."""
    rounds = await conn.fetchval(
        f"""UPDATE {SENDS} SET doubt_rounds = doubt_rounds + 1 WHERE notification_id = $1 AND status = 'sending'
            RETURNING doubt_rounds""",
        notification_id,
    )
    return int(rounds or 0)


async def finish(
    conn: asyncpg.Connection, notification_id: str, status: str, *, provider_id: str | None, detail: str
) -> bool:
    """Record how a send ended; False if it was not ``sending`` any more (another replica resolved it)."""
    done = await conn.execute(
        f"""UPDATE {SENDS} SET status = $2, provider_id = $3, detail = $4, finished_at = now()
             WHERE notification_id = $1 AND status = 'sending'""",
        notification_id,
        status,
        provider_id,
        detail[:500],
    )
    return bool(done.endswith(" 1"))


async def retry_later(conn: asyncpg.Connection, notification_id: str, due_at: datetime, detail: str) -> None:
    await conn.execute(
        f"""UPDATE {SENDS} SET status = 'waiting', due_at = $2, detail = $3, claimed_at = NULL, send_started_at = NULL
             WHERE notification_id = $1 AND status = 'sending'""",
        notification_id,
        due_at,
        detail[:500],
    )


async def channels_of(conn: asyncpg.Connection, notification_ids: Sequence[str]) -> list[Channel]:
    """The channels these sends went (or were to go) on."""
    rows = await conn.fetch(
        f"SELECT channel FROM {SENDS} WHERE notification_id = ANY($1::text[]) AND channel IS NOT NULL",
        list(notification_ids),
    )
    return [Channel(r["channel"]) for r in rows]


async def sends_of(conn: asyncpg.Connection, case_id: str) -> list[asyncpg.Record]:
    """Every send of the case (tests and the CLI)."""
    return await conn.fetch(f"SELECT * FROM {SENDS} WHERE case_id = $1 ORDER BY created_at, notification_id", case_id)
