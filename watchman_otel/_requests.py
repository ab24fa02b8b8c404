"""Outbound ``requests`` calls: one CLIENT span and one duration point each, at the least cost.

``requests.Session.send`` is wrapped once. Per call: one regex match splits the URL (the
authority's address, port and redacted form are memoised), the span starts with its attributes
given at once (a light span handed to the SDK's processors at its end where that gives the SDK's
outcome: ``watchman_otel._light_span``), the W3C context is injected through the global
propagator, the end sets the status code in one call, and the duration point goes to the
SDK's aggregation found by its attribute set (``watchman_otel._light_histogram``). The stable
HTTP conventions only: ``http.request.method``, ``server.address``, ``server.port``,
``url.full``, ``http.response.status_code``, ``error.type`` on the span, and the
``http.client.request.duration`` histogram in seconds with the required attributes only and
without exemplars.

Suppression follows ``opentelemetry.instrumentation.utils``: nothing is recorded while
instrumentation or HTTP instrumentation is suppressed (an exporter's own calls, an outer HTTP
client instrumentation), and HTTP instrumentation is suppressed while our call runs, so the
urllib3 instrumentation underneath, or the contrib ``requests`` instrumentor stacked on ours, never
makes a second span.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import (  # type: ignore[attr-defined]
    _SUPPRESS_HTTP_INSTRUMENTATION_KEY,
    _SUPPRESS_INSTRUMENTATION_KEY_PLAIN,
)
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

from watchman_otel._asgi import compile_excluded, duration_histogram, error_type, known_methods
from watchman_otel._errors import report_internal_error
from watchman_otel._light_span import LightSpans
from watchman_otel._version import __version__

__all__ = [
    "RequestsInstrumentation",
    "contrib_instrumented",
]

_DEFAULT_PORTS = {"http": 80, "https": 443}
# scheme, authority, path; the rest (query, fragment) is kept as it is, minus sensitive values.
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^?#]*)")
_SENSITIVE_QUERY = re.compile(r"(?i)([?&])(AWSAccessKeyId|Signature|sig|X-Goog-Signature)=[^&#]*")
# The marker the contrib instrumentor leaves on the function it patches in.
_CONTRIB_MARKER = "opentelemetry_instrumentation_requests_applied"
_MARKER = "watchman_otel_requests_applied"
_AUTHORITY_CACHE_SIZE = 1024
# A context without a span: the trace-based exemplar filter then offers no exemplar. Not empty,
# because the SDK replaces an empty (falsy) context with the current one.
_NO_EXEMPLAR = Context({"watchman_otel.no_exemplar": True})

# The keys `opentelemetry.instrumentation.utils` sets and reads (its own helpers each cost a
# context lookup per key; one lookup of the current context serves all three here).
_SUPPRESS_HTTP_KEY: str = _SUPPRESS_HTTP_INSTRUMENTATION_KEY
_SUPPRESS_KEYS: tuple[str, ...] = (
    otel_context._SUPPRESS_INSTRUMENTATION_KEY,
    _SUPPRESS_INSTRUMENTATION_KEY_PLAIN,
)


def contrib_instrumented() -> bool:
    """Whether ``requests.Session.send`` carries the contrib instrumentor's patch."""
    import requests

    return bool(getattr(requests.Session.send, _CONTRIB_MARKER, False))


