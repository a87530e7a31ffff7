"""The outbox relay's process (``python -m services.runtime.relay_main SERVICE``), started by each service's
worker as its child (``relay.RelayProcess``). An entry point of its own, importing the relay and nothing of the
CLI or the contract's models: the child starts in a third of the CPU time ``rj relay`` took, which every start,
restart and test of a service pays."""

from __future__ import annotations

import sys

from services.runtime.db import name_sessions
from services.runtime.logs import configure_logging
from services.runtime.relay import run_relay_process
from services.runtime.settings import get_settings


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m services.runtime.relay_main SERVICE")
    settings = get_settings()
    configure_logging(f"{argv[0]}-relay", settings.log_level, settings.log_format)
    name_sessions(f"rj-{argv[0]}-relay")
    run_relay_process(argv[0], settings)


if __name__ == "__main__":
    main(sys.argv[1:])
