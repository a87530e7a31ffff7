"""The ``rj`` command: run one service, the whole embedded stack, the demo, migrations, schema export, and
look into and replay dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from services.api.principal import Role
from services.catalog import SERVICES
from services.runtime.logs import configure_logging
from services.runtime.settings import get_settings

cli = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
schemas_cli = typer.Typer(no_args_is_help=True, help="The event contract.")
cli.add_typer(schemas_cli, name="schemas")
deadletters_cli = typer.Typer(
    no_args_is_help=True, help="What the services could not process: list, show, and replay after a fix."
)
cli.add_typer(deadletters_cli, name="deadletters")
outbox_cli = typer.Typer(no_args_is_help=True, help="Outbox rows the relay could not publish: list, release.")
cli.add_typer(outbox_cli, name="outbox")
privacy_cli = typer.Typer(no_args_is_help=True, help="Personal data: inventory, key rotation, erasure, export.")
cli.add_typer(privacy_cli, name="privacy")
api_cli = typer.Typer(no_args_is_help=True, help="The facilitator API: its OpenAPI document.")
cli.add_typer(api_cli, name="api")
audit_cli = typer.Typer(
    no_args_is_help=True, help="The audit log: replay a case, sign a head, verify the log, export a case, check."
)
cli.add_typer(audit_cli, name="audit")
notify_cli = typer.Typer(no_args_is_help=True, help="The notify service: letters to print, its reference key.")
cli.add_typer(notify_cli, name="notify")
letters_cli = typer.Typer(no_args_is_help=True, help="The letter queue: list what waits, print one (and mark it).")
notify_cli.add_typer(letters_cli, name="letters")

T = TypeVar("T")


def build_service(name: str):  # type: ignore[no-untyped-def]
    module, _, func = SERVICES[name].partition(":")
    return getattr(importlib.import_module(module), func)()


@cli.command()
def serve(name: Annotated[str, typer.Argument(help=f"one of: {', '.join(SERVICES)}")]) -> None:
    """Run one service as a Faust worker (what each container runs)."""
    if name not in SERVICES:
        raise typer.BadParameter(f"unknown service {name!r}; known: {', '.join(SERVICES)}")
    settings = get_settings()
    configure_logging(name, settings.log_level, settings.log_format)
    build_service(name).run_worker()


@cli.command(hidden=True)
def relay(name: Annotated[str, typer.Argument(help=f"one of: {', '.join(SERVICES)}")]) -> None:
    """Run one service's outbox relay (the worker of ``serve`` starts it as its child process)."""
    from services.runtime.relay import run_relay_process

    settings = get_settings()
    configure_logging(f"{name}-relay", settings.log_level, settings.log_format)
    run_relay_process(name, settings)


@cli.command()
def bench(
    only: Annotated[list[str] | None, typer.Option("--only", help="a benchmark's name (repeat for more)")] = None,
    full: Annotated[bool, typer.Option("--full", help="the sizes the README's figures were measured at")] = False,
) -> None:
    """Run every benchmark in bench/ (each beside its ceiling); figures to .rj/bench/*.json. Exit 1 if one missed."""
    from bench.all import run_all

    raise typer.Exit(run_all(only or (), full=full))


@cli.command()
def migrate() -> None:
    """Apply every service's migrations to DATABASE_URL (services also do this when they start)."""
    from services.runtime.db import migrate as run

    settings = get_settings()
    configure_logging("migrate", settings.log_level, settings.log_format)

    async def main() -> None:
        import asyncpg

        conn = await asyncpg.connect(settings.database_url)
        try:
            for name, target in SERVICES.items():
                package = target.split(":")[0].rsplit(".", 1)[0] + ".migrations"
                await run(conn, name, package)
        finally:
            await conn.close()

    asyncio.run(main())


@cli.command()
def dev(
    demo: Annotated[bool, typer.Option(help="publish sample upstream events and print the cases")] = False,
    keep_running: Annotated[bool, typer.Option(help="with --demo: keep running after the demo")] = False,
) -> None:
    """Start the whole system on the embedded broker and PostgreSQL; Ctrl-C stops everything."""
    from demo.dev import run_dev

    configure_logging("dev", os.environ.get("LOG_LEVEL", "info"))
    raise typer.Exit(run_dev(demo=demo, keep_running=keep_running))


