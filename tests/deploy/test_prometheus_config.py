"""Prometheus scrape config and rule files, checked and unit-tested with the real `promtool`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import require_binary
from tests.deploy import (
    DEPLOY,
    PROMETHEUS_OWN_NAMES,
    analyzer_metric_names,
    load_yaml,
    promql_metric_names,
    recorded_names,
    rule_exprs,
    run_tool,
)

PROMETHEUS = DEPLOY / "prometheus"
RULES = PROMETHEUS / "rules"
ALERT_RULES = RULES / "watchman-alerts.rules.yml"
SELF_RULES = RULES / "watchman-analyzer.rules.yml"
ALERT_NAMES = (
    "ServiceDown",
    "InstanceDown",
    "HighErrorRate",
    "HighLatency",
    "TrafficDrop",
    "Saturation",
    "CascadeRisk",
)
ALERT_LABELS = {"service", "severity", "role", "root_cause"}


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_binary("promtool")


def _groups(path: Path) -> dict[str, list[dict[str, object]]]:
    return {group["name"]: group["rules"] for group in load_yaml(path)["groups"]}


def test_config_is_valid(promtool: str) -> None:
    """`promtool check config` accepts prometheus.yml and finds the three rule files through it."""
    result = run_tool([promtool, "check", "config", "prometheus.yml"], cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 rule files found" in result.stdout


@pytest.mark.parametrize("path", sorted(RULES.glob("*.rules.yml")), ids=lambda p: p.name)
def test_rule_file_is_valid(promtool: str, path: Path) -> None:
    """`promtool check rules` accepts each rule file."""
    result = run_tool([promtool, "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rule_unit_tests_pass(promtool: str) -> None:
    """The rule unit tests under rules/tests pass with `promtool test rules`."""
    tests = sorted(str(p.relative_to(PROMETHEUS)) for p in (RULES / "tests").glob("*.yml"))
    assert len(tests) == 2
    result = run_tool([promtool, "test", "rules", *tests], cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_catch_forwarding_pending_alerts(promtool: str, tmp_path: Path) -> None:
    """The alert rule tests fail when the rules also forward pending alerts (they can fail)."""
    shutil.copytree(RULES, tmp_path / "rules")
    rules = tmp_path / "rules" / ALERT_RULES.name
    text = rules.read_text(encoding="utf-8")
    assert text.count('alertstate="firing"') == len(ALERT_NAMES)
    rules.write_text(text.replace('alertstate="firing"', 'alertstate=~"firing|pending"'))
    result = run_tool(
        [promtool, "test", "rules", "rules/tests/watchman-alerts.test.yml"], cwd=tmp_path
    )
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def test_every_alert_name_is_forwarded_firing_only() -> None:
    """One rule per alert name selects that name's firing series, with summary and description."""
    rules = _groups(ALERT_RULES)["watchman-alerts"]
    assert [rule["alert"] for rule in rules] == list(ALERT_NAMES)
    for rule in rules:
        expr = str(rule["expr"])
        assert f'alertname="{rule["alert"]}"' in expr
        assert 'alertstate="firing"' in expr
        # Exactly the analyzer's labels reach Alertmanager: no state, no scrape labels.
        assert "max without (alertstate, job, instance, shard)" in expr
        # The analyzer already waited `for`; waiting again would delay every alert twice.
        assert "for" not in rule
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        assert set(annotations) == {"summary", "description"}


def test_analyzer_self_alerts_carry_the_alert_labels() -> None:
    """The analyzer's own alerts carry service, severity, role and root_cause like every alert."""
    rules = _groups(SELF_RULES)["watchman-analyzer"]
    assert {rule["alert"] for rule in rules} == {"WatchmanAnalyzerDown", "WatchmanIntakeRefusing"}
    for rule in rules:
        labels = rule["labels"]
        assert isinstance(labels, dict)
        assert set(labels) == ALERT_LABELS
        assert labels["severity"] in {"critical", "warning", "info"}
        assert labels["role"] == "root_cause"
        assert labels["root_cause"] == labels["service"]


@pytest.mark.parametrize("path", sorted(RULES.glob("*.rules.yml")), ids=lambda p: p.name)
def test_rules_read_only_series_the_analyzer_exposes(path: Path) -> None:
    """Every metric a rule reads is the analyzer's, recorded by a rule, or Prometheus's own."""
    allowed = analyzer_metric_names() | recorded_names() | PROMETHEUS_OWN_NAMES
    for rule in rule_exprs(path):
        names = promql_metric_names(str(rule["expr"]))
        assert names, rule
        assert names <= allowed, (rule.get("record") or rule.get("alert"), names - allowed)


def test_analyzer_scrape_keeps_instance_labels_and_marks_shards() -> None:
    """The analyzer job keeps the series' own `instance`, labels shards, adds no alert labels."""
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    assert "external_labels" not in config["global"]
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "watchman")
    assert job["honor_labels"] is True
    assert {"source_labels": ["__address__"], "target_label": "shard"} in job["relabel_configs"]
    assert config["rule_files"] == ["rules/*.rules.yml"]
