"""Run detect → cascade → alert on every tick and keep the latest verdicts for the readers.

`Diagnostician` is the analyzer's tick subscriber for the judging stages. It holds the newest
`Detection` and `Diagnosis` and the alert evaluator, so `/metrics`, the JSON API and the
dashboard read one consistent picture, and it hands every alert update to its listeners
(replay's stdout, the Alertmanager client, later incidents and notifications).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from watchman_collector.alert import AlertEvaluator, AlertUpdate
from watchman_collector.alert_output import format_rfc3339
from watchman_collector.alert_signals import signals_for
from watchman_collector.cascade import CascadePredictor, Diagnosis
from watchman_collector.detect import Detection, Detector
from watchman_collector.graph import ServiceGraph
from watchman_collector.rules import RuleSet, default_rules

__all__ = ["Diagnostician", "UpdateListener", "diagnosis_json"]

UpdateListener = Callable[[AlertUpdate], Any]
"""Called with each tick's alert update (transitions and the current alerts)."""


class Diagnostician:
    """Judges the graph at each tick and raises alerts; one instance per analyzer."""

    def __init__(self, graph: ServiceGraph, rules: RuleSet | None = None) -> None:
        self.graph = graph
        self.rules = rules or default_rules()
        self.detector = Detector(self.rules)
        self.predictor = CascadePredictor(self.rules)
        self.evaluator = AlertEvaluator(self.rules)
        self.listeners: list[UpdateListener] = []
        self.detection: Detection | None = None
        self.diagnosis: Diagnosis | None = None
        self.last_update: AlertUpdate | None = None

    def __call__(self, now_ns: int) -> None:
        """One tick at clock time `now_ns` (the analyzer's tick subscriber protocol)."""
        detection = self.detector.evaluate(self.graph, now_ns)
        diagnosis = self.predictor.diagnose(self.graph, detection)
        update = self.evaluator.tick(signals_for(detection, diagnosis, self.rules), now_ns)
        self.detection, self.diagnosis, self.last_update = detection, diagnosis, update
        for listener in list(self.listeners):
            listener(update)


def diagnosis_json(diagnosis: Diagnosis | None, detection: Detection | None) -> dict[str, Any]:
    """The `/api/v1/diagnosis` payload: ranked suspects with evidence, and at-risk callers."""
    if diagnosis is None or detection is None:
        return {"time": None, "suspects": [], "risks": [], "services": {}}
    return {
        "time": _iso(diagnosis.now_ns),
        "suspects": [
            {
                "service": s.service,
                "role": str(s.role),
                "root_cause": s.root_cause,
                "score": s.score,
                "health": s.health.label,
                "onset": _iso(s.onset_ns) if s.onset_ns else None,
                "path": list(s.path),
                "explained": s.explained,
                "exemplars": list(s.exemplars),
                "evidence": [
                    {
                        "signal": e.signal,
                        "health": e.health.label,
                        "value": e.value,
                        "baseline": e.baseline,
                        "threshold": e.threshold,
                        "onset": _iso(e.onset_ns) if e.onset_ns else None,
                        "detail": e.detail,
                    }
                    for e in s.evidence
                ],
            }
            for s in diagnosis.suspects
        ],
        "risks": [
            {
                "service": r.service,
                "root_cause": r.root_cause,
                "via": r.via,
                "share": r.share,
                "propagation": r.propagation,
                "predicted_error_ratio": r.predicted_error_ratio,
                "current_error_ratio": r.current_error_ratio,
                "threshold": r.threshold,
                "eta_s": r.eta_s,
                "reason": r.reason,
                "depth": r.depth,
            }
            for r in diagnosis.risks
        ],
        "services": {name: n.health.label for name, n in sorted(detection.nodes.items())},
    }


def _iso(ns: int) -> str:
    return format_rfc3339(ns)