def _authority(scheme: str, authority: str) -> tuple[str, int | None, str | None]:
    """(server.address, server.port, the authority with credentials redacted if it has any)."""
    redacted = None
    userinfo, at, hostport = authority.rpartition("@")
    if at:
        redacted = "REDACTED:REDACTED@" + hostport if userinfo else hostport
    if hostport.startswith("["):  # [v6]:port
        address, _, rest = hostport[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        address, _, port_text = hostport.partition(":")
    port = int(port_text) if port_text.isdigit() else _DEFAULT_PORTS.get(scheme.lower())
    return address.lower(), port, redacted


class _State:
    """What one ``instrument()`` configured: the tracer, the histogram, the exclusions."""

    __slots__ = ("authorities", "duration", "excluded", "known_methods", "spans")

    def __init__(
        self,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
        excluded_urls: Sequence[str],
    ) -> None:
        tracer = trace.get_tracer("watchman_otel", __version__, tracer_provider)
        self.spans = LightSpans(tracer, SpanKind.CLIENT)
        meter = metrics.get_meter("watchman_otel", __version__, meter_provider)
        self.duration = duration_histogram(meter, "client")
        self.excluded = compile_excluded(excluded_urls)
        self.known_methods = known_methods()
        self.authorities: dict[tuple[str, str], tuple[str, int | None, str | None]] = {}


_lock = threading.Lock()
_state: _State | None = None
_original_send: Callable[..., Any] | None = None


def _request_attributes(state: _State, url: str, raw_method: str) -> dict[str, Any] | None:
    """The span's start attributes, or None when the URL is excluded."""
    match = _URL.match(url)
    if match is None:
        attributes: dict[str, Any] = {"url.full": url}
    else:
        scheme, authority, path = match.groups()
        excluded = state.excluded
        if excluded is not None and excluded.search(path):
            return None
        key = (scheme, authority)
        known = state.authorities.get(key)
        if known is None:
            if len(state.authorities) >= _AUTHORITY_CACHE_SIZE:
                state.authorities.clear()
            known = state.authorities[key] = _authority(scheme, authority)
        address, port, redacted = known
        if redacted is not None:
            url = f"{scheme}://{redacted}{url[match.end(2) :]}"
        if "?" in url:
            url = _SENSITIVE_QUERY.sub(r"\1\2=REDACTED", url)
        attributes = {"url.full": url, "server.address": address}
        if port is not None:
            attributes["server.port"] = port
    method = raw_method.upper()
    if method not in state.known_methods:
        attributes["http.request.method_original"] = raw_method
        method = "_OTHER"
    attributes["http.request.method"] = method
    return attributes


def _traced_send(session: Any, request: Any, **kwargs: Any) -> Any:
    # One flat function on purpose: this is the per-call cost the benchmark measures.
    send = _original_send
    assert send is not None  # only reachable while patched in
    state = _state
    if state is None:
        return send(session, request, **kwargs)
    parent = otel_context.get_current()
    if parent.get(_SUPPRESS_HTTP_KEY) or any(parent.get(key) for key in _SUPPRESS_KEYS):
        return send(session, request, **kwargs)
    try:
        attributes = _request_attributes(state, request.url or "", request.method or "GET")
    except Exception as exc:
        report_internal_error("reading the request for its CLIENT span", exc)
        attributes = None
    if attributes is None:  # excluded (or unreadable): the call goes out untraced
        return send(session, request, **kwargs)
    span: trace.Span | None = None
    try:
        method = attributes["http.request.method"]
        span = state.spans.start(method if method != "_OTHER" else "HTTP", parent, attributes)
        inner = otel_context.set_value(
            _SUPPRESS_HTTP_KEY, True, trace.set_span_in_context(span, parent)
        )
        propagate.inject(request.headers, context=inner)
        token = otel_context.attach(inner)
    except Exception as exc:
        if span is not None:
            span.end()
        report_internal_error("starting the CLIENT span", exc)
        return send(session, request, **kwargs)
    started = perf_counter()
    response = error = None
    try:
        response = send(session, request, **kwargs)
        return response
    except BaseException as exc:
        error = exc
        raise
    finally:
        elapsed = perf_counter() - started
        try:
            point: dict[str, Any] = {"http.request.method": method}
            address = attributes.get("server.address")
            if address is not None:
                point["server.address"] = address
                port = attributes.get("server.port")
                if port is not None:
                    point["server.port"] = port
            if response is None and error is not None:
                response = getattr(error, "response", None)
            status = getattr(response, "status_code", None)
            if isinstance(status, int):
                span.set_attribute("http.response.status_code", status)
                point["http.response.status_code"] = status
            if error is not None:
                point["error.type"] = kind = error_type(error)
                span.set_attribute("error.type", kind)
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, str(error) or None))
            elif isinstance(status, int) and status >= 400:
                point["error.type"] = kind = str(status)
                span.set_attribute("error.type", kind)
                span.set_status(Status(StatusCode.ERROR))
            # No exemplar: offering one costs about as much as the point itself, and the
            # CLIENT span already carries this call's duration.
            state.duration.record(elapsed, point, _NO_EXEMPLAR)
            span.end()
        except Exception as exc:
            report_internal_error("ending the CLIENT span", exc)
        finally:
            otel_context.detach(token)


setattr(_traced_send, _MARKER, True)


class RequestsInstrumentation:
    """Patches ``requests.Session.send`` once; ``instrument`` again re-targets the providers."""

    @property
    def is_instrumented_by_opentelemetry(self) -> bool:
        """Whether our wrapper is in place and recording."""
        return _state is not None

    def instrument(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        excluded_urls: Sequence[str] = (),
    ) -> bool:
        """Start recording; False (nothing changed) if the contrib instrumentor got there first.

        ``excluded_urls`` are regular expressions searched in the URL's path.
        """
        global _state, _original_send  # noqa: PLW0603 - one patch per process
        import requests

        state = _State(tracer_provider, meter_provider, excluded_urls)
        session: Any = requests.Session
        with _lock:
            current = session.send
            if getattr(current, _CONTRIB_MARKER, False):
                return False
            if not getattr(current, _MARKER, False):
                _original_send = current
                session.send = _traced_send
            _state = state
        return True

    def uninstrument(self) -> None:
        """Stop recording; the original ``send`` is put back unless someone patched over ours."""
        global _state  # noqa: PLW0603 - one patch per process
        import requests

        session: Any = requests.Session
        with _lock:
            _state = None
            if session.send is _traced_send and _original_send is not None:
                session.send = _original_send
