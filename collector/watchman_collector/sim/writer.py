"""Writes a run to disk: OTLP JSON lines (as the Collector's file exporter writes) and the truth.

One export request per line, traces and metrics interleaved in export order, gzip when the name
ends in `.gz`; `watchman replay` reads the lines back by their top-level key. The JSON itself comes
from `watchman_collector.otlp_json.dump_request`, so writer and reader share one encoding (hex
trace and span ids, integer enums).
"""

from __future__ import annotations

import contextlib
import gzip
import io
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from watchman_collector.sim.process import Export
from watchman_collector.sim.scenario import GroundTruth

__all__ = ["truth_path", "write_jsonl", "write_truth"]


def _dumper() -> Callable[[Any], str]:
    try:
        from watchman_collector.otlp_json import dump_request
    except ImportError as exc:  # the OTLP/JSON module ships with the analyzer core
        raise RuntimeError(
            "writing OTLP JSON lines needs watchman_collector.otlp_json.dump_request"
        ) from exc
    return dump_request


def write_jsonl(exports: Iterable[Export], path: str | Path) -> int:
    """Write every export as one OTLP/JSON line; returns the number of lines."""
    dump = _dumper()
    path = Path(path)
    count = 0
    with contextlib.ExitStack() as stack:
        raw: Any = stack.enter_context(path.open("wb"))
        if path.name.endswith(".gz"):
            # mtime=0 and no name keep the gzip header, and so the bytes, the same on every run
            raw = stack.enter_context(gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0))
        out = stack.enter_context(io.TextIOWrapper(raw, encoding="utf-8", newline="\n"))
        for export in exports:
            out.write(dump(export.request))
            out.write("\n")
            count += 1
    return count


def truth_path(out: str | Path) -> Path:
    """Where the ground truth of `out` goes: `run.jsonl.gz` → `run.truth.json`."""
    out = Path(out)
    stem = out.name
    for suffix in (".gz", ".jsonl", ".json"):
        stem = stem.removesuffix(suffix)
    return out.with_name(f"{stem}.truth.json")


def write_truth(truth: GroundTruth, path: str | Path) -> None:
    """Write the ground truth as JSON."""
    Path(path).write_text(truth.to_json() + "\n", encoding="utf-8")
