"""The OTLP/gRPC receiver on loopback: the SDK's exporter as a client, then hostile raw calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest
import pytest_asyncio
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric, NumberDataPoint
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from watchman_collector.intake import Limits, ReceiverStats
from watchman_collector.receive_grpc import start_grpc_server
from watchman_collector.records import Batch

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
METRICS = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
LOGS = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
SMALL_LIMIT = 64 * 1024


@dataclass
class Recorder:
    """A sink that keeps what it takes; answers from `answers` first, then True."""

    batches: list[Batch] = field(default_factory=list)
    answers: list[bool] = field(default_factory=list)

    def __call__(self, batch: Batch) -> bool:
        taken = self.answers.pop(0) if self.answers else True
        if taken:
            self.batches.append(batch)
        return taken


@dataclass
class Receiver:
    port: int
    sink: Recorder
    stats: ReceiverStats
    channel: grpc.aio.Channel

    def call(self, method: str, response: type) -> grpc.aio.UnaryUnaryMultiCallable:
        return self.channel.unary_unary(method, response_deserializer=response.FromString)


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    sink, stats = Recorder(), ReceiverStats()
    limits = Limits(grpc_max_message_bytes=SMALL_LIMIT, retry_after_s=1)
    server, port = await start_grpc_server("127.0.0.1:0", sink, stats, limits)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Receiver(port, sink, stats, channel)
    finally:
        await channel.close()
        await server.stop(None)


def _sdk_spans(n: int = 3) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "frontend"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    for i in range(n):
        with tracer.start_as_current_span(f"GET /{i}", kind=SpanKind.SERVER):
            pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def _trace_request(*span_ids: bytes, padding: int = 0) -> bytes:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="s")))
    spans = rs.scope_spans.add().spans
    for span_id in span_ids:
        span = spans.add(trace_id=b"\x01" * 16, span_id=span_id, kind=PbSpan.SPAN_KIND_SERVER)
        if padding:
            span.attributes.append(KeyValue(key="pad", value=AnyValue(string_value="x" * padding)))
    return req.SerializeToString()


def _export_in_thread(exporter: OTLPSpanExporter, spans: list[ReadableSpan]) -> SpanExportResult:
    try:
        return exporter.export(spans)
    finally:
        exporter.shutdown()


@pytest.mark.asyncio
async def test_sdk_exporter_delivers_spans(receiver: Receiver) -> None:
    """The OpenTelemetry gRPC span exporter (gzip) delivers decoded spans to the sink."""
    exporter = OTLPSpanExporter(
        endpoint=f"127.0.0.1:{receiver.port}", insecure=True, compression=grpc.Compression.Gzip
    )
    result = await asyncio.to_thread(_export_in_thread, exporter, _sdk_spans(3))
    assert result is SpanExportResult.SUCCESS
    spans = [s for b in receiver.sink.batches for s in b.spans]
    assert sorted(s.name for s in spans) == ["GET /0", "GET /1", "GET /2"]
    assert {s.service for s in spans} == {"frontend"}
    assert receiver.stats.requests[("grpc", "traces", "accepted")] == 1
    assert receiver.stats.spans[("grpc", "accepted")] == 3


@pytest.mark.asyncio
async def test_sdk_exporter_retries_after_overload(receiver: Receiver) -> None:
    """An overloaded analyzer answers UNAVAILABLE with a retry delay; the SDK retries and lands."""
    receiver.sink.answers = [False]
    exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{receiver.port}", insecure=True, timeout=10)
    result = await asyncio.to_thread(_export_in_thread, exporter, _sdk_spans(1))
    assert result is SpanExportResult.SUCCESS
    assert len(receiver.sink.batches) == 1
    assert receiver.stats.requests[("grpc", "traces", "refused")] == 1
    assert receiver.stats.requests[("grpc", "traces", "accepted")] == 1
    assert receiver.stats.refused[("grpc", "overloaded")] == 1
    assert receiver.stats.spans[("grpc", "refused")] == 1


@pytest.mark.asyncio
async def test_overload_status_carries_retry_info(receiver: Receiver) -> None:
    """UNAVAILABLE carries RetryInfo in grpc-status-details-bin and google.rpc.retryinfo-bin."""
    receiver.sink.answers = [False]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await receiver.call(TRACES, ExportTraceServiceResponse)(_trace_request(b"\x02" * 8))
    error = info.value
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    trailers = dict(error.trailing_metadata() or ())
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert status.code == code_pb2.UNAVAILABLE
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry)
    assert retry.retry_delay.seconds == 1
    bare = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
    assert bare == retry


@pytest.mark.asyncio
async def test_truncated_protobuf_is_invalid_argument(receiver: Receiver) -> None:
    """A truncated message is INVALID_ARGUMENT with a message, and the next request succeeds."""
    good = _trace_request(b"\x02" * 8, b"\x03" * 8)
    export = receiver.call(TRACES, ExportTraceServiceResponse)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await export(good[: len(good) - 7])
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot decode the traces request" in (info.value.details() or "")
    assert receiver.stats.refused[("grpc", "malformed")] == 1
    response = await export(good)
    assert not response.HasField("partial_success")
    assert len(receiver.sink.batches[0].spans) == 2


@pytest.mark.asyncio
async def test_bad_ids_get_partial_success(receiver: Receiver) -> None:
    """Spans with bad ids are reported in partial_success; the good ones reach the sink."""
    response = await receiver.call(TRACES, ExportTraceServiceResponse)(
        _trace_request(b"\x02" * 8, b"\x00" * 8, b"\x03" * 4)
    )
    assert response.partial_success.rejected_spans == 2
    assert "span_id is all zero" in response.partial_success.error_message
    assert len(receiver.sink.batches[0].spans) == 1
    assert receiver.stats.spans[("grpc", "rejected")] == 2


@pytest.mark.asyncio
async def test_oversized_message_is_resource_exhausted(receiver: Receiver) -> None:
    """A message above the limit is refused by gRPC with RESOURCE_EXHAUSTED; service goes on."""
    export = receiver.call(TRACES, ExportTraceServiceResponse)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await export(_trace_request(b"\x02" * 8, padding=SMALL_LIMIT))
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (info.value.details() or "")
    assert receiver.sink.batches == []
    await export(_trace_request(b"\x02" * 8), compression=grpc.Compression.Gzip)
    assert len(receiver.sink.batches) == 1


@pytest.mark.asyncio
async def test_metrics_become_heartbeats(receiver: Receiver) -> None:
    """MetricsService/Export decodes watchman.heartbeat points into Heartbeat records."""
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="db")))
    beat = Metric(name="watchman.heartbeat")
    beat.gauge.data_points.append(NumberDataPoint(time_unix_nano=7, as_double=3.0))
    rm.scope_metrics.add().metrics.append(beat)
    call = receiver.call(METRICS, ExportMetricsServiceResponse)
    await call(req.SerializeToString())
    (hb,) = receiver.sink.batches[0].heartbeats
    assert (hb.service, hb.uptime_s, hb.time_ns) == ("db", 3.0, 7)
    assert receiver.stats.requests[("grpc", "metrics", "accepted")] == 1


@pytest.mark.asyncio
async def test_logs_are_accepted_and_counted(receiver: Receiver) -> None:
    """LogsService/Export answers OK and counts; nothing is queued for the analyzer."""
    req = ExportLogsServiceRequest()
    req.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "hello"
    call = receiver.call(LOGS, ExportLogsServiceResponse)
    response = await call(req.SerializeToString())
    assert response == ExportLogsServiceResponse()
    assert receiver.sink.batches == []
    assert receiver.stats.requests[("grpc", "logs", "accepted")] == 1
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(b"\x0a\xff")
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.asyncio
async def test_unknown_method_is_unimplemented(receiver: Receiver) -> None:
    """A method outside the three OTLP services is UNIMPLEMENTED."""
    call = receiver.channel.unary_unary("/opentelemetry.proto.collector.profiles.v1/Export")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(b"")
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.asyncio
async def test_address_in_use_raises() -> None:
    """Binding a port another server holds raises RuntimeError instead of sharing it."""
    stats = ReceiverStats()
    server, port = await start_grpc_server("127.0.0.1:0", Recorder(), stats, Limits())
    try:
        with pytest.raises(RuntimeError):
            await start_grpc_server(f"127.0.0.1:{port}", Recorder(), stats, Limits())
    finally:
        await server.stop(None)


@pytest.mark.asyncio
async def test_fractional_retry_delay() -> None:
    """A sub-second retry hint travels exactly in RetryInfo (seconds and nanos)."""
    server, port = await start_grpc_server(
        "127.0.0.1:0", Recorder(answers=[False]), ReceiverStats(), Limits(retry_after_s=0.25)
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(
                TRACES, response_deserializer=ExportTraceServiceResponse.FromString
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(_trace_request(b"\x02" * 8))
    finally:
        await server.stop(None)
    trailers = dict(info.value.trailing_metadata() or ())
    retry = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
    assert (retry.retry_delay.seconds, retry.retry_delay.nanos) == (0, 250_000_000)
