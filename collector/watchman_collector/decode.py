"""The decode stage: OTLP protobuf export requests into the compact records later stages use.

Decode is a pure function of one request. It reads only the fields pair and graph need, looking
up only the attribute keys pair uses for each span's kind (docs/decode.md), so no Python object
per attribute is ever built. A span with
unusable ids (wrong length, all zero) is left out and counted in `Batch.rejected` with the first
reason, for OTLP's `partial_success`; nothing here raises on bad data.

Spans are read through a reduced schema of the trace request (`_LITE`): the same field numbers,
only the fields decode uses, attributes as `map<string, bytes>` (the wire format of a repeated
`KeyValue`) and the status as its encoded bytes. Walking every attribute as a protobuf object
was most of decode's time (see docs/performance.md); fields decode never reads (events, scope,
trace state) are skipped by the parser and not validated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric, NumberDataPoint
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Status
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from watchman_collector.records import Batch, Heartbeat, Span, SpanKind

__all__ = [
    "HEARTBEAT_METRIC",
    "MEMO_MAX_BYTES",
    "UNKNOWN_SERVICE",
    "decode_metrics",
    "decode_trace_bytes",
    "decode_traces",
    "host_of",
    "memoise",
    "resource_heartbeats",
]

UNKNOWN_SERVICE = "unknown_service"
"""The service name of a resource without `service.name`, as the OpenTelemetry SDKs default it."""

HEARTBEAT_METRIC = "watchman.heartbeat"

_STATUS_ERROR = 2  # Status.StatusCode.STATUS_CODE_ERROR
_HTTP_SERVER_ERROR = 500
_SERVER_KIND, _CLIENT_KIND, _PRODUCER_KIND, _CONSUMER_KIND = 2, 3, 4, 5  # Span.SpanKind on the wire
_ERROR_STATUS = b"\x18\x02"  # an encoded Status with only code = ERROR (field 3, varint)
_KINDS = tuple(SpanKind)
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
_MISS: Any = object()  # not in a memo

# -- the reduced trace schema ---------------------------------------------------------------------

# (real message, its fields decode reads). Field numbers and types are copied from the installed
# OTLP descriptors, so the reduced schema cannot drift from the real one.
_LITE_FIELDS: tuple[tuple[Descriptor, tuple[str, ...]], ...] = (
    (ExportTraceServiceRequest.DESCRIPTOR, ("resource_spans",)),
    (ResourceSpans.DESCRIPTOR, ("resource", "scope_spans")),
    (Resource.DESCRIPTOR, ("attributes",)),
    (ScopeSpans.DESCRIPTOR, ("spans",)),
    (
        PbSpan.DESCRIPTOR,
        (
            "trace_id",
            "span_id",
            "parent_span_id",
            "name",
            "kind",
            "start_time_unix_nano",
            "end_time_unix_nano",
            "attributes",
            "links",
            "status",
        ),
    ),
    (PbSpan.Link.DESCRIPTOR, ("trace_id", "span_id")),
)
_LITE_PACKAGE = "watchman_collector.decode_lite"


def _lite_name(descriptor: Descriptor) -> str:
    return str(descriptor.full_name).replace(".", "_")


def _build_lite_request() -> Any:
    """The reduced `ExportTraceServiceRequest` class (see the module docstring)."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="watchman_collector/decode_lite.proto", package=_LITE_PACKAGE, syntax="proto3"
    )
    lite = {d.full_name for d, _ in _LITE_FIELDS}
    for real, names in _LITE_FIELDS:
        message = proto.message_type.add(name=_lite_name(real))
        for name in names:
            field = real.fields_by_name[name]
            out = message.field.add(name=name, number=field.number, type=field.type)
            out.label = (
                descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
                if field.is_repeated
                else descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
            )
            if field.type == FieldDescriptor.TYPE_ENUM:
                # An open proto3 enum is a varint on the wire: int32 reads it unchanged.
                out.type = FieldDescriptor.TYPE_INT32
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                target = field.message_type
                if target.full_name in lite:
                    out.type_name = f".{_LITE_PACKAGE}.{_lite_name(target)}"
                elif target.full_name == KeyValue.DESCRIPTOR.full_name:
                    # `repeated KeyValue` has the wire format of `map<string, bytes>` (key = 1,
                    # value = 2), so the parser builds a C-level map: decode looks the few keys
                    # it wants up instead of walking every attribute as a Python object.
                    entry = message.nested_type.add(name=f"{name.title()}Entry")
                    entry.options.map_entry = True
                    for part, part_type in (
                        ("key", FieldDescriptor.TYPE_STRING),
                        ("value", FieldDescriptor.TYPE_BYTES),
                    ):
                        entry.field.add(
                            name=part,
                            number=KeyValue.DESCRIPTOR.fields_by_name[part].number,
                            type=part_type,
                            label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
                        )
                    out.type_name = f".{_LITE_PACKAGE}.{message.name}.{entry.name}"
                else:
                    # Status stays its encoded bytes: b"" for the usual unset status, and no
                    # Python object per span to read its code.
                    out.type = FieldDescriptor.TYPE_BYTES
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    root = pool.FindMessageTypeByName(
        f"{_LITE_PACKAGE}.{_lite_name(ExportTraceServiceRequest.DESCRIPTOR)}"
    )
    return message_factory.GetMessageClass(root)


