"""The alert state machine: Prometheus semantics, the seed scenarios, inhibition, determinism."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from watchman_collector.alert import (
    AlertEvaluator,
    AlertState,
    Role,
    Signal,
    fingerprint,
)
from watchman_collector.alert_output import (
    alerts_metric,
    alerts_payload,
    format_rfc3339,
    transition_line,
)
from watchman_collector.rules import Level, parse_rules

S = 1_000_000_000
T0 = 1_800_000_000 * S  # 2027-01-15T08:00:00Z
STEP = 15 * S  # the evaluation tick

# The state-machine tests pin their own timing: HighErrorRate for 2m, keep_firing_for 1m.
RULES = parse_rules({"alerts": {"HighErrorRate": {"for": "2m", "keep_firing_for": "1m"}}})


def error_signal(
    service="checkout", severity="critical", role=Role.ROOT_CAUSE, root=None, value=0.3
):
    """A HighErrorRate signal as the detect stage would produce it."""
    return Signal(
        alertname="HighErrorRate",
        service=service,
        severity=severity,
        role=role,
        root_cause=root or service,
        value=value,
        summary=f"{service}: {value:.0%} of requests fail",
        description=f"{service} answered {value:.0%} of calls with errors over 5m",
        evidence={"requests": 100, "failed": int(value * 100)},
    )


def detect(thresholds, requests, failed, service="checkout"):
    """A minimal detector: one signal when the error ratio reaches a level that alerts."""
    level = thresholds.error_level(requests, failed)
    if level is None:
        return []
    severity = RULES.rule_for("HighErrorRate", service).severity_for(level)
    return [error_signal(service, severity=severity, value=failed / requests)]


def run(evaluator, ticks):
    """Feed (seconds, signals) ticks; return every transition in order."""
    out = []
    for seconds, signals in ticks:
        out.extend(evaluator.tick(signals, T0 + int(seconds * S)).transitions)
    return out


# --- the seed scenarios ----------------------------------------------------------------------


def test_no_data_no_alert():
    """Ticks without any signal raise nothing and list nothing."""
    evaluator = AlertEvaluator(RULES)
    assert run(evaluator, [(i * 15, []) for i in range(40)]) == []
    assert evaluator.alerts() == ()
    assert evaluator.history() == ()


def test_too_few_samples_no_alert():
    """Every call failing but fewer than min_requests: no signal, so no alert ever."""
    evaluator = AlertEvaluator(RULES)
    thresholds = RULES.thresholds_for("checkout")
    ticks = [(i * 15, detect(thresholds, requests=5, failed=5)) for i in range(40)]
    assert run(evaluator, ticks) == []
    assert evaluator.alerts() == ()


def test_healthy_and_up_no_recovery_message():
    """A service that never breached never gets a "recovered" message."""
    evaluator = AlertEvaluator(RULES)
    thresholds = RULES.thresholds_for("checkout")
    ticks = [(i * 15, detect(thresholds, requests=1000, failed=0)) for i in range(40)]
    assert run(evaluator, ticks) == []
    assert evaluator.history() == ()


def test_breached_for_the_whole_for_fires_once():
    """Breached for the whole `for` (2m): pending until then, one firing transition at 2m."""
    evaluator = AlertEvaluator(RULES)
    signal = [error_signal()]
    for seconds in range(0, 120, 15):
        update = evaluator.tick(signal, T0 + seconds * S)
        assert update.transitions == ()
        assert [a.state for a in update.alerts] == [AlertState.PENDING]
    update = evaluator.tick(signal, T0 + 120 * S)
    assert [t.status for t in update.transitions] == ["firing"]
    fired = update.transitions[0].alert
    assert fired.state is AlertState.FIRING
    assert fired.active_at_ns == T0
    assert fired.fired_at_ns == T0 + 120 * S
    assert update.transitions[0].message == "checkout: 30% of requests fail"


def test_breached_while_alerting_no_duplicate():
    """An alert already firing stays one alert, with no second firing transition."""
    evaluator = AlertEvaluator(RULES)
    transitions = run(evaluator, [(i * 15, [error_signal()]) for i in range(60)])
    assert [t.status for t in transitions] == ["firing"]
    assert len(evaluator.alerts()) == 1


def test_healthy_again_while_alerting_one_recovery_message():
    """Healthy again after firing: exactly one resolved transition saying how long it fired."""
    evaluator = AlertEvaluator(RULES)
    ticks = [(s, [error_signal()]) for s in range(0, 312 + 1, 12)]  # fires at 120s
    ticks += [(s, []) for s in range(324, 1200, 12)]  # clears at 324s, keep_firing_for 1m
    transitions = run(evaluator, ticks)
    assert [t.status for t in transitions] == ["firing", "resolved"]
    resolved = transitions[1]
    assert resolved.time_ns == T0 + 384 * S
    assert resolved.message == "HighErrorRate on checkout recovered after 4m24s"
    assert resolved.alert.resolved_at_ns == T0 + 384 * S
    assert evaluator.alerts() == ()
    assert [a.annotations["recovery"] for a in evaluator.history()] == [resolved.message]


# --- Prometheus semantics ----------------------------------------------------------------------


def test_pending_that_clears_is_dropped_silently():
    """A pending alert whose breach stops before `for` disappears without any transition."""
    evaluator = AlertEvaluator(RULES)
    transitions = run(evaluator, [(0, [error_signal()]), (60, [error_signal()]), (75, [])])
    assert transitions == []
    assert evaluator.alerts() == ()
    assert evaluator.history() == ()


def test_for_zero_fires_on_first_tick():
    """With `for: 0s` an alert fires on the tick it first appears."""
    evaluator = AlertEvaluator(parse_rules({"alerts": {"HighErrorRate": {"for": "0s"}}}))
    update = evaluator.tick([error_signal()], T0)
    assert [t.status for t in update.transitions] == ["firing"]
    assert update.alerts[0].active_at_ns == update.alerts[0].fired_at_ns == T0


def test_keep_firing_for_rides_out_a_flap():
    """A gap shorter than keep_firing_for does not resolve; the next breach resets the count."""
    evaluator = AlertEvaluator(RULES)  # keep_firing_for 1m
    ticks = [(s, [error_signal()]) for s in range(0, 135, 15)]  # firing at 120s
    ticks += [(s, []) for s in range(135, 180, 15)]  # 45s gap
    ticks += [(180, [error_signal()])]  # back: resets keep_firing_since
    ticks += [(s, []) for s in range(195, 250, 15)]  # until 240s: 45s since 195, still < 1m
    transitions = run(evaluator, ticks)
    assert [t.status for t in transitions] == ["firing"]
    alert = evaluator.alerts()[0]
    assert alert.state is AlertState.FIRING
    assert alert.keep_firing_since_ns == T0 + 195 * S
    update = evaluator.tick([], T0 + 255 * S)  # 60s since 195: resolves now
    assert [t.status for t in update.transitions] == ["resolved"]


def test_without_keep_firing_for_resolves_on_first_clear_tick():
    """keep_firing_for 0s: the first tick without the breach resolves a firing alert."""
    rules = parse_rules({"alerts": {"HighErrorRate": {"for": "0s", "keep_firing_for": "0s"}}})
    evaluator = AlertEvaluator(rules)
    transitions = run(evaluator, [(0, [error_signal()]), (15, [])])
    assert [(t.status, t.time_ns) for t in transitions] == [
        ("firing", T0),
        ("resolved", T0 + 15 * S),
    ]


def test_breach_after_resolve_is_a_new_pending_alert():
    """Once resolved, a new breach starts over as pending, with a new activeAt."""
    rules = parse_rules({"alerts": {"HighErrorRate": {"for": "30s", "keep_firing_for": "0s"}}})
    evaluator = AlertEvaluator(rules)
    run(evaluator, [(0, [error_signal()]), (30, [error_signal()]), (45, [])])
    update = evaluator.tick([error_signal()], T0 + 60 * S)
    assert update.transitions == ()
    assert update.alerts[0].state is AlertState.PENDING
    assert update.alerts[0].active_at_ns == T0 + 60 * S


def test_label_change_is_a_new_alert():
    """symptom → root_cause changes the labels: the old alert resolves, a new one starts."""
    rules = parse_rules({"alerts": {"HighErrorRate": {"for": "0s", "keep_firing_for": "0s"}}})
    evaluator = AlertEvaluator(rules)
    symptom = error_signal("checkout", role=Role.SYMPTOM, root="payments")
    root = error_signal("checkout", role=Role.ROOT_CAUSE)
    transitions = run(evaluator, [(0, [symptom]), (15, [root])])
    assert [(t.status, t.alert.labels["role"]) for t in transitions] == [
        ("firing", "symptom"),
        ("firing", "root_cause"),
        ("resolved", "symptom"),
    ]
    assert [a.labels["role"] for a in evaluator.alerts()] == ["root_cause"]


def test_annotations_and_value_follow_the_latest_signal():
    """Like Prometheus, an active alert takes the latest value and annotations."""
    evaluator = AlertEvaluator(RULES)
    evaluator.tick([error_signal(value=0.3)], T0)
    alert = evaluator.tick([error_signal(value=0.5)], T0 + STEP).alerts[0]
    assert alert.value == 0.5
    assert alert.annotations["summary"] == "checkout: 50% of requests fail"
    assert alert.active_at_ns == T0


def test_duplicate_signals_are_one_alert():
    """Two signals with the same labels in one tick are deduplicated, keeping the worst."""
    evaluator = AlertEvaluator(RULES)
    update = evaluator.tick([error_signal(value=0.2), error_signal(value=0.4)], T0)
    assert len(update.alerts) == 1
    assert update.alerts[0].value == 0.4


def test_disabled_alert_is_ignored():
    """An alert disabled in the rules never becomes pending."""
    evaluator = AlertEvaluator(parse_rules({"alerts": {"HighErrorRate": {"enabled": False}}}))
    assert evaluator.tick([error_signal()], T0).alerts == ()


def test_per_service_timing_override():
    """A services: override of `for` applies to that service's alert only."""
    rules = parse_rules({"services": {"cart": {"alerts": {"HighErrorRate": {"for": "0s"}}}}})
    evaluator = AlertEvaluator(rules)
    update = evaluator.tick([error_signal("cart"), error_signal("checkout")], T0)
    assert [(t.alert.labels["service"], t.status) for t in update.transitions] == [
        ("cart", "firing")
    ]


