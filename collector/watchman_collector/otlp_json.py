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
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

__all__ = [
    "OTLPJSONError",
    "Signal",
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
