"""The decode stage: OTLP protobuf export requests into the compact records later stages use.

Decode is a pure function of one request. It reads only the fields pair and graph need, walking
each span's attributes once and comparing keys against a small set, so no per-span dict of all
attributes is ever built. A span with unusable ids (wrong length, all zero) is left out and counted
in `Batch.rejected` with the first reason, for OTLP's `partial_success`; nothing here raises on
bad data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from urllib.parse import urlsplit

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric, NumberDataPoint

from watchman_collector.records import Batch, Heartbeat, Span, SpanKind

__all__ = [
    "HEARTBEAT_METRIC",
    "UNKNOWN_SERVICE",
    "decode_metrics",
    "decode_traces",
]

UNKNOWN_SERVICE = "unknown_service"
"""The service name of a resource without `service.name`, as the OpenTelemetry SDKs default it."""

HEARTBEAT_METRIC = "watchman.heartbeat"

_STATUS_ERROR = 2  # Status.StatusCode.STATUS_CODE_ERROR
_KINDS = tuple(SpanKind)
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)

# Span attributes decode reads; everything else is skipped with one set lookup.
_SPAN_KEYS = frozenset(
    {
        "peer.service",
        "server.address",
        "net.peer.name",
        "http.host",
        "url.full",
        "http.url",
        "server.port",
        "net.peer.port",
        "db.system.name",
        "db.system",
        "messaging.system",
        "http.response.status_code",
        "http.status_code",
        "error.type",
    }
)

# Resource-side usage metrics attached to a heartbeat, and the Heartbeat field each fills.
_USAGE_METRICS = {
    "process.cpu.utilization": "cpu_utilization",
    "process.memory.usage": "memory_bytes",
    "process.thread.count": "threads",
    "watchman.inflight_requests": "inflight",
}
_INT_FIELDS = frozenset({"memory_bytes", "threads", "inflight"})


def _text(value: AnyValue) -> str | None:
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value or None
    if which == "int_value":
        return str(value.int_value)
    return None


def _number(value: AnyValue) -> int | None:
    which = value.WhichOneof("value")
    if which == "int_value":
        return value.int_value
    if which == "string_value":
        try:
            return int(value.string_value)
        except ValueError:
            return None
    if which == "double_value":
        number = value.double_value
        return int(number) if math.isfinite(number) else None
    return None


def _host_of(value: str, *, is_url: bool) -> tuple[str | None, int | None]:
    """Host and port of `http.host` ("host[:port]") or of a URL."""
    try:
        parts = urlsplit(value if is_url else "//" + value)
    except ValueError:
        return None, None
    try:
        port = parts.port
    except ValueError:  # out of range or not a number: keep the host anyway
        port = None
    return parts.hostname or None, port


def _resource_names(attributes: Iterable[KeyValue]) -> tuple[str, str, str | None]:
    service = UNKNOWN_SERVICE
    instance = ""
    host: str | None = None
    for kv in attributes:
        key = kv.key
        if key == "service.name":
            service = kv.value.string_value or UNKNOWN_SERVICE
        elif key == "service.instance.id":
            instance = kv.value.string_value
        elif key == "host.name":
            host = kv.value.string_value or None
    return service, instance, host


def _id_problem(trace_id: bytes, span_id: bytes) -> str | None:
    if len(trace_id) != 16:
        return f"trace_id must be 16 bytes, got {len(trace_id)}"
    if trace_id == _ZERO_TRACE:
        return "trace_id is all zero"
    if len(span_id) != 8:
        return f"span_id must be 8 bytes, got {len(span_id)}"
    if span_id == _ZERO_SPAN:
        return "span_id is all zero"
    return None


def decode_traces(req: ExportTraceServiceRequest) -> Batch:
    """The request's spans as `records.Span`s; spans with bad ids are counted in `rejected`."""
    spans: list[Span] = []
    rejected = 0
    reason = ""
    append = spans.append
    wanted = _SPAN_KEYS
    kinds = _KINDS
    for r_index, rs in enumerate(req.resource_spans):
        service, instance, _ = _resource_names(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s_index, span in enumerate(ss.spans):
                trace_id = span.trace_id
                span_id = span.span_id
                if (
                    len(trace_id) != 16
                    or len(span_id) != 8
                    or trace_id == _ZERO_TRACE
                    or span_id == _ZERO_SPAN
                ):
                    rejected += 1
                    if not reason:
                        problem = _id_problem(trace_id, span_id)
                        reason = f"resource_spans[{r_index}] span {s_index}: {problem}"
                    continue
                parent = span.parent_span_id
                if parent and (len(parent) != 8 or parent == _ZERO_SPAN):
                    # An unusable parent cannot be paired with; the span still counts as a root.
                    parent = b""
                kind_value = span.kind
                kind = kinds[kind_value] if 0 <= kind_value < 6 else SpanKind.UNSPECIFIED

                peer_service = server_address = net_peer_name = http_host = url = None
                server_port = net_peer_port = None
                db_system_name = db_system = messaging_system = error_type = None
                http_status = http_status_old = None
                for kv in span.attributes:
                    key = kv.key
                    if key not in wanted:
                        continue
                    value = kv.value
                    # `x.string_value or _text(x)`: the usual type is read directly; the helper
                    # only runs for other types (and returns None for an empty value).
                    if key == "peer.service":
                        peer_service = value.string_value or _text(value)
                    elif key == "server.address":
                        server_address = value.string_value or _text(value)
                    elif key == "net.peer.name":
                        net_peer_name = value.string_value or _text(value)
                    elif key == "http.host":
                        http_host = value.string_value or _text(value)
                    elif key in ("url.full", "http.url"):
                        if url is None or key == "url.full":
                            url = value.string_value or _text(value)
                    elif key == "server.port":
                        server_port = value.int_value or _number(value)
                    elif key == "net.peer.port":
                        net_peer_port = value.int_value or _number(value)
                    elif key == "db.system.name":
                        db_system_name = value.string_value or _text(value)
                    elif key == "db.system":
                        db_system = value.string_value or _text(value)
                    elif key == "messaging.system":
                        messaging_system = value.string_value or _text(value)
                    elif key == "http.response.status_code":
                        http_status = value.int_value or _number(value)
                    elif key == "http.status_code":
                        http_status_old = value.int_value or _number(value)
                    else:  # error.type
                        error_type = value.string_value or _text(value)

                if server_port is None:
                    server_port = net_peer_port
                if server_address is None:
                    server_address = net_peer_name
                if server_address is None and http_host is not None:
                    server_address, port = _host_of(http_host, is_url=False)
                    if server_port is None:
                        server_port = port
                if server_address is None and url is not None:
                    server_address, port = _host_of(url, is_url=True)
                    if server_port is None:
                        server_port = port
                if http_status is None:
                    http_status = http_status_old
                failed = span.status.code == _STATUS_ERROR or (
                    kind == SpanKind.SERVER and http_status is not None and http_status >= 500
                )
                links: tuple[tuple[bytes, bytes], ...] = ()
                if span.links:
                    links = tuple(
                        (link.trace_id, link.span_id)
                        for link in span.links
                        if len(link.trace_id) == 16 and len(link.span_id) == 8
                    )
                append(
                    Span(
                        trace_id,
                        span_id,
                        parent,
                        service,
                        instance,
                        kind,
                        span.start_time_unix_nano,
                        span.end_time_unix_nano,
                        failed,
                        span.name,
                        peer_service,
                        server_address,
                        server_port,
                        db_system_name if db_system_name is not None else db_system,
                        messaging_system,
                        http_status,
                        error_type,
                        links,
                    )
                )
    return Batch(spans=spans, rejected=rejected, reason=reason)


def _point_value(point: NumberDataPoint) -> float | None:
    which = point.WhichOneof("value")
    if which == "as_double":
        return point.as_double
    if which == "as_int":
        return float(point.as_int)
    return None


def _latest(metric: Metric) -> NumberDataPoint | None:
    """The newest number data point of a gauge or sum, or None for other metric types."""
    which = metric.WhichOneof("data")
    if which == "gauge":
        points = metric.gauge.data_points
    elif which == "sum":
        points = metric.sum.data_points
    else:
        return None
    best: NumberDataPoint | None = None
    for point in points:
        if best is None or point.time_unix_nano >= best.time_unix_nano:
            best = point
    return best


def decode_metrics(req: ExportMetricsServiceRequest) -> Batch:
    """One `Heartbeat` per `watchman.heartbeat` data point, with its resource's latest usage."""
    heartbeats: list[Heartbeat] = []
    rejected = 0
    reason = ""
    for r_index, rm in enumerate(req.resource_metrics):
        beats: list[NumberDataPoint] = []
        usage: dict[str, float] = {}
        usage_time: dict[str, int] = {}
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                name = metric.name
                if name == HEARTBEAT_METRIC:
                    which = metric.WhichOneof("data")
                    if which == "gauge":
                        beats.extend(metric.gauge.data_points)
                    elif which == "sum":
                        beats.extend(metric.sum.data_points)
                    else:
                        rejected += 1
                        if not reason:
                            reason = (
                                f"resource_metrics[{r_index}]: {HEARTBEAT_METRIC} must be a "
                                f"gauge, got {which or 'no data'}"
                            )
                    continue
                field = _USAGE_METRICS.get(name)
                if field is None:
                    continue
                point = _latest(metric)
                if point is None:
                    continue
                value = _point_value(point)
                if value is None:
                    continue
                if field not in usage_time or point.time_unix_nano >= usage_time[field]:
                    usage[field] = value
                    usage_time[field] = point.time_unix_nano
        if not beats:
            continue
        service, instance, host = _resource_names(rm.resource.attributes)
        cpu = usage.get("cpu_utilization")
        ints = {f: int(v) for f, v in usage.items() if f in _INT_FIELDS}
        for point in beats:
            uptime = _point_value(point)
            if uptime is None:
                rejected += 1
                if not reason:
                    reason = f"resource_metrics[{r_index}]: {HEARTBEAT_METRIC} point has no value"
                continue
            heartbeats.append(
                Heartbeat(
                    service=service,
                    instance=instance,
                    time_ns=point.time_unix_nano,
                    uptime_s=uptime,
                    cpu_utilization=cpu,
                    memory_bytes=ints.get("memory_bytes"),
                    threads=ints.get("threads"),
                    inflight=ints.get("inflight"),
                    host=host,
                )
            )
    return Batch(heartbeats=heartbeats, rejected=rejected, reason=reason)
