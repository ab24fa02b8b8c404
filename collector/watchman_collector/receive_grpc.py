"""The OTLP/gRPC receiver: TraceService, MetricsService and LogsService on one `grpc.aio` server.

Requests are parsed and decoded in the handler, so malformed input is answered at once with
INVALID_ARGUMENT and never reaches the analyzer. The handlers take raw bytes (no deserializer on
the method) because gRPC answers a deserializer failure with INTERNAL, which a sender cannot tell
from a server bug. A full analyzer (the sink says False) is UNAVAILABLE with a retry delay, never
a permanent code: the Collector's exporter drops data on those.

Messages above `Limits.grpc_max_message_bytes` are refused by gRPC itself with RESOURCE_EXHAUSTED
before any handler runs, so they do not show in `ReceiverStats`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
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
from watchman_collector.records import Batch

__all__ = ["GRPCReceiver", "start_grpc_server"]

log = logging.getLogger(__name__)

TRANSPORT: Transport = "grpc"
_TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
_METRICS_SERVICE = "opentelemetry.proto.collector.metrics.v1.MetricsService"
_LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"

# Requests larger than this are parsed and decoded on a worker thread so one big export does not
# stall the event loop that every receiver and the API share.
OFFLOAD_BYTES = 1024 * 1024

_EMPTY = Batch()


def _retry_metadata(message: str, retry_after_s: float) -> tuple[tuple[str, bytes], ...]:
    """Trailers carrying the retry delay the two ways OTLP clients read it.

    `grpc-status-details-bin` is the standard rich status (a `google.rpc.Status` with a
    `RetryInfo` detail; the Collector's exporter reads it); the OpenTelemetry Python exporter reads
    a bare `RetryInfo` from `google.rpc.retryinfo-bin`.
    """
    seconds = int(retry_after_s)
    delay = Duration(seconds=seconds, nanos=int((retry_after_s - seconds) * 1e9))
    info = error_details_pb2.RetryInfo(retry_delay=delay)
    status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=message)
    status.details.add().Pack(info)
    return (
        ("grpc-status-details-bin", status.SerializeToString()),
        ("google.rpc.retryinfo-bin", info.SerializeToString()),
    )


def _parse_and_decode_traces(data: bytes) -> Batch:
    # Straight from the bytes: decode's reduced schema skips the full parse (docs/performance.md).
    return decode_trace_bytes(data)


def _parse_and_decode_metrics(data: bytes) -> Batch:
    return decode_metrics(ExportMetricsServiceRequest.FromString(data))


def _parse_logs(data: bytes) -> Batch:
    ExportLogsServiceRequest.FromString(data)
    return _EMPTY


class GRPCReceiver:
    """The three OTLP Export handlers, feeding one sink and one set of counters."""

    def __init__(self, sink: Sink, stats: ReceiverStats, limits: Limits) -> None:
        self.sink = sink
        self.stats = stats
        self.limits = limits

    async def _export(
        self,
        signal: str,
        data: bytes,
        context: grpc.aio.ServicerContext[Any, Any],
        work: Callable[[bytes], Batch],
    ) -> Batch:
        stats = self.stats
        try:
            if len(data) > OFFLOAD_BYTES:
                batch = await asyncio.to_thread(work, data)
            else:
                batch = work(data)
        except DecodeError as exc:
            stats.record_rejected(TRANSPORT, signal, "malformed")
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"cannot decode the {signal} request: {exc}"
            )
        # Empty requests (and logs, not analysed yet) need no room in the analyzer's queue.
        taken = self.sink(batch) if batch.spans or batch.heartbeats else True
        stats.record_batch(TRANSPORT, signal, batch, taken=taken)
        if not taken:
            message = "the analyzer is overloaded; retry later"
            retry_after = self.limits.retry_after_s
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                message,
                trailing_metadata=_retry_metadata(message, retry_after),
            )
        return batch

    async def export_traces(
        self, data: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ExportTraceServiceResponse:
        """TraceService/Export: decode spans, hand them to the sink; partial success on bad ids."""
        batch = await self._export("traces", data, context, _parse_and_decode_traces)
        response = ExportTraceServiceResponse()
        if batch.rejected:
            response.partial_success.rejected_spans = batch.rejected
            response.partial_success.error_message = batch.reason
        return response

    async def export_metrics(
        self, data: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ExportMetricsServiceResponse:
        """MetricsService/Export: decode heartbeats, hand them to the sink."""
        batch = await self._export("metrics", data, context, _parse_and_decode_metrics)
        response = ExportMetricsServiceResponse()
        if batch.rejected:
            response.partial_success.rejected_data_points = batch.rejected
            response.partial_success.error_message = batch.reason
        return response

    async def export_logs(
        self, data: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ExportLogsServiceResponse:
        """LogsService/Export: validate and count; log records are not analysed yet."""
        await self._export("logs", data, context, _parse_logs)
        return ExportLogsServiceResponse()

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        """Generic handlers for the three services' Export methods, taking raw request bytes."""

        def unary(
            fn: Callable[[bytes, grpc.aio.ServicerContext[Any, Any]], Awaitable[Message]],
        ) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                fn,
                request_deserializer=None,
                response_serializer=_serialize,
            )

        return [
            grpc.method_handlers_generic_handler(
                _TRACE_SERVICE, {"Export": unary(self.export_traces)}
            ),
            grpc.method_handlers_generic_handler(
                _METRICS_SERVICE, {"Export": unary(self.export_metrics)}
            ),
            grpc.method_handlers_generic_handler(
                _LOGS_SERVICE, {"Export": unary(self.export_logs)}
            ),
        ]


def _serialize(message: Message) -> bytes:
    data: bytes = message.SerializeToString()
    return data


async def start_grpc_server(
    address: str, sink: Sink, stats: ReceiverStats, limits: Limits
) -> tuple[grpc.aio.Server, int]:
    """Start an OTLP/gRPC server on `address` ("host:port", port 0 picks one).

    Returns the started server and the bound port. Raises `RuntimeError` when the address cannot
    be bound.
    """
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limits.grpc_max_message_bytes),
            # Without this a second analyzer on the same port would silently share its traffic.
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers(GRPCReceiver(sink, stats, limits).handlers())
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        await server.stop(None)
        raise
    if port == 0:
        await server.stop(None)
        raise RuntimeError(f"could not bind {address}")
    await server.start()
    log.debug("OTLP/gRPC listening on %s (port %d)", address, port)
    return server, port