def test_time_never_goes_back():
    """A tick older than the last one is treated as the last one (event-time watermark)."""
    evaluator = AlertEvaluator(RULES)
    evaluator.tick([error_signal()], T0 + 60 * S)
    update = evaluator.tick([error_signal()], T0)
    assert update.time_ns == T0 + 60 * S


def test_root_cause_signal_must_blame_itself():
    """A root_cause signal whose root_cause is another service is a programming error."""
    with pytest.raises(ValueError, match="must equal service"):
        Signal("HighErrorRate", "a", "critical", Role.ROOT_CAUSE, "b", 1.0, "", "")


def test_recipients_come_from_the_severity():
    """Alerts carry the recipients of their severity, with per-service overrides."""
    rules = parse_rules(
        {
            "severities": {"critical": {"recipients": ["oncall"]}},
            "services": {"cart": {"recipients": {"critical": ["cart-team"]}}},
        }
    )
    evaluator = AlertEvaluator(rules)
    alerts = evaluator.tick([error_signal("cart"), error_signal("checkout")], T0).alerts
    assert [(a.labels["service"], a.recipients) for a in alerts] == [
        ("cart", ("cart-team",)),
        ("checkout", ("oncall",)),
    ]


# --- inhibition -------------------------------------------------------------------------------


def cascade_signals():
    """payments is the root cause; checkout suffers; web is at risk."""
    return [
        Signal("ServiceDown", "payments", "critical", Role.ROOT_CAUSE, "payments", 1, "down", ""),
        error_signal("checkout", role=Role.SYMPTOM, root="payments"),
        Signal("CascadeRisk", "web", "warning", Role.AT_RISK, "payments", 0.7, "at risk", ""),
    ]


