"""Added latency per request of a trivial ASGI app: bare vs stock contrib middleware vs ours.

Three uvicorn servers (subprocesses, loopback) serve the same one-route Starlette app: bare; wrapped
in the stock ``opentelemetry-instrumentation-asgi`` middleware with the SDK exporting OTLP; and
with ``watchman_otel.init()`` (spans, RED metrics, heartbeats, logs). Both instrumented ones
export to the same OTLP/HTTP sink. One client sends sequential keep-alive requests in interleaved
rounds (variant order shuffled each round); a variant's added latency is the median over rounds
of (its median − bare's median in the same round), so drift of the machine cancels out.

``sdk_collector_down`` runs three ``watchman_otel.init()`` servers the same way, exporting to the
sink, to a black hole (a listener that accepts and never answers) and to a closed port, and
compares their p99 latency: a broken collector must not show in the app's tail.
"""

from __future__ import annotations

import argparse
import http.client
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from benchmarks import ROOT, Figure, benchmark, child_env, free_port

__all__ = ["VARIANTS", "BlackHole", "measure", "measure_collector_down", "serve", "stock_sdk"]

VARIANTS = ("bare", "stock", "watchman")


def _app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    return Starlette(routes=[Route("/items/{item_id}", hello)])


def stock_sdk(sink: str) -> None:
    """The stock OpenTelemetry SDK set up as its documentation shows, exporting OTLP/HTTP."""
    from opentelemetry import metrics, trace
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": "bench-stock"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{sink}/v1/traces"))
    )
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{sink}/v1/metrics"))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))


def _stock(app: Any, sink: str) -> Any:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    stock_sdk(sink)
    return OpenTelemetryMiddleware(app)  # as documented: defaults, global providers


def serve(variant: str, port: int, sink: str) -> None:
    """Run one variant's server until terminated (the benchmark's subprocess entry point)."""
    import uvicorn

    app = _app()
    if variant == "stock":
        app = _stock(app, sink)
    elif variant == "watchman":
        import watchman_otel

        watchman_otel.init(service_name="bench-watchman", endpoint=sink, protocol="http/protobuf")
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


class _Sink:
    """An OTLP/HTTP endpoint that accepts and discards everything (200, empty body)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class BlackHole:
    """A TCP listener that accepts connections and never answers (a hung collector)."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(256)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self._held.append(connection)

    def close(self) -> None:
        self.listener.close()
        for connection in self._held:
            connection.close()


def _wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"benchmark server on port {port} exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"benchmark server on port {port} did not start")


def _timed_requests(connection: http.client.HTTPConnection, count: int) -> list[float]:
    samples = []
    for i in range(count):
        started = time.perf_counter()
        connection.request("GET", f"/items/{i % 7}")
        response = connection.getresponse()
        response.read()
        samples.append(time.perf_counter() - started)
        if response.status != 200:
            raise RuntimeError(f"benchmark request failed: {response.status}")
    return samples


def _run_rounds(
    servers: dict[str, tuple[str, str]], *, rounds: int, per_round: int
) -> dict[str, list[list[float]]]:
    """Start one server per label (serve variant, sink URL); return each label's rounds (s)."""
    env = child_env("WATCHMAN_RAISE_INTERNAL_ERRORS")  # measured as a user runs it
    ports = {label: free_port() for label in servers}
    processes = {
        label: subprocess.Popen(
            [
                *(sys.executable, "-m", "benchmarks.sdk_asgi", "--serve", variant),
                *("--port", str(ports[label]), "--sink", sink),
            ],
            cwd=ROOT,
            env=env,
        )
        for label, (variant, sink) in servers.items()
    }
    samples: dict[str, list[list[float]]] = {label: [] for label in servers}
    try:
        for label, process in processes.items():
            _wait_ready(ports[label], process)
        connections = {
            label: http.client.HTTPConnection("127.0.0.1", ports[label]) for label in servers
        }
        # Warm-up: imports, the first stack build, caches.
        for connection in connections.values():
            _timed_requests(connection, 300)
        order = list(servers)
        rng = random.Random(7)
        for _ in range(rounds):
            rng.shuffle(order)
            for label in order:
                samples[label].append(_timed_requests(connections[label], per_round))
        for connection in connections.values():
            connection.close()
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
    return samples


