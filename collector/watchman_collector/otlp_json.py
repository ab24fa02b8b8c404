"""OTLP/JSON to and from protobuf export requests, with the OTLP spec's deviations from proto3 JSON.

The OTLP spec encodes `traceId`, `spanId` and `parentSpanId` as hex strings, not as the base64 that
the protobuf JSON mapping (and so `json_format.Parse`) uses for `bytes`; everything else follows the
mapping: lowerCamelCase keys (the proto field names are accepted too), enums as integers (names are
accepted too), 64-bit integers as decimal strings or numbers, unknown fields ignored. This module
walks the few places ids live, turns hex into what `json_format` expects, and raises
`OTLPJSONError` with the path of the first bad value, e.g.
``resourceSpans[0].scopeSpans[0].spans[3].traceId: expected 32 hex characters, got 30``.

Spans are most of a trace request and `json_format` is pure Python, so plain spans (camelCase keys,
integer enums, scalar attribute values) are built from keyword arguments instead; any other span
goes through `json_format`, which gives the same message, only slower.

`decode_trace_json` and `decode_metrics_json` go from OTLP/JSON straight to decode's records
without any protobuf message (replay and the OTLP/HTTP receiver's JSON path use them), giving
the records the `parse_*` → `decode_*` path gives and validating only what decode reads.

`dump_request` writes one line in the Collector file exporter's format, which `parse_*` reads back
to an equal message.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message
from msgspec import UNSET, Raw, UnsetType
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from watchman_collector.decode import (
    HEARTBEAT_METRIC,
    UNKNOWN_SERVICE,
    decode_metrics,
    decode_trace_bytes,
    decode_traces,
    host_of,
    memoise,
    resource_heartbeats,
)
from watchman_collector.otlp_json_typed import (
    JSONResource,
    JSONSpan,
    JSONTraceRequest,
    load_trace_request,
)
from watchman_collector.records import Batch, Heartbeat, Span, SpanKind

__all__ = [
    "OTLPJSONError",
    "Signal",
    "decode_metrics_json",
    "decode_trace_json",
    "detect_signal",
    "dump_request",
    "parse_logs_request",
    "parse_metrics_request",
    "parse_trace_request",
]

Signal = Literal["traces", "metrics", "logs"]

_M = TypeVar("_M", bound=Message)

# (camelCase, snake_case) of each key on the way to an id; both spellings are valid OTLP/JSON.
_RESOURCE_SPANS = ("resourceSpans", "resource_spans")
_SCOPE_SPANS = ("scopeSpans", "scope_spans")
_RESOURCE_METRICS = ("resourceMetrics", "resource_metrics")
_SCOPE_METRICS = ("scopeMetrics", "scope_metrics")
_RESOURCE_LOGS = ("resourceLogs", "resource_logs")
_SCOPE_LOGS = ("scopeLogs", "scope_logs")
_TRACE_ID = ("traceId", "trace_id", 16)
_SPAN_ID = ("spanId", "span_id", 8)
_PARENT_SPAN_ID = ("parentSpanId", "parent_span_id", 8)
_DATA_POINTS = ("dataPoints", "data_points")
_LOG_RECORDS = ("logRecords", "log_records")
# Metric kinds whose data points may carry exemplars (with trace and span ids).
_METRIC_DATA = (
    "gauge",
    "sum",
    "histogram",
    "exponentialHistogram",
    "exponential_histogram",
    "summary",
)

_TOP_LEVEL: dict[str, Signal] = {
    "resourceSpans": "traces",
    "resource_spans": "traces",
    "resourceMetrics": "metrics",
    "resource_metrics": "metrics",
    "resourceLogs": "logs",
    "resource_logs": "logs",
}

# The JSON names of id fields, for dump_request's base64 → hex pass.
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId"})


class OTLPJSONError(ValueError):
    """The input is not a valid OTLP/JSON export request; the message says where and why."""


# -- parsing --------------------------------------------------------------------------------------


def _load(data: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(data, Mapping):
        # The walk below rewrites ids in place; never touch the caller's object.
        obj: Any = json.loads(json.dumps(data))
    else:
        try:
            obj = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise OTLPJSONError(f"invalid JSON: {exc}") from None
        except RecursionError:
            raise OTLPJSONError("invalid JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise OTLPJSONError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _get(obj: dict[str, Any], keys: tuple[str, str]) -> tuple[str, Any]:
    """The value under the camelCase or snake_case key, and the key that held it."""
    camel, snake = keys
    if camel in obj:
        return camel, obj[camel]
    if snake in obj:
        return snake, obj[snake]
    return camel, None


def _items(obj: dict[str, Any], keys: tuple[str, str], path: str) -> list[tuple[str, Any]]:
    """(path, element) of a repeated message field; absent or null is an empty list."""
    key, value = _get(obj, keys)
    if value is None:
        return []
    if not isinstance(value, list):
        raise OTLPJSONError(f"{path}{key}: expected a list, got {type(value).__name__}")
    out = []
    for i, item in enumerate(value):
        where = f"{path}{key}[{i}]"
        if not isinstance(item, dict):
            raise OTLPJSONError(f"{where}: expected an object, got {type(item).__name__}")
        out.append((where + ".", item))
    return out


def _fix_id(obj: dict[str, Any], spec: tuple[str, str, int], path: str) -> None:
    """Rewrite one hex id as the base64 `json_format` expects; "" and absent stay empty."""
    camel, snake, size = spec
    key = camel if camel in obj else snake if snake in obj else None
    if key is None:
        return
    value = obj[key]
    if value is None or value == "":
        del obj[key]
        return
    if not isinstance(value, str):
        raise OTLPJSONError(f"{path}{key}: expected a hex string, got {type(value).__name__}")
    if len(value) != 2 * size:
        raise OTLPJSONError(f"{path}{key}: expected {2 * size} hex characters, got {len(value)}")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise OTLPJSONError(f"{path}{key}: not a hex string: {value[:64]!r}") from None
    del obj[key]
    obj[camel] = base64.b64encode(raw).decode("ascii")


def _fix_metric_ids(obj: dict[str, Any]) -> None:
    for rpath, rm in _items(obj, _RESOURCE_METRICS, ""):
        for spath, sm in _items(rm, _SCOPE_METRICS, rpath):
            for mpath, metric in _items(sm, ("metrics", "metrics"), spath):
                for kind in _METRIC_DATA:
                    data = metric.get(kind)
                    if not isinstance(data, dict):
                        continue
                    for dpath, point in _items(data, _DATA_POINTS, f"{mpath}{kind}."):
                        for epath, ex in _items(point, ("exemplars", "exemplars"), dpath):
                            _fix_id(ex, _TRACE_ID, epath)
                            _fix_id(ex, _SPAN_ID, epath)


def _fix_log_ids(obj: dict[str, Any]) -> None:
    for rpath, rl in _items(obj, _RESOURCE_LOGS, ""):
        for spath, sl in _items(rl, _SCOPE_LOGS, rpath):
            for path, record in _items(sl, _LOG_RECORDS, spath):
                _fix_id(record, _TRACE_ID, path)
                _fix_id(record, _SPAN_ID, path)


def _parse(
    data: bytes | str | Mapping[str, Any],
    message: _M,
    fix_ids: Callable[[dict[str, Any]], None],
) -> _M:
    obj = _load(data)
    fix_ids(obj)
    _parse_dict(obj, message, "")
    return message


def _parse_dict(obj: dict[str, Any], message: Message, where: str) -> None:
    """`json_format.ParseDict`, with every way it can fail on bad input as `OTLPJSONError`."""
    try:
        json_format.ParseDict(obj, message, ignore_unknown_fields=True)
    except RecursionError:
        raise OTLPJSONError(f"{where}nested too deeply") from None
    # ParseError for most bad values, but also OverflowError (a huge integer as a double),
    # ValueError and TypeError from the converters it calls.
    except (json_format.ParseError, OverflowError, ValueError, TypeError) as exc:
        raise OTLPJSONError(f"{where}{exc}") from None


def parse_trace_request(data: bytes | str | Mapping[str, Any]) -> ExportTraceServiceRequest:
    """Parse an OTLP/JSON `ExportTraceServiceRequest` (hex ids); raises `OTLPJSONError`."""
    obj = _load(data)
    # Spans are most of a request and `json_format` is pure Python: plain spans are built from
    # keyword arguments instead, anything unusual goes through `json_format` (the same result).
    held: list[tuple[int, int, list[dict[str, Any] | tuple[str, dict[str, Any]]]]] = []
    for r, (rpath, rs) in enumerate(_items(obj, _RESOURCE_SPANS, "")):
        for i, (spath, ss) in enumerate(_items(rs, _SCOPE_SPANS, rpath)):
            spans: list[dict[str, Any] | tuple[str, dict[str, Any]]] = []
            for path, span in _items(ss, ("spans", "spans"), spath):
                kwargs = _span_kwargs(span, path)
                spans.append(kwargs if kwargs is not None else (path, span))
            ss.pop("spans", None)
            if spans:
                held.append((r, i, spans))
    message = ExportTraceServiceRequest()
    _parse_dict(obj, message, "")
    for r, i, spans in held:
        container = message.resource_spans[r].scope_spans[i].spans
        for item in spans:
            if isinstance(item, dict):
                container.add(**item)
            else:
                _parse_span_slowly(item[1], item[0], container.add())
    return message


_SPAN_FAST_KEYS = frozenset(
    {
        "traceId",
        "spanId",
        "parentSpanId",
        "traceState",
        "name",
        "kind",
        "startTimeUnixNano",
        "endTimeUnixNano",
        "attributes",
        "droppedAttributesCount",
        "droppedEventsCount",
        "droppedLinksCount",
        "status",
        "flags",
    }
)
_U32 = 2**32
_U64 = 2**64
_I64 = 2**63
_F53 = 2**53  # integers a double holds exactly
_SIMPLE_VALUES = frozenset({"stringValue", "intValue", "doubleValue", "boolValue"})


def _uint(value: Any, limit: int) -> int | None:
    """A non-negative integer below `limit` from a JSON number or decimal string, else None."""
    if type(value) is int:
        return value if 0 <= value < limit else None
    if type(value) is str and value.isascii() and value.isdigit():
        number = int(value)
        return number if number < limit else None
    return None


def _simple_attributes(attributes: Any) -> list[dict[str, Any]] | None:
    """Attributes with scalar values as protobuf keyword dicts; None for anything else."""
    if type(attributes) is not list:
        return None
    out: list[dict[str, Any]] = []
    append = out.append
    for kv in attributes:
        if type(kv) is not dict or len(kv) != 2:
            return None
        key = kv.get("key")
        value = kv.get("value")
        if type(key) is not str or type(value) is not dict or len(value) != 1:
            return None
        for kind, v in value.items():  # noqa: B007 - the one item
            pass
        if kind == "stringValue" and type(v) is str:
            append({"key": key, "value": {"string_value": v}})
        elif kind == "intValue":
            if type(v) is str:
                body = v[1:] if v[:1] == "-" else v
                if not (body.isascii() and body.isdigit()):
                    return None
                v = int(v)
            if type(v) is not int or not -_I64 <= v < _I64:
                return None
            append({"key": key, "value": {"int_value": v}})
        elif kind == "doubleValue" and (
            (type(v) is float and math.isfinite(v)) or (type(v) is int and -_F53 <= v <= _F53)
        ):
            # json_format refuses bare NaN/Infinity and may not fit huge integers: its path decides.
            append({"key": key, "value": {"double_value": float(v)}})
        elif kind == "boolValue" and type(v) is bool:
            append({"key": key, "value": {"bool_value": v}})
        else:
            return None
    return out


def _hex_bytes(span: dict[str, Any], spec: tuple[str, str, int], path: str) -> bytes:
    """The raw bytes of a hex id (validated as `_fix_id` does); b"" when absent or empty."""
    camel, _, size = spec
    value = span.get(camel)
    if value is None or value == "":
        return b""
    if not isinstance(value, str):
        raise OTLPJSONError(f"{path}{camel}: expected a hex string, got {type(value).__name__}")
    if len(value) != 2 * size:
        raise OTLPJSONError(f"{path}{camel}: expected {2 * size} hex characters, got {len(value)}")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise OTLPJSONError(f"{path}{camel}: not a hex string: {value[:64]!r}") from None


def _span_kwargs(span: dict[str, Any], path: str) -> dict[str, Any] | None:
    """Keyword arguments for a plain span (camelCase, int enums, scalar attributes), else None."""
    if not span.keys() <= _SPAN_FAST_KEYS:
        return None
    kwargs: dict[str, Any] = {
        "trace_id": _hex_bytes(span, _TRACE_ID, path),
        "span_id": _hex_bytes(span, _SPAN_ID, path),
        "parent_span_id": _hex_bytes(span, _PARENT_SPAN_ID, path),
    }
    for key, value in span.items():
        if key in ("traceId", "spanId", "parentSpanId") or value is None:
            continue
        if key in {"name", "traceState"}:
            if type(value) is not str:
                return None
            kwargs["name" if key == "name" else "trace_state"] = value
        elif key == "kind":
            if type(value) is not int or not 0 <= value <= 5:
                return None
            kwargs["kind"] = value
        elif key in {"startTimeUnixNano", "endTimeUnixNano"}:
            number = _uint(value, _U64)
            if number is None:
                return None
            kwargs["start_time_unix_nano" if key[0] == "s" else "end_time_unix_nano"] = number
        elif key == "attributes":
            attributes = _simple_attributes(value)
            if attributes is None:
                return None
            kwargs["attributes"] = attributes
        elif key == "status":
            if type(value) is not dict or not value.keys() <= {"code", "message"}:
                return None
            code = value.get("code", 0)
            message = value.get("message", "")
            if type(code) is not int or not 0 <= code <= 2 or type(message) is not str:
                return None
            kwargs["status"] = {"code": code, "message": message}
        else:  # droppedAttributesCount, droppedEventsCount, droppedLinksCount, flags
            number = _uint(value, _U32)
            if number is None:
                return None
            kwargs[_SNAKE[key]] = number
    return kwargs


_SNAKE = {
    "droppedAttributesCount": "dropped_attributes_count",
    "droppedEventsCount": "dropped_events_count",
    "droppedLinksCount": "dropped_links_count",
    "flags": "flags",
}


def _parse_span_slowly(span: dict[str, Any], path: str, target: Message) -> None:
    _fix_id(span, _TRACE_ID, path)
    _fix_id(span, _SPAN_ID, path)
    _fix_id(span, _PARENT_SPAN_ID, path)
    for lpath, link in _items(span, ("links", "links"), path):
        _fix_id(link, _TRACE_ID, lpath)
        _fix_id(link, _SPAN_ID, lpath)
    _parse_dict(span, target, f"{path[:-1]}: ")


def parse_metrics_request(data: bytes | str | Mapping[str, Any]) -> ExportMetricsServiceRequest:
    """Parse an OTLP/JSON `ExportMetricsServiceRequest`; raises `OTLPJSONError`."""
    return _parse(data, ExportMetricsServiceRequest(), _fix_metric_ids)


def parse_logs_request(data: bytes | str | Mapping[str, Any]) -> ExportLogsServiceRequest:
    """Parse an OTLP/JSON `ExportLogsServiceRequest` (hex ids); raises `OTLPJSONError`."""
    return _parse(data, ExportLogsServiceRequest(), _fix_log_ids)


def detect_signal(obj_or_bytes: bytes | str | Mapping[str, Any]) -> Signal:
    """Which signal an OTLP/JSON request carries, from its top-level key; raises `OTLPJSONError`."""
    obj = obj_or_bytes if isinstance(obj_or_bytes, Mapping) else _load(obj_or_bytes)
    for key in obj:
        signal = _TOP_LEVEL.get(key)
        if signal is not None:
            return signal
    raise OTLPJSONError(
        "not an OTLP export request: no resourceSpans, resourceMetrics or resourceLogs key"
    )


# -- straight to records --------------------------------------------------------------------------
#
# `decode_trace_json` makes the records `decode_traces(parse_trace_request(data))` makes, without
# the protobuf round trip (build the message, serialise it, parse it again with decode's reduced
# schema), which was most of a replay's decode time. Each span is read optimistically from
# the loaded dicts in the shape OTLP/JSON exporters write (camelCase keys, hex ids, integer enums,
# string or integer attribute values); anything else about a span it reads (snake_case keys, enum
# names, another AnyValue type in an attribute decode reads, a value of the wrong type) sends that
# one span through the protobuf path, which gives the same record or the same `OTLPJSONError`.

# The attribute keys decode reads, by span kind (docs/decode.md); all others are skipped unread.
_CALLEE_KEYS = (
    "peer.service",
    "server.address",
    "server.port",
    "net.peer.name",
    "net.peer.port",
    "http.host",
    "url.full",
    "http.url",
    "error.type",
)
_READ_KEYS: tuple[frozenset[str], ...] = (
    frozenset({"error.type"}),  # UNSPECIFIED
    frozenset({"error.type"}),  # INTERNAL
    frozenset({"http.response.status_code", "http.status_code", "error.type"}),  # SERVER
    frozenset({*_CALLEE_KEYS, "db.system.name", "db.system"}),  # CLIENT
    frozenset({*_CALLEE_KEYS, "messaging.system"}),  # PRODUCER
    frozenset({"messaging.system", "error.type"}),  # CONSUMER
)
_SERVER, _CLIENT, _PRODUCER, _CONSUMER = 2, 3, 4, 5  # Span.SpanKind on the wire
_KINDS = tuple(SpanKind)
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)


class _Unusual(Exception):
    """The input is not in the plain shape read here: take the protobuf path instead."""


def decode_trace_json(data: bytes | str | Mapping[str, Any]) -> Batch:
    """`decode_traces(parse_trace_request(data))`, read straight from the JSON; same records.

    Raises `OTLPJSONError` naming the path of the first bad value among those it reads (ids,
    kind, times, status, links and the attributes decode uses; resource `service.name` and
    `service.instance.id`); other fields (events, scope, trace state, attributes decode does
    not use) are not validated. Spans with unusable ids are counted in `Batch.rejected`.
    """
    if isinstance(data, Mapping):
        data = json.dumps(data)  # a private copy, and text to look for escapes in
    if _may_hold_surrogates(data):
        return _decode_with_surrogates(data)
    typed = load_trace_request(data)
    if typed is not None:
        try:
            return _read_typed(typed)
        except (_Unusual, LookupError, TypeError, ValueError, AttributeError, RecursionError):
            pass  # not in the plain shape somewhere: the dict path reads it span by span
    obj = _load(data)
    out: list[Span] = []
    rejected = 0
    reason = ""
    for r_index, (rpath, rs) in enumerate(_items(obj, _RESOURCE_SPANS, "")):
        service, instance = _resource_names(rs, rpath)
        for spath, ss in _items(rs, _SCOPE_SPANS, rpath):
            spans = ss.get("spans")
            if spans is None:
                continue
            if type(spans) is not list:
                raise OTLPJSONError(f"{spath}spans: expected a list, got {type(spans).__name__}")
            for s_index, span in enumerate(spans):
                record: Span | str | None
                try:
                    record = _read_span(span, service, instance)
                except (_Unusual, LookupError, TypeError, ValueError, AttributeError):
                    record = _read_span_slowly(span, f"{spath}spans[{s_index}]", service, instance)
                if type(record) is Span:
                    out.append(record)
                    continue
                rejected += 1
                if not reason:
                    problem = (
                        record
                        if type(record) is str
                        else _id_problem(span["traceId"], span["spanId"])
                    )
                    reason = f"resource_spans[{r_index}] span {s_index}: {problem}"
    return Batch(spans=out, rejected=rejected, reason=reason)


# JSON can spell a lone UTF-16 surrogate (`"\\ud800"`), which Python strings hold but protobuf
# strings refuse; a line that may contain one takes the protobuf path (escaped pairs, such as an
# emoji written in ASCII, are read there too). Hex digits in escapes may be either case.
def _may_hold_surrogates(data: bytes | str) -> bool:
    # One memchr-fast scan for a backslash rules out most lines at once.
    if isinstance(data, str):
        return "\\" in data and ("\\ud" in data or "\\uD" in data)
    return b"\\" in data and (b"\\ud" in data or b"\\uD" in data)


def _decode_with_surrogates(data: bytes | str) -> Batch:
    try:
        return decode_traces(parse_trace_request(data))
    except UnicodeEncodeError:
        raise OTLPJSONError("a string holds an unpaired surrogate (\\ud800-\\udfff)") from None


def _resource_names(rs: dict[str, Any], rpath: str) -> tuple[str, str]:
    """`service.name` ("unknown_service" when missing or not a string) and `service.instance.id`."""
    resource = rs.get("resource")
    if resource is None:
        return UNKNOWN_SERVICE, ""
    try:
        service = instance = ""
        for kv in resource.get("attributes") or ():
            key = kv.get("key")
            if key == "service.name":
                service = _plain_string(kv["value"])
            elif key == "service.instance.id":
                instance = _plain_string(kv["value"])
    except (_Unusual, LookupError, TypeError, AttributeError):
        return _resource_names_slowly(resource, rpath)
    return service or UNKNOWN_SERVICE, instance


def _plain_string(value: Any) -> str:
    """A `{"stringValue": s}` AnyValue's `s`; `_Unusual` for anything else."""
    if len(value) == 1:
        text = value.get("stringValue")
        if type(text) is str:
            return text
    raise _Unusual