def test_symptoms_are_inhibited_while_root_cause_fires():
    """Symptom and at-risk alerts stay listed but are inhibited by the firing root cause."""
    rules = parse_rules({"alerts": {"HighErrorRate": {"for": "0s"}, "ServiceDown": {"for": "0s"}}})
    evaluator = AlertEvaluator(rules)
    update = evaluator.tick(cascade_signals(), T0)
    by_service = {a.labels["service"]: a for a in update.alerts}
    cause = by_service["payments"]
    assert not cause.inhibited
    assert by_service["checkout"].inhibited_by == (cause.fingerprint,)
    assert by_service["web"].inhibited_by == (cause.fingerprint,)
    firing = {t.alert.labels["service"]: t.alert.inhibited for t in update.transitions}
    assert firing == {"payments": False, "checkout": True, "web": True}


def test_pending_root_cause_does_not_inhibit():
    """A root cause still pending inhibits nothing: only firing alerts inhibit."""
    evaluator = AlertEvaluator(RULES)  # ServiceDown for 1m
    update = evaluator.tick(cascade_signals(), T0)
    assert not any(a.inhibited for a in update.alerts)


def test_inhibition_lifts_when_root_cause_resolves():
    """When the root cause resolves, its still-active symptoms are no longer inhibited."""
    rules = parse_rules(
        {"alerts": {"ServiceDown": {"for": "0s", "keep_firing_for": "0s"}, "CascadeRisk": {}}}
    )
    evaluator = AlertEvaluator(rules)
    evaluator.tick(cascade_signals(), T0)
    update = evaluator.tick(cascade_signals()[1:], T0 + STEP)
    assert [t.status for t in update.transitions] == ["resolved"]
    assert not any(a.inhibited for a in update.alerts)


