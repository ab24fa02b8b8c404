"""SDK cost outside the request path: outbound ``requests`` calls, and exit with the collector gone.

*Outbound*: a trivial HTTP server (its own process, loopback, keep-alive) is called through a
``requests.Session`` by three client processes: bare; the stock contrib ``RequestsInstrumentor``
with the SDK (``TracerProvider`` + ``BatchSpanProcessor`` + ``MeterProvider`` exporting OTLP/HTTP,
as its documentation shows); and ``watchman_otel.init()``. Both instrumented clients export to the
same discarding OTLP/HTTP sink. Rounds of sequential calls are interleaved (order shuffled each
round); a variant's added latency is the median over rounds of (its round median − bare's round
median), as in ``sdk_asgi``, and likewise its added CPU per call (the whole process's, exporter
threads included). The exporters send a batch every few rounds, so the median of rounds leaves
their encoding and sending out: the mean over all rounds of the same differences, what the host
pays per call on average, is shown beside it.

*Exit*: a process that made spans, metrics and outbound calls against a black-holed collector (a
TCP listener that accepts and never answers) is asked to end; the figure is the wall time from
that request to the process's end, with the stock configuration's exit in the same run as the
baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import threading
import time
from typing import IO, Any

from benchmarks import ROOT, Figure, benchmark, child_env, free_port
from benchmarks.sdk_asgi import BlackHole, _Sink, _wait_ready

__all__ = ["CLIENTS", "measure_exit", "measure_outbound"]

CLIENTS = ("bare", "stock", "watchman")
_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
    b"Connection: keep-alive\r\n\r\nhello"
)


class _TargetProtocol(asyncio.Protocol):
    """Answers every request on a keep-alive connection with a fixed 200 (no body expected)."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            _head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            self.transport.write(_RESPONSE)


