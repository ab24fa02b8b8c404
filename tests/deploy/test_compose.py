"""The compose file: it parses, images are pinned, mounts exist, and ports agree everywhere."""

from __future__ import annotations

import re
from typing import Any

import pytest

from examples.common import CALLS, DEFAULT_PORTS
from tests.deploy import DEPLOY, REPO, env_default, host_port, load_yaml

COMPOSE = DEPLOY / "compose.yaml"
PINNED = {
    "otel/opentelemetry-collector-contrib": r"\d+\.\d+\.\d+",
    "prom/prometheus": r"v\d+\.\d+\.\d+",
    "prom/alertmanager": r"v\d+\.\d+\.\d+",
    "grafana/grafana": r"\d+\.\d+\.\d+",
}


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = load_yaml(COMPOSE)
    result: dict[str, Any] = compose["services"]
    return result


def _flag(command: list[str], flag: str) -> str:
    """The value of `--flag VALUE` or `--flag=VALUE` in a command list."""
    for i, part in enumerate(command):
        if part == flag:
            return command[i + 1]
        if part.startswith(flag + "="):
            return part.split("=", 1)[1]
    raise AssertionError(f"{flag} not in {command}")


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Bind mounts of a service: container path -> host path (relative to the compose file)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[target] = source
    return mounts


def _published(service: dict[str, Any]) -> dict[int, int]:
    """Published ports: container port -> host port."""
    ports = {}
    for spec in service.get("ports", []):
        host, container = str(spec).split(":")
        ports[int(container)] = int(host)
    return ports


def test_the_whole_stack_is_there(services: dict[str, Any]) -> None:
    """Collector, analyzer, Prometheus, Alertmanager, Grafana and the six example services."""
    core = {"otelcol", "watchman", "prometheus", "alertmanager", "grafana"}
    assert set(services) == core | set(DEFAULT_PORTS)


def test_images_are_pinned(services: dict[str, Any]) -> None:
    """Every third-party image has an exact version tag; built images are not `latest`."""
    seen = set()
    for name, service in services.items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository, (name, image)
        assert tag != "latest", name
        if "build" in service:
            continue
        assert repository in PINNED, image
        assert re.fullmatch(PINNED[repository], tag), image
        seen.add(repository)
    assert seen == set(PINNED)


def test_bind_mounts_exist(services: dict[str, Any]) -> None:
    """Every host path compose mounts exists in the repository."""
    count = 0
    for service in services.values():
        for source in _mounts(service).values():
            assert (DEPLOY / source).exists(), source
            count += 1
    assert count == 5


def test_build_uses_the_dockerfile_beside_this_file(services: dict[str, Any]) -> None:
    """Built services use collector/Dockerfile on python:3.12-slim, copying paths that exist."""
    built = [s for s in services.values() if "build" in s]
    assert len(built) == 1 + len(DEFAULT_PORTS)
    for service in built:
        context = (DEPLOY / service["build"]["context"]).resolve()
        assert context == REPO
        assert (context / service["build"]["dockerfile"]) == DEPLOY / "Dockerfile"
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.12-slim$", dockerfile, re.MULTILINE)
    assert 'pip install ".[collector' in dockerfile
    copies = re.findall(r"^COPY (.+) \S+$", dockerfile, re.MULTILINE)
    sources = [s for line in copies for s in line.split()]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), source


def test_collector_config_and_ports(services: dict[str, Any]) -> None:
    """The Collector reads otelcol.yaml and publishes the ports its receivers listen on."""
    otelcol = services["otelcol"]
    config_path = _flag(otelcol["command"], "--config")
    assert _mounts(otelcol)[config_path] == "./otelcol.yaml"
    protocols = load_yaml(DEPLOY / "otelcol.yaml")["receivers"]["otlp"]["protocols"]
    receiver_ports = {host_port(p["endpoint"])[1] for p in protocols.values()}
    assert set(_published(otelcol)) == receiver_ports


def test_collector_exports_to_the_analyzer_grpc_port(services: dict[str, Any]) -> None:
    """The Collector's exporter endpoint is the analyzer's --otlp-grpc port on its service name."""
    exporter = load_yaml(DEPLOY / "otelcol.yaml")["exporters"]["otlp_grpc/watchman"]
    endpoint = services["otelcol"]["environment"]["WATCHMAN_OTLP_ENDPOINT"]
    assert endpoint == env_default(exporter["endpoint"])
    grpc = host_port(_flag(services["watchman"]["command"], "--otlp-grpc"))
    assert host_port(endpoint) == ("watchman", grpc[1])
    assert grpc[0] == "0.0.0.0"  # reachable from the Collector's container


