"""Never harm the host: a collector refusing, black-holed or answering junk costs the app nothing.

Each case runs a real app in a child interpreter and checks: exit code 0, no traceback, exactly
one warning, and interpreter exit within the shutdown deadline plus interpreter teardown. Stock
OpenTelemetry takes 7 s (refusing) to 10.5 s (black-holed) to exit in the same situation.
"""

from __future__ import annotations

import logging
import time

import pytest
from opentelemetry import trace

import watchman_otel
from tests.sdk.conftest import run_child
from tests.sdk.otlp_receiver import OTLPReceiver

SHUTDOWN_TIMEOUT = 1.0
# Interpreter teardown after our deadline: module cleanup, thread joins of the runtime itself.
TEARDOWN_ALLOWANCE = 2.0

APP = """
import logging, sys, time
logging.basicConfig(
    level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
)
import watchman_otel
from opentelemetry import trace

watchman_otel.init(
    service_name="victim", endpoint={endpoint!r}, protocol={protocol!r},
    heartbeat_interval=0.1, metric_export_interval=0.1, span_schedule_delay=0.05,
    shutdown_timeout={timeout!r},
)
tracer = trace.get_tracer("app")
for _ in range(2000):
    with tracer.start_as_current_span("request"):
        logging.getLogger("app").warning("handled")
time.sleep(0.5)
print("EXITING", time.time(), flush=True)
"""


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
@pytest.mark.parametrize("mode", ["refuse", "blackhole", "garbage"])
def test_broken_collector_never_reaches_the_app(mode, protocol):
    """No exception, one warning at most, exit within the deadline, whatever the collector does."""
    with OTLPReceiver(mode) as collector:
        endpoint = collector.grpc_endpoint if protocol == "grpc" else collector.http_endpoint
        result = run_child(
            APP.format(endpoint=endpoint, protocol=protocol, timeout=SHUTDOWN_TIMEOUT)
        )
        assert collector.request_count > 0  # the collector was really tried
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    warnings = [
        line for line in result.stderr.splitlines() if line.startswith("WARNING watchman_otel")
    ]
    app_lines = [line for line in result.stderr.splitlines() if line.startswith("WARNING app")]
    assert len(app_lines) == 2000  # the app's own logging is untouched
    noise = [
        line
        for line in result.stderr.splitlines()
        if not line.startswith(("WARNING app", "WARNING watchman_otel"))
    ]
    assert noise == []
    if mode == "garbage" and protocol == "http/protobuf":
        # HTTP 200 is success whatever the body says; the exporters do not parse it.
        assert len(warnings) <= 1
    elif mode == "blackhole":
        # Nothing ever answers, so the outage shows only when the deadline cuts the export.
        assert len(warnings) == 1, warnings
        assert "shutdown deadline" in warnings[0]
    else:
        assert len(warnings) == 1, warnings
        assert "cannot export" in warnings[0]
    assert result.exit_seconds < SHUTDOWN_TIMEOUT + TEARDOWN_ALLOWANCE


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_shutdown_returns_within_its_deadline_when_black_holed(clean_env, protocol):
    """shutdown(timeout) returns by its deadline, reporting that data was cut short."""
    with OTLPReceiver("blackhole") as collector:
        endpoint = collector.grpc_endpoint if protocol == "grpc" else collector.http_endpoint
        watchman_otel.init(
            service_name="svc", endpoint=endpoint, protocol=protocol, span_schedule_delay=0.05
        )
        with trace.get_tracer("t").start_as_current_span("x"):
            pass
        assert collector.wait_for(lambda c: c.request_count > 0)
        started = time.monotonic()
        finished = watchman_otel.shutdown(timeout=0.5)
        elapsed = time.monotonic() - started
    assert finished is False
    assert elapsed < 0.5 + 0.5


def test_span_queue_is_bounded_when_the_collector_hangs(clean_env):
    """With exports stuck, spans beyond the queue size are dropped, never buffered without bound."""
    with OTLPReceiver("blackhole") as collector:
        sdk = watchman_otel.init(
            service_name="svc",
            endpoint=collector.http_endpoint,
            span_queue_size=100,
            span_batch_size=10,
            span_schedule_delay=0.05,
        )
        tracer = trace.get_tracer("t")
        for _ in range(5000):
            with tracer.start_as_current_span("x"):
                pass
        assert sdk.pipeline is not None
        processors = sdk.pipeline.tracer_provider._active_span_processor._span_processors
        queue = processors[0]._batch_processor._queue
        assert len(queue) <= 100
        sdk.shutdown(timeout=0.2)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_hanging_exports_warn_once_when_their_timeout_expires(clean_env, caplog, protocol):
    """A black-holed collector yields one warning as the export timeout passes, not one a batch."""
    with OTLPReceiver("blackhole") as collector:
        endpoint = collector.grpc_endpoint if protocol == "grpc" else collector.http_endpoint
        with caplog.at_level(logging.WARNING):
            watchman_otel.init(
                service_name="svc",
                endpoint=endpoint,
                protocol=protocol,
                export_timeout=0.2,
                span_schedule_delay=0.05,
                heartbeat_interval=0.1,
                logs=False,
            )
            tracer = trace.get_tracer("t")
            for _ in range(3):
                with tracer.start_as_current_span("x"):
                    pass
                time.sleep(0.3)
            watchman_otel.shutdown(timeout=0.3)
    ours = [r for r in caplog.records if r.name == "watchman_otel" and r.levelno >= logging.WARNING]
    assert len(ours) == 1, [r.getMessage() for r in ours]
    assert "cannot export" in ours[0].getMessage()
    assert not [r for r in caplog.records if r.name.startswith(("opentelemetry", "grpc"))]
