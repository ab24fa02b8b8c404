"""Our OTLP span exporters' encoding: the official encoder's request, written as bytes directly.

The official ``encode_spans`` builds a protobuf object for every span, attribute and value
through keyword constructors, and hashes each span's ``Resource`` (a JSON dump of all its
attributes) to group the spans: 35–65 µs per span in a batch of 512, 90–180 µs in a batch of one
on the development machine (docs/performance.md). It runs in the batch processor's thread, but it
holds the interpreter lock and counts in the host's CPU. `encode_request` writes the same
``ExportTraceServiceRequest`` in the protobuf wire format instead, with each resource and scope
encoded once per object and each short attribute once per process (a memo), and `encode_spans`
parses it into the message the exporter sends.

It is the official encoder's outcome or nothing: the spans are grouped by resource, then by
scope, as the official encoder's dictionaries group them, in the same order, and every field is
written as its message constructor sets it (an unset status is an empty ``Status``, an empty
string value is a set ``string_value``). A batch holding anything else (events, links, a value
that is not a ``str``, ``bool``, 64-bit ``int`` or ``float``, text that is not valid UTF-8) is
left to the official encoder whole. Tests compare the two on the same spans.

`FastSpanEncoding` wraps our OTLP span exporter: the official exporters call the module-level
``encode_spans`` of their own module, which `install` replaces with a function that uses this
encoding inside `FastSpanEncoding.export` (in its thread) and the official one everywhere else,
so a user's own exporters are untouched.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from struct import Struct
from typing import Any

from opentelemetry.exporter.otlp.proto.common import trace_encoder
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

from watchman_otel._light_span import LightSpan

__all__ = ["FastSpanEncoding", "encode_request", "encode_spans", "install"]

_official_encode_spans: Callable[[Sequence[ReadableSpan]], ExportTraceServiceRequest] = (
    trace_encoder.encode_spans
)
# The modules of the official OTLP span exporters that call `encode_spans` by that name.
_EXPORTER_MODULES = (
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
)

_DOUBLE = Struct("<d").pack
_FIXED64 = Struct("<Q").pack
_FIXED32 = Struct("<I").pack
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_UINT64 = (1 << 64) - 1
_UINT32 = (1 << 32) - 1
# Span.kind (field 6) by SpanKind value: the official map gives SpanKind.INTERNAL (0) 1, ...
_KINDS = {kind.value: bytes((0x30, kind.value + 1)) for kind in SpanKind}
# Span.flags (field 16, fixed32): SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK, and IS_REMOTE.
_FLAGS_LOCAL = b"\x85\x01" + _FIXED32(0x100)
_FLAGS_REMOTE = b"\x85\x01" + _FIXED32(0x300)
_SMALL = [bytes((n,)) for n in range(128)]

# Encoded span attributes (the whole field, tag first) by (key, type, value), for strings up to
# `_MEMO_MAX` characters, ints and bools: the same method, address, port and status recur in
# almost every span.
# Cleared when full; a race between exporter threads only refills it early.
_MEMO: dict[tuple[str, type, Any], bytes] = {}
_MEMO_SIZE = 1024
_MEMO_MAX = 64
_STATUSES: dict[tuple[StatusCode, str | None], bytes] = {}  # Span.status by (code, description)
# Encoded resources and scopes by (encoder, the object's id), with the object (kept alive, so
# the id stays its own): a process has a few, and their attributes do not change.
_ENCODED: dict[tuple[Callable[[Any], bytes], int], tuple[Any, bytes]] = {}
_ENCODED_SIZE = 64


class _NotPlain(Exception):
    """The batch holds something this encoding leaves to the official encoder."""


def _remember(memo: dict[Any, Any], size: int, key: Any, value: Any) -> None:
    """Keep `value` under `key` in one of this module's memos, cleared when it holds `size`."""
    if len(memo) >= size:
        memo.clear()
    memo[key] = value


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, body: bytes) -> bytes:
    """A length-delimited field: `tag`, the length of `body`, `body`."""
    return tag + _varint(len(body)) + body


def _any_value(value: Any) -> bytes:
    """The encoded ``AnyValue`` the official `_encode_value` makes of a plain value."""
    kind = value.__class__
    if kind is str:
        return _field(b"\x0a", value.encode())
    if kind is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if kind is int:
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise _NotPlain
        return b"\x18" + _varint(value & _UINT64)
    if kind is float:
        return b"\x21" + _DOUBLE(value)
    raise _NotPlain