def measure(*, rounds: int, per_round: int) -> dict[str, Any]:
    """Start the three servers, run the interleaved rounds, return medians in microseconds."""
    sink = _Sink()
    try:
        samples = _run_rounds(
            {variant: (variant, sink.url) for variant in VARIANTS},
            rounds=rounds,
            per_round=per_round,
        )
    finally:
        sink.close()
    per_round_medians = {
        variant: [statistics.median(r) * 1e6 for r in rounds_]
        for variant, rounds_ in samples.items()
    }
    bare = per_round_medians["bare"]
    added = {
        variant: statistics.median(
            m - b for m, b in zip(per_round_medians[variant], bare, strict=True)
        )
        for variant in ("stock", "watchman")
    }
    return {
        "bare_us": statistics.median(bare),
        "stock_added_us": added["stock"],
        "watchman_added_us": added["watchman"],
        "requests": rounds * per_round * len(VARIANTS),
    }


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def measure_collector_down(*, rounds: int, per_round: int) -> dict[str, float]:
    """The instrumented app's latency with its collector up, black-holed and refusing (µs).

    Three ``watchman_otel.init()`` servers, interleaved as in `measure`: one exporting to the
    discarding sink, one to a listener that accepts and never answers, one to a closed port.
    Each p99 is over all of the label's requests; the medians are of its round medians.
    """
    sink = _Sink()
    hole = BlackHole()
    refused = f"http://127.0.0.1:{free_port()}"
    try:
        samples = _run_rounds(
            {
                "up": ("watchman", sink.url),
                "blackhole": ("watchman", hole.url),
                "refuse": ("watchman", refused),
            },
            rounds=rounds,
            per_round=per_round,
        )
    finally:
        sink.close()
        hole.close()
    result: dict[str, float] = {}
    for label, rounds_ in samples.items():
        pooled = [value * 1e6 for round_ in rounds_ for value in round_]
        result[f"{label}_p99_us"] = _p99(pooled)
        result[f"{label}_median_us"] = statistics.median(
            statistics.median(r) * 1e6 for r in rounds_
        )
    return result


@benchmark("sdk_asgi")
def sdk_asgi(quick: bool) -> list[Figure]:
    """Figures for the ASGI middleware's added latency."""
    result = measure(rounds=6, per_round=50) if quick else measure(rounds=40, per_round=150)
    return [
        Figure("asgi request, bare app (median)", result["bare_us"], "µs"),
        Figure(
            "asgi added, stock contrib middleware",
            result["stock_added_us"],
            "µs",
            baseline=result["bare_us"],
            baseline_name="bare request",
        ),
        Figure(
            "asgi added, watchman_otel.init()",
            result["watchman_added_us"],
            "µs",
            baseline=result["stock_added_us"],
            baseline_name="stock added",
            goal="<= 0.50",
        ),
    ]


@benchmark("sdk_collector_down")
def sdk_collector_down(quick: bool) -> list[Figure]:
    """Figures for the app's tail latency while its collector is black-holed or refusing."""
    if quick:
        result = measure_collector_down(rounds=6, per_round=100)
    else:
        result = measure_collector_down(rounds=30, per_round=200)
    return [
        Figure("asgi p99, watchman, collector up", result["up_p99_us"], "µs"),
        Figure(
            "asgi p99, watchman, collector black-holed",
            result["blackhole_p99_us"],
            "µs",
            baseline=result["up_p99_us"],
            baseline_name="collector up p99",
            goal="<= 1.05",
        ),
        Figure(
            "asgi p99, watchman, collector refusing",
            result["refuse_p99_us"],
            "µs",
            baseline=result["up_p99_us"],
            baseline_name="collector up p99",
            goal="<= 1.05",
        ),
        Figure(
            "asgi median, watchman, collector black-holed",
            result["blackhole_median_us"],
            "µs",
            baseline=result["up_median_us"],
            baseline_name="collector up median",
        ),
    ]


def _main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", choices=VARIANTS, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sink", required=True)
    args = parser.parse_args()
    serve(args.serve, args.port, args.sink)


if __name__ == "__main__":
    _main()
