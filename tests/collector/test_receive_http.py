"""The OTLP/HTTP receiver under uvicorn on loopback: SDK exporters, then hostile raw requests."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import pytest_asyncio
import uvicorn
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric, NumberDataPoint
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from watchman_collector.intake import Limits, ReceiverStats
from watchman_collector.otlp_json import dump_request
from watchman_collector.receive_http import make_otlp_http_app
from watchman_collector.records import Batch

CAP = 1024 * 1024
PB = {"content-type": "application/x-protobuf"}
JSON = {"content-type": "application/json"}


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

    @property
    def spans(self) -> int:
        return sum(len(b.spans) for b in self.batches)


@dataclass
class Receiver:
    port: int
    sink: Recorder
    stats: ReceiverStats
    client: httpx.AsyncClient

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Leave pytest's signal handlers alone.
        yield


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    sink, stats = Recorder(), ReceiverStats()
    app = make_otlp_http_app(sink, stats, Limits(http_max_body_bytes=CAP, retry_after_s=1))
    sock = socket.create_server(("127.0.0.1", 0))
    server = _Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    assert server.started
    port = sock.getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield Receiver(port, sink, stats, client)
    finally:
        server.should_exit = True
        await task
        sock.close()


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


def _trace_request(*span_ids: bytes) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="s")))
    spans = rs.scope_spans.add().spans
    for span_id in span_ids:
        spans.add(trace_id=b"\x01" * 16, span_id=span_id, kind=2)
    return req


def _export(endpoint: str, compression: Compression) -> SpanExportResult:
    exporter = OTLPSpanExporter(endpoint=endpoint, compression=compression, timeout=10)
    try:
        return exporter.export(_sdk_spans(3))
    finally:
        exporter.shutdown()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "compression", [Compression.Gzip, Compression.Deflate, Compression.NoCompression]
)
async def test_sdk_exporter_delivers_spans(receiver: Receiver, compression: Compression) -> None:
    """The OpenTelemetry HTTP span exporter delivers spans, compressed or not."""
    result = await asyncio.to_thread(_export, f"{receiver.url}/v1/traces", compression)
    assert result is SpanExportResult.SUCCESS
    assert receiver.sink.spans == 3
    assert receiver.stats.requests[("http", "traces", "accepted")] == 1
    assert receiver.stats.spans[("http", "accepted")] == 3


@pytest.mark.asyncio
async def test_sdk_exporter_retries_after_503(receiver: Receiver) -> None:
    """An overloaded analyzer answers 503 with Retry-After; the SDK exporter retries and lands."""
    receiver.sink.answers = [False]
    result = await asyncio.to_thread(_export, f"{receiver.url}/v1/traces", Compression.Gzip)
    assert result is SpanExportResult.SUCCESS
    assert receiver.sink.spans == 3
    assert receiver.stats.requests[("http", "traces", "refused")] == 1
    assert receiver.stats.refused[("http", "overloaded")] == 1


@pytest.mark.asyncio
async def test_overload_is_503_with_retry_after(receiver: Receiver) -> None:
    """Overload is 503 + Retry-After with a Status holding RetryInfo, in the request's encoding."""
    receiver.sink.answers = [False, False]
    body = _trace_request(b"\x02" * 8).SerializeToString()
    response = await receiver.client.post("/v1/traces", content=body, headers=PB)
    assert (response.status_code, response.headers["retry-after"]) == (503, "1")
    assert response.headers["content-type"] == "application/x-protobuf"
    status = status_pb2.Status.FromString(response.content)
    retry = error_details_pb2.RetryInfo()
    assert status.code == code_pb2.UNAVAILABLE
    assert status.details[0].Unpack(retry)
    assert retry.retry_delay.seconds == 1
    as_json = await receiver.client.post(
        "/v1/traces", content=dump_request(_trace_request(b"\x02" * 8)), headers=JSON
    )
    assert as_json.status_code == 503
    assert as_json.json()["code"] == code_pb2.UNAVAILABLE