@cli.command()
def demo() -> None:
    """Start the embedded system, feed it sample upstream events, print the cases they became, stop."""
    dev(demo=True, keep_running=False)


# --- login on the embedded stack: the local issuer (services/api/issuer.py) ------------------------------


@cli.command()
def issuer() -> None:
    """Serve the local OpenID Connect issuer (what `rj dev` also runs) until Ctrl-C; `rj token` mints for it."""
    from services.api.issuer import issuer_from_settings

    settings = get_settings()
    configure_logging("issuer", settings.log_level, settings.log_format)
    try:
        local = issuer_from_settings(settings)
    except ValueError as exc:
        _refuse(str(exc))

    async def serve_until_stopped() -> None:
        try:
            await local.start()
        except RuntimeError as exc:
            _refuse(f"{exc} (another `rj dev` or `rj issuer`? set DEV_ISSUER_PORT)")
        typer.echo(f"issuer {local.url} (key {local.key_file}); point the API at it with:")
        typer.echo(f"  OIDC_ISSUER={local.url} OIDC_JWKS_URL={local.jwks_url}")
        try:
            await asyncio.Event().wait()
        finally:
            await local.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_until_stopped())


@cli.command()
def token(
    user: Annotated[str, typer.Option(help="the staff id the token is for (its subject)")],
    role: Annotated[Role, typer.Option(help="what they may do on the API")],
    force: Annotated[
        str | None, typer.Option(help="the force whose cases they work on, as cases carry it [default: the demo's]")
    ] = None,
    name: Annotated[str | None, typer.Option(help="their name, as a UI shows it")] = None,
    ttl: Annotated[int, typer.Option(min=1, max=30 * 24 * 3600, help="seconds the token is valid")] = 3600,
) -> None:
    """Print an access token from the local issuer (the one `rj dev` runs), e.g. TOKEN=$(rj token --user F-ANN
    --role facilitator); send it as `Authorization: Bearer $TOKEN`."""
    from services.api.issuer import issuer_from_settings

    try:
        local = issuer_from_settings(get_settings())
    except ValueError as exc:
        _refuse(f"{exc}; rj token mints only for the local issuer")
    if force is None:
        from demo.samples import UPSTREAM_SOURCE

        force = UPSTREAM_SOURCE
    typer.echo(local.mint(user, role, force, name=name, ttl_s=ttl))


@schemas_cli.command("export")
def export_schemas(
    out: Annotated[Path, typer.Option(help="where to write the JSON Schema files")] = Path("schemas/jsonschema"),
) -> None:
    """Regenerate the JSON Schema files other teams code against."""
    from schemas.export import write_json_schemas

    written = write_json_schemas(out)
    typer.echo(f"wrote {len(written)} schema files to {out}")


# --- dead letters: a thin shell over services.runtime.deadletters ------------------------------------

JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of text for people")]


