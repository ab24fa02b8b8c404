"""Analyzer throughput: decode → pair → graph in spans per second, in-process on one core.

Input is realistic traffic: the simulator's `large` topology (34 services, HTTP, database and
messaging spans with the attributes real instrumentations set), re-batched into export requests of
1000 spans each, as a Collector's batch processor would forward them, and encoded once up front.

- in-process: decode (from the request bytes, as the gRPC receiver does) → pair → graph as
  `Analyzer.process` runs them, on one core (CPU time), against the bare
  `ExportTraceServiceRequest.FromString` parse of the same bytes measured in the same run; the
  same again under `watchman serve`'s garbage-collector settings; then each stage alone, to show
  where the time goes. Medians of 5 runs (3 with
  `--quick`), the variants interleaved within each run, a fresh analyzer each time.

End to end into a real `watchman serve` is `benchmarks/serve_load.py`; the pairing store's
memory is `benchmarks/memory.py`.

Rows whose analyzer modules are not there yet are reported with a note instead of a number.
Target (from the issue): ≥ 200k spans/s in-process on one core.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans

from benchmarks import Figure, benchmark

__all__ = ["SPANS_PER_REQUEST", "analyzer_throughput", "build_requests", "rebatched_exports"]

SPANS_PER_REQUEST = 1000


def _missing(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


# ---- input ------------------------------------------------------------------------------------


def rebatched_exports(count: int, *, seed: int = 1) -> Iterator[tuple[str, Any]]:
    """A healthy simulated `large` run as (signal, request): `count` trace requests of exactly
    1000 spans, re-batched as a Collector's batch processor forwards them, with the run's other
    requests (heartbeat metrics) in between as they come."""
    from watchman_collector.sim import Noise, Scenario, Simulator, get_topology

    wanted = count * SPANS_PER_REQUEST
    # ~40 spans per entry request in `large`; simulate a little more than needed
    duration = max(10.0, wanted / (40 * 50) * 1.3)
    scenario = Scenario(
        get_topology("large"), seed=seed, duration_s=duration, rate=50, noise=Noise(), drain_s=10
    )
    done = 0
    current = ExportTraceServiceRequest()
    size = 0
    for export in Simulator(scenario).exports():
        if export.signal != "traces":
            yield export.signal, export.request
            continue
        for rs in export.request.resource_spans:
            for ss in rs.scope_spans:
                spans = list(ss.spans)
                while spans:
                    take = spans[: SPANS_PER_REQUEST - size]
                    spans = spans[len(take) :]
                    _append(current, rs, ss, take)
                    size += len(take)
                    if size == SPANS_PER_REQUEST:
                        yield "traces", current
                        done += 1
                        if done == count:
                            return
                        current, size = ExportTraceServiceRequest(), 0
    raise RuntimeError(f"simulated too few spans: {done} of {count} requests")


def build_requests(count: int, *, seed: int = 1) -> list[bytes]:
    """`count` serialized requests of exactly 1000 spans from a healthy simulated `large` run."""
    return [
        request.SerializeToString()
        for signal, request in rebatched_exports(count, seed=seed)
        if signal == "traces"
    ]


def _append(
    request: ExportTraceServiceRequest, rs: ResourceSpans, ss: ScopeSpans, spans: list[Any]
) -> None:
    # Keep one ResourceSpans per resource run, as the Collector's batch processor does.
    if not request.resource_spans or request.resource_spans[-1].resource != rs.resource:
        target = request.resource_spans.add(resource=rs.resource, schema_url=rs.schema_url)
    else:
        target = request.resource_spans[-1]
    if not target.scope_spans or target.scope_spans[-1].scope != ss.scope:
        scope = target.scope_spans.add(scope=ss.scope)
    else:
        scope = target.scope_spans[-1]
    scope.spans.extend(spans)


# ---- in-process -------------------------------------------------------------------------------


def _timed(function: Callable[[], object]) -> float:
    """CPU seconds of one call (less noisy than wall time on a shared machine; one thread)."""
    gc.collect()
    began = time.process_time()
    function()
    return time.process_time() - began


# `watchman serve` freezes what start-up made and raises the first-generation threshold
# (serve.GC_THRESHOLD); the "as serve runs it" row does the same around the run.


def _as_served(function: Callable[[], object]) -> float:
    """`_timed`, under `watchman serve`'s garbage-collector settings."""
    from watchman_collector.serve import GC_THRESHOLD

    old = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    try:
        began = time.process_time()
        function()
        return time.process_time() - began
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