# --- determinism and output -------------------------------------------------------------------


def scenario_lines(seed):
    """Replay a fixed scenario with signals shuffled by `seed`; return the JSON lines."""
    rng = random.Random(seed)
    rules = parse_rules({"alerts": {"ServiceDown": {"for": "30s"}}})
    evaluator = AlertEvaluator(rules)
    lines = []
    for i in range(60):
        signals = cascade_signals() if 4 <= i < 30 else []
        rng.shuffle(signals)
        for transition in evaluator.tick(signals, T0 + i * STEP).transitions:
            lines.append(transition_line(transition))
    return lines


def test_same_input_same_output_whatever_the_signal_order():
    """The transition lines are identical however the signals of a tick are ordered."""
    first = scenario_lines(1)
    assert first == scenario_lines(2) == scenario_lines(3)
    statuses = [json.loads(line)["status"] for line in first]
    assert statuses == ["firing"] * 3 + ["resolved"] * 3


def test_transition_line_is_alertmanager_v2_shaped():
    """A resolved line has labels, annotations, startsAt, endsAt, status in event time."""
    rules = parse_rules({"alerts": {"HighErrorRate": {"for": "0s", "keep_firing_for": "0s"}}})
    evaluator = AlertEvaluator(rules)
    fired = evaluator.tick([error_signal()], T0).transitions[0]
    resolved = evaluator.tick([], T0 + 192 * S).transitions[0]
    assert json.loads(transition_line(fired)) == {
        "labels": {
            "alertname": "HighErrorRate",
            "role": "root_cause",
            "root_cause": "checkout",
            "service": "checkout",
            "severity": "critical",
        },
        "annotations": {
            "description": "checkout answered 30% of calls with errors over 5m",
            "summary": "checkout: 30% of requests fail",
        },
        "startsAt": "2027-01-15T08:00:00.000Z",
        "status": "firing",
    }
    line = json.loads(transition_line(resolved))
    assert list(line) == ["labels", "annotations", "startsAt", "endsAt", "status"]
    assert line["endsAt"] == "2027-01-15T08:03:12.000Z"
    assert line["status"] == "resolved"
    assert line["annotations"]["recovery"] == "HighErrorRate on checkout recovered after 3m12s"


