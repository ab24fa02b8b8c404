"""The alert rules file: defaults, overrides, threshold levels and validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from watchman_collector.rules import (
    ALERT_NAMES,
    Level,
    Levels,
    RulesError,
    default_rules,
    format_duration,
    load_rules,
    parse_duration,
    parse_rules,
)

EXAMPLE = Path(__file__).parents[2] / "collector" / "watchman-rules.yaml"


def test_example_file_equals_builtin_defaults():
    """The documented example file states exactly the built-in defaults."""
    example, builtin = load_rules(EXAMPLE), default_rules()
    assert example.thresholds == builtin.thresholds
    assert example.alerts == builtin.alerts
    assert example.recipients == builtin.recipients
    assert (example.default_for_s, example.default_keep_firing_for_s) == (60.0, 60.0)


def test_every_documented_alert_has_a_builtin_rule():
    """Each documented alert name has a default rule with at least one alerting level."""
    rules = default_rules()
    assert set(rules.alerts) == set(ALERT_NAMES)
    assert all(rules.alerts[name].severity for name in ALERT_NAMES)


def test_error_ratio_defaults_follow_kiali():
    """Error ratio is degraded from 0.1 % and failing from 10 %, as Kiali's 5xx tolerance."""
    levels = default_rules().thresholds.error_ratio
    assert levels == Levels(degraded=0.001, failing=0.1)
    assert levels.level(0.0009) is None
    assert levels.level(0.001) is Level.DEGRADED
    assert levels.level(0.1) is Level.FAILING


def test_too_few_requests_give_no_level():
    """Below min_requests the error ratio has no verdict, however bad it looks."""
    thresholds = default_rules().thresholds
    assert thresholds.error_level(requests=9, failed=9) is None
    assert thresholds.error_level(requests=10, failed=5) is Level.FAILING
    assert thresholds.error_level(requests=0, failed=0) is None


def test_latency_and_traffic_levels():
    """Latency uses duration thresholds; a traffic drop is measured against the baseline."""
    thresholds = default_rules().thresholds
    assert thresholds.latency_level(100, 0.6) is Level.DEGRADED
    assert thresholds.latency_level(100, None) is None
    assert thresholds.traffic_drop_level(rate=1.0, baseline=10.0) is Level.FAILING
    assert thresholds.traffic_drop_level(rate=1.0, baseline=None) is None


def test_service_overrides_apply_only_to_that_service():
    """A services: entry changes thresholds, timing and recipients for one service only."""
    rules = parse_rules(
        {
            "severities": {"critical": {"recipients": ["oncall"]}},
            "services": {
                "checkout": {
                    "thresholds": {"error_ratio": {"failing": 0.2}},
                    "alerts": {"HighLatency": {"for": "10m"}, "TrafficDrop": {"enabled": False}},
                    "recipients": {"critical": ["payments"]},
                }
            },
        }
    )
    assert rules.thresholds_for("checkout").error_ratio == Levels(0.001, 0.2)
    assert rules.thresholds_for("cart").error_ratio == Levels(0.001, 0.1)
    assert rules.rule_for("HighLatency", "checkout").for_s == 600
    assert rules.rule_for("HighLatency", "cart").for_s == 60
    assert not rules.rule_for("TrafficDrop", "checkout").enabled
    assert rules.recipients_for("critical", "checkout") == ("payments",)
    assert rules.recipients_for("critical", "cart") == ("oncall",)


def test_defaults_block_retimes_alerts_without_their_own_timing():
    """`defaults:` sets the keep_firing_for of alerts that do not set one themselves."""
    rules = parse_rules({"defaults": {"for": "3m", "keep_firing_for": "5m"}})
    assert rules.rule_for("HighErrorRate", "x").keep_firing_for_s == 300
    assert rules.rule_for("CascadeRisk", "x").keep_firing_for_s == 60
    assert rules.rule_for("NotDocumented", "x").for_s == 180


def test_validation_names_file_key_path_and_fix(tmp_path):
    """Every problem is reported at once with the file, the key path and a fix."""
    path = tmp_path / "rules.yaml"
    path.write_text(
        "thresholds:\n  error_ratio: {failing: 20}\n  window: 0s\n"
        "alerts:\n  HighErorRate: {for: 1m}\n  HighLatency: {for: 60, severity: {failing: page}}\n"
    )
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    problems = caught.value.problems
    assert problems == [
        f"{path}: thresholds.window: must be longer than 0s; e.g. 1m",
        f"{path}: thresholds.error_ratio.failing: must be a ratio between 0 and 1, got 20; "
        "write 1% as 0.01",
        f"{path}: alerts.HighErorRate: unknown key; did you mean `HighErrorRate`?",
        f"{path}: alerts.HighLatency.for: must be a duration, got 60; "
        "write it like 30s, 5m or 1h30m (a bare number has no unit)",
        f"{path}: alerts.HighLatency.severity.failing: unknown severity 'page'; "
        "use one of critical, warning, info or declare it under `severities:`",
    ]


def test_degraded_above_failing_is_rejected():
    """A degraded threshold above the failing one is an error, not a silent swap."""
    with pytest.raises(RulesError, match=r"thresholds.cpu_utilization: degraded \(0.9\) is above"):
        parse_rules({"thresholds": {"cpu_utilization": {"degraded": 0.9, "failing": 0.5}}})


def test_yaml_syntax_error_names_line(tmp_path):
    """Broken YAML is reported with the file and the line."""
    path = tmp_path / "bad.yaml"
    path.write_text("alerts:\n  HighLatency: {for: 1m\n")
    with pytest.raises(RulesError, match=rf"{path}: line \d+, column \d+"):
        load_rules(path)


def test_top_level_must_be_a_mapping():
    """A file that is a list is reported at the top level."""
    with pytest.raises(RulesError, match=r"x.yaml: \(top level\): must be a mapping"):
        parse_rules(["alerts"], "x.yaml")


def test_empty_document_gives_defaults():
    """An empty file is valid and means the built-in rules."""
    assert parse_rules(None).alerts == default_rules().alerts


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0s", 0.0), ("90s", 90.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0), ("2d", 172800.0)],
)
def test_parse_duration_prometheus_format(text, seconds):
    """Durations parse as Prometheus writes them."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "1.5m", "m", "1m 30s", "-1s"])
def test_parse_duration_rejects_other_forms(text):
    """Anything but Prometheus's duration format is refused."""
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"), [(192, "3m12s"), (45.9, "45s"), (3605, "1h0m5s"), (0.25, "250ms")]
)
def test_format_duration(seconds, text):
    """Recovery messages print durations as 3m12s."""
    assert format_duration(seconds) == text
