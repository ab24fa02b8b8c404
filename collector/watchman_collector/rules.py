"""The alert rules file: thresholds, `for` and `keep_firing_for`, severities and their recipients.

One YAML file (see `collector/watchman-rules.yaml` and `docs/alerts.md`) says when each documented
alert fires and who hears about it. Every key is optional: what the file leaves out comes from the
built-in defaults (`DEFAULT_RULES`), and a `services:` entry overrides thresholds, alert timing and
recipients for one service. Validation collects every problem at once and names the file, the key
path and the fix, because a rules file is edited by hand under pressure.

The error-ratio defaults follow Kiali's health tolerances for server (5xx) errors: degraded from
0.1 %, failing from 10 %. Our `failed` already excludes client 4xx, so Kiali's 5xx row applies.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ALERT_NAMES",
    "DEFAULT_RULES",
    "AlertRule",
    "Level",
    "Levels",
    "RuleSet",
    "RulesError",
    "Thresholds",
    "default_rules",
    "format_duration",
    "load_rules",
    "parse_duration",
    "parse_rules",
]


class Level(StrEnum):
    """How bad a measured value is against its thresholds (Kiali's words)."""

    DEGRADED = "degraded"
    FAILING = "failing"


ALERT_NAMES: tuple[str, ...] = (
    "ServiceDown",
    "InstanceDown",
    "HighErrorRate",
    "HighLatency",
    "TrafficDrop",
    "Saturation",
    "CascadeRisk",
)
"""The documented alerts, in the order `docs/alerts.md` describes them."""


DEFAULT_RULES: dict[str, Any] = {
    "defaults": {"for": "1m", "keep_firing_for": "1m"},
    "thresholds": {
        "window": "30s",
        "min_requests": 10,
        "error_ratio": {"degraded": 0.001, "failing": 0.1},
        "latency": {"quantile": 0.95, "degraded": "100ms", "failing": "1s"},
        "traffic_drop": {"degraded": 0.5, "failing": 0.9},
        "cpu_utilization": {"degraded": 0.8, "failing": 0.95},
        "heartbeat_misses": 3,
    },
    "alerts": {
        "ServiceDown": {"for": "30s", "severity": {"failing": "critical"}},
        "InstanceDown": {"for": "1m", "severity": {"failing": "warning"}},
        "HighErrorRate": {
            "for": "30s",
            "severity": {"degraded": "warning", "failing": "critical"},
        },
        "HighLatency": {"for": "1m", "severity": {"degraded": "warning", "failing": "critical"}},
        "TrafficDrop": {"for": "2m", "severity": {"failing": "warning"}},
        "Saturation": {"for": "5m", "severity": {"degraded": "warning", "failing": "critical"}},
        "CascadeRisk": {
            "for": "0s",
            "keep_firing_for": "1m",
            "severity": {"degraded": "warning", "failing": "critical"},
        },
    },
    "severities": {
        "critical": {"recipients": []},
        "warning": {"recipients": []},
        "info": {"recipients": []},
    },
    "services": {},
}
"""The built-in rules, in the file's own shape; `collector/watchman-rules.yaml` repeats them."""


class RulesError(ValueError):
    """A rules file that cannot be used; `problems` lists every `source: key.path: what; fix`."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid alert rules:\n  " + "\n  ".join(problems))


_DURATION_RE = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$"
)
_UNIT_S = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration (`90s`, `1m30s`, `500ms`, `0s`); ValueError otherwise."""
    match = _DURATION_RE.match(text) if isinstance(text, str) and text else None
    if match is None:
        msg = f"not a duration: {text!r} (write e.g. 30s, 5m, 1h30m, 500ms)"
        raise ValueError(msg)
    return float(sum(int(g) * unit for g, unit in zip(match.groups(), _UNIT_S, strict=True) if g))


def format_duration(seconds: float) -> str:
    """A duration as people read it: `3m12s`, `1h0m5s`, `45s`, `250ms` (whole seconds above 1s)."""
    if seconds < 1:
        return f"{max(int(seconds * 1000), 0)}ms"
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


@dataclass(frozen=True, slots=True)
class Levels:
    """The two thresholds of one measure: at or above `degraded`, then at or above `failing`."""

    degraded: float
    failing: float

    def level(self, value: float) -> Level | None:
        """The level `value` reaches, or None while it is below `degraded`."""
        if value >= self.failing:
            return Level.FAILING
        if value >= self.degraded:
            return Level.DEGRADED
        return None


@dataclass(frozen=True, slots=True)
class Thresholds:
    """What the detect stage compares against, for one service (overrides applied)."""

    window_s: float  # the trailing window rates, ratios and quantiles are judged over
    min_requests: int
    error_ratio: Levels
    latency_quantile: float
    latency_s: Levels
    traffic_drop: Levels  # fraction below the learned baseline rate
    cpu_utilization: Levels  # 0..1 of one core, as the heartbeat reports it
    heartbeat_misses: int  # heartbeat intervals missed before an instance is down

    def error_level(self, requests: int, failed: int) -> Level | None:
        """The error-ratio level, or None when healthy or with fewer than `min_requests` calls."""
        if requests < self.min_requests or requests <= 0:
            return None
        return self.error_ratio.level(failed / requests)

    def latency_level(self, requests: int, latency_s: float | None) -> Level | None:
        """The latency level of the window's quantile, None with too few calls or no value."""
        if latency_s is None or requests < self.min_requests:
            return None
        return self.latency_s.level(latency_s)

    def traffic_drop_level(self, rate: float, baseline: float | None) -> Level | None:
        """The drop of `rate` below `baseline` (requests/s); None without a baseline."""
        if baseline is None or baseline <= 0:
            return None
        return self.traffic_drop.level(max(baseline - rate, 0.0) / baseline)


@dataclass(frozen=True, slots=True)
class AlertRule:
    """Timing and severity of one alert for one service (overrides applied)."""

    alertname: str
    for_s: float
    keep_firing_for_s: float
    severity: Mapping[Level, str]  # the severity label for each level that alerts
    enabled: bool = True

    def severity_for(self, level: Level) -> str | None:
        """The `severity` label at `level`, or None when this level does not alert."""
        return self.severity.get(level)


@dataclass(frozen=True, slots=True)
class _ServiceOverride:
    thresholds: Thresholds
    alerts: Mapping[str, AlertRule]
    recipients: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class RuleSet:
    """A validated rules file: ask it per alert and per service, overrides already merged."""

    thresholds: Thresholds
    alerts: Mapping[str, AlertRule]
    recipients: Mapping[str, tuple[str, ...]]  # severity → recipients
    default_for_s: float = 60.0
    default_keep_firing_for_s: float = 60.0
    services: Mapping[str, _ServiceOverride] = field(default_factory=dict)
    source: str = "<defaults>"

    def thresholds_for(self, service: str) -> Thresholds:
        """The thresholds that apply to `service`."""
        override = self.services.get(service)
        return override.thresholds if override else self.thresholds

    def rule_for(self, alertname: str, service: str) -> AlertRule:
        """The rule for `alertname` on `service`; an unknown name gets the `defaults:` timing."""
        override = self.services.get(service)
        alerts = override.alerts if override else self.alerts
        rule = alerts.get(alertname)
        if rule is None:
            return AlertRule(alertname, self.default_for_s, self.default_keep_firing_for_s, {})
        return rule

    def recipients_for(self, severity: str, service: str) -> tuple[str, ...]:
        """Who is told about a `severity` alert of `service`."""
        override = self.services.get(service)
        recipients = override.recipients if override else self.recipients
        return recipients.get(severity, ())


class _Reader:
    """Walks the YAML tree, collecting problems with their key paths instead of stopping."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def problem(self, path: str, what: str, fix: str) -> None:
        self.problems.append(f"{self.source}: {path or '(top level)'}: {what}; {fix}")

    def mapping(self, value: object, path: str, allowed: tuple[str, ...] | None) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(path, f"must be a mapping, got {_kind(value)}", "write `key: value` lines")
            return {}
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                self.problem(path, f"key {key!r} is not a string", "quote it")
                continue
            if allowed is not None and key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                fix = f"did you mean `{close[0]}`?" if close else f"use one of {', '.join(allowed)}"
                self.problem(_join(path, key), "unknown key", fix)
                continue
            out[key] = item
        return out

    def duration(self, value: object, path: str, fallback: float) -> float:
        try:
            return parse_duration(value)  # type: ignore[arg-type]
        except ValueError:
            self.problem(
                path,
                f"must be a duration, got {value!r}",
                "write it like 30s, 5m or 1h30m (a bare number has no unit)",
            )
            return fallback

    def ratio(self, value: object, path: str, fallback: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            self.problem(
                path,
                f"must be a ratio between 0 and 1, got {value!r}",
                "write 1% as 0.01",
            )
            return fallback
        return float(value)

    def count(self, value: object, path: str, fallback: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.problem(path, f"must be a whole number ≥ 0, got {value!r}", "e.g. 10")
            return fallback
        return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: object) -> str:
    return "a list" if isinstance(value, list) else f"{type(value).__name__} {value!r}"


def _levels(
    reader: _Reader,
    raw: object,
    path: str,
    base: Levels,
    *,
    durations: bool = False,
    extra: tuple[str, ...] = (),
) -> tuple[Levels, dict[str, Any]]:
    data = reader.mapping(raw, path, ("degraded", "failing", *extra))
    values = {}
    for name in ("degraded", "failing"):
        fallback = getattr(base, name)
        if name not in data:
            values[name] = fallback
        elif durations:
            values[name] = reader.duration(data[name], _join(path, name), fallback)
        else:
            values[name] = reader.ratio(data[name], _join(path, name), fallback)
    levels = Levels(values["degraded"], values["failing"])
    if levels.degraded > levels.failing:
        reader.problem(
            path,
            f"degraded ({levels.degraded:g}) is above failing ({levels.failing:g})",
            "degraded is the lower threshold",
        )
    return levels, data


_THRESHOLD_KEYS = (
    "window",
    "min_requests",
    "error_ratio",
    "latency",
    "traffic_drop",
    "cpu_utilization",
    "heartbeat_misses",
)


def _thresholds(reader: _Reader, raw: object, path: str, base: Thresholds) -> Thresholds:
    data = reader.mapping(raw, path, _THRESHOLD_KEYS)
    out = base
    if "window" in data:
        window_s = reader.duration(data["window"], _join(path, "window"), out.window_s)
        if window_s > 0:
            out = replace(out, window_s=window_s)
        else:
            reader.problem(_join(path, "window"), "must be longer than 0s", "e.g. 1m")
    if "min_requests" in data:
        out = replace(
            out, min_requests=reader.count(data["min_requests"], _join(path, "min_requests"), 0)
        )
    if "error_ratio" in data:
        levels, _ = _levels(
            reader, data["error_ratio"], _join(path, "error_ratio"), out.error_ratio
        )
        out = replace(out, error_ratio=levels)
    if "traffic_drop" in data:
        tpath = _join(path, "traffic_drop")
        levels, _ = _levels(reader, data["traffic_drop"], tpath, out.traffic_drop)
        out = replace(out, traffic_drop=levels)
    if "cpu_utilization" in data:
        cpath = _join(path, "cpu_utilization")
        levels, _ = _levels(reader, data["cpu_utilization"], cpath, out.cpu_utilization)
        out = replace(out, cpu_utilization=levels)
    if "latency" in data:
        lpath = _join(path, "latency")
        levels, ldata = _levels(
            reader, data["latency"], lpath, out.latency_s, durations=True, extra=("quantile",)
        )
        out = replace(out, latency_s=levels)
        if "quantile" in ldata:
            quantile = ldata["quantile"]
            if quantile in (0.5, 0.95, 0.99):
                out = replace(out, latency_quantile=float(quantile))
            else:
                reader.problem(
                    _join(lpath, "quantile"),
                    f"must be 0.5, 0.95 or 0.99, got {quantile!r}",
                    "the graph keeps these quantiles only",
                )
    if "heartbeat_misses" in data:
        hpath = _join(path, "heartbeat_misses")
        misses = reader.count(data["heartbeat_misses"], hpath, out.heartbeat_misses)
        if misses >= 1:
            out = replace(out, heartbeat_misses=misses)
        else:
            reader.problem(hpath, "must be at least 1", "3 tolerates two lost heartbeats")
    return out


def _severity_map(
    reader: _Reader, raw: object, path: str, severities: tuple[str, ...]
) -> dict[Level, str]:
    data = reader.mapping(raw, path, tuple(level.value for level in Level))
    out: dict[Level, str] = {}
    for level_name, severity in data.items():
        if severity in severities:
            out[Level(level_name)] = severity
        else:
            reader.problem(
                _join(path, level_name),
                f"unknown severity {severity!r}",
                f"use one of {', '.join(severities)} or declare it under `severities:`",
            )
    return out


def _alerts(
    reader: _Reader,
    raw: object,
    path: str,
    base: Mapping[str, AlertRule],
    *,
    severities: tuple[str, ...],
    default_for: float,
    default_keep: float,
) -> dict[str, AlertRule]:
    data = reader.mapping(raw, path, ALERT_NAMES)
    out = dict(base)
    for name, item in data.items():
        apath = _join(path, name)
        fields = reader.mapping(item, apath, ("for", "keep_firing_for", "severity", "enabled"))
        rule = out.get(name) or AlertRule(name, default_for, default_keep, {})
        if "for" in fields:
            rule = replace(
                rule, for_s=reader.duration(fields["for"], _join(apath, "for"), rule.for_s)
            )
        if "keep_firing_for" in fields:
            kpath = _join(apath, "keep_firing_for")
            rule = replace(
                rule, keep_firing_for_s=reader.duration(fields["keep_firing_for"], kpath, 0.0)
            )
        if "severity" in fields:
            severity = _severity_map(
                reader, fields["severity"], _join(apath, "severity"), severities
            )
            rule = replace(rule, severity=severity)
        if "enabled" in fields:
            if isinstance(fields["enabled"], bool):
                rule = replace(rule, enabled=fields["enabled"])
            else:
                reader.problem(
                    _join(apath, "enabled"), "must be true or false", "e.g. enabled: false"
                )
        out[name] = rule
    return out


def _recipients(
    reader: _Reader, raw: object, path: str, base: Mapping[str, tuple[str, ...]], declared: bool
) -> dict[str, tuple[str, ...]]:
    """`severities:` (declaring, `name: {recipients: [...]}`) or a service's `recipients:`."""
    allowed = None if declared else tuple(base)
    data = reader.mapping(raw, path, allowed)
    out = dict(base)
    for severity, item in data.items():
        spath = _join(path, severity)
        if declared:
            names = reader.mapping(item, spath, ("recipients",)).get("recipients", [])
            spath = _join(spath, "recipients")
        else:
            names = item
        if names is None:
            names = []
        if not isinstance(names, list) or not all(isinstance(r, str) and r for r in names):
            reader.problem(
                spath, f"must be a list of names, got {item!r}", "e.g. [oncall, team-web]"
            )
            continue
        out[severity] = tuple(names)
    return out


_TOP_KEYS = ("defaults", "thresholds", "alerts", "severities", "services")


def parse_rules(data: object, source: str = "<rules>") -> RuleSet:
    """Validate a parsed YAML document over the built-in defaults; RulesError lists problems."""
    reader = _Reader(source)
    top = reader.mapping(data, "", _TOP_KEYS)
    base = _BUILTIN
    defaults = reader.mapping(top.get("defaults"), "defaults", ("for", "keep_firing_for"))
    default_for = reader.duration(
        defaults.get("for", DEFAULT_RULES["defaults"]["for"]), "defaults.for", base.default_for_s
    )
    default_keep = reader.duration(
        defaults.get("keep_firing_for", DEFAULT_RULES["defaults"]["keep_firing_for"]),
        "defaults.keep_firing_for",
        base.default_keep_firing_for_s,
    )
    recipients = _recipients(reader, top.get("severities"), "severities", base.recipients, True)
    severities = tuple(recipients)
    thresholds = _thresholds(reader, top.get("thresholds"), "thresholds", base.thresholds)
    # Alerts the file does not mention take its `defaults:` timing, not the built-in one.
    retimed = {
        name: replace(
            rule,
            for_s=rule.for_s if name in _TIMED_FOR else default_for,
            keep_firing_for_s=rule.keep_firing_for_s if name in _TIMED_KEEP else default_keep,
        )
        for name, rule in base.alerts.items()
    }
    read_alerts = partial(
        _alerts, severities=severities, default_for=default_for, default_keep=default_keep
    )
    alerts = read_alerts(reader, top.get("alerts"), "alerts", retimed)
    services: dict[str, _ServiceOverride] = {}
    for service, item in reader.mapping(top.get("services"), "services", None).items():
        spath = _join("services", service)
        sdata = reader.mapping(item, spath, ("thresholds", "alerts", "recipients"))
        services[service] = _ServiceOverride(
            thresholds=_thresholds(
                reader, sdata.get("thresholds"), _join(spath, "thresholds"), thresholds
            ),
            alerts=read_alerts(reader, sdata.get("alerts"), _join(spath, "alerts"), alerts),
            recipients=_recipients(
                reader, sdata.get("recipients"), _join(spath, "recipients"), recipients, False
            ),
        )
    if reader.problems:
        raise RulesError(reader.problems)
    return RuleSet(
        thresholds=thresholds,
        alerts=alerts,
        recipients=recipients,
        default_for_s=default_for,
        default_keep_firing_for_s=default_keep,
        services=services,
        source=source,
    )


def load_rules(path: str | Path) -> RuleSet:
    """Read and validate a rules file; RulesError names the file for YAML and schema problems."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError([f"{path}: cannot read: {exc.strerror}; check the path"]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        what = getattr(exc, "problem", None) or str(exc)
        raise RulesError([f"{path}: {where}: {what}; fix the YAML syntax"]) from exc
    return parse_rules(data, str(path))


def _builtin() -> RuleSet:
    d = DEFAULT_RULES
    t = d["thresholds"]
    thresholds = Thresholds(
        window_s=parse_duration(t["window"]),
        min_requests=t["min_requests"],
        error_ratio=Levels(**t["error_ratio"]),
        latency_quantile=t["latency"]["quantile"],
        latency_s=Levels(
            parse_duration(t["latency"]["degraded"]), parse_duration(t["latency"]["failing"])
        ),
        traffic_drop=Levels(**t["traffic_drop"]),
        cpu_utilization=Levels(**t["cpu_utilization"]),
        heartbeat_misses=t["heartbeat_misses"],
    )
    default_for = parse_duration(d["defaults"]["for"])
    default_keep = parse_duration(d["defaults"]["keep_firing_for"])
    alerts = {
        name: AlertRule(
            name,
            parse_duration(spec.get("for", d["defaults"]["for"])),
            parse_duration(spec.get("keep_firing_for", d["defaults"]["keep_firing_for"])),
            {Level(k): v for k, v in spec["severity"].items()},
        )
        for name, spec in d["alerts"].items()
    }
    recipients = {name: tuple(spec["recipients"]) for name, spec in d["severities"].items()}
    return RuleSet(thresholds, alerts, recipients, default_for, default_keep)


_BUILTIN = _builtin()
# Built-in alerts that set their own timing keep it when a file changes `defaults:`.
_TIMED_FOR = frozenset(n for n, s in DEFAULT_RULES["alerts"].items() if "for" in s)
_TIMED_KEEP = frozenset(n for n, s in DEFAULT_RULES["alerts"].items() if "keep_firing_for" in s)


def default_rules() -> RuleSet:
    """The built-in rules (`DEFAULT_RULES`), as a file without any keys would give."""
    return _BUILTIN