def _in_process(payloads: list[bytes], runs: int) -> tuple[list[Figure], float | None]:
    """In-process figures (medians of `runs`), and RSS (MiB) after the pipeline (None: skipped)."""
    parse = ExportTraceServiceRequest.FromString
    total = len(payloads) * SPANS_PER_REQUEST
    missing = _missing(
        "watchman_collector.decode", "watchman_collector.pair", "watchman_collector.graph"
    )
    if missing:
        parse_s = statistics.median(
            _timed(lambda: [parse(p) for p in payloads]) for _ in range(runs)
        )
        print(f"note: in-process decode→pair→graph skipped, missing {', '.join(missing)}")
        return [Figure("bare protobuf parse, 1000-span requests", total / parse_s, "spans/s")], None
    from watchman_collector.decode import decode_trace_bytes
    from watchman_collector.graph import ServiceGraph
    from watchman_collector.pair import SpanPairer

    def pipeline() -> Callable[[], None]:
        # What the gRPC receiver and Analyzer.process do per request (decode reads the bytes
        # with its reduced schema), without the intake queue around them; a fresh analyzer.
        pairer, graph = SpanPairer(), ServiceGraph()

        def run() -> None:
            for payload in payloads:
                calls = pairer.add(decode_trace_bytes(payload).spans)
                if calls:
                    graph.add_calls(calls)

        return run

    # Each stage alone over the same input, on a fresh analyzer. Decode drops each batch as the
    # pipeline does; pair and graph then run over batches decoded beforehand (untimed) and frozen
    # out of the collector's reach, which in the pipeline never sees more than one batch of them.
    def decode_only() -> None:
        for payload in payloads:
            decode_trace_bytes(payload)

    # The variants interleave within each run, so the machine's drift hits them alike.
    times: dict[str, list[float]] = {
        k: [] for k in ("parse", "whole", "served", "decode", "pair", "graph")
    }
    rss_mb = 0.0
    calls: list[Any] = []
    for _ in range(runs):
        times["parse"].append(_timed(lambda: [parse(p) for p in payloads]))
        times["whole"].append(_timed(pipeline()))
        rss_mb = max(rss_mb, _rss_mb())  # before the per-stage runs below keep their copies
        times["served"].append(_as_served(pipeline()))
        times["decode"].append(_timed(decode_only))
        batches = [decode_trace_bytes(p) for p in payloads]
        pairer, graph, calls = SpanPairer(), ServiceGraph(), []
        gc.collect()
        gc.freeze()

        def pair_all(c: list[Any] = calls, pr: SpanPairer = pairer, b: list[Any] = batches) -> None:
            for batch in b:
                c.extend(pr.add(batch.spans))

        times["pair"].append(_timed(pair_all))
        times["graph"].append(_timed(lambda c=calls, g=graph: g.add_calls(c)))  # type: ignore[misc]
        gc.unfreeze()
    med = {name: statistics.median(values) for name, values in times.items()}
    bare = total / med["parse"]
    figures = [
        Figure("bare protobuf parse, 1000-span requests", bare, "spans/s"),
        Figure(
            "in-process decode→pair→graph (from bytes)",
            total / med["whole"],
            "spans/s",
            baseline=bare,
            baseline_name="bare parse",
            goal="value >= 200k spans/s",
        ),
        Figure(
            "  the same, with serve's collector settings",
            total / med["served"],
            "spans/s",
            baseline=bare,
            baseline_name="bare parse",
            goal="value >= 200k spans/s",
        ),
        Figure("  bare parse", 1e6 * med["parse"] / total, "µs/span"),
    ]
    summed = med["decode"] + med["pair"] + med["graph"]
    for name in ("decode", "pair", "graph"):
        figures.append(Figure(f"  {name} alone", 1e6 * med[name] / total, "µs/span"))
        figures.append(Figure(f"  time share: {name}", 100 * med[name] / summed, "%"))
    figures.append(Figure("  calls paired per 1000 spans", 1000 * len(calls) / total, "calls"))
    return figures, rss_mb


@benchmark("analyzer_throughput")
def analyzer_throughput(quick: bool) -> list[Figure]:
    """Figures for decode → pair → graph throughput in-process, and where the time goes."""
    count = 20 if quick else 200
    payloads = build_requests(count)
    rss_input = _rss_mb()
    figures, rss_after = _in_process(payloads, runs=3 if quick else 5)
    if rss_after is not None:
        figures.append(
            Figure(
                "RSS after in-process run (graph, pairer, input)",
                rss_after,
                "MiB",
                baseline=rss_input,
                baseline_name="input encoded, nothing run",
            )
        )
    return figures


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    from benchmarks import render_table

    print(render_table(analyzer_throughput(args.quick)))


if __name__ == "__main__":
    _main()
