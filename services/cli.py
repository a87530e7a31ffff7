"""The ``rj`` command: run one service, the whole embedded stack, the demo, migrations, schema export."""

from __future__ import annotations

import asyncio
import importlib
import os
from pathlib import Path
from typing import Annotated

import typer

from services.runtime.logs import configure_logging
from services.runtime.settings import get_settings

#: Every service of the system and the function that builds its app.
SERVICES: dict[str, str] = {
    "referral": "services.referral.app:build",
    "consent": "services.consent.app:build",
    "scheduling": "services.scheduling.app:build",
}

cli = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
schemas_cli = typer.Typer(no_args_is_help=True, help="The event contract.")
cli.add_typer(schemas_cli, name="schemas")


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
    from services.dev import run_dev

    configure_logging("dev", os.environ.get("LOG_LEVEL", "info"))
    raise typer.Exit(run_dev(demo=demo, keep_running=keep_running))


@cli.command()
def demo() -> None:
    """Start the embedded system, feed it sample upstream events, print the cases they became, stop."""
    dev(demo=True, keep_running=False)


@schemas_cli.command("export")
def export_schemas(
    out: Annotated[Path, typer.Option(help="where to write the JSON Schema files")] = Path("schemas/jsonschema"),
) -> None:
    """Regenerate the JSON Schema files other teams code against."""
    from schemas.export import write_json_schemas

    written = write_json_schemas(out)
    typer.echo(f"wrote {len(written)} schema files to {out}")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
