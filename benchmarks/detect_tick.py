"""Detection tick: detect → cascade → alert signals → alert evaluator on a 2,000-service graph.

The graph is synthetic and healthy: 2,000 services in layers (a few front ends called by `user`,
each service calling three services of the next layer and some a database), two instances per
service with heartbeats, and 10 minutes of 10 s buckets of calls on every edge (3 minutes with
`--quick`). Each edge has its own mean calls per bucket, log-normal with a median of two (the
busiest one edge in a hundred over ten times that), and each bucket a Poisson count of it: busy
windows are judged for errors and latency and their buckets learned with a quantile, idle ones are
not, as in a fleet. One tick is `Diagnostician.__call__(now)`, what the analyzer runs every
`tick_interval`; between ticks one more bucket of calls is added (not timed), as live traffic
would. The figure is the median tick in CPU time (`time.process_time`: the machine is shared and
wall time would count other processes' work), after a few warm-up ticks that fill detection's
baselines, under the garbage collector's thresholds `watchman serve` sets (`serve.GC_THRESHOLD`).
Every other tick the window moves on by a bucket, and every series learns the bucket that left
it at the end of the tick before (detection learns ahead when the next tick is expected to move
the window): the medians of those ticks and of the others are shown apart, their sum (the work
of one bucket), and the slowest tick beside them.

Baseline in the same run: one pass over all nodes computing `served.window(now, 30 s)` only, the
least any tick has to read. Target (from the issue): a tick of at most 100 ms, shown against
the median of all ticks and against the median of those that move the window.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import math
import random
import statistics
import time
from collections.abc import Callable

from benchmarks import Figure, benchmark

__all__ = ["build_graph", "detect_tick"]

SERVICES = 2000
CALLEES_PER_SERVICE = 3
_NS = 1_000_000_000
_T0 = 1_767_225_600 * _NS
_BUCKET_S = 10
_TICK_S = 5.0
_SETTLE_NS = 10 * _NS  # detection judges the window ending `settle_s` (10 s) before now
_MAX_MEAN = 60.0  # calls per bucket of the busiest edges


def _edges(services: int, seed: int) -> list[tuple[str, str, bool]]:
    """(client, server, is_database) for a layered topology of `services` services."""
    rng = random.Random(seed)
    names = [f"svc-{i:04d}" for i in range(services)]
    layers = [names[:20]]
    rest = names[20:]
    while rest:
        size = min(len(rest), max(len(layers[-1]) * 3, 100))
        layers.append(rest[:size])
        rest = rest[size:]
    out = [("user", name, False) for name in layers[0]]
    for upper, lower in itertools.pairwise(layers):
        for name in upper:
            for callee in rng.sample(lower, min(CALLEES_PER_SERVICE, len(lower))):
                out.append((name, callee, False))
    for name in names[::10]:
        out.append((name, f"postgresql@db-{rng.randrange(50)}", True))
    # Every service of the last layers is called by someone: give the orphans a caller.
    called = {server for _, server, _ in out}
    for name in names:
        if name not in called:
            out.append((rng.choice(layers[0]), name, False))
    return out


def _edge_means(edges: list[tuple[str, str, bool]], rng: random.Random) -> list[float]:
    """Mean calls per bucket of each edge: log-normal with a median of two (0.2 requests/s), one
    edge in a hundred over ten times busier, as in a fleet."""
    return [min(rng.lognormvariate(math.log(2.0), 1.0), _MAX_MEAN) for _ in edges]


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's method: the means are small)."""
    floor = math.exp(-mean)
    k, p = 0, rng.random()
    while p > floor:
        k += 1
        p *= rng.random()
    return k


def _bucket_of_calls(
    edges: list[tuple[str, str, bool]],
    means: list[float],
    start_ns: int,
    rng: random.Random,
) -> list[object]:
    from watchman_collector.records import Call, ConnectionType, NodeKind

    calls: list[object] = []
    for (client, server, database), mean in zip(edges, means, strict=True):
        for _ in range(_poisson(rng, mean)):
            latency = rng.uniform(0.005, 0.05)
            calls.append(
                Call(
                    client=client,
                    server=server,
                    connection_type=ConnectionType.DATABASE if database else ConnectionType.DIRECT,
                    time_ns=start_ns + rng.randrange(_BUCKET_S * _NS),
                    client_latency_s=latency + 0.001,
                    server_latency_s=latency,
                    failed=rng.random() < 0.001,
                    trace_id=rng.randbytes(16),
                    client_kind=NodeKind.USER if client == "user" else NodeKind.SERVICE,
                    server_kind=NodeKind.DATABASE if database else NodeKind.SERVICE,
                )
            )
    return calls


def _heartbeats(services: int, time_ns: int) -> list[object]:
    from watchman_collector.records import Heartbeat

    return [
        Heartbeat(
            service=f"svc-{i:04d}",
            instance=f"svc-{i:04d}-{k}",
            time_ns=time_ns,
            uptime_s=3600.0 + (time_ns - _T0) / _NS,
            cpu_utilization=0.2,
        )
        for i in range(services)
        for k in range(2)
    ]


