"""Test helpers for users: run `init()` with in-memory exporters and assert on spans, metrics, logs.

Use the ``watchman_telemetry`` fixture (register this module as a pytest plugin, or import the
fixture into a ``conftest.py``), or the `capture_telemetry()` context manager::

    def test_checkout_is_traced(watchman_telemetry):
        client.post("/checkout")
        assert watchman_telemetry.span_names() == ["POST /checkout"]
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from watchman_otel import _init
from watchman_otel._exporters import ExportHealth
from watchman_otel._providers import Pipeline
from watchman_otel._settings import Config

__all__ = ["TelemetryCapture", "capture_telemetry", "watchman_telemetry"]


class TelemetryCapture:
    """What the code under test emitted, kept in memory; spans and logs are recorded at once."""

    def __init__(self) -> None:
        self._spans = InMemorySpanExporter()
        self._logs = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
        self._metrics = InMemoryMetricReader()
        self._heartbeat = InMemoryMetricReader()
        self.sdk: _init.WatchmanSDK | None = None

    def build(self, config: Config, resource: Resource, health: ExportHealth) -> Pipeline:
        """The pipeline factory handed to `init()`: in-memory exporters and readers only."""
        return Pipeline(
            config,
            resource,
            health,
            span_processors=[SimpleSpanProcessor(self._spans)],
            metric_readers=[self._metrics],
            heartbeat_readers=[self._heartbeat],
            log_processors=[SimpleLogRecordProcessor(self._logs)] if config.logs else [],
        )

    @property
    def resource(self) -> Resource:
        """The Resource `init()` built (service.name, service.instance.id, ...)."""
        return self.sdk.resource if self.sdk is not None else Resource.get_empty()

    def spans(self) -> list[ReadableSpan]:
        """Finished spans, oldest first."""
        return list(self._spans.get_finished_spans())

    def span_names(self) -> list[str]:
        """Names of the finished spans, oldest first."""
        return [span.name for span in self.spans()]

    def span(self, name: str) -> ReadableSpan:
        """The one finished span called ``name``; AssertionError if there is not exactly one."""
        found = [span for span in self.spans() if span.name == name]
        if len(found) != 1:
            raise AssertionError(
                f"expected one span {name!r}, found {len(found)}: {self.span_names()}"
            )
        return found[0]

    def metrics(self) -> dict[str, list[Any]]:
        """Collect now: metric name → its data points (heartbeat metrics included)."""
        points: dict[str, list[Any]] = {}
        for reader in (self._metrics, self._heartbeat):
            data = reader.get_metrics_data()
            if data is None:
                continue
            for resource_metrics in data.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        points.setdefault(metric.name, []).extend(metric.data.data_points)
        return points

    def metric_points(self, name: str) -> list[Any]:
        """Data points of one metric, collected now (empty if none)."""
        return self.metrics().get(name, [])

    def logs(self) -> list[ReadableLogRecord]:
        """Exported log records, oldest first."""
        return list(self._logs.get_finished_logs())

    def clear(self) -> None:
        """Forget spans and logs recorded so far (metrics are cumulative by nature)."""
        self._spans.clear()
        self._logs.clear()


@contextmanager
def capture_telemetry(**init_arguments: Any) -> Iterator[TelemetryCapture]:
    """Run `init(**init_arguments)` with in-memory exporters for the ``with`` block.

    An SDK already running is shut down first (at once, nothing waits on the network), so the
    code under test, which may call `init()` itself, gets the capturing one.
    """
    running = _init.current()
    if running is not None:
        running.shutdown(timeout=0.0)
    capture = TelemetryCapture()
    arguments: Mapping[str, object] = {
        "service_name": "test-service",
        **{key: value for key, value in init_arguments.items() if value is not None},
        "disabled": False,
    }
    capture.sdk = _init.start(arguments, factory=capture.build)
    try:
        yield capture
    finally:
        capture.sdk.shutdown(timeout=1.0)


@pytest.fixture
def watchman_telemetry() -> Iterator[TelemetryCapture]:
    """`init()` with in-memory exporters for one test: assert on `.spans()`, `.metrics()`..."""
    with capture_telemetry() as capture:
        yield capture
