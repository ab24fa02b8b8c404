"""The detect stage on hand-built graphs: states, evidence and baselines."""

from __future__ import annotations

from watchman_collector.detect import Detection, Detector, Health, Signals
from watchman_collector.graph import ServiceGraph
from watchman_collector.records import Call, ConnectionType
from watchman_collector.rules import parse_rules

from .graphs import NS, T0, Shop


def run_and_judge(shop: Shop, detector: Detector, seconds: int, tick_s: int = 5) -> Detection:
    """Drive the shop and judge it every `tick_s`, as the analyzer's tick does."""
    last: Detection | None = None

    def tick(s: int) -> None:
        nonlocal last
        if s % tick_s == 0:
            last = detector.evaluate(shop.graph, shop.now_ns)

    shop.run(seconds, every_second=tick)
    last = detector.evaluate(shop.graph, shop.now_ns)
    return last


def test_healthy_traffic_has_no_unhealthy_node() -> None:
    """Ten minutes of healthy, noisy traffic leave every node healthy."""
    shop = Shop()
    detection = run_and_judge(shop, Detector(), 600)
    assert detection.unhealthy() == []
    assert {"gateway", "orders", "payments", "postgresql"} <= set(detection.nodes)


def test_error_burst_makes_the_service_failing_with_error_evidence() -> None:
    """A service answering 50 % errors is failing, with its error ratio and onset as evidence."""
    shop = Shop()
    detector = Detector()
    run_and_judge(shop, detector, 300)
    onset = shop.now_ns
    shop.services["payments"].error_ratio = 0.5
    detection = run_and_judge(shop, detector, 40)
    payments = detection.nodes["payments"]
    assert payments.health is Health.FAILING
    evidence = next(e for e in payments.evidence if e.signal == Signals.ERROR_RATIO)
    assert 0.35 < evidence.value < 0.65
    assert evidence.onset_ns is not None
    assert abs(evidence.onset_ns - onset) <= 10 * NS
    assert detection.edges[("orders", "payments")].health >= Health.DEGRADED


def test_too_few_calls_are_not_judged() -> None:
    """Below the minimum traffic a window of failures is not judged (no evidence)."""
    graph = ServiceGraph()
    calls = [
        Call("a", "b", ConnectionType.DIRECT, T0 + i * NS, 0.01, 0.01, True, bytes(16))
        for i in range(5)
    ]
    graph.add_calls(calls)
    detection = Detector().evaluate(graph, T0 + 10 * NS)
    assert detection.nodes["b"].health is Health.HEALTHY


def test_latency_increase_is_judged_against_the_learned_baseline() -> None:
    """p95 four times its baseline makes the service degraded or failing on latency."""
    shop = Shop()
    detector = Detector()
    run_and_judge(shop, detector, 300)
    shop.services["payments"].latency_s = 0.3
    detection = run_and_judge(shop, detector, 40)
    payments = detection.nodes["payments"]
    assert payments.health >= Health.DEGRADED
    assert payments.has(Signals.LATENCY)
    assert payments.baseline_p95_s is not None
    assert payments.baseline_p95_s < 0.06


def test_crashed_service_is_down() -> None:
    """No heartbeat for three intervals and failing callers make a service down."""
    shop = Shop()
    detector = Detector()
    run_and_judge(shop, detector, 300)
    shop.services["payments"].down = True
    detection = run_and_judge(shop, detector, 40)
    payments = detection.nodes["payments"]
    assert payments.health is Health.DOWN
    assert payments.has(Signals.SERVICE_DOWN) or payments.has(Signals.UNREACHABLE)
    assert not payments.reports


def test_long_outage_stays_flagged_because_the_baseline_freezes() -> None:
    """Twenty minutes into an error burst the service is still failing, not the new normal."""
    shop = Shop()
    detector = Detector()
    run_and_judge(shop, detector, 300)
    shop.services["payments"].error_ratio = 0.3
    detection = run_and_judge(shop, detector, 1200)
    assert detection.nodes["payments"].health is Health.FAILING


def test_per_service_policy_overrides_the_default() -> None:
    """A service's own policy (a higher failing threshold) changes only its judgement."""
    shop = Shop()
    rules = parse_rules(
        {"services": {"payments": {"thresholds": {"error_ratio": {"failing": 0.9}}}}}
    )
    detector = Detector(rules)
    run_and_judge(shop, detector, 300)
    shop.services["payments"].error_ratio = 0.5
    detection = run_and_judge(shop, detector, 40)
    assert detection.nodes["payments"].health is Health.DEGRADED
    assert detection.nodes["orders"].health is Health.FAILING


def test_recovery_returns_to_healthy() -> None:
    """After the fault heals the service is healthy again within a minute."""
    shop = Shop()
    detector = Detector()
    run_and_judge(shop, detector, 300)
    shop.services["payments"].error_ratio = 0.5
    run_and_judge(shop, detector, 60)
    shop.services["payments"].error_ratio = 0.0
    detection = run_and_judge(shop, detector, 60)
    assert detection.unhealthy() == []
