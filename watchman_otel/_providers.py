"""One `Pipeline` of SDK providers and exporters per process, behind switchable global providers.

OpenTelemetry's global providers can be set once per process, and instrumentations keep the
tracers and instruments they got. So the globals are `SwitchingTracerProvider` and
`SwitchingMeterProvider`: stable objects that forward to the current `Pipeline`. After fork (new
instance id, new exporters, fresh metric state) or a re-`init()`, a new `Pipeline` is swapped in
and everything obtained earlier follows it.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.metrics._internal import _ProxyMeter
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    ConsoleLogRecordExporter,
    LogRecordExporter,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.util.types import Attributes

from watchman_otel._exporters import (
    ExportHealth,
    GuardedLogExporter,
    GuardedMetricExporter,
    GuardedSpanExporter,
    _Guard,
)
from watchman_otel._settings import Config, SignalExport
from watchman_otel._span_encoder import FastSpanEncoding

__all__ = [
    "Pipeline",
    "SwitchingMeterProvider",
    "SwitchingTracerProvider",
    "build_sampler",
    "run_with_deadline",
]

_logger = logging.getLogger("watchman_otel")


def build_sampler(name: str, ratio: float) -> Sampler:
    """The sampler OTEL_TRACES_SAMPLER names."""
    roots: dict[str, Callable[[], Sampler]] = {
        "always_on": lambda: ALWAYS_ON,
        "always_off": lambda: ALWAYS_OFF,
        "traceidratio": lambda: TraceIdRatioBased(ratio),
    }
    if name.startswith("parentbased_"):
        return ParentBased(roots[name.removeprefix("parentbased_")]())
    return roots[name]()


# (gRPC module, HTTP module, class) of the OTLP exporter of each signal.
_OTLP_EXPORTERS = {
    "traces": (
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        "OTLPSpanExporter",
    ),
    "metrics": (
        "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
        "opentelemetry.exporter.otlp.proto.http.metric_exporter",
        "OTLPMetricExporter",
    ),
    "logs": (
        "opentelemetry.exporter.otlp.proto.grpc._log_exporter",
        "opentelemetry.exporter.otlp.proto.http._log_exporter",
        "OTLPLogExporter",
    ),
}


def _otlp_exporter(signal: str, export: SignalExport) -> Any:
    """The official OTLP exporter of `signal`, imported only for the protocol in use."""
    grpc_module, http_module, name = _OTLP_EXPORTERS[signal]
    gzip = export.compression == "gzip"
    if export.protocol == "grpc":
        from grpc import Compression as GrpcCompression

        return getattr(importlib.import_module(grpc_module), name)(
            endpoint=export.endpoint,
            insecure=export.endpoint.startswith("http://"),
            headers=dict(export.headers),
            timeout=export.timeout,
            compression=GrpcCompression.Gzip if gzip else GrpcCompression.NoCompression,
        )
    from opentelemetry.exporter.otlp.proto.http import Compression

    return getattr(importlib.import_module(http_module), name)(
        endpoint=export.endpoint,
        headers=dict(export.headers),
        timeout=export.timeout,
        compression=Compression.Gzip if gzip else Compression.NoCompression,
    )


def _otlp_span_exporter(export: SignalExport) -> SpanExporter:
    # The official exporter, its batches encoded by `_span_encoder` (the same requests).
    return FastSpanEncoding(cast("SpanExporter", _otlp_exporter("traces", export)))


def _otlp_metric_exporter(export: SignalExport) -> MetricExporter:
    return cast("MetricExporter", _otlp_exporter("metrics", export))


def _otlp_log_exporter(export: SignalExport) -> LogRecordExporter:
    return cast("LogRecordExporter", _otlp_exporter("logs", export))


def run_with_deadline(tasks: Sequence[Callable[[], object]], timeout: float) -> bool:
    """Run ``tasks`` in parallel daemon threads; wait at most ``timeout`` s; True if all finished.

    Threads, because the SDK's shutdown and flush calls can block on a socket for the exporter's
    whole timeout; a daemon thread left behind cannot hold up interpreter exit.
    """
    deadline = time.monotonic() + timeout
    threads = []
    for task in tasks:
        thread = threading.Thread(target=_quietly(task), name="watchman-shutdown", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # interpreter finalizing: no new threads; skip rather than block
            continue
        threads.append(thread)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return not any(thread.is_alive() for thread in threads)


def _quietly(task: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        try:
            task()
        except Exception:
            _logger.debug("watchman_otel: shutdown step failed", exc_info=True)

    return run


class Pipeline:
    """One process's providers, processors, readers and guarded exporters, sharing one Resource."""

    def __init__(
        self,
        config: Config,
        resource: Resource,
        health: ExportHealth,
        *,
        span_processors: Sequence[SpanProcessor] | None = None,
        metric_readers: Sequence[MetricReader] | None = None,
        heartbeat_readers: Sequence[MetricReader] | None = None,
        log_processors: Sequence[LogRecordProcessor] | None = None,
    ) -> None:
        """Build from ``config``; the keyword arguments replace the OTLP/console exporters."""
        self.config = config
        self.resource = resource
        self.health = health
        self.guards: list[_Guard] = []
        self.tracer_provider = TracerProvider(
            resource=resource,
            sampler=build_sampler(config.sampler, config.sample_ratio),
            shutdown_on_exit=False,
        )
        if span_processors is None:
            span_processors = [
                BatchSpanProcessor(
                    exporter,
                    max_queue_size=config.span_queue_size,
                    max_export_batch_size=min(config.span_batch_size, config.span_queue_size),
                    schedule_delay_millis=config.span_schedule_delay * 1000,
                )
                for exporter in self._span_exporters()
            ]
        for processor in span_processors:
            self.tracer_provider.add_span_processor(processor)
        self.meter_provider = MeterProvider(
            resource=resource,
            metric_readers=list(
                metric_readers
                if metric_readers is not None
                else self._readers(config.metric_export_interval * 1000)
            ),
            shutdown_on_exit=False,
        )
        self.heartbeat_meter_provider = MeterProvider(
            resource=resource,
            metric_readers=list(
                heartbeat_readers
                if heartbeat_readers is not None
                else self._readers(config.heartbeat_interval * 1000)
            ),
            shutdown_on_exit=False,
        )
        self.logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        if log_processors is None:
            log_processors = (
                [BatchLogRecordProcessor(exporter) for exporter in self._log_exporters()]
                if config.logs
                else []
            )
        for log_processor in log_processors:
            self.logger_provider.add_log_record_processor(log_processor)
        self._closed = False

    def _exporter_names(self, signal: str) -> list[str]:
        names = list(self.config.exports[signal].exporters)
        if self.config.console and "console" not in names:
            names.append("console")
        return names

    def _span_exporters(self) -> list[SpanExporter]:
        export = self.config.exports["traces"]
        exporters: list[SpanExporter] = []
        for name in self._exporter_names("traces"):
            inner = (
                _otlp_span_exporter(export)
                if name == "otlp"
                else ConsoleSpanExporter(out=sys.stderr)
            )
            guarded = GuardedSpanExporter(inner, "traces", export.endpoint, self.health)
            self.guards.append(guarded.guard)
            exporters.append(guarded)
        return exporters

    def _readers(self, interval_ms: float) -> list[MetricReader]:
        export = self.config.exports["metrics"]
        readers: list[MetricReader] = []
        for name in self._exporter_names("metrics"):
            inner = (
                _otlp_metric_exporter(export)
                if name == "otlp"
                else ConsoleMetricExporter(out=sys.stderr)
            )
            guarded = GuardedMetricExporter(inner, "metrics", export.endpoint, self.health)
            self.guards.append(guarded.guard)
            readers.append(
                PeriodicExportingMetricReader(
                    guarded,
                    export_interval_millis=interval_ms,
                    export_timeout_millis=export.timeout * 1000,
                )
            )
        return readers

    def _log_exporters(self) -> list[LogRecordExporter]:
        export = self.config.exports["logs"]
        exporters: list[LogRecordExporter] = []
        for name in self._exporter_names("logs"):
            inner = (
                _otlp_log_exporter(export)
                if name == "otlp"
                else ConsoleLogRecordExporter(out=sys.stderr)
            )
            guarded = GuardedLogExporter(inner, "logs", export.endpoint, self.health)
            self.guards.append(guarded.guard)
            exporters.append(guarded)
        return exporters

    def flush(self, timeout: float) -> bool:
        """Export what is buffered, waiting at most ``timeout`` seconds."""
        millis = int(timeout * 1000)
        return run_with_deadline(
            [
                lambda: self.tracer_provider.force_flush(millis),
                lambda: self.meter_provider.force_flush(millis),
                lambda: self.heartbeat_meter_provider.force_flush(millis),
                lambda: self.logger_provider.force_flush(millis),
            ],
            timeout,
        )

    def shutdown(self, timeout: float) -> bool:
        """Flush and close within ``timeout`` s, then abort whatever still waits on the network.

        Returns True when everything finished in time (nothing was cut short).
        """
        if self._closed:
            return True
        self._closed = True
        self.health.closing = True
        millis = int(timeout * 1000)
        finished = run_with_deadline(
            [
                self.tracer_provider.shutdown,
                lambda: self.meter_provider.shutdown(timeout_millis=millis),
                lambda: self.heartbeat_meter_provider.shutdown(timeout_millis=millis),
                self.logger_provider.shutdown,
            ],
            timeout,
        )
        for guard in self.guards:
            guard.abort()
        if not finished:
            self.health.cut_short(timeout)
        return finished

    def disown(self) -> None:
        """In a forked child: drop this (the parent's) pipeline without touching its sockets."""
        self._closed = True
        for guard in self.guards:
            guard.disowned = True
        # Stop the worker threads the SDK restarted in the child; their exporters now drop.
        run_with_deadline(
            [
                self.tracer_provider.shutdown,
                lambda: self.meter_provider.shutdown(timeout_millis=0),
                lambda: self.heartbeat_meter_provider.shutdown(timeout_millis=0),
                self.logger_provider.shutdown,
            ],
            0.0,
        )


