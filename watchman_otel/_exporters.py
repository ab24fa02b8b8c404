"""Exporter wrappers that keep a broken collector from harming the host.

The stock OTLP exporters retry with backoff for up to their timeout (10 s) and log every failure.
Wrapped, they (1) can be aborted: `abort()` shuts the inner exporter down, which interrupts its
backoff sleep and closes its gRPC channel, so a shutdown deadline holds; (2) can be disowned after
fork: the child's inherited copy drops everything without touching the parent's sockets; (3) report
an outage once: one warning when exports start failing, one info line when they recover, and the
SDK's own per-failure log lines are held back by `ExporterLogFilter`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry import context as context_api
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = [
    "HEALTH",
    "ExportHealth",
    "ExporterLogFilter",
    "GuardedLogExporter",
    "GuardedMetricExporter",
    "GuardedSpanExporter",
    "install_log_filter",
]

_logger = logging.getLogger("watchman_otel")

# Loggers of the SDK that log once per failed export or dropped item.
_NOISY_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._log_exporter",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.metrics._internal.export",
    "opentelemetry.sdk.trace.export",
    "opentelemetry.sdk._logs._internal.export",
    "grpc._common",  # "Exception deserializing message!" when a collector answers junk
)


class ExportHealth:
    """Logs one warning per outage (whichever signal notices first) and one line on recovery."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failing = False
        self.closing = False
        self.failures = 0

    def reset(self) -> None:
        """Forget any outage (a new pipeline starts healthy)."""
        with self._lock:
            self._failing = False
            self.closing = False

    def _enter_outage(self) -> bool:
        with self._lock:
            self.failures += 1
            was_failing, self._failing = self._failing, True
        return not was_failing

    def record(self, signal: str, endpoint: str, ok: bool) -> None:
        """Note one export's outcome; log only on a change between healthy and failing."""
        if ok:
            with self._lock:
                was_failing, self._failing = self._failing, False
            if was_failing:
                _logger.info("watchman_otel: exporting %s to %s works again", signal, endpoint)
        elif self._enter_outage():
            _logger.warning(
                "watchman_otel: cannot export %s to %s; telemetry is dropped until the collector "
                "answers (details: DEBUG on 'watchman_otel')",
                signal,
                endpoint,
            )
        else:
            _logger.debug("watchman_otel: export of %s to %s failed", signal, endpoint)

    def trouble(self, detail: str) -> None:
        """The SDK logged a retry or failure: warn now, before the export's retries give up."""
        if self.closing:
            return
        if self._enter_outage():
            _logger.warning(
                "watchman_otel: cannot export telemetry (%s); it is dropped until the collector "
                "answers (details: DEBUG on 'watchman_otel')",
                detail,
            )

    def cut_short(self, timeout: float) -> None:
        """Shutdown hit its deadline: say so, unless this outage was already reported."""
        if self._enter_outage():
            _logger.warning(
                "watchman_otel: telemetry not exported within the %.1fs shutdown deadline was "
                "dropped (collector unreachable or slow)",
                timeout,
            )


HEALTH = ExportHealth()


class ExporterLogFilter(logging.Filter):
    """Turns the SDK's per-failure log lines into one `ExportHealth` warning per outage.

    The lines pass through unchanged only when 'watchman_otel' is at DEBUG.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Drop the record unless debugging the SDK; report trouble to `HEALTH` first."""
        if record.name.startswith("grpc") and not context_api.get_value(
            context_api._SUPPRESS_INSTRUMENTATION_KEY
        ):
            return True  # the app's own gRPC traffic, not an exporter thread's
        if _logger.isEnabledFor(logging.DEBUG):
            return True
        if record.levelno >= logging.WARNING:
            HEALTH.trouble(record.getMessage().split("\n", 1)[0][:300])
        return record.levelno >= logging.CRITICAL


_FILTER = ExporterLogFilter()


def install_log_filter() -> None:
    """Attach the filter to the SDK's noisy loggers (filters do not inherit, so each by name)."""
    names = set(_NOISY_LOGGERS)
    names.update(
        name
        for name in list(logging.root.manager.loggerDict)
        if name.startswith("opentelemetry.exporter.")
    )
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


class _Guard:
    """The state every wrapper shares: disowned (fork), aborted (deadline), health reporting."""

    def __init__(self, inner: Any, signal: str, endpoint: str, health: ExportHealth) -> None:
        self.inner = inner
        self.signal = signal
        self.endpoint = endpoint
        self.health = health
        self.disowned = False
        self.aborted = False
        self._abort_lock = threading.Lock()

    @property
    def dropping(self) -> bool:
        return self.disowned or self.aborted

    def report(self, ok: bool) -> None:
        if not self.dropping:
            self.health.record(self.signal, self.endpoint, ok)

    def abort(self) -> None:
        """Stop retries and close connections now; idempotent; never raises."""
        with self._abort_lock:
            if self.aborted or self.disowned:
                self.aborted = True
                return
            self.aborted = True
        try:
            if isinstance(self.inner, MetricExporter):
                self.inner.shutdown(timeout_millis=0)
            else:
                self.inner.shutdown()
        except Exception:
            _logger.debug("watchman_otel: closing the %s exporter failed", self.signal)


class GuardedSpanExporter(SpanExporter):
    """A span exporter that can be aborted, disowned after fork, and reports outages once."""

    def __init__(
        self, inner: SpanExporter, signal: str, endpoint: str, health: ExportHealth
    ) -> None:
        self.guard = _Guard(inner, signal, endpoint, health)
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export unless aborted or disowned."""
        if self.guard.dropping:
            return SpanExportResult.FAILURE
        result = self.inner.export(spans)
        self.guard.report(result is SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        """Close the inner exporter (once; never the parent's copy after fork)."""
        self.guard.abort()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here."""
        return True


class GuardedLogExporter(LogRecordExporter):
    """A log exporter that can be aborted, disowned after fork, and reports outages once."""

    def __init__(
        self, inner: LogRecordExporter, signal: str, endpoint: str, health: ExportHealth
    ) -> None:
        self.guard = _Guard(inner, signal, endpoint, health)
        self.inner = inner

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        """Export unless aborted or disowned."""
        if self.guard.dropping:
            return LogRecordExportResult.FAILURE
        result = self.inner.export(batch)
        self.guard.report(result is LogRecordExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        """Close the inner exporter (once; never the parent's copy after fork)."""
        self.guard.abort()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here."""
        return True


class GuardedMetricExporter(MetricExporter):
    """A metric exporter that can be aborted, disowned after fork, and reports outages once."""

    def __init__(
        self, inner: MetricExporter, signal: str, endpoint: str, health: ExportHealth
    ) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self.guard = _Guard(inner, signal, endpoint, health)
        self.inner = inner

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        """Export unless aborted or disowned."""
        if self.guard.dropping:
            return MetricExportResult.FAILURE
        result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        self.guard.report(result is MetricExportResult.SUCCESS)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Nothing is buffered here."""
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Close the inner exporter (once; never the parent's copy after fork)."""
        self.guard.abort()
