"""`/metrics` content: servicegraph edge series, node gauges, the analyzer's own health."""

from __future__ import annotations

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from watchman_collector.clock import EventClock
from watchman_collector.expose_metrics import make_registry
from watchman_collector.pipeline import Analyzer
from watchman_collector.records import Call, ConnectionType, Heartbeat, NodeKind
from watchman_collector.stats import LATENCY_BUCKETS_S

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000


def call(client, server, at_s, latency_s, *, failed=False, trace=1, **kw):
    """A paired call `at_s` seconds after T0."""
    return Call(
        client=client,
        server=server,
        connection_type=kw.pop("connection_type", ConnectionType.DIRECT),
        time_ns=T0 + int(at_s * S),
        client_latency_s=kw.pop("client_latency_s", latency_s),
        server_latency_s=latency_s,
        failed=failed,
        trace_id=trace.to_bytes(16, "big"),
        **kw,
    )


@pytest.fixture
def analyzer():
    clock = EventClock(T0 + 30 * S)
    a = Analyzer(clock=clock)
    calls = [call("frontend", "checkout", i, 0.005 * (i + 1), trace=i + 1) for i in range(10)]
    calls.append(call("frontend", "checkout", 10, 3.0, failed=True, trace=99))
    calls.append(
        call(
            "checkout",
            "postgresql",
            5,
            None,
            client_latency_s=0.02,
            connection_type=ConnectionType.DATABASE,
            server_kind=NodeKind.DATABASE,
        )
    )
    a.graph.add_calls(calls)
    a.graph.add_heartbeats(
        [
            Heartbeat("checkout", "c-1", T0 + 29 * S, 120.0, 0.25, 50_000_000, 8, 1, "h1"),
            Heartbeat("checkout", "c-2", T0 + 29 * S, 10.0, None, None, None, None, "h2"),
        ]
    )
    return a


def scrape(analyzer):
    text = generate_latest(make_registry(analyzer)).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return text, samples


def edge(client, server, ct="", **extra):
    return tuple(
        sorted({"client": client, "server": server, "connection_type": ct, **extra}.items())
    )


def test_edge_counters_have_the_servicegraph_names_and_labels(analyzer):
    """request_total and request_failed_total per (client, server, connection_type)."""
    _, samples = scrape(analyzer)
    assert samples[("traces_service_graph_request_total", edge("frontend", "checkout"))] == 11
    assert samples[("traces_service_graph_request_failed_total", edge("frontend", "checkout"))] == 1
    db = edge("checkout", "postgresql", "database")
    assert samples[("traces_service_graph_request_total", db)] == 1


def test_edge_histograms_use_the_connector_buckets(analyzer):
    """Server and client latency histograms have the connector's bounds, +Inf, sum and count."""
    text, samples = scrape(analyzer)
    name = "traces_service_graph_request_server_seconds"
    les = [
        dict(labels)["le"]
        for (n, labels) in samples
        if n == name + "_bucket" and dict(labels)["client"] == "frontend"
    ]
    assert [float(le) for le in les] == [*LATENCY_BUCKETS_S, float("inf")]
    key = edge("frontend", "checkout")
    assert samples[(name + "_count", key)] == 11
    assert samples[(name + "_sum", key)] == pytest.approx(
        sum(0.005 * (i + 1) for i in range(10)) + 3
    )
    assert samples[(name + "_bucket", edge("frontend", "checkout", le="2.0"))] == 10
    client = "traces_service_graph_request_client_seconds"
    assert samples[(client + "_count", edge("checkout", "postgresql", "database"))] == 1
    assert "_created" not in text


