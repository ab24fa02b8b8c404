"""Inbound ASGI instrumentation: SERVER spans, http.server.* metrics, routing names, guards."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from watchman_otel import _asgi
from watchman_otel._asgi import (
    DURATION_BUCKETS,
    SCOPE_MARKER,
    inflight_requests,
    install_framework_hooks,
    instrument_asgi,
    uninstall_framework_hooks,
)
from watchman_otel._errors import ConfigurationError


class Telemetry:
    """An SDK tracer and meter provider recording in memory, for one test."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def server_spans(self) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.kind is SpanKind.SERVER]

    def metric(self, name: str) -> Any:
        data = self.reader.get_metrics_data()
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == name:
                        return metric
        return None

    def points(self, name: str) -> list[Any]:
        metric = self.metric(name)
        return list(metric.data.data_points) if metric else []

    def server_durations(self) -> list[Any]:
        """Duration points of every instrumentation, old (contrib default) and stable names."""
        data = self.reader.get_metrics_data()
        return [
            point
            for resource_metrics in (data.resource_metrics if data else ())
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
            if metric.name in ("http.server.duration", "http.server.request.duration")
            for point in metric.data.data_points
        ]

    def wrap(self, app: Any, **kwargs: Any) -> Any:
        return instrument_asgi(
            app,
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            **kwargs,
        )


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry()


@pytest.fixture
def hooks(telemetry: Telemetry) -> Any:
    names = install_framework_hooks(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        excluded_urls=["/healthz"],
        frameworks=["starlette", "fastapi"],
    )
    yield names
    uninstall_framework_hooks()


async def _hello(request: Request) -> Response:
    return PlainTextResponse("hello")


async def _boom(request: Request) -> Response:
    raise RuntimeError("boom")


async def _unavailable(request: Request) -> Response:
    return PlainTextResponse("down", status_code=503)


async def _inflight(request: Request) -> Response:
    return JSONResponse({"inflight": inflight_requests()})


def _starlette(**kwargs: Any) -> Starlette:
    return Starlette(
        routes=[
            Route("/items/{item_id:int}", _hello),
            Route("/boom", _boom),
            Route("/unavailable", _unavailable),
            Route("/inflight", _inflight),
            Route("/healthz", _hello),
            Route("/healthz-report", _hello),
            Mount("/api", routes=[Route("/users/{name}", _hello)]),
        ],
        **kwargs,
    )


