"""An OTLP receiver (gRPC and HTTP/protobuf) on loopback that records what arrives, for tests.

Tests point the real OpenTelemetry exporters at it and assert on the protobufs received. It can
also misbehave the ways a collector does in production: refuse (gRPC UNAVAILABLE / HTTP 503),
answer garbage (gRPC junk response bytes / HTTP 200 with a junk body) or black-hole (accept the
TCP connection and never answer).
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2

__all__ = ["Mode", "OTLPReceiver", "Received", "any_value", "attributes_to_dict", "iter_points"]

Mode = Literal["ok", "refuse", "garbage", "blackhole"]
Received = tuple[dict[str, Any], Any]

_JUNK = b"\xff\xfe\x00garbage, not a protobuf\x9c\x01\x02"

# signal -> (gRPC service name, request type, response type, HTTP path)
_SIGNALS: dict[str, tuple[str, Any, Any, str]] = {
    "traces": (
        "opentelemetry.proto.collector.trace.v1.TraceService",
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
        "/v1/traces",
    ),
    "metrics": (
        "opentelemetry.proto.collector.metrics.v1.MetricsService",
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
        "/v1/metrics",
    ),
    "logs": (
        "opentelemetry.proto.collector.logs.v1.LogsService",
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
        "/v1/logs",
    ),
}


def any_value(value: common_pb2.AnyValue) -> Any:
    """The Python value of an OTLP AnyValue."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_to_dict(value.kvlist_value.values)
    return getattr(value, kind)


def attributes_to_dict(attributes: Any) -> dict[str, Any]:
    """OTLP KeyValue list → plain dict."""
    return {kv.key: any_value(kv.value) for kv in attributes}