def _resource_names_slowly(resource: Any, rpath: str) -> tuple[str, str]:
    """`_resource_names` through `json_format`: a resource value's `string_value`, or ""."""
    holder = ResourceSpans()
    _parse_dict({"resource": resource}, holder, rpath)  # in context: json_format's own verdict
    names = {"service.name": "", "service.instance.id": ""}
    for kv in holder.resource.attributes:  # the last of a repeated key wins, as in a map
        if kv.key in names:
            names[kv.key] = (
                kv.value.string_value if kv.value.WhichOneof("value") == "string_value" else ""
            )
    return names["service.name"] or UNKNOWN_SERVICE, names["service.instance.id"]


def _read_span(span: dict[str, Any], service: str, instance: str) -> Span | None:
    """The record of a plain span, None when its ids make it unusable; raises `_Unusual`."""
    value = span["traceId"]
    if type(value) is not str or len(value) != 32:
        raise _Unusual
    trace_id = bytes.fromhex(value)
    value = span["spanId"]
    if type(value) is not str or len(value) != 16:
        raise _Unusual
    span_id = bytes.fromhex(value)
    if len(trace_id) != 16 or len(span_id) != 8 or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None  # fromhex skips whitespace, so 32 characters can still be 15 bytes
    value = span.get("parentSpanId")
    if value is None:
        parent = b"" if "parent_span_id" not in span else _unusual()
    elif type(value) is str and len(value) == 16:
        parent = bytes.fromhex(value)
        if len(parent) != 8 or parent == _ZERO_SPAN:
            parent = b""  # unusable: the span counts as a root, as decode reads it
    elif value == "":
        parent = b""
    else:
        raise _Unusual
    name = span.get("name")
    if name is None:
        name = ""
    elif type(name) is not str:
        raise _Unusual
    kind = span.get("kind")
    if kind is None:
        kind = 0
    elif type(kind) is not int or not 0 <= kind <= 5:  # SpanKind's wire values
        raise _Unusual
    # Times are decimal strings as exporters write them; fewer than 20 digits always fit a
    # uint64. A digit int() refuses ("²" passes isdigit) sends the span down the protobuf path.
    value = span.get("startTimeUnixNano")
    if type(value) is str and value.isdigit() and len(value) < 20:
        start_ns = int(value)
    else:
        start_ns = _uint64(value, "start_time_unix_nano" in span)
    value = span.get("endTimeUnixNano")
    if type(value) is str and value.isdigit() and len(value) < 20:
        end_ns = int(value)
    else:
        end_ns = _uint64(value, "end_time_unix_nano" in span)

    status = span.get("status")
    if status is None:
        failed = False
    else:
        code = status.get("code")
        if code is None:
            failed = False
        elif type(code) is int and 0 <= code <= 2:
            failed = code == 2
        else:
            raise _Unusual

    attributes = span.get("attributes")
    found: dict[str, Any] = {}
    if attributes:
        wanted = _READ_KEYS[kind]
        for kv in attributes:
            key = kv["key"]
            if key in wanted:
                found[key] = kv["value"]  # the last of a repeated key wins, as in a map
    elif attributes is not None and attributes != []:
        raise _Unusual  # 0, "", {}: not a list, which the protobuf path refuses
    return _span_record(
        trace_id,
        span_id,
        parent,
        service,
        instance,
        kind,
        start_ns,
        end_ns,
        failed,
        name,
        found,
        span.get("links") if kind == _CONSUMER else None,
    )


