"""`watchman replay`: recorded OTLP JSON lines through the live stages, in event time.

Input is what the OpenTelemetry Collector's file exporter writes: one `ExportTraceServiceRequest`
or `ExportMetricsServiceRequest` as OTLP/JSON per line (logs lines are read and skipped), plain or
gzip-compressed (recognised by content, not by name). Each request is decoded and processed by the
same `Analyzer` the server runs, with an `EventClock`: windows, pairing TTLs and ticks follow the
recorded timestamps, so a replay is deterministic and as fast as the machine allows.

stdout is reserved for machine-readable output: one JSON object per line for each alert
transition, in Alertmanager's API v2 alert shape with event-time timestamps (`docs/replay.md`);
the human summary and the progress bar go to stderr. The same input gives the same lines.
"""

from __future__ import annotations

import gc
import gzip
import io
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

from watchman_collector.alert import AlertTransition, AlertUpdate
from watchman_collector.alert_output import transition_line
from watchman_collector.clock import EventClock
from watchman_collector.config import AnalyzerConfig
from watchman_collector.otlp_json import (
    OTLPJSONError,
    decode_metrics_json,
    decode_trace_json,
    detect_signal,
)
from watchman_collector.pipeline import Analyzer

__all__ = [
    "PROGRESS_MIN_BYTES",
    "ReplayError",
    "ReplayStats",
    "Replayer",
    "format_summary",
    "open_lines",
    "summarize",
]

log = logging.getLogger(__name__)

PROGRESS_MIN_BYTES = 8 << 20
"""Below this much input the progress bar is not worth drawing (`--progress auto`)."""

_GZIP_MAGIC = b"\x1f\x8b"
# A line is one export request, often ~1 MB: with the default 8 KiB buffer each line is gathered
# from a hundred reads (≈ 5 times slower to iterate than with a buffer larger than the line).
_READ_BUFFER = 4 << 20
_MAX_REPORTED_ERRORS = 10


class ReplayError(Exception):
    """A line could not be replayed and the replay is strict; the message names file and line."""


@dataclass(slots=True)
class ReplayStats:
    """What a replay read."""

    files: int = 0
    lines: int = 0
    trace_requests: int = 0
    metric_requests: int = 0
    log_requests: int = 0
    blank_lines: int = 0
    bad_lines: int = 0
    spans: int = 0
    rejected_spans: int = 0
    heartbeats: int = 0
    errors: list[str] = field(default_factory=list)


def open_lines(path: Path, raw: IO[bytes]) -> Iterator[bytes]:
    """The lines of an open file, decompressing gzip when the content starts with its magic."""
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[type-var]
    if buffered.peek(2)[:2] == _GZIP_MAGIC:
        with gzip.GzipFile(filename=str(path), fileobj=buffered, mode="rb") as unzipped:
            yield from unzipped
    else:
        yield from buffered


class _Progress:
    """A byte-based progress bar over all input files, on stderr, or nothing."""

    def __init__(self, total_bytes: int, enabled: bool) -> None:
        self._bar: Any = None
        self._task: Any = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("replay"),
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._task = self._bar.add_task("replay", total=total_bytes)
        self._bar.start()

    def update(self, done_bytes: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done_bytes)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


class Replayer:
    """Feeds recorded OTLP JSON lines to an `Analyzer` running on an `EventClock`."""

    def __init__(
        self,
        config: AnalyzerConfig | None = None,
        *,
        strict: bool = False,
        out: TextIO | None = None,
    ) -> None:
        self.clock = EventClock()
        self.analyzer = Analyzer(config or AnalyzerConfig(), self.clock)
        self.strict = strict
        self.stats = ReplayStats()
        self.transitions: list[AlertTransition] = []
        self._out = out
        self.analyzer.diagnostician.listeners.append(self._on_alerts)

    def _on_alerts(self, update: AlertUpdate) -> None:
        """Record each alert transition, and write it as a JSON line to `out` when given."""
        self.transitions.extend(update.transitions)
        if self._out is not None and update.transitions:
            for transition in update.transitions:
                self._out.write(transition_line(transition) + "\n")
            self._out.flush()

    def feed_line(self, line: bytes | str, where: str = "<input>") -> None:
        """Replay one line (one export request); bad lines are counted, or raised when strict."""
        stats = self.stats
        stats.lines += 1
        if not line.strip():
            stats.blank_lines += 1
            return
        try:
            self._feed(line)
        except (OTLPJSONError, ValueError) as exc:
            stats.bad_lines += 1
            message = f"{where}: {exc}"
            if self.strict:
                raise ReplayError(message) from exc
            if len(stats.errors) < _MAX_REPORTED_ERRORS:
                stats.errors.append(message)
                log.warning("skipping %s", message)

    def _feed(self, line: bytes | str) -> None:
        stats = self.stats
        data = line.encode() if isinstance(line, str) else line
        signal = _signal(data)
        if signal == "logs":
            stats.log_requests += 1
            return
        # A loaded line is tens of thousands of acyclic objects, freed by reference counting as
        # soon as it is decoded; letting the cyclic collector run meanwhile only makes it walk
        # those and the analyzer's long-lived state again and again (docs/replay.md).
        decode = decode_trace_json if signal == "traces" else decode_metrics_json
        enabled = gc.isenabled()
        gc.disable()
        try:
            batch = decode(data)
        finally:
            if enabled:
                gc.enable()
        if signal == "traces":
            stats.trace_requests += 1
            stats.spans += len(batch.spans)
            stats.rejected_spans += batch.rejected
        else:
            stats.metric_requests += 1
            stats.heartbeats += len(batch.heartbeats)
        analyzer = self.analyzer
        analyzer.process(batch)
        analyzer.maybe_tick()

    def replay(self, paths: Sequence[str | Path], *, progress: bool | None = None) -> ReplayStats:
        """Replay files in order (`-` is stdin), then pair what is still waiting.

        `progress`: True draws a bar on stderr, False never, None when stderr is a terminal and
        the input is at least `PROGRESS_MIN_BYTES`.
        """
        files = [Path(p) for p in paths]
        sizes = [_size(p) for p in files]
        total = sum(sizes)
        if progress is None:
            progress = _stderr_is_tty() and total >= PROGRESS_MIN_BYTES
        bar = _Progress(total, progress)
        done_before = 0
        try:
            for path, size in zip(files, sizes, strict=True):
                self.stats.files += 1
                self._replay_file(path, bar, done_before)
                done_before += size
                bar.update(done_before)
        finally:
            bar.close()
        self.analyzer.drain()
        self.analyzer.tick(self.clock.now_ns())
        return self.stats

    def _replay_file(self, path: Path, bar: _Progress, done_before: int) -> None:
        raw: IO[bytes]
        raw = (
            os.fdopen(os.dup(0), "rb", buffering=_READ_BUFFER)
            if str(path) == "-"
            else path.open("rb", buffering=_READ_BUFFER)
        )
        with raw:
            for number, line in enumerate(open_lines(path, raw), start=1):
                self.feed_line(line, f"{path}:{number}")
                if number % 256 == 0:
                    bar.update(done_before + _tell(raw))