def test_node_series(analyzer):
    """Every node has service_info; served counters, windowed gauges and instances follow."""
    _, samples = scrape(analyzer)
    info = {dict(k)["service"]: dict(k)["kind"] for n, k in samples if n == "watchman_service_info"}
    assert info == {"frontend": "service", "checkout": "service", "postgresql": "database"}
    assert samples[("watchman_service_requests_total", (("service", "checkout"),))] == 11
    assert samples[("watchman_service_requests_failed_total", (("service", "checkout"),))] == 1
    ratio = samples[("watchman_service_error_ratio", (("service", "checkout"), ("window", "1m")))]
    assert ratio == pytest.approx(1 / 11)
    assert (
        samples[("watchman_service_request_rate", (("service", "checkout"), ("window", "5m")))] > 0
    )
    p99 = (
        "watchman_service_latency_seconds",
        (("quantile", "0.99"), ("service", "checkout"), ("window", "15m")),
    )
    assert samples[p99] > 1.0
    assert samples[("watchman_service_instances", (("service", "checkout"),))] == 2
    c1 = (("instance", "c-1"), ("service", "checkout"))
    assert samples[("watchman_instance_up", c1)] == 1
    assert samples[("watchman_instance_uptime_seconds", c1)] == 120
    assert samples[("watchman_instance_cpu_utilization_ratio", c1)] == 0.25
    assert samples[("watchman_instance_memory_bytes", c1)] == 50_000_000
    assert (
        "watchman_instance_memory_bytes",
        (("instance", "c-2"), ("service", "checkout")),
    ) not in samples


def test_instance_goes_down_when_heartbeats_stop(analyzer):
    """After three missed intervals of clock time the instance is 0 and not counted as fresh."""
    analyzer.clock.observe(T0 + 300 * S)
    _, samples = scrape(analyzer)
    assert samples[("watchman_instance_up", (("instance", "c-1"), ("service", "checkout")))] == 0
    assert samples[("watchman_service_instances", (("service", "checkout"),))] == 0


def test_analyzer_self_series_are_present(analyzer):
    """Queue depth, pairing store and graph size series exist even when zero."""
    _, samples = scrape(analyzer)
    assert samples[("watchman_graph_nodes", ())] == 3
    assert samples[("watchman_graph_edges", ())] == 2
    assert samples[("watchman_intake_queue_depth", ())] == 0
    assert samples[("watchman_pair_pending_spans", ())] == 0
    for name in ("duplicates", "evicted", "expired"):
        assert samples[(f"watchman_pair_{name}_total", ())] == 0
    assert samples[("watchman_graph_overflow_total", (("what", "node"),))] == 0
    assert samples[("watchman_graph_late_dropped_total", ())] == 0


def test_counters_follow_the_graph_without_re_registration(analyzer):
    """State is read at scrape time: a new call shows in the next scrape."""
    registry = make_registry(analyzer)
    before = registry.get_sample_value(
        "traces_service_graph_request_total",
        {"client": "frontend", "server": "checkout", "connection_type": ""},
    )
    analyzer.graph.add_calls([call("frontend", "checkout", 29, 0.01, trace=500)])
    after = registry.get_sample_value(
        "traces_service_graph_request_total",
        {"client": "frontend", "server": "checkout", "connection_type": ""},
    )
    assert (before, after) == (11, 12)


def test_openmetrics_output_carries_trace_exemplars(analyzer):
    """The OpenMetrics exposition is valid and links latency buckets to trace ids."""
    text = generate_openmetrics(make_registry(analyzer)).decode()
    assert text.endswith("# EOF\n")
    assert "traces_service_graph_request_total{" in text
    assert '# {trace_id="' in text


def test_histogram_buckets_are_cumulative_with_one_exemplar_per_bucket():
    """`le` pairs are cumulative; each exemplar sits in its latency's bucket, the slowest wins."""
    from watchman_collector.expose_metrics import histogram_buckets
    from watchman_collector.stats import Histogram

    h = Histogram()
    for v in (0.001, 0.003, 0.3, 20.0):
        h.observe(v)
    buckets = histogram_buckets(h, [("aa", T0, 0.25), ("bb", T0, 0.3), ("cc", T0, 20.0)])
    assert buckets[0][:2] == ("0.002", 1.0)
    assert buckets[-1][:2] == ("+Inf", 4.0)
    with_exemplars = {b[0]: b[2] for b in buckets if len(b) == 3}
    assert set(with_exemplars) == {"0.4", "+Inf"}
    assert with_exemplars["0.4"].labels == {"trace_id": "bb"}
    assert with_exemplars["+Inf"].value == 20.0