def _span_record(  # noqa: PLR0917  # the header fields in `Span`'s order, read by either path
    trace_id: bytes,
    span_id: bytes,
    parent: bytes,
    service: str,
    instance: str,
    kind: int,
    start_ns: int,
    end_ns: int,
    failed: bool,
    name: str,
    found: dict[str, Any],
    links_value: Any,
) -> Span:
    """The record of a span from its header and `found`, the loaded values of the attributes
    `_READ_KEYS` names for its kind (a URL's may be left as `msgspec.Raw`, read only when used);
    `links_value` is a CONSUMER span's loaded `links`. Raises `_Unusual` off the plain shape."""
    # decode reads only the attributes pair uses for the span's kind (docs/decode.md): a caller
    # names its callee, a SERVER span needs its HTTP status, a CONSUMER its messaging system and
    # links, and a failed span its error.type. The same precedence and fallbacks here.
    peer_service = server_address = server_port = db_system = None
    messaging_system = http_status = error_type = None
    links: tuple[tuple[bytes, bytes], ...] = ()
    get = found.get
    if kind in (_CLIENT, _PRODUCER):
        if found:
            value = get("peer.service")
            if value is not None:
                peer_service = _text(value)
            value = get("server.port")
            if value is not None:
                number = value.get("intValue") if len(value) == 1 else None
                if type(number) is str and number.isdigit() and len(number) < 19:
                    server_port = int(number)  # the usual case, inline
                else:
                    server_port = _number(value)
            if server_port is None:
                value = get("net.peer.port")
                if value is not None:
                    server_port = _number(value)
            value = get("server.address")
            if value is not None:
                text = value.get("stringValue") if len(value) == 1 else None
                server_address = text if type(text) is str and text else _text(value)
            if server_address is None:
                value = get("net.peer.name")
                if value is not None:
                    server_address = _text(value)
                if server_address is None:
                    server_address, server_port = _address_fallback(get, server_port)
            if kind == _CLIENT:
                value = get("db.system.name")
                if value is not None:
                    db_system = _text(value)
                if db_system is None:
                    value = get("db.system")
                    if value is not None:
                        db_system = _text(value)
            else:
                value = get("messaging.system")
                if value is not None:
                    messaging_system = _text(value)
            # A caller's error.type is read even when it did not fail (decode's rule).
            value = get("error.type")
            if value is not None:
                error_type = _text(value)
    else:
        if kind == _SERVER:
            value = get("http.response.status_code")
            if value is not None:
                number = value.get("intValue") if len(value) == 1 else None
                if type(number) is str and number.isdigit() and len(number) < 19:
                    http_status = int(number)  # the usual case, inline
                else:
                    http_status = _number(value)
            if http_status is None:
                value = get("http.status_code")
                if value is not None:
                    http_status = _number(value)
            if http_status is not None and http_status >= 500:
                failed = True
        elif kind == _CONSUMER:
            value = get("messaging.system")
            if value is not None:
                messaging_system = _text(value)
            if links_value:
                links = tuple(_read_links(links_value))
            elif links_value is not None and links_value != []:
                raise _Unusual
        if failed:
            value = get("error.type")
            if value is not None:
                error_type = _text(value)
    return Span(
        trace_id,
        span_id,
        parent,
        service,
        instance,
        _KINDS[kind],
        start_ns,
        end_ns,
        failed,
        name,
        peer_service,
        server_address,
        server_port,
        db_system,
        messaging_system,
        http_status,
        error_type,
        links,
    )


