"""Benchmarks: a tiny registry of figures, each measured against a baseline in the same run.

A benchmark module registers a function with ``@benchmark("name")``; the function takes
``quick`` (a seconds-long smoke run for CI) and returns ``Figure`` rows. ``python -m benchmarks``
runs them all, prints one table and writes JSON; ``--repeat 2`` runs the suite twice in a row and
adds a table of each figure's ratio per run, to show the ratios are stable.

A figure's ``goal`` is informative, never asserted (these machines are shared and noisy); its
simple forms (``value >= 200k spans/s``, ``value <= 100 ms``, ``ratio <= 0.50``, ``<= 0.50``
meaning the ratio) are read to print whether the goal was met in this run.
"""

from __future__ import annotations

import json
import operator
import os
import platform
import re
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "MODULES",
    "REGISTRY",
    "ROOT",
    "Figure",
    "benchmark",
    "child_env",
    "free_port",
    "goal_met",
    "render_repeats",
    "render_table",
    "run",
    "write_json",
]

# Modules whose import registers benchmarks, in the order of the performance issue's figures.
MODULES: tuple[str, ...] = (
    "benchmarks.analyzer_throughput",  # 1: in-process decode → pair → graph
    "benchmarks.serve_load",  # 2, 3: OTLP/gRPC and OTLP/HTTP into `watchman serve`; steady 10k/s
    "benchmarks.memory",  # 4: 2,000 services / 10,000 edges; the pairing store full
    "benchmarks.detect_tick",  # 5: detect + cascade tick on 2,000 services
    "benchmarks.replay_throughput",  # 6: replay of OTLP JSON lines
    "benchmarks.sdk_asgi",  # 7: SDK added latency per ASGI request; collector down
    "benchmarks.sdk_outbound",  # 7: SDK added latency per outbound `requests` call; exit
    "benchmarks.sdk_span_encoding",  # 7: what the export thread's span encoding costs
)


@dataclass(frozen=True)
class Figure:
    """One row: a measured value, the baseline measured in the same run, and their ratio."""

    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str | None = None
    goal: str | None = None  # e.g. "ratio <= 0.50"; informative, never asserted

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        """Whether this run met the goal; None without a goal in one of the simple forms."""
        return goal_met(self.goal, self.value, self.ratio)

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "ratio": self.ratio, "met": self.met}


_GOAL = re.compile(r"^\s*(value|ratio)?\s*(<=|>=)\s*([0-9]+(?:\.[0-9]+)?)\s*([kM]?)(?:\s.*)?$")
_SCALE = {"": 1.0, "k": 1e3, "M": 1e6}
_COMPARE = {"<=": operator.le, ">=": operator.ge}


def goal_met(goal: str | None, value: float, ratio: float | None) -> bool | None:
    """Read a goal such as ``value >= 200k spans/s`` or ``<= 0.50`` (the ratio) against a run."""
    match = _GOAL.match(goal or "")
    if match is None:
        return None
    subject, op, number, scale = match.groups()
    measured = ratio if subject in {None, "ratio"} else value
    if measured is None:
        return None
    return bool(_COMPARE[op](measured, float(number) * _SCALE[scale]))


Benchmark = Callable[[bool], list[Figure]]
REGISTRY: dict[str, Benchmark] = {}


ROOT = Path(__file__).resolve().parents[1]
"""The repository: benchmark subprocesses run from it, with it on `PYTHONPATH`."""


def child_env(*drop: str) -> dict[str, str]:
    """This process's environment for a benchmark subprocess, without variables starting with
    any of `drop` (settings the benchmark makes itself) and with the repository importable."""
    env = {k: v for k, v in os.environ.items() if not (drop and k.startswith(drop))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def benchmark(name: str) -> Callable[[Benchmark], Benchmark]:
    """Register a benchmark function under ``name``."""

    def register(function: Benchmark) -> Benchmark:
        REGISTRY[name] = function
        return function

    return register


def run(*, quick: bool, only: Iterable[str] | None = None) -> list[Figure]:
    """Run the registered benchmarks (all, or those named) and return their figures."""
    import importlib

    for module in MODULES:
        importlib.import_module(module)
    wanted = list(only) if only else list(REGISTRY)
    figures: list[Figure] = []
    for name in wanted:
        figures += REGISTRY[name](quick)
    return figures


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:,.1f} {unit}".strip()


def render_table(figures: list[Figure]) -> str:
    """One plain-text table: figure, value, baseline (same run), ratio."""
    rows = [("figure", "value", "baseline (same run)", "ratio")]
    for figure in figures:
        baseline = _number(figure.baseline, figure.unit)
        if figure.baseline_name:
            baseline += f" ({figure.baseline_name})"
        ratio = f"{figure.ratio:.2f}" if figure.ratio is not None else "–"
        if figure.goal:
            verdict = {True: "met", False: "NOT met", None: "see text"}[figure.met]
            ratio += f"  [goal {figure.goal}: {verdict}]"
        rows.append((figure.name, _number(figure.value, figure.unit), baseline, ratio))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def render_repeats(runs: list[list[Figure]]) -> str:
    """Each figure's value and ratio per run, side by side (figures with a ratio or a goal)."""
    header = ["figure"]
    for i in range(len(runs)):
        header += [f"value run {i + 1}", f"ratio run {i + 1}"]
    rows = [header]
    for position, first in enumerate(runs[0]):
        if first.ratio is None and first.goal is None:
            continue
        row = [first.name]
        for figures in runs:
            same = figures[position] if position < len(figures) else None
            if same is None or same.name != first.name:
                row += ["–", "–"]
                continue
            row.append(_number(same.value, same.unit))
            row.append(f"{same.ratio:.2f}" if same.ratio is not None else "–")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def write_json(runs: list[list[Figure]], path: Path, *, quick: bool) -> None:
    """Write each run's figures with the context (time, Python, machine) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": quick,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "figures": [figure.to_json() for figure in runs[-1]],
        "runs": [[figure.to_json() for figure in figures] for figures in runs],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