class _SwitchingTracer(trace_api.Tracer):
    """A tracer that resolves the current pipeline's tracer, re-resolving after a switch."""

    def __init__(self, owner: SwitchingTracerProvider, key: tuple[Any, ...]) -> None:
        self._owner = owner
        self._key = key
        self._generation = -1
        self._real: trace_api.Tracer = trace_api.NoOpTracer()

    def resolve(self) -> trace_api.Tracer:
        """The current pipeline's own tracer (a no-op one before `init()`)."""
        generation = self._owner.generation
        if generation != self._generation:
            name, version, schema_url, attributes = self._key
            self._real = self._owner.current.get_tracer(
                name, version, schema_url, dict(attributes) if attributes else None
            )
            self._generation = generation
        return self._real

    def start_span(self, *args: Any, **kwargs: Any) -> trace_api.Span:
        """Delegates to the current pipeline's tracer."""
        return self.resolve().start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        """Delegates to the current pipeline's tracer."""
        return self.resolve().start_as_current_span(*args, **kwargs)


class SwitchingTracerProvider(trace_api.TracerProvider):
    """The global TracerProvider: forwards to whichever SDK provider is current (no-op if none)."""

    def __init__(self) -> None:
        self.current: trace_api.TracerProvider = trace_api.NoOpTracerProvider()
        self.generation = 0
        self._tracers: dict[tuple[Any, ...], _SwitchingTracer] = {}
        self._lock = threading.Lock()

    def switch(self, provider: trace_api.TracerProvider | None) -> None:
        """Make ``provider`` (or a no-op one) current for every tracer handed out."""
        with self._lock:
            self.current = provider or trace_api.NoOpTracerProvider()
            self.generation += 1

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes | None = None,
    ) -> trace_api.Tracer:
        """A tracer that follows switches; one per (name, version, schema, attributes)."""
        frozen = tuple(sorted(attributes.items())) if attributes else None
        key = (instrumenting_module_name, instrumenting_library_version, schema_url, frozen)
        with self._lock:
            tracer = self._tracers.get(key)
            if tracer is None:
                tracer = self._tracers[key] = _SwitchingTracer(self, key)
            return tracer