def _unusual() -> Any:
    raise _Unusual


# -- the typed path: the same reading over otlp_json_typed's structs ------------------------------

# Loaded attribute values by their JSON text, for recently read values: the same address, port
# and status recur in almost every request. A memo of a pure function (nothing changes a loaded
# value), bounded as decode's (`memoise`). Hosts and URLs, about one per request and read only
# when no address is given, stay JSON text in `found` (see `_loaded`) instead of churning it.
_VALUES: dict[bytes, Any] = {}
_DEFERRED_KEYS = frozenset({"http.host", "url.full", "http.url"})
_MISS: Any = object()


def _read_typed(request: JSONTraceRequest) -> Batch:
    """`decode_trace_json` of a typed request; raises `_Unusual` (or a lookup, type or value
    error) where the dict path would read a span slowly or refuse the request."""
    resources = request.resourceSpans
    if resources is UNSET:
        if request.resource_spans is not UNSET:
            raise _Unusual
        resources = None
    out: list[Span] = []
    append = out.append
    rejected = 0
    reason = ""
    for r_index, rs in enumerate(resources or ()):
        service, instance = _typed_resource_names(rs.resource)
        scopes = rs.scopeSpans
        if scopes is UNSET:
            if rs.scope_spans is not UNSET:
                raise _Unusual
            continue
        for ss in scopes or ():
            spans = ss.spans
            if spans is None:
                continue
            for s_index, span in enumerate(spans):
                record = _read_typed_span(span, service, instance)
                if record is not None:
                    append(record)
                    continue
                rejected += 1
                if not reason:
                    problem = _id_problem(span.traceId, span.spanId)
                    reason = f"resource_spans[{r_index}] span {s_index}: {problem}"
    return Batch(spans=out, rejected=rejected, reason=reason)


