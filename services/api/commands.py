"""Staff commands over HTTP: the body each command type takes, sending one (recorded in ``api.commands_sent`` and
put in the api outbox for ``rj.commands`` in one transaction), and its outcome as the owning service answered it
(``api.command_answers``, filled by the read model, which wakes waiting callers with ``pg_notify``)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import asyncpg
import pydantic_core
import structlog
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, create_model

from schemas import topics
from schemas.commands import Command
from schemas.envelope import derived_event_id, new_event
from schemas.registry import REGISTRY, Registry
from services.runtime import privacy
from services.runtime.outbox import Outgoing, write_outbox

log = structlog.get_logger()

SOURCE = "urn:rj:api"
SCHEMA = "api"
ANSWERS_CHANNEL = "rj_api_answers"
"""The read model notifies this channel, with the command id, for every answer it records."""
SET_BY_THE_API = frozenset({"case_id", "actor"})
"""Command fields the caller never gives: the case comes from the path, the actor from the token."""
MAX_WAIT_S = 30.0

Status = Literal["pending", "accepted", "rejected", "already_handled", "unchanged"]


class Answer(Protocol):
    """One row of ``api.command_answers`` as the read model's ``command_answers`` returns it."""

    event_id: str
    event_type: str
    status: str
    reason: str | None
    at: datetime


class CommandAccepted(BaseModel):
    """The command is on its way to the service that owns it; ``status_url`` tells how it went."""

    model_config = ConfigDict(extra="forbid")

    command_id: str = Field(description="The command's id; facts it causes name it as their causation")
    case_id: str
    command_type: str
    status_url: str = Field(description="GET it (with ?wait=S to wait up to S seconds) for the outcome")


