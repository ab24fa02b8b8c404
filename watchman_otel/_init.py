"""`init()` and `shutdown()`: build the pipeline, install globals and integrations, bound the exit.

One `WatchmanSDK` per process. A second `init()` returns it unchanged; `shutdown()` (or
interpreter exit) flushes within ``shutdown_timeout`` and leaves the globals forwarding to no-op
providers, so a later `init()` (tests, or an app that restarts telemetry) starts afresh.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from opentelemetry import metrics as metrics_api
from opentelemetry import propagate
from opentelemetry import trace as trace_api
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.resources import Resource

from watchman_otel import _fork, _logs
from watchman_otel._errors import ConfigurationError, report_internal_error
from watchman_otel._exporters import HEALTH, ExportHealth, install_log_filter
from watchman_otel._heartbeat import HeartbeatSampler, install_heartbeat
from watchman_otel._providers import Pipeline, SwitchingMeterProvider, SwitchingTracerProvider
from watchman_otel._resource import build_resource
from watchman_otel._settings import INTEGRATIONS, Config, resolve_config

__all__ = [
    "PipelineFactory",
    "WatchmanSDK",
    "current",
    "exit_flush_deadline",
    "init",
    "shutdown",
    "start",
]

_logger = logging.getLogger("watchman_otel")

PipelineFactory = Callable[[Config, Resource, ExportHealth], Pipeline]

_FRAMEWORKS = ("starlette", "fastapi")
_OUTBOUND = ("requests", "httpx", "urllib3", "aiohttp-client")

# Process-wide: OpenTelemetry's globals can be set once, so ours are set once and then switched.
TRACER_PROVIDER = SwitchingTracerProvider()
METER_PROVIDER = SwitchingMeterProvider()
_lock = threading.RLock()
_current: WatchmanSDK | None = None
# At interpreter exit the flush deadline leaves this share of shutdown_timeout (at most
# EXIT_TEARDOWN_RESERVE_MAX s) to the interpreter's own teardown after our hook, since the budget
# is the whole exit. With exporters still blocked on a black-holed collector that teardown took
# 0.1-0.3 s on an idle 2-core machine and 0.5-1.0 s on a loaded one, most of it in the final
# garbage collection. A healthy collector takes milliseconds to flush, so the shorter deadline
# only cuts what an unreachable one would not have taken anyway.
EXIT_TEARDOWN_RESERVE = 0.5
EXIT_TEARDOWN_RESERVE_MAX = 1.0
_hooks_registered = False


@dataclass
class WatchmanSDK:
    """What `init()` returns: the resolved settings, the Resource, the providers, `shutdown()`."""

    config: Config | None
    pipeline: Pipeline | None = None
    integrations: list[str] = field(default_factory=list)
    factory: PipelineFactory | None = None
    sampler: HeartbeatSampler | None = None
    active: bool = True

    @property
    def disabled(self) -> bool:
        """True when OTEL_SDK_DISABLED / ``disabled=True`` made `init()` a no-op."""
        return self.pipeline is None

    @property
    def resource(self) -> Resource:
        """The Resource every signal carries (empty when disabled)."""
        return self.pipeline.resource if self.pipeline else Resource.get_empty()

    @property
    def instance_id(self) -> str | None:
        """This process's ``service.instance.id``."""
        value = self.resource.attributes.get("service.instance.id")
        return str(value) if value is not None else None

    @property
    def tracer_provider(self) -> trace_api.TracerProvider:
        """The process-wide TracerProvider (follows fork and re-init)."""
        return TRACER_PROVIDER

    @property
    def meter_provider(self) -> metrics_api.MeterProvider:
        """The process-wide MeterProvider (follows fork and re-init)."""
        return METER_PROVIDER

    def force_flush(self, timeout: float | None = None) -> bool:
        """Export what is buffered now, waiting at most ``timeout`` s (default shutdown_timeout)."""
        pipeline = self.pipeline
        if pipeline is None or not self.active or self.config is None:
            return True
        return pipeline.flush(self.config.shutdown_timeout if timeout is None else timeout)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush and stop within ``timeout`` s (default: shutdown_timeout); idempotent."""
        return _shutdown(self, timeout, uninstall=True)


def current() -> WatchmanSDK | None:
    """The active SDK handle, if `init()` ran and `shutdown()` did not."""
    return _current


def init(**arguments: Any) -> WatchmanSDK:
    """Resolve settings and start telemetry; see `watchman_otel.init` for the arguments."""
    given = {name: value for name, value in arguments.items() if value is not None}
    return start(given)


def start(
    arguments: Mapping[str, object],
    factory: PipelineFactory | None = None,
    environ: Mapping[str, str] | None = None,
) -> WatchmanSDK:
    """`init()`'s body; ``factory`` builds the pipeline (the testing fixture's in-memory one)."""
    global _current  # noqa: PLW0603 - one SDK per process
    with _lock:
        if _current is not None and _current.active:
            _logger.debug("watchman_otel: init() already ran; returning the running SDK")
            return _current
        config = resolve_config(arguments, environ)  # ConfigurationError reaches the caller
        if config.disabled:
            _logger.debug("watchman_otel: disabled (OTEL_SDK_DISABLED); telemetry is a no-op")
            _current = WatchmanSDK(config=config)
            return _current
        os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", config.semconv_stability_opt_in)
        propagator = _build_propagator(config.propagators)
        sdk = WatchmanSDK(config=config, factory=factory or Pipeline)
        try:
            _start_pipeline(sdk)
            _install_globals(propagator)
            sdk.integrations = _install_integrations(config)
            _register_process_hooks()
        except ConfigurationError:
            _stop_pipeline(sdk, 0.0)
            raise
        except Exception as exc:
            report_internal_error("init()", exc)
            _stop_pipeline(sdk, 0.0)
            _current = WatchmanSDK(config=config)
            return _current
        _current = sdk
        return sdk


def _start_pipeline(sdk: WatchmanSDK, instance_id: str | None = None) -> None:
    """Build a Resource and Pipeline for this process and make them current (no network I/O)."""
    config = sdk.config
    if config is None or sdk.factory is None:
        return
    install_log_filter()
    resource = build_resource(
        service_name=config.service_name,
        service_version=config.service_version,
        environment=config.environment,
        attributes=config.resource_attributes,
        instance_id=instance_id,
    )
    HEALTH.reset()
    pipeline = sdk.factory(config, resource, HEALTH)
    sdk.sampler = HeartbeatSampler()
    install_heartbeat(pipeline.heartbeat_meter_provider, sdk.sampler)
    sdk.pipeline = pipeline
    TRACER_PROVIDER.switch(pipeline.tracer_provider)
    METER_PROVIDER.switch(pipeline.meter_provider)
    if config.logs and "logging" not in config.disabled_integrations:
        _logs.install_log_export(pipeline.logger_provider)
    _logs.install_trace_ids(config.service_name)


def _stop_pipeline(sdk: WatchmanSDK, timeout: float) -> bool:
    TRACER_PROVIDER.switch(None)
    METER_PROVIDER.switch(None)
    _logs.uninstall_log_export()
    pipeline = sdk.pipeline
    return True if pipeline is None else pipeline.shutdown(timeout)


def _install_globals(propagator: TextMapPropagator) -> None:
    propagate.set_global_textmap(propagator)
    current_tracer_provider = trace_api.get_tracer_provider()
    if current_tracer_provider is not TRACER_PROVIDER:
        if isinstance(current_tracer_provider, trace_api.ProxyTracerProvider):
            trace_api.set_tracer_provider(TRACER_PROVIDER)
        else:
            _logger.warning(
                "watchman_otel: another global TracerProvider is set; only watchman's "
                "integrations will use watchman's exporters"
            )
    current_meter_provider = metrics_api.get_meter_provider()
    if current_meter_provider is not METER_PROVIDER:
        if type(current_meter_provider).__name__ == "_ProxyMeterProvider":
            metrics_api.set_meter_provider(METER_PROVIDER)
        else:
            _logger.warning(
                "watchman_otel: another global MeterProvider is set; only watchman's "
                "integrations will use watchman's exporters"
            )


def _build_propagator(names: Sequence[str]) -> TextMapPropagator:
    propagators: list[TextMapPropagator] = []
    for name in names:
        if name == "none":
            continue
        found = list(entry_points(group="opentelemetry_propagator", name=name))
        if not found:
            raise ConfigurationError(
                f"OTEL_PROPAGATORS/propagators: unknown propagator {name!r}; expected "
                "tracecontext, baggage, or one provided by an installed package (e.g. b3)"
            )
        propagators.append(found[0].load()())
    return CompositePropagator(propagators)


def _wanted_integrations(config: Config) -> tuple[list[str], bool]:
    explicit = config.integrations is not None
    names = list(config.integrations) if config.integrations is not None else list(INTEGRATIONS)
    return [name for name in names if name not in config.disabled_integrations], explicit


def _install_integrations(config: Config) -> list[str]:
    """Install the instrumentation integrations; returns the names installed."""
    wanted, explicit = _wanted_integrations(config)
    installed: list[str] = []
    # "asgi" is the middleware itself (`instrument_asgi`); disabling it disables the auto-wrap.
    frameworks = [name for name in wanted if name in _FRAMEWORKS and "asgi" in wanted]
    outbound = [name for name in wanted if name in _OUTBOUND]
    # The integration modules are optional in this build: absent ones are skipped here, and
    # only here, on ImportError.
    if frameworks:
        try:
            from watchman_otel import _asgi
        except ImportError:
            _logger.debug("watchman_otel: ASGI integration not available")
        else:
            installed.append("asgi")
            installed += _asgi.install_framework_hooks(
                tracer_provider=TRACER_PROVIDER,
                meter_provider=METER_PROVIDER,
                excluded_urls=config.excluded_urls,
                frameworks=frameworks,
            )
    if outbound:
        try:
            from watchman_otel import _outbound
        except ImportError:
            _logger.debug("watchman_otel: outbound HTTP integration not available")
        else:
            installed += _outbound.instrument_outbound(
                names=outbound,
                explicit=explicit,
                tracer_provider=TRACER_PROVIDER,
                meter_provider=METER_PROVIDER,
                excluded_urls=config.excluded_urls,
            )
    if "threading" in wanted:
        try:
            from watchman_otel import _threads
        except ImportError:
            _logger.debug("watchman_otel: threading integration not available")
        else:
            _threads.instrument_threads()
            installed.append("threading")
    if "logging" in wanted:
        installed.append("logging")
    return installed


def _uninstall_integrations(names: Collection[str]) -> None:
    steps: list[tuple[str, Callable[[], object]]] = []
    if any(name in _FRAMEWORKS for name in names):
        steps.append(("_asgi", lambda: _call("_asgi", "uninstall_framework_hooks")))
    if any(name in _OUTBOUND for name in names):
        steps.append(("_outbound", lambda: _call("_outbound", "uninstrument_outbound")))
    if "threading" in names:
        steps.append(("_threads", lambda: _call("_threads", "uninstrument_threads")))
    for what, step in steps:
        try:
            step()
        except Exception as exc:
            report_internal_error(f"uninstalling {what}", exc)


def _call(module: str, function: str) -> object:
    import importlib

    return getattr(importlib.import_module(f"watchman_otel.{module}"), function)()


def _shutdown(sdk: WatchmanSDK, timeout: float | None, *, uninstall: bool) -> bool:
    global _current  # noqa: PLW0603 - one SDK per process
    with _lock:
        if not sdk.active:
            return True
        sdk.active = False
        if _current is sdk:
            _current = None
    config = sdk.config
    if timeout is None:
        timeout = config.shutdown_timeout if config is not None else 2.0
    if uninstall:
        _uninstall_integrations(sdk.integrations)
        _logs.uninstall_trace_ids()
    finished = _stop_pipeline(sdk, timeout)
    if not finished:
        _logger.debug("watchman_otel: shutdown deadline of %.1fs reached; rest dropped", timeout)
    return finished


def shutdown(timeout: float | None = None) -> bool:
    """Flush and stop the running SDK within ``timeout`` s; True if nothing was cut short.

    Idempotent, and a no-op before `init()`.
    """
    sdk = _current
    if sdk is None:
        return True
    return sdk.shutdown(timeout)


def exit_flush_deadline(shutdown_timeout: float) -> float:
    """Seconds the exit hook may flush so the whole exit stays within ``shutdown_timeout``."""
    return shutdown_timeout - min(
        EXIT_TEARDOWN_RESERVE * shutdown_timeout, EXIT_TEARDOWN_RESERVE_MAX
    )


def _at_exit() -> None:
    sdk = _current
    if sdk is not None:
        config = sdk.config
        timeout = config.shutdown_timeout if config is not None else 2.0
        try:
            _shutdown(sdk, exit_flush_deadline(timeout), uninstall=False)
        except Exception as exc:
            report_internal_error("shutdown at exit", exc)


def _after_fork_in_child() -> None:
    sdk = _current
    if sdk is None or not sdk.active or sdk.pipeline is None:
        return
    _fork.reinitialise(sdk, _start_pipeline)


def _register_process_hooks() -> None:
    global _hooks_registered  # noqa: PLW0603 - once per process
    if _hooks_registered:
        return
    _hooks_registered = True
    atexit.register(_at_exit)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
