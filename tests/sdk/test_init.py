"""init() / shutdown(): signals reach a real OTLP receiver; idempotence, disabled, precedence."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import metrics, trace

import watchman_otel
from tests.sdk.otlp_receiver import OTLPReceiver, iter_points
from watchman_otel import ConfigurationError
from watchman_otel._init import current

FAST = {"heartbeat_interval": 0.2, "metric_export_interval": 0.2, "span_schedule_delay": 0.05}


def endpoint_of(receiver: OTLPReceiver, protocol: str) -> str:
    return receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_spans_metrics_and_logs_arrive_with_the_resource(clean_env, receiver, protocol):
    """Traces, metrics and logs reach the receiver over either protocol, carrying the Resource."""
    clean_env.setenv("OTEL_BLRP_SCHEDULE_DELAY", "50")
    sdk = watchman_otel.init(
        service_name="checkout",
        service_version="1.2.3",
        environment="staging",
        resource_attributes={"team": "payments"},
        endpoint=endpoint_of(receiver, protocol),
        protocol=protocol,
        **FAST,
    )
    metrics.get_meter("app").create_counter("app.orders").add(3)
    with trace.get_tracer("app").start_as_current_span("place-order") as span:
        logging.getLogger("app.orders").error("card declined")
        trace_id = span.get_span_context().trace_id
    assert receiver.wait_for(
        lambda r: r.spans() and r.logs() and any(m.name == "app.orders" for _, m in r.metrics())
    )
    resource, span_pb = receiver.spans()[0]
    assert span_pb.name == "place-order"
    assert resource["service.name"] == "checkout"
    assert resource["service.version"] == "1.2.3"
    assert resource["deployment.environment.name"] == "staging"
    assert resource["team"] == "payments"
    assert resource["service.instance.id"] == sdk.instance_id
    assert resource["watchman.version"] == watchman_otel.__version__
    assert resource["telemetry.sdk.language"] == "python"
    assert isinstance(resource["process.pid"], int)
    assert resource["host.name"]
    _, record = receiver.logs()[0]
    assert record.body.string_value == "card declined"
    assert record.trace_id == trace_id.to_bytes(16, "big")
    assert record.severity_text == "ERROR"
    assert set(receiver.transports()) == {"grpc" if protocol == "grpc" else "http"}


def test_http_exports_are_gzipped_and_carry_headers(clean_env, receiver):
    """Requests are gzip-compressed by default and carry the configured headers."""
    clean_env.setenv("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cret")
    watchman_otel.init(service_name="svc", endpoint=receiver.http_endpoint, **FAST)
    with trace.get_tracer("t").start_as_current_span("x"):
        pass
    assert receiver.wait_for(lambda r: r.spans())
    headers = receiver.headers[0]
    assert headers["Content-Encoding"] == "gzip"
    assert headers["api-key"] == "s3cret"


def test_grpc_exports_carry_headers_as_metadata(clean_env, receiver):
    """With grpc, configured headers arrive as request metadata."""
    watchman_otel.init(
        service_name="svc",
        endpoint=receiver.grpc_endpoint,
        protocol="grpc",
        headers={"api-key": "s3cret"},
        **FAST,
    )
    with trace.get_tracer("t").start_as_current_span("x"):
        pass
    assert receiver.wait_for(lambda r: r.spans())
    assert receiver.headers[0]["api-key"] == "s3cret"


def test_env_precedence_is_visible_in_the_exported_resource(clean_env, receiver):
    """WATCHMAN_SERVICE_NAME beats OTEL_SERVICE_NAME, an argument beats both; signal endpoints."""
    with OTLPReceiver() as traces_only:
        clean_env.setenv("OTEL_SERVICE_NAME", "from-otel")
        clean_env.setenv("WATCHMAN_SERVICE_NAME", "from-watchman")
        clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.http_endpoint)
        clean_env.setenv(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces_only.http_endpoint + "/v1/traces"
        )
        watchman_otel.init(**FAST)
        with trace.get_tracer("t").start_as_current_span("x"):
            pass
        assert traces_only.wait_for(lambda r: r.spans())
        assert receiver.wait_for(lambda r: r.metrics())
        assert traces_only.spans()[0][0]["service.name"] == "from-watchman"
        assert receiver.spans() == []
        watchman_otel.shutdown()
        watchman_otel.init(service_name="from-argument", **FAST)
        with trace.get_tracer("t").start_as_current_span("y"):
            pass
        assert traces_only.wait_for(lambda r: len(r.spans()) == 2)
        assert traces_only.spans()[1][0]["service.name"] == "from-argument"


def test_init_twice_returns_the_running_sdk(clean_env, receiver):
    """A second init() is harmless: same handle, same instance, settings unchanged."""
    first = watchman_otel.init(service_name="one", endpoint=receiver.http_endpoint)
    second = watchman_otel.init(service_name="two")
    assert second is first
    assert first.resource.attributes["service.name"] == "one"


def test_shutdown_is_idempotent_and_safe_before_init(clean_env, receiver):
    """shutdown() before init, twice, and via the handle all return True without raising."""
    assert watchman_otel.shutdown() is True
    sdk = watchman_otel.init(service_name="svc", endpoint=receiver.http_endpoint)
    assert sdk.shutdown() is True
    assert sdk.shutdown() is True
    assert watchman_otel.shutdown() is True
    assert current() is None


def test_reinit_after_shutdown_reaches_tracers_obtained_earlier(clean_env, receiver):
    """Tracers and instruments made before a re-init follow the new pipeline and instance id."""
    tracer = trace.get_tracer("early")
    counter = metrics.get_meter("early").create_counter("early.count")
    first = watchman_otel.init(service_name="svc", endpoint=receiver.http_endpoint, **FAST)
    first_id = first.instance_id
    first.shutdown()
    second = watchman_otel.init(service_name="svc", endpoint=receiver.http_endpoint, **FAST)
    assert second is not first
    assert second.instance_id != first_id
    with tracer.start_as_current_span("after-reinit"):
        counter.add(1)
    assert receiver.wait_for(
        lambda r: r.spans() and any(m.name == "early.count" for _, m in r.metrics())
    )
    assert {res["service.instance.id"] for res, _ in receiver.spans()} == {second.instance_id}
    points = [
        p.as_int for res, m in receiver.metrics() if m.name == "early.count" for p in iter_points(m)
    ]
    assert set(points) == {1}


def test_sdk_disabled_makes_everything_a_no_op(clean_env, receiver):
    """OTEL_SDK_DISABLED=true: no pipeline, spans are non-recording, nothing is sent."""
    clean_env.setenv("OTEL_SDK_DISABLED", "true")
    sdk = watchman_otel.init(service_name="svc", endpoint=receiver.http_endpoint, **FAST)
    assert sdk.disabled
    with trace.get_tracer("t").start_as_current_span("x") as span:
        assert not span.is_recording()
    assert not receiver.wait_for(lambda r: r.request_count > 0, timeout=0.5)
    assert watchman_otel.shutdown() is True


def test_init_does_no_network_io(clean_env):
    """init() returns without connecting: a black-holed collector has seen no connection yet."""
    for protocol in ("grpc", "http/protobuf"):
        with OTLPReceiver("blackhole") as blackhole:
            sdk = watchman_otel.init(
                service_name="svc", endpoint=endpoint_of(blackhole, protocol), protocol=protocol
            )
            assert blackhole.request_count == 0
            sdk.shutdown(timeout=0.2)


def test_bad_setting_raises_configuration_error(clean_env):
    """A bad environment value makes init() raise a ConfigurationError naming it; nothing starts."""
    clean_env.setenv("WATCHMAN_HEARTBEAT_INTERVAL", "abc")
    with pytest.raises(ConfigurationError, match="WATCHMAN_HEARTBEAT_INTERVAL='abc'"):
        watchman_otel.init(service_name="svc")
    assert current() is None


def test_log_records_carry_trace_and_span_ids(clean_env, receiver, caplog):
    """Stdlib log records made inside a span get otelTraceID/otelSpanID for the app's formatters."""
    watchman_otel.init(service_name="svc", endpoint=receiver.http_endpoint, logs=False)
    with caplog.at_level(logging.INFO, logger="app"):
        with trace.get_tracer("t").start_as_current_span("x") as span:
            logging.getLogger("app").info("inside")
        logging.getLogger("app").info("outside")
    inside, outside = caplog.records
    context = span.get_span_context()
    assert inside.otelTraceID == format(context.trace_id, "032x")
    assert inside.otelSpanID == format(context.span_id, "016x")
    assert inside.otelServiceName == "svc"
    assert outside.otelTraceID == "0"


