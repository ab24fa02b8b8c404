"""Helpers for the tests of the deployment files under `collector/`: paths, YAML, PromQL names.

The metric names the analyzer exposes are read from `docs/architecture.md` ("Names the outside
world sees"), the documented contract the dashboards and rules are written against.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DEPLOY",
    "PROMETHEUS_OWN_NAMES",
    "REPO",
    "analyzer_metric_names",
    "env_default",
    "host_port",
    "load_yaml",
    "promql_metric_names",
    "recorded_names",
    "rule_exprs",
    "run_tool",
]

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "collector"

PROMETHEUS_OWN_NAMES = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})
"""Series Prometheus writes itself (scrape health, alert state), valid in any expression."""

_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_NAME = re.compile(r"`((?:watchman|traces_service_graph)_[a-z0-9_]+)")
_PROMQL_WORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without", "on", "ignoring"}
)
_ENV_REF = re.compile(r"^\$\{env:(\w+)(?::-(.*))?\}$")


def load_yaml(path: Path) -> Any:
    """Parse one YAML file (merge keys included, as Compose reads them)."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def run_tool(args: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a checker binary with a bounded time; output on stdout and stderr as text."""
    return subprocess.run(
        list(args), cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def analyzer_metric_names() -> frozenset[str]:
    """Every series name the analyzer documents, histograms with their `_bucket/_sum/_count`."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    start = text.index("## Names the outside world sees")
    end = text.index("### HTTP", start)
    names: set[str] = set()
    for line in text[start:end].splitlines():
        found = _NAME.findall(line)
        if "histogram" in line:
            # A histogram is only ever stored as its three suffixed series.
            names.update(n + s for n in found for s in _HISTOGRAM_SUFFIXES)
        else:
            names.update(found)
    return frozenset(names)


def rule_exprs(path: Path) -> Iterator[dict[str, Any]]:
    """Every rule (recording and alerting) of a Prometheus rule file."""
    for group in load_yaml(path)["groups"]:
        yield from group["rules"]


def recorded_names() -> frozenset[str]:
    """The series the recording rules under `collector/prometheus/rules` write."""
    return frozenset(
        rule["record"]
        for path in sorted((DEPLOY / "prometheus" / "rules").glob("*.rules.yml"))
        for rule in rule_exprs(path)
        if "record" in rule
    )


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (a lexical scan, not a parser).

    Strings, label matchers, ranges, grouping label lists and Grafana variables are removed
    first; what remains that is an identifier not followed by `(` is a metric name.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)",
        " ",
        text,
        flags=re.IGNORECASE,
    )
    text = re.sub(r"\$\{[^}]*\}|\$\w+", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w:])(?!\s*\()", text):
        word = match.group(1)
        if word.lower() not in _PROMQL_WORDS:
            names.add(word)
    return names


def env_default(value: str) -> str:
    """`${env:NAME:-default}` (the Collector's env reference) -> `default`; else unchanged."""
    match = _ENV_REF.match(value)
    if match is None:
        return value
    if match.group(2) is None:
        raise AssertionError(f"{value}: an env reference without a default")
    return match.group(2)


def host_port(address: str) -> tuple[str, int]:
    """`host:port` or `scheme://host:port/...` -> (host, port)."""
    rest = address.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = rest.rpartition(":")
    return host, int(port)