class CommandFact(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: str
    event_type: str
    at: AwareDatetime | None = None


class CommandOutcome(BaseModel):
    """What became of a command: ``pending`` until its owning service answers, then ``accepted`` (with the facts it
    caused), ``rejected`` (with the ``reason``), ``unchanged`` (its service took it and found it already so:
    consent given again, say) or ``already_handled`` (the same command id was sent before)."""

    model_config = ConfigDict(extra="forbid")

    command_id: str
    case_id: str
    command_type: str
    status: Status
    facts: list[CommandFact] = Field(description="The facts the command caused so far")
    reason: str | None = Field(default=None, description="Why it was rejected")


@dataclass(frozen=True)
class SentCommand:
    command_id: str
    case_id: str
    command_type: str
    staff_id: str
    sent_at: datetime


class IdempotencyKeyReused(Exception):
    """The caller's Idempotency-Key already named a different command (another case or type)."""


def command_models(command_types: Iterable[str], registry: Registry = REGISTRY) -> dict[str, type[Command]]:
    """The models of ``command_types`` that are case commands (``schemas.commands.Command``), by type, sorted."""
    models: dict[str, type[Command]] = {}
    for command_type in sorted(command_types):
        if command_type in registry:
            model = registry.model(command_type)
            if issubclass(model, Command):
                models[command_type] = model
    return models


def body_model(model: type[Command]) -> type[BaseModel]:
    """What a caller posts for ``model``: its fields without those the API sets, nothing else accepted (a body
    naming an ``actor`` is refused, not quietly overridden). The command's own validators run when the command
    is built from it (``build_command``)."""
    fields: dict[str, Any] = {
        name: (info.annotation, info) for name, info in model.model_fields.items() if name not in SET_BY_THE_API
    }
    body: type[BaseModel] = create_model(  # type: ignore[call-overload]
        f"{model.__name__}Body",
        __config__=ConfigDict(extra="forbid", title=f"{model.__name__}Body"),
        __doc__=model.__doc__,
        **fields,
    )
    return body


#: Commands about a resource rather than a case, and the field that names it (their key on ``rj.commands``).
REGISTRATIONS: dict[str, str] = {"rj.facilitator.register": "facilitator_id", "rj.venue.register": "venue_id"}


def registration_models(command_types: Iterable[str], registry: Registry = REGISTRY) -> dict[str, type[BaseModel]]:
    """The models of ``command_types`` that register a facilitator or a venue, by type."""
    return {t: registry.model(t) for t in sorted(command_types) if t in REGISTRATIONS and t in registry}


async def send_registration(
    conn: asyncpg.Connection, command: BaseModel, *, command_id: str, staff_id: str, force: str
) -> bool:
    """Record a registration as sent and put it in the api outbox for ``rj.commands``, keyed by the facilitator or
    venue it names (ids and a venue's name: no one's personal data). False when this id was sent before."""
    command_type: str = type(command).event_type  # type: ignore[attr-defined]
    subject: str = getattr(command, REGISTRATIONS[command_type])
    if not await record_sent(conn, command, command_id=command_id, subject=subject, staff_id=staff_id):
        return False
    event = new_event(command, source=SOURCE, subject=subject, event_id=command_id, force=force)  # type: ignore[arg-type]
    await write_outbox(conn, SCHEMA, [Outgoing.event_of(topics.COMMANDS, event)])
    return True


async def record_sent(
    conn: asyncpg.Connection, command: BaseModel, *, command_id: str, subject: str, staff_id: str
) -> bool:
    """Record ``command`` in ``api.commands_sent`` under ``command_id`` (its case, or the facilitator or venue it
    registers, as ``subject``). False when that id was recorded before for this very command (a retry); raises
    ``IdempotencyKeyReused`` when it was recorded for another subject, type or body."""
    command_type: str = type(command).event_type  # type: ignore[attr-defined]
    digest = body_sha256(command)
    inserted = await conn.fetchval(
        f"""INSERT INTO {SCHEMA}.commands_sent (command_id, case_id, command_type, staff_id, body_sha256)
            VALUES ($1, $2, $3, $4, $5) ON CONFLICT (command_id) DO NOTHING RETURNING true""",
        command_id,
        subject,
        command_type,
        staff_id,
        digest,
    )
    if inserted:
        return True
    first = await conn.fetchrow(
        f"SELECT case_id, command_type, body_sha256 FROM {SCHEMA}.commands_sent WHERE command_id = $1", command_id
    )
    if first is None or (first["case_id"], first["command_type"]) != (subject, command_type):
        raise IdempotencyKeyReused("this Idempotency-Key was already used for another command")
    if first["body_sha256"] is not None and first["body_sha256"] != digest:
        raise IdempotencyKeyReused("this Idempotency-Key was already used for this command with a different body")
    return False


def body_sha256(command: BaseModel) -> str:
    """The sha256 of ``command``'s canonical JSON (sorted keys, no spaces): the same for the same command however
    its body was written. The actor and case are in it, so it says "this sender, this case, these words"."""
    canonical = json.dumps(command.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def build_command(model: type[Command], body: BaseModel, *, case_id: str, staff_id: str) -> Command:
    """The command as it goes out: the body, the case from the path, the actor from the token. Raises pydantic's
    ``ValidationError`` when the command's own rules refuse it."""
    return model.model_validate({**body.model_dump(), "case_id": case_id, "actor": {"kind": "staff", "id": staff_id}})


def command_id_for(staff_id: str, idempotency_key: str | None) -> str:
    """A fresh id, or with an Idempotency-Key the same id every time that member of staff sends that key."""
    if idempotency_key is None:
        return str(uuid.uuid4())
    return derived_event_id(SOURCE, "idempotency", staff_id, idempotency_key)


async def send_command(
    conn: asyncpg.Connection, command: Command, *, command_id: str, staff_id: str, force: str
) -> bool:
    """Record ``command`` as sent and put it in the api outbox for ``rj.commands`` (keyed by its case, with the
    case's ``force``), in the caller's transaction. False when this id was sent before (a retried POST): nothing is
    sent again. Raises ``IdempotencyKeyReused`` when the id was sent for another case, type or body."""
    if not await record_sent(conn, command, command_id=command_id, subject=command.case_id, staff_id=staff_id):
        return False
    await write_outbox(conn, SCHEMA, [await sealed_command(conn, command, command_id=command_id, force=force)])
    return True


async def sealed_command(conn: asyncpg.Connection, command: Command, *, command_id: str, force: str) -> Outgoing:
    """The command's record with its personal fields sealed under the owners the contract names, as the owning
    service seals the fact it makes of them: a note about a participant, their safe-contact details, a contact
    attempt's note are theirs, and go when they are erased. A field the rule gives to an id that is no
    participant of the case goes under the case's own key instead: a key is how the key store knows a person is on
    a case, so none is made for an id nobody vouched for. A participant is one the read model lists, or one a
    service has a key for on the case already: the read model follows the services a hop behind, and a note about
    a person it has not caught up with must still go with their erasure."""
    event = new_event(command, source=SOURCE, subject=command.case_id, event_id=command_id, force=force)
    document = command.model_dump(mode="json")
    [sealed] = await privacy.batch().seal_documents(
        conn, type(command), [(document, command.case_id)], owned=True, people=await _participants(conn, command)
    )
    value = event.to_json(pydantic_core.to_json(sealed))
    return Outgoing(event_id=command_id, topic=topics.COMMANDS, key=command.case_id, value=value)


async def _participants(conn: asyncpg.Connection, command: Command) -> set[tuple[str, str]]:
    """The case's participants as (person, case) pairs, as the read model lists them and as the key store holds
    keys for them; none asked for when the command has no personal data."""
    if not privacy.has_personal_data(command):
        return set()
    rows = await conn.fetch(f"SELECT person_id FROM {SCHEMA}.participants WHERE case_id = $1", command.case_id)
    listed = {(row["person_id"], command.case_id) for row in rows}
    return listed | await privacy.batch().people_on(conn, command.case_id)


async def sent_command(conn: asyncpg.Connection, command_id: str) -> SentCommand | None:
    row = await conn.fetchrow(
        f"""SELECT command_id, case_id, command_type, staff_id, sent_at FROM {SCHEMA}.commands_sent
             WHERE command_id = $1""",
        command_id,
    )
    return SentCommand(**dict(row)) if row is not None else None


def outcome(sent: SentCommand, answers: Sequence[Answer]) -> CommandOutcome:
    """A rejection outweighs everything (the command changed nothing); any fact means it was accepted; a no-change
    answer (taken, and already so) says more than a repeat's "already handled"."""
    statuses = {answer.status for answer in answers}
    status: Status = "pending"
    for candidate in ("rejected", "accepted", "unchanged", "already_handled"):
        if candidate in statuses:
            status = candidate  # type: ignore[assignment]
            break
    reason = next((a.reason for a in answers if a.status == "rejected"), None)
    facts = [
        CommandFact(event_id=a.event_id, event_type=a.event_type, at=a.at)
        for a in sorted(answers, key=lambda a: (a.at or datetime.min.replace(tzinfo=UTC), a.event_id))
    ]
    return CommandOutcome(
        command_id=sent.command_id,
        case_id=sent.case_id,
        command_type=sent.command_type,
        status=status,
        facts=facts,
        reason=reason,
    )


class AnswerWaiters:
    """Who is waiting for which command's answer, woken by one ``LISTEN`` connection for the whole process.

    A long-poll holds no pooled connection while it waits: it borrows one only to look, so a hundred UIs waiting
    cost one connection, and the read model (whose projection records the answers) is never starved of its own.
    The listening connection is opened on first use and again after it is lost; while it is down, waiters look
    every ``POLL_WHEN_DEAF_S`` instead of relying on a notification."""

    POLL_WHEN_DEAF_S = 1.0

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]], *, max_waiters: int = 1000) -> None:
        self._connect = connect
        self.max_waiters = max_waiters
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._conn: asyncpg.Connection | None = None
        self._opening = asyncio.Lock()

    @property
    def count(self) -> int:
        return sum(len(events) for events in self._waiting.values())

    async def _listening(self) -> bool:
        """Whether the listening connection is up (opening it if not); False when it cannot be opened now."""
        if self._conn is not None and not self._conn.is_closed():
            return True
        async with self._opening:
            if self._conn is not None and not self._conn.is_closed():
                return True
            try:
                conn = await self._connect()
                await conn.add_listener(ANSWERS_CHANNEL, self._on_answer)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("answer_listener_unavailable", error=repr(exc))
                return False
            conn.add_termination_listener(lambda _conn: self._wake_all())
            self._conn = conn
            return True

    def _on_answer(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        for event in self._waiting.get(payload, ()):
            event.set()

    def _wake_all(self) -> None:
        """The listening connection was lost: every waiter looks again (and polls until it is back)."""
        self._conn = None
        for events in self._waiting.values():
            for event in events:
                event.set()

    async def wait(
        self,
        pool: asyncpg.Pool,
        command_id: str,
        fetch_answers: Callable[[asyncpg.Connection, str], Awaitable[Sequence[Answer]]],
        wait_s: float,
    ) -> Sequence[Answer]:
        """The command's answers, waiting up to ``wait_s`` for the first. It registers before it looks, so an
        answer recorded between the two is not missed, and looks again on every notification for it. Past
        ``max_waiters`` at once it answers with what there is now, without waiting."""
        if wait_s <= 0 or self.count >= self.max_waiters:
            async with pool.acquire() as conn:
                return await fetch_answers(conn, command_id)
        woken = asyncio.Event()
        self._waiting.setdefault(command_id, set()).add(woken)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + min(wait_s, MAX_WAIT_S)
            while True:
                listening = await self._listening()
                woken.clear()  # before looking: a notification from now on wakes the wait below
                async with pool.acquire() as conn:
                    answers = await fetch_answers(conn, command_id)
                remaining = deadline - loop.time()
                if answers or remaining <= 0:
                    return answers
                nap = remaining if listening else min(remaining, self.POLL_WHEN_DEAF_S)
                try:
                    await asyncio.wait_for(woken.wait(), nap)
                except TimeoutError:
                    pass
        finally:
            events = self._waiting.get(command_id)
            if events is not None:
                events.discard(woken)
                if not events:
                    del self._waiting[command_id]

    async def close(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()
        self._conn = None
