"""The production-like deployment stays in step with the code."""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import services.runtime.metrics  # noqa: F401 - registers every rj_* metric
from schemas.topics import ALL_TOPICS
from services.cli import SERVICES
from services.runtime.kafka import topic_config
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
        # The compose job creates each topic as the services would (one rule: topic_config).
        for key, value in topic_config(settings, name).items():
            assert str(topic[key]) == value, f"{name}: {key}"
        if name.startswith("rj.") and name != "rj.deadletter":
            assert topic["retention.ms"] == "-1", f"{name} must keep its events for ever"
            assert topic["retention.bytes"] == "-1", f"{name} must keep its events whatever their size"


def test_every_service_starts_only_after_the_topics_exist() -> None:
    job = topic_job()
    assert job["image"] == compose()["services"]["kafka"]["image"]
    assert job["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in SERVICES:
        waits_for = compose()["services"][name]["depends_on"]
        assert waits_for["kafka-topics"]["condition"] == "service_completed_successfully", name


# --- Prometheus -------------------------------------------------------------------------------------

PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def mounts(service: str) -> dict[str, Path]:
    """A compose service's bind mounts: where in the container, from which file of the repository."""
    found = {}
    for volume in compose()["services"][service].get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("./"):
            found[target] = ROOT / source
    return found


def exported_metric_names() -> set[str]:
    """Every rj_* sample name services/runtime/metrics.py exports, as Prometheus sees it."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gauge": ("",),
    }
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        if family.name.startswith("rj_")
        for suffix in suffixes[family.type]
    }


def metric_names_in(expression: str) -> set[str]:
    return set(re.findall(r"\brj_[a-z0-9_]+", expression))


def alert_rules() -> list[dict]:  # type: ignore[type-arg]
    return [rule for group in load(PROMETHEUS / "alerts.yml")["groups"] for rule in group["rules"]]


def test_prometheus_mounts_its_config_and_rules_from_files_that_exist() -> None:
    prometheus = compose()["services"]["prometheus"]
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", prometheus["image"]), "pin Prometheus' version"
    mounted = mounts("prometheus")
    for target, source in mounted.items():
        assert source.is_file(), f"{source} (mounted at {target}) does not exist"
    config_flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config_path = config_flag.split("=", 1)[1]
    assert config_path in mounted
    config = load(mounted[config_path])
    for rule_file in config["rule_files"]:
        assert str(Path(config_path).parent / rule_file) in mounted, f"{rule_file} is not mounted"


def test_prometheus_scrapes_every_replica_of_every_service_on_the_ops_port() -> None:
    config = load(PROMETHEUS / "prometheus.yml")
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "rj")
    ops_port = int(compose()["services"]["referral"]["environment"]["OPS_PORT"])
    names = set()
    for discovery in job["dns_sd_configs"]:
        # One A record per replica: --scale adds targets without a change here.
        assert discovery["type"] == "A" and discovery["port"] == ops_port
        names |= set(discovery["names"])
    assert names == set(SERVICES)
    assert {"source_labels": ["__meta_dns_name"], "target_label": "service"} in job["relabel_configs"]


def test_every_alert_tells_the_on_call_person_what_it_means_and_what_to_do() -> None:
    rules = alert_rules()
    assert len({r["alert"] for r in rules}) == len(rules), "two alerts share a name"
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert "First:" in rule["annotations"]["description"], f"{rule['alert']} does not say what to do first"


def test_the_alerts_watch_everything_that_needs_a_person() -> None:
    watched = {name for rule in alert_rules() for name in metric_names_in(rule["expr"])}
    assert {
        "rj_parked_events",
        "rj_outbox_parked",
        "rj_dead_letters_total",
        "rj_transient_failures_total",
        "rj_consumer_lag",
        "rj_outbox_oldest_age_seconds",
        "rj_relay_leader",
        "rj_victims_code_deadlines",
    } <= watched
    assert any(re.search(r'\bup\{job="rj"\} == 0', rule["expr"]) for rule in alert_rules()), "no target-down alert"


def test_the_missing_service_alert_names_every_service() -> None:
    missing = next(rule for rule in alert_rules() if rule["alert"] == "RjServiceMissing")
    assert set(re.findall(r'absent\(up\{job="rj", service="(\w+)"\}\)', missing["expr"])) == set(SERVICES)


def test_every_rj_metric_the_alerts_use_exists() -> None:
    exported = exported_metric_names()
    for rule in alert_rules():
        unknown = metric_names_in(rule["expr"]) - exported
        assert not unknown, f"{rule['alert']} uses {unknown}, which services/runtime/metrics.py does not export"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed")
def test_promtool_accepts_the_config_and_the_rules() -> None:
    for command in (["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"]):
        result = subprocess.run(["promtool", *command], cwd=PROMETHEUS, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed")
def test_the_alerts_fire_on_the_trouble_they_name(tmp_path: Path) -> None:
    rules = load(PROMETHEUS / "alerts.yml")
    for group in rules["groups"]:
        for rule in group["rules"]:
            del rule["annotations"]  # promtool compares them whole; the scenarios name labels only
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    shutil.copy(PROMETHEUS / "alerts-test.yml", tmp_path)
    result = subprocess.run(
        ["promtool", "test", "rules", "alerts-test.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- Grafana ----------------------------------------------------------------------------------------


def dashboard() -> dict:  # type: ignore[type-arg]
    return json.loads((GRAFANA / "dashboards" / "rj.json").read_text())  # type: ignore[no-any-return]


def panels() -> list[dict]:  # type: ignore[type-arg]
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def provisioned_datasource() -> dict:  # type: ignore[type-arg]
    (datasource,) = load(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    return datasource  # type: ignore[no-any-return]


def test_grafana_is_provisioned_from_files_that_exist() -> None:
    grafana = compose()["services"]["grafana"]
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", grafana["image"]), "pin Grafana's version"
    mounted = mounts("grafana")
    for target, source in mounted.items():
        assert source.is_dir(), f"{source} (mounted at {target}) does not exist"
    (provider,) = load(mounted["/etc/grafana/provisioning/dashboards"] / "rj.yml")["providers"]
    dashboards_in = provider["options"]["path"]
    assert dashboards_in in mounted, "the dashboard provider reads a folder that is not mounted"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (mounted[dashboards_in] / Path(home).relative_to(dashboards_in)).is_file()


def test_the_datasource_points_at_the_compose_prometheus() -> None:
    datasource = provisioned_datasource()
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert "prometheus" in compose()["services"]


def test_every_dashboard_panel_queries_the_provisioned_datasource() -> None:
    uid = provisioned_datasource()["uid"]
    assert panels(), "the dashboard has no panels"
    for panel in panels():
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], f"{panel['title']} queries nothing"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]
    for variable in dashboard()["templating"]["list"]:
        assert variable["datasource"]["uid"] == uid, variable["name"]
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(set(ids)) == len(ids), "two panels share an id"


def test_every_rj_metric_the_dashboard_uses_exists() -> None:
    exported = exported_metric_names()
    for panel in panels():
        for target in panel["targets"]:
            unknown = metric_names_in(target["expr"]) - exported
            assert not unknown, f"panel {panel['title']!r} uses {unknown}, which metrics.py does not export"


def test_the_dashboard_shows_what_an_operator_looks_at() -> None:
    shown = {name for panel in panels() for target in panel["targets"] for name in metric_names_in(target["expr"])}
    assert {
        "rj_consumer_lag",
        "rj_events_consumed_total",
        "rj_events_applied_total",
        "rj_events_published_total",
        "rj_batch_size_bucket",
        "rj_batch_duration_seconds_bucket",
        "rj_dead_letters_total",
        "rj_parked_events",
        "rj_outbox_backlog",
        "rj_outbox_oldest_age_seconds",
        "rj_relay_leader",
        "rj_retries_in_progress",
        "rj_victims_code_deadlines",
    } <= shown


def test_every_service_reads_its_master_keys_from_a_secret_file_not_the_environment() -> None:
    file = compose()
    assert "rj_master_keys" in file["secrets"]
    for name in SERVICES:
        service = file["services"][name]
        assert service["environment"]["MASTER_KEY_FILE"] == "/run/secrets/rj_master_keys"
        assert "MASTER_KEYS" not in service["environment"]
        assert "rj_master_keys" in service["secrets"]
