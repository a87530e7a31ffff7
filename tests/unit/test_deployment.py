"""The production-like deployment stays in step with the code."""

from __future__ import annotations

from pathlib import Path

import yaml

from services.cli import SERVICES
from services.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_the_compose_file_runs_kafka_in_kraft_mode_and_postgresql() -> None:
    services = compose()["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    assert services["postgres"]["image"].startswith("postgres:")


def test_the_compose_file_runs_every_service_the_code_has_from_the_one_image() -> None:
    services = compose()["services"]
    for name in SERVICES:
        assert name in services, f"docker-compose.yml has no {name} service"
        assert services[name]["command"] == ["serve", name]
        assert services[name]["build"] == "."
    runs = {s["command"][1] for s in services.values() if s.get("command", [None])[0] == "serve"}
    assert runs == set(SERVICES), "the compose file runs a service the code does not have"


def test_the_compose_environment_uses_only_names_the_settings_read() -> None:
    known = {name.upper() for name in Settings.model_fields}
    for name in SERVICES:
        environment = compose()["services"][name]["environment"]
        assert set(environment) <= known, set(environment) - known
        Settings(**{k.lower(): v for k, v in environment.items()})  # and the values parse
