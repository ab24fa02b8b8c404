"""`watchman demo`: fault specs, the bounded traffic generator, child shutdown, the whole run."""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from rich.console import Console
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from watchman_collector import demo
from watchman_collector.demo import (
    ChildProcess,
    FaultPlan,
    TrafficGenerator,
    parse_fault_spec,
    stop_children,
)

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purpose once it has exited.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False


def test_fault_spec_parses_kinds_and_amounts():
    """SERVICE:KIND[:AMOUNT] becomes the fault switch's JSON body; `none` is no fault."""
    assert parse_fault_spec("payments:error") == FaultPlan("payments", "error")
    assert parse_fault_spec("payments:error").switch() == {"error_rate": 0.5, "status": 503}
    assert parse_fault_spec("Store:latency:800").switch() == {"latency_ms": 800.0}
    assert parse_fault_spec("orders:crash").switch() == {"exit": True}
    assert parse_fault_spec("none") is None
    for bad in ("payments", "nobody:error", "payments:melt", "payments:error:2", "orders:crash:1"):
        with pytest.raises(ValueError, match=r"\S"):
            parse_fault_spec(bad)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    demo.configure_parser(parser)
    return parser.parse_args(argv)


def test_options_defaults_and_timeline_checks():
    """Defaults fit the README; a warm-up as long as the run is refused; fault time defaults."""
    options = demo.options_from_args(_args())
    assert (options.duration_s, options.warmup_s, options.rate) == (180.0, 60.0, 20.0)
    assert options.fault == FaultPlan("payments", "error")
    assert options.fault_s == 48.0  # 40 % of what follows the warm-up
    short = demo.options_from_args(_args("--duration", "2m", "--fault", "payments:crash"))
    assert (short.warmup_s, short.fault_s) == (40.0, 32.0)  # 48 s left to watch the recovery
    assert demo.options_from_args(_args("--duration", "1h")).fault_s == 60.0
    with pytest.raises(ValueError, match="--warmup"):
        demo.options_from_args(_args("--duration", "30", "--warmup", "30"))
    with pytest.raises(SystemExit):
        _args("--rate", "0")


def test_register_adds_the_subcommand():
    """`register` adds `demo` with its documented options and a runnable command."""
    parser = argparse.ArgumentParser(prog="watchman")
    sub = parser.add_subparsers(dest="command")
    demo.register(sub)
    args = parser.parse_args(["demo", "--duration", "120", "--fault", "payments:crash"])
    assert args._command.name == "demo"
    assert args.fault == FaultPlan("payments", "crash")
    help_text = sub.choices["demo"].format_help()
    for option in ("--warmup", "--fault-duration", "--keep-running", "--no-dashboard", "--plain"):
        assert option in help_text
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--plain", "--no-dashboard"])


