"""The settings registry: precedence argument > WATCHMAN_* > OTEL_* > default, parsing, errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.sdk.conftest import REPO_ROOT
from watchman_otel._errors import ConfigurationError
from watchman_otel._settings import DEFAULT_EXCLUDED_URLS, SETTINGS, resolve_config


def test_argument_beats_watchman_env_beats_otel_env_beats_default():
    """Each layer wins over the ones below it, and `sources` says which one did."""
    env = {"OTEL_SERVICE_NAME": "from-otel", "WATCHMAN_SERVICE_NAME": "from-watchman"}
    assert resolve_config({}, {}).service_name == "unknown_service:python"
    assert resolve_config({}, {"OTEL_SERVICE_NAME": "from-otel"}).service_name == "from-otel"
    config = resolve_config({}, env)
    assert (config.service_name, config.sources["service_name"]) == (
        "from-watchman",
        "WATCHMAN_SERVICE_NAME",
    )
    config = resolve_config({"service_name": "from-arg"}, env)
    assert (config.service_name, config.sources["service_name"]) == ("from-arg", "argument")


def test_service_name_falls_back_to_otel_resource_attributes():
    """service.name in OTEL_RESOURCE_ATTRIBUTES names the service when nothing else does."""
    env = {"OTEL_RESOURCE_ATTRIBUTES": "service.name=billing,team=pay"}
    assert resolve_config({}, env).service_name == "billing"
    env["OTEL_SERVICE_NAME"] = "ledger"
    assert resolve_config({}, env).service_name == "ledger"


def test_resource_attributes_merge_key_by_key():
    """OTEL_RESOURCE_ATTRIBUTES < WATCHMAN_RESOURCE_ATTRIBUTES < argument, per key, %-decoded."""
    env = {
        "OTEL_RESOURCE_ATTRIBUTES": "a=otel,b=otel,c=hello%20world",
        "WATCHMAN_RESOURCE_ATTRIBUTES": "b=watchman,d=watchman",
    }
    config = resolve_config({"resource_attributes": {"d": "arg"}}, env)
    assert config.resource_attributes == {
        "a": "otel",
        "b": "watchman",
        "c": "hello world",
        "d": "arg",
    }


def test_defaults_are_http_protobuf_gzip_on_localhost_4318():
    """Without settings: http/protobuf to localhost:4318/v1/<signal>, gzip, 10 s timeout."""
    config = resolve_config({}, {})
    for signal in ("traces", "metrics", "logs"):
        export = config.exports[signal]
        assert export.endpoint == f"http://localhost:4318/v1/{signal}"
        assert (export.protocol, export.compression, export.timeout) == (
            "http/protobuf",
            "gzip",
            10.0,
        )
        assert export.exporters == ("otlp",)
    assert config.heartbeat_interval == 10.0
    assert config.shutdown_timeout == 2.0
    assert config.excluded_urls == DEFAULT_EXCLUDED_URLS


def test_grpc_endpoint_gets_no_signal_path():
    """For grpc the endpoint is used as is, defaulting to port 4317."""
    assert (
        resolve_config({"protocol": "grpc"}, {}).exports["traces"].endpoint
        == "http://localhost:4317"
    )
    config = resolve_config(
        {}, {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317/"}
    )
    assert config.exports["metrics"].endpoint == "http://c:4317"


def test_per_signal_endpoint_is_used_as_is_and_beats_the_generic_one():
    """OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is the full URL; other signals append /v1/<signal>."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:9999/custom/path",
    }
    config = resolve_config({}, env)
    assert config.exports["traces"].endpoint == "http://traces:9999/custom/path"
    assert config.exports["metrics"].endpoint == "http://collector:4318/v1/metrics"


def test_watchman_endpoint_beats_per_signal_otel_endpoint():
    """WATCHMAN_ENDPOINT (like the argument) is above every OTEL_* variable."""
    env = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:9999/v1/traces",
        "WATCHMAN_ENDPOINT": "http://watchman:4318",
    }
    assert resolve_config({}, env).exports["traces"].endpoint == "http://watchman:4318/v1/traces"


def test_per_signal_protocol_headers_and_timeout():
    """Per-signal OTEL_EXPORTER_OTLP_<SIGNAL>_* beat the generic variables for that signal only."""
    env = {
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=abc,x-team=a%2Cb",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "api-key=metrics",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "3",
    }
    config = resolve_config({}, env)
    assert config.exports["traces"].protocol == "grpc"
    assert config.exports["logs"].protocol == "http/protobuf"
    assert config.exports["traces"].headers == {"api-key": "abc", "x-team": "a,b"}
    assert config.exports["metrics"].headers == {"api-key": "metrics"}
    assert config.exports["logs"].timeout == 3.0


def test_otel_millisecond_variables_become_seconds():
    """OTEL_METRIC_EXPORT_INTERVAL and OTEL_BSP_SCHEDULE_DELAY are milliseconds (the spec)."""
    env = {"OTEL_METRIC_EXPORT_INTERVAL": "15000", "OTEL_BSP_SCHEDULE_DELAY": "250"}
    config = resolve_config({}, env)
    assert (config.metric_export_interval, config.span_schedule_delay) == (15.0, 0.25)
    env["WATCHMAN_METRIC_EXPORT_INTERVAL"] = "5"
    assert resolve_config({}, env).metric_export_interval == 5.0


