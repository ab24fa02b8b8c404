"""Inbound HTTP: our lean ASGI middleware and the Starlette/FastAPI auto-wrap done by ``init()``.

One SERVER span and the stable-convention RED metrics per request, named after routing, with a
guard so a stacked middleware never produces two SERVER spans or counts a request twice.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable, Collection, Iterator, MutableMapping, Sequence
from contextvars import Token
from time import perf_counter
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.metrics import (
    CallbackOptions,
    Meter,
    MeterProvider,
    ObservableUpDownCounter,
    Observation,
)
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

from watchman_otel._errors import ConfigurationError, report_internal_error
from watchman_otel._light_histogram import LightHistogram
from watchman_otel._light_span import LightSpans
from watchman_otel._settings import DEFAULT_EXCLUDED_URLS
from watchman_otel._version import __version__

__all__ = [
    "DEFAULT_EXCLUDED_URLS",
    "DURATION_BUCKETS",
    "SCOPE_MARKER",
    "ASGIApp",
    "WatchmanMiddleware",
    "compile_excluded",
    "duration_histogram",
    "error_type",
    "inflight_requests",
    "install_framework_hooks",
    "instrument_asgi",
    "known_methods",
    "uninstall_framework_hooks",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Advised by the stable HTTP semantic conventions for `http.server.request.duration`.
DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip

# Set in the ASGI scope by the outermost watchman middleware that handles a request; any inner
# one (a second wrap, a mounted sub-app's auto-wrap) then passes the request through.
SCOPE_MARKER = "watchman_otel.server_span"

# The methods the conventions know; anything else is `_OTHER` in names and metric attributes so
# a client cannot blow up cardinality with invented verbs.
_DEFAULT_KNOWN_METHODS = frozenset(
    ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE")
)
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_SENSITIVE_QUERY = re.compile(
    r"(?i)(^|&)(AWSAccessKeyId|Signature|sig|X-Goog-Signature)=[^&]*",
)
_EMPTY_CONTEXT = Context()
_CONTRIB_MIDDLEWARE = ("opentelemetry.instrumentation.asgi", "OpenTelemetryMiddleware")

_inflight_lock = threading.Lock()
_inflight = 0
# (method, scheme) -> requests being served by a SERVER span of ours; observed at collection
# time as `http.server.active_requests`, which saves two synchronous metric calls per request.
_active: dict[tuple[str, str], int] = {}


def _observe_active(_options: CallbackOptions) -> Iterator[Observation]:
    with _inflight_lock:
        counts = list(_active.items())
    for (method, scheme), count in counts:
        yield Observation(count, {"http.request.method": method, "url.scheme": scheme})


def inflight_requests() -> int:
    """HTTP requests inside an instrumented app right now, in this process (for heartbeats)."""
    return _inflight


def duration_histogram(meter: Meter, side: str) -> LightHistogram:
    """The stable ``http.<side>.request.duration`` histogram (``server`` or ``client``): seconds,
    the conventions' advised buckets, points recorded through `LightHistogram`."""
    return LightHistogram(
        meter.create_histogram(
            f"http.{side}.request.duration",
            unit="s",
            description=f"Duration of HTTP {side} requests.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
    )


def known_methods() -> frozenset[str]:
    """The methods `OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS` names, else the conventions'."""
    # Same variable and meaning as the contrib instrumentations.
    raw = os.environ.get("OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS", "")
    chosen = frozenset(m.strip().upper() for m in raw.split(",") if m.strip())
    return chosen or _DEFAULT_KNOWN_METHODS


def compile_excluded(patterns: Sequence[str] | str | None) -> re.Pattern[str] | None:
    if patterns is None:
        patterns = DEFAULT_EXCLUDED_URLS
    elif isinstance(patterns, str):  # the contrib style, comma separated
        patterns = [p for p in (s.strip() for s in patterns.split(",")) if p]
    alternatives = []
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            message = f"excluded URL pattern {pattern!r} is not a regular expression: {exc}"
            raise ConfigurationError(message) from exc
        alternatives.append(f"(?:{pattern})")
    if not alternatives:
        return None
    return re.compile("|".join(alternatives))


def error_type(exc: BaseException) -> str:
    """`error.type` for an exception: its qualified class name."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


class _Instruments:
    """The tracer, instruments and exclusions one or more middlewares share.

    Auto-wrapped apps share one holder that ``install_framework_hooks`` reconfigures in place and
    ``uninstall_framework_hooks`` disables, so stacks built earlier follow the latest ``init()``.
    """

    __slots__ = ("active", "duration", "enabled", "excluded", "known_methods", "spans")

    spans: LightSpans
    duration: LightHistogram
    active: ObservableUpDownCounter
    excluded: re.Pattern[str] | None
    known_methods: frozenset[str]
    enabled: bool

    def __init__(
        self,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
        excluded_urls: Sequence[str] | str | None,
    ) -> None:
        self.configure(tracer_provider, meter_provider, excluded_urls)

    def configure(
        self,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
        excluded_urls: Sequence[str] | str | None,
    ) -> None:
        # With None the global providers' proxies are used, so an app wrapped before the SDK is
        # configured starts recording once it is.
        tracer = trace.get_tracer("watchman_otel", __version__, tracer_provider)
        self.spans = LightSpans(tracer, SpanKind.SERVER)
        meter = metrics.get_meter("watchman_otel", __version__, meter_provider)
        self.duration = duration_histogram(meter, "server")
        # Asynchronous on purpose (same Sum on the wire). A meter hands back the instrument first
        # registered under a name, so the callback reads process-wide counts, not this holder's.
        self.active = meter.create_observable_up_down_counter(
            "http.server.active_requests",
            callbacks=[_observe_active],
            unit="{request}",
            description="Number of active HTTP server requests.",
        )
        self.excluded = compile_excluded(excluded_urls)
        self.known_methods = known_methods()
        self.enabled = True


class _HeaderReader:
    """Reads the few request headers a SERVER span needs in one pass over the ASGI header list."""

    __slots__ = ("fields", "textmap")

    def __init__(self) -> None:
        self.textmap: Any = None
        self.fields: frozenset[bytes] = frozenset()

    def propagation_fields(self) -> tuple[Any, frozenset[bytes]]:
        # The global propagator can be replaced (init() sets it); re-read its fields only then.
        textmap = propagate.get_global_textmap()
        if textmap is not self.textmap:
            self.fields = frozenset(f.lower().encode("latin-1") for f in textmap.fields)
            self.textmap = textmap
        return textmap, self.fields


_HEADERS = _HeaderReader()


def _foreign_server_span_for(path: str) -> bool:
    """Whether an outer middleware (the stock contrib one, FastAPI's own) already made our span."""
    span = trace.get_current_span()
    if getattr(span, "kind", None) is not SpanKind.SERVER or not span.is_recording():
        return False
    attributes = getattr(span, "attributes", None) or {}
    target = attributes.get("url.path") or attributes.get("http.target") or ""
    return isinstance(target, str) and target.partition("?")[0] == path


def _route_template(scope: Scope, entry_root_path: str) -> str | None:
    route = scope.get("route")
    if route is None:
        return None
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(template, str):
        return None
    # Inside a Mount the router matched against the path below the mount point; put the
    # mount's prefix back so the template names the whole path.
    root_path = scope.get("root_path", "")
    prefix = root_path[len(entry_root_path) :] if root_path.startswith(entry_root_path) else ""
    if getattr(route, "routes", None) is not None or type(route).__name__ == "Mount":
        return (prefix or template) + "/{path}"
    return prefix + template


def _server_address(host: bytes | None, scope: Scope, scheme: str) -> tuple[str | None, int | None]:
    if host:
        text = host.decode("latin-1")
        if text.startswith("["):  # [v6]:port
            address, _, rest = text[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        else:
            address, _, port_text = text.partition(":")
        if port_text.isdigit():
            return address, int(port_text)
        return address, _DEFAULT_PORTS.get(scheme)
    server = scope.get("server")
    if server:
        return server[0], server[1]
    return None, None


class WatchmanMiddleware:
    """ASGI middleware: one SERVER span and the ``http.server.*`` metrics per HTTP request.

    Lifespan and websocket scopes pass through untouched.
    """

    __slots__ = ("_instruments", "app")

    def __init__(self, app: ASGIApp, instruments: _Instruments) -> None:
        self.app = app
        self._instruments = instruments

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        instruments = self._instruments
        if scope["type"] != "http" or SCOPE_MARKER in scope or not instruments.enabled:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        excluded = instruments.excluded
        if excluded is not None and excluded.search(path):
            scope[SCOPE_MARKER] = False
            await self.app(scope, receive, send)
            return
        scope[SCOPE_MARKER] = True
        global _inflight  # noqa: PLW0603 -- one process-wide gauge read by the heartbeat
        with _inflight_lock:
            _inflight += 1
        try:
            if _foreign_server_span_for(path):
                await self.app(scope, receive, send)
            else:
                await self._traced(scope, receive, send, path, instruments)
        finally:
            with _inflight_lock:
                _inflight -= 1

    async def _traced(
        self, scope: Scope, receive: Receive, send: Send, path: str, instruments: _Instruments
    ) -> None:
        # One flat function on purpose: this is the per-request cost the benchmark measures.
        started = perf_counter()
        raw_method: str = scope.get("method", "GET")
        method = raw_method if raw_method in instruments.known_methods else "_OTHER"
        span_method = method if method != "_OTHER" else "HTTP"
        scheme: str = scope.get("scheme", "http")
        entry_root_path: str = scope.get("root_path", "")
        version: str | None = scope.get("http_version")
        try:
            span, token = self._start(scope, path, raw_method, method, scheme)
        except Exception as exc:
            report_internal_error("starting the SERVER span", exc)
            await self.app(scope, receive, send)
            return
        # Bounded: methods are normalised and ASGI servers send only a handful of schemes.
        active_key = (method, scheme)
        with _inflight_lock:
            _active[active_key] = _active.get(active_key, 0) + 1
        status = 0

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        error: BaseException | None = None
        try:
            await self.app(scope, receive, send_with_status)
        except BaseException as exc:
            error = exc
            raise
        finally:
            try:
                route = _route_template(scope, entry_root_path)
                final: dict[str, Any] = {}
                if status:
                    final["http.response.status_code"] = status
                if route is not None:
                    final["http.route"] = route
                    span.update_name(f"{span_method} {route}")
                if error is not None:
                    final["error.type"] = error_type(error)
                    span.record_exception(error)
                    span.set_status(Status(StatusCode.ERROR, str(error) or None))
                elif status >= 500:
                    final["error.type"] = str(status)
                    span.set_status(Status(StatusCode.ERROR))
                elif not status:
                    final["error.type"] = "incomplete_response"
                    span.set_status(Status(StatusCode.ERROR))
                if final:
                    span.set_attributes(final)
                # Recorded while the span is still current so exemplars can point at it.
                attributes = {"http.request.method": method, "url.scheme": scheme, **final}
                if version:
                    attributes["network.protocol.version"] = version
                instruments.duration.record(perf_counter() - started, attributes)
                span.end()
            except Exception as exc:
                report_internal_error("ending the SERVER span", exc)
            finally:
                with _inflight_lock:
                    _active[active_key] -= 1
                otel_context.detach(token)

    def _start(
        self, scope: Scope, path: str, raw_method: str, method: str, scheme: str
    ) -> tuple[trace.Span, Token[Context]]:
        instruments = self._instruments
        textmap, fields = _HEADERS.propagation_fields()
        host = user_agent = None
        carrier: dict[str, str] | None = None
        for name, value in scope.get("headers") or ():
            if name == b"host":
                host = value
            elif name == b"user-agent":
                user_agent = value
            elif name in fields:
                if carrier is None:
                    carrier = {}
                key = name.decode("latin-1")
                text = value.decode("latin-1")
                # Repeated headers (baggage may be split) are one comma-joined value.
                carrier[key] = f"{carrier[key]},{text}" if key in carrier else text
        parent = textmap.extract(carrier, context=_EMPTY_CONTEXT) if carrier else _EMPTY_CONTEXT

        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.path": path,
            "url.scheme": scheme,
        }
        if method != raw_method:
            attributes["http.request.method_original"] = raw_method
        query: bytes = scope.get("query_string", b"")
        if query:
            attributes["url.query"] = _SENSITIVE_QUERY.sub(
                r"\1\2=REDACTED", query.decode("latin-1")
            )
        address, port = _server_address(host, scope, scheme)
        if address:
            attributes["server.address"] = address
        if port is not None:
            attributes["server.port"] = port
        client = scope.get("client")
        if client:
            attributes["client.address"] = client[0]
        version = scope.get("http_version")
        if version:
            attributes["network.protocol.version"] = version
        if user_agent:
            attributes["user_agent.original"] = user_agent.decode("latin-1")

        span = instruments.spans.start(method if method != "_OTHER" else "HTTP", parent, attributes)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return span, token


def instrument_asgi(
    app: ASGIApp,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    excluded_urls: Sequence[str] | None = None,
) -> ASGIApp:
    """Wrap any ASGI app so each HTTP request gets a SERVER span and RED metrics.

    ``None`` providers mean the global ones (as configured by ``watchman_otel.init()``);
    ``excluded_urls`` are regular expressions searched in the request path (no query string);
    anchor them (``^/healthz$``) so ``/api/healthz-report`` stays traced. The default,
    ``DEFAULT_EXCLUDED_URLS``, is the health and metrics endpoints.
    """
    return WatchmanMiddleware(app, _Instruments(tracer_provider, meter_provider, excluded_urls))


# --- Starlette / FastAPI auto-wrap -----------------------------------------------------------

# framework name -> (module, class) whose build_middleware_stack we wrap. FastAPI overrides
# Starlette's method without calling it, so both need their own wrap.
_FRAMEWORKS: dict[str, tuple[str, str]] = {
    "starlette": ("starlette.applications", "Starlette"),
    "fastapi": ("fastapi.applications", "FastAPI"),
}
_hook_lock = threading.Lock()
_hook_instruments: _Instruments | None = None
_wanted: set[str] = set()
_registered: set[str] = set()
_patched: dict[str, tuple[Any, Callable[..., Any]]] = {}
# FastAPI apps whose native tracing/metrics we turned off, with the values to restore.
_fastapi_native: weakref.WeakKeyDictionary[Any, tuple[Any, Any]] = weakref.WeakKeyDictionary()


def _stack_has_contrib_middleware(stack: Any) -> bool:
    seen: set[int] = set()
    while stack is not None and id(stack) not in seen:
        seen.add(id(stack))
        cls = type(stack)
        if (cls.__module__, cls.__name__) == _CONTRIB_MIDDLEWARE:
            return True
        stack = getattr(stack, "app", None)
    return False


def _silence_fastapi_native(app: Any) -> None:
    # FastAPI (0.16x) makes its own SERVER span and http.server.* metrics as soon as a global
    # provider exists; with ours around the stack that would be a second span and double counts.
    config = getattr(app, "_telemetry", None)
    if isinstance(config, dict) and "tracing" in config and app not in _fastapi_native:
        _fastapi_native[app] = (config.get("tracing"), config.get("metrics"))
        config["tracing"] = False
        config["metrics"] = False


def _restore_fastapi_native() -> None:
    for app, (tracing, metering) in list(_fastapi_native.items()):
        config = getattr(app, "_telemetry", None)
        if isinstance(config, dict):
            config["tracing"] = tracing
            config["metrics"] = metering
    _fastapi_native.clear()


def _wrapping_build(original: Callable[[Any], ASGIApp]) -> Callable[[Any], ASGIApp]:
    def build_middleware_stack(self: Any) -> ASGIApp:
        stack = original(self)
        instruments = _hook_instruments
        if instruments is None or not instruments.enabled:
            return stack
        try:
            if _stack_has_contrib_middleware(stack):
                # The user chose the contrib middleware for this app: it stays the only one.
                return stack
            _silence_fastapi_native(self)
            return WatchmanMiddleware(stack, instruments)
        except Exception as exc:
            report_internal_error("wrapping the app's middleware stack", exc)
            return stack

    build_middleware_stack.__wrapped__ = original  # type: ignore[attr-defined]
    return build_middleware_stack


def _patch(framework: str) -> None:
    """Post-import hook: wrap the framework's build_middleware_stack once."""
    with _hook_lock:
        if framework not in _wanted or framework in _patched:
            return
        module_name, class_name = _FRAMEWORKS[framework]
        try:
            cls = getattr(sys.modules[module_name], class_name)
            original = cls.__dict__["build_middleware_stack"]
            cls.build_middleware_stack = _wrapping_build(original)
            _patched[framework] = (cls, original)
        except Exception as exc:
            report_internal_error(f"hooking {class_name}.build_middleware_stack", exc)


def _post_import_hook(framework: str) -> Callable[[Any], None]:
    def hook(_module: Any) -> None:
        _patch(framework)

    return hook


def _installed(module: str) -> bool:
    import importlib.util

    top = module.partition(".")[0]
    return top in sys.modules or importlib.util.find_spec(top) is not None


def install_framework_hooks(
    *,
    tracer_provider: TracerProvider | None,
    meter_provider: MeterProvider | None,
    excluded_urls: Sequence[str],
    frameworks: Collection[str],
) -> list[str]:
    """Make every Starlette/FastAPI app wrap itself in our middleware; returns those hooked.

    Apps created before this call are covered too, since Starlette builds its middleware stack
    at the first request. Frameworks that are not installed are skipped; calling it again
    reconfigures the hooks (new providers, exclusions) for stacks built earlier as well.
    """
    global _hook_instruments  # noqa: PLW0603 -- the hooks' shared, reconfigurable state
    unknown = set(frameworks) - _FRAMEWORKS.keys()
    if unknown:
        names = ", ".join(sorted(_FRAMEWORKS))
        raise ConfigurationError(f"unknown framework(s) {sorted(unknown)}; known: {names}")
    with _hook_lock:
        if _hook_instruments is None:
            _hook_instruments = _Instruments(tracer_provider, meter_provider, excluded_urls)
        else:
            _hook_instruments.configure(tracer_provider, meter_provider, excluded_urls)
    hooked = []
    for framework in sorted(frameworks):
        module_name = _FRAMEWORKS[framework][0]
        if not _installed(module_name):
            continue
        _wanted.add(framework)
        hooked.append(framework)
        if framework in _registered:
            if module_name in sys.modules:
                _patch(framework)
            continue
        _registered.add(framework)
        # Patches now if the framework is imported, else the moment it is.
        import wrapt

        wrapt.register_post_import_hook(_post_import_hook(framework), module_name)
    return hooked


def uninstall_framework_hooks() -> None:
    """Undo ``install_framework_hooks``: new stacks are built bare, existing ones pass through."""
    with _hook_lock:
        _wanted.clear()
        for cls, original in _patched.values():
            cls.build_middleware_stack = original
        _patched.clear()
        if _hook_instruments is not None:
            _hook_instruments.enabled = False
        _restore_fastapi_native()
