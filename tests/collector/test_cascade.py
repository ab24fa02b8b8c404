"""The cascade stage: root cause vs symptom, ranking and predicted cascades."""

from __future__ import annotations

from watchman_collector.alert_signals import signals_for
from watchman_collector.cascade import CascadePredictor, Diagnosis, Role
from watchman_collector.detect import Detector
from watchman_collector.rules import default_rules

from .graphs import Shop
from .test_detect import run_and_judge


def diagnose_after(shop: Shop, seconds: int, detector: Detector) -> Diagnosis:
    """Run the shop for `seconds` more and diagnose the last tick."""
    detection = run_and_judge(shop, detector, seconds)
    return CascadePredictor().diagnose(shop.graph, detection)


def warmed() -> tuple[Shop, Detector]:
    """A shop after five healthy minutes, baselines learned."""
    shop = Shop()
    detector = Detector()
    run_and_judge(shop, detector, 300)
    return shop, detector


def test_error_burst_root_cause_is_the_failing_dependency() -> None:
    """Payments failing makes orders and gateway fail too; payments is ranked the root cause."""
    shop, detector = warmed()
    shop.services["payments"].error_ratio = 0.6
    diagnosis = diagnose_after(shop, 40, detector)
    assert diagnosis.suspects[0].service == "payments"
    assert diagnosis.suspects[0].role is Role.ROOT_CAUSE
    orders = diagnosis.suspect("orders")
    assert orders is not None
    assert orders.role is Role.SYMPTOM
    assert orders.root_cause == "payments"
    gateway = diagnosis.suspect("gateway")
    assert gateway is not None
    assert gateway.root_cause == "payments"
    assert gateway.path == ("gateway", "orders", "payments")


def test_crash_root_cause_is_the_dead_service() -> None:
    """A crashed service that reports nothing is the root cause of its callers' failures."""
    shop, detector = warmed()
    shop.services["payments"].down = True
    diagnosis = diagnose_after(shop, 40, detector)
    assert [s.service for s in diagnosis.root_causes()][:1] == ["payments"]
    assert all(s.root_cause == "payments" for s in diagnosis.suspects if s.role is Role.SYMPTOM)


def test_database_failure_blames_the_database() -> None:
    """Failing database calls make the database node the root cause of both its callers."""
    shop, detector = warmed()
    shop.services["postgresql"].error_ratio = 0.7
    diagnosis = diagnose_after(shop, 40, detector)
    assert diagnosis.suspects[0].service == "postgresql"
    catalog = diagnosis.suspect("catalog")
    assert catalog is not None
    assert catalog.role is Role.SYMPTOM


def test_optional_dependency_failure_does_not_blame_its_caller() -> None:
    """An optional call failing flags only the callee; the caller stays healthy and unblamed."""
    shop, detector = warmed()
    shop.services["recommend"].error_ratio = 1.0
    diagnosis = diagnose_after(shop, 60, detector)
    assert diagnosis.suspects[0].service == "recommend"
    assert diagnosis.suspect("orders") is None
    assert all(r.service != "orders" for r in diagnosis.risks)


def test_latency_ramp_marks_callers_at_risk_before_they_breach() -> None:
    """A callee slowing toward its caller's timeout puts the caller at risk before it breaches."""
    shop, detector = warmed()
    predictor = CascadePredictor()
    first_risk = first_breach = None
    for step in range(60):
        shop.services["payments"].latency_s = min(0.03 * 1.1**step, 2.0)
        detection = run_and_judge(shop, detector, 5)
        diagnosis = predictor.diagnose(shop.graph, detection)
        if first_risk is None and any(r.service == "orders" for r in diagnosis.risks):
            first_risk = step
        if first_breach is None and detection.nodes["orders"].error_ratio >= 0.10:
            first_breach = step
    assert first_breach is not None
    assert first_risk is not None
    assert first_risk < first_breach


def test_optional_dependency_failures_stop_predicting_a_cascade() -> None:
    """Once an optional callee's failures are seen not to fail the caller, no risk is predicted."""
    shop, detector = warmed()
    shop.services["recommend"].error_ratio = 1.0
    diagnosis = diagnose_after(shop, 90, detector)
    assert all(r.service != "orders" for r in diagnosis.risks)


def test_signals_name_root_cause_and_symptoms_for_the_alert_stage() -> None:
    """A failing dependency yields a root-cause HighErrorRate and symptom alerts blaming it."""
    shop, detector = warmed()
    shop.services["payments"].error_ratio = 0.6
    detection = run_and_judge(shop, detector, 40)
    diagnosis = CascadePredictor().diagnose(shop.graph, detection)
    signals = signals_for(detection, diagnosis, default_rules())
    by_service = {(s.alertname, s.service): s for s in signals}
    root = by_service[("HighErrorRate", "payments")]
    assert root.role is Role.ROOT_CAUSE
    assert root.severity == "critical"
    symptom = by_service[("HighErrorRate", "orders")]
    assert symptom.role is Role.SYMPTOM
    assert symptom.root_cause == "payments"
    assert "payments" in symptom.summary
