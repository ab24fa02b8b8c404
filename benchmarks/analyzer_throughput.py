"""Analyzer throughput: decode → pair → graph in spans per second, in-process and over OTLP/gRPC.

Input is realistic traffic: the simulator's `large` topology (34 services, HTTP, database and
messaging spans with the attributes real instrumentations set), re-batched into export requests of
1000 spans each, as a Collector's batch processor would forward them, and encoded once up front.

- in-process: decode (from the request bytes, as the gRPC receiver does) → pair → graph as
  `Analyzer.process` runs them, on one core, against the bare `ExportTraceServiceRequest.FromString`
  parse of the same bytes measured in the same run; then each stage alone, to show where the time
  goes. Medians of 5 runs (3 with `--quick`), a fresh analyzer each run.
- end-to-end: the OTLP/gRPC receiver and the analyzer on one event loop in this process, the
  sender in a subprocess keeping a few requests in flight; against a bare gRPC server that only
  parses, fed by the same sender in the same run. Also the analyzer's CPU seconds (spans per
  CPU-second is "per analyzer core") and RSS.

Rows whose analyzer modules are not there yet are reported with a note instead of a number.
Targets (from the issue): ≥ 200k spans/s in-process, ≥ 100k spans/s end-to-end on one core.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans

from benchmarks import Figure, benchmark

__all__ = ["SPANS_PER_REQUEST", "analyzer_throughput", "build_requests", "send"]

SPANS_PER_REQUEST = 1000
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
_ROOT = Path(__file__).resolve().parents[1]


def _missing(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


# ---- input ------------------------------------------------------------------------------------


def build_requests(count: int, *, seed: int = 1) -> list[bytes]:
    """`count` serialized requests of exactly 1000 spans from a healthy simulated `large` run."""
    from watchman_collector.sim import Noise, Scenario, Simulator, get_topology

    wanted = count * SPANS_PER_REQUEST
    # ~40 spans per entry request in `large`; simulate a little more than needed
    duration = max(10.0, wanted / (40 * 50) * 1.3)
    scenario = Scenario(
        get_topology("large"), seed=seed, duration_s=duration, rate=50, noise=Noise(), drain_s=10
    )
    out: list[bytes] = []
    current = ExportTraceServiceRequest()
    size = 0
    for export in Simulator(scenario).exports():
        if export.signal != "traces":
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
                        out.append(current.SerializeToString())
                        if len(out) == count:
                            return out
                        current, size = ExportTraceServiceRequest(), 0
    raise RuntimeError(f"simulated too few spans: {len(out)} of {count} requests")


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
    gc.collect()
    began = time.perf_counter()
    function()
    return time.perf_counter() - began


def _in_process(payloads: list[bytes], runs: int) -> tuple[list[Figure], float | None]:
    """In-process figures (medians of `runs`), and RSS (MiB) after the pipeline (None: skipped)."""
    parse = ExportTraceServiceRequest.FromString
    total = len(payloads) * SPANS_PER_REQUEST
    parse_s = statistics.median(_timed(lambda: [parse(p) for p in payloads]) for _ in range(runs))
    figures = [
        Figure("bare protobuf parse, 1000-span requests", total / parse_s, "spans/s"),
    ]
    missing = _missing(
        "watchman_collector.decode", "watchman_collector.pair", "watchman_collector.graph"
    )
    if missing:
        print(f"note: in-process decode→pair→graph skipped, missing {', '.join(missing)}")
        return figures, None
    from watchman_collector.decode import decode_trace_bytes
    from watchman_collector.graph import ServiceGraph
    from watchman_collector.pair import SpanPairer

    # What the gRPC receiver and Analyzer.process do per request (decode reads the bytes with
    # its reduced schema), without the intake queue around them; a fresh analyzer each run.
    whole_runs: list[float] = []
    rss_mb = 0.0
    for _ in range(runs):
        pairer, graph = SpanPairer(), ServiceGraph()

        def whole(pairer: SpanPairer = pairer, graph: ServiceGraph = graph) -> None:
            for payload in payloads:
                calls = pairer.add(decode_trace_bytes(payload).spans)
                if calls:
                    graph.add_calls(calls)

        whole_runs.append(_timed(whole))
        rss_mb = max(rss_mb, _rss_mb())  # before the per-stage runs below keep their copies
    whole_s = statistics.median(whole_runs)
    figures.append(
        Figure(
            "in-process decode→pair→graph (from bytes)",
            total / whole_s,
            "spans/s",
            baseline=total / parse_s,
            baseline_name="bare parse",
            goal="value >= 200k spans/s",
        )
    )

    # Where the time goes: each stage alone, on a fresh analyzer, over the same input.
    stage_runs: dict[str, list[float]] = {"decode": [], "pair": [], "graph": []}
    calls: list[Any] = []
    for _ in range(runs):
        fresh_pairer, fresh_graph = SpanPairer(), ServiceGraph()
        batches: list[Any] = []
        calls = []

        def decode_all(b: list[Any] = batches) -> None:
            b.extend(decode_trace_bytes(p) for p in payloads)

        stage_runs["decode"].append(_timed(decode_all))

        def pair_all(b: list[Any] = batches, c: list[Any] = calls, pr: Any = fresh_pairer) -> None:
            for batch in b:
                c.extend(pr.add(batch.spans))

        stage_runs["pair"].append(_timed(pair_all))

        def graph_all(c: list[Any] = calls, g: Any = fresh_graph) -> None:
            g.add_calls(c)

        stage_runs["graph"].append(_timed(graph_all))
    stages = {name: statistics.median(values) for name, values in stage_runs.items()}
    summed = sum(stages.values())
    for name, seconds in stages.items():
        figures.append(Figure(f"  {name} alone", 1e6 * seconds / total, "µs/span", goal=None))
        figures.append(Figure(f"  time share: {name}", 100 * seconds / summed, "%", goal=None))
    figures.append(Figure("  calls paired per 1000 spans", 1000 * len(calls) / total, "calls"))
    return figures, rss_mb


# ---- end-to-end over OTLP/gRPC ----------------------------------------------------------------


def _write_payloads(payloads: Iterable[bytes], path: Path) -> None:
    with path.open("wb") as out:
        for payload in payloads:
            out.write(struct.pack(">I", len(payload)))
            out.write(payload)


def _read_payloads(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        offset += 4
        out.append(data[offset : offset + length])
        offset += length
    return out


def send(port: int, path: Path, inflight: int) -> None:
    """The sender (runs in a subprocess): every payload once, `inflight` at a time, retrying
    UNAVAILABLE (the analyzer's back-pressure) after a short pause."""
    import grpc

    payloads = _read_payloads(path)
    channel = grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 * 2**20)]
    )
    export = channel.unary_unary(EXPORT_METHOD)  # bytes in, bytes out: no re-encoding cost
    pending: list[tuple[Any, bytes]] = []
    queue = list(reversed(payloads))
    retries = 0
    deadline = time.monotonic() + 300
    while (queue or pending) and time.monotonic() < deadline:
        while queue and len(pending) < inflight:
            payload = queue.pop()
            pending.append((export.future(payload, timeout=60), payload))
        future, payload = pending.pop(0)
        try:
            future.result()
        except grpc.RpcError as exc:
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
                raise
            retries += 1
            time.sleep(0.002)
            queue.append(payload)
    channel.close()
    print(f"retries={retries}")