_LITE: Any = _build_lite_request()

_STRING_TAG = 0x0A  # AnyValue.string_value: field 1, length-delimited
_INT_TAG = 0x18  # AnyValue.int_value: field 3, varint

# Resource-side usage metrics attached to a heartbeat, and the Heartbeat field each fills.
_USAGE_METRICS = {
    "process.cpu.utilization": "cpu_utilization",
    "process.memory.usage": "memory_bytes",
    "process.thread.count": "threads",
    "watchman.inflight_requests": "inflight",
}
_INT_FIELDS = frozenset({"memory_bytes", "threads", "inflight"})

# Encoded AnyValue → its text / number, for recently read values. A memo of a pure function:
# decode stays a function of its input. The same address, port and status recur in almost every
# request. Cleared when full rather than kept LRU (cheaper per hit). Large requests are decoded
# in worker threads too: each memo step is one dict operation, and a race only refills it early.
# Only values up to `MEMO_MAX_BYTES` are kept, so a sender of long distinct values cannot make
# the memo hold more than `_MEMO_SIZE` × `MEMO_MAX_BYTES` (1 MiB); longer ones are read each time.
_TEXTS: dict[bytes, str | None] = {}
_NUMBERS: dict[bytes, int | None] = {}
_MEMO_SIZE = 4096
MEMO_MAX_BYTES = 256


def memoise(memo: dict[bytes, Any], key: bytes, value: Any) -> None:
    """Remember a value read from the encoded `key` in one of the value memos (decode's, and
    the OTLP/JSON reading's): only keys of up to `MEMO_MAX_BYTES`; a full memo is cleared."""
    if len(key) <= MEMO_MAX_BYTES:
        if len(memo) >= _MEMO_SIZE:
            memo.clear()
        memo[key] = value


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


def _varint_to_end(data: bytes, start: int) -> int | None:
    """The varint filling `data[start:]` as a signed 64-bit int, None unless it fills it exactly."""
    value = shift = 0
    end = len(data) - 1
    for i in range(start, min(end + 1, start + 10)):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if i != end:
                return None
            return value - (1 << 64) if value >= 1 << 63 else value
        shift += 7
    return None


def _plain(value: bytes) -> str | int | AnyValue | None:
    """An encoded AnyValue as a str or int when it is a short string or an integer, laid out as
    every OTLP encoder writes it; else the parsed `AnyValue` (None if it does not parse)."""
    try:
        tag = value[0]
        if tag == _STRING_TAG and value[1] < 0x80 and len(value) == value[1] + 2:
            return value[2:].decode()
        if tag == _INT_TAG:
            number = _varint_to_end(value, 1)
            if number is not None:
                return number
    except (IndexError, UnicodeDecodeError):
        pass
    try:
        parsed: AnyValue = AnyValue.FromString(value)
    except DecodeError:
        return None
    return parsed


def _read_text(value: bytes, *, remember: bool = True) -> str | None:
    """`_text` of an encoded AnyValue (an int is written in decimal; empty is None)."""
    plain = _plain(value)
    text: str | None
    if isinstance(plain, str):
        text = plain or None
    elif isinstance(plain, int):
        text = str(plain)
    elif plain is None:
        text = None
    else:
        text = _text(plain)
    if remember:
        memoise(_TEXTS, value, text)
    return text


def _read_number(value: bytes) -> int | None:
    """`_number` of an encoded AnyValue (numeric strings count; other types are None)."""
    plain = _plain(value)
    number: int | None
    if isinstance(plain, int):
        number = plain
    elif isinstance(plain, str):
        try:
            number = int(plain)
        except ValueError:
            number = None
    elif plain is None:
        number = None
    else:
        number = _number(plain)
    memoise(_NUMBERS, value, number)
    return number


