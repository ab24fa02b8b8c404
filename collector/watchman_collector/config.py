"""The analyzer's settings: one registry, resolved as flag > `WATCHMAN_*` env > YAML file > default.

Each setting is declared once in `SETTINGS` (name, type, default, help, which subcommands take it);
the CLI's flags, the environment variables, the YAML keys and the docs table all come from it, so
they cannot drift apart. YAML keys are the setting names (`otlp_grpc`, `pair_ttl`, …; dashes are
accepted for underscores); an unknown key is an error, because a typo that silently falls back to
a default is the worst kind of configuration bug.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CONFIG_ENV",
    "SETTINGS",
    "AnalyzerConfig",
    "ConfigError",
    "Setting",
    "format_address",
    "load_yaml",
    "parse_address",
    "parse_bytes",
    "parse_duration",
    "resolve",
]

CONFIG_ENV = "WATCHMAN_CONFIG"
OFF = "off"


class ConfigError(ValueError):
    """A setting's value is invalid; the message names the setting and where the value came from."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_BYTES = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|kB|MB|GB)?\s*$")
_BYTE_UNITS = {
    None: 1,
    "B": 1,
    "KiB": 1 << 10,
    "MiB": 1 << 20,
    "GiB": 1 << 30,
    "kB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
}


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like `250ms`, `10s`, `5m`, `1h` (bare numbers: seconds)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"expected a duration like 10s, 250ms, 5m or 1h, got {value!r}")
        seconds = float(match[1]) * _DURATION_UNITS[match[2]]
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected a non-negative duration, got {value!r}")
    return seconds


def parse_bytes(value: object) -> int:
    """A byte count from an integer or a string such as `4MiB`, `512KiB`, `20MB`."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size in bytes, got {value!r}")
    if isinstance(value, int):
        size = value
    else:
        match = _BYTES.match(str(value))
        if not match:
            raise ValueError(f"expected a size like 4194304, 4MiB or 20MB, got {value!r}")
        size = int(match[1]) * _BYTE_UNITS[match[2]]
    if size <= 0:
        raise ValueError(f"expected a positive size, got {value!r}")
    return size


def _parse_positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a positive integer, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"expected a positive integer, got {value!r}") from None
    if number <= 0:
        raise ValueError(f"expected a positive integer, got {value!r}")
    return number


def _parse_non_negative_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected an integer ≥ 0, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"expected an integer ≥ 0, got {value!r}") from None
    if number < 0:
        raise ValueError(f"expected an integer ≥ 0, got {value!r}")
    return number


def _parse_positive_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"expected a duration > 0, got {value!r}")
    return seconds


def parse_address(value: object) -> tuple[str, int]:
    """`(host, port)` from `HOST:PORT` or `[IPv6]:PORT`; port 0 asks the OS for a free port."""
    text = str(value).strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT (or {OFF!r}), got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"IPv6 addresses need brackets, like [::1]:4317, got {value!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port must be 0..65535, got {value!r}")
    return host, port


def format_address(host: str, port: int) -> str:
    """The inverse of `parse_address`: brackets around IPv6 hosts."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _parse_listen(value: object) -> str:
    if value is False:  # YAML 1.1 reads a bare `off` as false
        return OFF
    text = str(value).strip()
    if text.lower() == OFF:
        return OFF
    host, port = parse_address(text)
    return format_address(host, port)


def _parse_api(value: object) -> str:
    host, port = parse_address(value)
    return format_address(host, port)


_LOG_LEVELS = ("debug", "info", "warning", "error")


