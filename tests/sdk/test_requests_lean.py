"""Our own ``requests`` instrumentation: conventions, redaction, errors, suppression, stacking."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from opentelemetry import trace
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.utils import (
    suppress_http_instrumentation,
    suppress_instrumentation,
)
from opentelemetry.trace import SpanKind, StatusCode

from tests.conftest import free_port
from tests.sdk.test_outbound import EchoServer, Outbound
from watchman_otel import _requests
from watchman_otel._light_span import LightSpans
from watchman_otel._outbound import uninstrument_outbound

ORIGINAL_SEND = requests.Session.send


@pytest.fixture
def server() -> Iterator[EchoServer]:
    echo = EchoServer()
    yield echo
    echo.close()


@pytest.fixture
def outbound(monkeypatch: pytest.MonkeyPatch) -> Iterator[Outbound]:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    yield Outbound()
    uninstrument_outbound()
    if RequestsInstrumentor().is_instrumented_by_opentelemetry:
        RequestsInstrumentor().uninstrument()
    _requests.RequestsInstrumentation().uninstrument()
    assert requests.Session.send is ORIGINAL_SEND


def test_span_and_point_carry_the_stable_names(outbound: Outbound, server: EchoServer) -> None:
    """One CLIENT span named GET and one seconds point with method, address, port, status."""
    assert outbound.install(["requests"]) == ["requests"]
    with requests.Session() as session:
        session.get(f"{server.url}/orders/7?page=2", timeout=5)
    (span,) = outbound.client_spans()
    assert span.name == "GET"
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "watchman_otel"
    assert dict(span.attributes or {}) == {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": server.port,
        "url.full": f"{server.url}/orders/7?page=2",
        "http.response.status_code": 200,
    }
    (point,) = outbound.duration_points()
    assert dict(point.attributes) == {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": server.port,
        "http.response.status_code": 200,
    }
    assert 0 < point.sum < 5  # seconds, not milliseconds
    assert list(point.exemplars) == []


def test_credentials_and_signed_query_values_are_redacted(
    outbound: Outbound, server: EchoServer
) -> None:
    """url.full hides user:password and the values of signature-like query parameters."""
    outbound.install(["requests"])
    url = f"http://alice:s3cret@127.0.0.1:{server.port}/f?sig=abc&page=1&X-Goog-Signature=z"
    requests.get(url, timeout=5)
    (span,) = outbound.client_spans()
    attributes = dict(span.attributes or {})
    assert attributes["url.full"] == (
        f"http://REDACTED:REDACTED@127.0.0.1:{server.port}/f"
        "?sig=REDACTED&page=1&X-Goog-Signature=REDACTED"
    )
    assert attributes["server.address"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("url", "address", "port"),
    [
        ("http://Example.COM/a", "example.com", 80),
        ("https://example.com/a", "example.com", 443),
        ("https://[::1]:8443/a?b=1", "::1", 8443),
        ("http://u@example.com:8080", "example.com", 8080),
    ],
)
def test_server_address_and_port_from_the_url(url: str, address: str, port: int) -> None:
    """server.port is always set (the scheme's default when the URL has none), IPv6 unbracketed."""
    state = _requests._State(None, None, ())
    attributes = _requests._request_attributes(state, url, "get")
    assert attributes is not None
    assert (attributes["server.address"], attributes["server.port"]) == (address, port)
    assert attributes["http.request.method"] == "GET"


def test_unknown_method_is_other_and_4xx_5xx_are_errors(
    outbound: Outbound, server: EchoServer
) -> None:
    """An invented verb is _OTHER (span named HTTP, original kept); 4xx/5xx set error.type."""
    outbound.install(["requests"])
    response = requests.request("FROB", f"{server.url}/x", timeout=5)
    assert response.status_code == 501  # the echo server knows only GET
    (span,) = outbound.client_spans()
    attributes = dict(span.attributes or {})
    assert span.name == "HTTP"
    assert attributes["http.request.method"] == "_OTHER"
    assert attributes["http.request.method_original"] == "FROB"
    assert attributes["error.type"] == "501"
    assert span.status.status_code is StatusCode.ERROR


def test_connection_error_is_recorded_and_reraised(outbound: Outbound) -> None:
    """A refused connection reaches the app unchanged; the span and point carry error.type."""
    outbound.install(["requests"])
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{free_port()}/down", timeout=5)
    (span,) = outbound.client_spans()
    attributes = dict(span.attributes or {})
    assert attributes["error.type"] == "requests.exceptions.ConnectionError"
    assert "http.response.status_code" not in attributes
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]
    (point,) = outbound.duration_points()
    assert point.attributes["error.type"] == "requests.exceptions.ConnectionError"


@pytest.mark.parametrize("suppress", [suppress_instrumentation, suppress_http_instrumentation])
def test_suppression_is_honoured(outbound: Outbound, server: EchoServer, suppress: object) -> None:
    """Under either suppress key nothing is recorded and no traceparent is injected."""
    outbound.install(["requests"])
    with suppress():  # type: ignore[operator]
        requests.get(f"{server.url}/quiet", timeout=5)
    assert outbound.client_spans() == []
    assert outbound.duration_points() == []
    assert "traceparent" not in server.received[0]