# The file exporter writes the signal's key first; reading it from the bytes saves parsing every
# line twice. Anything else goes through the full check.
_PREFIXES = (
    (b'{"resourceSpans"', "traces"),
    (b'{"resourceMetrics"', "metrics"),
    (b'{"resourceLogs"', "logs"),
)


def _signal(data: bytes) -> str:
    head = data.lstrip()[:20]
    for prefix, signal in _PREFIXES:
        if head.startswith(prefix):
            return signal
    return detect_signal(data)


def _size(path: Path) -> int:
    if str(path) == "-":
        return 0
    return path.stat().st_size


def _tell(raw: IO[bytes]) -> int:
    try:
        return raw.tell()
    except (OSError, ValueError):
        return 0


def _stderr_is_tty() -> bool:
    import sys

    return sys.stderr.isatty()


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


def summarize(replayer: Replayer) -> dict[str, Any]:
    """The final graph as one JSON-ready object (`"type": "summary"`), totals over the replay."""
    analyzer = replayer.analyzer
    graph = analyzer.graph
    stats = replayer.stats
    nodes = []
    for node in sorted(graph.nodes(), key=lambda n: n.name):
        served = node.served
        latency = served.total_server if served.total_server.count else served.total_client
        nodes.append(
            {
                "name": node.name,
                "kind": str(node.kind),
                "instances": len(node.instances),
                "calls": served.total_calls,
                "failed": served.total_failed,
                "p50_s": _round(latency.quantile(0.5)),
                "p95_s": _round(latency.quantile(0.95)),
            }
        )
    edges = []
    for edge in sorted(graph.edges(), key=lambda e: e.key):
        red = edge.red
        latency = red.total_server if red.total_server.count else red.total_client
        edges.append(
            {
                "client": edge.client,
                "server": edge.server,
                "connection_type": str(edge.connection_type),
                "calls": red.total_calls,
                "failed": red.total_failed,
                "unpaired": edge.unpaired,
                "p50_s": _round(latency.quantile(0.5)),
                "p95_s": _round(latency.quantile(0.95)),
            }
        )
    pair = analyzer.pairer.stats
    counters = graph.counters
    return {
        "type": "summary",
        "watermark_ns": replayer.clock.now_ns(),
        "input": {
            "files": stats.files,
            "lines": stats.lines,
            "trace_requests": stats.trace_requests,
            "metric_requests": stats.metric_requests,
            "log_requests": stats.log_requests,
            "bad_lines": stats.bad_lines,
            "spans": stats.spans,
            "rejected_spans": stats.rejected_spans,
            "heartbeats": stats.heartbeats,
        },
        "pairing": {
            "calls": analyzer.counters.calls,
            "duplicates": pair.duplicates,
            "evicted": pair.evicted,
            "expired": pair.expired,
        },
        "graph": {
            "late_dropped": counters.late_dropped,
            "overflow_nodes": counters.overflow_nodes,
            "overflow_edges": counters.overflow_edges,
        },
        "nodes": nodes,
        "edges": edges,
    }


def _fmt_s(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.1f}ms" if value < 1 else f"{value:.2f}s"


def format_summary(summary: dict[str, Any], out: TextIO) -> None:
    """Write a summary for people: input counts, then one line per edge and per node."""
    inp = summary["input"]
    out.write(
        f"replayed {inp['lines']} lines from {inp['files']} file(s): "
        f"{inp['spans']} spans, {inp['heartbeats']} heartbeats, {inp['bad_lines']} bad lines; "
        f"{summary['pairing']['calls']} calls\n"
    )
    out.write(f"edges ({len(summary['edges'])}):\n")
    for e in summary["edges"]:
        kind = f" [{e['connection_type']}]" if e["connection_type"] else ""
        out.write(
            f"  {e['client']} -> {e['server']}{kind}: {e['calls']} calls, {e['failed']} failed, "
            f"p50 {_fmt_s(e['p50_s'])}, p95 {_fmt_s(e['p95_s'])}\n"
        )
    out.write(f"nodes ({len(summary['nodes'])}):\n")
    for n in summary["nodes"]:
        out.write(
            f"  {n['name']} ({n['kind']}, {n['instances']} instance(s)): "
            f"served {n['calls']} calls, {n['failed']} failed, p95 {_fmt_s(n['p95_s'])}\n"
        )