def test_bsp_queue_and_batch_sizes():
    """OTEL_BSP_MAX_QUEUE_SIZE and OTEL_BSP_MAX_EXPORT_BATCH_SIZE are honoured."""
    config = resolve_config(
        {}, {"OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "10"}
    )
    assert (config.span_queue_size, config.span_batch_size) == (100, 10)


def test_sampler_from_otel_env_and_ratio_alone():
    """OTEL_TRACES_SAMPLER(_ARG) are read; a ratio alone selects parentbased_traceidratio."""
    config = resolve_config(
        {}, {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
    )
    assert (config.sampler, config.sample_ratio) == ("traceidratio", 0.1)
    config = resolve_config({"sample_ratio": 0.5}, {})
    assert (config.sampler, config.sample_ratio) == ("parentbased_traceidratio", 0.5)
    assert resolve_config({}, {}).sampler == "parentbased_always_on"


def test_sdk_disabled_and_disabled_instrumentations():
    """OTEL_SDK_DISABLED and OTEL_PYTHON_DISABLED_INSTRUMENTATIONS (foreign names allowed)."""
    env = {"OTEL_SDK_DISABLED": "true", "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "httpx, django"}
    config = resolve_config({}, env)
    assert config.disabled is True
    assert config.disabled_integrations == ("httpx", "django")
    assert resolve_config({}, {"OTEL_SDK_DISABLED": "false"}).disabled is False


def test_excluded_urls_asgi_variable_beats_generic():
    """OTEL_PYTHON_ASGI_EXCLUDED_URLS wins over OTEL_PYTHON_EXCLUDED_URLS."""
    env = {"OTEL_PYTHON_EXCLUDED_URLS": "^/a$", "OTEL_PYTHON_ASGI_EXCLUDED_URLS": "^/b$,^/c$"}
    assert resolve_config({}, env).excluded_urls == ("^/b$", "^/c$")
    assert resolve_config({"excluded_urls": ["^/x$"]}, env).excluded_urls == ("^/x$",)


def test_signal_exporter_none_and_console():
    """OTEL_<SIGNAL>_EXPORTER selects otlp / console / none per signal."""
    config = resolve_config(
        {}, {"OTEL_LOGS_EXPORTER": "none", "OTEL_TRACES_EXPORTER": "console,otlp"}
    )
    assert config.exports["logs"].exporters == ()
    assert config.exports["traces"].exporters == ("console", "otlp")


@pytest.mark.parametrize(
    ("arguments", "env", "message"),
    [
        (
            {},
            {"WATCHMAN_HEARTBEAT_INTERVAL": "abc"},
            "WATCHMAN_HEARTBEAT_INTERVAL='abc': expected a number of seconds > 0, e.g. 10",
        ),
        ({"heartbeat_interval": -1}, {}, "heartbeat_interval=-1: expected a number of seconds > 0"),
        (
            {},
            {"OTEL_TRACES_SAMPLER_ARG": "2"},
            "OTEL_TRACES_SAMPLER_ARG='2': expected a number between 0 and 1",
        ),
        (
            {},
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"},
            "OTEL_EXPORTER_OTLP_PROTOCOL='thrift': expected grpc or http/protobuf",
        ),
        (
            {},
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"},
            "OTEL_EXPORTER_OTLP_ENDPOINT='collector:4317': expected an http:// or https:// URL",
        ),
        ({}, {"OTEL_SDK_DISABLED": "maybe"}, "OTEL_SDK_DISABLED='maybe': expected true or false"),
        ({}, {"OTEL_METRIC_EXPORT_INTERVAL": "0"}, "OTEL_METRIC_EXPORT_INTERVAL='0'"),
        (
            {"integrations": ["requests", "flask"]},
            {},
            "integrations=['requests', 'flask']: expected a comma-separated list of asgi",
        ),
        (
            {},
            {"WATCHMAN_EXCLUDED_URLS": "(unclosed"},
            "WATCHMAN_EXCLUDED_URLS='(unclosed': expected comma-separated regular expressions",
        ),
        (
            {},
            {"OTEL_EXPORTER_OTLP_HEADERS": "novalue"},
            "OTEL_EXPORTER_OTLP_HEADERS='novalue': expected key=value pairs",
        ),
        (
            {},
            {"OTEL_TRACES_EXPORTER": "zipkin"},
            "OTEL_TRACES_EXPORTER='zipkin': expected a comma-separated list of otlp, console, none",
        ),
        ({"bogus": 1}, {}, "unknown init() argument(s): bogus"),
    ],
)
def test_bad_values_name_the_setting(arguments, env, message):
    """A bad value raises one ConfigurationError whose message names the setting and the fix."""
    with pytest.raises(ConfigurationError) as caught:
        resolve_config(arguments, env)
    assert str(caught.value).startswith(message)


def test_every_setting_is_documented_and_named_consistently():
    """Each registry entry has a doc line, an expected-value hint and a WATCHMAN_ variable."""
    names = [setting.name for setting in SETTINGS]
    assert len(names) == len(set(names))
    for setting in SETTINGS:
        assert setting.doc
        assert setting.expected
        assert setting.watchman_env == "WATCHMAN_" + setting.name.upper()


def test_generated_settings_table_is_current():
    """docs/sdk-settings.md holds exactly the table docs/gen_settings.py renders."""
    result = subprocess.run(
        [sys.executable, "docs/gen_settings.py", "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
