"""The production-like deployment stays in step with the code."""

from __future__ import annotations

import http.server
import os
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import yaml

from schemas.topics import ALL_TOPICS
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


# --- health checks ----------------------------------------------------------------------------------


class _OpsEndpoint(http.server.BaseHTTPRequestHandler):
    """Answers /health/live with the status the test sets, as services/runtime/ops.py does."""

    status = 200

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        status = self.status if self.path == "/health/live" else 404
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b'{"status": "ok", "checks": {}}')

    def log_message(self, *_: object) -> None:
        pass


def run_probe(test: list[str], port: int) -> int:
    """Run a compose healthcheck (``CMD`` form) here, with the container's OPS_PORT."""
    assert test[0] == "CMD", "the probe runs without a shell, as python -c in the service image"
    command = [sys.executable if test[1] == "python" else test[1], *test[2:]]
    return subprocess.run(command, env={**os.environ, "OPS_PORT": str(port)}, timeout=10).returncode


def test_every_service_container_probes_its_liveness_on_the_ops_port() -> None:
    services = compose()["services"]
    for name in SERVICES:
        healthcheck = services[name]["healthcheck"]
        probe = " ".join(healthcheck["test"])
        assert "/health/live" in probe and "OPS_PORT" in probe, f"{name} does not probe /health/live on OPS_PORT"
        assert int(services[name]["environment"]["OPS_PORT"]) > 0, f"{name} serves no ops endpoint"


def test_the_health_probe_passes_on_200_and_fails_on_503() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OpsEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        test = compose()["services"]["referral"]["healthcheck"]["test"]
        _OpsEndpoint.status = 200
        assert run_probe(test, server.server_port) == 0
        _OpsEndpoint.status = 503
        assert run_probe(test, server.server_port) != 0
    finally:
        server.shutdown()
        server.server_close()
        _OpsEndpoint.status = 200


# --- topics -----------------------------------------------------------------------------------------


def topic_job() -> dict:  # type: ignore[type-arg]
    return compose()["services"]["kafka-topics"]  # type: ignore[no-any-return]


def created_topics() -> dict[str, dict[str, str]]:
    """What the topic job creates: for each topic, its partitions, replication and configs, resolved."""
    job = topic_job()
    environment = {k: str(v) for k, v in job["environment"].items()}
    script = job["command"][0].replace("$$", "$")  # compose's escape: the container's shell sees one $

    def resolve(word: str) -> str:
        return re.sub(r"\$(\w+)", lambda m: environment[m.group(1)], word)

    lines = [line.strip() for line in script.splitlines()]
    definition = next(line for line in lines if line.startswith("create="))
    assert "/opt/kafka/bin/kafka-topics.sh" in definition
    assert "--create" in definition and "--if-not-exists" in definition
    created: dict[str, dict[str, str]] = {}
    for line in lines:
        if not line.startswith("$create "):
            continue
        words = iter(shlex.split(line)[1:])
        topic: dict[str, str] = {}
        for flag in words:
            value = resolve(next(words))
            key = value.split("=", 1)[0] if flag == "--config" else flag.removeprefix("--")
            topic[key] = value.split("=", 1)[1] if flag == "--config" else value
        assert topic["topic"] not in created, f"{topic['topic']} is created twice"
        created[topic.pop("topic")] = topic
    assert script.count("--topic") == len(created), "a topic is created outside the $create lines"
    return created


def test_the_topic_job_creates_exactly_the_topics_the_contract_lists() -> None:
    assert sorted(created_topics()) == sorted(ALL_TOPICS)


def test_our_topics_are_kept_for_ever_and_upstreams_as_long_as_the_setting_says() -> None:
    settings = Settings(**{k.lower(): v for k, v in compose()["services"]["referral"]["environment"].items()})
    for name, topic in created_topics().items():
        assert int(topic["partitions"]) == settings.topic_partitions, name
        assert int(topic["replication-factor"]) == settings.topic_replication_factor, name
        if name.startswith("rj."):
            assert topic["retention.ms"] == "-1", f"{name} must keep its events for ever"
            assert topic["retention.bytes"] == "-1", f"{name} must keep its events whatever their size"
        else:
            assert int(topic["retention.ms"]) == settings.crime_events_retention_ms, name


def test_every_service_starts_only_after_the_topics_exist() -> None:
    job = topic_job()
    assert job["image"] == compose()["services"]["kafka"]["image"]
    assert job["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in SERVICES:
        waits_for = compose()["services"][name]["depends_on"]
        assert waits_for["kafka-topics"]["condition"] == "service_completed_successfully", name