def _parse_log_level(value: object) -> str:
    text = str(value).strip().lower()
    if text not in _LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(_LOG_LEVELS)}, got {value!r}")
    return text


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: its name (YAML key and attribute), parser, default, help and subcommands."""

    name: str
    parse: Callable[[object], Any]
    default: Any
    help: str
    commands: frozenset[str] = frozenset({"serve", "replay"})
    metavar: str = ""

    @property
    def flag(self) -> str:
        """The command-line flag, e.g. `--otlp-grpc`."""
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        """The environment variable, e.g. `WATCHMAN_OTLP_GRPC`."""
        return "WATCHMAN_" + self.name.upper()


_SERVE = frozenset({"serve"})
_MIB = 1 << 20


def _parse_rules(value: object) -> str:
    from watchman_collector.rules import RulesError, load_rules

    text = str(value).strip()
    if text:
        try:
            load_rules(text)  # validated here, so a bad file is a configuration error (exit 2)
        except RulesError as exc:
            raise ValueError("; ".join(exc.problems)) from None
    return text


def _parse_urls(value: object) -> tuple[str, ...]:
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    urls = tuple(str(u).strip().rstrip("/") for u in items if str(u).strip())
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"expected http:// or https:// URLs, got {url!r}")
    return urls


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "otlp_grpc",
        _parse_listen,
        "127.0.0.1:4317",
        f"OTLP/gRPC listen address HOST:PORT (port 0: any free port; {OFF!r}: no gRPC receiver)",
        _SERVE,
        "HOST:PORT",
    ),
    Setting(
        "otlp_http",
        _parse_listen,
        "127.0.0.1:4318",
        f"OTLP/HTTP listen address HOST:PORT for /v1/traces, /v1/metrics, /v1/logs "
        f"({OFF!r}: no HTTP receiver)",
        _SERVE,
        "HOST:PORT",
    ),
    Setting(
        "api",
        _parse_api,
        "127.0.0.1:9464",
        "listen address of /metrics, /healthz and /api/v1/*",
        _SERVE,
        "HOST:PORT",
    ),
    Setting(
        "queue_size",
        _parse_positive_int,
        1000,
        "export requests waiting for the analyzer; when full, receivers answer "
        "UNAVAILABLE / HTTP 503 with a retry hint",
        _SERVE,
        "N",
    ),
    Setting(
        "grpc_max_message_bytes",
        parse_bytes,
        4 * _MIB,
        "largest OTLP/gRPC request accepted (bytes, or 4MiB)",
        _SERVE,
        "SIZE",
    ),
    Setting(
        "http_max_body_bytes",
        parse_bytes,
        20 * _MIB,
        "largest OTLP/HTTP body accepted, after decompression (bytes, or 20MiB)",
        _SERVE,
        "SIZE",
    ),
    Setting(
        "retry_after",
        _parse_positive_duration,
        1.0,
        "retry hint sent with refusals (Retry-After / RetryInfo), rounded up to whole seconds",
        _SERVE,
        "DURATION",
    ),
    Setting(
        "tick_interval",
        _parse_positive_duration,
        5.0,
        "how often (in the clock's time) expired span halves become calls and idle state expires",
        metavar="DURATION",
    ),
    Setting(
        "pair_ttl",
        _parse_positive_duration,
        10.0,
        "how long a span waits for its other half before it becomes an unpaired call",
        metavar="DURATION",
    ),
    Setting(
        "pair_max_pending",
        _parse_positive_int,
        100_000,
        "span halves kept waiting at most; beyond it the oldest is evicted as unpaired",
        metavar="N",
    ),
    Setting(
        "dedupe_capacity",
        _parse_positive_int,
        200_000,
        "(trace id, span id) pairs remembered to ignore retried exports: at least the last N "
        "spans (up to 1.5 N)",
        metavar="N",
    ),
    Setting(
        "bucket",
        _parse_positive_duration,
        10.0,
        "width of the event-time buckets of request, error and latency statistics",
        metavar="DURATION",
    ),
    Setting(
        "retention",
        _parse_positive_duration,
        3600.0,
        "how much bucketed history each node and edge keeps",
        metavar="DURATION",
    ),
    Setting(
        "allowed_lateness",
        parse_duration,
        120.0,
        "calls older than the watermark by more than this are dropped and counted",
        metavar="DURATION",
    ),
    Setting(
        "idle_expiry",
        _parse_positive_duration,
        900.0,
        "nodes and edges without calls or heartbeats for this long leave the graph",
        metavar="DURATION",
    ),
    Setting(
        "max_nodes",
        _parse_positive_int,
        5000,
        "graph nodes at most; further services go to the __overflow__ node",
        metavar="N",
    ),
    Setting(
        "max_edges",
        _parse_positive_int,
        50_000,
        "graph edges at most; further calls are counted as overflow",
        metavar="N",
    ),
    Setting(
        "exemplars",
        _parse_non_negative_int,
        5,
        "trace ids kept per node and edge as examples of failed and slowest calls",
        metavar="N",
    ),
    Setting(
        "rules",
        _parse_rules,
        "",
        "alert rules file (YAML, see docs/alerts.md); empty: the built-in rules",
        metavar="PATH",
    ),
    Setting(
        "alertmanager",
        _parse_urls,
        (),
        "Alertmanager base URL(s) to push alerts to (POST /api/v2/alerts), comma-separated, "
        "e.g. http://127.0.0.1:9093; empty: no push",
        _SERVE,
        "URL[,URL]",
    ),
    Setting(
        "log_level",
        _parse_log_level,
        "info",
        "logging threshold on stderr: debug, info, warning or error",
        metavar="LEVEL",
    ),
)

_BY_NAME = {setting.name: setting for setting in SETTINGS}


@dataclass(frozen=True, slots=True)
class AnalyzerConfig:
    """The resolved settings; durations in seconds, sizes in bytes, addresses as `HOST:PORT`."""

    otlp_grpc: str = "127.0.0.1:4317"
    otlp_http: str = "127.0.0.1:4318"
    api: str = "127.0.0.1:9464"
    queue_size: int = 1000
    grpc_max_message_bytes: int = 4 * _MIB
    http_max_body_bytes: int = 20 * _MIB
    retry_after: float = 1.0
    tick_interval: float = 5.0
    pair_ttl: float = 10.0
    pair_max_pending: int = 100_000
    dedupe_capacity: int = 200_000
    bucket: float = 10.0
    retention: float = 3600.0
    allowed_lateness: float = 120.0
    idle_expiry: float = 900.0
    max_nodes: int = 5000
    max_edges: int = 50_000
    exemplars: int = 5
    rules: str = ""
    alertmanager: tuple[str, ...] = ()
    log_level: str = "info"
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def replace(self, **changes: Any) -> AnalyzerConfig:
        """A copy with some settings changed (tests and embedding code)."""
        return dataclasses.replace(self, **changes)


def load_yaml(path: str | Path) -> dict[str, object]:
    """The mapping in a YAML config file; keys normalised to setting names, unknown keys refused."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of settings at the top level")
    values: dict[str, object] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in _BY_NAME:
            known = ", ".join(sorted(_BY_NAME))
            raise ConfigError(f"config file {path}: unknown setting {key!r} (known: {known})")
        values[name] = value
    return values


def resolve(
    flags: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> AnalyzerConfig:
    """Resolve every setting: flag > `WATCHMAN_*` env > YAML file > default.

    `flags` holds only the flags given (absent or None means not given). `config_file` falls back
    to `$WATCHMAN_CONFIG` when None.
    """
    flags = flags or {}
    env = env or {}
    path = config_file if config_file is not None else env.get(CONFIG_ENV) or None
    from_file = load_yaml(path) if path else {}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:
        raw: object
        if flags.get(setting.name) is not None:
            raw, where = flags[setting.name], f"flag {setting.flag}"
        elif env.get(setting.env, "") != "":
            raw, where = env[setting.env], f"environment variable {setting.env}"
        elif setting.name in from_file:
            raw, where = from_file[setting.name], f"config file {path} key {setting.name!r}"
        else:
            values[setting.name] = setting.default
            sources[setting.name] = "default"
            continue
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        sources[setting.name] = where
    return AnalyzerConfig(**values, sources=sources)
