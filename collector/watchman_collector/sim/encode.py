"""Simulated spans and heartbeats → OTLP protobuf export requests, shaped as the Python SDK's.

One request per export of one process: a single `ResourceSpans` (the process's resource), one
`ScopeSpans` per instrumentation library, span `flags` telling whether the parent was remote (as
the SDK's OTLP encoder sets them), exceptions as `exception` events.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Gauge,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from watchman_otel._version import __version__

__all__ = [
    "HEARTBEAT_SCOPE",
    "AttrValue",
    "SimSpan",
    "encode_heartbeat",
    "encode_resource",
    "encode_spans",
    "key_values",
]

AttrValue = str | int | float | bool

# The SDK's OTLP encoder always sets HAS_IS_REMOTE and adds IS_REMOTE for a remote parent.
_FLAG_HAS_IS_REMOTE = 0x100
_FLAG_IS_REMOTE = 0x200
_INSTRUMENTATION_VERSION = "0.66b1"
HEARTBEAT_SCOPE = ("watchman_otel.heartbeat", __version__)
# As the SDK's heartbeat declares them (docs/heartbeat.md): name → (unit, description)
_HEARTBEAT_METRICS = {
    "watchman.heartbeat": ("s", "Seconds since the process started; one series per instance."),
    "process.cpu.utilization": (
        "1",
        "CPU time used over wall time since the previous heartbeat, as a share of one core.",
    ),
    "process.memory.usage": ("By", "Resident set size of the process."),
    "process.thread.count": ("{thread}", "Threads of the process."),
    "watchman.inflight_requests": ("{request}", "Inbound requests being served right now."),
}


class SimSpan:
    """One finished span, before encoding. `scope` names the instrumentation library."""

    __slots__ = (
        "attrs",
        "end_ns",
        "error",
        "events",
        "kind",
        "links",
        "name",
        "parent_id",
        "remote_parent",
        "scope",
        "span_id",
        "start_ns",
        "status_message",
        "trace_id",
    )

    def __init__(  # noqa: PLR0917 - built positionally on the hot path, once per span
        self,
        trace_id: bytes,
        span_id: bytes,
        parent_id: bytes,
        kind: int,
        name: str,
        start_ns: int,
        end_ns: int,
        attrs: list[tuple[str, AttrValue]],
        scope: str,
        *,
        remote_parent: bool = False,
        error: bool = False,
        status_message: str = "",
        events: Sequence[tuple[str, int, list[tuple[str, AttrValue]]]] = (),
        links: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.kind = kind
        self.name = name
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.attrs = attrs
        self.scope = scope
        self.remote_parent = remote_parent
        self.error = error
        self.status_message = status_message
        self.events = events
        self.links = links


def _any_value(value: AttrValue) -> AnyValue:
    # bool before int: bool is an int subclass
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=value)


def key_values(attrs: Iterable[tuple[str, AttrValue]]) -> list[KeyValue]:
    """OTLP attributes from (key, value) pairs, in order."""
    return [KeyValue(key=k, value=_any_value(v)) for k, v in attrs]


def _span(span: SimSpan) -> Span:
    flags = _FLAG_HAS_IS_REMOTE | (_FLAG_IS_REMOTE if span.remote_parent else 0)
    msg = Span(
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_span_id=span.parent_id,
        flags=flags,
        name=span.name,
        kind=span.kind,  # type: ignore[arg-type]
        start_time_unix_nano=span.start_ns,
        end_time_unix_nano=span.end_ns,
        attributes=key_values(span.attrs),
    )
    if span.error:
        msg.status.code = Status.STATUS_CODE_ERROR
        msg.status.message = span.status_message
    for name, time_ns, attrs in span.events:
        msg.events.add(name=name, time_unix_nano=time_ns, attributes=key_values(attrs))
    for trace_id, span_id in span.links:
        msg.links.add(
            trace_id=trace_id, span_id=span_id, flags=_FLAG_HAS_IS_REMOTE | _FLAG_IS_REMOTE
        )
    return msg


def encode_spans(resource: Resource, spans: Sequence[SimSpan]) -> ExportTraceServiceRequest:
    """One process's export: its resource, its spans grouped by scope in first-seen order."""
    by_scope: dict[str, list[Span]] = {}
    for span in spans:
        by_scope.setdefault(span.scope, []).append(_span(span))
    resource_spans = ResourceSpans(
        resource=resource,
        schema_url="https://opentelemetry.io/schemas/1.21.0",
        scope_spans=[
            ScopeSpans(
                scope=InstrumentationScope(name=scope, version=_INSTRUMENTATION_VERSION),
                spans=encoded,
            )
            for scope, encoded in by_scope.items()
        ],
    )
    return ExportTraceServiceRequest(resource_spans=[resource_spans])


def _gauge(name: str, unit: str, description: str, time_ns: int, value: float | int) -> Metric:
    point = NumberDataPoint(time_unix_nano=time_ns)
    if isinstance(value, int):
        point.as_int = value
    else:
        point.as_double = value
    return Metric(name=name, unit=unit, description=description, gauge=Gauge(data_points=[point]))


def encode_heartbeat(
    resource: Resource,
    time_ns: int,
    *,
    uptime_s: float,
    cpu_utilization: float,
    memory_bytes: int,
    threads: int,
    inflight: int,
) -> ExportMetricsServiceRequest:
    """One heartbeat export: `watchman.heartbeat` (uptime) and the usage gauges beside it."""
    values = {
        "watchman.heartbeat": uptime_s,
        "process.cpu.utilization": cpu_utilization,
        "process.memory.usage": memory_bytes,
        "process.thread.count": threads,
        "watchman.inflight_requests": inflight,
    }
    metrics = [
        _gauge(name, unit, description, time_ns, values[name])
        for name, (unit, description) in _HEARTBEAT_METRICS.items()
    ]
    name, version = HEARTBEAT_SCOPE
    resource_metrics = ResourceMetrics(
        resource=resource,
        scope_metrics=[
            ScopeMetrics(scope=InstrumentationScope(name=name, version=version), metrics=metrics)
        ],
    )
    return ExportMetricsServiceRequest(resource_metrics=[resource_metrics])


def encode_resource(attrs: Iterable[tuple[str, AttrValue]]) -> Resource:
    """An OTLP resource from (key, value) pairs."""
    return Resource(attributes=key_values(attrs))
