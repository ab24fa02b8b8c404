"""The public face of watchman_otel is small and pinned."""

from __future__ import annotations

import inspect

import watchman_otel
from watchman_otel._settings import SETTINGS


def test_all_is_pinned_and_sorted():
    """__all__ lists exactly the public names, sorted, and each exists."""
    expected = [
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
    assert watchman_otel.__all__ == expected
    assert sorted(watchman_otel.__all__) == watchman_otel.__all__
    for name in expected:
        assert hasattr(watchman_otel, name), name


def test_init_takes_exactly_the_registry_arguments_keyword_only():
    """init()'s parameters are keyword-only and are the registry's settable settings."""
    parameters = inspect.signature(watchman_otel.init).parameters
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())
    assert all(p.default is None for p in parameters.values())
    assert set(parameters) == {setting.name for setting in SETTINGS if setting.argument}


def test_testing_module_exports():
    """watchman_otel.testing exposes the fixture, the context manager and the capture type."""
    from watchman_otel import testing

    assert testing.__all__ == ["TelemetryCapture", "capture_telemetry", "watchman_telemetry"]
