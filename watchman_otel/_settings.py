"""The settings registry: each setting declared once; argument > WATCHMAN_* > OTEL_* > default.

Each `Setting` names its `init()` argument, its `WATCHMAN_<NAME>` variable, the standard `OTEL_*`
variables the OpenTelemetry SDK honours for it (in precedence order; ``{SIGNAL}`` stands for
``TRACES``, ``METRICS`` or ``LOGS`` in per-signal variables), how text is parsed, the default and
one line of documentation. `docs/gen_settings.py` renders the docs' table from `SETTINGS`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urlparse

from watchman_otel._errors import ConfigurationError

__all__ = [
    "DEFAULT_EXCLUDED_URLS",
    "INTEGRATIONS",
    "SETTINGS",
    "SIGNALS",
    "Config",
    "Setting",
    "SignalExport",
    "resolve_config",
]

Signal = Literal["traces", "metrics", "logs"]
SIGNALS: tuple[Signal, ...] = ("traces", "metrics", "logs")

INTEGRATIONS: tuple[str, ...] = (
    "asgi",
    "starlette",
    "fastapi",
    "requests",
    "httpx",
    "urllib3",
    "aiohttp-client",
    "threading",
    "logging",
)

# Probes and scrapes would otherwise dominate the span volume of a quiet service.
DEFAULT_EXCLUDED_URLS: tuple[str, ...] = (
    "^/healthz?$",
    "^/livez$",
    "^/readyz$",
    "^/metrics$",
)

_SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
_PROTOCOLS = ("grpc", "http/protobuf")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


# -- parsers: text (or an argument value) → typed value; ValueError on bad input ------------------
def _text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError
    return value.strip()


def _optional_text(value: object) -> str | None:
    if value is None:
        return None
    return _text(value)


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = _text(value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError


def _number(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError
    number = float(value) if isinstance(value, int | float) else float(_text(value))
    if not math.isfinite(number):
        raise ValueError
    return number


def _positive_seconds(value: object) -> float:
    number = _number(value)
    if number <= 0:
        raise ValueError
    return number


def _positive_millis_as_seconds(value: object) -> float:
    return _positive_seconds(value) / 1000.0


def _positive_int(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError
    number = value if isinstance(value, int) else int(_text(value))
    if number <= 0:
        raise ValueError
    return number


def _ratio(value: object) -> float:
    number = _number(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError
    return number


def _choice(choices: Collection[str]) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = _text(value).lower()
        if text not in choices:
            raise ValueError
        return text

    return parse


def _names(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, Collection) and all(isinstance(item, str) for item in value):
        return tuple(item.strip() for item in value if item.strip())
    raise ValueError


def _integration_names(value: object) -> tuple[str, ...]:
    names = _names(value)
    if any(name not in INTEGRATIONS for name in names):
        raise ValueError
    return names


def _disabled_integrations(value: object) -> tuple[str, ...]:
    # OTEL_PYTHON_DISABLED_INSTRUMENTATIONS is shared with other distros: unknown names are theirs.
    return _names(value)


def _patterns(value: object) -> tuple[str, ...]:
    patterns = _names(value)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(pattern) from exc
    return patterns


def _key_values(value: object) -> dict[str, str]:
    """W3C-baggage-like ``key=value,key2=value2`` (values percent-decoded), or a mapping."""
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise ValueError
        return dict(value)
    result: dict[str, str] = {}
    for item in _text(value).split(","):
        if not item.strip():
            continue
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError
        result[unquote(key.strip())] = unquote(raw.strip())
    return result


def _endpoint(value: object) -> str:
    text = _text(value)
    parsed = urlparse(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError
    parsed.port  # noqa: B018 - raises ValueError on a malformed port
    return text.rstrip("/")


@dataclass(frozen=True)
class Setting:
    """One setting: where it comes from, how it is parsed, its default and its documentation."""

    name: str
    parse: Callable[[object], Any]
    default: Any
    doc: str
    expected: str
    otel_env: tuple[str, ...] = ()
    otel_parse: Callable[[object], Any] | None = None
    argument: bool = True
    per_signal: bool = False
    default_doc: str | None = None

    @property
    def watchman_env(self) -> str:
        """The ``WATCHMAN_<NAME>`` variable."""
        return "WATCHMAN_" + self.name.upper()

    def otel_names(self, signal: Signal | None = None) -> tuple[str, ...]:
        """The OTEL_* variables for this setting (per-signal ones expanded for ``signal``)."""
        names: list[str] = []
        for name in self.otel_env:
            if "{SIGNAL}" in name:
                if signal is not None:
                    names.append(name.replace("{SIGNAL}", signal.upper()))
            else:
                names.append(name)
        return tuple(names)

    def resolve(
        self,
        arguments: Mapping[str, object],
        environ: Mapping[str, str],
        signal: Signal | None = None,
    ) -> tuple[Any, str]:
        """The value and where it came from (``argument``, a variable name, or ``default``)."""
        if self.argument and arguments.get(self.name) is not None:
            raw = arguments[self.name]
            return self._parse(self.parse, raw, f"{self.name}={raw!r}"), "argument"
        for variable in (self.watchman_env, *self.otel_names(signal)):
            raw_env = environ.get(variable)
            if raw_env is None or not raw_env.strip():
                continue
            parse = self.parse
            if variable != self.watchman_env and self.otel_parse is not None:
                parse = self.otel_parse
            return self._parse(parse, raw_env, f"{variable}={raw_env!r}"), variable
        default = self.default() if callable(self.default) else self.default
        return default, "default"

    def _parse(self, parse: Callable[[object], Any], raw: object, where: str) -> Any:
        try:
            return parse(raw)
        except (ValueError, TypeError):
            pass
        raise ConfigurationError(f"{where}: expected {self.expected}") from None


def _setting(
    name: str, parse: Callable[[object], Any], default: Any, doc: str, expected: str, **options: Any
) -> Setting:
    return Setting(name=name, parse=parse, default=default, doc=doc, expected=expected, **options)


_OTLP = "OTEL_EXPORTER_OTLP_{SIGNAL}_"

SETTINGS: tuple[Setting, ...] = (
    _setting(
        "service_name",
        _text,
        "unknown_service:python",
        "`service.name` of every signal; the node's name in the service graph.",
        "a non-empty name, e.g. checkout",
        otel_env=("OTEL_SERVICE_NAME",),
        default_doc="`service.name` from OTEL_RESOURCE_ATTRIBUTES, else `unknown_service:python`",
    ),
    _setting(
        "service_version",
        _optional_text,
        None,
        "`service.version`.",
        "a non-empty version, e.g. 1.4.2",
    ),
    _setting(
        "environment",
        _optional_text,
        None,
        "`deployment.environment.name`.",
        "a non-empty name, e.g. production",
    ),
    _setting(
        "resource_attributes",
        _key_values,
        dict,
        "Extra resource attributes; merged key by key over OTEL_RESOURCE_ATTRIBUTES.",
        "key=value pairs separated by commas, e.g. team=payments,region=eu",
        otel_env=("OTEL_RESOURCE_ATTRIBUTES",),
        default_doc="none",
    ),
    _setting(
        "endpoint",
        _endpoint,
        None,
        "OTLP endpoint base URL. For http/protobuf `/v1/<signal>` is appended; per-signal "
        "`OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT` is used as is.",
        "an http:// or https:// URL, e.g. http://localhost:4318",
        otel_env=(_OTLP + "ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        per_signal=True,
        default_doc="`http://localhost:4318` (http/protobuf) or `http://localhost:4317` (grpc)",
    ),
    _setting(
        "protocol",
        _choice(_PROTOCOLS),
        "http/protobuf",
        "OTLP transport.",
        "grpc or http/protobuf",
        otel_env=(_OTLP + "PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"),
        per_signal=True,
    ),
    _setting(
        "headers",
        _key_values,
        dict,
        "Headers (gRPC metadata) sent with every export, e.g. an API key.",
        "key=value pairs separated by commas, e.g. api-key=secret",
        otel_env=(_OTLP + "HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"),
        per_signal=True,
        default_doc="none",
    ),
    _setting(
        "compression",
        _choice(("gzip", "none")),
        "gzip",
        "Compression of export requests.",
        "gzip or none",
        otel_env=(_OTLP + "COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"),
        per_signal=True,
    ),
    _setting(
        "export_timeout",
        _positive_seconds,
        10.0,
        "Seconds one export (with its retries) may take while running. Seconds, as the "
        "Python exporters read these variables.",
        "a number of seconds > 0, e.g. 10",
        otel_env=(_OTLP + "TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"),
        per_signal=True,
    ),
    _setting(
        "exporter",
        _names,
        ("otlp",),
        "Exporters of a signal: `otlp`, `console`, `none` (comma-separated).",
        "a comma-separated list of otlp, console, none, e.g. otlp",
        otel_env=("OTEL_{SIGNAL}_EXPORTER",),
        per_signal=True,
        argument=False,
        default_doc="`otlp`",
    ),
    _setting(
        "sampler",
        _choice(_SAMPLERS),
        None,
        "Trace sampler, as OTEL_TRACES_SAMPLER names them.",
        "one of " + ", ".join(_SAMPLERS),
        otel_env=("OTEL_TRACES_SAMPLER",),
        default_doc="`parentbased_traceidratio` when a ratio is set, else `parentbased_always_on`",
    ),
    _setting(
        "sample_ratio",
        _ratio,
        None,
        "Ratio of traces sampled by the ratio samplers.",
        "a number between 0 and 1, e.g. 0.25",
        otel_env=("OTEL_TRACES_SAMPLER_ARG",),
        default_doc="1.0",
    ),
    _setting(
        "propagators",
        _names,
        ("tracecontext", "baggage"),
        "Context propagators (entry points of group `opentelemetry_propagator`), or `none`.",
        "a comma-separated list, e.g. tracecontext,baggage",
        otel_env=("OTEL_PROPAGATORS",),
        default_doc="`tracecontext,baggage`",
    ),
    _setting(
        "heartbeat_interval",
        _positive_seconds,
        10.0,
        "Seconds between heartbeats (`watchman.heartbeat` and resource usage); own reader.",
        "a number of seconds > 0, e.g. 10",
    ),
    _setting(
        "metric_export_interval",
        _positive_seconds,
        60.0,
        "Seconds between exports of the other metrics (RED). OTEL_METRIC_EXPORT_INTERVAL "
        "is in milliseconds.",
        "a number of seconds > 0, e.g. 60",
        otel_env=("OTEL_METRIC_EXPORT_INTERVAL",),
        otel_parse=_positive_millis_as_seconds,
    ),
    _setting(
        "span_queue_size",
        _positive_int,
        2048,
        "Spans held for export at most; more are dropped, never blocking the app.",
        "a whole number > 0, e.g. 2048",
        otel_env=("OTEL_BSP_MAX_QUEUE_SIZE",),
    ),
    _setting(
        "span_batch_size",
        _positive_int,
        512,
        "Spans per export request at most.",
        "a whole number > 0, e.g. 512",
        otel_env=("OTEL_BSP_MAX_EXPORT_BATCH_SIZE",),
    ),
    _setting(
        "span_schedule_delay",
        _positive_seconds,
        5.0,
        "Seconds between span exports. OTEL_BSP_SCHEDULE_DELAY is in milliseconds.",
        "a number of seconds > 0, e.g. 5",
        otel_env=("OTEL_BSP_SCHEDULE_DELAY",),
        otel_parse=_positive_millis_as_seconds,
    ),
    _setting(
        "integrations",
        _integration_names,
        None,
        "Integrations to install. Named ones must be importable; unset: every one whose "
        "library is installed.",
        "a comma-separated list of " + ", ".join(INTEGRATIONS),
        default_doc="all available",
    ),
    _setting(
        "disabled_integrations",
        _disabled_integrations,
        (),
        "Integrations not to install.",
        "a comma-separated list of integration names",
        otel_env=("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS",),
        default_doc="none",
    ),
    _setting(
        "excluded_urls",
        _patterns,
        DEFAULT_EXCLUDED_URLS,
        "Regular expressions (searched in the URL path) of requests not traced.",
        "comma-separated regular expressions, e.g. ^/healthz$,^/metrics$",
        otel_env=("OTEL_PYTHON_ASGI_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS"),
        default_doc="`" + ",".join(DEFAULT_EXCLUDED_URLS) + "`",
    ),
    _setting(
        "logs",
        _boolean,
        True,
        "Export stdlib `logging` records (with trace_id/span_id) over OTLP.",
        "true or false",
    ),
    _setting(
        "console",
        _boolean,
        False,
        "Also print every signal to stderr (debugging).",
        "true or false",
    ),
    _setting(
        "shutdown_timeout",
        _positive_seconds,
        2.0,
        "Seconds `shutdown()` may spend flushing; then data is dropped. Interpreter exit as a"
        " whole stays within it: its flush stops half of it (at most 1 s) earlier, leaving"
        " that to the interpreter's own teardown.",
        "a number of seconds > 0, e.g. 2",
    ),
    _setting(
        "disabled",
        _boolean,
        False,
        "Make `init()` a no-op.",
        "true or false",
        otel_env=("OTEL_SDK_DISABLED",),
    ),
    _setting(
        "semconv_stability_opt_in",
        _text,
        "http",
        "Exported as OTEL_SEMCONV_STABILITY_OPT_IN (if unset) before instrumentations load, "
        "so they emit the stable HTTP conventions.",
        "a comma-separated list, e.g. http",
        otel_env=("OTEL_SEMCONV_STABILITY_OPT_IN",),
        argument=False,
    ),
)

_BY_NAME = {setting.name: setting for setting in SETTINGS}


@dataclass(frozen=True)
class SignalExport:
    """Where and how one signal is exported."""

    endpoint: str
    protocol: str
    headers: Mapping[str, str]
    compression: str
    timeout: float
    exporters: tuple[str, ...]


@dataclass(frozen=True)
class Config:
    """Every resolved setting; `sources` says where each came from."""

    service_name: str
    service_version: str | None
    environment: str | None
    resource_attributes: Mapping[str, str]
    exports: Mapping[str, SignalExport]
    sampler: str
    sample_ratio: float
    propagators: tuple[str, ...]
    heartbeat_interval: float
    metric_export_interval: float
    span_queue_size: int
    span_batch_size: int
    span_schedule_delay: float
    integrations: tuple[str, ...] | None
    disabled_integrations: tuple[str, ...]
    excluded_urls: tuple[str, ...]
    logs: bool
    console: bool
    shutdown_timeout: float
    disabled: bool
    semconv_stability_opt_in: str
    sources: Mapping[str, str] = field(default_factory=dict)


def _resolve_endpoint(
    arguments: Mapping[str, object], environ: Mapping[str, str], signal: Signal, protocol: str
) -> str:
    setting = _BY_NAME["endpoint"]
    value, source = setting.resolve(arguments, environ, signal)
    if source == setting.otel_names(signal)[0]:
        return str(value)  # the per-signal variable is the full URL, per the OTLP exporter spec
    if value is None:
        value = "http://localhost:4317" if protocol == "grpc" else "http://localhost:4318"
    if protocol == "grpc":
        return str(value)
    return f"{value}/v1/{signal}"


def _merged_attributes(
    arguments: Mapping[str, object], environ: Mapping[str, str]
) -> dict[str, str]:
    setting = _BY_NAME["resource_attributes"]
    merged: dict[str, str] = {}
    for variable in (*setting.otel_names(), setting.watchman_env):
        raw = environ.get(variable)
        if raw and raw.strip():
            merged.update(setting._parse(setting.parse, raw, f"{variable}={raw!r}"))
    given = arguments.get(setting.name)
    if given is not None:
        merged.update(setting._parse(setting.parse, given, f"resource_attributes={given!r}"))
    return merged


def resolve_config(
    arguments: Mapping[str, object], environ: Mapping[str, str] | None = None
) -> Config:
    """Resolve every setting; raises `ConfigurationError` naming the first bad one."""
    env = os.environ if environ is None else environ
    unknown = set(arguments) - {s.name for s in SETTINGS if s.argument}
    if unknown:
        raise ConfigurationError(f"unknown init() argument(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:
        if setting.per_signal or setting.name == "resource_attributes":
            continue
        values[setting.name], sources[setting.name] = setting.resolve(arguments, env)

    attributes = _merged_attributes(arguments, env)
    if sources["service_name"] == "default" and attributes.get("service.name"):
        values["service_name"] = attributes["service.name"]
        sources["service_name"] = "OTEL_RESOURCE_ATTRIBUTES"
    if values["sampler"] is None:
        ratio_given = values["sample_ratio"] is not None
        values["sampler"] = "parentbased_traceidratio" if ratio_given else "parentbased_always_on"
    if values["sample_ratio"] is None:
        values["sample_ratio"] = 1.0

    exports: dict[str, SignalExport] = {}
    for signal in SIGNALS:
        per: dict[str, Any] = {}
        for name in ("protocol", "headers", "compression", "export_timeout", "exporter"):
            per[name], _ = _BY_NAME[name].resolve(arguments, env, signal)
        exporters = tuple(per["exporter"])
        if any(name not in ("otlp", "console", "none") for name in exporters):
            variable = _BY_NAME["exporter"].otel_names(signal)[0]
            raise ConfigurationError(
                f"{variable}={','.join(exporters)!r}: expected {_BY_NAME['exporter'].expected}"
            )
        exports[signal] = SignalExport(
            endpoint=_resolve_endpoint(arguments, env, signal, per["protocol"]),
            protocol=per["protocol"],
            headers=per["headers"],
            compression=per["compression"],
            timeout=per["export_timeout"],
            exporters=tuple(name for name in exporters if name != "none"),
        )
    return Config(resource_attributes=attributes, exports=exports, sources=sources, **values)