class _Shop:
    """A stand-in gateway on loopback: orders fail with 503, the rest answer 200."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.port = free_port()

        async def handle(request: Request) -> JSONResponse:
            route = request.url.path.split("/")[2]
            self.hits[route] += 1
            return JSONResponse({}, status_code=503 if route == "orders" else 200)

        app = Starlette(routes=[Route("/api/{rest:path}", handle, methods=["GET", "POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> _Shop:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "stand-in gateway did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(5)


@pytest.fixture
def shop() -> Iterator[_Shop]:
    with _Shop() as server:
        yield server


@pytest.mark.integration
def test_traffic_mixes_routes_and_counts_failures(shop):
    """The generator calls all three gateway routes and counts 5xx answers as failed."""
    traffic = TrafficGenerator(f"http://127.0.0.1:{shop.port}", rate=200.0, seed=7)

    async def go() -> demo.TrafficStats:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.5, stop.set)
        return await traffic.run(stop)

    stats = asyncio.run(go())
    assert set(shop.hits) == {"products", "customers", "orders"}
    assert stats.sent == stats.ok + stats.failed > 0
    assert stats.failed == stats.statuses["503"] == shop.hits["orders"]
    assert stats.ok == shop.hits["products"] + shop.hits["customers"]
    assert "503: " in stats.describe()


def test_traffic_rate_must_be_positive():
    """A zero or negative rate is refused up front."""
    with pytest.raises(ValueError, match="rate"):
        TrafficGenerator("http://127.0.0.1:1", rate=0)


def test_stop_children_kills_stubborn_groups(tmp_path):
    """A child ignoring SIGTERM, and its own child, are killed after the grace period."""
    code = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    child = ChildProcess("stubborn", [sys.executable, "-c", code], os.environ, tmp_path / "s.log")
    pid = child.start()
    deadline = time.monotonic() + 10
    while not (tmp_path / "s.log").read_text().strip():
        assert time.monotonic() < deadline, "child did not report its grandchild"
        time.sleep(0.05)
    grandchild = int((tmp_path / "s.log").read_text().split()[0])
    stop_children([child], grace_s=0.3)
    assert child.wait(0) == -signal.SIGKILL
    assert not _alive(pid)
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)  # reparented to init, which reaps it shortly after the kill
    assert not _alive(grandchild)


def test_examples_are_found_in_a_source_checkout():
    """In this checkout the services run as `examples.<name>` from the repository root."""
    prefix, cwd = demo.examples_package()
    assert (prefix, cwd) == ("examples", str(REPO))


# -- the whole demo ------------------------------------------------------------------------


def _demo(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "watchman_collector.demo", *argv],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _pids(output: str) -> list[int]:
    return [int(p) for p in re.findall(r"\(pid (\d+)\)", output)]


def _assert_all_stopped(output: str) -> None:
    pids = _pids(output)
    assert len(pids) >= 7, output  # the analyzer and six services
    assert "stopped the analyzer and all services" in output
    assert [pid for pid in pids if _alive(pid)] == []


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(
    ("fault", "fault_duration"),
    [("payments:error:0.8", "18"), ("payments:crash", "20")],
)
def test_demo_runs_unattended_and_names_the_root_cause(fault, fault_duration):
    """A short demo injects and heals the fault, stops every child, and names payments."""
    proc = _demo(
        "--plain",
        "--duration",
        "40",
        "--warmup",
        "12",
        "--fault",
        fault,
        "--fault-duration",
        fault_duration,
    )
    output, _ = proc.communicate(timeout=100)
    assert proc.returncode == 0, output
    assert "all services are healthy; traffic starts" in output
    assert "/api/v1/alerts" in output  # where to look
    assert "fault injected: payments" in output
    assert "fault healed: payments" in output
    assert "== watchman demo summary ==" in output
    assert "== services, last 1m" in output  # the plain dashboard snapshots
    summary = output.split("== watchman demo summary ==")[1]
    assert re.search(r"traffic: \d+ requests, \d+ ok, [1-9]\d* failed", summary), summary
    if "root cause: not reported" not in summary:  # detection is served: it must name payments
        assert re.search(r"^root cause: payments \(first named", summary, re.M), summary
        assert "fired: " in summary or "pending" in summary, summary
    _assert_all_stopped(output)


@pytest.mark.integration
@pytest.mark.slow
def test_ctrl_c_stops_everything_cleanly():
    """SIGINT during the warm-up ends the demo with exit 0, a summary and no child left."""
    proc = _demo("--duration", "120", "--warmup", "60", "--no-dashboard")
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        lines.append(line)
        if "traffic starts" in line:
            break
        assert time.monotonic() < deadline, "".join(lines)
    time.sleep(1.0)  # some traffic in flight when the signal arrives
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    output = "".join(lines) + rest
    assert proc.returncode == 0, output
    assert "interrupted; stopping" in output
    assert "not injected: stopped during the warm-up" in output
    _assert_all_stopped(output)


@pytest.mark.integration
def test_observer_and_summary_name_the_root_cause_from_alerts():
    """Polled alerts name the root cause, its alerts and recoveries in the demo's summary."""
    from tests.collector.test_dashboard import _PayloadServer

    with _PayloadServer() as api:
        reader = demo.ApiReader(api.url)
        observer = demo.DiagnosisObserver(reader)

        async def go() -> None:
            try:
                await observer.poll(5.0)
                await observer.poll(7.0)
            finally:
                await reader.aclose()

        asyncio.run(go())
    assert observer.diagnosis_note == "not available (404)"
    assert observer.alerts_note is None
    assert observer.root_causes == {"payments": 5.0}
    assert ("ServiceErrors", "orders") in observer.fired
    assert observer.recoveries == ["ServiceDown on store recovered after 2m10s"]
    assert observer.peak_errors["payments"] == 0.5

    out = io.StringIO()
    runner = demo.DemoRunner(demo.DemoOptions(), console=Console(file=out, width=200))
    runner.injected_at = 3.0
    runner._summary(observer)
    summary = out.getvalue()
    assert "root cause: payments (first named 2s after the injection, in 2 polls)" in summary
    assert "recovered: ServiceDown on store recovered after 2m10s" in summary
    assert "not healed" in summary


class ReusingKernel:
    """Sockets that bind to the lowest port not bound at the moment: a kernel may hand out a
    port again as soon as it is released."""

    def __init__(self) -> None:
        self.bound: set[int] = set()

    def socket(self, *_: object) -> ReusingKernel.Socket:
        return ReusingKernel.Socket(self)

    class Socket:
        def __init__(self, kernel: ReusingKernel) -> None:
            self.kernel, self.port = kernel, 0

        def __enter__(self) -> ReusingKernel.Socket:
            return self

        def __exit__(self, *_: object) -> None:
            self.kernel.bound.discard(self.port)

        def bind(self, _: object) -> None:
            self.port = next(p for p in itertools.count(40000) if p not in self.kernel.bound)
            self.kernel.bound.add(self.port)

        def getsockname(self) -> tuple[str, int]:
            return "127.0.0.1", self.port


def test_the_demo_picks_all_its_ports_apart(monkeypatch):
    """The analyzer's, the services' and the API's ports are all different even where a released
    port is handed out again at once: they are held together while picked (the analyzer binds
    a second after its port was picked, while the services' ports are being picked)."""
    hosts = ["127.0.0.1"] * (1 + len(demo.SERVICES)) + ["0.0.0.0"]
    real = demo._free_ports(hosts)
    assert len(set(real)) == len(hosts)
    for port in real[:-1]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))  # free once picked
    monkeypatch.setattr(socket, "socket", ReusingKernel().socket)
    assert demo._free_ports(hosts) == list(range(40000, 40000 + len(hosts)))
