"""Outbound HTTP instrumentation: CLIENT spans, http.client.* metrics, injected W3C headers."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry import baggage, context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from watchman_otel import _outbound
from watchman_otel._errors import ConfigurationError
from watchman_otel._outbound import LIBRARIES, instrument_outbound, uninstrument_outbound


class EchoServer:
    """A loopback HTTP server that answers with the request headers it received."""

    def __init__(self) -> None:
        self.received: list[dict[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.received.append({k.lower(): v for k, v in self.headers.items()})
                status = 500 if self.path.startswith("/fail") else 200
                body = json.dumps({"path": self.path}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server() -> Iterator[EchoServer]:
    echo = EchoServer()
    yield echo
    echo.close()


class Outbound:
    """In-memory SDK providers and the outbound instrumentation installed with them."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def install(self, names: list[str] | None = None, *, explicit: bool = True) -> list[str]:
        return instrument_outbound(
            names=names,
            explicit=explicit,
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            excluded_urls=["^/healthz$"],
        )

    def client_spans(self) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]

    def duration_points(self) -> list[Any]:
        data = self.reader.get_metrics_data()
        return [
            point
            for resource_metrics in (data.resource_metrics if data else ())
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
            if metric.name == "http.client.request.duration"
            for point in metric.data.data_points
        ]


@pytest.fixture
def outbound(monkeypatch: pytest.MonkeyPatch) -> Iterator[Outbound]:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    yield Outbound()
    uninstrument_outbound()


def _assert_client_span(span: ReadableSpan, server: EchoServer, status: int = 200) -> None:
    attributes = dict(span.attributes or {})
    assert span.name == "GET"
    assert attributes["http.request.method"] == "GET"
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == server.port
    assert attributes["http.response.status_code"] == status
    assert attributes["url.full"].startswith(server.url)


def _assert_traceparent_names(span: ReadableSpan, headers: dict[str, str]) -> None:
    _version, trace_id, span_id, _flags = headers["traceparent"].split("-")
    assert trace_id == format(span.context.trace_id, "032x")
    assert span_id == format(span.context.span_id, "016x")


def test_requests_client_span_metrics_and_propagation(
    outbound: Outbound, server: EchoServer
) -> None:
    """requests: a CLIENT span with host-only server.address, a duration point, W3C headers."""
    import requests

    assert outbound.install(["requests"]) == ["requests"]
    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with outbound.tracer_provider.get_tracer("test").start_as_current_span("caller"):
            assert requests.get(f"{server.url}/orders/1", timeout=5).status_code == 200
    finally:
        context.detach(token)
    (span,) = outbound.client_spans()
    _assert_client_span(span, server)
    (headers,) = server.received
    _assert_traceparent_names(span, headers)
    assert headers["baggage"] == "tenant=acme"
    (point,) = outbound.duration_points()
    assert point.count == 1
    assert point.attributes["server.address"] == "127.0.0.1"
    assert point.attributes["http.response.status_code"] == 200


def test_requests_5xx_is_an_error(outbound: Outbound, server: EchoServer) -> None:
    """A 5xx answer marks the CLIENT span with error.type."""
    import requests

    outbound.install(["requests"])
    requests.get(f"{server.url}/fail", timeout=5)
    (span,) = outbound.client_spans()
    _assert_client_span(span, server, status=500)
    assert (span.attributes or {})["error.type"] == "500"


def test_httpx_sync_client(outbound: Outbound, server: EchoServer) -> None:
    """httpx.Client calls get CLIENT spans and injected traceparent."""
    import httpx

    assert outbound.install(["httpx"]) == ["httpx"]
    with httpx.Client() as client:
        client.get(f"{server.url}/a")
    (span,) = outbound.client_spans()
    _assert_client_span(span, server)
    _assert_traceparent_names(span, server.received[0])


@pytest.mark.asyncio
async def test_httpx_async_client(outbound: Outbound, server: EchoServer) -> None:
    """httpx.AsyncClient calls get CLIENT spans too."""
    import httpx

    outbound.install(["httpx"])
    async with httpx.AsyncClient() as client:
        await client.get(f"{server.url}/a")
    (span,) = outbound.client_spans()
    _assert_client_span(span, server)


def test_urllib3(outbound: Outbound, server: EchoServer) -> None:
    """urllib3 calls get CLIENT spans and injected traceparent."""
    import urllib3

    assert outbound.install(["urllib3"]) == ["urllib3"]
    with urllib3.PoolManager() as pool:
        pool.request("GET", f"{server.url}/u")
    (span,) = outbound.client_spans()
    _assert_client_span(span, server)
    _assert_traceparent_names(span, server.received[0])


