"""Replay throughput: recorded OTLP JSON lines through `Replayer`, as `watchman replay` runs them.

Input is a file in the Collector file exporter's format: the simulator's `large` topology (34
services, HTTP, database and messaging spans with the attributes real instrumentations set), its
trace exports re-batched into lines of exactly 1000 spans (as a Collector's batch processor
forwards them), and its metrics exports (heartbeats, resource usage, HTTP metrics) as their own
lines in between, in export order.

- replay: `Replayer(out=<null sink>).replay([file])`, the whole of `watchman replay` (read, decode,
  pair, graph, detection ticks, alert transitions written out), in spans per CPU-second; the same
  with trace lines loaded by `json.loads` and read from the dicts (the eleventh pass's decode,
  before the typed structs), and with the first decode path (OTLP/JSON → protobuf message →
  bytes → decode), for before/after in one run; and the share of the replay's time spent
  decoding OTLP/JSON (trace and metrics lines), so the rest is attributable to the later stages.
- decode alone: `decode_trace_json` of each trace line against the same two earlier paths.

Baseline in the same run: bare `json.loads` of the same trace lines, the floor of any decoder that
starts from the standard library's parser. Medians of 5 runs (3 with `--quick`), interleaved.
Target (from the issue): a replay of ≥ 100k spans/s.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks import Figure, benchmark

__all__ = ["SPANS_PER_LINE", "build_lines", "replay_throughput"]

SPANS_PER_LINE = 1000


def build_lines(count: int, *, seed: int = 1) -> list[str]:
    """`count` trace lines of 1000 spans each, with the run's metrics lines in between."""
    from watchman_collector.otlp_json import dump_request

    from benchmarks.analyzer_throughput import rebatched_exports

    return [dump_request(request) for _, request in rebatched_exports(count, seed=seed)]


def _cpu(function: Callable[[], object]) -> float:
    """CPU seconds of one call, after a full collection so runs start alike."""
    gc.collect()
    began = time.process_time()
    function()
    return time.process_time() - began


@contextlib.contextmanager
def _previous_replay() -> Iterator[None]:
    """Replay as before: OTLP/JSON → protobuf message (→ bytes) → decode, collector not paused."""
    from watchman_collector import replay
    from watchman_collector.decode import decode_metrics, decode_traces
    from watchman_collector.otlp_json import parse_metrics_request, parse_trace_request

    saved = (replay.decode_trace_json, replay.decode_metrics_json)  # type: ignore[attr-defined]
    replay.decode_trace_json = lambda data: decode_traces(parse_trace_request(data))  # type: ignore[attr-defined]
    replay.decode_metrics_json = lambda data: decode_metrics(parse_metrics_request(data))  # type: ignore[attr-defined]
    with _collector_running():
        try:
            yield
        finally:
            replay.decode_trace_json, replay.decode_metrics_json = saved  # type: ignore[attr-defined]


@contextlib.contextmanager
def _dict_reading() -> Iterator[None]:
    """Decode OTLP/JSON trace lines as the eleventh pass did: `json.loads`, then read the dicts."""
    from watchman_collector import otlp_json

    real = otlp_json.load_trace_request  # type: ignore[attr-defined]
    otlp_json.load_trace_request = lambda data: None  # type: ignore[attr-defined]
    try:
        yield
    finally:
        otlp_json.load_trace_request = real  # type: ignore[attr-defined]


@contextlib.contextmanager
def _collector_running() -> Iterator[None]:
    """Replay without pausing the cyclic collector while a line is decoded."""
    from types import SimpleNamespace

    from watchman_collector import replay

    real = replay.gc  # type: ignore[attr-defined]
    noop = SimpleNamespace(isenabled=lambda: False, disable=lambda: None, enable=lambda: None)
    replay.gc = noop  # type: ignore[attr-defined,assignment]
    try:
        yield
    finally:
        replay.gc = real  # type: ignore[attr-defined]