@pytest.mark.asyncio
async def test_json_request_gets_json_response(receiver: Receiver) -> None:
    """OTLP/JSON from the SDK's own encoding is accepted and answered in JSON."""
    body = dump_request(encode_spans(_sdk_spans(2)))
    response = await receiver.client.post(
        "/v1/traces", content=body, headers={"content-type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {}
    assert receiver.sink.spans == 2


@pytest.mark.asyncio
async def test_partial_success_in_both_encodings(receiver: Receiver) -> None:
    """Unusable spans are reported in partial_success, protobuf and JSON alike."""
    req = _trace_request(b"\x02" * 8, b"\x00" * 8)
    pb = await receiver.client.post("/v1/traces", content=req.SerializeToString(), headers=PB)
    parsed = ExportTraceServiceResponse.FromString(pb.content)
    assert pb.status_code == 200
    assert parsed.partial_success.rejected_spans == 1
    assert "span_id is all zero" in parsed.partial_success.error_message
    js = await receiver.client.post("/v1/traces", content=dump_request(req), headers=JSON)
    assert js.status_code == 200
    assert js.json()["partialSuccess"]["rejectedSpans"] == "1"
    assert receiver.stats.spans[("http", "rejected")] == 2
    assert receiver.sink.spans == 2


@pytest.mark.asyncio
async def test_bad_input_is_400_and_service_goes_on(receiver: Receiver) -> None:
    """Invalid JSON, truncated protobuf and short hex ids are 400 with a Status; next one is OK."""
    bad_json = await receiver.client.post("/v1/traces", content=b"{nope", headers=JSON)
    assert bad_json.status_code == 400
    assert bad_json.json()["code"] == code_pb2.INVALID_ARGUMENT
    assert "invalid JSON" in bad_json.json()["message"]

    good = _trace_request(b"\x02" * 8, b"\x03" * 8).SerializeToString()
    truncated = await receiver.client.post("/v1/traces", content=good[:-5], headers=PB)
    assert truncated.status_code == 400
    assert "cannot decode" in status_pb2.Status.FromString(truncated.content).message

    doc = json.loads(dump_request(_trace_request(b"\x02" * 8)))
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] = "ab" * 15
    short = await receiver.client.post("/v1/traces", content=json.dumps(doc), headers=JSON)
    assert short.status_code == 400
    assert "traceId: expected 32 hex characters, got 30" in short.json()["message"]

    ok = await receiver.client.post("/v1/traces", content=good, headers=PB)
    assert ok.status_code == 200
    assert receiver.stats.refused[("http", "malformed")] == 3
    assert receiver.sink.spans == 2


@pytest.mark.asyncio
async def test_unsupported_content_type_is_415(receiver: Receiver) -> None:
    """Content types other than protobuf and JSON, or none, are 415."""
    for headers in ({"content-type": "text/plain"}, {}):
        response = await receiver.client.post("/v1/traces", content=b"x", headers=headers)
        assert response.status_code == 415
    assert receiver.stats.refused[("http", "unsupported_media_type")] == 2


@pytest.mark.asyncio
async def test_unsupported_content_encoding_is_415(receiver: Receiver) -> None:
    """A compression the receiver cannot undo is 415, not a decode error."""
    response = await receiver.client.post(
        "/v1/traces", content=b"x", headers={**PB, "content-encoding": "br"}
    )
    assert response.status_code == 415
    assert "content encoding" in status_pb2.Status.FromString(response.content).message


@pytest.mark.asyncio
async def test_declared_oversize_is_413_before_reading(receiver: Receiver) -> None:
    """A Content-Length above the cap is refused at once, without waiting for the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", receiver.port)
    writer.write(
        b"POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\n"
        b"content-length: 1000000000\r\n\r\n"
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert status_line.split()[1] == b"413"
    assert receiver.stats.refused[("http", "too_large")] == 1


@pytest.mark.asyncio
async def test_streamed_oversize_is_413(receiver: Receiver) -> None:
    """A chunked body that grows past the cap is refused with 413."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(CAP // 65536 + 2):
            yield b"\x00" * 65536

    response = await receiver.client.post("/v1/traces", content=chunks(), headers=PB)
    assert response.status_code == 413


def _bomb(expanded: int) -> Iterator[bytes]:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\x00" * (1024 * 1024)
    for _ in range(expanded // len(block)):
        yield packer.compress(block)
    yield packer.flush()


@pytest.mark.asyncio
async def test_gzip_bomb_stops_at_the_cap(receiver: Receiver) -> None:
    """A 64 MiB gzip bomb is 413 after at most the cap is inflated, with bounded memory."""
    body = b"".join(_bomb(64 * 1024 * 1024))
    assert len(body) < CAP
    tracemalloc.start()
    try:
        response = await receiver.client.post(
            "/v1/traces", content=body, headers={**PB, "content-encoding": "gzip"}
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 413
    assert "after decompression" in status_pb2.Status.FromString(response.content).message
    assert peak < 8 * CAP
    ok = await receiver.client.post(
        "/v1/traces",
        content=gzip.compress(_trace_request(b"\x02" * 8).SerializeToString()),
        headers={**PB, "content-encoding": "gzip"},
    )
    assert ok.status_code == 200


@pytest.mark.asyncio
async def test_bad_gzip_is_400(receiver: Receiver) -> None:
    """Garbage or a truncated gzip stream is 400 with the reason."""
    packed = gzip.compress(_trace_request(b"\x02" * 8).SerializeToString())
    for body, words in ((b"not gzip at all", "cannot decompress"), (packed[:-9], "truncated")):
        response = await receiver.client.post(
            "/v1/traces", content=body, headers={**PB, "content-encoding": "gzip"}
        )
        assert response.status_code == 400
        assert words in status_pb2.Status.FromString(response.content).message


@pytest.mark.asyncio
async def test_concatenated_gzip_members(receiver: Receiver) -> None:
    """A body of several gzip members is one body, as RFC 1952 allows."""
    data = _trace_request(b"\x02" * 8, b"\x03" * 8).SerializeToString()
    body = gzip.compress(data[:10]) + gzip.compress(data[10:])
    response = await receiver.client.post(
        "/v1/traces", content=body, headers={**PB, "content-encoding": "gzip"}
    )
    assert response.status_code == 200
    assert receiver.sink.spans == 2


@pytest.mark.asyncio
async def test_metrics_and_logs(receiver: Receiver) -> None:
    """/v1/metrics decodes heartbeats; /v1/logs is accepted and counted without queueing."""
    req = ExportMetricsServiceRequest()
    beat = Metric(name="watchman.heartbeat")
    beat.gauge.data_points.append(NumberDataPoint(time_unix_nano=9, as_double=2.0))
    req.resource_metrics.add().scope_metrics.add().metrics.append(beat)
    metrics = await receiver.client.post("/v1/metrics", content=req.SerializeToString(), headers=PB)
    assert metrics.status_code == 200
    (hb,) = receiver.sink.batches[0].heartbeats
    assert (hb.uptime_s, hb.time_ns) == (2.0, 9)
    logs = await receiver.client.post(
        "/v1/logs",
        content=json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [{}]}]}]}),
        headers=JSON,
    )
    assert (logs.status_code, logs.json()) == (200, {})
    assert len(receiver.sink.batches) == 1
    assert receiver.stats.requests[("http", "logs", "accepted")] == 1


@pytest.mark.asyncio
async def test_unknown_path_and_method(receiver: Receiver) -> None:
    """Other paths are 404; GET on an export path is 405 with Allow: POST."""
    assert (await receiver.client.post("/v1/profiles", content=b"", headers=PB)).status_code == 404
    get = await receiver.client.get("/v1/traces")
    assert (get.status_code, get.headers["allow"]) == (405, "POST")
