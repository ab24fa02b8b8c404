"""`watchman serve` under load: the highest sustained OTLP rate, and the cost of 10k spans/s.

A real `watchman serve` process (a temporary config, loopback ports) is pinned to one core, so "one
analyzer core" is literal; paced senders in other processes (`benchmarks._load_sender`) are pinned
to the other cores. Requests are the realistic 1000-span requests of `analyzer_throughput`, each
sent with fresh trace ids and its times moved to when it is due, so every span is new to the
analyzer and event time follows wall time.

- Figure 2, sustained rate: a ladder of steps (doubling from a start rate until a step fails, then
  bisecting), each step sending whole passes over the templates at an exact rate. A step is
  sustained when every response is OK (no UNAVAILABLE / 503, no partial success), the analyzer's own
  `/metrics` count of accepted spans matches what was sent with the intake queue drained within 10 %
  of the step's length, and the graph's `traces_service_graph_request_total` grew by the calls the
  same spans make in-process. Over OTLP/gRPC and OTLP/HTTP (protobuf); baseline in the same run: a
  server that only parses (`benchmarks._bare_server`, same shape: `grpc.aio` and uvicorn on one
  loop), same senders, same ladder. Also the server's CPU seconds per span at that rate.
- Figure 3, steady 10k spans/s over OTLP/gRPC into `watchman serve` with its default settings:
  CPU as % of one core (psutil CPU-time deltas of the process) and RSS at the end and at peak,
  against the same rate into the bare server.

For the ladder the analyzer runs with a short pairing TTL and tick (1 s, 0.25 s) so the halves
left at the end of a step become calls within the step's accounting; figure 3 uses the defaults.
The machine may be shared: a full run repeats a failed step once when the server spent more than
5 % of it runnable but waiting for its core (`/proc/PID/task/*/schedstat`), and each step's line
says how long that was.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import ROOT, Figure, benchmark, child_env, free_port

__all__ = ["LoadStep", "serve_load"]

_SPANS = 1000  # per request
_MIB = 2**20


# ---- processes --------------------------------------------------------------------------------


def _cores() -> tuple[set[int], set[int]]:
    """The server's core and the senders' cores (the same set on a one-core machine)."""
    if not hasattr(os, "sched_getaffinity"):  # not Linux: no pinning
        return set(), set()
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return set(available), set(available)
    return {available[0]}, set(available[1:])


def _spawn(args: list[str], cores: set[int], **kwargs: Any) -> subprocess.Popen[str]:
    def pin() -> None:
        os.sched_setaffinity(0, cores)  # before exec: every thread the child starts inherits it

    return subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=child_env("WATCHMAN_"),  # its settings come from the temporary config only
        text=True,
        preexec_fn=pin if cores else None,  # noqa: PLW1509  # no other thread runs while spawning
        **kwargs,
    )


def _get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # loopback only
        return str(response.read().decode())


@dataclass(slots=True)
class _Counts:
    """What a server says it has taken: spans accepted, queued requests, graph calls."""

    spans: int = 0
    queued: int = 0
    calls: int = 0
    refused_spans: int = 0
    evicted: int = 0  # span halves pushed out of a full pairing store
    pending: int = 0  # span halves waiting for their other half


class _Target:
    """A server under test: its ports, its process, and how to read its counts."""

    name: str
    grpc_port: int
    http_port: int
    process: subprocess.Popen[str]
    counts_calls = False

    def counts(self) -> _Counts:
        raise NotImplementedError

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def port(self, proto: str) -> int:
        return self.grpc_port if proto == "grpc" else self.http_port


class _Analyzer(_Target):
    """`watchman serve` with a temporary config, pinned to the server core."""

    counts_calls = True

    def __init__(self, cores: set[int], tmp: Path, settings: Mapping[str, object]) -> None:
        self.name = "watchman serve"
        self.grpc_port, self.http_port, api_port = free_port(), free_port(), free_port()
        self.api = f"127.0.0.1:{api_port}"
        config = {
            "otlp_grpc": f"127.0.0.1:{self.grpc_port}",
            "otlp_http": f"127.0.0.1:{self.http_port}",
            "api": self.api,
            "log_level": "warning",
            **settings,
        }
        path = tmp / f"watchman-{api_port}.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        self.process = _spawn(
            ["-m", "watchman_collector", "serve", "--config", str(path)],
            cores,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"watchman serve exited with {self.process.returncode}")
            with contextlib.suppress(OSError):
                if _get(f"http://{self.api}/healthz", 1.0):
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("watchman serve did not become ready within 30 s")
            time.sleep(0.05)

    def counts(self) -> _Counts:
        out = _Counts()
        for line in _get(f"http://{self.api}/metrics").splitlines():
            if line.startswith("watchman_receiver_spans_total{"):
                value = int(float(line.rpartition(" ")[2]))
                if 'outcome="accepted"' in line:
                    out.spans += value
                elif 'outcome="refused"' in line:
                    out.refused_spans += value
            elif line.startswith("watchman_intake_queue_depth "):
                out.queued = int(float(line.rpartition(" ")[2]))
            elif line.startswith("traces_service_graph_request_total{"):
                out.calls += int(float(line.rpartition(" ")[2]))
            elif line.startswith("watchman_pair_pending_spans "):
                out.pending = int(float(line.rpartition(" ")[2]))
            elif line.startswith("watchman_pair_evicted_total "):
                out.evicted = int(float(line.rpartition(" ")[2]))
        return out


class _Bare(_Target):
    """`benchmarks._bare_server`: parses and counts, pinned to the server core."""

    def __init__(self, cores: set[int]) -> None:
        self.name = "bare parsing server"
        self.grpc_port, self.http_port = free_port(), free_port()
        self.process = _spawn(
            ["-m", "benchmarks._bare_server", str(self.grpc_port), str(self.http_port)],
            cores,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            self.stop()
            raise RuntimeError("the bare server did not start")

    def counts(self) -> _Counts:
        data = json.loads(_get(f"http://127.0.0.1:{self.http_port}/count"))
        return _Counts(spans=int(data["spans"]))


class _Senders:
    """Sender processes on the sender cores, driven one step at a time."""

    def __init__(self, templates: Path, cores: set[int], count: int) -> None:
        self.processes = [
            _spawn(
                ["-m", "benchmarks._load_sender", str(templates)],
                cores,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            for _ in range(count)
        ]
        for process in self.processes:
            assert process.stdout is not None
            if "ready" not in json.loads(process.stdout.readline() or "{}"):
                self.close()
                raise RuntimeError("a sender did not start")

    def step(self, proto: str, port: int, rate_rps: float, first: int, count: int) -> list[Any]:
        # Time to build the variants before the first one is due (≈ 0.5 ms each).
        start = time.time() + 0.15 + 0.001 * count / len(self.processes)
        for index, process in enumerate(self.processes):
            command = {
                "proto": proto,
                "port": port,
                "rate": rate_rps,
                "start": start,
                "first_seq": first,
                "count": count,
                "index": index,
                "senders": len(self.processes),
            }
            assert process.stdin is not None
            process.stdin.write(json.dumps(command) + "\n")
            process.stdin.flush()
        results = []
        for process in self.processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line:
                raise RuntimeError("a sender exited")
            results.append(json.loads(line))
        return [start, results]

    def close(self) -> None:
        for process in self.processes:
            with contextlib.suppress(OSError):
                assert process.stdin is not None
                process.stdin.close()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
            if process.stdout is not None:
                process.stdout.close()


# ---- steps and ladders ------------------------------------------------------------------------


@dataclass(slots=True)
class LoadStep:
    """One step of a ladder: what was sent at which rate, and what the server made of it."""

    target: str
    proto: str
    rate: float  # spans/s asked for
    spans: int = 0
    ok: bool = False
    why: str = ""
    drain_s: float = 0.0
    cpu_s: float = 0.0
    calls: int = 0
    calls_expected: int = 0
    waited_s: float = 0.0  # the server runnable but waiting for its core (other processes)
    details: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        verdict = "ok" if self.ok else f"FAILED ({self.why})"
        calls = f", calls {self.calls}/{self.calls_expected}" if self.calls_expected else ""
        return (
            f"  {self.target:20} {self.proto:4} {self.rate / 1e3:7.1f}k spans/s: {verdict}; "
            f"drain {self.drain_s:.2f} s, {1e6 * self.cpu_s / max(self.spans, 1):.1f} CPU-µs/span"
            f"{calls}; response p50 {1e3 * self.details.get('latency_p50_s', 0):.0f} ms, max "
            f"{1e3 * self.details.get('latency_max_s', 0):.0f} ms; senders up to "
            f"{self.details.get('lag_s', 0):.3f} s late; server waited {self.waited_s:.2f} s "
            "for its core"
        )


def _cpu_s(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _waited_s(pid: int) -> float:
    """Seconds the process's threads spent runnable but waiting for a CPU (Linux schedstat).

    On a shared machine this is the time other processes took from the server's core: a step
    that failed while the server waited is repeated rather than taken as its limit.
    """
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(task.read_text().split()[1])
    return total / 1e9


class _Ladder:
    """Runs steps against one target, passes over the templates numbered across the whole run."""

    def __init__(
        self,
        senders: _Senders,
        templates: int,
        calls_per_pass: int,
        step_s: float,
        retries: int = 1,
    ) -> None:
        self.senders = senders
        self.templates = templates
        self.calls_per_pass = calls_per_pass
        self.step_s = step_s
        self.retries = retries
        self.next_seq = 0

    def step(self, target: _Target, proto: str, rate: float) -> LoadStep:
        result = LoadStep(target.name, proto, rate)
        passes = max(1, round(rate * self.step_s / _SPANS / self.templates))
        count = passes * self.templates
        rate_rps = rate / _SPANS
        before = target.counts()
        cpu0 = _cpu_s(target.process.pid)
        waited0 = _waited_s(target.process.pid)
        start, replies = self.senders.step(
            proto, target.port(proto), rate_rps, self.next_seq, count
        )
        self.next_seq += count
        due_end = start + count / rate_rps
        spans = sum(r["spans"] for r in replies)
        result.spans = spans
        # Drained: every span sent is counted as accepted and nothing waits in the intake queue.
        deadline = time.time() + max(5.0, self.step_s)
        now = before
        while time.time() < deadline:
            now = target.counts()
            if now.spans - before.spans >= spans and now.queued == 0:
                break
            if now.refused_spans > before.refused_spans:
                break
            time.sleep(0.02)
        drained = max(time.time(), *(r["last_response"] for r in replies))
        result.drain_s = drained - due_end
        result.cpu_s = _cpu_s(target.process.pid) - cpu0
        result.waited_s = _waited_s(target.process.pid) - waited0
        refused = sum(r["refused"] for r in replies)
        errors = sum(r["errors"] for r in replies)
        rejected = sum(r["rejected_spans"] for r in replies)
        lag = max(r["max_lag_s"] for r in replies)
        # The senders' own pace: a late request is fine if they caught up within the step.
        sent_for = max(r["last_send"] for r in replies) - start + 1 / rate_rps
        result.details = {
            "refused": refused,
            "errors": errors,
            "lag_s": lag,
            "sent_s": sent_for,
            "latency_p50_s": max(r["latency_p50_s"] for r in replies),
            "latency_max_s": max(r["latency_max_s"] for r in replies),
        }
        why = []
        if refused:
            why.append(f"{refused} requests refused")
        if errors:
            why.append(f"{errors} errors: {next(r['error'] for r in replies if r['errors'])}")
        if rejected:
            why.append(f"{rejected} spans rejected")
        if now.spans - before.spans != spans:
            why.append(f"{now.spans - before.spans} of {spans} spans counted")
        # 10 % of the step, but at least a few polls and the last request's own processing.
        if result.drain_s > max(0.15, 0.1 * count / rate_rps):
            why.append(f"backlog: drained {result.drain_s:.2f} s after the last send was due")
        if sent_for > 1.1 * count / rate_rps:
            why.append(
                f"the senders were slow: {sent_for:.2f} s for a {count / rate_rps:.2f} s step"
            )
        if target.counts_calls:
            # Every half left at the end of the step becomes a call once its TTL runs out (and a
            # failed step's backlog must not spill into the next step's counts).
            after = self._settled(target)
            result.calls = after.calls - before.calls
            evicted = after.evicted - before.evicted
            if evicted:
                why.append(f"{evicted} span halves evicted from the full pairing store")
            if not why:
                result.calls_expected = passes * self.calls_per_pass
                # Fewer calls is a loss. More is a pair split by the short TTL: its halves came
                # more than the TTL apart (requests far apart in the templates, at a low rate).
                if result.calls < result.calls_expected:
                    why.append(f"{result.calls} graph calls of {result.calls_expected} expected")
        result.ok = not why
        result.why = "; ".join(why)
        return result

    def _settled(self, target: _Target) -> _Counts:
        deadline = time.time() + 10.0
        while True:
            counts = target.counts()
            if (not counts.queued and not counts.pending) or time.time() > deadline:
                return counts
            time.sleep(0.1)

    def _judged(self, target: _Target, proto: str, rate: float, steps: list[LoadStep]) -> LoadStep:
        # A step that failed while other processes held the server's core is tried again once.
        attempt = 0
        while True:
            step = self.step(target, proto, rate)
            steps.append(step)
            print(step.line(), flush=True)
            attempt += 1
            if step.ok or step.waited_s < 0.05 * self.step_s or attempt > self.retries:
                return step

    def climb(
        self, target: _Target, proto: str, start: float, cap: float, bisections: int
    ) -> tuple[LoadStep | None, list[LoadStep]]:
        """Double from `start` until a step fails (or at `cap`), then bisect; the best step."""
        steps: list[LoadStep] = []
        best: LoadStep | None = None
        failed: float | None = None
        rate = start
        while rate <= cap:
            step = self._judged(target, proto, rate, steps)
            if not step.ok:
                failed = rate
                break
            best = step
            rate *= 2
        low = best.rate if best is not None else 0.0
        for _ in range(bisections if failed is not None else 0):
            rate = (low + failed) / 2 if failed is not None else low
            step = self._judged(target, proto, rate, steps)
            if step.ok:
                best, low = step, rate
            else:
                failed = rate
        return best, steps


# ---- steady rate ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Steady:
    cpu_percent: float
    rss_end_mib: float
    rss_peak_mib: float
    ok: bool


def _steady(
    senders: _Senders, target: _Target, rate: float, seconds: float, first_seq: int, warmup_s: float
) -> _Steady:
    """Send `rate` spans/s over gRPC for `seconds` after a short warm-up; CPU % and RSS."""
    import threading

    import psutil

    process = psutil.Process(target.process.pid)
    count = round(rate * seconds / _SPANS)
    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(float(process.memory_info().rss))
            done.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    warm = round(rate * warmup_s / _SPANS)
    senders.step("grpc", target.grpc_port, rate / _SPANS, first_seq, warm)
    cpu0 = _cpu_s(process.pid)
    start, replies = senders.step("grpc", target.grpc_port, rate / _SPANS, first_seq + warm, count)
    # From the first request due (the senders build their variants before it), to the last reply.
    cpu, elapsed = _cpu_s(process.pid) - cpu0, time.time() - start
    done.set()
    sampler.join()
    rss = float(process.memory_info().rss)
    ok = all(r["ok"] == r["sent"] for r in replies)
    marks = [samples[len(samples) * i // 4] / _MIB for i in range(4)] if samples else []
    print(
        f"  {target.name:20} grpc {rate / 1e3:7.1f}k spans/s for {seconds:g} s: "
        f"{100 * cpu / elapsed:.1f} % CPU; RSS MiB over time "
        + " → ".join(f"{m:.0f}" for m in [*marks, rss / _MIB]),
        flush=True,
    )
    return _Steady(100 * cpu / elapsed, rss / _MIB, max([*samples, rss]) / _MIB, ok)


# ---- the benchmark ----------------------------------------------------------------------------


def _calls_per_pass(payloads: list[bytes]) -> int:
    """Calls the analyzer's own pair stage makes of one pass over the templates, halves flushed."""
    from watchman_collector.decode import decode_trace_bytes
    from watchman_collector.pair import SpanPairer

    pairer = SpanPairer()
    calls = sum(len(pairer.add(decode_trace_bytes(p).spans)) for p in payloads)
    return calls + len(pairer.flush())


