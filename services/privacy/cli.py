"""``rj privacy``'s erasure, retention hold, rectification and subject access export commands (registered on
the ``privacy_cli`` sub-app in ``services/cli.py``).

A command is published on ``rj.commands`` and its answer awaited on ``rj.privacy``: the fact, a
rejection saying why, or "already handled". Exit status 0 when done, 1 when refused, 2 when no answer came.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import time
from typing import Annotated, Any

import pydantic_core
import typer
from pydantic import ValidationError

from schemas import topics
from schemas.common import Actor
from schemas.envelope import EventData, new_event
from schemas.privacy import ErasePerson, HoldKind, LiftRetentionHold, PlaceRetentionHold, RectifyParticipant
from schemas.registry import REGISTRY
from services.runtime.db import connect
from services.runtime.kafka import publish
from services.runtime.keystore import CASE_PERSON
from services.runtime.logs import configure_logging
from services.runtime.privacy import Privacy
from services.runtime.settings import Settings, get_settings

CLI_SOURCE = "urn:rj:operator-cli"
REFUSED = ("rj.command.rejected",)

Person = Annotated[str, typer.Option("--person", help="the person's id")]
Reason = Annotated[str, typer.Option("--reason", help="why (kept with the record: no one's personal details)")]
By = Annotated[str | None, typer.Option("--by", help="who asks (default: your login name)")]
Wait = Annotated[float, typer.Option("--wait", min=1, help="seconds to wait for the privacy service's answer")]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON instead of text for people")]


def _actor(by: str | None) -> Actor:
    return Actor(kind="staff", id=by or getpass.getuser())


def _command(model: type[EventData], **fields: Any) -> Any:
    """The command, or a usage error saying what is wrong with it (before anything is sent)."""
    try:
        return model(**fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise typer.BadParameter(problems) from None


async def send_and_wait(settings: Settings, command: EventData, subject: str, wait_s: float) -> dict[str, Any] | None:
    """Publish ``command`` and return the privacy service's answer to it (None if none came in ``wait_s``).

    The reader is placed at the end of ``rj.privacy`` before the command goes, so the answer cannot be missed."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        name = settings.topic(topics.PRIVACY)
        await consumer.topics()
        partitions = [TopicPartition(name, p) for p in sorted(consumer.partitions_for_topic(name) or ())]
        if not partitions:
            raise typer.BadParameter(f"topic {name} does not exist: is the privacy service deployed?")
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)  # resolve "the end" now, before the command is sent
        event = new_event(command, source=CLI_SOURCE, subject=subject)
        await publish(settings, [(topics.COMMANDS, subject, await _sealed(settings, event))])
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=300)).values():
                for message in messages:
                    answer = json.loads(message.value)
                    data = answer.get("data") or {}
                    if answer.get("causationid") == event.id or data.get("command_id") == event.id:
                        return await _opened(settings, answer)
        return None
    finally:
        await consumer.stop()


async def _sealed(settings: Settings, event: Any) -> bytes:
    """The command as it goes on ``rj.commands``, its personal fields (a reason, a corrected value) sealed
    under the case's own key: never a person's, which would make a key for whoever it names (and a key is how
    the key store knows a person is held on a case). The case's retention shreds it."""
    conn = await connect(settings)
    try:
        batch = Privacy.from_settings(settings).new_batch()
        document = event.data.model_dump(mode="json")
        [sealed] = await batch.seal_documents(conn, type(event.data), [(document, event.subject)], owner=CASE_PERSON)
    finally:
        await conn.close()
    return bytes(event.to_json(pydantic_core.to_json(sealed)))


async def _opened(settings: Settings, answer: dict[str, Any]) -> dict[str, Any]:
    """The privacy service's answer with its sealed values opened, as the operator (holding the keys) reads it."""
    if str(answer.get("type")) not in REGISTRY:
        return answer
    conn = await connect(settings)
    try:
        batch = Privacy.from_settings(settings).new_batch()
        model = REGISTRY.model(answer["type"])
        [opened] = await batch.open_documents(conn, model, [answer["data"]], [answer.get("subject") or ""])
    finally:
        await conn.close()
    return {**answer, "data": opened.data}


def _run(command: EventData, subject: str, wait_s: float, as_json: bool) -> None:
    settings = get_settings()
    configure_logging("privacy-cli", settings.log_level, settings.log_format)
    answer = asyncio.run(send_and_wait(settings, command, subject, wait_s))
    if answer is None:
        typer.echo(f"no answer from the privacy service within {wait_s:.0f} s: it may still come", err=True)
        raise typer.Exit(2)
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
    else:
        typer.echo(_describe(answer))
    if answer["type"] in REFUSED:
        raise typer.Exit(1)