def _with_database(work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work(connection)`` against DATABASE_URL; a dead-letter error ends the command with status 1."""
    import asyncpg

    from services.runtime import privacy
    from services.runtime.deadletters import DeadLetterError
    from services.runtime.keystore import KeyStoreError

    settings = get_settings()
    configure_logging("deadletters", settings.log_level, settings.log_format)

    async def main() -> T:
        privacy.install(privacy.Privacy.from_settings(settings))  # dead letters are kept sealed
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await work(conn)
        finally:
            await conn.close()

    try:
        return asyncio.run(main())
    except (DeadLetterError, KeyStoreError) as exc:
        _console(stderr=True).print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from exc


def _console(stderr: bool = False):  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(stderr=stderr)


def _services(service: str | None) -> list[str]:
    if service is None:
        return list(SERVICES)
    if service not in SERVICES:
        raise typer.BadParameter(f"unknown service {service!r}; known: {', '.join(SERVICES)}")
    return [service]


@deadletters_cli.command("list")
def list_dead_letters(
    service: Annotated[str | None, typer.Option(help=f"only this one of: {', '.join(SERVICES)}")] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many, newest first")] = 100,
    as_json: JsonOption = False,
) -> None:
    """The newest dead letters of every service (or one)."""
    from services.runtime.deadletters import list_dead_letters as load
    from services.runtime.deadletters import terminal_safe

    services = _services(service)
    letters = _with_database(lambda conn: load(conn, services, limit=limit))
    if as_json:
        typer.echo(json.dumps([letter.as_json() for letter in letters], indent=2))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table("id", "service", "dead-lettered at", "position", "type", "size", "replays", "reason")
    table.columns[0].no_wrap = True  # an id to copy whole
    table.columns[0].overflow = "fold"
    for letter in letters:
        table.add_row(
            letter.id,
            letter.service,
            f"{letter.dead_lettered_at:%Y-%m-%d %H:%M:%S}",
            letter.position,
            Text(terminal_safe(letter.event_type or "-")),
            "erased" if letter.erased else "tombstone" if letter.size is None else str(letter.size),
            str(letter.replays),
            Text(terminal_safe(letter.reason[:120])),
        )
    if letters:
        _console().print(table)
    else:
        _console().print("no dead letters")


@deadletters_cli.command("show")
def show_dead_letter(
    letter_id: Annotated[str, typer.Argument(help="the dead letter's id")], as_json: JsonOption = False
) -> None:
    """One dead letter: why, where from, its hash and size, a preview of its original, and its replays."""
    from services.runtime.deadletters import (
        StoredLetter,
        UnknownDeadLetter,
        find_dead_letter,
        printable_preview,
        terminal_safe,
    )

    async def find(conn: Any) -> StoredLetter:
        letter = await find_dead_letter(conn, letter_id, list(SERVICES))
        if letter is None:
            raise UnknownDeadLetter(f"no dead letter {letter_id!r} in any of: {', '.join(SERVICES)}")
        return letter

    letter = _with_database(find)
    if as_json:
        typer.echo(json.dumps(letter.as_json(), indent=2))
        return
    from rich.table import Table
    from rich.text import Text

    replayed = "never"
    if letter.replayed_at is not None:
        sent = f"sent to {letter.replayed_to}" if letter.replayed_to else "NOT confirmed sent: replay it again"
        replayed = f"{letter.replays} time(s), last at {letter.replayed_at.isoformat(timespec='seconds')}, {sent}"
    table = Table(show_header=False, box=None)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for name, value in [
        ("id", letter.id),
        ("service", letter.service),
        ("reason", terminal_safe(letter.reason)),
        ("position", letter.position),
        ("key", "(none)" if letter.key is None else printable_preview(letter.key)),
        ("event", terminal_safe(f"{letter.event_type or '?'} {letter.event_id or '(no id read)'}")),
        ("inbox", letter.claim),
        ("size", "erased" if letter.erased else "tombstone" if letter.size is None else f"{letter.size} bytes"),
        ("sha256", letter.original_sha256),
        ("dead-lettered at", letter.dead_lettered_at.isoformat(timespec="seconds")),
        ("replayed", replayed),
        ("original", letter.preview(1000)),
    ]:
        table.add_row(Text(name, style="bold"), Text(value))
    _console().print(table)


@deadletters_cli.command("replay")
def replay_dead_letter(
    letter_id: Annotated[str, typer.Argument(help="the dead letter's id")],
    past_window: Annotated[
        bool,
        typer.Option(help="replay a letter older than 90% of RETENTION_WINDOW_S all the same (see `show`)"),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Send a dead letter's original again to its topic, for its service to process after a fix.

    The letter's inbox claim is released first (only if it is the letter's own); if another copy of the
    event was taken in since, nothing is sent."""
    from services.runtime.deadletters import replay_dead_letter as replay
    from services.runtime.deadletters import terminal_safe

    settings = get_settings()
    done = _with_database(lambda conn: replay(conn, settings, letter_id, list(SERVICES), past_window=past_window))
    if as_json:
        typer.echo(json.dumps(done.as_json(), indent=2))
        return
    letter = done.letter
    event_id = terminal_safe(letter.event_id or "")
    if done.outcome == "applied_elsewhere":
        message = (
            f"Not replayed: {letter.service} has since taken in event {event_id} from another copy at "
            f"{done.claim}. Its inbox is left alone and nothing was sent."
        )
    else:
        released = (
            f"released the inbox claim of event {event_id} (taken at {letter.position}) and "
            if done.outcome == "released"
            else ""
        )
        message = (
            f"Replayed {letter.id}: {released}sent the original ({letter.size} bytes) to {done.sent_to}; "
            f"{letter.service} will process it again."
        )
    _console().print(message, markup=False, highlight=False, soft_wrap=True)


@outbox_cli.command("parked")
def list_parked_rows(
    service: Annotated[str | None, typer.Option(help=f"only this one of: {', '.join(SERVICES)}")] = None,
    as_json: JsonOption = False,
) -> None:
    """Rows parked as unpublishable, with why and how many of the same key wait behind each."""
    from services.runtime.outbox import parked_rows

    services = _services(service)

    async def load(conn: Any) -> list[dict[str, Any]]:
        return [{"service": name, **dict(row)} for name in services for row in await parked_rows(conn, name)]

    rows = _with_database(load)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    for row in rows:
        _console().print(
            f"{row['service']} #{row['id']} {row['topic']} key={row['key']} {row['size']} bytes, "
            f"{row['waiting_behind']} waiting behind it: {row['parked_reason']}",
            markup=False,
            highlight=False,
        )
    if not rows:
        _console().print("no parked rows")


@outbox_cli.command("release")
def release_parked(
    service: Annotated[str, typer.Argument(help=f"one of: {', '.join(SERVICES)}")],
    row_id: Annotated[int, typer.Argument(help="the parked row's id (rj outbox parked)")],
) -> None:
    """Let the relay try a parked row again, ahead of the rows of its key that waited behind it."""
    from services.runtime.outbox import release_parked_row

    if not _with_database(lambda conn: release_parked_row(conn, _services(service)[0], row_id)):
        _console(stderr=True).print(f"error: {service} has no parked outbox row {row_id}", markup=False)
        raise typer.Exit(1)
    _console().print(f"released {service} outbox row {row_id}")


# --- personal data ------------------------------------------------------------------------------------


def consumed_types() -> dict[str, frozenset[str]]:
    """The event types each service takes in, as its app declares them."""
    from services.api.readmodel import CONSUMES as api
    from services.consent.app import CONSUMES as consent
    from services.notify.app import CONSUMES as notify
    from services.privacy.app import CONSUMES as privacy
    from services.referral.app import CONSUMES as referral
    from services.scheduling.domain import CONSUMES as scheduling

    # The audit service parses no type: it appends every record of every topic as published (a holding of its own).
    return {"referral": referral, "consent": consent, "scheduling": scheduling, "notify": notify, "privacy": privacy,
            "api": api, "audit": frozenset()}  # fmt: skip


@privacy_cli.command("inventory")
def privacy_inventory(as_json: JsonOption = False) -> None:
    """The record of processing: each personal field of the contract, where it is stored, who reads it, how
    long it is kept (the input to a data protection impact assessment)."""
    from services.runtime.inventory import record_of_processing, table_rows

    inventory = record_of_processing(get_settings(), consumed_types())
    if as_json:
        typer.echo(json.dumps(inventory.as_json(), indent=2))
        return
    from rich.table import Table

    what = Table("personal data", "stored in", "read by", title="Personal data, where it is, who reads it")
    for row in table_rows(inventory):
        what.add_row(*row, end_section=True)
    kept = Table("where", "what", "kept", title="How long each copy is kept")
    for place in inventory.places():
        kept.add_row(place.where, place.what, place.kept)
    for column in (*what.columns, *kept.columns):
        column.overflow = "fold"  # an event type, a path, a setting: whole
    for printed in (what, kept, f"Every data key is destroyed by erasure or {inventory.retention_schedule}."):
        _console().print(printed, markup=False, highlight=False)


@privacy_cli.command("rotate")
def rotate_master_key(
    to: Annotated[
        str | None, typer.Option("--to", help="the version to re-wrap under (default: the first listed)")
    ] = None,
) -> None:
    """Re-wrap every data and bucket key under the current master key (or --to VERSION), beside live traffic."""
    from services.runtime.db import connect
    from services.runtime.keystore import KeyStore, KeyStoreError, ensure_schema

    settings = get_settings()
    configure_logging("privacy", settings.log_level, settings.log_format)

    async def rotate(store: KeyStore) -> int:
        conn = await connect(settings)
        try:
            await ensure_schema(conn)
            return await store.rotate(conn, to)
        finally:
            await conn.close()

    try:
        store = KeyStore.from_settings(settings)
        count = asyncio.run(rotate(store))
    except KeyStoreError as exc:  # master keys missing or malformed, or a key under a version not listed
        _refuse(str(exc))
    except OSError as exc:
        if exc.filename is None or settings.master_key_file is None:
            raise  # not the key file: the database, say
        _refuse(f"MASTER_KEY_FILE cannot be read: {exc}")
    target = to or store.master.current
    _console().print(
        f"Re-wrapped {count} key(s) under master key version {target}; every live key is now under it. Once every "
        f"service lists {target} first in MASTER_KEYS (run this again if one did not while it ran), you may remove "
        "the older versions from MASTER_KEYS or MASTER_KEY_FILE.",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _refuse(message: str) -> NoReturn:
    """End a command over its configuration: the reason on stderr, no traceback, status 2."""
    _console(stderr=True).print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


# --- personal data, the privacy service's commands: services/privacy/cli.py ----------------------------
from services.privacy import cli as privacy_commands  # noqa: E402

for _name in ("erase", "export", "rectify", "hold"):
    privacy_cli.command(_name)(getattr(privacy_commands, _name))


# --- the facilitator API ------------------------------------------------------------------------------


@api_cli.command("openapi")
def api_openapi(
    check: Annotated[bool, typer.Option("--check", help="only check that the committed document is current")] = False,
) -> None:
    """Write the API's OpenAPI document to services/api/openapi.json (UIs and schemathesis read it), or check it."""
    from services.api.http import OPENAPI_FILE, openapi_document, openapi_is_current, write_openapi

    try:
        openapi_document()
    except ModuleNotFoundError as exc:
        _refuse(f"the API is not whole in this checkout ({exc}): the document needs every part of it")
    if check:
        if not openapi_is_current():
            typer.echo(f"{OPENAPI_FILE} is stale: run `rj api openapi` and commit it", err=True)
            raise typer.Exit(1)
        typer.echo(f"{OPENAPI_FILE} is current")
        return
    write_openapi()
    typer.echo(f"wrote {OPENAPI_FILE}")


# --- the audit log: replay one case (services/audit/replay.py) ------------------------------------------


@audit_cli.command("replay")
def audit_replay(
    case: Annotated[str, typer.Option("--case", help="the case id")],
    at: Annotated[
        str | None, typer.Option("--at", help="the moment to show the case at, ISO 8601 with a zone [default: now]")
    ] = None,
    reason: Annotated[
        str | None,
        typer.Option(
            "--reason", help="why you need personal values: opens them with MASTER_KEYS (else they show as [sealed])"
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """A case's timeline (who, what, when, why) and its state at a moment, folded from the audit log's facts."""
    from datetime import UTC, datetime

    import asyncpg

    from services.audit import replay
    from services.runtime import privacy

    try:
        moment = replay.parse_moment(at) if at is not None else datetime.now(UTC)
    except replay.ReplayError as exc:
        _refuse(str(exc))
    if reason is not None and not reason.strip():
        _refuse("--reason must say why personal values are needed")
    settings = get_settings()
    configure_logging("audit", settings.log_level, settings.log_format)
    keys = privacy.Privacy.from_settings(settings) if settings.master_keys.get_secret_value() else None
    if reason is not None and keys is None:
        _refuse("--reason opens personal values, which needs MASTER_KEYS")

    async def read() -> list[replay.RecordedFact]:
        conn = await asyncpg.connect(settings.database_url)
        try:
            if keys is not None:
                privacy.install(keys)
            with privacy.batch_scope():
                return await replay.recorded_facts(conn, case, open_personal=reason is not None)
        finally:
            await conn.close()

    try:
        facts = asyncio.run(read())
    except asyncpg.UndefinedTableError:
        _refuse("no audit log in this database (audit.entries): run `rj migrate`")
    if not facts:
        _refuse(f"no entries for case {case!r} in the audit log")
    timeline = replay.timeline_of(replay.facts_up_to(facts, moment))
    state = replay.state_at(case, facts, moment)
    if as_json:
        document = {"case_id": case, "at": moment.isoformat(), "personal_opened": reason is not None, "reason": reason}
        document |= {"timeline": [entry.as_json() for entry in timeline], "state": state.as_json()}
        typer.echo(json.dumps(document, indent=2, default=str))
        return
    _print_replay(timeline, state)


def _print_replay(timeline: list[Any], state: Any) -> None:
    from rich.table import Table
    from rich.text import Text

    from services.runtime.deadletters import terminal_safe

    table = Table("#", "when", "what", "who", "why", title=f"case {state.case_id}: timeline")
    for entry in timeline:
        table.add_row(
            str(entry.idx),
            entry.at.isoformat(timespec="seconds"),
            Text(terminal_safe(entry.type)),
            Text(terminal_safe(" ".join(entry.who))),
            Text(terminal_safe("; ".join(entry.why)[:200])),
        )
    console = _console()
    console.print(table)
    console.print_json(json.dumps(state.as_json(), default=str))


# --- the audit log ---------------------------------------------------------------------------------------


def _audit_run(work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work(conn)`` on a connection to DATABASE_URL, with the audit schema migrated."""
    from services.runtime.db import connect
    from services.runtime.db import migrate as run_migrations

    settings = get_settings()

    async def main() -> T:
        conn = await connect(settings)
        try:
            await run_migrations(conn, "audit", "services.audit.migrations")
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(main())


@audit_cli.command("sign-head")
def audit_sign_head() -> None:
    """Sign the log's tree head now: stored, published on rj.audit, appended to AUDIT_WITNESS_FILE."""
    from services.audit.app import sign_and_witness
    from services.runtime.db import create_pool
    from services.runtime.db import migrate as run_migrations

    settings = get_settings()

    async def main() -> str:
        pool = await create_pool(settings)
        try:
            async with pool.acquire() as conn:
                await run_migrations(conn, "audit", "services.audit.migrations")
            signed = await sign_and_witness(pool, settings)
        finally:
            await pool.close()
        return json.dumps(signed.to_json())

    typer.echo(asyncio.run(main()))


@audit_cli.command("verify")
def audit_verify(
    from_kafka: Annotated[
        bool,
        typer.Option(
            "--from-kafka",
            help="rebuild the tree from the topics themselves, from offset zero, without the database (when it is "
            "lost), in the order published on rj.audit, and check every signed head the witness file and rj.audit hold",
        ),
    ] = False,
    witness: Annotated[
        Path | None,
        typer.Option("--witness", help="with --from-kafka: the witness file of heads (default: AUDIT_WITNESS_FILE)"),
    ] = None,
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key", help="the log's Ed25519 public key, PEM (default: that of AUDIT_SIGNING_KEY_FILE)"
        ),
    ] = None,
) -> None:
    """Recompute every leaf and the tree from the stored bodies (or, --from-kafka, from the topics); check every
    signed head. Exit 1 naming the first entry (index, topic/partition@offset) or head that does not match; 2 when
    verify could not finish (a worker process failed: AUDIT_VERIFY_WORKERS, one a core by default)."""
    settings = get_settings()
    configure_logging("audit", settings.log_level, settings.log_format)
    key = _log_public_key(public_key, settings.audit_signing_key_file)
    if from_kafka:
        from services.audit import fromkafka

        if witness is not None and not witness.is_file():
            _refuse(f"no witness file {witness}")
        held = witness or (settings.audit_witness_file if settings.audit_witness_file.is_file() else None)
        verdict = fromkafka.run(settings, key, held)
    else:
        import asyncpg

        from services.audit.verify import VerifyIncomplete, verify_log

        url, workers = settings.database_url, settings.audit_verify_workers or None
        try:
            verdict = _audit_run(lambda conn: verify_log(conn, key, database_url=url, workers=workers))
        except (VerifyIncomplete, OSError, asyncpg.PostgresError, ValueError) as error:
            # Not a verdict on the log: it was not read to the end (exit 1 is kept for a log found not to match).
            typer.echo(f"FAILED: verify could not finish, the log is not verified: {error}")
            raise typer.Exit(2) from error
    typer.echo(verdict.message if verdict.ok else f"FAILED: {verdict.message}")
    raise typer.Exit(0 if verdict.ok else 1)


def _log_public_key(pem: Path | None, signing_key_file: Path) -> Any:
    """The log's public key: from ``pem``, or from the log's own key file (never made here: a new key would make
    every head fail, as if the log were another)."""
    from services.audit import heads

    try:
        if pem is not None:
            return heads.load_public_key_pem(pem.read_bytes())
        if not signing_key_file.is_file():
            _refuse(f"no log key at {signing_key_file} (AUDIT_SIGNING_KEY_FILE): give the log's --public-key")
        return heads.load_signing_key(signing_key_file).public_key()
    except (OSError, heads.HeadFormatError) as error:
        _refuse(f"the log's key cannot be read: {error}")


@audit_cli.command("export")
def audit_export(
    case: Annotated[str, typer.Option("--case", help="the case id")],
    out: Annotated[Path | None, typer.Option("--out", help="the file to write (default: standard output)")] = None,
) -> None:
    """One case's entries with inclusion proofs against the latest signed head, for `rj audit check`."""
    from services.audit.app import signing_key
    from services.audit.verify import export_case

    key = signing_key(get_settings().audit_signing_key_file)
    try:
        document = _audit_run(lambda conn: export_case(conn, key, case))
    except LookupError as exc:
        _refuse(str(exc.args[0]))
    text = json.dumps(document, indent=1)
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text)
        typer.echo(f"wrote {out}", err=True)


@audit_cli.command("check")
def audit_check(
    file: Annotated[Path, typer.Argument(help="an export file")],
    log_id: Annotated[str | None, typer.Option("--log-id", help="the log id the witness published")] = None,
) -> None:
    """Check an export on its own (what `python -m services.audit.check` does)."""
    from services.audit.check import check_export_file

    result = check_export_file(file, log_id)
    typer.echo(result.summary())
    raise typer.Exit(0 if result.ok else 1)


# --- the notify service's letter queue (services/notify/channels/letters.py) ---------------------------------


def _letter_queue(work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work(queue)`` on notify's letter queue at DATABASE_URL, with the key store (letters are sealed)."""
    from services.notify.channels.letters import LetterErased, LetterNotFound, LetterQueue, LetterWithdrawn
    from services.runtime import privacy
    from services.runtime.db import create_pool

    settings = get_settings()
    configure_logging("notify-letters", settings.log_level, settings.log_format)

    async def main() -> T:
        keys = privacy.Privacy.from_settings(settings)
        pool = await create_pool(settings.model_copy(update={"db_pool_size": 1}))
        try:
            return await work(LetterQueue(pool, keys))
        finally:
            await pool.close()

    try:
        return asyncio.run(main())
    except (LetterNotFound, LetterErased, LetterWithdrawn) as exc:
        _console(stderr=True).print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from exc


@notify_cli.command("new-reference-key")
def notify_new_reference_key() -> None:
    """Print a fresh NOTIFY_REFERENCE_KEY (base64 of 32 bytes). To rotate, put it first: NEW,OLD."""
    from services.notify.channels.reference import new_reference_key

    typer.echo(new_reference_key())


@letters_cli.command("list")
def letters_list(
    limit: Annotated[int, typer.Option(help="at most this many, oldest first")] = 200, as_json: JsonOption = False
) -> None:
    """Letters waiting to be printed: ids, case, person id, pages, when made (no name, no address)."""
    letters = _letter_queue(lambda queue: queue.unprinted(limit))
    if as_json:
        rows = [
            {"letter_id": x.letter_id, "case_id": x.case_id, "person_id": x.person_id, "pages": x.pages,
             "large_print": x.large_print, "created_at": x.created_at.isoformat(), "erased": x.erased}
            for x in letters
        ]  # fmt: skip
        typer.echo(json.dumps(rows, indent=2))
        return
    if not letters:
        typer.echo("no letters waiting")
        return
    for x in letters:
        flags = ", ".join(f for f, on in (("large print", x.large_print), ("recipient erased", x.erased)) if on)
        typer.echo(f"{x.letter_id}  {x.created_at:%Y-%m-%d %H:%M}  case {x.case_id}  person {x.person_id}  "
                   f"{x.pages} page(s){'  (' + flags + ')' if flags else ''}")  # fmt: skip


@letters_cli.command("print")
def letters_print(
    letter_id: Annotated[str, typer.Argument(help="the letter's id (from `rj notify letters list`)")],
    out: Annotated[str, typer.Option("--out", help="the PDF file to write; - for standard output (to lp)")],
    by: Annotated[str, typer.Option("--by", help="who prints it (recorded with the time)")],
) -> None:
    """Write one letter's PDF (readable by you only) and mark it printed."""
    from services.notify.channels.letters import stdout_or_path

    target = stdout_or_path(out)
    written = _letter_queue(lambda queue: queue.write_pdf(letter_id, target, by=by))
    if out != "-":
        typer.echo(f"wrote {written} bytes to {out}; letter {letter_id} marked printed")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
