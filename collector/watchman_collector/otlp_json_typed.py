"""OTLP/JSON trace requests loaded as typed structs holding only what decode reads.

`json.loads` builds a Python object for every value of a trace line (every attribute of every
span, every event), and freeing them costs as much again; decode then reads a few of them. Here
msgspec reads the same JSON into structs of the fields decode uses: fields not declared
(events, scope, trace state, flags, …) are skipped by the parser without an object made, and an
attribute's value stays its undecoded JSON text (`msgspec.Raw`) until decode asks for it.

This module only loads. `otlp_json.decode_trace_json` reads the structs with the same rules as
the loaded dicts, and takes the dict path for the whole request when `load_trace_request`
returns None (not valid JSON, or a value of another type than exporters write: the dict path
then decides, with its error messages) or when a value is not in the plain shape. Absent fields
are `UNSET`, so "absent" and "null" stay as distinct as they are for the dict path; the snake_case
spellings decode checks are declared so that their presence is seen.
"""

from __future__ import annotations

import msgspec
from msgspec import UNSET, Raw, Struct, UnsetType

__all__ = [
    "JSONKeyValue",
    "JSONResource",
    "JSONResourceSpans",
    "JSONScopeSpans",
    "JSONSpan",
    "JSONStatus",
    "JSONTraceRequest",
    "load_trace_request",
]


class JSONKeyValue(Struct):
    """An attribute: its key, and its AnyValue as JSON text (decoded only when decode reads it)."""

    key: str
    value: Raw | UnsetType = UNSET


class JSONStatus(Struct):
    """A span's status: only its code is read."""

    code: int | None = None


class JSONSpan(Struct):
    """The span fields decode reads, camelCase as exporters write them, and the snake_case ones
    whose presence sends the span down the dict path."""

    traceId: str
    spanId: str
    parentSpanId: str | None = None
    name: str | None = None
    kind: int | None = None
    startTimeUnixNano: str | int | None = None
    endTimeUnixNano: str | int | None = None
    attributes: list[JSONKeyValue] | None = None
    status: JSONStatus | None = None
    links: Raw | UnsetType = UNSET  # read (by the dict path's rules) for CONSUMER spans only
    parent_span_id: Raw | UnsetType = UNSET
    start_time_unix_nano: Raw | UnsetType = UNSET
    end_time_unix_nano: Raw | UnsetType = UNSET


class JSONScopeSpans(Struct):
    spans: list[JSONSpan] | None = None


class JSONResource(Struct):
    attributes: list[JSONKeyValue] | None = None


class JSONResourceSpans(Struct):
    resource: JSONResource | None = None
    scopeSpans: list[JSONScopeSpans] | UnsetType | None = UNSET
    scope_spans: Raw | UnsetType = UNSET


class JSONTraceRequest(Struct):
    resourceSpans: list[JSONResourceSpans] | UnsetType | None = UNSET
    resource_spans: Raw | UnsetType = UNSET


_DECODER = msgspec.json.Decoder(JSONTraceRequest)


def load_trace_request(data: bytes | str) -> JSONTraceRequest | None:
    """The request as structs; None when it is not valid JSON, nests too deeply or a value has
    another type."""
    try:
        return _DECODER.decode(data)
    except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
        return None
