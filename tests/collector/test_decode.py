"""decode: OTLP requests into compact Span and Heartbeat records."""

from __future__ import annotations

from typing import Any

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric, NumberDataPoint
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind as OtelKind
from opentelemetry.trace import StatusCode
from watchman_collector.decode import decode_metrics, decode_traces
from watchman_collector.records import Heartbeat, SpanKind

TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _pb_span(
    span_id: int = 1,
    *,
    kind: int = PbSpan.SPAN_KIND_CLIENT,
    trace_id: bytes = TRACE,
    parent: bytes = b"",
    error: bool = False,
    **attributes: Any,
) -> PbSpan:
    return PbSpan(
        trace_id=trace_id,
        span_id=span_id.to_bytes(8, "big"),
        parent_span_id=parent,
        name="op",
        kind=kind,
        start_time_unix_nano=1_000,
        end_time_unix_nano=3_000,
        attributes=[_kv(k.replace("__", "."), v) for k, v in attributes.items()],
        status=Status(code=Status.STATUS_CODE_ERROR if error else Status.STATUS_CODE_UNSET),
    )


def _request(*spans: PbSpan, **resource: str) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(_kv(k.replace("__", "."), v) for k, v in resource.items())
    rs.scope_spans.add().spans.extend(spans)
    return req


def _one(span: PbSpan, **resource: str) -> Any:
    batch = decode_traces(_request(span, **resource))
    assert batch.rejected == 0, batch.reason
    (record,) = batch.spans
    return record