@contextlib.contextmanager
def _running(factory: Callable[[], _Target]) -> Iterator[_Target]:
    target = factory()
    try:
        yield target
    finally:
        target.stop()


def _figure2(
    ladder: _Ladder, tmp: Path, cores: set[int], quick: bool
) -> tuple[list[Figure], dict[str, LoadStep | None]]:
    # The cap keeps the senders (one core, Python) ahead of what they measure.
    start, cap = (50e3, 100e3) if quick else (25e3, 400e3)
    bisections = 1 if quick else 2
    best: dict[str, LoadStep | None] = {}
    steps: dict[str, list[LoadStep]] = {}
    fast_pairing = {"pair_ttl": "1s", "tick_interval": "0.25s"}
    for proto in ("grpc", "http"):
        with _running(lambda: _Bare(cores)) as bare:
            best[f"bare {proto}"], steps[f"bare {proto}"] = ladder.climb(
                bare, proto, start, cap, bisections
            )
        with _running(lambda: _Analyzer(cores, tmp, fast_pairing)) as analyzer:
            best[proto], steps[proto] = ladder.climb(analyzer, proto, start, cap, bisections)
    figures: list[Figure] = []
    for proto, label in (("grpc", "OTLP/gRPC"), ("http", "OTLP/HTTP")):
        ours, bare_step = best[proto], best[f"bare {proto}"]
        capped = bare_step is not None and bare_step.rate >= cap
        figures.append(
            Figure(
                f"{label} → watchman serve, highest sustained rate (1 core)",
                ours.rate if ours else 0.0,
                "spans/s",
                baseline=bare_step.rate if bare_step else None,
                baseline_name="bare parsing server" + (", the ladder's cap" if capped else ""),
                goal="value >= 100k spans/s",
            )
        )
        figures.append(
            Figure(
                f"  {label}: server CPU per span at that rate",
                1e6 * ours.cpu_s / ours.spans if ours else 0.0,
                "µs",
                baseline=1e6 * bare_step.cpu_s / bare_step.spans if bare_step else None,
                baseline_name="bare parsing server",
            )
        )
        # What one whole core could take at that cost: independent of what else ran on the core.
        figures.append(
            Figure(
                f"  {label}: spans per server CPU-second (median of the ladder's steps)",
                _per_cpu_s(steps[proto]),
                "spans/s",
                baseline=_per_cpu_s(steps[f"bare {proto}"]),
                baseline_name="bare parsing server",
            )
        )
    every = [step for ladder_steps in steps.values() for step in ladder_steps]
    figures.append(
        Figure(
            "  ladder: server waiting for its core (other processes), median",
            100 * statistics.median(s.waited_s / ladder.step_s for s in every) if every else 0.0,
            "% of a step",
        )
    )
    return figures, best