def test_urllib3_underneath_makes_no_second_span(outbound: Outbound, server: EchoServer) -> None:
    """With urllib3 instrumented too, a requests call is still one CLIENT span."""
    assert outbound.install(["requests", "urllib3"]) == ["requests", "urllib3"]
    requests.get(f"{server.url}/one", timeout=5)
    (span,) = outbound.client_spans()
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "watchman_otel"


def test_contrib_instrumentor_stacked_on_ours_makes_one_span(
    outbound: Outbound, server: EchoServer
) -> None:
    """The contrib instrumentor enabled after ours: its span only; uninstalling restores send."""
    outbound.install(["requests"])
    RequestsInstrumentor().instrument(tracer_provider=outbound.tracer_provider)
    requests.get(f"{server.url}/stacked", timeout=5)
    (span,) = outbound.client_spans()
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "opentelemetry.instrumentation.requests"


def test_contrib_instrumentor_first_is_left_in_place(
    outbound: Outbound, server: EchoServer
) -> None:
    """When the contrib instrumentor is already in place ours steps aside: one span, theirs."""
    RequestsInstrumentor().instrument(tracer_provider=outbound.tracer_provider)
    assert outbound.install(["requests"]) == ["requests"]
    assert _requests.contrib_instrumented()
    requests.get(f"{server.url}/theirs", timeout=5)
    (span,) = outbound.client_spans()
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "opentelemetry.instrumentation.requests"


def test_internal_failure_never_reaches_the_app(
    outbound: Outbound, server: EchoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If starting the span fails the call still goes through, untraced."""
    monkeypatch.setenv("WATCHMAN_RAISE_INTERNAL_ERRORS", "0")
    outbound.install(["requests"])
    state = _requests._state
    assert state is not None

    class BrokenTracer(trace.NoOpTracer):
        def start_span(self, *args: object, **kwargs: object) -> trace.Span:
            raise RuntimeError("broken tracer")

    monkeypatch.setattr(state, "spans", LightSpans(BrokenTracer(), SpanKind.CLIENT))
    assert requests.get(f"{server.url}/still-works", timeout=5).status_code == 200
    assert outbound.client_spans() == []


def test_shutdown_uninstruments(server: EchoServer, clean_env: pytest.MonkeyPatch) -> None:
    """watchman_otel.shutdown() puts the original Session.send back."""
    import watchman_otel

    sdk = watchman_otel.init(
        service_name="lean", endpoint=f"http://127.0.0.1:{free_port()}", integrations=["requests"]
    )
    assert requests.Session.send is not ORIGINAL_SEND
    sdk.shutdown(timeout=0.5)
    assert requests.Session.send is ORIGINAL_SEND


# Cases both instrumentations see: (method, path and query, with credentials in the URL).
EQUIVALENCE_CASES = [
    ("GET", "/orders/1", False),
    ("GET", "/fail/500", False),
    ("GET", "/search?q=ab&sig=secret&page=2", False),
    ("GET", "/private", True),
    ("POST", "/orders", False),
    ("DELETE", "/orders/9?Signature=x", False),
]
COMPARED = (
    "http.request.method",
    "server.address",
    "server.port",
    "url.full",
    "http.response.status_code",
    "error.type",
)


def _calls(server: EchoServer) -> None:
    with requests.Session() as session:
        for method, target, credentials in EQUIVALENCE_CASES:
            authority = f"bob:pw@127.0.0.1:{server.port}" if credentials else server.url[7:]
            session.request(method, f"http://{authority}{target}", timeout=5)


def test_same_spans_as_the_contrib_instrumentor(outbound: Outbound, server: EchoServer) -> None:
    """Name, kind and the stable attributes match contrib's RequestsInstrumentor call for call.

    (Not compared here: contrib re-encodes the query string it redacts, `a%20b` becoming `a+b`;
    ours keeps the URL as sent.)
    """
    from opentelemetry.instrumentation._semconv import (
        _OpenTelemetrySemanticConventionStability as Stability,
    )

    outbound.install(["requests"])
    _calls(server)
    ours = outbound.client_spans()
    uninstrument_outbound()

    with Stability._lock:
        Stability._initialized = False
    Stability._initialize()  # type: ignore[no-untyped-call]  # contrib reads the opt-in here
    contrib = Outbound()
    RequestsInstrumentor().instrument(
        tracer_provider=contrib.tracer_provider, meter_provider=contrib.meter_provider
    )
    _calls(server)
    theirs = contrib.client_spans()

    def view(span: Any) -> tuple[str, Any, dict[str, Any]]:
        attributes = dict(span.attributes or {})
        return span.name, span.kind, {k: attributes.get(k) for k in COMPARED}

    assert len(ours) == len(theirs) == len(EQUIVALENCE_CASES)
    assert [view(s) for s in ours] == [view(s) for s in theirs]
    assert [s.status.status_code for s in ours] == [s.status.status_code for s in theirs]
