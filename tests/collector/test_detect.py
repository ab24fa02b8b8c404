"""The detect stage on hand-built graphs: states, evidence and baselines."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from watchman_collector.baseline import BaselineLearner
from watchman_collector.detect import Detection, Detector, Health, PolicyBook, Signals
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


def through_faults(
    shop: Shop,
    tick: Callable[[int], None],
    seconds: tuple[int, int, int],
    crash: str | None = None,
) -> None:
    """Healthy traffic, then errors at payments and a slow catalog, then both healed (and `crash`
    down): `seconds` of each, `tick` called every second."""
    healthy_s, fault_s, after_s = seconds
    shop.run(healthy_s, every_second=tick)
    shop.services["payments"].error_ratio = 0.4
    shop.services["catalog"].latency_s = 0.4
    shop.run(fault_s, every_second=tick)
    shop.services["payments"].error_ratio = 0.0
    shop.services["catalog"].latency_s = 0.02
    if crash is not None:
        shop.services[crash].down = True
    shop.run(after_s, every_second=tick)


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


def fresh_numbers(
    graph: ServiceGraph, now_ns: int, windows_s: dict[str, float] | None = None
) -> dict[object, tuple[object, ...]]:
    """Each node's and edge's window numbers read afresh with `RedSeries.window`.

    `windows_s`: a service's own window where it is not 30 s (an edge is judged by its server's).
    """
    eval_ns = now_ns - 10 * NS
    windows_s = windows_s or {}
    out: dict[object, tuple[object, ...]] = {}
    for edge in graph.edges():
        view = edge.red.window(eval_ns, windows_s.get(edge.server, 30.0))
        out[edge.client, edge.server] = (
            view.calls,
            view.failed,
            view.error_ratio,
            view.latency.quantile(0.95),
            view.server_latency.count,
        )
    for node in graph.nodes():
        view = node.served.window(eval_ns, windows_s.get(node.name, 30.0))
        out[node.name] = (
            view.calls,
            view.failed,
            view.error_ratio,
            view.latency.quantile(0.95),
            view.rate_per_s,
        )
    return out


def judged_numbers(detection: Detection) -> dict[object, tuple[object, ...]]:
    """The same numbers as the detector reported them."""
    out: dict[object, tuple[object, ...]] = {
        key: (e.calls, e.failed, e.error_ratio, e.p95_s, e.server_halves)
        for key, e in detection.edges.items()
    }
    for name, n in detection.nodes.items():
        out[name] = (n.calls, n.failed, n.error_ratio, n.p95_s, n.rate_per_s)
    return out


def test_kept_window_numbers_equal_a_fresh_read_on_every_tick() -> None:
    """Through faults and recovery, every tick's numbers equal a fresh read of each window."""
    shop = Shop(seed=3)
    detector = Detector()
    mismatches: list[int] = []
    unhealthy = 0
    kept: list[tuple[Detection, dict[object, tuple[object, ...]]]] = []

    def tick(s: int) -> None:
        nonlocal unhealthy
        if s % 5 == 0:
            detection = detector.evaluate(shop.graph, shop.now_ns)
            fresh = fresh_numbers(shop.graph, shop.now_ns)
            if s % 25 == 0:  # read again at the end, its verdicts' quantiles not read yet
                kept.append((detection, fresh))
            elif judged_numbers(detection) != fresh:
                mismatches.append(s)
            unhealthy += len(detection.unhealthy())

    through_faults(shop, tick, (200, 60, 60), crash="recommend")
    assert mismatches == []
    assert unhealthy > 0  # the faults were judged, not only healthy windows
    # A verdict's quantile, read after the windows moved on, is that of its own tick.
    assert len(kept) > 10
    assert [judged_numbers(d) == fresh for d, fresh in kept] == [True] * len(kept)


def test_verdicts_are_values() -> None:
    """Two detectors judging the same graph give equal verdicts: equal, hashed and printed alike,
    the latency quantile printed as its number."""
    shop = Shop(seed=5)
    shop.run(120)
    one = Detector().evaluate(shop.graph, shop.now_ns)
    two = Detector().evaluate(shop.graph, shop.now_ns)
    assert one == two
    for key, edge in one.edges.items():
        assert hash(edge) == hash(two.edges[key])
        assert repr(edge) == repr(two.edges[key])
    node = one.nodes["gateway"]
    assert node.p95_s is not None
    assert f"_p95={node.p95_s!r}" in repr(node)
    assert {node} == {two.nodes["gateway"]}