def _typed_value(raw: Raw | UnsetType) -> Any:
    """An attribute's loaded AnyValue (memoised); `_Unusual` when the attribute has none."""
    if raw is UNSET:
        raise _Unusual  # a KeyValue without a value: the dict path's KeyError
    text = bytes(raw)
    value = _VALUES.get(text, _MISS)
    if value is _MISS:
        value = json.loads(text)
        memoise(_VALUES, text, value)
    return value


def _typed_resource_names(resource: JSONResource | None) -> tuple[str, str]:
    """`_resource_names` of a typed resource; `_Unusual` where that takes the slow path."""
    if resource is None:
        return UNKNOWN_SERVICE, ""
    service = instance = ""
    for kv in resource.attributes or ():
        key = kv.key
        if key == "service.name":
            service = _plain_string(_typed_value(kv.value))
        elif key == "service.instance.id":
            instance = _plain_string(_typed_value(kv.value))
    return service or UNKNOWN_SERVICE, instance


def _read_typed_span(span: JSONSpan, service: str, instance: str) -> Span | None:
    """`_read_span` of a typed span (msgspec has checked each field's JSON type)."""
    hex_id = span.traceId
    if len(hex_id) != 32:
        raise _Unusual
    trace_id = bytes.fromhex(hex_id)
    hex_id = span.spanId
    if len(hex_id) != 16:
        raise _Unusual
    span_id = bytes.fromhex(hex_id)
    if len(trace_id) != 16 or len(span_id) != 8 or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    parent_hex = span.parentSpanId
    if parent_hex is None:
        parent = b"" if span.parent_span_id is UNSET else _unusual()
    elif len(parent_hex) == 16:
        parent = bytes.fromhex(parent_hex)
        if len(parent) != 8 or parent == _ZERO_SPAN:
            parent = b""
    elif parent_hex == "":
        parent = b""
    else:
        raise _Unusual
    name = span.name
    if name is None:
        name = ""
    kind = span.kind
    if kind is None:
        kind = 0
    elif not 0 <= kind <= 5:
        raise _Unusual
    time = span.startTimeUnixNano
    if type(time) is str and time.isdigit() and len(time) < 20:
        start_ns = int(time)
    else:
        start_ns = _uint64(time, span.start_time_unix_nano is not UNSET)
    time = span.endTimeUnixNano
    if type(time) is str and time.isdigit() and len(time) < 20:
        end_ns = int(time)
    else:
        end_ns = _uint64(time, span.end_time_unix_nano is not UNSET)
    status = span.status
    code = None if status is None else status.code
    if code is None:
        failed = False
    elif 0 <= code <= 2:
        failed = code == 2
    else:
        raise _Unusual
    found: dict[str, Any] = {}
    attributes = span.attributes
    if attributes:
        wanted = _READ_KEYS[kind]
        for kv in attributes:
            key = kv.key
            if key in wanted:
                if key in _DEFERRED_KEYS:
                    if kv.value is UNSET:
                        raise _Unusual
                    found[key] = kv.value
                else:
                    found[key] = _typed_value(kv.value)
    links = span.links
    return _span_record(
        trace_id,
        span_id,
        parent,
        service,
        instance,
        kind,
        start_ns,
        end_ns,
        failed,
        name,
        found,
        json.loads(bytes(links)) if kind == _CONSUMER and links is not UNSET else None,
    )