def test_logs_opt_out_exports_no_logs(clean_env, receiver):
    """logs=False: spans are exported, log records are not."""
    watchman_otel.init(service_name="svc", endpoint=receiver.http_endpoint, logs=False, **FAST)
    with trace.get_tracer("t").start_as_current_span("x"):
        logging.getLogger("app").error("not exported")
    assert receiver.wait_for(lambda r: r.spans())
    watchman_otel.shutdown()
    assert receiver.logs() == []


def test_semconv_opt_in_is_set_for_instrumentations(clean_env, receiver):
    """init() sets OTEL_SEMCONV_STABILITY_OPT_IN=http when unset, and keeps a user's value."""
    watchman_otel.init(service_name="svc", endpoint=receiver.http_endpoint)
    import os

    assert os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] == "http"
    watchman_otel.shutdown()
    clean_env.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http/dup")
    watchman_otel.init(service_name="svc", endpoint=receiver.http_endpoint)
    assert os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] == "http/dup"


def test_integrations_installed_and_disabled(clean_env, receiver):
    """Integrations are installed by default; OTEL_PYTHON_DISABLED_INSTRUMENTATIONS removes some."""
    clean_env.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "httpx,threading")
    sdk = watchman_otel.init(service_name="svc", endpoint=receiver.http_endpoint)
    assert "requests" in sdk.integrations
    assert "httpx" not in sdk.integrations
    assert "threading" not in sdk.integrations