def _describe(answer: dict[str, Any]) -> str:
    data = answer["data"]
    kind = answer["type"]
    if kind == "rj.command.rejected":
        return f"refused: {data['reason']}"
    if kind == "rj.command.already-handled":
        return f"already handled (first received {data['first_received_at']}): nothing changed"
    if kind == "rj.command.no-change":
        return "taken: it was already so, nothing changed"
    if kind == "rj.person.erased":
        kept = f"; kept under a hold: {', '.join(data['kept_under_hold'])}" if data["kept_under_hold"] else ""
        return (
            f"erased {data['erased_person_id']} on {', '.join(data['cases'])}: "
            f"{data['keys_destroyed']} key(s) destroyed{kept}"
        )
    if kind == "rj.participant.rectified":
        return f"rectified {data['field']} of {data['person_id']} on {data['case_id']}"
    if kind == "rj.retention-hold.placed":
        return f"{data['kind']} hold placed on {data['case_id']}"
    if kind == "rj.retention-hold.lifted":
        remaining = ", ".join(data["holds_remaining"]) or "none"
        return f"{data['kind']} hold lifted on {data['case_id']} (holds remaining: {remaining})"
    return json.dumps(answer)


def erase(
    person: Person,
    reason: Reason,
    case: Annotated[str | None, typer.Option("--case", help="only on this case (default: every case)")] = None,
    by: By = None,
    wait: Wait = 30.0,
    as_json: AsJson = False,
) -> None:
    """Erase a person (on one case, or every case) by destroying their data keys; wait for the record of it."""
    command = _command(ErasePerson, person_id=person, case_id=case, reason=reason, actor=_actor(by))
    _run(command, command.subject, wait, as_json)


def rectify(
    person: Person,
    case: Annotated[str, typer.Option("--case", help="the case")],
    field: Annotated[str, typer.Option("--field", help="the participant's personal field, e.g. name")],
    value: Annotated[str, typer.Option("--value", help="the corrected value (JSON for a contact)")],
    reason: Reason,
    by: By = None,
    wait: Wait = 30.0,
    as_json: AsJson = False,
) -> None:
    """Correct a participant's personal field on a case: a new fact that supersedes, never an edit of history."""
    parsed: Any = value
    if value.lstrip().startswith("{"):
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            raise typer.BadParameter(f"--value looks like JSON but is not: {exc}") from None
    command = _command(
        RectifyParticipant, case_id=case, person_id=person, field=field, value=parsed, reason=reason, actor=_actor(by)
    )
    _run(command, case, wait, as_json)


def hold(
    case: Annotated[str, typer.Option("--case", help="the case")],
    kind: Annotated[HoldKind, typer.Option("--kind", help="what the hold is for")],
    reason: Reason,
    lift: Annotated[bool, typer.Option("--lift", help="lift the hold instead of placing it")] = False,
    by: By = None,
    wait: Wait = 30.0,
    as_json: AsJson = False,
) -> None:
    """Place (or, with --lift, lift) a retention hold: while one stands, nothing on the case is erased by retention."""
    model = LiftRetentionHold if lift else PlaceRetentionHold
    _run(_command(model, case_id=case, kind=kind, reason=reason, actor=_actor(by)), case, wait, as_json)


def export(person: Person, as_json: AsJson = False) -> None:
    """Everything held on one person (subject access): their data on each of their cases, and no one else's."""
    import asyncpg

    from services.privacy.export import ERASED, export_person

    settings = get_settings()
    configure_logging("privacy-cli", settings.log_level, settings.log_format)

    async def main() -> dict[str, Any]:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await export_person(settings, conn, person)
        finally:
            await conn.close()

    from services.runtime.topicread import TopicsUnreadable

    try:
        document = asyncio.run(main())
    except TopicsUnreadable as error:  # a wrong TOPIC_PREFIX or broker: say so, never an export that looks empty
        typer.echo(f"cannot export: {error}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(document, indent=2, ensure_ascii=False, default=str))
        return
    from rich.console import Console
    from rich.markup import escape

    console = Console()
    console.print(f"[bold]Personal data held on {escape(person)}[/] ({len(document['cases'])} case(s))")
    for case in document["cases"]:
        state = " [red](erased)[/]" if case["erased"] else ""
        console.print(f"\n[bold]case {escape(case['case_id'])}[/] as {escape(str(case['role']))}{state}")
        for name, value in case["current"].items():
            console.print(f"  {escape(name)}: {escape(json.dumps(value, ensure_ascii=False))}")
        for event in case["events"]:
            console.print(f"  {escape(event['time'])}  {escape(event['type'])}")
            for path, value in event["data"].items():
                shown = ERASED if path in event["erased"] else json.dumps(value, ensure_ascii=False)
                console.print(f"      {escape(path)}: {escape(shown)}")