def serve_target(port: int) -> None:
    """The trivial HTTP server the clients call (subprocess entry point)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_TargetProtocol, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _configure(variant: str, sink: str) -> None:
    if variant == "stock":
        from opentelemetry.instrumentation.requests import RequestsInstrumentor

        from benchmarks.sdk_asgi import stock_sdk

        stock_sdk(sink)
        RequestsInstrumentor().instrument()  # as documented: defaults, global providers
    elif variant == "watchman":
        import watchman_otel

        watchman_otel.init(service_name="bench-watchman", endpoint=sink, protocol="http/protobuf")


def run_client(variant: str, sink: str, target: str) -> None:
    """A client process: on each ``N`` line make N calls; print their median and CPU each, µs.

    The CPU time is the whole process's (exporter threads included) over the N calls.
    """
    import requests

    _configure(variant, sink)
    session = requests.Session()
    url = f"{target}/items/1"
    print("READY", flush=True)
    for line in sys.stdin:
        count = int(line)
        samples = []
        cpu_started = time.process_time()
        for _ in range(count):
            started = time.perf_counter()
            response = session.get(url)
            samples.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"benchmark call failed: {response.status_code}")
        cpu = (time.process_time() - cpu_started) / count
        print(statistics.median(samples) * 1e6, cpu * 1e6, flush=True)


def run_exit_probe(variant: str, sink: str, target: str) -> None:
    """A process that works against ``sink``, says READY, and ends when stdin says so."""
    import requests

    _configure(variant, sink)
    from opentelemetry import trace

    tracer = trace.get_tracer("bench")
    with requests.Session() as session:
        for _ in range(200):
            with tracer.start_as_current_span("work"):
                session.get(f"{target}/items/2")
    time.sleep(0.5)  # the exporters have started and are now stuck on the collector
    print("READY", flush=True)
    sys.stdin.readline()


def _spawn(*args: str, pipes: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.sdk_outbound", *args],
        cwd=ROOT,
        env=child_env("OTEL_", "WATCHMAN_"),  # each variant configures itself
        stdin=subprocess.PIPE if pipes else None,
        stdout=subprocess.PIPE if pipes else None,
        text=True,
    )


def _stop(processes: list[subprocess.Popen[str]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ask(client: subprocess.Popen[str], line: str) -> str:
    stdin: IO[str] | None = client.stdin
    stdout: IO[str] | None = client.stdout
    assert stdin is not None
    assert stdout is not None
    stdin.write(line + "\n")
    stdin.flush()
    answer = stdout.readline()
    if not answer:
        raise RuntimeError("benchmark client ended early")
    return answer


def measure_outbound(*, rounds: int, per_round: int) -> dict[str, float]:
    """Added latency and CPU per outbound call (µs, medians of round differences; CPU also the
    mean of all rounds) of stock and ours."""
    sink = _Sink()
    target_port = free_port()
    target = _spawn("--target", str(target_port))
    clients: dict[str, subprocess.Popen[str]] = {}
    try:
        _wait_ready(target_port, target)  # type: ignore[arg-type]
        target_url = f"http://127.0.0.1:{target_port}"
        for variant in CLIENTS:
            clients[variant] = _spawn(
                *("--client", variant, "--sink", sink.url, "--target-url", target_url),
                pipes=True,
            )
        for client in clients.values():
            assert client.stdout is not None
            if client.stdout.readline().strip() != "READY":
                raise RuntimeError("benchmark client did not start")
            _ask(client, "300")  # warm-up
        medians: dict[str, list[float]] = {v: [] for v in CLIENTS}
        cpu: dict[str, list[float]] = {v: [] for v in CLIENTS}
        order = list(CLIENTS)
        rng = random.Random(7)
        for _ in range(rounds):
            rng.shuffle(order)
            for variant in order:
                median, cpu_per_call = _ask(clients[variant], str(per_round)).split()
                medians[variant].append(float(median))
                cpu[variant].append(float(cpu_per_call))
    finally:
        _stop([*clients.values(), target])
        sink.close()

    def added(series: dict[str, list[float]], variant: str) -> float:
        pairs = zip(series[variant], series["bare"], strict=True)
        return statistics.median(m - b for m, b in pairs)

    def mean_added(series: dict[str, list[float]], variant: str) -> float:
        return statistics.fmean(series[variant]) - statistics.fmean(series["bare"])

    return {
        "bare_us": statistics.median(medians["bare"]),
        "stock_added_us": added(medians, "stock"),
        "watchman_added_us": added(medians, "watchman"),
        "bare_cpu_us": statistics.median(cpu["bare"]),
        "stock_cpu_added_us": added(cpu, "stock"),
        "watchman_cpu_added_us": added(cpu, "watchman"),
        "bare_cpu_mean_us": statistics.fmean(cpu["bare"]),
        "stock_cpu_mean_added_us": mean_added(cpu, "stock"),
        "watchman_cpu_mean_added_us": mean_added(cpu, "watchman"),
    }


def _exit_seconds(process: subprocess.Popen[str]) -> float:
    assert process.stdout is not None
    assert process.stdin is not None
    if process.stdout.readline().strip() != "READY":
        raise RuntimeError("benchmark exit probe did not start")
    started = time.perf_counter()
    process.stdin.write("exit\n")
    process.stdin.flush()
    process.wait(60)
    return time.perf_counter() - started


def measure_exit(*, stock_runs: int, watchman_runs: int) -> dict[str, float]:
    """Median exit time (s) of stock and ours with a black-holed collector."""
    hole = BlackHole()
    target_port = free_port()
    target = _spawn("--target", str(target_port))
    try:
        _wait_ready(target_port, target)  # type: ignore[arg-type]
        target_url = f"http://127.0.0.1:{target_port}"
        args = ("--sink", hole.url, "--target-url", target_url)
        # The stock exits wait on socket timeouts, not the CPU: run them side by side to save
        # wall time, each timed on its own thread.
        stock = [_spawn("--exit-probe", "stock", *args, pipes=True) for _ in range(stock_runs)]
        stock_times: list[float] = []
        threads = [
            threading.Thread(target=lambda p=p: stock_times.append(_exit_seconds(p))) for p in stock
        ]
        for thread in threads:
            thread.start()
        ours = []
        for _ in range(watchman_runs):
            probe = _spawn("--exit-probe", "watchman", *args, pipes=True)
            ours.append(_exit_seconds(probe))
        for thread in threads:
            thread.join(90)
    finally:
        _stop([target])
        hole.close()
    return {
        "stock_exit_s": statistics.median(stock_times) if stock_times else float("nan"),
        "watchman_exit_s": statistics.median(ours),
        "watchman_exit_max_s": max(ours),
    }


def _against_stock(
    calls: dict[str, float], key: str, names: tuple[str, str, str], bare: tuple[str, str]
) -> list[Figure]:
    """Stock's `key` figure against bare's, and ours against stock's (the goal: at most half).

    `names`: the stock figure's, ours, and stock's as our baseline; `bare`: bare's key and name.
    """
    stock = calls[f"stock_{key}"]
    return [
        Figure(names[0], stock, "µs", baseline=calls[bare[0]], baseline_name=bare[1]),
        Figure(
            names[1],
            calls[f"watchman_{key}"],
            "µs",
            baseline=stock,
            baseline_name=names[2],
            goal="<= 0.50",
        ),
    ]


@benchmark("sdk_outbound")
def sdk_outbound(quick: bool) -> list[Figure]:
    """Figures for the outbound ``requests`` instrumentation and the exit with no collector."""
    if quick:
        calls = measure_outbound(rounds=6, per_round=50)
        # The stock exit alone takes 10-20 s: the quick (smoke) run leaves that baseline out.
        exits = measure_exit(stock_runs=0, watchman_runs=2)
    else:
        # Short rounds: the per-round differences then pair samples taken close in time, which
        # is what keeps other load on a shared machine out of them.
        calls = measure_outbound(rounds=120, per_round=50)
        exits = measure_exit(stock_runs=3, watchman_runs=5)
    return [
        Figure("requests call, bare (median)", calls["bare_us"], "µs"),
        *_against_stock(
            calls,
            "added_us",
            (
                "requests added, stock RequestsInstrumentor",
                "requests added, watchman_otel.init()",
                "stock added",
            ),
            ("bare_us", "bare call"),
        ),
        Figure("requests call CPU, bare (median)", calls["bare_cpu_us"], "µs"),
        *_against_stock(
            calls,
            "cpu_added_us",
            (
                "requests CPU added, stock RequestsInstrumentor",
                "requests CPU added, watchman_otel.init()",
                "stock CPU added",
            ),
            ("bare_cpu_us", "bare call CPU"),
        ),
        # Exports included: the mean of all rounds (the median leaves the rounds with one out).
        *_against_stock(
            calls,
            "cpu_mean_added_us",
            (
                "requests CPU added, stock, mean of all rounds",
                "requests CPU added, watchman_otel.init(), mean of all rounds",
                "stock CPU added, mean",
            ),
            ("bare_cpu_mean_us", "bare call CPU, mean"),
        ),
        Figure(
            "exit, collector black-holed, watchman (median)",
            exits["watchman_exit_s"],
            "s",
            baseline=None if quick else exits["stock_exit_s"],
            baseline_name="stock SDK exit",
            goal="value <= 2.0 s",
        ),
        Figure(
            "exit, collector black-holed, watchman (slowest)",
            exits["watchman_exit_max_s"],
            "s",
            goal="value <= 2.0 s",
        ),
    ]


def _main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", type=int)
    parser.add_argument("--client", choices=CLIENTS)
    parser.add_argument("--exit-probe", choices=CLIENTS)
    parser.add_argument("--sink", default="")
    parser.add_argument("--target-url", default="")
    args = parser.parse_args()
    if args.target is not None:
        serve_target(args.target)
    elif args.client is not None:
        run_client(args.client, args.sink, args.target_url)
    elif args.exit_probe is not None:
        run_exit_probe(args.exit_probe, args.sink, args.target_url)


if __name__ == "__main__":
    _main()