def test_analyzer_otlp_ports_are_not_published(services: dict[str, Any]) -> None:
    """Only the analyzer's API is published: the host's 4317/4318 belong to the Collector."""
    watchman = services["watchman"]
    api = host_port(_flag(watchman["command"], "--api"))
    assert _published(watchman) == {api[1]: api[1]}
    assert set(_published(services["otelcol"])) & set(_published(watchman)) == set()


def test_prometheus_scrapes_the_analyzer_api_and_alerts_alertmanager(
    services: dict[str, Any],
) -> None:
    """prometheus.yml targets the analyzer's --api port and Alertmanager's port by service name."""
    prometheus = services["prometheus"]
    config_path = _flag(prometheus["command"], "--config.file")
    mounts = _mounts(prometheus)
    assert mounts["/etc/prometheus"] == "./prometheus"
    assert config_path == "/etc/prometheus/prometheus.yml"
    config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    api_port = host_port(_flag(services["watchman"]["command"], "--api"))[1]
    assert targets["watchman"] == [f"watchman:{api_port}"]
    telemetry = load_yaml(DEPLOY / "otelcol.yaml")["service"]["telemetry"]["metrics"]
    collector_port = telemetry["readers"][0]["pull"]["exporter"]["prometheus"]["port"]
    assert targets["otelcol"] == [f"otelcol:{collector_port}"]
    (alertmanagers,) = config["alerting"]["alertmanagers"]
    assert alertmanagers["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert 9093 in _published(services["alertmanager"])
    assert targets["alertmanager"] == ["alertmanager:9093"]


def test_alertmanager_reads_its_config(services: dict[str, Any]) -> None:
    """Alertmanager's --config.file is the mounted alertmanager.yml."""
    alertmanager = services["alertmanager"]
    path = _flag(alertmanager["command"], "--config.file")
    assert _mounts(alertmanager)[path] == "./alertmanager/alertmanager.yml"


def test_grafana_provisioning_agrees_with_the_stack(services: dict[str, Any]) -> None:
    """Provisioning and dashboards are mounted where Grafana and the provider look for them."""
    grafana = services["grafana"]
    mounts = _mounts(grafana)
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    provider = load_yaml(DEPLOY / "grafana/provisioning/dashboards/dashboards.yml")
    assert mounts[provider["providers"][0]["options"]["path"]] == "./grafana/dashboards"
    datasources = load_yaml(DEPLOY / "grafana/provisioning/datasources/datasources.yml")
    urls = {ds["uid"]: ds["url"] for ds in datasources["datasources"]}
    assert host_port(urls["prometheus"]) == ("prometheus", _published(services["prometheus"])[9090])
    api_port = host_port(_flag(services["watchman"]["command"], "--api"))[1]
    assert host_port(urls["watchman-api"]) == ("watchman", api_port)
    plugins = grafana["environment"]["GF_PLUGINS_PREINSTALL_SYNC"]
    assert re.fullmatch(r"yesoreyeram-infinity-datasource@\d+\.\d+\.\d+", plugins)
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (DEPLOY / "grafana/dashboards" / home.rsplit("/", 1)[1]).is_file()


@pytest.mark.parametrize("name", sorted(DEFAULT_PORTS))
def test_example_service_wiring(services: dict[str, Any], name: str) -> None:
    """Each example listens on its port, reports to the Collector, and knows its callees' URLs."""
    service = services[name]
    assert service["command"][:3] == ["python", "-m", f"watchman_collector.examples.{name}"]
    assert int(_flag(service["command"], "--port")) == DEFAULT_PORTS[name]
    env = service["environment"]
    assert env["HOST"] == "0.0.0.0"
    http_receiver = load_yaml(DEPLOY / "otelcol.yaml")["receivers"]["otlp"]["protocols"]["http"]
    port = host_port(http_receiver["endpoint"])[1]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://otelcol:{port}"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    urls = {key: value for key, value in env.items() if key.endswith("_URL")}
    expected = {f"{c.upper()}_URL": f"http://{c}:{DEFAULT_PORTS[c]}" for c in CALLS[name]}
    assert urls == expected
    assert set(CALLS[name]) <= set(service["depends_on"])