def test_format_rfc3339_truncates_to_milliseconds():
    """Timestamps print in UTC with milliseconds, truncated so equal inputs print equally."""
    assert format_rfc3339(T0 + 1_999_999) == "2027-01-15T08:00:00.001Z"
    assert format_rfc3339(0) == "1970-01-01T00:00:00.000Z"


def test_api_payload_lists_active_and_history():
    """GET /api/v1/alerts lists active alerts with state and inhibition, and resolved history."""
    rules = parse_rules({"alerts": {"ServiceDown": {"for": "0s", "keep_firing_for": "0s"}}})
    evaluator = AlertEvaluator(rules)
    evaluator.tick(cascade_signals(), T0)
    evaluator.tick(cascade_signals()[1:], T0 + STEP)
    payload = alerts_payload(evaluator.alerts(), evaluator.history())
    assert [(a["labels"]["service"], a["state"], a["inhibited"]) for a in payload["alerts"]] == [
        ("web", "firing", False),  # CascadeRisk: for 0s; ordered by alertname first
        ("checkout", "pending", False),
    ]
    [past] = payload["history"]
    assert past["state"] == "resolved"
    assert past["endsAt"] == format_rfc3339(T0 + STEP)
    assert past["fingerprint"] == fingerprint(past["labels"])
    json.dumps(payload)  # the payload is plain JSON


def test_watchman_alerts_metric_has_the_alerts_shape():
    """watchman_alerts has one sample of 1 per pending or firing alert, labelled like ALERTS."""
    rules = parse_rules({"alerts": {"ServiceDown": {"for": "0s"}}})
    evaluator = AlertEvaluator(rules)
    family = alerts_metric(evaluator.tick(cascade_signals(), T0).alerts)
    assert family.name == "watchman_alerts"
    samples = sorted((s.labels["service"], s.labels["alertstate"], s.value) for s in family.samples)
    assert samples == [
        ("checkout", "pending", 1.0),
        ("payments", "firing", 1.0),
        ("web", "firing", 1.0),
    ]
    assert set(family.samples[0].labels) == {
        "alertname",
        "alertstate",
        "service",
        "severity",
        "role",
        "root_cause",
    }


def test_fingerprint_is_fnv1a_over_sorted_labels():
    """The fingerprint is order-independent and differs when any label differs."""
    a = fingerprint({"alertname": "X", "service": "a"})
    assert a == fingerprint({"service": "a", "alertname": "X"})
    assert a != fingerprint({"alertname": "X", "service": "b"})
    assert len(a) == 16


@pytest.mark.parametrize(
    ("level", "severity"), [(Level.DEGRADED, "warning"), (Level.FAILING, "critical")]
)
def test_level_maps_to_severity(level, severity):
    """HighErrorRate raises warning when degraded and critical when failing."""
    assert RULES.rule_for("HighErrorRate", "any").severity_for(level) == severity


def test_docs_example_prints_the_documented_lines(capsys):
    """The example in docs/alert-stage.md runs and prints exactly the lines shown there."""
    doc = (Path(__file__).parents[2] / "docs" / "alert-stage.md").read_text()
    example = re.search(r"```python\n(from watchman_collector.alert .*?)```", doc, re.S)
    shown = re.search(r"prints\n\n```text\n(.*?)```", doc, re.S)
    assert example
    assert shown
    exec(compile(example.group(1), "alert-stage.md", "exec"), {})
    assert capsys.readouterr().out == shown.group(1)
