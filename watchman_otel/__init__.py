"""watchman-otel: make a Python service observable with one call, `watchman_otel.init()`."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Literal

from watchman_otel import _init
from watchman_otel._asgi import instrument_asgi
from watchman_otel._errors import ConfigurationError
from watchman_otel._init import WatchmanSDK
from watchman_otel._version import __version__

__all__ = [
    "ConfigurationError",
    "Integration",
    "Protocol",
    "Sampler",
    "WatchmanSDK",
    "__version__",
    "init",
    "instrument_asgi",
    "shutdown",
]

Protocol = Literal["grpc", "http/protobuf"]
Sampler = Literal[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
]
Integration = Literal[
    "asgi",
    "starlette",
    "fastapi",
    "requests",
    "httpx",
    "urllib3",
    "aiohttp-client",
    "threading",
    "logging",
]


def init(
    *,
    service_name: str | None = None,
    service_version: str | None = None,
    environment: str | None = None,
    endpoint: str | None = None,
    protocol: Protocol | None = None,
    headers: Mapping[str, str] | None = None,
    compression: Literal["gzip", "none"] | None = None,
    export_timeout: float | None = None,
    sampler: Sampler | None = None,
    sample_ratio: float | None = None,
    propagators: Collection[str] | None = None,
    heartbeat_interval: float | None = None,
    metric_export_interval: float | None = None,
    span_queue_size: int | None = None,
    span_batch_size: int | None = None,
    span_schedule_delay: float | None = None,
    integrations: Collection[Integration] | None = None,
    disabled_integrations: Collection[str] | None = None,
    excluded_urls: Collection[str] | None = None,
    resource_attributes: Mapping[str, str] | None = None,
    logs: bool | None = None,
    console: bool | None = None,
    shutdown_timeout: float | None = None,
    disabled: bool | None = None,
) -> WatchmanSDK:
    """Start traces, metrics, logs and heartbeats for this process; returns the SDK handle.

    Every argument left ``None`` comes from ``WATCHMAN_<NAME>``, then the standard ``OTEL_*``
    variables, then the default (docs/sdk-settings.md lists them all). No network I/O happens
    here; exporters connect in the background. Calling it again returns the running SDK.
    A bad value raises `ConfigurationError` naming the setting; nothing else raises.
    """
    return _init.init(
        service_name=service_name,
        service_version=service_version,
        environment=environment,
        endpoint=endpoint,
        protocol=protocol,
        headers=headers,
        compression=compression,
        export_timeout=export_timeout,
        sampler=sampler,
        sample_ratio=sample_ratio,
        propagators=propagators,
        heartbeat_interval=heartbeat_interval,
        metric_export_interval=metric_export_interval,
        span_queue_size=span_queue_size,
        span_batch_size=span_batch_size,
        span_schedule_delay=span_schedule_delay,
        integrations=integrations,
        disabled_integrations=disabled_integrations,
        excluded_urls=excluded_urls,
        resource_attributes=resource_attributes,
        logs=logs,
        console=console,
        shutdown_timeout=shutdown_timeout,
        disabled=disabled,
    )


def shutdown(timeout: float | None = None) -> bool:
    """Flush and stop within ``timeout`` seconds (default: the shutdown_timeout setting).

    Returns True when everything was exported in time. Idempotent; a no-op before `init()`.
    """
    return _init.shutdown(timeout)