def _per_cpu_s(steps: list[LoadStep]) -> float:
    rates = [step.spans / step.cpu_s for step in steps if step.cpu_s > 0]
    return statistics.median(rates) if rates else 0.0


def _figure3(senders: _Senders, tmp: Path, cores: set[int], quick: bool) -> list[Figure]:
    seconds, bare_seconds = (4.0, 2.0) if quick else (45.0, 15.0)
    warmup_s = 1.0 if quick else 2.0
    rate = 10e3
    first = 10_000_000  # far from the ladder's sequence numbers: no duplicate trace ids
    with _running(lambda: _Bare(cores)) as bare:
        base = _steady(senders, bare, rate, bare_seconds, first, warmup_s)
    with _running(lambda: _Analyzer(cores, tmp, {})) as analyzer:
        ours = _steady(senders, analyzer, rate, seconds, first + 1_000_000, warmup_s)
    note = "" if ours.ok and base.ok else " (some requests failed)"
    return [
        Figure(
            f"steady 10k spans/s OTLP/gRPC: CPU, % of one core{note}",
            ours.cpu_percent,
            "%",
            baseline=base.cpu_percent,
            baseline_name="bare parsing server",
            goal="value <= 15 % (Collector testbed: 20 %)",
        ),
        Figure(
            "  RSS at the end",
            ours.rss_end_mib,
            "MiB",
            baseline=base.rss_end_mib,
            baseline_name="bare parsing server",
            goal="value <= 120 MiB (Collector testbed: 100 MiB)",
        ),
        Figure(
            "  RSS peak",
            ours.rss_peak_mib,
            "MiB",
            baseline=base.rss_peak_mib,
            baseline_name="bare parsing server",
        ),
    ]


@benchmark("serve_load")
def serve_load(quick: bool) -> list[Figure]:
    """Figures 2 and 3: sustained OTLP rate into `watchman serve`, and a steady 10k spans/s."""
    from benchmarks._load_sender import write_templates
    from benchmarks.analyzer_throughput import build_requests

    templates = 10 if quick else 25
    payloads = build_requests(templates)
    server_cores, sender_cores = _cores()
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        path = tmp / "templates.bin"
        write_templates(payloads, path)
        senders = _Senders(path, sender_cores, 2)
        try:
            ladder = _Ladder(
                senders,
                templates,
                _calls_per_pass(payloads),
                step_s=1.0 if quick else 2.0,
                retries=0 if quick else 1,  # quick is a smoke test: bounded time first
            )
            figures, _ = _figure2(ladder, tmp, server_cores, quick)
            figures += _figure3(senders, tmp, server_cores, quick)
        finally:
            senders.close()
    return figures


if __name__ == "__main__":
    from benchmarks import render_table

    print(render_table(serve_load("--quick" in sys.argv)))