def _string_value(value: bytes | None) -> str:
    """The AnyValue's `string_value` ("" for other types), as resource names are read."""
    if not value:
        return ""
    plain = _plain(value)
    if isinstance(plain, str):
        return plain
    if isinstance(plain, AnyValue) and plain.WhichOneof("value") == "string_value":
        return str(plain.string_value)
    return ""


def host_of(value: str, *, is_url: bool) -> tuple[str | None, int | None]:
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


def _resource_names(attributes: Any) -> tuple[str, str]:
    get = attributes.get
    service = _string_value(get("service.name"))
    return service or UNKNOWN_SERVICE, _string_value(get("service.instance.id"))


def _metric_resource_names(attributes: Iterable[KeyValue]) -> tuple[str, str, str | None]:
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


def _status_code(status: bytes) -> int:
    """`Status.code` of an encoded, non-empty Status (0 when it does not parse)."""
    if status == _ERROR_STATUS:
        return _STATUS_ERROR
    try:
        return int(Status.FromString(status).code)
    except DecodeError:
        return 0


def _address_fallback(get: Any, port: int | None) -> tuple[str | None, int | None]:
    """Server address (and port, if still unknown) from `http.host`, else from the URL."""
    address: str | None = None
    raw = get("http.host")
    value = _read_text(raw) if raw is not None else None
    if value is not None:
        address, host_port = host_of(value, is_url=False)
        if port is None:
            port = host_port
    if address is None:
        # One value per URL: kept out of the memo, which would only churn.
        raw = get("url.full")
        url = _read_text(raw, remember=False) if raw is not None else None
        if url is None:
            raw = get("http.url")
            url = _read_text(raw, remember=False) if raw is not None else None
        if url is not None:
            address, host_port = host_of(url, is_url=True)
            if port is None:
                port = host_port
    return address, port


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
    return decode_trace_bytes(req.SerializeToString())


def decode_trace_bytes(data: bytes) -> Batch:
    """`decode_traces` of an encoded `ExportTraceServiceRequest`, without parsing it fully first.

    Raises `DecodeError` when the bytes are not a trace request. Bytes inside fields decode does
    not read are not validated; a malformed attribute decode reads counts as absent.
    """
    return _decode(_LITE.FromString(data))


