"""The OTLP/HTTP receiver: a raw ASGI app serving POST `/v1/traces`, `/v1/metrics`, `/v1/logs`.

Protobuf (`application/x-protobuf`) and JSON (`application/json`) share the port, as the OTLP spec
asks; the answer is in the request's encoding. Bodies may be gzip (or zlib "deflate") compressed.
The body is read with a running cap that applies after decompression, and the decompressor is
asked for at most the bytes still allowed, so a gzip bomb stops at the cap with bounded memory.

Status codes follow the OTLP spec: 400 for data that cannot be decoded (a `google.rpc.Status`
body), 413 above the size cap, 415 for other content types or encodings, 503 with `Retry-After`
when the analyzer's queue is full (retryable: never 400/500 for overload, because senders drop
data on those), 200 with `partial_success` when some spans were unusable.
"""

from __future__ import annotations

import asyncio
import json
import math
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)

from watchman_collector.decode import decode_metrics, decode_trace_bytes
from watchman_collector.intake import Limits, ReceiverStats, Sink, Transport
from watchman_collector.otlp_json import (
    OTLPJSONError,
    decode_metrics_json,
    decode_trace_json,
    parse_logs_request,
)
from watchman_collector.records import Batch

__all__ = ["OTLPHTTPReceiver", "make_otlp_http_app"]


Scope = MutableMapping[str, Any]
ASGIMessage = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[ASGIMessage]]
Send = Callable[[ASGIMessage], Awaitable[None]]

TRANSPORT: Transport = "http"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"

_SIGNALS = {"/v1/traces": "traces", "/v1/metrics": "metrics", "/v1/logs": "logs"}

# Bodies larger than this are parsed and decoded on a worker thread so one big export does not
# stall the event loop that every receiver and the API share.
OFFLOAD_BYTES = 1024 * 1024

_EMPTY = Batch()


