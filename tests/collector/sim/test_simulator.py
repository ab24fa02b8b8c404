"""The fault-injection simulator: deterministic, realistic OTLP, and a truthful ground truth."""

from __future__ import annotations

import gzip
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from watchman_collector.sim import (
    Export,
    FaultKind,
    GroundTruth,
    Noise,
    Scenario,
    get_topology,
    parse_fault,
    simulate,
)
from watchman_collector.sim.__main__ import main as cli_main
from watchman_collector.sim.process import MAX_EXPORT_BATCH

S = 1_000_000_000
OLD_HTTP = {"http.method", "http.url", "http.status_code", "net.peer.name", "net.peer.port"}
OLD_DB = {"db.system", "db.name", "db.operation", "db.statement"}


@dataclass(frozen=True)
class Row:
    service: str
    instance: str
    host: str
    span: Span
    attrs: dict[str, object]


def _value(any_value):
    return getattr(any_value, any_value.WhichOneof("value"))


def _resource(resource) -> dict[str, object]:
    return {kv.key: _value(kv.value) for kv in resource.attributes}


def spans_of(exports: list[Export]) -> list[Row]:
    rows = []
    for export in exports:
        if export.signal != "traces":
            continue
        for rs in export.request.resource_spans:
            res = _resource(rs.resource)
            for ss in rs.scope_spans:
                for span in ss.spans:
                    attrs = {kv.key: _value(kv.value) for kv in span.attributes}
                    rows.append(
                        Row(
                            res["service.name"],
                            res["service.instance.id"],
                            res["host.name"],
                            span,
                            attrs,
                        )
                    )
    return rows


def heartbeats_of(exports: list[Export]) -> list[tuple[dict[str, object], dict[str, object], int]]:
    out = []
    for export in exports:
        if export.signal != "metrics":
            continue
        for rm in export.request.resource_metrics:
            values, time_ns = {}, 0
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    point = metric.gauge.data_points[0]
                    values[metric.name] = getattr(point, point.WhichOneof("value"))
                    time_ns = point.time_unix_nano
            out.append((_resource(rm.resource), values, time_ns))
    return out


@pytest.fixture(scope="module")
def healthy_shop() -> tuple[list[Export], GroundTruth]:
    return simulate(Scenario(get_topology("shop"), seed=7, duration_s=60, rate=15, noise=Noise()))


@pytest.fixture(scope="module")
def healthy_mesh() -> tuple[list[Export], GroundTruth]:
    return simulate(Scenario(get_topology("mesh"), seed=7, duration_s=40, rate=10, noise=Noise()))


@pytest.fixture(scope="module")
def crashed_shop() -> tuple[Scenario, list[Export], GroundTruth]:
    scenario = Scenario(
        get_topology("shop"),
        seed=11,
        duration_s=120,
        rate=15,
        faults=(parse_fault("payments:crash@40+30"),),
    )
    exports, truth = simulate(scenario)
    return scenario, exports, truth


def test_same_seed_same_bytes() -> None:
    """Two runs of one scenario and seed produce byte-identical export requests and truth."""

    def run(seed: int) -> tuple[bytes, str]:
        scenario = Scenario(
            get_topology("shop"),
            seed=seed,
            duration_s=30,
            rate=10,
            faults=(parse_fault("orders:error@10+10"),),
        )
        exports, truth = simulate(scenario)
        return b"".join(e.request.SerializeToString() for e in exports), truth.to_json()

    first, again, other = run(3), run(3), run(4)
    assert first == again
    assert first[0] != other[0]


def test_exports_are_in_event_time_order_and_batched(healthy_shop) -> None:
    """Exports come out in time order and no span export holds more than 512 spans."""
    exports, truth = healthy_shop
    times = [e.time_ns for e in exports]
    assert times == sorted(times)
    sizes = [
        len(r.spans)
        for e in exports
        if e.signal == "traces"
        for r in e.request.resource_spans[0].scope_spans
    ]
    assert sizes
    assert max(sizes) <= MAX_EXPORT_BATCH
    assert sum(sizes) == truth.spans
    assert truth.spans_dropped == 0