class OTLPReceiver:
    """Records OTLP requests arriving over gRPC and HTTP on 127.0.0.1; a context manager.

    ``mode`` can be changed while running between ``ok``, ``refuse`` and ``garbage``; ``blackhole``
    is chosen at construction (the listeners are then plain sockets that never answer).
    """

    def __init__(self, mode: Mode = "ok") -> None:
        self.mode: Mode = mode
        self._blackhole = mode == "blackhole"
        self._lock = threading.Condition()
        self._requests: list[tuple[str, str, Any]] = []  # (signal, transport, request)
        self.headers: list[dict[str, str]] = []  # metadata / HTTP headers of each request
        self.request_count = 0
        self._grpc_server: grpc.Server | None = None
        self._http_server: ThreadingHTTPServer | None = None
        self._sockets: list[socket.socket] = []
        self._held: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()
        self.grpc_port = 0
        self.http_port = 0

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> OTLPReceiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def grpc_endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` of the gRPC listener."""
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` of the HTTP listener (append ``/v1/traces`` etc.)."""
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        """Bind both listeners on ephemeral loopback ports and serve in background threads."""
        if self._blackhole:
            self.grpc_port = self._start_blackhole()
            self.http_port = self._start_blackhole()
            return
        self._start_grpc()
        self._start_http()

    def stop(self) -> None:
        """Stop serving and close every socket."""
        self._closing.set()
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None).wait(5)
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
        for sock in self._sockets + self._held:
            sock.close()
        for thread in self._threads:
            thread.join(5)

    # -- what arrived ----------------------------------------------------------------------
    def requests(self, signal: str | None = None) -> list[Any]:
        """Raw export requests received, optionally of one signal."""
        with self._lock:
            return [req for sig, _, req in self._requests if signal in (None, sig)]

    def transports(self) -> list[str]:
        """``grpc`` or ``http`` for each received request, in order."""
        with self._lock:
            return [transport for _, transport, _ in self._requests]

    def spans(self) -> list[Received]:
        """Every span received, with its resource's attributes."""
        return [
            (attributes_to_dict(rs.resource.attributes), span)
            for req in self.requests("traces")
            for rs in req.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]

    def metrics(self) -> list[Received]:
        """Every metric received, with its resource's attributes."""
        return [
            (attributes_to_dict(rm.resource.attributes), metric)
            for req in self.requests("metrics")
            for rm in req.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
        ]

    def logs(self) -> list[Received]:
        """Every log record received, with its resource's attributes."""
        return [
            (attributes_to_dict(rl.resource.attributes), record)
            for req in self.requests("logs")
            for rl in req.resource_logs
            for sl in rl.scope_logs
            for record in sl.log_records
        ]

    def wait_for(self, predicate: Callable[[OTLPReceiver], bool], timeout: float = 5.0) -> bool:
        """Wait until ``predicate(self)`` holds (checked as requests arrive); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                if predicate(self):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(min(remaining, 0.05))

    # -- internals -------------------------------------------------------------------------
    def _record(self, signal: str, transport: str, request: Any, headers: dict[str, str]) -> None:
        with self._lock:
            self.request_count += 1
            self.headers.append(headers)
            if self.mode == "ok":
                self._requests.append((signal, transport, request))
            self._lock.notify_all()

    def _start_grpc(self) -> None:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handlers = {}
        for signal, (service, request_type, response_type, _) in _SIGNALS.items():
            handlers[service] = grpc.method_handlers_generic_handler(
                service,
                {
                    "Export": grpc.unary_unary_rpc_method_handler(
                        self._grpc_export(signal, response_type),
                        request_deserializer=request_type.FromString,
                        response_serializer=self._serialize_response,
                    )
                },
            )
        server.add_generic_rpc_handlers(tuple(handlers.values()))
        self.grpc_port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._grpc_server = server

    def _serialize_response(self, response: Any) -> bytes:
        if self.mode == "garbage":
            return _JUNK
        return bytes(response.SerializeToString())

    def _grpc_export(self, signal: str, response_type: Any) -> Callable[[Any, Any], Any]:
        def export(request: Any, context: grpc.ServicerContext) -> Any:
            headers = {key: str(value) for key, value in context.invocation_metadata()}
            self._record(signal, "grpc", request, headers)
            if self.mode == "refuse":
                context.abort(grpc.StatusCode.UNAVAILABLE, "refused by test receiver")
            return response_type()

        return export

    def _start_http(self) -> None:
        receiver = self
        routes = {path: (signal, req) for signal, (_, req, _, path) in _SIGNALS.items()}

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                route = routes.get(self.path)
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if route is None:
                    self._answer(404, b"")
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                signal, request_type = route
                request = request_type.FromString(body)
                receiver._record(signal, "http", request, dict(self.headers.items()))
                if receiver.mode == "refuse":
                    self._answer(503, b"refused by test receiver", {"Retry-After": "1"})
                elif receiver.mode == "garbage":
                    self._answer(200, _JUNK)
                else:
                    self._answer(200, b"")

            def _answer(
                self, status: int, body: bytes, extra: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self.http_port = int(server.server_address[1])
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        self._http_server = server
        self._threads.append(thread)

    def _start_blackhole(self) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        sock.settimeout(0.05)
        self._sockets.append(sock)
        thread = threading.Thread(target=self._hold_connections, args=(sock,), daemon=True)
        thread.start()
        self._threads.append(thread)
        return int(sock.getsockname()[1])

    def _hold_connections(self, sock: socket.socket) -> None:
        # Accept and keep each connection open without reading or writing: the client's
        # request is never answered, as with a collector behind a dropping firewall.
        while not self._closing.is_set():
            try:
                conn, _ = sock.accept()
            except (TimeoutError, OSError):
                continue
            with self._lock:
                self.request_count += 1
                self._held.append(conn)
                self._lock.notify_all()


def iter_points(metric: Any) -> Iterator[Any]:
    """The data points of a metric protobuf, whatever its type."""
    kind = metric.WhichOneof("data")
    if kind is None:
        return iter(())
    return iter(getattr(metric, kind).data_points)