def test_propagators_follow_otel_propagators(clean_env, receiver):
    """OTEL_PROPAGATORS selects the global propagators; an unknown name is a ConfigurationError."""
    from opentelemetry import propagate

    clean_env.setenv("OTEL_PROPAGATORS", "baggage")
    watchman_otel.init(service_name="svc", endpoint=receiver.http_endpoint)
    assert propagate.get_global_textmap().fields == {"baggage"}
    watchman_otel.shutdown()
    clean_env.setenv("OTEL_PROPAGATORS", "tracecontext,baggage")
    watchman_otel.init(service_name="svc", endpoint=receiver.http_endpoint)
    assert {"traceparent", "baggage"} <= propagate.get_global_textmap().fields
    watchman_otel.shutdown()
    clean_env.setenv("OTEL_PROPAGATORS", "no-such-propagator")
    with pytest.raises(ConfigurationError, match="no-such-propagator"):
        watchman_otel.init(service_name="svc", endpoint=receiver.http_endpoint)


def test_sampler_always_off_records_nothing(clean_env, receiver):
    """sampler='always_off' makes spans non-recording; nothing is exported for them."""
    watchman_otel.init(service_name="svc", endpoint=receiver.http_endpoint, sampler="always_off")
    with trace.get_tracer("t").start_as_current_span("x") as span:
        assert not span.is_recording()
    watchman_otel.shutdown()
    assert receiver.spans() == []


def test_console_exporter_prints_spans_to_stderr(clean_env, receiver, capsys):
    """console=True also writes every span to stderr, for debugging."""
    watchman_otel.init(
        service_name="svc", endpoint=receiver.http_endpoint, console=True, span_schedule_delay=0.05
    )
    with trace.get_tracer("t").start_as_current_span("printed-span"):
        pass
    watchman_otel.shutdown()
    captured = capsys.readouterr()
    assert '"name": "printed-span"' in captured.err
    assert "printed-span" not in captured.out
    assert receiver.spans()[0][1].name == "printed-span"