def test_late_calls_into_the_window_are_counted_at_the_next_tick() -> None:
    """Calls arriving late into buckets already judged change the next tick's numbers."""
    graph = ServiceGraph()
    calls = [
        Call("a", "b", ConnectionType.DIRECT, T0 + i * NS // 2, 0.01, 0.009, False, bytes(16))
        for i in range(80)
    ]
    graph.add_calls(calls)
    detector = Detector()
    now = T0 + 50 * NS
    first = detector.evaluate(graph, now)
    late = [
        Call("a", "b", ConnectionType.DIRECT, T0 + 25 * NS, 0.5, None, True, bytes(16))
        for _ in range(30)
    ]
    graph.add_calls(late)
    again = detector.evaluate(graph, now)
    assert again.edges["a", "b"].calls == first.edges["a", "b"].calls + 30
    assert judged_numbers(again) == fresh_numbers(graph, now)
    assert again.edges["a", "b"].server_halves == first.edges["a", "b"].server_halves
    assert again.edges["a", "b"].health >= Health.FAILING


def test_calls_into_the_newest_bucket_inside_the_window_are_counted() -> None:
    """A series' newest bucket inside the judged window takes calls that are not late."""
    graph = ServiceGraph()
    graph.add_calls(
        Call("a", "b", ConnectionType.DIRECT, T0 + i * NS // 2, 0.01, 0.009, False, bytes(16))
        for i in range(80)
    )
    detector = Detector()
    now = T0 + 50 * NS  # judged to 40 s: the newest bucket, 30–40 s, is the window's
    first = detector.evaluate(graph, now)
    graph.add_calls(
        Call("a", "b", ConnectionType.DIRECT, T0 + 35 * NS, 0.5, None, True, bytes(16))
        for _ in range(30)
    )
    assert graph.edge("a", "b").red.late_writes == 0  # the newest bucket: not a late call
    again = detector.evaluate(graph, now)
    assert again.edges["a", "b"].calls == first.edges["a", "b"].calls + 30
    assert judged_numbers(again) == fresh_numbers(graph, now)


def test_new_rules_apply_at_the_next_tick() -> None:
    """A detector given other rules judges unchanged windows by them at once."""
    shop = Shop()
    detector = Detector()
    run_and_judge(shop, detector, 300)
    shop.services["payments"].error_ratio = 0.5
    detection = run_and_judge(shop, detector, 40)
    assert detection.nodes["payments"].health is Health.FAILING
    rules = parse_rules(
        {"services": {"payments": {"thresholds": {"error_ratio": {"failing": 0.9}}}}}
    )
    detector.policy = PolicyBook(rules)
    again = detector.evaluate(shop.graph, shop.now_ns)
    assert again.nodes["payments"].health is Health.DEGRADED
    # Other rules again, and the window moves on by a bucket at the same tick.
    detector.policy = PolicyBook(parse_rules({}))
    shop.run(10)
    moved = detector.evaluate(shop.graph, shop.now_ns)
    assert moved.nodes["payments"].health is Health.FAILING
    assert judged_numbers(moved) == fresh_numbers(shop.graph, shop.now_ns)


def test_an_idle_series_keeps_its_numbers_and_its_rate_moves() -> None:
    """Ticks over a series that takes no more calls give a fresh read's numbers, rate included."""
    graph = ServiceGraph()
    graph.add_calls(
        Call("a", "b", ConnectionType.DIRECT, T0 + i * NS // 4, 0.02, 0.019, i % 9 == 0, bytes(16))
        for i in range(100)
    )
    detector = Detector()
    rates = []
    for s in range(30, 80, 5):
        now = T0 + s * NS
        detection = detector.evaluate(graph, now)
        assert judged_numbers(detection) == fresh_numbers(graph, now)
        rates.append(detection.nodes["b"].rate_per_s)
    assert len(set(rates)) > 2
    assert rates[-1] == 0.0


def test_verdicts_are_values_equal_and_hashable_by_their_fields() -> None:
    """Verdicts are values: equal by their fields and usable in sets, as a frozen one would be."""
    shop = Shop()
    detection = run_and_judge(shop, Detector(), 120)
    node = detection.nodes["payments"]
    edge = detection.edges[("orders", "payments")]
    twin = dataclasses.replace(edge)
    assert twin == edge
    assert twin is not edge
    assert len({edge, twin, node, dataclasses.replace(node)}) == 2
    assert dataclasses.replace(edge, calls=edge.calls + 1) not in {edge}


def test_services_with_their_own_window_are_read_over_it_on_every_tick() -> None:
    """Series with different windows, judged in one tick, each read their own buckets."""
    shop = Shop(seed=5)
    windows_s = {"payments": 60.0, "catalog": 10.0}
    rules = parse_rules(
        {"services": {name: {"thresholds": {"window": f"{w:g}s"}} for name, w in windows_s.items()}}
    )
    detector = Detector(rules)
    mismatches: list[int] = []

    def tick(s: int) -> None:
        if s % 5 == 0:
            detection = detector.evaluate(shop.graph, shop.now_ns)
            if judged_numbers(detection) != fresh_numbers(shop.graph, shop.now_ns, windows_s):
                mismatches.append(s)

    shop.run(200, every_second=tick)
    shop.services["payments"].error_ratio = 0.3
    shop.run(60, every_second=tick)
    assert mismatches == []
    assert detector.evaluate(shop.graph, shop.now_ns).nodes["payments"].calls > 0


def test_calls_nobody_answers_are_judged_on_the_recent_half_even_past_the_window() -> None:
    """A service whose calls fail unanswered is unreachable. With buckets wider than the window,
    the recent half reaches back past the window: a window with few failures does not spare it."""
    graph = ServiceGraph(bucket_s=60.0)
    bucket_ns = 60 * NS
    k = T0 // bucket_ns + 2  # the bucket the 30 s window lies in, 40 s into it
    eval_ns = k * bucket_ns + 40 * NS

    def unanswered(start_ns: int, count: int) -> list[Call]:
        return [
            Call("a", "b", ConnectionType.DIRECT, start_ns + i * NS, 1.0, None, True, bytes(16))
            for i in range(count)
        ]

    graph.add_calls(unanswered((k - 1) * bucket_ns + 10 * NS, 20))  # before the window
    graph.add_calls(unanswered(k * bucket_ns + 5 * NS, 2))  # in it: fewer than any floor
    detection = Detector().evaluate(graph, eval_ns + 10 * NS)  # judged `settle_s` back
    b = detection.nodes["b"]
    assert b.calls == 2  # the window itself holds two failed calls
    assert b.has(Signals.UNREACHABLE)
    assert b.health is Health.DOWN


def test_learning_ahead_gives_the_verdicts_of_learning_as_the_bucket_leaves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At the end of a tick the baseline learns the bucket that leaves the window at the next
    one; when the next tick comes at another time, or a late call changes that bucket, the
    learning is taken back. Tick by tick, through faults, irregular ticks and late calls, the
    verdicts equal those of a detector that learns each bucket as it leaves."""
    ran: Counter[str] = Counter()
    for name in ("checkpoint", "undo"):
        method = getattr(BaselineLearner, name)

        def counted(self: BaselineLearner, *args: Any, _m: Any = method, _n: str = name) -> Any:
            ran[_n] += 1
            return _m(self, *args)

        monkeypatch.setattr(BaselineLearner, name, counted)
    shop = Shop(seed=11)
    ahead, plain = Detector(), Detector(learn_ahead=False)
    rng = random.Random(4)
    differing: list[int] = []
    unhealthy = 0
    next_tick = 5
    late = 0

    def tick(_: int) -> None:
        nonlocal next_tick, unhealthy, late
        s = (shop.now_ns - T0) // NS  # seconds since the start, over the three runs
        if s < next_tick:
            return
        one, two = ahead.evaluate(shop.graph, shop.now_ns), plain.evaluate(shop.graph, shop.now_ns)
        if one != two:
            differing.append(s)
        unhealthy += len(one.unhealthy())
        # Mostly every 5 s, as the analyzer ticks; sometimes sooner or later than expected.
        next_tick = s + rng.choice([5, 5, 5, 5, 3, 7, 12])
        if rng.random() < 0.25:
            # A late call into the window's first bucket (judged to 10 s before now).
            late += 1
            shop.graph.add_calls(
                [
                    Call(
                        "gateway",
                        "orders",
                        ConnectionType.DIRECT,
                        shop.now_ns - 38 * NS,
                        0.9,
                        0.8,
                        True,
                        bytes(16),
                    )
                ]
            )

    through_faults(shop, tick, (700, 90, 120))
    assert differing == []
    assert unhealthy > 0  # faults were judged, not only healthy windows
    assert late > 10
    assert ran["checkpoint"] > 1000  # learned ahead, and taken back where it had to be
    assert ran["undo"] > 20