def _key_value(key: str, value: Any) -> bytes:
    """An encoded ``KeyValue``, length first (without the tag of the field holding it)."""
    if key.__class__ is not str:
        raise _NotPlain
    body = _field(b"\x12", _any_value(value))
    if key:  # proto3: an empty key is not written
        body = _field(b"\x0a", key.encode()) + body
    return _varint(len(body)) + body


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    """Attributes as repeated ``KeyValue`` fields numbered by `tag`, as `_encode_attributes`."""
    if not attributes:
        return b""
    return b"".join([tag + _key_value(key, value) for key, value in attributes.items()])


def _span_attributes(attributes: Mapping[str, Any]) -> bytes:
    """Span.attributes (field 9), each short one encoded once (`_MEMO`)."""
    memo = _MEMO
    out = []
    for key, value in attributes.items():
        memo_key = (key, value.__class__, value)
        try:
            found = memo.get(memo_key)
        except TypeError:  # unhashable: not plain
            raise _NotPlain from None
        if found is None:
            found = b"\x4a" + _key_value(key, value)
            # Not floats: 0.0 and -0.0 are one key, two encodings.
            kind = value.__class__
            if (kind is not str or len(value) <= _MEMO_MAX) and kind is not float:
                _remember(memo, _MEMO_SIZE, memo_key, found)
        out.append(found)
    return b"".join(out)


def _find(keys: Sequence[Any], candidate: Any) -> int:
    """The index of the key a dictionary would file `candidate` under (-1: none).

    A dictionary finds a key that is the same object, or has the same hash and is equal.
    Hashing a ``Resource`` dumps its attributes as JSON, so hashes are taken only when no key
    is the same object: a batch of one resource and one scope takes none.
    """
    for i, key in enumerate(keys):
        if key is candidate:
            return i
    if keys:
        wanted = hash(candidate)
        for i, key in enumerate(keys):
            if hash(key) == wanted and key == candidate:
                return i
    return -1


def _once(encode: Callable[[Any], bytes], thing: Any) -> bytes:
    """`encode(thing)` for a resource or scope, once per object (`_ENCODED`)."""
    key = (encode, id(thing))
    found = _ENCODED.get(key)
    if found is not None and found[0] is thing:
        return found[1]
    encoded = encode(thing)
    _remember(_ENCODED, _ENCODED_SIZE, key, (thing, encoded))
    return encoded


def _resource(resource: Any) -> bytes:
    """ResourceSpans.resource (field 1) as `_encode_resource` sets it."""
    return _field(b"\x0a", _attributes(b"\x0a", resource.attributes))


def _scope(scope: Any) -> bytes:
    """ScopeSpans.scope (field 1) as `_encode_instrumentation_scope` sets it."""
    if scope is None:
        return b"\x0a\x00"
    body = b""
    if scope.name:
        body += _field(b"\x0a", scope.name.encode())
    if scope.version:
        body += _field(b"\x12", scope.version.encode())
    body += _attributes(b"\x1a", scope.attributes)
    return _field(b"\x0a", body)


def _span(span: ReadableSpan) -> bytes:
    """One encoded ``Span`` as `_encode_span` sets its fields (without its field tag)."""
    if span.__class__ is LightSpan and span._sdk is None:  # our own spans
        # Read where the properties would read them: no events, links or limits.
        context, parent, name, kind = span._context, span._parent, span._name, span._kind
        start, end = span._start_time, span._end_time
        attributes, status = span._attributes, span._status
        dropped: tuple[int, ...] = ()
    else:
        if span.events or span.links:
            raise _NotPlain
        context, parent, name, kind = span.get_span_context(), span.parent, span.name, span.kind
        start, end = span.start_time, span.end_time
        attributes, status = span.attributes, span.status
        dropped = (span.dropped_attributes, span.dropped_events, span.dropped_links)
    if context is None or kind.__class__ is not SpanKind:
        raise _NotPlain
    parts = [
        b"\x0a\x10",
        context.trace_id.to_bytes(16, "big"),
        b"\x12\x08",
        context.span_id.to_bytes(8, "big"),
    ]
    state = context.trace_state
    if state:
        parts.append(_field(b"\x1a", ",".join([f"{k}={v}" for k, v in state.items()]).encode()))
    if parent:
        parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
    if name:
        parts.append(_field(b"\x2a", name.encode()))
    parts.append(_KINDS[kind._value_])
    if start:
        parts += (b"\x39", _FIXED64(start))
    if end:
        parts += (b"\x41", _FIXED64(end))
    if attributes:
        parts.append(_span_attributes(attributes))
    if any(dropped):
        for tag, count in zip((b"\x50", b"\x60", b"\x70"), dropped, strict=True):
            if count:
                if not 0 < count <= _UINT32:
                    raise _NotPlain
                parts += (tag, _varint(count))
    if status is not None:
        parts.append(_status(status))
    parts.append(_FLAGS_REMOTE if parent and parent.is_remote else _FLAGS_LOCAL)
    return b"".join(parts)


