"""End to end: two example services under uvicorn, instrumented by `init()` alone, exporting OTLP.

products (FastAPI) calls store (Starlette) with httpx from an async handler and with requests
from a sync one; every hop must land in one trace, CLIENT span the parent of the callee's SERVER.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import free_port
from tests.sdk.otlp_receiver import OTLPReceiver, attributes_to_dict, iter_points
from watchman_otel._asgi import DURATION_BUCKETS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
SERVER, CLIENT = 2, 3  # OTLP Span.SpanKind
STATUS_ERROR = 2  # OTLP Status.StatusCode


class Services:
    """The store and products example services running as subprocesses on loopback."""

    def __init__(self, receiver: OTLPReceiver) -> None:
        self.store_port = free_port()
        self.products_port = free_port()
        base = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "300",
            "OTEL_PROPAGATORS": "tracecontext,baggage",
        }
        base.pop("WATCHMAN_RAISE_INTERNAL_ERRORS", None)
        # One service exports over gRPC, the other over HTTP: both paths of init() are used.
        store_env = {
            **base,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        }
        products_env = {
            **base,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        }
        store_url = f"http://127.0.0.1:{self.store_port}"
        self.processes = [
            self._start(["examples.store", "--port", str(self.store_port)], store_env),
            self._start(
                [
                    "examples.products",
                    "--port",
                    str(self.products_port),
                    "--downstream",
                    f"store={store_url}",
                ],
                products_env,
            ),
        ]
        for port in (self.store_port, self.products_port):
            self._wait_healthy(port)

    @staticmethod
    def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=env)

    def _wait_healthy(self, port: int) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.processes):
                pytest.fail("an example service exited during start-up")
            try:
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            except requests.ConnectionError:
                time.sleep(0.05)
            else:
                return
        pytest.fail(f"service on port {port} did not start")

    def get(self, path: str, trace_id: str) -> requests.Response:
        headers = {"traceparent": f"00-{trace_id}-{CALLER_SPAN}-01"}
        return requests.get(f"http://127.0.0.1:{self.products_port}{path}", headers=headers)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="module")
def traffic() -> Iterator[tuple[OTLPReceiver, Services, dict[str, str]]]:
    with OTLPReceiver() as receiver:
        services = Services(receiver)
        try:
            traces = {
                "/products/sku-1": CALLER_TRACE,  # httpx, async handler
                "/products/sku-1/stock": CALLER_TRACE[:-4] + "beef",  # requests, sync handler
            }
            for path, trace_id in traces.items():
                assert services.get(path, trace_id).status_code == 200
            assert receiver.wait_for(lambda r: len(_spans_of(r, traces.values())) >= 6, 15)
            assert receiver.wait_for(_has_durations, 15)
            yield receiver, services, traces
        finally:
            services.stop()


def _spans_of(receiver: OTLPReceiver, trace_ids: Any) -> list[tuple[str, Any]]:
    wanted = {bytes.fromhex(t) for t in trace_ids}
    return [
        (resource.get("service.name", ""), span)
        for resource, span in receiver.spans()
        if span.trace_id in wanted
    ]


def _points(receiver: OTLPReceiver, name: str) -> list[tuple[str, Any, Any]]:
    return [
        (resource.get("service.name", ""), metric, point)
        for resource, metric in receiver.metrics()
        if metric.name == name
        for point in iter_points(metric)
    ]


# The store's routes the two requests reach: the metrics are waited for until both are exported
# (an export may come between the two requests).
STORE_ROUTES = {"/products/{sku}", "/stock/{sku}"}


def _store_points(receiver: OTLPReceiver) -> list[tuple[Any, Any]]:
    """The store's `http.server.request.duration` metrics and points."""
    return [
        (metric, point)
        for service, metric, point in _points(receiver, "http.server.request.duration")
        if service == "store"
    ]


def _routes(points: list[tuple[Any, Any]]) -> set[str | None]:
    return {attributes_to_dict(point.attributes).get("http.route") for _, point in points}


def _has_durations(receiver: OTLPReceiver) -> bool:
    servers = {s for s, _, _ in _points(receiver, "http.server.request.duration")}
    clients = {s for s, _, _ in _points(receiver, "http.client.request.duration")}
    return (
        {"store", "products"} <= servers
        and "products" in clients
        and _routes(_store_points(receiver)) >= STORE_ROUTES
    )


