"""Prometheus `/metrics` for the analyzer: a custom collector that reads graph state at scrape time.

Nothing is mirrored into live metric objects: each scrape walks the graph once and yields metric
families, so thousands of edges cost nothing between scrapes and a node that leaves the graph
leaves `/metrics` with it. Edge series carry the exact names and labels of the OpenTelemetry
Collector's servicegraph connector (and Tempo's metrics generator), so Grafana's stock service
graph view works unchanged.

No `_created` series are exported. The counters are cumulative from the analyzer's start and
count calls by arrival, not by the calls' own time (the cause of the restart spikes discussed in
opentelemetry-collector-contrib#36613); a created timestamp at the analyzer's start would let a
Prometheus that ingests created timestamps as zero samples count the backlog senders replay
after an analyzer restart as one burst of new calls. Without it `rate()` starts at a series' second
sample. The event-time gauges (`watchman_service_request_rate{window}` …) have neither problem.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

from watchman_collector.alert_output import alerts_metric
from watchman_collector.stats import Histogram

if TYPE_CHECKING:
    from watchman_collector.pipeline import Analyzer

__all__ = ["WINDOWS", "GraphCollector", "histogram_buckets", "make_registry"]

WINDOWS: tuple[tuple[str, float], ...] = (("1m", 60.0), ("5m", 300.0), ("15m", 900.0))
"""The `window` label values of the node gauges and the seconds they cover."""

QUANTILES: tuple[tuple[str, float], ...] = (("0.5", 0.5), ("0.95", 0.95), ("0.99", 0.99))

_EDGE = ("client", "server", "connection_type")


def histogram_buckets(
    histogram: Histogram,
    exemplars: Sequence[tuple[str, int, float]] = (),
) -> list[tuple[str, float] | tuple[str, float, Exemplar]]:
    """Cumulative `(le, count)` pairs of a histogram, +Inf last, for `HistogramMetricFamily`.

    Each `(trace_id_hex, time_ns, latency_s)` exemplar is attached to the bucket its latency falls
    in (one per bucket, the slowest), which only the OpenMetrics format carries.
    """
    cumulative = histogram.cumulative()
    bounds = [*histogram.bounds, float("inf")]
    chosen: dict[int, Exemplar] = {}
    for trace_id, time_ns, latency_s in exemplars:
        index = next((i for i, b in enumerate(bounds) if latency_s <= b), len(bounds) - 1)
        held = chosen.get(index)
        if held is None or latency_s > held.value:
            chosen[index] = Exemplar({"trace_id": trace_id}, latency_s, time_ns / 1e9)
    out: list[tuple[str, float] | tuple[str, float, Exemplar]] = []
    for i, (bound, count) in enumerate(zip(bounds, cumulative, strict=True)):
        le = floatToGoString(bound)  # type: ignore[no-untyped-call]
        exemplar = chosen.get(i)
        out.append((le, float(count)) if exemplar is None else (le, float(count), exemplar))
    return out


class GraphCollector(Collector):
    """Yields the analyzer's metric families; registered on a dedicated `CollectorRegistry`."""

    def __init__(self, analyzer: Analyzer) -> None:
        self.analyzer = analyzer

    def collect(self) -> Iterable[Metric]:
        """Compute every family from the current state (called by each scrape)."""
        yield from self._edges()
        yield from self._nodes()
        yield from self._verdicts()
        yield from self._self()

    def describe(self) -> Iterable[Metric]:
        """Nothing: the registry must not call `collect` at registration to learn the names."""
        return ()

    def _edges(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "traces_service_graph_request",
            "Requests between two nodes of the service graph.",
            labels=_EDGE,
        )
        failed = CounterMetricFamily(
            "traces_service_graph_request_failed",
            "Failed requests between two nodes of the service graph.",
            labels=_EDGE,
        )
        server = HistogramMetricFamily(
            "traces_service_graph_request_server_seconds",
            "Time for a request between two nodes as seen from the server.",
            labels=_EDGE,
        )
        client = HistogramMetricFamily(
            "traces_service_graph_request_client_seconds",
            "Time for a request between two nodes as seen from the client.",
            labels=_EDGE,
        )
        unpaired = CounterMetricFamily(
            "traces_service_graph_unpaired_spans",
            "Spans whose other half never arrived within the pairing TTL.",
            labels=("client", "server"),
        )
        dropped = CounterMetricFamily(
            "traces_service_graph_dropped_spans",
            "Calls dropped because they arrived later than the allowed lateness.",
            labels=("client", "server"),
        )
        for edge in self.analyzer.graph.edges():
            labels = [edge.client, edge.server, str(edge.connection_type)]
            red = edge.red
            requests.add_metric(labels, red.total_calls)
            failed.add_metric(labels, red.total_failed)
            # Exemplar latencies are server-side where the server reported, else client-side:
            # attach them to the histogram they were measured by.
            slowest = edge.exemplars.slowest
            on_server = red.total_server.count > 0
            server.add_metric(
                labels,
                histogram_buckets(red.total_server, slowest if on_server else ()),
                red.total_server.sum_s,
            )
            client.add_metric(
                labels,
                histogram_buckets(red.total_client, () if on_server else slowest),
                red.total_client.sum_s,
            )
            if edge.unpaired:
                unpaired.add_metric([edge.client, edge.server], edge.unpaired)
            if edge.dropped:
                dropped.add_metric([edge.client, edge.server], edge.dropped)
        yield from (requests, failed, server, client, unpaired, dropped)

    def _nodes(self) -> Iterator[Metric]:
        now_ns = self.analyzer.clock.now_ns()
        info = GaugeMetricFamily(
            "watchman_service_info",
            "Every node of the service graph (1), with what it stands for.",
            labels=("service", "kind"),
        )
        instances = GaugeMetricFamily(
            "watchman_service_instances",
            "Instances of a service whose heartbeat is fresh.",
            labels=("service",),
        )
        up = GaugeMetricFamily(
            "watchman_instance_up",
            "1 when the instance's heartbeat is fresh, else 0.",
            labels=("service", "instance"),
        )
        uptime = GaugeMetricFamily(
            "watchman_instance_uptime_seconds",
            "Instance uptime from its latest heartbeat.",
            labels=("service", "instance"),
        )
        cpu = GaugeMetricFamily(
            "watchman_instance_cpu_utilization_ratio",
            "Process CPU utilization from the latest heartbeat (1 = one core).",
            labels=("service", "instance"),
        )
        memory = GaugeMetricFamily(
            "watchman_instance_memory_bytes",
            "Process memory (RSS) from the latest heartbeat.",
            labels=("service", "instance"),
        )
        served = CounterMetricFamily(
            "watchman_service_requests",
            "Calls served by the node.",
            labels=("service",),
        )
        served_failed = CounterMetricFamily(
            "watchman_service_requests_failed",
            "Failed calls served by the node.",
            labels=("service",),
        )
        rate = GaugeMetricFamily(
            "watchman_service_request_rate",
            "Calls served per second over the window, in event time.",
            labels=("service", "window"),
        )
        errors = GaugeMetricFamily(
            "watchman_service_error_ratio",
            "Failed share of the calls served over the window (0 when none).",
            labels=("service", "window"),
        )
        latency = GaugeMetricFamily(
            "watchman_service_latency_seconds",
            "Latency quantiles of the calls served over the window (server side where seen).",
            labels=("service", "window", "quantile"),
        )
        for node in self.analyzer.graph.nodes():
            name = node.name
            info.add_metric([name, str(node.kind)], 1)
            fresh = 0
            for instance_id, inst in node.instances.items():
                is_up = inst.is_up(now_ns)
                fresh += is_up
                key = [name, instance_id]
                up.add_metric(key, 1 if is_up else 0)
                uptime.add_metric(key, inst.uptime_s)
                if inst.cpu_utilization is not None:
                    cpu.add_metric(key, inst.cpu_utilization)
                if inst.memory_bytes is not None:
                    memory.add_metric(key, inst.memory_bytes)
            if node.instances:
                instances.add_metric([name], fresh)
            series = node.served
            served.add_metric([name], series.total_calls)
            served_failed.add_metric([name], series.total_failed)
            if not series.total_calls:
                continue
            for window, seconds in WINDOWS:
                view = series.window(now_ns, seconds)
                rate.add_metric([name, window], view.rate_per_s)
                errors.add_metric([name, window], view.error_ratio)
                for label, q in QUANTILES:
                    value = view.latency.quantile(q)
                    if value is not None:
                        latency.add_metric([name, window, label], value)
        yield from (info, instances, up, uptime, cpu, memory)
        yield from (served, served_failed, rate, errors, latency)

    def _verdicts(self) -> Iterator[Metric]:
        """Alerts, health, root-cause scores and cascade predictions of the latest tick."""
        diag = self.analyzer.diagnostician
        yield alerts_metric(diag.evaluator.alerts())
        health = GaugeMetricFamily(
            "watchman_service_health",
            "Health of each node at the latest tick: 0 healthy, 1 degraded, 2 failing, 3 down.",
            labels=["service"],
        )
        if diag.detection is not None:
            for name, node in sorted(diag.detection.nodes.items()):
                health.add_metric([name], int(node.health))
        yield health
        score = GaugeMetricFamily(
            "watchman_root_cause_score",
            "How likely each unhealthy node is the root cause (0..1) at the latest tick.",
            labels=["service"],
        )
        risk = GaugeMetricFamily(
            "watchman_cascade_risk",
            "Predicted error ratio of a caller at risk because of a failing root cause.",
            labels=["service", "root_cause"],
        )
        eta = GaugeMetricFamily(
            "watchman_cascade_eta_seconds",
            "Predicted seconds until a caller at risk breaches its error threshold (0: now).",
            labels=["service", "root_cause"],
        )
        if diag.diagnosis is not None:
            for suspect in diag.diagnosis.suspects:
                score.add_metric([suspect.service], suspect.score)
            for r in diag.diagnosis.risks:
                risk.add_metric([r.service, r.root_cause], r.predicted_error_ratio)
                if r.eta_s is not None:
                    eta.add_metric([r.service, r.root_cause], r.eta_s)
        yield from (score, risk, eta)

    def _self(self) -> Iterator[Metric]:
        analyzer = self.analyzer
        stats = analyzer.receiver_stats
        requests = CounterMetricFamily(
            "watchman_receiver_requests",
            "OTLP export requests received, by outcome (accepted, rejected, refused).",
            labels=("transport", "signal", "outcome"),
        )
        for (transport, signal, outcome), n in sorted(stats.requests.items()):
            requests.add_metric([transport, signal, outcome], n)
        spans = CounterMetricFamily(
            "watchman_receiver_spans",
            "Spans received, by outcome (accepted, rejected, refused).",
            labels=("transport", "outcome"),
        )
        for (transport, outcome), n in sorted(stats.spans.items()):
            spans.add_metric([transport, outcome], n)
        refused = CounterMetricFamily(
            "watchman_receiver_refused",
            "Export requests refused, by reason.",
            labels=("transport", "reason"),
        )
        for (transport, reason), n in sorted(stats.refused.items()):
            refused.add_metric([transport, reason], n)
        yield from (requests, spans, refused)

        yield GaugeMetricFamily(
            "watchman_intake_queue_depth",
            "Export requests waiting for the analyzer.",
            value=analyzer.queue_depth,
        )
        pair = analyzer.pairer.stats
        yield GaugeMetricFamily(
            "watchman_pair_pending_spans",
            "Span halves waiting for their other half.",
            value=pair.pending,
        )
        yield CounterMetricFamily(
            "watchman_pair_duplicates",
            "Spans ignored because their (trace id, span id) was already seen.",
            value=pair.duplicates,
        )
        yield CounterMetricFamily(
            "watchman_pair_evicted",
            "Span halves evicted from a full pairing store (counted as unpaired).",
            value=pair.evicted,
        )
        yield CounterMetricFamily(
            "watchman_pair_expired",
            "Span halves whose TTL ran out before their other half arrived.",
            value=pair.expired,
        )
        graph = analyzer.graph
        counters = graph.counters
        yield GaugeMetricFamily(
            "watchman_graph_nodes",
            "Nodes in the service graph.",
            value=graph.graph.number_of_nodes(),
        )
        yield GaugeMetricFamily(
            "watchman_graph_edges",
            "Edges in the service graph.",
            value=graph.graph.number_of_edges(),
        )
        overflow = CounterMetricFamily(
            "watchman_graph_overflow",
            "Nodes and edges refused by the cardinality limits (max_nodes, max_edges).",
            labels=("what",),
        )
        overflow.add_metric(["node"], counters.overflow_nodes)
        overflow.add_metric(["edge"], counters.overflow_edges)
        yield overflow
        expired = CounterMetricFamily(
            "watchman_graph_expired",
            "Nodes and edges removed after idle_expiry without calls or heartbeats.",
            labels=("what",),
        )
        expired.add_metric(["node"], counters.expired_nodes)
        expired.add_metric(["edge"], counters.expired_edges)
        yield expired
        yield CounterMetricFamily(
            "watchman_graph_late_dropped",
            "Calls dropped because they were older than the allowed lateness.",
            value=counters.late_dropped,
        )


def make_registry(analyzer: Analyzer) -> CollectorRegistry:
    """A registry holding only the analyzer's collector (no process or platform collectors)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GraphCollector(analyzer))
    return registry
