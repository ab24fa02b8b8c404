"""OTLP/JSON to and from protobuf export requests, with the OTLP spec's deviations from proto3 JSON.

The OTLP spec encodes `traceId`, `spanId` and `parentSpanId` as hex strings, not as the base64 that
the protobuf JSON mapping (and so `json_format.Parse`) uses for `bytes`; everything else follows the
mapping: lowerCamelCase keys (the proto field names are accepted too), enums as integers (names are
accepted too), 64-bit integers as decimal strings or numbers, unknown fields ignored. This module
walks the few places ids live, turns hex into what `json_format` expects, and raises
`OTLPJSONError` with the path of the first bad value, e.g.
``resourceSpans[0].scopeSpans[0].spans[3].traceId: expected 32 hex characters, got 30``.

`dump_request` writes one line in the Collector file exporter's format, which `parse_*` reads back
to an equal message.
"""

from __future__ import annotations

import base64
import binascii
import json
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

# The id fields of the messages, by proto field name, for dump_request's base64 → hex pass.
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


def _fix_trace_ids(obj: dict[str, Any]) -> None:
    for rpath, rs in _items(obj, _RESOURCE_SPANS, ""):
        for spath, ss in _items(rs, _SCOPE_SPANS, rpath):
            for path, span in _items(ss, ("spans", "spans"), spath):
                _fix_id(span, _TRACE_ID, path)
                _fix_id(span, _SPAN_ID, path)
                _fix_id(span, _PARENT_SPAN_ID, path)
                for lpath, link in _items(span, ("links", "links"), path):
                    _fix_id(link, _TRACE_ID, lpath)
                    _fix_id(link, _SPAN_ID, lpath)


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
    try:
        json_format.ParseDict(obj, message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise OTLPJSONError(str(exc)) from None
    except RecursionError:
        raise OTLPJSONError("nested too deeply") from None
    return message


def parse_trace_request(data: bytes | str | Mapping[str, Any]) -> ExportTraceServiceRequest:
    """Parse an OTLP/JSON `ExportTraceServiceRequest` (hex ids); raises `OTLPJSONError`."""
    return _parse(data, ExportTraceServiceRequest(), _fix_trace_ids)


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