def _uint64(value: Any, spelt_snake: bool) -> int:
    """A uint64 field from an integer or a decimal string; absent is 0 (unless spelt snake_case)."""
    if value is None:
        if spelt_snake:
            raise _Unusual
        return 0
    if type(value) is str:
        if value.isascii() and value.isdigit():
            number = int(value)
            if number < _U64:
                return number
    elif type(value) is int and 0 <= value < _U64:
        return value
    raise _Unusual


def _int64(value: Any) -> int:
    if type(value) is str:
        body = value[1:] if value[:1] == "-" else value
        if body.isascii() and body.isdigit():
            number = int(value)
            if -_I64 <= number < _I64:
                return number
    elif type(value) is int and -_I64 <= value < _I64:
        return value
    raise _Unusual


def _text(value: Any) -> str | None:
    """decode's reading of an AnyValue as text: a non-empty string, or an integer in decimal."""
    if len(value) == 1:
        text = value.get("stringValue")
        if type(text) is str:
            return text or None
        number = value.get("intValue")
        if number is not None:
            return str(_int64(number))
    raise _Unusual


def _number(value: Any) -> int | None:
    """decode's reading of an AnyValue as a number: an integer, or a string `int()` reads."""
    if len(value) == 1:
        number = value.get("intValue")
        if number is not None:
            return _int64(number)
        text = value.get("stringValue")
        if type(text) is str:
            try:
                return int(text)
            except ValueError:
                return None
    raise _Unusual


