"""Collector configs: pipelines are wired, component names current, ports meet the analyzer."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from watchman_collector.config import SETTINGS

from tests.deploy import DEPLOY, env_default, host_port, load_yaml
from watchman_otel._heartbeat import HEARTBEAT_METRICS

SINGLE = DEPLOY / "otelcol.yaml"
SHARDED = DEPLOY / "otelcol-loadbalancing.yaml"
CONFIGS = [SINGLE, SHARDED]
SECTIONS = ("receivers", "processors", "exporters")
# The Collector renamed these (lower_snake_case); the old names are deprecated aliases.
DEPRECATED_TYPES = {"otlp": "otlp_grpc", "otlphttp": "otlp_http", "loadbalancing": "load_balancing"}
_DEFAULTS = {setting.name: str(setting.default) for setting in SETTINGS}


def _type(component_id: str) -> str:
    return component_id.split("/", 1)[0]


def _heartbeat_regex(config: dict[str, Any]) -> re.Pattern[str]:
    (condition,) = config["processors"]["filter/heartbeats"]["metrics"]["metric"]
    match = re.fullmatch(r'not IsMatch\(name, "(.*)"\)', condition)
    assert match, condition
    # OTTL string literal -> regex: `\\` is one backslash.
    return re.compile(match.group(1).replace("\\\\", "\\"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_pipelines_use_only_defined_components(path: Path) -> None:
    """Every component a pipeline names is defined, and every defined one is used."""
    config = load_yaml(path)
    pipelines = config["service"]["pipelines"]
    assert {_type(name) for name in pipelines} == {"traces", "metrics", "logs"}
    for section in SECTIONS:
        used = {c for pipeline in pipelines.values() for c in pipeline.get(section, [])}
        assert used == set(config[section]), section
    assert set(config["service"]["extensions"]) == set(config["extensions"])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_memory_limiter_first_and_batch_last(path: Path) -> None:
    """memory_limiter refuses before anything else runs; batch is the last processor."""
    for name, pipeline in load_yaml(path)["service"]["pipelines"].items():
        processors = pipeline["processors"]
        assert processors[0] == "memory_limiter", name
        assert processors[-1] == "batch", name


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_component_types_use_current_names(path: Path) -> None:
    """No exporter uses a deprecated type name (otlp, otlphttp, loadbalancing)."""
    for exporter in load_yaml(path)["exporters"]:
        assert _type(exporter) not in DEPRECATED_TYPES, (exporter, DEPRECATED_TYPES)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_receivers_listen_on_the_standard_otlp_ports(path: Path) -> None:
    """The Collector receives OTLP on 4317 (gRPC) and 4318 (HTTP) on every interface."""
    protocols = load_yaml(path)["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"


def test_single_analyzer_exporter_reaches_its_grpc_port() -> None:
    """The exporter's default endpoint is the analyzer's default OTLP/gRPC port, plaintext."""
    exporter = load_yaml(SINGLE)["exporters"]["otlp_grpc/watchman"]
    assert exporter["endpoint"].startswith("${env:WATCHMAN_OTLP_ENDPOINT:-")
    host, port = host_port(env_default(exporter["endpoint"]))
    assert host == "watchman"
    assert port == host_port(_DEFAULTS["otlp_grpc"])[1]
    assert exporter["tls"]["insecure"] is True


def test_traces_are_sharded_by_trace_id() -> None:
    """Traces and logs go through load_balancing with routing_key traceID to every shard."""
    config = load_yaml(SHARDED)
    pipelines = config["service"]["pipelines"]
    assert pipelines["traces"]["exporters"] == ["load_balancing/watchman"]
    assert pipelines["logs"]["exporters"] == ["load_balancing/watchman"]
    balancer = config["exporters"]["load_balancing/watchman"]
    assert balancer["routing_key"] == "traceID"
    assert "endpoint" not in balancer["protocol"]["otlp"]  # the resolver supplies it
    for hostname in balancer["resolver"]["static"]["hostnames"]:
        assert host_port(hostname)[1] == host_port(_DEFAULTS["otlp_grpc"])[1]


def test_heartbeats_are_broadcast_to_every_shard() -> None:
    """The metrics pipeline sends heartbeats to each shard the trace balancer knows."""
    config = load_yaml(SHARDED)
    shards = set(config["exporters"]["load_balancing/watchman"]["resolver"]["static"]["hostnames"])
    (name,) = [n for n in config["service"]["pipelines"] if n.startswith("metrics")]
    exporters = config["service"]["pipelines"][name]["exporters"]
    assert {config["exporters"][e]["endpoint"] for e in exporters} == shards
    assert len(exporters) == len(shards) >= 2
    assert "filter/heartbeats" in config["service"]["pipelines"][name]["processors"]


def test_heartbeat_filter_keeps_exactly_the_sdk_heartbeat_metrics() -> None:
    """The filter's regex matches every SDK heartbeat instrument and no RED metric."""
    pattern = _heartbeat_regex(load_yaml(SHARDED))
    assert HEARTBEAT_METRICS
    for name in HEARTBEAT_METRICS:
        assert pattern.search(name), name
    for other in ("http.server.request.duration", "http.client.request.duration", "watchman.x"):
        assert not pattern.search(other), other