@pytest.mark.asyncio
async def test_aiohttp_client(outbound: Outbound, server: EchoServer) -> None:
    """aiohttp client sessions get CLIENT spans and injected traceparent."""
    import aiohttp

    assert outbound.install(["aiohttp-client"]) == ["aiohttp-client"]
    async with aiohttp.ClientSession() as session, session.get(f"{server.url}/x") as response:
        await response.read()
    (span,) = outbound.client_spans()
    _assert_client_span(span, server)
    _assert_traceparent_names(span, server.received[0])


def test_all_installed_by_default(outbound: Outbound) -> None:
    """names=None instruments every library that is installed (all four here)."""
    assert outbound.install(None, explicit=False) == list(LIBRARIES)


def test_excluded_urls_are_anchored_on_the_path(outbound: Outbound, server: EchoServer) -> None:
    """An excluded path makes no CLIENT span; a path that only contains it still does."""
    import requests

    outbound.install(["requests"])
    requests.get(f"{server.url}/healthz", timeout=5)
    requests.get(f"{server.url}/healthz?full=1", timeout=5)
    requests.get(f"{server.url}/api/healthz-report", timeout=5)
    assert [dict(s.attributes or {})["url.full"] for s in outbound.client_spans()] == [
        f"{server.url}/api/healthz-report"
    ]


def test_instrument_twice_is_harmless(outbound: Outbound, server: EchoServer) -> None:
    """A second identical call changes nothing: still one span per request."""
    import requests

    outbound.install(["requests"])
    outbound.install(["requests"])
    requests.get(f"{server.url}/once", timeout=5)
    assert len(outbound.client_spans()) == 1


def test_new_providers_reinstrument(outbound: Outbound, server: EchoServer) -> None:
    """Calling again with other providers moves the spans to them (init after shutdown)."""
    import requests

    outbound.install(["requests"])
    other = Outbound()
    other.install(["requests"])
    requests.get(f"{server.url}/moved", timeout=5)
    assert outbound.client_spans() == []
    assert len(other.client_spans()) == 1


def test_uninstrument_stops_spans(outbound: Outbound, server: EchoServer) -> None:
    """After uninstrument_outbound requests makes no spans and injects no headers."""
    import requests

    outbound.install(["requests"])
    uninstrument_outbound()
    uninstrument_outbound()
    with outbound.tracer_provider.get_tracer("test").start_as_current_span("caller"):
        requests.get(f"{server.url}/plain", timeout=5)
    assert outbound.client_spans() == []
    assert "traceparent" not in server.received[0]


def test_missing_library_named_explicitly_names_the_extra(
    outbound: Outbound, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A library asked for by name but not installed raises with the pip extra to install."""
    absent = dataclasses.replace(LIBRARIES["httpx"], module="httpx_absent_for_this_test")
    monkeypatch.setitem(LIBRARIES, "httpx", absent)
    with pytest.raises(ConfigurationError, match=r"pip install 'watchman-otel\[httpx\]'"):
        outbound.install(["httpx"])


def test_missing_library_is_skipped_when_auto_enabled(
    outbound: Outbound, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When not asked for by name a missing library is skipped quietly."""
    absent = dataclasses.replace(LIBRARIES["aiohttp-client"], module="aiohttp_absent_for_test")
    monkeypatch.setitem(LIBRARIES, "aiohttp-client", absent)
    assert "aiohttp-client" not in outbound.install(None, explicit=False)
    assert "aiohttp-client" not in outbound.install(["aiohttp-client", "requests"], explicit=False)


def test_unknown_name_is_a_configuration_error(outbound: Outbound) -> None:
    """An unknown library name is rejected, listing the known ones."""
    with pytest.raises(ConfigurationError, match="aiohttp-client"):
        outbound.install(["curl"])
    assert _outbound._active == {}


def test_stable_semconv_even_if_read_too_early(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the opt-in was read before it was set, it is read again so stable names are used."""
    from opentelemetry.instrumentation._semconv import (
        _OpenTelemetrySemanticConventionStability as Stability,
    )
    from opentelemetry.instrumentation._semconv import (
        _OpenTelemetryStabilitySignalType,
        _StabilityMode,
    )

    monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN", raising=False)
    Stability._initialized = False
    Stability._initialize()
    mode = Stability._get_opentelemetry_stability_opt_in_mode(
        _OpenTelemetryStabilitySignalType.HTTP
    )
    assert mode is _StabilityMode.DEFAULT
    _outbound._ensure_stable_semconv()
    mode = Stability._get_opentelemetry_stability_opt_in_mode(
        _OpenTelemetryStabilitySignalType.HTTP
    )
    assert mode is _StabilityMode.HTTP