def _status(status: Status) -> bytes:
    """Span.status (field 15) as `_encode_status` sets it: present even when unset."""
    key = (status.status_code, status.description)
    found = _STATUSES.get(key)
    if found is None:
        body = b""
        if status.description:
            body = _field(b"\x12", status.description.encode())
        code = status.status_code.value
        if code:
            body += b"\x18" + _varint(code)
        found = _field(b"\x7a", body)
        _remember(_STATUSES, _MEMO_SIZE, key, found)
    return found


def encode_request(spans: Iterable[ReadableSpan]) -> bytes | None:
    """The encoded ``ExportTraceServiceRequest`` the official ``encode_spans`` makes of
    `spans`, or None when the batch holds what only the official encoder writes (see the
    module)."""
    # Resource → scope → encoded spans, grouped as the official encoder's dictionaries group
    # them (`_find`), each distinct pair of objects looked up once.
    groups: list[tuple[Any, list[tuple[Any, list[bytes]]]]] = []
    lists: dict[tuple[int, int], list[bytes]] = {}
    try:
        for span in spans:
            resource = span.resource
            scope = span.instrumentation_scope or None
            target = lists.get((id(resource), id(scope)))
            if target is None:
                i = _find([r for r, _ in groups], resource)
                if i < 0:
                    groups.append((resource, []))
                by_scope = groups[i][1]
                j = _find([s for s, _ in by_scope], scope)
                if j < 0:
                    by_scope.append((scope, []))
                target = lists[id(resource), id(scope)] = by_scope[j][1]
            target.append(_span(span))
        out = []
        for resource, by_scope in groups:
            body = [_once(_resource, resource)]
            for scope, encoded_spans in by_scope:
                scope_spans = [_once(_scope, scope), *[_field(b"\x12", s) for s in encoded_spans]]
                schema = scope.schema_url if scope is not None else None
                if schema:
                    scope_spans.append(_field(b"\x1a", schema.encode()))
                body.append(_field(b"\x12", b"".join(scope_spans)))
            if resource.schema_url:
                body.append(_field(b"\x1a", resource.schema_url.encode()))
            out.append(_field(b"\x0a", b"".join(body)))
    except Exception:  # _NotPlain, bad text, what the official encoder rejects
        return None
    return b"".join(out)


def encode_spans(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    """The official ``encode_spans``'s request, through `encode_request` where it can."""
    data = encode_request(spans)
    if data is None:
        return _official_encode_spans(spans)
    request: ExportTraceServiceRequest = ExportTraceServiceRequest.FromString(data)
    return request


_inside = threading.local()  # `active`: this thread is in `FastSpanEncoding.export`


def _dispatch(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    """The exporter modules' ``encode_spans``: ours inside `FastSpanEncoding`, else official."""
    if getattr(_inside, "active", False):
        return encode_spans(spans)
    return _official_encode_spans(spans)


def install() -> bool:
    """Route the imported official OTLP span exporters' encoding through `_dispatch`.

    Only a module whose ``encode_spans`` is still the official function is changed; True when
    an imported exporter module now dispatches.
    """
    installed = False
    for name in _EXPORTER_MODULES:
        module = sys.modules.get(name)  # imported for the protocol in use, not here
        if module is None:
            continue
        current = getattr(module, "encode_spans", None)
        if current is _official_encode_spans:
            module.encode_spans = _dispatch  # type: ignore[attr-defined]
        installed = installed or getattr(module, "encode_spans", None) is _dispatch
    return installed


class FastSpanEncoding(SpanExporter):
    """An official OTLP span exporter whose batches are encoded by `encode_spans`."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.installed = install()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """The inner exporter's export, with this module's encoding in this thread."""
        _inside.active = True
        try:
            return self.inner.export(spans)
        finally:
            _inside.active = False

    def shutdown(self) -> None:
        """Shut the inner exporter down."""
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """The inner exporter's flush."""
        return self.inner.force_flush(timeout_millis)
