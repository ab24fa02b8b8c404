"""Alertmanager config: amtool check-config, routes by severity, inhibition in real Alertmanager."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, require_binary
from tests.deploy import DEPLOY, load_yaml, run_tool

CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"


@pytest.fixture(scope="module")
def amtool() -> str:
    return require_binary("amtool")


def _route(amtool: str, *labels: str) -> str:
    result = run_tool([amtool, "config", "routes", "test", f"--config.file={CONFIG}", *labels])
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def test_config_is_valid(amtool: str) -> None:
    """`amtool check-config` accepts the config with its inhibit rules and receivers."""
    result = run_tool([amtool, "check-config", str(CONFIG)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert "1 inhibit rules" in result.stdout


def test_check_config_rejects_a_route_to_a_missing_receiver(amtool: str, tmp_path: Path) -> None:
    """amtool really validates: a route to an undefined receiver fails the check."""
    broken = tmp_path / "alertmanager.yml"
    broken.write_text(CONFIG.read_text().replace("receiver: team-chat", "receiver: nobody"))
    result = run_tool([amtool, "check-config", str(broken)])
    assert result.returncode != 0


@pytest.mark.parametrize(
    ("severity", "receiver"),
    [("critical", "oncall-pager"), ("warning", "team-chat"), ("info", "null")],
)
def test_routes_by_severity(amtool: str, severity: str, receiver: str) -> None:
    """Critical alerts page, warnings go to chat, info goes nowhere."""
    labels = ("alertname=HighErrorRate", "service=store", "role=root_cause", "root_cause=store")
    assert _route(amtool, *labels, f"severity={severity}") == receiver


def test_an_alert_without_severity_reaches_the_default_receiver(amtool: str) -> None:
    """An alert from elsewhere without a severity still reaches someone."""
    assert _route(amtool, "alertname=Other") == "default"


def test_alerts_are_grouped_by_root_cause() -> None:
    """One notification per incident: a root cause and what it causes share a group."""
    assert load_yaml(CONFIG)["route"]["group_by"] == ["root_cause"]


def test_inhibition_is_the_analyzer_s_own() -> None:
    """One inhibit rule: a firing root cause mutes the symptoms and at-risk callers it names."""
    (rule,) = load_yaml(CONFIG)["inhibit_rules"]
    assert rule["source_matchers"] == ['role="root_cause"']
    assert rule["target_matchers"] == ['role=~"symptom|at_risk"']
    assert rule["equal"] == ["root_cause"]


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """The real Alertmanager with this config on loopback; yields its base URL."""
    binary = require_binary("prometheus-alertmanager")
    port = free_port()
    # Deliveries would go to the placeholder webhooks; point them at a closed loopback port.
    closed = free_port()
    config = tmp_path / "alertmanager.yml"
    config.write_text(CONFIG.read_text().replace("127.0.0.1:5001", f"127.0.0.1:{closed}"))
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{url}/-/ready", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None:
                pytest.fail(f"alertmanager exited with {process.returncode}")
            time.sleep(0.1)
        else:
            pytest.fail("alertmanager did not become ready")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def _alert(alertname: str, service: str, severity: str, role: str, root_cause: str) -> Any:
    labels = {
        "alertname": alertname,
        "service": service,
        "severity": severity,
        "role": role,
        "root_cause": root_cause,
    }
    return {"labels": labels, "annotations": {"summary": alertname, "description": service}}


@pytest.mark.integration
def test_root_cause_alert_inhibits_its_symptoms_in_a_real_alertmanager(alertmanager: str) -> None:
    """Alertmanager suppresses what a firing root cause explains, and nothing else."""
    alerts = [
        _alert("HighErrorRate", "store", "critical", "root_cause", "store"),
        _alert("HighErrorRate", "orders", "warning", "symptom", "store"),
        _alert("HighLatency", "customers", "warning", "symptom", "payments"),
        _alert("CascadeRisk", "gateway", "info", "at_risk", "store"),
    ]
    posted = httpx.post(f"{alertmanager}/api/v2/alerts", json=alerts, timeout=5.0)
    assert posted.status_code == 200, posted.text
    listed = httpx.get(f"{alertmanager}/api/v2/alerts", timeout=5.0).json()
    state = {a["labels"]["service"]: a for a in listed}
    assert set(state) == {"store", "orders", "customers", "gateway"}
    root_fingerprint = state["store"]["fingerprint"]
    for service in ("orders", "gateway"):
        assert state[service]["status"]["state"] == "suppressed", service
        assert state[service]["status"]["inhibitedBy"] == [root_fingerprint], service
    for service in ("store", "customers"):
        assert state[service]["status"]["state"] == "active", service
        assert not state[service]["status"]["inhibitedBy"], service