class _DecodeClock:
    """CPU seconds spent in the replay's OTLP/JSON decoding, by wrapping the functions it calls."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        from watchman_collector import replay

        names = ("decode_trace_json", "decode_metrics_json")
        saved = {name: getattr(replay, name) for name in names}
        for name, function in saved.items():
            setattr(replay, name, self._timed(function))
        try:
            yield
        finally:
            for name, function in saved.items():
                setattr(replay, name, function)

    def _timed(self, function: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def timed(data: Any) -> Any:
            began = time.process_time()
            try:
                return function(data)
            finally:
                self.seconds += time.process_time() - began

        return timed


def _replay(
    path: Path,
    spans: list[int],
    *,
    variant: Callable[[], contextlib.AbstractContextManager[None]] | None = None,
    clock: _DecodeClock | None = None,
) -> None:
    """Replay `path` as `watchman replay` does (alerts to a null sink); appends the spans read."""
    from watchman_collector.replay import Replayer

    with open(os.devnull, "w") as sink, contextlib.ExitStack() as stack:
        if variant is not None:
            stack.enter_context(variant())
        if clock is not None:
            stack.enter_context(clock.installed())
        replayer = Replayer(out=sink)
        replayer.replay([path], progress=False)
    spans.append(replayer.stats.spans)


@benchmark("replay")
def replay_throughput(quick: bool) -> list[Figure]:
    """Replay and decode figures against bare `json.loads` of the same lines."""
    from watchman_collector.decode import decode_traces
    from watchman_collector.otlp_json import decode_trace_json, parse_trace_request

    count, runs = (8, 3) if quick else (50, 5)
    lines = build_lines(count)
    traces = [line.encode() for line in lines if line.startswith('{"resourceSpans"')]
    total = len(traces) * SPANS_PER_LINE
    samples: dict[str, list[float]] = {
        "loads": [],
        "direct": [],
        "previous": [],
        "replay": [],
        "replay_unpaused": [],
        "replay_previous": [],
        "replay_dict": [],
        "dict": [],
        "decode_share": [],
    }

    def loads_each() -> None:
        for line in traces:
            json.loads(line)

    def direct_each() -> None:
        for line in traces:
            decode_trace_json(line)

    def previous_each() -> None:
        for line in traces:
            decode_traces(parse_trace_request(line))

    def dict_each() -> None:
        with _dict_reading():
            direct_each()

    spans: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recording.jsonl"
        path.write_text("\n".join(lines) + "\n")
        for _ in range(runs):
            samples["loads"].append(_cpu(loads_each))
            samples["direct"].append(_cpu(direct_each))
            samples["previous"].append(_cpu(previous_each))
            samples["dict"].append(_cpu(dict_each))
            clock = _DecodeClock()
            samples["replay"].append(_cpu(partial(_replay, path, spans, clock=clock)))
            samples["decode_share"].append(clock.seconds / samples["replay"][-1])
            samples["replay_unpaused"].append(
                _cpu(partial(_replay, path, spans, variant=_collector_running))
            )
            samples["replay_previous"].append(
                _cpu(partial(_replay, path, spans, variant=_previous_replay))
            )
            samples["replay_dict"].append(
                _cpu(partial(_replay, path, spans, variant=_dict_reading))
            )
    if set(spans) != {total}:
        raise RuntimeError(f"replays read {sorted(set(spans))} spans, expected {total}")
    rate = {key: total / statistics.median(value) for key, value in samples.items()}
    loads = rate["loads"]
    name = "bare json.loads"
    return [
        Figure(
            "replay of OTLP JSON lines (Replayer), spans/CPU-s",
            rate["replay"],
            "spans/s",
            loads,
            name,
            goal="value >= 100k spans/s",
        ),
        Figure(
            "replay, collector not paused while decoding",
            rate["replay_unpaused"],
            "spans/s",
            loads,
            name,
        ),
        Figure(
            "replay, trace lines read with json.loads (eleventh pass)",
            rate["replay_dict"],
            "spans/s",
            loads,
            name,
        ),
        Figure(
            "replay before (JSON → protobuf → decode, not paused)",
            rate["replay_previous"],
            "spans/s",
            loads,
            name,
        ),
        Figure(
            "replay: share of CPU time in OTLP/JSON decode",
            100 * statistics.median(samples["decode_share"]),
            "%",
        ),
        Figure("OTLP JSON → Span records, direct", rate["direct"], "spans/s", loads, name),
        Figure(
            "OTLP JSON → Span records, json.loads reading", rate["dict"], "spans/s", loads, name
        ),
        Figure("OTLP JSON → Span records, previous path", rate["previous"], "spans/s", loads, name),
    ]


def main() -> None:
    """`python -m benchmarks.replay_throughput [--quick]`: print this benchmark's table."""
    from benchmarks import render_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(render_table(replay_throughput(args.quick)))


if __name__ == "__main__":
    main()
