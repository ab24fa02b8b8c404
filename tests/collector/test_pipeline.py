"""The Analyzer: non-blocking intake, pair → graph wiring, event-time ticks and tick subscribers."""

from __future__ import annotations

import asyncio

import pytest
from watchman_collector.clock import EventClock
from watchman_collector.config import AnalyzerConfig
from watchman_collector.pipeline import Analyzer, detail_horizon_s
from watchman_collector.records import Batch, Heartbeat, Span, SpanKind
from watchman_collector.rules import default_rules, parse_rules
from watchman_collector.stats import DETAIL_S

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000


def pair_of_spans(n: int, at_s: float) -> list[Span]:
    """A CLIENT span in `web` and its SERVER child in `api`, trace `n`."""
    trace = n.to_bytes(16, "big")
    start = T0 + int(at_s * S)
    client = Span(
        trace,
        (2 * n).to_bytes(8, "big"),
        b"",
        "web",
        "w1",
        SpanKind.CLIENT,
        start,
        start + S // 50,
        False,
    )
    server = Span(
        trace,
        (2 * n + 1).to_bytes(8, "big"),
        client.span_id,
        "api",
        "a1",
        SpanKind.SERVER,
        start + S // 200,
        start + S // 100,
        False,
    )
    return [client, server]


def test_offer_refuses_when_the_queue_is_full():
    """offer() never blocks: False once queue_size batches wait."""
    analyzer = Analyzer(AnalyzerConfig(queue_size=2))
    assert analyzer.offer(Batch())
    assert analyzer.offer(Batch())
    assert not analyzer.offer(Batch())
    assert analyzer.queue_depth == 2
    assert analyzer.flush() == 2
    assert analyzer.queue_depth == 0


def test_process_pairs_spans_into_graph_edges_and_moves_the_event_clock():
    """Both halves of a call make one web→api edge; the event clock reaches the last span end."""
    clock = EventClock()
    analyzer = Analyzer(clock=clock)
    analyzer.process(Batch(spans=pair_of_spans(1, 0)))
    edge = analyzer.graph.edge("web", "api")
    assert edge is not None
    assert edge.red.total_calls == 1
    assert clock.now_ns() == T0 + S // 50
    assert analyzer.counters.spans == 2
    assert analyzer.counters.calls == 1


def test_heartbeats_reach_the_graph():
    """A heartbeat batch creates the node and its instance."""
    analyzer = Analyzer(clock=EventClock())
    analyzer.process(Batch(heartbeats=[Heartbeat("api", "a1", T0, 5.0)]))
    node = analyzer.graph.node("api")
    assert node is not None
    assert set(node.instances) == {"a1"}


def test_ticks_follow_event_time_and_skip_gaps():
    """One tick per tick_interval of event time; a long gap gives one tick, not many."""
    clock = EventClock()
    analyzer = Analyzer(AnalyzerConfig(tick_interval=5.0), clock)
    seen: list[int] = []
    analyzer.tick_subscribers.append(seen.append)
    for second in range(0, 21):
        clock.observe(T0 + second * S)
        analyzer.maybe_tick()
    assert seen == [T0 + 5 * S, T0 + 10 * S, T0 + 15 * S, T0 + 20 * S]
    clock.observe(T0 + 3600 * S)
    assert analyzer.maybe_tick()
    clock.observe(T0 + 3601 * S)
    assert not analyzer.maybe_tick()
    assert seen[-1] == T0 + 3600 * S


def test_tick_turns_lone_halves_into_calls_after_the_ttl():
    """A client span whose server never reports becomes a call once the TTL passed."""
    clock = EventClock()
    analyzer = Analyzer(AnalyzerConfig(pair_ttl=10.0), clock)
    client = Span(
        (7).to_bytes(16, "big"),
        (7).to_bytes(8, "big"),
        b"",
        "web",
        "w1",
        SpanKind.CLIENT,
        T0,
        T0 + S // 10,
        False,
        peer_service="billing",
    )
    analyzer.process(Batch(spans=[client]))
    assert analyzer.graph.edge("web", "billing") is None
    analyzer.tick(T0 + 11 * S)
    edge = analyzer.graph.edge("web", "billing")
    assert edge is not None
    assert edge.red.total_calls == 1


def test_drain_flushes_pending_halves():
    """drain() (end of a replay) pairs nothing more but turns pending halves into calls."""
    analyzer = Analyzer(clock=EventClock())
    client = Span(
        (8).to_bytes(16, "big"),
        (8).to_bytes(8, "big"),
        b"",
        "web",
        "w1",
        SpanKind.CLIENT,
        T0,
        T0 + S // 10,
        False,
        peer_service="billing",
    )
    analyzer.process(Batch(spans=[client]))
    analyzer.drain()
    assert analyzer.pairer.stats.pending == 0
    assert analyzer.graph.edge("web", "billing") is not None


def test_failing_subscriber_is_counted_and_does_not_stop_the_tick(monkeypatch, caplog):
    """Outside the test suite's raise mode a failing subscriber is logged and counted."""
    monkeypatch.setenv("WATCHMAN_RAISE_INTERNAL_ERRORS", "0")
    analyzer = Analyzer(clock=EventClock())
    after: list[int] = []

    def broken(now_ns: int) -> None:
        raise RuntimeError("boom")

    analyzer.tick_subscribers.extend([broken, after.append])
    analyzer.tick(T0)
    assert analyzer.counters.tick_errors == 1
    assert after == [T0]
    assert "boom" in caplog.text


def test_failing_subscriber_raises_under_the_test_suite():
    """With WATCHMAN_RAISE_INTERNAL_ERRORS=1 (set by conftest) the error propagates."""
    analyzer = Analyzer(clock=EventClock())

    def broken(now_ns: int) -> None:
        raise RuntimeError("boom")

    analyzer.tick_subscribers.append(broken)
    with pytest.raises(RuntimeError, match="boom"):
        analyzer.tick(T0)


@pytest.mark.asyncio
async def test_run_consumes_the_queue():
    """The consumer task drains offered batches into the graph."""
    analyzer = Analyzer(AnalyzerConfig(tick_interval=0.05), EventClock())
    for n in range(1, 6):
        assert analyzer.offer(Batch(spans=pair_of_spans(n, n)))
    task = asyncio.create_task(analyzer.run())
    try:
        for _ in range(200):
            if analyzer.counters.batches == 5:
                break
            await asyncio.sleep(0.01)
        assert analyzer.running
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    edge = analyzer.graph.edge("web", "api")
    assert edge is not None
    assert edge.red.total_calls == 5
    assert not analyzer.running


def test_full_resolution_reaches_as_far_back_as_detection_reads():
    """The graph keeps 10 s buckets for baseline + two windows; a long window widens that."""
    assert detail_horizon_s(default_rules()) == DETAIL_S
    rules = parse_rules({"services": {"batch": {"thresholds": {"window": "10m"}}}})
    assert detail_horizon_s(rules) >= 600 + 2 * 600 + 10
    analyzer = Analyzer(AnalyzerConfig())
    assert analyzer.graph.detail_s == DETAIL_S