class _Traffic:
    """Feeds the graph bucket by bucket and moves its clock."""

    def __init__(self, graph: object, services: int, seed: int = 1) -> None:
        self.graph = graph
        self.services = services
        self.edges = _edges(services, seed)
        self.rng = random.Random(seed)
        self.means = _edge_means(self.edges, self.rng)
        self.now_ns = _T0

    def advance(self, seconds: float) -> None:
        end = self.now_ns + int(seconds * _NS)
        while self.now_ns < end:
            start = self.now_ns
            calls = _bucket_of_calls(self.edges, self.means, start, self.rng)
            self.graph.add_calls(calls)  # type: ignore[attr-defined]
            self.graph.add_heartbeats(_heartbeats(self.services, start))  # type: ignore[attr-defined]
            self.now_ns = start + _BUCKET_S * _NS


def build_graph(services: int = SERVICES, minutes: float = 10.0) -> tuple[object, _Traffic]:
    """A healthy `ServiceGraph` of `services` services with `minutes` of buckets, and its feeder."""
    from watchman_collector.graph import ServiceGraph

    graph = ServiceGraph(bucket_s=_BUCKET_S, max_nodes=services + 1000)
    traffic = _Traffic(graph, services)
    traffic.advance(minutes * 60)
    return graph, traffic


def _cpu_ms(run: Callable[[], object]) -> float:
    """CPU time of one `run()` in ms: the machine is shared, and wall time counts others' work."""
    gc.collect()
    began = time.process_time()
    run()
    return (time.process_time() - began) * 1000


@benchmark("detect_tick")
def detect_tick(quick: bool) -> list[Figure]:
    """Median detection tick on a 2,000-service graph, against reading every node's window."""
    from watchman_collector.diagnose import Diagnostician

    built = time.perf_counter()
    graph, traffic = build_graph(SERVICES, minutes=3.0 if quick else 10.0)
    build_s = time.perf_counter() - built
    diagnostician = Diagnostician(graph)  # type: ignore[arg-type]
    ticks = 5 if quick else 20
    clock = {"now": traffic.now_ns}

    def step() -> None:
        # Half a bucket per tick (the default tick interval), a new bucket every other tick.
        clock["now"] += int(_TICK_S * _NS)
        if clock["now"] >= traffic.now_ns:
            traffic.advance(_BUCKET_S)

    def tick() -> None:
        diagnostician(clock["now"])

    def windows() -> None:
        now = clock["now"]
        for node in graph.nodes():  # type: ignore[attr-defined]
            node.served.window(now, 30.0)

    from watchman_collector.serve import GC_THRESHOLD

    for _ in range(3):  # warm-up: detection's baselines learn the history once
        step()
        tick()
    # Interleaved, so both see the same load; the windows pass only reads. Under the garbage
    # collector's thresholds `watchman serve` sets, as the tick runs there.
    baseline_samples: list[float] = []
    tick_samples: list[float] = []
    moving: list[float] = []  # ticks at which the window moves on by a bucket
    between: list[float] = []
    old_threshold = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLD)
    bucket_ns = _BUCKET_S * _NS
    try:
        for _ in range(ticks):
            step()
            moved = (clock["now"] - _SETTLE_NS) // bucket_ns != (
                clock["now"] - _SETTLE_NS - int(_TICK_S * _NS)
            ) // bucket_ns
            baseline_samples.append(_cpu_ms(windows))
            tick_samples.append(_cpu_ms(tick))
            (moving if moved else between).append(tick_samples[-1])
    finally:
        gc.set_threshold(*old_threshold)
    baseline_ms = statistics.median(baseline_samples)
    tick_ms = statistics.median(tick_samples)
    # Every other tick the window moves on by a bucket and the baselines learn it: the heavier
    # half, shown apart so that the median does not hide it.
    heavy_ms = max(tick_samples)
    bucket_ms = _median(moving) + _median(between)
    nodes, edges = len(graph.nodes()), len(graph.edges())  # type: ignore[attr-defined]
    return [
        Figure(
            f"graph built: {nodes} nodes, {edges} edges",
            build_s,
            "s",
        ),
        Figure(
            "detect+cascade+alert tick (median)",
            tick_ms,
            "ms",
            baseline=baseline_ms,
            baseline_name="30 s window of every node",
            goal="value <= 100 ms",
        ),
        # The goal holds for each kind of tick: the median of all falls between the two.
        Figure(
            "  of which: window moved on a bucket (median)",
            _median(moving),
            "ms",
            goal="value <= 100 ms",
        ),
        Figure("  of which: window on the same buckets (median)", _median(between), "ms"),
        # What a bucket costs in all, whichever of its two ticks does the work.
        Figure("  both ticks of a bucket (sum of the two medians)", bucket_ms, "ms"),
        Figure("detect+cascade+alert tick (slowest)", heavy_ms, "ms"),
    ]


def _median(samples: list[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    from benchmarks import render_table

    print(render_table(detect_tick(args.quick)))


if __name__ == "__main__":
    _main()