def _address_fallback(get: Any, port: int | None) -> tuple[str | None, int | None]:
    """Server address (and port, if still unknown) from `http.host`, else from the URL."""
    address: str | None = None
    value = _loaded(get("http.host"))
    host = _text(value) if value is not None else None
    if host is not None:
        address, host_port = host_of(host, is_url=False)
        if port is None:
            port = host_port
    if address is None:
        value = _loaded(get("url.full"))
        url = _text(value) if value is not None else None
        if url is None:
            value = _loaded(get("http.url"))
            url = _text(value) if value is not None else None
        if url is not None:
            address, host_port = host_of(url, is_url=True)
            if port is None:
                port = host_port
    return address, port


def _loaded(value: Any) -> Any:
    """A value of `found`, loaded if the typed path left it as JSON text (URLs, hosts)."""
    return json.loads(bytes(value)) if type(value) is Raw else value


def _read_links(links: list[Any]) -> list[tuple[bytes, bytes]]:
    out = []
    for link in links:
        trace_hex = link["traceId"]
        span_hex = link["spanId"]
        if type(trace_hex) is not str or len(trace_hex) != 32:
            raise _Unusual
        if type(span_hex) is not str or len(span_hex) != 16:
            raise _Unusual
        trace_id = bytes.fromhex(trace_hex)
        span_id = bytes.fromhex(span_hex)
        if len(trace_id) == 16 and len(span_id) == 8:  # decode drops links it cannot use
            out.append((trace_id, span_id))
    return out


def _read_span_slowly(span: Any, path: str, service: str, instance: str) -> Span | str:
    """The record of any span through the protobuf path, or why it is unusable."""
    if type(span) is not dict:
        raise OTLPJSONError(f"{path}: expected an object, got {type(span).__name__}")
    message = PbSpan()
    kwargs = _span_kwargs(span, path + ".")
    if kwargs is not None:
        message = PbSpan(**kwargs)
    else:
        _parse_span_slowly(span, path + ".", message)
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.append(message)
    batch = decode_trace_bytes(request.SerializeToString())
    if not batch.spans:
        return batch.reason.partition(": ")[2]  # decode's reason without its own indices
    record = batch.spans[0]
    record.service = service  # still being made: no stage has seen it
    record.instance = instance
    return record


def _id_problem(trace_hex: str, span_hex: str) -> str:
    """Why the plain path found a span's ids unusable, in decode's words."""
    trace_id = bytes.fromhex(trace_hex)
    span_id = bytes.fromhex(span_hex)
    if len(trace_id) != 16:
        return f"trace_id must be 16 bytes, got {len(trace_id)}"
    if trace_id == _ZERO_TRACE:
        return "trace_id is all zero"
    if len(span_id) != 8:
        return f"span_id must be 8 bytes, got {len(span_id)}"
    return "span_id is all zero"


# -- metrics straight to heartbeats ---------------------------------------------------------------

# Resource-side usage metrics a heartbeat carries, and the `Heartbeat` field each fills (decode's).
_USAGE_METRICS = {
    "process.cpu.utilization": "cpu_utilization",
    "process.memory.usage": "memory_bytes",
    "process.thread.count": "threads",
    "watchman.inflight_requests": "inflight",
}
# A metric's data oneof: its JSON keys and the proto field name decode reports.
_METRIC_KINDS = {
    "gauge": "gauge",
    "sum": "sum",
    "histogram": "histogram",
    "exponentialHistogram": "exponential_histogram",
    "exponential_histogram": "exponential_histogram",
    "summary": "summary",
}


def decode_metrics_json(data: bytes | str | Mapping[str, Any]) -> Batch:
    """`decode_metrics(parse_metrics_request(data))`, read straight from the JSON; same heartbeats.

    Reads the `watchman.heartbeat` points and the newest usage points beside them, as decode
    does; any other metric is skipped unread (and not validated). A request in another shape
    than exporters write goes through the protobuf path as a whole. Raises `OTLPJSONError`.
    """
    if isinstance(data, Mapping):
        data = json.dumps(data)
    if _may_hold_surrogates(data):
        return _decode_metrics_slowly(data)
    obj = _load(data)
    try:
        return _read_metrics(obj)
    except (_Unusual, LookupError, TypeError, ValueError, AttributeError, OverflowError):
        return _decode_metrics_slowly(data)