class _SwitchingMeter(_ProxyMeter):
    """A proxy meter whose instruments are always proxies, re-pointed at every switch."""

    def __init__(self, name: str, version: str | None, schema_url: str | None) -> None:
        super().__init__(name, version=version, schema_url=schema_url)
        self._current: metrics_api.Meter = NoOpMeterProvider().get_meter(name)

    def on_set_meter_provider(self, meter_provider: metrics_api.MeterProvider) -> None:
        """Point every instrument made so far at ``meter_provider``'s meter."""
        meter = meter_provider.get_meter(self._name, self._version, self._schema_url)
        with self._lock:
            self._current = meter
            for instrument in self._instruments:
                instrument.on_meter_set(meter)

    def _adopt(self, proxy: Any) -> Any:
        with self._lock:
            proxy.on_meter_set(self._current)
        return proxy

    # The base class hands out real instruments once it has a real meter; ours never sets
    # `_real_meter`, so each create_* returns a proxy that we bind to the current meter.
    def create_counter(self, *args: Any, **kwargs: Any) -> Any:
        """Proxy counter following switches."""
        return self._adopt(super().create_counter(*args, **kwargs))

    def create_up_down_counter(self, *args: Any, **kwargs: Any) -> Any:
        """Proxy up-down counter following switches."""
        return self._adopt(super().create_up_down_counter(*args, **kwargs))

    def create_histogram(self, *args: Any, **kwargs: Any) -> Any:
        """Proxy histogram following switches."""
        return self._adopt(super().create_histogram(*args, **kwargs))

    def create_gauge(self, *args: Any, **kwargs: Any) -> Any:
        """Proxy gauge following switches."""
        return self._adopt(super().create_gauge(*args, **kwargs))

    def create_observable_counter(self, *args: Any, **kwargs: Any) -> Any:
        """Proxy observable counter following switches."""
        return self._adopt(super().create_observable_counter(*args, **kwargs))

    def create_observable_up_down_counter(self, *args: Any, **kwargs: Any) -> Any:
        """Proxy observable up-down counter following switches."""
        return self._adopt(super().create_observable_up_down_counter(*args, **kwargs))

    def create_observable_gauge(self, *args: Any, **kwargs: Any) -> Any:
        """Proxy observable gauge following switches."""
        return self._adopt(super().create_observable_gauge(*args, **kwargs))


class SwitchingMeterProvider(metrics_api.MeterProvider):
    """The global MeterProvider: forwards to whichever SDK provider is current (no-op if none)."""

    def __init__(self) -> None:
        self.current: metrics_api.MeterProvider = NoOpMeterProvider()
        self._meters: dict[tuple[Any, ...], _SwitchingMeter] = {}
        self._lock = threading.Lock()

    def switch(self, provider: metrics_api.MeterProvider | None) -> None:
        """Make ``provider`` (or a no-op one) current for every meter and instrument handed out."""
        with self._lock:
            self.current = provider or NoOpMeterProvider()
            for meter in self._meters.values():
                meter.on_set_meter_provider(self.current)

    def get_meter(
        self,
        name: str,
        version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes | None = None,
    ) -> metrics_api.Meter:
        """A meter that follows switches; one per (name, version, schema)."""
        key = (name, version, schema_url)
        with self._lock:
            meter = self._meters.get(key)
            if meter is None:
                meter = self._meters[key] = _SwitchingMeter(name, version, schema_url)
                meter.on_set_meter_provider(self.current)
            return meter