def _decode(req: Any) -> Batch:  # one flat loop on the hot path
    spans: list[Span] = []
    rejected = 0
    reason = ""
    append = spans.append
    kinds = _KINDS
    text = _TEXTS.get
    number = _NUMBERS.get
    for r_index, rs in enumerate(req.resource_spans):
        service, instance = _resource_names(rs.resource.attributes)
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
                if not 0 <= kind_value < 6:  # SpanKind's wire values
                    kind_value = 0
                status = span.status
                failed = bool(status) and _status_code(status) == _STATUS_ERROR

                # Only the attributes pair uses for this kind are read: each map lookup costs
                # about as much as a Span (see docs/performance.md). A caller names its callee
                # (peer, address, database, messaging system); a SERVER span needs its HTTP
                # status; any span needs error.type when it failed. Values are read from their
                # encoded bytes once and then found in the memo.
                peer_service = server_address = server_port = db_system = None
                messaging_system = http_status = error_type = None
                links: tuple[tuple[bytes, bytes], ...] = ()
                if kind_value in (_CLIENT_KIND, _PRODUCER_KIND):
                    attributes = span.attributes
                    if attributes:
                        get = attributes.get
                        raw = get("peer.service")
                        if raw is not None:
                            peer_service = text(raw, _MISS)
                            if peer_service is _MISS:
                                peer_service = _read_text(raw)
                        # The stable name wins; an older one is read when the stable one is
                        # absent or unusable (empty, not a number), as docs/decode.md says.
                        raw = get("server.port")
                        if raw is not None:
                            server_port = number(raw, _MISS)
                            if server_port is _MISS:
                                server_port = _read_number(raw)
                        if server_port is None:
                            raw = get("net.peer.port")
                            if raw is not None:
                                server_port = number(raw, _MISS)
                                if server_port is _MISS:
                                    server_port = _read_number(raw)
                        raw = get("server.address")
                        if raw is not None:
                            server_address = text(raw, _MISS)
                            if server_address is _MISS:
                                server_address = _read_text(raw)
                        if server_address is None:
                            raw = get("net.peer.name")
                            if raw is not None:
                                server_address = text(raw, _MISS)
                                if server_address is _MISS:
                                    server_address = _read_text(raw)
                            if server_address is None:
                                server_address, server_port = _address_fallback(get, server_port)
                        if kind_value == _CLIENT_KIND:
                            raw = get("db.system.name")
                            if raw is not None:
                                db_system = text(raw, _MISS)
                                if db_system is _MISS:
                                    db_system = _read_text(raw)
                            if db_system is None:
                                raw = get("db.system")
                                if raw is not None:
                                    db_system = text(raw, _MISS)
                                    if db_system is _MISS:
                                        db_system = _read_text(raw)
                        else:
                            messaging_system = _messaging_system(get)
                        # A caller's error.type is read even when it did not fail: a failed
                        # callee without its own error.type reports the caller's.
                        raw = get("error.type")
                        if raw is not None:
                            error_type = text(raw, _MISS)
                            if error_type is _MISS:
                                error_type = _read_text(raw)
                else:
                    if kind_value == _SERVER_KIND:
                        attributes = span.attributes
                        if attributes:
                            get = attributes.get
                            raw = get("http.response.status_code")
                            if raw is not None:
                                http_status = number(raw, _MISS)
                                if http_status is _MISS:
                                    http_status = _read_number(raw)
                            if http_status is None:
                                raw = get("http.status_code")
                                if raw is not None:
                                    http_status = number(raw, _MISS)
                                    if http_status is _MISS:
                                        http_status = _read_number(raw)
                            if http_status is not None and http_status >= _HTTP_SERVER_ERROR:
                                failed = True
                    elif kind_value == _CONSUMER_KIND:
                        attributes = span.attributes
                        if attributes:
                            messaging_system = _messaging_system(attributes.get)
                        if span.links:
                            links = tuple(
                                (link.trace_id, link.span_id)
                                for link in span.links
                                if len(link.trace_id) == 16 and len(link.span_id) == 8
                            )
                    if failed:
                        raw = span.attributes.get("error.type")
                        if raw is not None:
                            error_type = text(raw, _MISS)
                            if error_type is _MISS:
                                error_type = _read_text(raw)
                append(
                    Span(
                        trace_id,
                        span_id,
                        parent,
                        service,
                        instance,
                        kinds[kind_value],
                        span.start_time_unix_nano,
                        span.end_time_unix_nano,
                        failed,
                        span.name,
                        peer_service,
                        server_address,
                        server_port,
                        db_system,
                        messaging_system,
                        http_status,
                        error_type,
                        links,
                    )
                )
    return Batch(spans=spans, rejected=rejected, reason=reason)


def _messaging_system(get: Any) -> str | None:
    raw = get("messaging.system")
    if raw is None:
        return None
    found = _TEXTS.get(raw, _MISS)
    return _read_text(raw) if found is _MISS else found


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


_P = TypeVar("_P")


def _point_nanos(point: NumberDataPoint) -> int:
    return int(point.time_unix_nano)


def resource_heartbeats(  # noqa: PLR0917  # shared by the protobuf and JSON decoders
    out: list[Heartbeat],
    beats: Iterable[_P],
    uptime_of: Callable[[_P], float | None],
    time_of: Callable[[_P], int],
    names: tuple[str, str, str | None],
    usage: dict[str, float],
) -> int:
    """Append one `Heartbeat` per heartbeat point of one resource to `out`.

    `uptime_of` / `time_of` read a point (protobuf or JSON); `names` is the resource's (service,
    instance, host); `usage` its latest usage values by field. Returns how many points had no
    value (rejected, not appended; their time is not read).
    """
    service, instance, host = names
    cpu = usage.get("cpu_utilization")
    ints = {f: int(v) for f, v in usage.items() if f in _INT_FIELDS}
    missing = 0
    for point in beats:
        uptime = uptime_of(point)
        if uptime is None:
            missing += 1
            continue
        out.append(
            Heartbeat(
                service=service,
                instance=instance,
                time_ns=time_of(point),
                uptime_s=uptime,
                cpu_utilization=cpu,
                memory_bytes=ints.get("memory_bytes"),
                threads=ints.get("threads"),
                inflight=ints.get("inflight"),
                host=host,
            )
        )
    return missing


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
        missing = resource_heartbeats(
            heartbeats,
            beats,
            _point_value,
            _point_nanos,
            _metric_resource_names(rm.resource.attributes),
            usage,
        )
        if missing:
            rejected += missing
            if not reason:
                reason = f"resource_metrics[{r_index}]: {HEARTBEAT_METRIC} point has no value"
    return Batch(heartbeats=heartbeats, rejected=rejected, reason=reason)
