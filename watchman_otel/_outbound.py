"""Outbound HTTP: CLIENT spans and ``http.client.*`` metrics for the common client libraries.

``requests`` gets our own lean instrumentation (`watchman_otel._requests`, cheaper per call than
the contrib instrumentor). httpx, urllib3 and the aiohttp client, when installed, go
through opentelemetry-python-contrib's instrumentors, which we make run with the stable HTTP
semantic conventions.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from watchman_otel._errors import ConfigurationError, report_internal_error

__all__ = ["LIBRARIES", "instrument_outbound", "uninstrument_outbound"]


@dataclass(frozen=True)
class _Library:
    """One client library, the contrib instrumentor for it, and the extra that installs both."""

    module: str
    instrumentation: str
    instrumentor: str
    extra: str | None
    # Set for instrumentors without an `excluded_urls` argument: they read only this variable.
    excluded_env: str | None = None
    request_hook: Callable[..., None] | None = None
    # Ours, not contrib's: `instrument()` takes our path patterns and may decline (returns False)
    # when the contrib instrumentor already patched the library.
    native: bool = False


def _urllib3_server_attributes(span: Any, pool: Any, _info: Any) -> None:
    # contrib's urllib3 puts server.address/port only on the metric, but an unpaired CLIENT
    # span needs them on the span for the analyzer to name the peer.
    if span.is_recording():
        span.set_attributes({"server.address": pool.host, "server.port": pool.port})


LIBRARIES: dict[str, _Library] = {
    "requests": _Library(
        "requests", "watchman_otel._requests", "RequestsInstrumentation", None, native=True
    ),
    "httpx": _Library(
        "httpx",
        "opentelemetry.instrumentation.httpx",
        "HTTPXClientInstrumentor",
        "httpx",
        "OTEL_PYTHON_HTTPX_EXCLUDED_URLS",
    ),
    "urllib3": _Library(
        "urllib3",
        "opentelemetry.instrumentation.urllib3",
        "URLLib3Instrumentor",
        "urllib3",
        request_hook=_urllib3_server_attributes,
    ),
    "aiohttp-client": _Library(
        "aiohttp",
        "opentelemetry.instrumentation.aiohttp_client",
        "AioHttpClientInstrumentor",
        "aiohttp",
        "OTEL_PYTHON_AIOHTTP_CLIENT_EXCLUDED_URLS",
    ),
}

# (tracer provider, meter provider, contrib-style URL patterns, our path patterns)
_Config = tuple[TracerProvider | None, MeterProvider | None, str, tuple[str, ...]]
_lock = threading.Lock()
# name -> (instrumentor, the providers and exclusions it was instrumented with)
_active: dict[str, tuple[Any, _Config]] = {}
# name -> the exclusion we wrote into the library's own environment variable
_env_set: dict[str, str] = {}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _url_pattern(path_pattern: str) -> str:
    # Ours are searched in the path; the contrib instrumentors search the full URL, so move the
    # pattern's anchors to the path's ends: after the authority, before the query string.
    start = r"^[a-z][a-z0-9+.-]*://[^/?#]+"
    if path_pattern.startswith("^"):
        path_pattern = path_pattern[1:]
    else:
        start += "[^?#]*?"
    end = ""
    if path_pattern.endswith("$") and not path_pattern.endswith("\\$"):
        path_pattern = path_pattern[:-1]
        end = "(?:[?#].*)?$"
    return f"{start}(?:{path_pattern}){end}"


def _url_patterns(excluded_urls: Sequence[str]) -> str:
    return ",".join(_url_pattern(p) for p in excluded_urls)


def _ensure_stable_semconv() -> None:
    # The contrib packages read this once, at their first instrument(); init() sets it early,
    # this covers a direct call. "http/dup" (old and new names) is left as the user chose it.
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    try:
        from opentelemetry.instrumentation._semconv import (
            _OpenTelemetrySemanticConventionStability as Stability,
        )
        from opentelemetry.instrumentation._semconv import (
            _OpenTelemetryStabilitySignalType,
            _StabilityMode,
        )

        Stability._initialize()  # type: ignore[no-untyped-call]
        mode = Stability._get_opentelemetry_stability_opt_in_mode(
            _OpenTelemetryStabilitySignalType.HTTP
        )
        wanted = {s.strip() for s in os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"].split(",")}
        if mode is _StabilityMode.DEFAULT and wanted & {"http", "http/dup"}:
            # Something read the variable before it was set: read it again.
            with Stability._lock:
                Stability._initialized = False
            Stability._initialize()  # type: ignore[no-untyped-call]
    except Exception as exc:  # private contrib API: spans still flow without it
        report_internal_error("selecting the stable HTTP semantic conventions", exc)


def _missing(name: str, library: _Library) -> ConfigurationError:
    target = f"watchman-otel[{library.extra}]" if library.extra else "watchman-otel"
    return ConfigurationError(
        f"outbound instrumentation {name!r} needs {library.module} and {library.instrumentation}:"
        f" pip install '{target}'"
    )


def instrument_outbound(
    *,
    names: Collection[str] | None,
    explicit: bool,
    tracer_provider: TracerProvider | None,
    meter_provider: MeterProvider | None,
    excluded_urls: Sequence[str],
) -> list[str]:
    """Instrument the outbound HTTP client libraries; returns the names instrumented.

    ``names`` among ``requests``, ``httpx``, ``urllib3``, ``aiohttp-client``; ``None`` means all
    that are installed. With ``explicit`` (the user named them) a missing library is a
    ``ConfigurationError`` naming the pip extra; otherwise it is skipped quietly. Calling it again
    with the same settings changes nothing; with new providers it re-instruments.
    """
    wanted = list(LIBRARIES) if names is None else list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in LIBRARIES]
    if unknown:
        raise ConfigurationError(
            f"unknown outbound instrumentation(s) {unknown}; known: {', '.join(LIBRARIES)}"
        )
    available = []
    for name in wanted:
        library = LIBRARIES[name]
        if _installed(library.module) and _installed(library.instrumentation):
            available.append(name)
        elif explicit and names is not None:
            raise _missing(name, library)
    if not available:
        return []
    _ensure_stable_semconv()
    patterns = _url_patterns(excluded_urls)
    config: _Config = (tracer_provider, meter_provider, patterns, tuple(excluded_urls))
    done = []
    with _lock:
        for name in available:
            if _instrument_one(name, LIBRARIES[name], config, tracer_provider, meter_provider):
                done.append(name)
            elif explicit and names is not None:
                raise ConfigurationError(
                    f"outbound instrumentation {name!r} could not be enabled (see the log: the"
                    f" installed {LIBRARIES[name].module} may be outside the supported versions)"
                )
    return done


def _instrument_one(
    name: str,
    library: _Library,
    config: _Config,
    tracer_provider: TracerProvider | None,
    meter_provider: MeterProvider | None,
) -> bool:
    current = _active.get(name)
    if current is not None:
        old_tracer_provider, old_meter_provider, old_patterns, _old_paths = current[1]
        if (
            old_tracer_provider is tracer_provider
            and old_meter_provider is meter_provider
            and old_patterns == config[2]
        ):
            return True
        current[0].uninstrument()
        del _active[name]
    try:
        module = importlib.import_module(library.instrumentation)
        instrumentor = getattr(module, library.instrumentor)()
        if library.native:
            if not instrumentor.instrument(
                tracer_provider=tracer_provider,
                meter_provider=meter_provider,
                excluded_urls=config[3],
            ):
                # The contrib instrumentor (the user's, opentelemetry-instrument) is in place:
                # leave it; ours would only pass through under its suppression anyway.
                return True
            _active[name] = (instrumentor, config)
            return True
        if instrumentor.is_instrumented_by_opentelemetry:
            # Someone else (the user, opentelemetry-instrument) got there first: leave theirs.
            return True
        kwargs: dict[str, Any] = {
            "tracer_provider": tracer_provider,
            "meter_provider": meter_provider,
        }
        if library.request_hook is not None:
            kwargs["request_hook"] = library.request_hook
        if library.excluded_env is None:
            kwargs["excluded_urls"] = config[2]
        elif config[2] and os.environ.get(library.excluded_env) in (None, _env_set.get(name)):
            # A value the user set for this library wins over ours.
            os.environ[library.excluded_env] = config[2]
            _env_set[name] = config[2]
        instrumentor.instrument(**kwargs)
    except Exception as exc:  # a broken optional instrumentation must not stop init()
        report_internal_error(f"instrumenting {name}", exc)
        return False
    if not instrumentor.is_instrumented_by_opentelemetry:
        return False  # the contrib package refused (dependency conflict); it logged why
    _active[name] = (instrumentor, config)
    return True


def uninstrument_outbound() -> None:
    """Undo ``instrument_outbound`` for what it instrumented; idempotent."""
    with _lock:
        for name, (instrumentor, _config) in list(_active.items()):
            try:
                instrumentor.uninstrument()
            except Exception as exc:
                report_internal_error(f"uninstrumenting {name}", exc)
            del _active[name]
