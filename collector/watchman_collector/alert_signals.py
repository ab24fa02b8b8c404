"""Turn one tick's diagnosis into the alert stage's input: one `Signal` per breached condition.

Each piece of evidence of an unhealthy node becomes the alert named for its signal, labelled
with the node's role and the root cause it is blamed on; each at-risk caller becomes a
`CascadeRisk`. The severity comes from the rules (`severity` per level of each alert), so a
level the rules do not alert on, or a disabled alert, yields no signal.
"""

from __future__ import annotations

from collections.abc import Iterator

from watchman_collector.alert import Role, Signal
from watchman_collector.cascade import Diagnosis, Risk, Suspect
from watchman_collector.detect import Detection, Evidence, Health, Signals
from watchman_collector.records import NodeKind
from watchman_collector.rules import Level, RuleSet

__all__ = ["ALERT_FOR_SIGNAL", "signals_for"]

ALERT_FOR_SIGNAL: dict[str, str] = {
    Signals.SERVICE_DOWN: "ServiceDown",
    Signals.UNREACHABLE: "ServiceDown",
    Signals.INSTANCES_DOWN: "InstanceDown",
    Signals.ERROR_RATIO: "HighErrorRate",
    Signals.LATENCY: "HighLatency",
    Signals.TRAFFIC_DROP: "TrafficDrop",
    Signals.SATURATION: "Saturation",
}
"""Which documented alert each detect signal raises."""

# A down service and a lost instance are failures by definition, whatever their Health says.
_DOWN = frozenset({Signals.SERVICE_DOWN, Signals.UNREACHABLE})
_ALWAYS_FAILING = _DOWN | {Signals.INSTANCES_DOWN}


def signals_for(detection: Detection, diagnosis: Diagnosis, rules: RuleSet) -> list[Signal]:
    """The signals of one tick, in a deterministic order."""
    out: dict[tuple[str, str], Signal] = {}
    for suspect in diagnosis.suspects:
        node = detection.nodes.get(suspect.service)
        if node is None or node.kind is NodeKind.USER:
            continue
        for signal in _suspect_signals(suspect, rules):
            key = (signal.alertname, signal.service)
            # Two signals mapping to one alert (down and unreachable): keep the stronger.
            if key not in out or signal.value > out[key].value:
                out[key] = signal
    for risk in diagnosis.risks:
        at_risk = _risk_signal(risk, rules)
        if at_risk is not None:
            out.setdefault((at_risk.alertname, at_risk.service), at_risk)
    return [out[k] for k in sorted(out)]


def _suspect_signals(suspect: Suspect, rules: RuleSet) -> Iterator[Signal]:
    evidence_list = suspect.evidence
    if any(e.signal in _DOWN for e in evidence_list):
        # A down service fails every call by definition: ServiceDown says it all, and its
        # callers' failed calls are not a separate HighErrorRate of its own.
        evidence_list = tuple(e for e in evidence_list if e.signal in _DOWN)
    for evidence in evidence_list:
        alertname = ALERT_FOR_SIGNAL.get(evidence.signal)
        if alertname is None:
            continue
        rule = rules.rule_for(alertname, suspect.service)
        level = (
            Level.FAILING
            if evidence.signal in _ALWAYS_FAILING or evidence.health >= Health.FAILING
            else Level.DEGRADED
        )
        severity = rule.severity_for(level)
        if not rule.enabled or severity is None:
            continue
        yield Signal(
            alertname=alertname,
            service=suspect.service,
            severity=severity,
            role=suspect.role,
            root_cause=suspect.root_cause,
            value=float(evidence.value),
            summary=_summary(suspect, evidence),
            description=_description(suspect, evidence),
            evidence={
                "signal": evidence.signal,
                "value": evidence.value,
                "baseline": evidence.baseline,
                "threshold": evidence.threshold,
                "onset_ns": evidence.onset_ns,
                "score": suspect.score,
                "path": list(suspect.path),
                "exemplars": list(suspect.exemplars),
            },
        )


def _summary(suspect: Suspect, evidence: Evidence) -> str:
    what = {
        Signals.SERVICE_DOWN: "is down",
        Signals.UNREACHABLE: "is unreachable",
        Signals.INSTANCES_DOWN: "lost instances",
        Signals.ERROR_RATIO: f"fails {evidence.value:.0%} of requests",
        Signals.LATENCY: f"is slow ({evidence.value * 1000:.0f}ms)",
        Signals.TRAFFIC_DROP: "lost its traffic",
        Signals.SATURATION: f"is saturated ({evidence.value:.0%} CPU)",
    }.get(evidence.signal, evidence.signal)
    if suspect.role is Role.ROOT_CAUSE:
        return f"{suspect.service} {what} (root cause)"
    return f"{suspect.service} {what} because of {suspect.root_cause}"


def _description(suspect: Suspect, evidence: Evidence) -> str:
    text = evidence.detail
    if suspect.role is Role.SYMPTOM:
        text += f"; explained by calls along {' → '.join(suspect.path)}"
    else:
        text += f"; root-cause score {suspect.score:.2f}"
    if suspect.exemplars:
        text += f"; example traces: {', '.join(suspect.exemplars[:3])}"
    return text


def _risk_signal(risk: Risk, rules: RuleSet) -> Signal | None:
    rule = rules.rule_for("CascadeRisk", risk.service)
    level = Level.FAILING if risk.predicted_error_ratio >= 0.5 else Level.DEGRADED
    severity = rule.severity_for(level)
    if not rule.enabled or severity is None:
        return None
    if risk.eta_s is None:
        eta = "soon"
    elif risk.eta_s <= 0:
        eta = "now"
    else:
        eta = f"in about {risk.eta_s:.0f}s"
    return Signal(
        alertname="CascadeRisk",
        service=risk.service,
        severity=severity,
        role=Role.AT_RISK,
        root_cause=risk.root_cause,
        value=risk.predicted_error_ratio,
        summary=f"{risk.service} is at risk from {risk.root_cause} ({eta})",
        description=(
            f"predicted error ratio {risk.predicted_error_ratio:.0%} (now "
            f"{risk.current_error_ratio:.0%}, threshold {risk.threshold:.0%}) through "
            f"{risk.via}: {risk.share:.0%} of its requests call it, {risk.propagation:.0%} of "
            f"failed calls propagated so far, cause: {risk.reason}"
        ),
        evidence={
            "via": risk.via,
            "share": risk.share,
            "propagation": risk.propagation,
            "predicted_error_ratio": risk.predicted_error_ratio,
            "eta_s": risk.eta_s,
            "reason": risk.reason,
        },
    )