async def _get(app: Any, path: str, method: str = "GET", **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test:8080") as client:
        return await client.request(method, path, **kwargs)


@pytest.mark.asyncio
async def test_span_named_after_route_with_stable_attributes(telemetry: Telemetry) -> None:
    """A routed request gives one SERVER span `GET /items/{item_id}` with the stable attributes."""
    response = await _get(telemetry.wrap(_starlette()), "/items/42?q=1")
    assert response.status_code == 200
    (span,) = telemetry.spans()
    assert span.kind is SpanKind.SERVER
    assert span.name == "GET /items/{item_id}"
    attributes = dict(span.attributes or {})
    assert attributes["http.route"] == "/items/{item_id}"
    assert attributes["http.request.method"] == "GET"
    assert attributes["url.path"] == "/items/42"
    assert attributes["url.query"] == "q=1"
    assert attributes["url.scheme"] == "http"
    assert attributes["http.response.status_code"] == 200
    assert attributes["server.address"] == "shop.test"
    assert attributes["server.port"] == 8080
    assert attributes["client.address"] == "127.0.0.1"
    assert attributes["network.protocol.version"] == "1.1"
    assert attributes["user_agent.original"].startswith("python-httpx/")
    assert "error.type" not in attributes
    assert span.status.status_code is StatusCode.UNSET


@pytest.mark.asyncio
async def test_unmatched_request_is_named_by_method_only(telemetry: Telemetry) -> None:
    """Without a matched route the span is named `{METHOD}` and carries no http.route; 404 is OK."""
    response = await _get(telemetry.wrap(_starlette()), "/nowhere/123")
    assert response.status_code == 404
    (span,) = telemetry.spans()
    assert span.name == "GET"
    assert "http.route" not in (span.attributes or {})
    assert span.status.status_code is StatusCode.UNSET


@pytest.mark.asyncio
async def test_mounted_route_keeps_mount_prefix(telemetry: Telemetry) -> None:
    """A route inside a Mount is named with the mount prefix and the inner template."""
    await _get(telemetry.wrap(_starlette()), "/api/users/ann")
    (span,) = telemetry.spans()
    assert span.name == "GET /api/users/{name}"


@pytest.mark.asyncio
async def test_5xx_response_is_an_error(telemetry: Telemetry) -> None:
    """A 5xx response sets span status ERROR and error.type to the status code."""
    response = await _get(telemetry.wrap(_starlette()), "/unavailable")
    assert response.status_code == 503
    (span,) = telemetry.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "503"
    (point,) = telemetry.points("http.server.request.duration")
    assert point.attributes["error.type"] == "503"


@pytest.mark.asyncio
async def test_exception_is_recorded_and_reraised(telemetry: Telemetry) -> None:
    """An exception in the app is recorded on the span (error.type, event) and still propagates."""
    response = await _get(telemetry.wrap(_starlette()), "/boom")
    assert response.status_code == 500
    (span,) = telemetry.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "RuntimeError"
    assert [event.name for event in span.events] == ["exception"]


@pytest.mark.asyncio
async def test_plain_asgi_app_exception_without_response(telemetry: Telemetry) -> None:
    """A plain ASGI app that raises before responding gets error.type and no status code."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise KeyError("missing")

    wrapped = telemetry.wrap(app)
    with pytest.raises(KeyError):
        await wrapped({"type": "http", "method": "GET", "path": "/x", "headers": []}, None, None)
    (span,) = telemetry.spans()
    attributes = dict(span.attributes or {})
    assert attributes["error.type"] == "KeyError"
    assert "http.response.status_code" not in attributes


@pytest.mark.asyncio
async def test_duration_histogram_follows_stable_conventions(telemetry: Telemetry) -> None:
    """http.server.request.duration is in seconds, advised buckets, bounded attributes only."""
    app = telemetry.wrap(_starlette())
    for item in (1, 2, 3):
        await _get(app, f"/items/{item}")
    metric = telemetry.metric("http.server.request.duration")
    assert metric.unit == "s"
    (point,) = metric.data.data_points
    assert point.count == 3
    assert tuple(point.explicit_bounds) == DURATION_BUCKETS
    assert dict(point.attributes) == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "http.response.status_code": 200,
        "http.route": "/items/{item_id}",
        "network.protocol.version": "1.1",
    }


@pytest.mark.asyncio
async def test_active_requests_counter_returns_to_zero(telemetry: Telemetry) -> None:
    """http.server.active_requests is an up-down counter by method and scheme, back to 0 after."""
    await _get(telemetry.wrap(_starlette()), "/items/1")
    (point,) = telemetry.points("http.server.active_requests")
    assert dict(point.attributes) == {"http.request.method": "GET", "url.scheme": "http"}
    assert point.value == 0


@pytest.mark.asyncio
async def test_inflight_requests_counts_the_request_being_served(telemetry: Telemetry) -> None:
    """inflight_requests() is 1 inside the only request and 0 once it is done."""
    response = await _get(telemetry.wrap(_starlette()), "/inflight")
    assert response.json() == {"inflight": 1}
    assert inflight_requests() == 0


@pytest.mark.asyncio
async def test_unknown_method_is_other(telemetry: Telemetry) -> None:
    """An invented HTTP method becomes `_OTHER` in metrics, `HTTP` in the name, original kept."""
    await _get(telemetry.wrap(_starlette()), "/nowhere", method="FOOBAR")
    (span,) = telemetry.spans()
    assert span.name == "HTTP"
    assert (span.attributes or {})["http.request.method"] == "_OTHER"
    assert (span.attributes or {})["http.request.method_original"] == "FOOBAR"
    (point,) = telemetry.points("http.server.request.duration")
    assert point.attributes["http.request.method"] == "_OTHER"


@pytest.mark.asyncio
async def test_excluded_urls_are_anchored(telemetry: Telemetry) -> None:
    """Default exclusions silence /healthz exactly, not paths that merely contain it."""
    app = telemetry.wrap(_starlette())
    await _get(app, "/healthz")
    await _get(app, "/metrics")
    await _get(app, "/healthz-report")
    assert [s.name for s in telemetry.spans()] == ["GET /healthz-report"]
    (point,) = telemetry.points("http.server.request.duration")
    assert point.count == 1


def test_invalid_exclusion_pattern_is_a_configuration_error(telemetry: Telemetry) -> None:
    """A pattern that is not a regular expression is rejected with the pattern named."""
    with pytest.raises(ConfigurationError, match=r"\(unclosed"):
        telemetry.wrap(_starlette(), excluded_urls=["(unclosed"])


@pytest.mark.asyncio
async def test_sensitive_query_values_are_redacted(telemetry: Telemetry) -> None:
    """Signature-like query parameters are REDACTED in url.query, others kept."""
    await _get(telemetry.wrap(_starlette()), "/items/1?a=1&Signature=secret&sig=x")
    (span,) = telemetry.spans()
    assert (span.attributes or {})["url.query"] == "a=1&Signature=REDACTED&sig=REDACTED"


@pytest.mark.asyncio
async def test_incoming_traceparent_and_baggage_are_the_parent(telemetry: Telemetry) -> None:
    """The W3C traceparent makes the SERVER span a child of the remote caller's span."""
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    parent_id = "b7ad6b7169203331"
    captured: dict[str, Any] = {}

    async def handler(request: Request) -> Response:
        from opentelemetry import baggage

        captured["baggage"] = baggage.get_all()
        return PlainTextResponse("ok")

    app = telemetry.wrap(Starlette(routes=[Route("/b", handler)]))
    headers = {"traceparent": f"00-{trace_id}-{parent_id}-01", "baggage": "tenant=acme"}
    await _get(app, "/b", headers=headers)
    (span,) = telemetry.spans()
    assert format(span.context.trace_id, "032x") == trace_id
    assert span.parent is not None
    assert span.parent.is_remote
    assert format(span.parent.span_id, "016x") == parent_id
    assert captured["baggage"] == {"tenant": "acme"}


@pytest.mark.asyncio
async def test_double_wrap_makes_one_span_and_counts_once(telemetry: Telemetry) -> None:
    """Wrapping an app twice still gives one SERVER span and one count per request."""
    app = telemetry.wrap(telemetry.wrap(_starlette()))
    await _get(app, "/items/7")
    assert len(telemetry.spans()) == 1
    (point,) = telemetry.points("http.server.request.duration")
    assert point.count == 1


@pytest.mark.asyncio
async def test_stock_middleware_outside_ours_is_not_doubled(telemetry: Telemetry) -> None:
    """With the stock contrib middleware outside ours, only one SERVER span is made."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    app = OpenTelemetryMiddleware(
        telemetry.wrap(_starlette()),
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        exclude_spans=["receive", "send"],
    )
    await _get(app, "/items/7")
    assert len(telemetry.server_spans()) == 1
    assert sum(p.count for p in telemetry.server_durations()) == 1
    watchman_scopes = {s.instrumentation_scope.name for s in telemetry.spans()}
    assert watchman_scopes == {"opentelemetry.instrumentation.asgi"}


@pytest.mark.asyncio
async def test_lifespan_and_websocket_scopes_pass_through(telemetry: Telemetry) -> None:
    """Lifespan and websocket scopes reach the app untouched and make no span."""
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(dict(scope))

    wrapped = telemetry.wrap(app)
    await wrapped({"type": "lifespan"}, None, None)
    await wrapped({"type": "websocket", "path": "/ws", "headers": []}, None, None)
    assert [s["type"] for s in seen] == ["lifespan", "websocket"]
    assert all(SCOPE_MARKER not in s for s in seen)
    assert telemetry.spans() == []


@pytest.mark.asyncio
async def test_hooks_wrap_starlette_app_created_before_install(telemetry: Telemetry) -> None:
    """A Starlette app built before install_framework_hooks is instrumented at its first request."""
    app = _starlette()
    names = install_framework_hooks(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        excluded_urls=[],
        frameworks=["starlette"],
    )
    try:
        assert names == ["starlette"]
        await _get(app, "/items/5")
    finally:
        uninstall_framework_hooks()
    assert [s.name for s in telemetry.spans()] == ["GET /items/{item_id}"]


@pytest.mark.asyncio
async def test_hooks_wrap_fastapi_and_replace_its_native_telemetry(
    telemetry: Telemetry, hooks: list[str]
) -> None:
    """FastAPI apps are wrapped by the hooks alone; FastAPI's own SERVER span is not added."""
    assert hooks == ["fastapi", "starlette"]
    app = FastAPI(
        telemetry={
            "tracer_provider": telemetry.tracer_provider,
            "meter_provider": telemetry.meter_provider,
            "logs": False,
        }
    )
    router = APIRouter(prefix="/v1")

    @router.get("/orders/{order_id}")
    async def order(order_id: str) -> dict[str, str]:
        return {"order": order_id}

    app.include_router(router)
    response = await _get(app, "/v1/orders/9")
    assert response.json() == {"order": "9"}
    (span,) = telemetry.server_spans()
    assert span.name == "GET /v1/orders/{order_id}"
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "watchman_otel"
    (point,) = telemetry.points("http.server.request.duration")
    assert point.count == 1


@pytest.mark.asyncio
async def test_hooks_and_explicit_wrap_do_not_double(
    telemetry: Telemetry, hooks: list[str]
) -> None:
    """An app wrapped by hand on top of the auto-wrap still makes one span per request."""
    await _get(telemetry.wrap(_starlette()), "/items/3")
    assert len(telemetry.spans()) == 1


@pytest.mark.asyncio
async def test_hooks_leave_stack_with_stock_middleware_alone(
    telemetry: Telemetry, hooks: list[str]
) -> None:
    """An app that already carries the stock contrib middleware keeps it as its only one."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    app = _starlette(
        middleware=[
            Middleware(
                OpenTelemetryMiddleware,
                tracer_provider=telemetry.tracer_provider,
                meter_provider=telemetry.meter_provider,
                exclude_spans=["receive", "send"],
            )
        ]
    )
    await _get(app, "/items/3")
    # Inside another SERVER span contrib would make an INTERNAL one and count again.
    (span,) = telemetry.spans()
    assert span.kind is SpanKind.SERVER
    assert sum(p.count for p in telemetry.server_durations()) == 1


@pytest.mark.asyncio
async def test_hooks_apply_exclusions(telemetry: Telemetry, hooks: list[str]) -> None:
    """The hooks honour the excluded URL patterns they were given."""
    await _get(_starlette(), "/healthz")
    assert telemetry.spans() == []


@pytest.mark.asyncio
async def test_install_is_idempotent_and_reconfigures(telemetry: Telemetry) -> None:
    """Installing twice wraps once; the second call's providers take over existing stacks."""
    other = Telemetry()
    app = _starlette()
    for target in (telemetry, other):
        install_framework_hooks(
            tracer_provider=target.tracer_provider,
            meter_provider=target.meter_provider,
            excluded_urls=[],
            frameworks=["starlette"],
        )
    try:
        await _get(app, "/items/1")
    finally:
        uninstall_framework_hooks()
    assert telemetry.spans() == []
    assert len(other.spans()) == 1


@pytest.mark.asyncio
async def test_uninstall_stops_instrumentation(telemetry: Telemetry) -> None:
    """After uninstall_framework_hooks, new and existing apps make no spans."""
    built = _starlette()
    install_framework_hooks(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        excluded_urls=[],
        frameworks=["starlette"],
    )
    await _get(built, "/items/1")
    uninstall_framework_hooks()
    uninstall_framework_hooks()
    await _get(built, "/items/2")
    await _get(_starlette(), "/items/3")
    assert [s.attributes["url.path"] for s in telemetry.spans() if s.attributes] == ["/items/1"]
    assert not hasattr(Starlette.build_middleware_stack, "__wrapped__")


def test_unknown_framework_is_a_configuration_error(telemetry: Telemetry) -> None:
    """Asking to hook a framework we do not know names the known ones."""
    with pytest.raises(ConfigurationError, match="starlette"):
        install_framework_hooks(
            tracer_provider=None, meter_provider=None, excluded_urls=[], frameworks=["django"]
        )
    assert _asgi._wanted == set()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("host", "scheme", "address", "port"),
    [
        (b"shop.test:8443", "https", "shop.test", 8443),
        (b"shop.test", "https", "shop.test", 443),
        (b"[::1]:8080", "http", "::1", 8080),
        (None, "http", "10.1.2.3", 9000),
    ],
)
async def test_server_address_and_port_are_split(
    telemetry: Telemetry, host: bytes | None, scheme: str, address: str, port: int
) -> None:
    """server.address never carries the port: Host header split, default port by scheme, socket."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(message: Any) -> None:
        return

    headers = [(b"host", host)] if host else []
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "scheme": scheme,
        "headers": headers,
        "server": ("10.1.2.3", 9000),
    }
    await telemetry.wrap(app)(scope, None, send)
    (span,) = telemetry.spans()
    attributes = dict(span.attributes or {})
    assert (attributes["server.address"], attributes["server.port"]) == (address, port)


@pytest.mark.asyncio
async def test_uninstall_gives_fastapi_its_native_telemetry_back(telemetry: Telemetry) -> None:
    """FastAPI's own tracing/metrics, switched off while wrapped, come back on uninstall."""
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    install_framework_hooks(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        excluded_urls=[],
        frameworks=["fastapi"],
    )
    try:
        await _get(app, "/ping")
        assert (app._telemetry["tracing"], app._telemetry["metrics"]) == (False, False)
    finally:
        uninstall_framework_hooks()
    assert (app._telemetry["tracing"], app._telemetry["metrics"]) == (True, True)
    assert len(telemetry.spans()) == 1