def test_sdk_batching_delays_exports(healthy_shop) -> None:
    """Spans are exported after they end, in batches per process every few seconds."""
    exports, _ = healthy_shop
    lags = []
    for export in exports:
        if export.signal == "traces":
            for ss in export.request.resource_spans[0].scope_spans:
                lags += [export.time_ns - s.end_time_unix_nano for s in ss.spans]
    assert min(lags) >= 0
    assert max(lags) > 0.5 * S  # batched, not sent span by span
    per_process = {}
    for export in exports:
        if export.signal == "traces":
            per_process.setdefault(export.instance, []).append(export.time_ns)
    gaps = [b - a for times in per_process.values() for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.9 * S


def test_client_spans_to_instrumented_services_pair_with_server_spans(healthy_mesh) -> None:
    """Every CLIENT span to an instrumented service has a SERVER span of that service as child."""
    exports, _ = healthy_mesh
    topo = get_topology("mesh")
    service_by_host = {s.dns: s.name for s in topo.services}
    rows = spans_of(exports)
    servers = {r.span.parent_span_id: r for r in rows if r.span.kind == Span.SPAN_KIND_SERVER}
    checked = 0
    for row in rows:
        if row.span.kind != Span.SPAN_KIND_CLIENT:
            continue
        host = row.attrs.get("server.address", row.attrs.get("net.peer.name"))
        if host not in service_by_host:
            continue
        server = servers.get(row.span.span_id)
        assert server is not None, f"{row.service} → {host}: no SERVER span"
        assert server.service == service_by_host[host]
        assert server.span.trace_id == row.span.trace_id
        assert server.span.start_time_unix_nano >= row.span.start_time_unix_nano
        checked += 1
    assert checked > 100


def test_producer_spans_pair_with_consumer_spans(healthy_mesh) -> None:
    """A PRODUCER span's message is processed under a CONSUMER span, its child and linked to it."""
    exports, _ = healthy_mesh
    rows = spans_of(exports)
    producers = [r for r in rows if r.span.kind == Span.SPAN_KIND_PRODUCER]
    consumers = {r.span.parent_span_id: r for r in rows if r.span.kind == Span.SPAN_KIND_CONSUMER}
    assert producers
    for producer in producers:
        consumer = consumers[producer.span.span_id]
        assert consumer.service == "email"
        assert [(lk.trace_id, lk.span_id) for lk in consumer.span.links] == [
            (producer.span.trace_id, producer.span.span_id)
        ]
        assert consumer.span.start_time_unix_nano > producer.span.end_time_unix_nano
        assert producer.attrs["messaging.destination.name"] == "order-events"
        assert consumer.attrs["messaging.operation.type"] == "process"


def test_stable_http_and_db_attribute_names(healthy_mesh) -> None:
    """Spans carry the stable HTTP and DB names; only parts flagged legacy use the old ones."""
    exports, _ = healthy_mesh
    topo = get_topology("mesh")
    legacy_services = {s.name for s in topo.services if s.legacy_semconv}
    legacy_db_hosts = {d.host for d in topo.databases if d.legacy_semconv}
    seen_db = 0
    for row in spans_of(exports):
        keys = set(row.attrs)
        if row.span.kind == Span.SPAN_KIND_SERVER:
            assert {
                "http.request.method",
                "http.route",
                "url.path",
                "http.response.status_code",
                "server.address",
                "server.port",
            } <= keys
            assert row.span.name == f"{row.attrs['http.request.method']} {row.attrs['http.route']}"
        elif row.span.kind == Span.SPAN_KIND_CLIENT and "db.system.name" in keys:
            assert {"db.namespace", "db.operation.name", "server.address", "server.port"} <= keys
            assert not keys & OLD_DB
            seen_db += 1
        elif row.span.kind == Span.SPAN_KIND_CLIENT and "db.system" in keys:
            assert row.attrs["net.peer.name"] in legacy_db_hosts
        elif row.span.kind == Span.SPAN_KIND_CLIENT and row.service in legacy_services:
            assert {"http.method", "http.url", "net.peer.name"} <= keys
        elif row.span.kind == Span.SPAN_KIND_CLIENT:
            assert {"http.request.method", "url.full", "server.address", "server.port"} <= keys
            assert not keys & OLD_HTTP
            assert row.span.name == row.attrs["http.request.method"]
    assert seen_db > 10


def test_host_names_differ_from_service_names(healthy_mesh) -> None:
    """Neither host.name nor any server.address a client dials equals a service.name."""
    exports, _ = healthy_mesh
    names = {s.name for s in get_topology("mesh").services}
    rows = spans_of(exports)
    assert {r.host for r in rows}.isdisjoint(names)
    addresses = {r.attrs.get("server.address") for r in rows} | {
        r.attrs.get("net.peer.name") for r in rows
    }
    assert addresses.isdisjoint(names)
    assert all(r.host.startswith(f"{r.service}-") for r in rows)


def test_client_4xx_is_a_client_error_only(healthy_shop) -> None:
    """A 404 marks the CLIENT span ERROR with error.type "404" but leaves the SERVER span unset."""
    exports, _ = healthy_shop
    rows = spans_of(exports)
    servers = {r.span.parent_span_id: r for r in rows if r.span.kind == Span.SPAN_KIND_SERVER}
    clients_404 = [
        r
        for r in rows
        if r.span.kind == Span.SPAN_KIND_CLIENT and r.attrs.get("http.response.status_code") == 404
    ]
    assert clients_404
    for row in clients_404:
        assert row.span.status.code == Status.STATUS_CODE_ERROR
        assert row.attrs["error.type"] == "404"
        server = servers[row.span.span_id]
        assert server.span.status.code == Status.STATUS_CODE_UNSET
        assert "error.type" not in server.attrs


def test_heartbeats_every_interval_per_instance(healthy_shop) -> None:
    """Each instance sends watchman.heartbeat with usage gauges every 10 s, uptime increasing."""
    exports, _ = healthy_shop
    topo = get_topology("shop")
    beats = heartbeats_of(exports)
    by_instance: dict[str, list] = {}
    for resource, values, time_ns in beats:
        assert {
            "service.name",
            "service.instance.id",
            "host.name",
            "service.version",
            "deployment.environment.name",
        } <= set(resource)
        assert set(values) == {
            "watchman.heartbeat",
            "process.cpu.utilization",
            "process.memory.usage",
            "process.thread.count",
            "watchman.inflight_requests",
        }
        assert 0 <= values["process.cpu.utilization"] <= 1
        by_instance.setdefault(resource["service.instance.id"], []).append((time_ns, values))
    assert len(by_instance) == sum(s.instances for s in topo.services)
    for series in by_instance.values():
        assert len(series) in (9, 10)  # 60 s run + 30 s drain, first beat within one interval
        times = [t for t, _ in series]
        assert {b - a for a, b in itertools.pairwise(times)} == {10 * S}
        uptimes = [v["watchman.heartbeat"] for _, v in series]
        assert uptimes == sorted(uptimes)
        assert uptimes[1] - uptimes[0] == pytest.approx(10.0)


def test_crash_silences_the_service_and_callers_see_connection_errors(crashed_shop) -> None:
    """During a crash the service sends no spans or heartbeats; its callers' CLIENT spans fail."""
    scenario, exports, truth = crashed_shop
    onset, heal = scenario.ns(40), scenario.ns(70)
    payments_dns = get_topology("shop").service("payments").dns
    rows = spans_of(exports)
    assert not [
        r for r in rows if r.service == "payments" and onset <= r.span.end_time_unix_nano < heal
    ]
    assert not [e for e in exports if e.service == "payments" and onset <= e.time_ns < heal]
    beats = [(res, t) for res, _, t in heartbeats_of(exports) if res["service.name"] == "payments"]
    assert not [t for _, t in beats if onset <= t < heal]
    refused = [
        r
        for r in rows
        if r.attrs.get("server.address") == payments_dns
        and onset <= r.span.start_time_unix_nano < heal
    ]
    assert refused
    for row in refused:
        assert row.span.status.code == Status.STATUS_CODE_ERROR
        assert row.attrs["error.type"] == "ConnectError"
        assert "http.response.status_code" not in row.attrs
        assert row.span.events[0].name == "exception"
    before = {res["service.instance.id"] for res, t in beats if t < onset}
    after = {res["service.instance.id"] for res, t in beats if t >= heal}
    assert before
    assert after
    assert before.isdisjoint(after)  # restarted processes are new instances
    assert truth.faults[0].impacts["payments"].failed > 0


def test_ground_truth_of_a_crash(crashed_shop) -> None:
    """The truth names the fault and exactly the callers whose own requests failed, from when."""
    scenario, _, truth = crashed_shop
    (fault,) = truth.faults
    assert (fault.target, fault.kind) == ("payments", FaultKind.CRASH)
    assert (fault.onset_ns, fault.heal_ns) == (scenario.ns(40), scenario.ns(70))
    assert set(fault.affected) == {
        "orders",
        "gateway",
    }  # notifications is optional, products unaffected
    for first in fault.affected.values():
        assert fault.onset_ns <= first < fault.onset_ns + 10 * S
    for name in ("orders", "gateway"):
        assert fault.impacts[name].last_failed_ns < fault.heal_ns + 5 * S
    document = json.loads(truth.to_json())
    assert document["faults"][0]["kind"] == "crash"
    assert set(document["faults"][0]["affected"]) == {"orders", "gateway"}


def test_latency_fault_makes_callers_time_out() -> None:
    """Latency beyond a caller's timeout gives ReadTimeout CLIENT spans that end at the timeout."""
    scenario = Scenario(
        get_topology("shop"),
        seed=5,
        duration_s=40,
        rate=10,
        faults=(parse_fault("products:latency=2@10+20"),),
        noise=Noise(),
    )
    exports, truth = simulate(scenario)
    products_dns = get_topology("shop").service("products").dns
    rows = spans_of(exports)
    timeouts = [
        r
        for r in rows
        if r.attrs.get("server.address") == products_dns
        and r.attrs.get("error.type") == "ReadTimeout"
    ]
    assert timeouts
    servers = {r.span.parent_span_id: r for r in rows if r.span.kind == Span.SPAN_KIND_SERVER}
    for row in timeouts:
        duration = row.span.end_time_unix_nano - row.span.start_time_unix_nano
        assert duration in (round(0.8 * S), round(1.0 * S), round(1.5 * S))
        # the callee keeps working after its caller gave up
        assert servers[row.span.span_id].span.end_time_unix_nano > row.span.end_time_unix_nano
    resent = [r for r in timeouts if r.attrs.get("http.request.resend_count") == 1]
    assert resent  # gateway retries GET /products/{id} once
    assert "gateway" in truth.faults[0].affected


def test_error_fault_marks_server_spans_failed() -> None:
    """An error burst makes the target's SERVER spans answer 500 with ERROR status."""
    scenario = Scenario(
        get_topology("shop"),
        seed=2,
        duration_s=30,
        rate=10,
        faults=(parse_fault("products:error=0.5@5+20"),),
        noise=Noise(),
    )
    exports, truth = simulate(scenario)
    failed = [
        r
        for r in spans_of(exports)
        if r.service == "products"
        and r.span.kind == Span.SPAN_KIND_SERVER
        and r.attrs["http.response.status_code"] == 500
    ]
    assert failed
    assert all(
        r.span.status.code == Status.STATUS_CODE_ERROR and r.attrs["error.type"] == "500"
        for r in failed
    )
    assert truth.faults[0].impacts["products"].failed >= len(failed)


def test_topologies_have_the_promised_sizes() -> None:
    """shop ≈6 services + a database, mesh ≈12, large 30+ services with 3+ databases."""
    shop, mesh, large = (get_topology(n) for n in ("shop", "mesh", "large"))
    assert len(shop.services) == 6
    assert len(shop.databases) == 1
    assert len(mesh.services) == 12
    assert len(large.services) >= 30
    assert len(large.databases) >= 3
    assert large.topics


def test_fault_syntax_round_trips_and_rejects_nonsense() -> None:
    """`target:kind[=magnitude]@onset+duration` parses, prints back, and bad input says why."""
    fault = parse_fault("payments:crash@300+120")
    assert (fault.target, fault.kind, fault.onset_s, fault.heal_s) == (
        "payments",
        FaultKind.CRASH,
        300,
        420,
    )
    ramp = parse_fault("orders:ramp=2.5@10+50")
    assert parse_fault(ramp.spec()) == ramp
    with pytest.raises(ValueError, match="kind must be one of"):
        parse_fault("orders:explode@1+2")
    with pytest.raises(ValueError, match="expected target:kind"):
        parse_fault("orders@1")
    with pytest.raises(ValueError, match="not a service or database"):
        Scenario(get_topology("shop"), faults=(parse_fault("nope:crash@1+2"),))


def test_cli_writes_json_lines_and_truth(tmp_path: Path) -> None:
    """The CLI writes gzip OTLP JSON lines that parse back to the simulated requests, and truth."""
    otlp_json = pytest.importorskip("watchman_collector.otlp_json")
    out = tmp_path / "run.jsonl.gz"
    argv = [
        "--topology",
        "shop",
        "--fault",
        "payments:crash@5+5",
        "--duration",
        "15",
        "--rate",
        "5",
        "--seed",
        "3",
        "--out",
        str(out),
    ]
    assert cli_main(argv) == 0
    scenario = Scenario(
        get_topology("shop"),
        seed=3,
        duration_s=15,
        rate=5,
        faults=(parse_fault("payments:crash@5+5"),),
    )
    expected, _ = simulate(scenario)
    lines = gzip.decompress(out.read_bytes()).decode().splitlines()
    assert len(lines) == len(expected)
    for line, export in zip(lines, expected, strict=True):
        assert otlp_json.detect_signal(line.encode()) == export.signal
        parse = (
            otlp_json.parse_trace_request
            if export.signal == "traces"
            else otlp_json.parse_metrics_request
        )
        assert parse(line) == export.request
    truth = json.loads((tmp_path / "run.truth.json").read_text())
    assert truth["faults"][0]["target"] == "payments"
    first = out.read_bytes()
    assert cli_main(argv) == 0
    assert out.read_bytes() == first


def test_heartbeat_metrics_match_the_sdk_declarations(healthy_shop) -> None:
    """Heartbeat metric names, units, descriptions and scope are exactly those the SDK sends."""
    heartbeat = pytest.importorskip("watchman_otel._heartbeat")
    exports, _ = healthy_shop
    export = next(e for e in exports if e.signal == "metrics")
    (scope_metrics,) = export.request.resource_metrics[0].scope_metrics
    assert scope_metrics.scope.name == "watchman_otel.heartbeat"
    declared = {m.name: (m.unit, m.description) for m in scope_metrics.metrics}
    assert declared == heartbeat.HEARTBEAT_METRICS


def test_analyzer_decode_reads_simulated_requests(crashed_shop) -> None:
    """The analyzer's decode accepts every simulated request and sees the crash's failed calls."""
    decode = pytest.importorskip("watchman_collector.decode")
    scenario, exports, truth = crashed_shop
    spans, heartbeats = [], []
    for export in exports:
        if export.signal == "traces":
            batch = decode.decode_traces(export.request)
            spans += batch.spans
        else:
            batch = decode.decode_metrics(export.request)
            heartbeats += batch.heartbeats
        assert batch.rejected == 0
    assert len(spans) == truth.spans
    assert len(heartbeats) == truth.metric_exports
    payments_dns = get_topology("shop").service("payments").dns
    refused = [
        s
        for s in spans
        if s.server_address == payments_dns and scenario.ns(40) <= s.start_ns < scenario.ns(70)
    ]
    assert refused
    assert all(s.failed and s.error_type == "ConnectError" for s in refused)
    assert {h.host for h in heartbeats}.isdisjoint({s.name for s in get_topology("shop").services})