def _decode_metrics_slowly(data: bytes | str) -> Batch:
    try:
        return decode_metrics(parse_metrics_request(data))
    except UnicodeEncodeError:
        raise OTLPJSONError("a string holds an unpaired surrogate (\\ud800-\\udfff)") from None


def _read_metrics(obj: dict[str, Any]) -> Batch:
    """decode_metrics over the loaded document in the plain shape; raises `_Unusual` otherwise."""
    heartbeats: list[Heartbeat] = []
    rejected = 0
    reason = ""
    for r_index, rm in enumerate(_plain_list(obj, "resourceMetrics", "resource_metrics")):
        beats: list[dict[str, Any]] = []
        usage: dict[str, float] = {}
        usage_time: dict[str, int] = {}
        for sm in _plain_list(rm, "scopeMetrics", "scope_metrics"):
            for metric in _plain_list(sm, "metrics", "metrics"):
                name = metric.get("name")
                if name is not None and type(name) is not str:
                    raise _Unusual
                if name == HEARTBEAT_METRIC:
                    which, points = _metric_points(metric)
                    if which in ("gauge", "sum"):
                        beats.extend(points)
                    else:
                        rejected += 1
                        if not reason:
                            reason = (
                                f"resource_metrics[{r_index}]: {HEARTBEAT_METRIC} must be a "
                                f"gauge, got {which or 'no data'}"
                            )
                    continue
                field = _USAGE_METRICS.get(name or "")
                if field is None:
                    continue
                which, points = _metric_points(metric)
                if which not in ("gauge", "sum"):
                    continue
                best: dict[str, Any] | None = None
                best_time = 0
                for point in points:  # the newest point, the last of equal times
                    time_ns = _point_time(point)
                    if best is None or time_ns >= best_time:
                        best, best_time = point, time_ns
                if best is None:
                    continue
                value = _point_value(best)
                if value is None:
                    continue
                if field not in usage_time or best_time >= usage_time[field]:
                    usage[field] = value
                    usage_time[field] = best_time
        if not beats:
            continue
        missing = resource_heartbeats(
            heartbeats,
            beats,
            _point_value,
            _point_time,
            _metric_resource_names(rm),
            usage,
        )
        if missing:
            rejected += missing
            if not reason:
                reason = f"resource_metrics[{r_index}]: {HEARTBEAT_METRIC} point has no value"
    return Batch(heartbeats=heartbeats, rejected=rejected, reason=reason)


def _plain_list(obj: dict[str, Any], camel: str, snake: str) -> list[Any]:
    """A repeated field under its camelCase key; absent is empty; anything else is unusual."""
    value = obj.get(camel)
    if value is None:
        if snake in obj and snake != camel:
            raise _Unusual
        return []
    if type(value) is not list:
        raise _Unusual
    for item in value:
        if type(item) is not dict:
            raise _Unusual
    return value


def _metric_points(metric: dict[str, Any]) -> tuple[str | None, list[Any]]:
    """Which data the metric holds (decode's name for it) and, for gauge and sum, its points."""
    which: str | None = None
    data: Any = None
    for key, name in _METRIC_KINDS.items():
        value = metric.get(key)
        if value is not None:
            if which is not None:
                raise _Unusual  # two of a oneof: the protobuf path refuses it
            which, data = name, value
    if which is None:
        return None, []
    if type(data) is not dict:
        raise _Unusual
    if which not in ("gauge", "sum"):
        return which, []
    return which, _plain_list(data, "dataPoints", "data_points")


def _point_time(point: dict[str, Any]) -> int:
    value = point.get("timeUnixNano")
    if type(value) is str and value.isdigit() and len(value) < 20:
        return int(value)
    return _uint64(value, "time_unix_nano" in point)


def _point_value(point: dict[str, Any]) -> float | None:
    """A number data point's value as decode reads it: `asDouble`, or `asInt` as a float."""
    double = point.get("asDouble")
    number = point.get("asInt")
    if double is None and number is None:
        if "as_double" in point or "as_int" in point:
            raise _Unusual
        return None
    if double is not None:
        if number is not None or type(double) not in (float, int):
            raise _Unusual
        value = float(double)  # OverflowError for a huge integer: the protobuf path decides
        if not math.isfinite(value):
            raise _Unusual  # a bare NaN or Infinity, which json_format refuses
        return value
    return float(_int64(number))


def _metric_resource_names(rm: dict[str, Any]) -> tuple[str, str, str | None]:
    """service.name, service.instance.id and host.name as decode reads them from a resource."""
    service = UNKNOWN_SERVICE
    instance = ""
    host: str | None = None
    resource = rm.get("resource")
    if resource is None:
        return service, instance, host
    for kv in resource.get("attributes") or ():
        key = kv.get("key")
        if key == "service.name":
            service = _plain_string(kv["value"]) or UNKNOWN_SERVICE
        elif key == "service.instance.id":
            instance = _plain_string(kv["value"])
        elif key == "host.name":
            host = _plain_string(kv["value"]) or None
    return service, instance, host


# -- dumping --------------------------------------------------------------------------------------


def _hex_ids(node: Any) -> None:
    """Turn every base64 id under `node` into hex, in place (ids sit at several depths)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                node[key] = binascii.hexlify(base64.b64decode(value)).decode("ascii")
            elif isinstance(value, dict | list):
                _hex_ids(value)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, dict | list):
                _hex_ids(item)


def dump_request(msg: Message) -> str:
    """One line of OTLP/JSON for an export request: hex ids, int enums, camelCase keys.

    This is the Collector file exporter's line format; `parse_*(dump_request(m)) == m`.
    """
    obj = json_format.MessageToDict(msg, use_integers_for_enums=True)
    # Only requests carry ids at these keys; AnyValue's `bytesValue` stays base64 as the spec says.
    _hex_ids(obj)
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