def test_sdk_spans_decode_to_records() -> None:
    """Spans made by the OpenTelemetry SDK decode with ids, kinds, times, resource names."""
    exporter = InMemorySpanExporter()
    resource = Resource.create({"service.name": "checkout", "service.instance.id": "c-1"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("GET /cart", kind=OtelKind.SERVER) as server:
        server.set_attribute("http.response.status_code", 503)
        with tracer.start_as_current_span("SELECT", kind=OtelKind.CLIENT) as client:
            client.set_attribute("db.system.name", "postgresql")
            client.set_status(StatusCode.ERROR)
    provider.shutdown()
    finished = {s.name: s for s in exporter.get_finished_spans()}
    batch = decode_traces(encode_spans(list(finished.values())))
    records = {s.name: s for s in batch.spans}
    assert batch.rejected == 0
    srv, cli = records["GET /cart"], records["SELECT"]
    sctx = finished["GET /cart"].get_span_context()
    assert srv.trace_id == sctx.trace_id.to_bytes(16, "big")
    assert srv.span_id == sctx.span_id.to_bytes(8, "big")
    assert srv.parent_span_id == b""
    assert cli.parent_span_id == srv.span_id
    assert (srv.service, srv.instance) == ("checkout", "c-1")
    assert (srv.kind, cli.kind) == (SpanKind.SERVER, SpanKind.CLIENT)
    assert srv.start_ns == finished["GET /cart"].start_time
    assert srv.end_ns == finished["GET /cart"].end_time
    assert (srv.failed, srv.http_status) == (True, 503)
    assert (cli.failed, cli.db_system) == (True, "postgresql")


def test_reads_the_stable_attributes() -> None:
    """peer.service, server.*, db, messaging, HTTP status and error.type are read."""
    client = _one(
        _pb_span(
            peer__service="payments",
            server__address="pay.internal",
            server__port=8443,
            db__system__name="postgresql",
            error__type="timeout",
            unrelated="x",
        )
    )
    assert client.peer_service == "payments"
    assert (client.server_address, client.server_port) == ("pay.internal", 8443)
    assert client.db_system == "postgresql"
    assert client.error_type == "timeout"
    producer = _one(_pb_span(kind=PbSpan.SPAN_KIND_PRODUCER, messaging__system="kafka"))
    assert producer.messaging_system == "kafka"
    consumer = _one(_pb_span(kind=PbSpan.SPAN_KIND_CONSUMER, messaging__system="kafka"))
    assert consumer.messaging_system == "kafka"
    server = _one(
        _pb_span(kind=PbSpan.SPAN_KIND_SERVER, http__response__status_code=502, error__type="500")
    )
    assert (server.http_status, server.failed, server.error_type) == (502, True, "500")


def test_reads_only_what_the_kind_needs() -> None:
    """Callers' peer attributes, SERVER status, error.type of failed spans; nothing else."""
    peer: dict[str, Any] = {
        "peer__service": "p",
        "server__address": "h",
        "server__port": 80,
        "error__type": "x",
    }
    server = _one(_pb_span(kind=PbSpan.SPAN_KIND_SERVER, http__response__status_code=200, **peer))
    assert (server.peer_service, server.server_address, server.server_port) == (None, None, None)
    assert (server.http_status, server.error_type) == (200, None)  # not failed: no error.type
    internal = _one(_pb_span(kind=PbSpan.SPAN_KIND_INTERNAL, error=True, **peer))
    assert (internal.server_address, internal.error_type) == (None, "x")
    client = _one(_pb_span(http__response__status_code=503, messaging__system="kafka", **peer))
    assert (client.http_status, client.messaging_system) == (None, None)
    assert (client.peer_service, client.error_type) == ("p", "x")  # read for callers always
    producer = _one(_pb_span(kind=PbSpan.SPAN_KIND_PRODUCER, db__system__name="redis"))
    assert producer.db_system is None


def test_old_semconv_fallbacks() -> None:
    """net.peer.name/port, db.system and http.status_code stand in for the stable names."""
    client = _one(_pb_span(net__peer__name="db1", net__peer__port="5432", db__system="mysql"))
    assert (client.server_address, client.server_port) == ("db1", 5432)
    assert client.db_system == "mysql"
    server = _one(_pb_span(kind=PbSpan.SPAN_KIND_SERVER, http__status_code=500))
    assert (server.http_status, server.failed) == (500, True)


def test_stable_names_win_over_old_ones() -> None:
    """When both are present, the stable attribute is used, whatever the order."""
    client = _one(
        _pb_span(
            net__peer__name="old",
            server__address="new",
            db__system="old-db",
            db__system__name="new-db",
        )
    )
    assert (client.server_address, client.db_system) == ("new", "new-db")
    server = _one(
        _pb_span(
            kind=PbSpan.SPAN_KIND_SERVER, http__status_code=200, http__response__status_code=404
        )
    )
    assert server.http_status == 404


def test_address_from_http_host_and_url() -> None:
    """Without server.address, the host (and port) come from http.host, else url.full/http.url."""
    from_host = _one(_pb_span(http__host="api:8080"))
    assert (from_host.server_address, from_host.server_port) == ("api", 8080)
    from_url = _one(_pb_span(url__full="https://Search.Example:9200/idx?q=1"))
    assert (from_url.server_address, from_url.server_port) == ("search.example", 9200)
    legacy = _one(_pb_span(http__url="http://legacy/x"))
    assert (legacy.server_address, legacy.server_port) == ("legacy", None)
    assert _one(_pb_span(url__full="::not a url")).server_address is None


def test_failed_rules() -> None:
    """Status ERROR fails any span; HTTP >= 500 fails SERVER spans only; 4xx fails nothing."""
    server = PbSpan.SPAN_KIND_SERVER
    assert _one(_pb_span(error=True)).failed
    assert _one(_pb_span(kind=server, http__response__status_code=500)).failed
    assert not _one(_pb_span(kind=server, http__response__status_code=404)).failed
    assert not _one(_pb_span(http__response__status_code=503)).failed
    assert not _one(_pb_span(kind=server)).failed


def test_bad_ids_are_rejected_not_raised() -> None:
    """Spans with wrong-length or zero ids are counted with a reason; the rest decode."""
    batch = decode_traces(
        _request(
            _pb_span(1),
            _pb_span(2, trace_id=TRACE[:15]),
            _pb_span(3, trace_id=bytes(16)),
            PbSpan(trace_id=TRACE, span_id=bytes(8)),
            PbSpan(trace_id=TRACE, span_id=b"\x01" * 7),
            _pb_span(4),
        )
    )
    assert [s.span_id[-1] for s in batch.spans] == [1, 4]
    assert batch.rejected == 4
    assert batch.reason == "resource_spans[0] span 1: trace_id must be 16 bytes, got 15"


def test_bad_parent_makes_a_root() -> None:
    """An all-zero or wrong-length parent id is treated as no parent."""
    assert _one(_pb_span(parent=bytes(8))).parent_span_id == b""
    assert _one(_pb_span(parent=b"\x01\x02")).parent_span_id == b""
    assert _one(_pb_span(parent=b"\x00" * 7 + b"\x09")).parent_span_id == b"\x00" * 7 + b"\x09"


def test_missing_resource_names() -> None:
    """No service.name gives "unknown_service" (as the SDKs do); no instance id gives ""."""
    span = _one(_pb_span())
    assert (span.service, span.instance) == ("unknown_service", "")


def test_unknown_kind_is_unspecified() -> None:
    """A span kind from a future schema decodes as UNSPECIFIED instead of failing."""
    assert _one(_pb_span(kind=9)).kind == SpanKind.UNSPECIFIED


def test_links_are_kept() -> None:
    """Valid span links become (trace_id, span_id) pairs; malformed links are dropped."""
    span = _pb_span(kind=PbSpan.SPAN_KIND_CONSUMER)
    link = span.links.add()
    link.trace_id, link.span_id = TRACE, b"\x07" * 8
    bad = span.links.add()
    bad.trace_id, bad.span_id = b"\x01", b"\x07" * 8
    assert _one(span).links == ((TRACE, b"\x07" * 8),)


def test_several_resources_keep_their_service() -> None:
    """Each resource's spans carry that resource's service name."""
    req = _request(_pb_span(1), service__name="a")
    rs = req.resource_spans.add()
    rs.resource.attributes.append(_kv("service.name", "b"))
    rs.scope_spans.add().spans.append(_pb_span(2))
    assert [s.service for s in decode_traces(req).spans] == ["a", "b"]


def _sdk_metrics(
    names: dict[str, float], attributes: dict[str, str]
) -> ExportMetricsServiceRequest:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create(attributes))
    meter = provider.get_meter("watchman")
    for name, value in names.items():

        def observe(_: CallbackOptions, v: float = value) -> list[Observation]:
            return [Observation(v)]

        meter.create_observable_gauge(name, [observe])
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    return encode_metrics(data)


def test_heartbeat_with_usage() -> None:
    """A heartbeat carries its resource's CPU, memory, threads, in-flight values and host."""
    req = _sdk_metrics(
        {
            "watchman.heartbeat": 42.5,
            "process.cpu.utilization": 0.25,
            "process.memory.usage": 1_000_000,
            "process.thread.count": 7,
            "watchman.inflight_requests": 3,
            "http.server.active_requests": 99,
        },
        {"service.name": "orders", "service.instance.id": "o-1", "host.name": "node-a"},
    )
    batch = decode_metrics(req)
    (hb,) = batch.heartbeats
    assert isinstance(hb, Heartbeat)
    assert (hb.service, hb.instance, hb.host) == ("orders", "o-1", "node-a")
    assert hb.uptime_s == 42.5
    assert (hb.cpu_utilization, hb.memory_bytes, hb.threads, hb.inflight) == (0.25, 1_000_000, 7, 3)
    assert hb.time_ns > 0
    assert batch.spans == []


def test_heartbeat_without_usage() -> None:
    """A bare heartbeat (int uptime) decodes with the usage fields left as None."""
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(_kv("service.name", "jobs"))
    metric = Metric(name="watchman.heartbeat")
    metric.gauge.data_points.append(NumberDataPoint(time_unix_nano=5, as_int=12))
    rm.scope_metrics.add().metrics.append(metric)
    (hb,) = decode_metrics(req).heartbeats
    assert hb == Heartbeat(service="jobs", instance="", time_ns=5, uptime_s=12.0)


def test_latest_usage_point_wins() -> None:
    """Of several usage points in one request, the newest one is attached."""
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    beat = Metric(name="watchman.heartbeat")
    beat.gauge.data_points.append(NumberDataPoint(time_unix_nano=20, as_double=1.0))
    threads = Metric(name="process.thread.count")
    threads.sum.data_points.extend(
        [NumberDataPoint(time_unix_nano=20, as_int=9), NumberDataPoint(time_unix_nano=10, as_int=4)]
    )
    rm.scope_metrics.add().metrics.extend([beat, threads])
    (hb,) = decode_metrics(req).heartbeats
    assert hb.threads == 9


def test_metrics_without_heartbeat_give_nothing() -> None:
    """Usage metrics without a heartbeat make no records (liveness comes from the heartbeat)."""
    req = _sdk_metrics({"process.cpu.utilization": 0.5}, {"service.name": "x"})
    batch = decode_metrics(req)
    assert (batch.heartbeats, batch.rejected) == ([], 0)


def test_heartbeat_of_wrong_type_is_rejected() -> None:
    """A watchman.heartbeat that is not a gauge is counted as rejected with a reason."""
    req = ExportMetricsServiceRequest()
    metric = Metric(name="watchman.heartbeat")
    metric.histogram.data_points.add(count=1)
    req.resource_metrics.add().scope_metrics.add().metrics.append(metric)
    batch = decode_metrics(req)
    assert (batch.heartbeats, batch.rejected) == ([], 1)
    assert "must be a gauge" in batch.reason


def test_odd_attribute_values_do_not_raise() -> None:
    """Ports and status codes of odd types (inf, NaN, huge strings, bools) decode as None."""
    odd = [
        KeyValue(key="server.port", value=AnyValue(double_value=float("inf"))),
        KeyValue(key="net.peer.port", value=AnyValue(double_value=float("nan"))),
        KeyValue(key="http.response.status_code", value=AnyValue(string_value="9" * 5000)),
        KeyValue(key="http.status_code", value=AnyValue(bool_value=True)),
        KeyValue(key="url.full", value=AnyValue(string_value="http://[::1")),
        KeyValue(key="http.host", value=AnyValue(string_value="h:99999999")),
    ]
    client, server = _pb_span(), _pb_span(kind=PbSpan.SPAN_KIND_SERVER)
    client.attributes.extend(odd)
    server.attributes.extend(odd)
    assert (_one(client).server_port, _one(client).server_address) == (None, "h")
    assert _one(server).http_status is None


def test_random_protobuf_never_raises_past_decode_error() -> None:
    """Mutated request bytes either fail to parse (DecodeError) or decode without raising."""
    import random

    from google.protobuf.message import DecodeError

    base = _request(
        _pb_span(1, peer__service="p", server__port=80, http__status_code="500"),
        _pb_span(2, kind=PbSpan.SPAN_KIND_SERVER, url__full="http://x:1/"),
        service__name="svc",
    ).SerializeToString()
    rng = random.Random(7)
    decoded = 0
    for _ in range(500):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            req = ExportTraceServiceRequest.FromString(bytes(data))
        except DecodeError:
            continue
        batch = decode_traces(req)
        assert len(batch.spans) + batch.rejected == sum(
            len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans
        )
        decoded += 1
    assert decoded > 0


def test_long_attribute_values_are_not_remembered() -> None:
    """The value memo keeps short values only: distinct long ones cannot grow it past its bound."""
    from watchman_collector import decode

    decode._TEXTS.clear()
    spans = [_pb_span(i, peer__service=f"{i:06d}" + "x" * 5000) for i in range(1, 201)]
    spans.append(_pb_span(999, peer__service="payments"))
    records = decode_traces(_request(*spans)).spans
    assert [r.peer_service[:6] for r in records[:200]] == [f"{i:06d}" for i in range(1, 201)]
    assert records[200].peer_service == "payments"
    assert "payments" in decode._TEXTS.values()
    assert max(map(len, decode._TEXTS)) <= decode.MEMO_MAX_BYTES < 5000