class _Refusal(Exception):
    """A request answered with an error status; `reason` labels the refused counter."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def _decode(signal: str, encoding: str, body: bytes) -> tuple[Batch, Message]:
    """Parse and decode one body; returns the batch and the (empty) response to fill."""
    try:
        if signal == "traces":
            # Both encodings go straight to records: protobuf from the bytes, as on gRPC, and
            # JSON from the loaded document, neither through a full protobuf message.
            batch = decode_trace_bytes(body) if encoding == PROTOBUF else decode_trace_json(body)
            return batch, ExportTraceServiceResponse()
        if signal == "metrics":
            batch = (
                decode_metrics(ExportMetricsServiceRequest.FromString(body))
                if encoding == PROTOBUF
                else decode_metrics_json(body)
            )
            return batch, ExportMetricsServiceResponse()
        if encoding == PROTOBUF:
            ExportLogsServiceRequest.FromString(body)
        else:
            parse_logs_request(body)
        return _EMPTY, ExportLogsServiceResponse()
    except DecodeError as exc:
        raise _Refusal(400, "malformed", f"cannot decode the {signal} request: {exc}") from None
    except OTLPJSONError as exc:
        raise _Refusal(400, "malformed", f"cannot decode the {signal} request: {exc}") from None


def _fill_partial_success(response: Message, batch: Batch) -> None:
    if not batch.rejected:
        return
    partial = response.partial_success
    if isinstance(response, ExportTraceServiceResponse):
        partial.rejected_spans = batch.rejected
    elif isinstance(response, ExportMetricsServiceResponse):
        partial.rejected_data_points = batch.rejected
    else:
        partial.rejected_log_records = batch.rejected
    partial.error_message = batch.reason


def _encode(message: Message, encoding: str) -> bytes:
    if encoding == JSON:
        obj = json_format.MessageToDict(message, use_integers_for_enums=True)
        return json.dumps(obj, separators=(",", ":")).encode()
    data: bytes = message.SerializeToString()
    return data


def _status_body(status: int, message: str, encoding: str, retry_after_s: float | None) -> bytes:
    code = {
        400: code_pb2.INVALID_ARGUMENT,
        413: code_pb2.RESOURCE_EXHAUSTED,
        415: code_pb2.INVALID_ARGUMENT,
        503: code_pb2.UNAVAILABLE,
    }.get(status, code_pb2.UNKNOWN)
    rpc_status = status_pb2.Status(code=code, message=message)
    if retry_after_s is not None:
        seconds = int(retry_after_s)
        delay = Duration(seconds=seconds, nanos=int((retry_after_s - seconds) * 1e9))
        rpc_status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return _encode(rpc_status, encoding)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class _BodyReader:
    """Accumulates a request body, decompressing on the fly, refusing past `cap` bytes."""

    def __init__(self, cap: int, content_encoding: str) -> None:
        self.cap = cap
        self.size = 0  # bytes received on the wire
        self.parts: list[bytes] = []
        self.out = 0  # bytes after decompression
        # gzip wrapper, zlib wrapper (what HTTP calls "deflate"), or no compression.
        self._wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(
            content_encoding, 0
        )
        self._inflater = zlib.decompressobj(self._wbits) if self._wbits else None

    def _too_large(self) -> _Refusal:
        return _Refusal(
            413,
            "too_large",
            f"the request body is larger than {self.cap} bytes after decompression",
        )

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.cap:
            raise self._too_large()
        inflater = self._inflater
        if inflater is None:
            self.out += len(chunk)
            self.parts.append(chunk)
            return
        data = chunk
        try:
            while data:
                if inflater.eof:
                    # Concatenated gzip members are one valid body (RFC 1952 §2.2).
                    inflater = self._inflater = zlib.decompressobj(self._wbits)
                # Ask for at most one byte more than still allowed: a bomb stops right here.
                piece = inflater.decompress(data, self.cap - self.out + 1)
                self.out += len(piece)
                if self.out > self.cap:
                    raise self._too_large()
                self.parts.append(piece)
                data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
        except zlib.error as exc:
            raise _Refusal(400, "malformed", f"cannot decompress the body: {exc}") from None

    def finish(self) -> bytes:
        if self._inflater is not None and not self._inflater.eof:
            raise _Refusal(400, "malformed", "cannot decompress the body: the stream is truncated")
        return b"".join(self.parts)


class OTLPHTTPReceiver:
    """ASGI app for OTLP/HTTP export requests, feeding one sink and one set of counters."""

    def __init__(self, sink: Sink, stats: ReceiverStats, limits: Limits) -> None:
        self.sink = sink
        self.stats = stats
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope."""
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        signal = _SIGNALS.get(scope["path"])
        if signal is None:
            await _respond(send, 404, b"404 page not found", "text/plain; charset=utf-8")
            return
        if scope["method"] != "POST":
            await _respond(
                send,
                405,
                b"405 method not allowed, supported: [POST]",
                "text/plain; charset=utf-8",
                (("allow", "POST"),),
            )
            return
        media = (_header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
        encoding = media if media in (PROTOBUF, JSON) else PROTOBUF
        try:
            if media not in (PROTOBUF, JSON):
                raise _Refusal(
                    415,
                    "unsupported_media_type",
                    f"unsupported content type {media or '(none)'!r}; "
                    f"supported: {JSON}, {PROTOBUF}",
                )
            body = await self._read_body(scope, receive)
            if len(body) > OFFLOAD_BYTES:
                batch, response = await asyncio.to_thread(_decode, signal, encoding, body)
            else:
                batch, response = _decode(signal, encoding, body)
        except _Refusal as refusal:
            self.stats.record_rejected(TRANSPORT, signal, refusal.reason)
            if refusal.reason == "disconnected":
                return  # nobody is left to read an answer
            await _respond(
                send,
                refusal.status,
                _status_body(refusal.status, refusal.message, encoding, None),
                encoding,
            )
            return

        # Empty requests (and logs, not analysed yet) need no room in the analyzer's queue.
        taken = self.sink(batch) if batch.spans or batch.heartbeats else True
        self.stats.record_batch(TRANSPORT, signal, batch, taken=taken)
        if not taken:
            retry_after = self.limits.retry_after_s
            message = "the analyzer is overloaded; retry later"
            await _respond(
                send,
                503,
                _status_body(503, message, encoding, retry_after),
                encoding,
                # Retry-After takes whole seconds; round up so senders never come back early.
                (("retry-after", str(math.ceil(retry_after))),),
            )
            return
        _fill_partial_success(response, batch)
        await _respond(send, 200, _encode(response, encoding), encoding)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        cap = self.limits.http_max_body_bytes
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > cap:
            # Refuse before reading a byte of it.
            raise _Refusal(413, "too_large", f"the request body is larger than {cap} bytes")
        content_encoding = (_header(scope, b"content-encoding") or "identity").strip().lower()
        if content_encoding not in ("identity", "gzip", "deflate", ""):
            raise _Refusal(
                415,
                "unsupported_encoding",
                f"unsupported content encoding {content_encoding!r}; supported: gzip, deflate",
            )
        reader = _BodyReader(cap, content_encoding)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Refusal(400, "disconnected", "the client went away mid-body")
            chunk = message.get("body", b"")
            if chunk:
                reader.feed(chunk)
            if not message.get("more_body", False):
                return reader.finish()


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    extra_headers: tuple[tuple[str, str], ...] = (),
) -> None:
    headers = [
        (b"content-type", content_type.encode("latin-1")),
        (b"content-length", str(len(body)).encode("latin-1")),
    ]
    headers.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def make_otlp_http_app(sink: Sink, stats: ReceiverStats, limits: Limits) -> OTLPHTTPReceiver:
    """The OTLP/HTTP ASGI app (serve it with uvicorn); see `OTLPHTTPReceiver`."""
    return OTLPHTTPReceiver(sink, stats, limits)
