"""End to end: the official OpenTelemetry SDK exporters (gRPC, HTTP) send to a running analyzer."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from watchman_collector.config import AnalyzerConfig
from watchman_collector.serve import AnalyzerServer, BoundAddresses

pytestmark = pytest.mark.integration

WAIT_S = 20.0


@contextlib.contextmanager
def running_server(**changes: object) -> Iterator[tuple[AnalyzerServer, BoundAddresses]]:
    """`watchman serve` in-process on free loopback ports, its event loop in a thread."""
    config = AnalyzerConfig(
        otlp_grpc="127.0.0.1:0",
        otlp_http="127.0.0.1:0",
        api="127.0.0.1:0",
        tick_interval=0.2,
        pair_ttl=1.0,
    ).replace(**changes)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="watchman-serve", daemon=True)
    thread.start()

    async def start() -> tuple[AnalyzerServer, BoundAddresses]:
        server = AnalyzerServer(config)
        return server, await server.start()

    server, addresses = asyncio.run_coroutine_threadsafe(start(), loop).result(WAIT_S)
    try:
        yield server, addresses
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(grace_s=1.0), loop).result(WAIT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT_S)
        loop.close()


def wait_for(probe: Callable[[], object], what: str) -> object:
    """Poll `probe` until it returns something truthy; fail naming `what` after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def tracer_provider(service: str, exporter) -> TracerProvider:
    resource = Resource.create({"service.name": service, "service.instance.id": f"{service}-1"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def send_calls(addresses: BoundAddresses, calls: int, failed_every: int) -> None:
    """frontend (gRPC exporter) calls backend (HTTP exporter), which queries PostgreSQL."""
    front = tracer_provider(
        "frontend", GrpcSpanExporter(endpoint=addresses.otlp_grpc, insecure=True)
    )
    back = tracer_provider(
        "backend", HttpSpanExporter(endpoint=f"http://{addresses.otlp_http}/v1/traces")
    )
    try:
        front_tracer = front.get_tracer("e2e")
        back_tracer = back.get_tracer("e2e")
        for i in range(calls):
            failed = failed_every > 0 and i % failed_every == 0
            with front_tracer.start_as_current_span("GET /api", kind=SpanKind.CLIENT) as client:
                ctx = trace.set_span_in_context(client)
                status = 500 if failed else 200
                with back_tracer.start_as_current_span(
                    "GET /api",
                    context=ctx,
                    kind=SpanKind.SERVER,
                    attributes={"http.response.status_code": status},
                ) as server:
                    with back_tracer.start_as_current_span(
                        "SELECT", kind=SpanKind.CLIENT, attributes={"db.system.name": "postgresql"}
                    ):
                        pass
                    if failed:
                        server.set_status(Status(StatusCode.ERROR))
                if failed:
                    client.set_status(Status(StatusCode.ERROR))
    finally:
        front.shutdown()
        back.shutdown()


def send_heartbeat(addresses: BoundAddresses, service: str) -> None:
    """One `watchman.heartbeat` datapoint through the SDK's OTLP/HTTP metric exporter."""
    resource = Resource.create({"service.name": service, "service.instance.id": f"{service}-1"})
    exporter = OTLPMetricExporter(endpoint=f"http://{addresses.otlp_http}/v1/metrics")
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(resource=resource, metric_readers=[reader])

    def uptime(options: CallbackOptions):
        return [Observation(42.0)]

    provider.get_meter("e2e").create_observable_gauge("watchman.heartbeat", callbacks=[uptime])
    # shutdown() collects and exports once; a force_flush() first would send a second datapoint
    # milliseconds later, and the graph would learn a milliseconds heartbeat interval.
    provider.shutdown()


def edges(api: str) -> dict[tuple[str, str], dict]:
    body = httpx.get(f"http://{api}/api/v1/graph", params={"window": "15m"}, timeout=10).json()
    return {(e["client"], e["server"]): e for e in body["edges"]}


def test_sdk_exporters_build_the_graph_and_metrics():
    """gRPC and HTTP senders: edges with counts and failures in the API and in /metrics."""
    with running_server() as (_, addresses):
        send_calls(addresses, calls=12, failed_every=4)
        send_heartbeat(addresses, "backend")
        api = addresses.api

        def complete():
            found = edges(api)
            done = found.get(("frontend", "backend"), {}).get("total", {}).get("calls") == 12
            return found if done and ("backend", "postgresql") in found else None

        found = wait_for(complete, "frontend->backend and backend->postgresql edges")
        front = found[("frontend", "backend")]
        assert front["total"] == {"calls": 12, "failed": 3}
        assert front["connection_type"] == ""
        assert front["window"]["p95_s"] is not None
        db = found[("backend", "postgresql")]
        assert db["connection_type"] == "database"
        assert db["total"]["calls"] == 12

        backend = httpx.get(f"http://{api}/api/v1/services/backend", timeout=10).json()
        wait_for(
            lambda: (
                httpx.get(f"http://{api}/api/v1/services/backend", timeout=10).json()["instances"][
                    "up"
                ]
                == 1
            ),
            "the backend heartbeat",
        )
        assert backend["callers"] == ["frontend"]

        metrics = httpx.get(f"http://{api}/metrics", timeout=10).text
        assert (
            'traces_service_graph_request_total{client="frontend",connection_type="",'
            'server="backend"} 12.0'
        ) in metrics
        assert (
            'traces_service_graph_request_failed_total{client="frontend",connection_type="",'
            'server="backend"} 3.0'
        ) in metrics
        assert 'traces_service_graph_request_server_seconds_count{client="frontend"' in metrics
        assert (
            'watchman_receiver_requests_total{outcome="accepted",signal="traces",transport="grpc"}'
            in metrics
        )
        assert (
            'watchman_receiver_requests_total{outcome="accepted",signal="traces",transport="http"}'
            in metrics
        )
        assert 'watchman_instance_up{instance="backend-1",service="backend"} 1.0' in metrics


def test_healthz_is_ready_while_serving_and_stop_is_clean():
    """/healthz answers 200 while serving; stop() leaves no listener behind."""
    with running_server() as (server, addresses):
        assert httpx.get(f"http://{addresses.api}/healthz", timeout=10).status_code == 200
        assert server.ready
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{addresses.api}/healthz", timeout=2)