def _one(spans: list[tuple[str, Any]], service: str, kind: int) -> Any:
    (span,) = [s for name, s in spans if name == service and s.kind == kind]
    return span


@pytest.mark.parametrize(
    ("path", "route", "store_route"),
    [
        ("/products/sku-1", "/products/{sku}", "/products/{sku}"),
        ("/products/sku-1/stock", "/products/{sku}/stock", "/stock/{sku}"),
    ],
)
def test_one_trace_with_client_parent_of_callee_server(
    traffic: tuple[OTLPReceiver, Services, dict[str, str]], path: str, route: str, store_route: str
) -> None:
    """Caller → products SERVER → products CLIENT → store SERVER is one trace, parent by parent."""
    receiver, services, traces = traffic
    spans = _spans_of(receiver, [traces[path]])
    products_server = _one(spans, "products", SERVER)
    products_client = _one(spans, "products", CLIENT)
    store_server = _one(spans, "store", SERVER)
    assert len(spans) == 3
    assert products_server.parent_span_id.hex() == CALLER_SPAN
    assert products_client.parent_span_id == products_server.span_id
    assert store_server.parent_span_id == products_client.span_id

    assert products_server.name == f"GET {route}"
    assert store_server.name == f"GET {store_route}"
    client = attributes_to_dict(products_client.attributes)
    assert client["server.address"] == "127.0.0.1"
    assert client["server.port"] == services.store_port
    assert client["http.request.method"] == "GET"
    assert client["http.response.status_code"] == 200
    server = attributes_to_dict(store_server.attributes)
    assert server["http.route"] == store_route
    assert server["server.address"] == "127.0.0.1"
    assert server["server.port"] == services.store_port
    assert server["http.response.status_code"] == 200


def test_red_metrics_follow_stable_conventions(
    traffic: tuple[OTLPReceiver, Services, dict[str, str]],
) -> None:
    """Both services export http.server.request.duration (s, advised buckets, route, no path)."""
    receiver, _services, _traces = traffic
    store_points = _store_points(receiver)
    assert _routes(store_points) >= STORE_ROUTES
    for metric, point in store_points:
        assert metric.unit == "s"
        assert tuple(point.explicit_bounds) == DURATION_BUCKETS
        assert "url.path" not in attributes_to_dict(point.attributes)
    client_points = [
        attributes_to_dict(point.attributes)
        for service, metric, point in _points(receiver, "http.client.request.duration")
        if service == "products"
    ]
    assert client_points
    assert all(attributes["server.address"] == "127.0.0.1" for attributes in client_points)
    active = [
        (metric, attributes_to_dict(point.attributes))
        for service, metric, point in _points(receiver, "http.server.active_requests")
        if service == "store"
    ]
    assert active
    assert all(metric.unit == "{request}" for metric, _ in active)
    assert {"http.request.method": "GET", "url.scheme": "http"} in [a for _, a in active]


def test_fault_in_callee_fails_callee_and_caller(
    traffic: tuple[OTLPReceiver, Services, dict[str, str]],
) -> None:
    """The store's fault switch fails its SERVER span (503) and the caller's SERVER span (502)."""
    receiver, services, _traces = traffic
    switch = f"http://127.0.0.1:{services.store_port}/fault"
    trace_id = CALLER_TRACE[:-4] + "dead"
    requests.post(switch, json={"error_rate": 1, "status": 503}, timeout=5).raise_for_status()
    try:
        assert services.get("/products/sku-1", trace_id).status_code == 502
    finally:
        requests.delete(switch, timeout=5).raise_for_status()
    assert services.get("/products/sku-1", CALLER_TRACE[:-4] + "0a0a").status_code == 200
    assert receiver.wait_for(lambda r: len(_spans_of(r, [trace_id])) >= 3, 15)
    spans = _spans_of(receiver, [trace_id])
    store_server = _one(spans, "store", SERVER)
    products_server = _one(spans, "products", SERVER)
    assert attributes_to_dict(store_server.attributes)["error.type"] == "503"
    assert attributes_to_dict(products_server.attributes)["error.type"] == "502"
    assert store_server.status.code == products_server.status.code == STATUS_ERROR
    client = attributes_to_dict(_one(spans, "products", CLIENT).attributes)
    assert client["http.response.status_code"] == 503
