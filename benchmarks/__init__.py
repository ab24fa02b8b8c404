"""Benchmarks: a tiny registry of figures, each measured against a baseline in the same run.

A benchmark module registers a function with ``@benchmark("name")``; the function takes
``quick`` (a seconds-long smoke run for CI) and returns ``Figure`` rows. ``python -m benchmarks``
runs them all, prints one table and writes JSON.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "MODULES",
    "REGISTRY",
    "Figure",
    "benchmark",
    "render_table",
    "run",
    "write_json",
]

# Modules whose import registers benchmarks; later benchmarks (analyzer throughput...) add here.
MODULES: tuple[str, ...] = (
    "benchmarks.sdk_asgi",
    "benchmarks.analyzer_throughput",
    "benchmarks.detect_tick",
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

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "ratio": self.ratio}


Benchmark = Callable[[bool], list[Figure]]
REGISTRY: dict[str, Benchmark] = {}


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
            ratio += f"  [goal {figure.goal}]"
        rows.append((figure.name, _number(figure.value, figure.unit), baseline, ratio))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def write_json(figures: list[Figure], path: Path, *, quick: bool) -> None:
    """Write the figures with the run's context (time, Python, machine) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": quick,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "figures": [figure.to_json() for figure in figures],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
