"""Memory bound: analyzer RSS with 2,000 services / 10,000 edges live, and a full pairing store.

Each figure is measured in a fresh subprocess, so one figure's garbage does not inflate the next:

- empty: the analyzer's modules imported and an `Analyzer` with the default settings made, no
  data. The baseline every other figure is compared with.
- graph: that analyzer's `ServiceGraph` fed through `add_calls` with one paired call per edge in
  every bucket of the default retention (1 h of 10 s buckets; 5 min with `--quick`), on a
  synthetic topology of 2,000 services each calling 5 others (10,000 edges, 12,000 series with
  the nodes' own). Reported: RSS, and the growth per series (edge or node).
- pairing store: the analyzer's `SpanPairer` fed caller-side spans whose callee never reports,
  until the store of halves waiting for a partner is at its limit (`max_pending`, default 100,000)
  and the dedupe memory at its own (`dedupe_capacity`, default 200,000). Reported: RSS, and the
  growth per pending half (the dedupe entries included).

No target in the issue: the figure bounds what a fleet of that size costs. Run alone with
`python -m benchmarks.memory [--quick]`.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import subprocess
import sys
import time

from benchmarks import ROOT, Figure, benchmark

__all__ = ["EDGES_PER_SERVICE", "SERVICES", "memory"]

SERVICES = 2000
EDGES_PER_SERVICE = 5
_NS = 1_000_000_000
_T0 = 1_767_225_600 * _NS
_MIB = 2**20


def _rss() -> int:
    import psutil

    gc.collect()
    return int(psutil.Process().memory_info().rss)


def _analyzer() -> object:
    from watchman_collector.pipeline import Analyzer

    return Analyzer()


def _child_empty() -> dict[str, float]:
    analyzer = _analyzer()
    rss = _rss()
    del analyzer
    return {"rss": rss}


def _child_graph(buckets: int) -> dict[str, float]:
    from watchman_collector.records import Call, ConnectionType

    analyzer = _analyzer()
    graph = analyzer.graph  # type: ignore[attr-defined]
    before = _rss()
    rng = random.Random(4)
    names = [f"svc-{i:04d}" for i in range(SERVICES)]
    calls = []
    for i, client in enumerate(names):
        callees = rng.sample(names[:i] + names[i + 1 :], EDGES_PER_SERVICE)
        for server in callees:
            latency = rng.uniform(0.002, 0.3)
            calls.append(
                Call(
                    client=client,
                    server=server,
                    connection_type=ConnectionType.DIRECT,
                    time_ns=_T0,
                    client_latency_s=latency + 0.001,
                    server_latency_s=latency,
                    failed=False,
                    trace_id=rng.randbytes(16),
                )
            )
    bucket_ns = int(graph.bucket_s * _NS)
    began = time.process_time()
    for b in range(buckets):
        start = _T0 + b * bucket_ns
        for k, call in enumerate(calls):
            # The same records again, moved to this bucket: the graph keeps no reference to a
            # call, and making 10,000 new ones per bucket would only measure the allocator.
            call.time_ns = start + k * 997 % bucket_ns
            call.failed = (b + k) % 97 == 0
        graph.add_calls(calls)
    cpu_s = time.process_time() - began
    rss = _rss()
    series = len(graph.nodes()) + len(graph.edges())
    return {
        "rss": rss,
        "before": before,
        "series": series,
        "edges": len(graph.edges()),
        "nodes": len(graph.nodes()),
        "calls": buckets * len(calls),
        "cpu_s": cpu_s,
    }


def _child_pairer() -> dict[str, float]:
    from watchman_collector.records import Span, SpanKind

    analyzer = _analyzer()
    pairer = analyzer.pairer  # type: ignore[attr-defined]
    before = _rss()
    rng = random.Random(5)
    total = max(pairer.max_pending, pairer.dedupe_capacity)
    chunk = 1000
    for first in range(0, total, chunk):
        spans = [
            Span(
                trace_id=rng.randbytes(16),
                span_id=rng.randbytes(8),
                parent_span_id=rng.randbytes(8),
                service=f"svc-{n % SERVICES:04d}",
                instance=f"svc-{n % SERVICES:04d}-{n % 3}",
                kind=SpanKind.CLIENT,
                start_ns=_T0 + n,
                end_ns=_T0 + n + 12_000_000,
                failed=False,
                name="GET",
                server_address=f"svc-{(n * 7) % SERVICES:04d}",
                server_port=8080,
                http_status=200,
            )
            for n in range(first, min(first + chunk, total))
        ]
        pairer.add(spans)  # callers' halves only: each waits for a callee that never reports
    stats = pairer.stats
    pending = (stats() if callable(stats) else stats).pending
    rss = _rss()
    return {"rss": rss, "before": before, "pending": pending, "fed": total}


def _child(part: str, buckets: int) -> None:
    if part == "empty":
        out = _child_empty()
    elif part == "graph":
        out = _child_graph(buckets)
    else:
        out = _child_pairer()
    print(json.dumps(out))


def _measure(part: str, buckets: int = 0) -> dict[str, float]:
    done = subprocess.run(  # this interpreter, this module: no untrusted input
        [sys.executable, "-m", "benchmarks.memory", "--child", part, "--buckets", str(buckets)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=1200,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@benchmark("memory")
def memory(quick: bool) -> list[Figure]:
    """RSS of an empty analyzer, of a 2,000-service / 10,000-edge graph, of a full pairing store."""
    from watchman_collector.config import AnalyzerConfig

    cfg = AnalyzerConfig()
    buckets = 30 if quick else -(-int(cfg.retention) // int(cfg.bucket))
    empty = _measure("empty")["rss"]
    graph = _measure("graph", buckets)
    pairer = _measure("pairer")
    grown = graph["rss"] - graph["before"]
    pending_grown = pairer["rss"] - pairer["before"]
    minutes = buckets * cfg.bucket / 60
    return [
        Figure("RSS, empty analyzer (after imports)", empty / _MIB, "MiB"),
        Figure(
            f"RSS, graph {int(graph['nodes'])} nodes / {int(graph['edges'])} edges, "
            f"{minutes:g} min of {cfg.bucket:g} s buckets full",
            graph["rss"] / _MIB,
            "MiB",
            baseline=empty / _MIB,
            baseline_name="empty analyzer",
        ),
        Figure("  graph growth per series (edge or node)", grown / graph["series"] / 1024, "KiB"),
        Figure("  graph fill: CPU per call", 1e6 * graph["cpu_s"] / graph["calls"], "µs"),
        Figure(
            f"RSS, pairing store full ({int(pairer['pending'])} pending, "
            f"{int(pairer['fed'])} spans seen)",
            pairer["rss"] / _MIB,
            "MiB",
            baseline=empty / _MIB,
            baseline_name="empty analyzer",
        ),
        Figure("  pairing growth per pending half", pending_grown / pairer["pending"], "bytes"),
    ]


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", choices=["empty", "graph", "pairer"], help=argparse.SUPPRESS)
    parser.add_argument("--buckets", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.buckets)
        return
    from benchmarks import render_table

    print(render_table(memory(args.quick)))


if __name__ == "__main__":
    _main()
