"""watchman_otel.testing: users assert on their own spans, metrics and logs, in memory."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import metrics, trace

import watchman_otel
from watchman_otel.testing import TelemetryCapture, capture_telemetry


def test_fixture_captures_spans_metrics_and_logs(watchman_telemetry: TelemetryCapture):
    """Spans, metric points and log records made by the code under test are all visible at once."""
    tracer = trace.get_tracer("shop")
    with tracer.start_as_current_span("checkout") as span:
        metrics.get_meter("shop").create_counter("shop.orders").add(2, {"tier": "gold"})
        logging.getLogger("shop").error("payment declined")
    assert watchman_telemetry.span_names() == ["checkout"]
    assert watchman_telemetry.span("checkout").context.trace_id == span.get_span_context().trace_id
    (point,) = watchman_telemetry.metric_points("shop.orders")
    assert (point.value, dict(point.attributes)) == (2, {"tier": "gold"})
    (record,) = watchman_telemetry.logs()
    assert record.log_record.body == "payment declined"
    assert record.log_record.trace_id == span.get_span_context().trace_id


def test_fixture_includes_heartbeat_and_resource(watchman_telemetry: TelemetryCapture):
    """The heartbeat instruments and the Resource are those of a real init()."""
    assert "watchman.heartbeat" in watchman_telemetry.metrics()
    assert watchman_telemetry.resource.attributes["service.name"] == "test-service"


def test_init_inside_the_capture_returns_the_capturing_sdk(watchman_telemetry: TelemetryCapture):
    """App code calling init() under the fixture gets the capturing SDK, not a network one."""
    assert (
        watchman_otel.init(service_name="app", endpoint="http://127.0.0.1:9")
        is watchman_telemetry.sdk
    )


def test_clear_forgets_spans_and_logs(watchman_telemetry: TelemetryCapture):
    """clear() empties the recorded spans and logs."""
    with trace.get_tracer("t").start_as_current_span("x"):
        logging.getLogger("app").warning("w")
    watchman_telemetry.clear()
    assert watchman_telemetry.spans() == []
    assert watchman_telemetry.logs() == []


def test_span_lookup_fails_clearly():
    """span(name) raises AssertionError listing what was recorded when there is not exactly one."""
    with capture_telemetry(service_name="lookup") as capture:
        with trace.get_tracer("t").start_as_current_span("a"):
            pass
        with pytest.raises(AssertionError, match=r"found 0: \['a'\]"):
            capture.span("b")


def test_capture_stops_and_restores_nothing_running():
    """After the with block no SDK is running; later spans are not recorded."""
    with capture_telemetry() as capture:
        pass
    with trace.get_tracer("t").start_as_current_span("after"):
        pass
    assert capture.spans() == []
    assert watchman_otel._init.current() is None