def _spawn_sender(port: int, path: Path, inflight: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(_ROOT)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.analyzer_throughput",
            "--send",
            str(port),
            str(path),
            "--inflight",
            str(inflight),
        ],
        cwd=_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


async def _bare_server(total_spans: int, path: Path, inflight: int) -> float:
    """Spans/s through a gRPC server that only parses: the transport's own ceiling."""
    import grpc

    received = 0
    first: list[float] = []
    done = asyncio.Event()

    async def handle(
        request: ExportTraceServiceRequest, context: Any
    ) -> ExportTraceServiceResponse:
        nonlocal received
        if not first:
            first.append(time.perf_counter())
        received += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        if received >= total_spans:
            done.set()
        return ExportTraceServiceResponse()

    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 * 2**20)])
    handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        {
            "Export": grpc.unary_unary_rpc_method_handler(
                handle,
                request_deserializer=ExportTraceServiceRequest.FromString,
                response_serializer=ExportTraceServiceResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    sender = _spawn_sender(port, path, inflight)
    try:
        await asyncio.wait_for(done.wait(), timeout=300)
        elapsed = time.perf_counter() - first[0]
    finally:
        await asyncio.to_thread(sender.wait, 60)
        await server.stop(1)
    return total_spans / elapsed


async def _analyzer_server(total_spans: int, path: Path, inflight: int) -> dict[str, float]:
    from watchman_collector.clock import EventClock
    from watchman_collector.intake import Limits
    from watchman_collector.pipeline import Analyzer
    from watchman_collector.receive_grpc import start_grpc_server

    analyzer = Analyzer(clock=EventClock())
    first: list[float] = []
    offer = analyzer.offer

    def sink(batch: Any) -> bool:
        if not first:
            first.append(time.perf_counter())
        return offer(batch)

    server, port = await start_grpc_server("127.0.0.1:0", sink, analyzer.receiver_stats, Limits())
    consumer = asyncio.create_task(analyzer.run())
    cpu0 = _cpu_s()
    sender = _spawn_sender(port, path, inflight)
    try:
        deadline = time.monotonic() + 300
        while analyzer.counters.spans < total_spans and time.monotonic() < deadline:
            if sender.poll() not in (None, 0):
                raise RuntimeError(f"sender failed with exit code {sender.returncode}")
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - first[0]
        cpu = _cpu_s() - cpu0
        stdout = (await asyncio.to_thread(sender.communicate, None, 60))[0]
    finally:
        consumer.cancel()
        await server.stop(1)
        if sender.poll() is None:
            sender.kill()
    retries = float(stdout.strip().rpartition("=")[2] or 0) if stdout else 0.0
    return {
        "spans_per_s": analyzer.counters.spans / elapsed,
        "spans_per_cpu_s": analyzer.counters.spans / cpu if cpu > 0 else 0.0,
        "retries": retries,
    }


def _end_to_end(payloads: list[bytes], inflight: int) -> list[Figure]:
    total = len(payloads) * SPANS_PER_REQUEST
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "requests.bin"
        _write_payloads(payloads, path)
        bare = asyncio.run(_bare_server(total, path, inflight))
        figures = [Figure("OTLP/gRPC, bare server that only parses", bare, "spans/s")]
        missing = _missing(
            "watchman_collector.receive_grpc",
            "watchman_collector.decode",
            "watchman_collector.pair",
            "watchman_collector.graph",
            "watchman_collector.intake",
        )
        if missing:
            print(f"note: end-to-end OTLP/gRPC row skipped, missing {', '.join(missing)}")
            return figures
        result = asyncio.run(_analyzer_server(total, path, inflight))
    figures += [
        Figure(
            "OTLP/gRPC → analyzer, sender in a subprocess",
            result["spans_per_s"],
            "spans/s",
            baseline=bare,
            baseline_name="bare gRPC server",
            goal="value >= 100k spans/s",
        ),
        Figure("  analyzer spans per CPU-second", result["spans_per_cpu_s"], "spans/s"),
        Figure("  sender retries after UNAVAILABLE", result["retries"], "requests"),
    ]
    return figures


@benchmark("analyzer_throughput")
def analyzer_throughput(quick: bool) -> list[Figure]:
    """Figures for decode → pair → graph throughput, in-process and over OTLP/gRPC."""
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
    figures += _end_to_end(payloads, inflight=4)
    return figures


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--send", nargs=2, metavar=("PORT", "FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--inflight", type=int, default=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.send:
        send(int(args.send[0]), Path(args.send[1]), args.inflight)
        return
    from benchmarks import render_table

    print(render_table(analyzer_throughput(args.quick)))


if __name__ == "__main__":
    _main()
