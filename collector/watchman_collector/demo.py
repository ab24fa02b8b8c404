"""`watchman demo`: the example shop, the analyzer and traffic on loopback; a fault, then healing.

Everything runs as child processes of the demo, each in its own process group, on free loopback
ports: the analyzer (`python -m watchman_collector serve`) and the six example services, whose only
instrumentation is `watchman_otel.init()` and whose OTLP goes to the analyzer with short export
intervals, so a fault shows within seconds. A bounded traffic generator calls the gateway; after a
healthy warm-up one service gets a fault through its fault switch (or is crashed), later it is
healed (the switch cleared, or the process restarted). The dashboard is the console view; the
demo polls the analyzer's diagnosis and alerts itself, so its summary names the root cause even
after the fault has healed. Every child is stopped on exit, Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from watchman_collector.config import parse_address, parse_duration
from watchman_collector.dashboard import (
    ApiReader,
    Dashboard,
    ViewSpec,
    parse_alerts,
    parse_diagnosis,
    parse_services,
)

if TYPE_CHECKING:
    from rich.console import Console

    from watchman_collector.config import AnalyzerConfig

__all__ = [
    "DEFAULT_FAULT",
    "DEMO_RULES",
    "DESCRIPTION",
    "FAULT_KINDS",
    "HELP",
    "SERVICES",
    "ChildProcess",
    "DemoError",
    "DemoOptions",
    "DemoRunner",
    "DiagnosisObserver",
    "FaultPlan",
    "TrafficGenerator",
    "TrafficStats",
    "configure_parser",
    "examples_package",
    "main",
    "options_from_args",
    "parse_fault_spec",
    "register",
    "run_command",
    "stop_children",
]

# Callees first, so a caller's first requests find their downstream up.
SERVICES = ("store", "payments", "customers", "products", "orders", "gateway")
FAULT_KINDS = ("error", "latency", "crash")
# payments is a leaf that only orders calls: its fault cascades along one clear path
# (payments -> orders -> gateway) while products and customers stay healthy, so the demo shows a
# root cause, its symptoms and unaffected neighbours at once.
DEFAULT_FAULT = "payments:error"
_STARTUP_TIMEOUT_S = 30.0
_STOP_GRACE_S = 5.0
_POLL_S = 2.0

# Short intervals so a fault shows within seconds (the SDK defaults are 60 s metrics, 5 s spans).
_TELEMETRY_ENV = {
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "WATCHMAN_HEARTBEAT_INTERVAL": "2",
    "OTEL_METRIC_EXPORT_INTERVAL": "5000",
    "OTEL_BSP_SCHEDULE_DELAY": "1000",
    "PYTHONUNBUFFERED": "1",
}


# The built-in rules wait minutes before an alert fires (HighErrorRate `for: 2m`), longer than a
# demo's fault lasts; these keep the same thresholds and only shorten the waits, so alerts fire,
# and resolve with their recovery message, within the demo's few minutes.
DEMO_RULES: dict[str, Any] = {
    "defaults": {"for": "15s", "keep_firing_for": "10s"},
    "alerts": {
        "ServiceDown": {"for": "10s"},
        "InstanceDown": {"for": "10s"},
        "HighErrorRate": {"for": "20s"},
        "HighLatency": {"for": "20s"},
        "TrafficDrop": {"for": "30s"},
        "Saturation": {"for": "30s"},
        "CascadeRisk": {"for": "0s", "keep_firing_for": "10s"},
    },
}


class DemoError(RuntimeError):
    """The demo cannot start or continue (a child did not come up, examples missing, …)."""


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """What to break: `service`, `kind` (error, latency, crash) and an optional `amount`.

    `amount` is the error rate (0..1) for `error` and the added latency in ms for `latency`.
    """

    service: str
    kind: str
    amount: float | None = None

    def switch(self) -> dict[str, Any]:
        """The JSON body for the service's `POST /fault`."""
        if self.kind == "error":
            rate = 0.5 if self.amount is None else self.amount
            return {"error_rate": rate, "status": 503}
        if self.kind == "latency":
            return {"latency_ms": 1500.0 if self.amount is None else self.amount}
        return {"exit": True}

    def describe(self) -> str:
        """`payments error (50% of requests answer 503)`."""
        body = self.switch()
        if self.kind == "error":
            return f"{self.service} error ({body['error_rate']:.0%} of requests answer 503)"
        if self.kind == "latency":
            return f"{self.service} latency (+{body['latency_ms']:g} ms per request)"
        return f"{self.service} crash (the process exits)"


def parse_fault_spec(text: str) -> FaultPlan | None:
    """`SERVICE:KIND[:AMOUNT]` (e.g. `payments:error`, `store:latency:800`), or `none`."""
    if text.strip().lower() in ("", "none", "off"):
        return None
    parts = text.strip().split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"expected SERVICE:KIND[:AMOUNT], got {text!r}")
    service, kind = parts[0].lower(), parts[1].lower()
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; one of {', '.join(SERVICES)}")
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; one of {', '.join(FAULT_KINDS)}")
    amount: float | None = None
    if len(parts) == 3:
        try:
            amount = float(parts[2])
        except ValueError:
            raise ValueError(f"AMOUNT must be a number, got {parts[2]!r}") from None
        if kind == "error" and not 0 < amount <= 1:
            raise ValueError(f"an error rate is in (0, 1], got {amount:g}")
        if kind == "latency" and amount <= 0:
            raise ValueError(f"a latency is in ms and positive, got {amount:g}")
        if kind == "crash":
            raise ValueError("crash takes no AMOUNT")
    return FaultPlan(service, kind, amount)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """The demo's timeline and console settings (seconds)."""

    duration_s: float = 180.0
    warmup_s: float = 60.0
    fault: FaultPlan | None = field(default_factory=lambda: parse_fault_spec(DEFAULT_FAULT))
    fault_duration_s: float | None = None  # None: 40 % of what follows the warm-up, at most 60 s
    rate: float = 20.0
    dashboard: bool = True
    plain: bool | None = None  # None: plain text when stdout is not a terminal
    api: str = "127.0.0.1:0"
    keep_running: bool = False
    rules: str | None = None  # the analyzer's rules file; None: DEMO_RULES

    @property
    def fault_s(self) -> float:
        """How long the fault lasts before it is healed."""
        if self.fault_duration_s is not None:
            return self.fault_duration_s
        # 40 % of what follows the warm-up leaves the rest for recovery: the detection window
        # (30 s) must slide past the fault and `keep_firing_for` pass before alerts resolve.
        return min(60.0, max(0.0, (self.duration_s - self.warmup_s) * 0.4))


def examples_package() -> tuple[str, str | None]:
    """The example services' module prefix and the directory to run them from.

    An installed wheel carries them as `watchman_collector.examples`; a source checkout runs them
    as `examples` from the repository root.
    """
    if importlib.util.find_spec("watchman_collector.examples") is not None:
        return "watchman_collector.examples", None
    root = Path(__file__).resolve().parents[2]
    if (root / "examples" / "common.py").is_file():
        return "examples", str(root)
    raise DemoError(
        "the example services are missing (neither watchman_collector.examples nor ./examples)"
    )


def _free_ports(hosts: Sequence[str]) -> list[int]:
    """A free port on each of `hosts`, all different: each is held until all are picked.

    Picked one at a time, a port released before its process listened on it could be handed out
    again for the next one (the analyzer imports for a second before it binds).
    """
    with contextlib.ExitStack() as held:
        ports: list[int] = []
        for host in hosts:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = held.enter_context(socket.socket(family, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


class ChildProcess:
    """One supervised child in its own process group, its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        cwd: str | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self.expected_down = False  # crashed on purpose: not an error

    def start(self) -> int:
        """Start (or restart) the process; its pid."""
        with self.log_path.open("ab") as log:
            # A new session: Ctrl-C in the terminal reaches only the demo, which then stops
            # every child in order instead of all dying at once mid-export.
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.expected_down = False
        return self.process.pid

    @property
    def pid(self) -> int | None:
        """The current process id, if started."""
        return self.process.pid if self.process is not None else None

    @property
    def alive(self) -> bool:
        """Whether the process is running."""
        return self.process is not None and self.process.poll() is None

    def signal_group(self, sig: signal.Signals) -> None:
        """Send `sig` to the child's process group (its own children too)."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if still running after `timeout` seconds."""
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def tail(self, lines: int = 15) -> str:
        """The last lines of the child's output."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def stop_children(children: Sequence[ChildProcess], grace_s: float = _STOP_GRACE_S) -> None:
    """SIGTERM every group at once, wait up to `grace_s`, then SIGKILL what is left."""
    for child in children:
        child.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for child in children:
        child.wait(max(0.0, deadline - time.monotonic()))
    for child in children:
        if child.alive:
            child.signal_group(signal.SIGKILL)
            child.wait(2.0)


@dataclass(slots=True)
class TrafficStats:
    """Requests sent by the traffic generator and how they ended."""

    sent: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0  # not sent because too many were still in flight
    statuses: Counter[str] = field(default_factory=Counter)

    def describe(self) -> str:
        """`1200 requests, 1150 ok, 50 failed (502: 50)`."""
        bad = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()) if k[0] != "2")
        text = f"{self.sent} requests, {self.ok} ok, {self.failed} failed"
        if bad:
            text += f" ({bad})"
        if self.skipped:
            text += f", {self.skipped} skipped (too many in flight)"
        return text


class TrafficGenerator:
    """Calls the gateway at a bounded rate with mixed routes until stopped.

    No catch-up bursts after a stall, and at most `max_in_flight` requests at once, so a slow or
    broken shop is never hammered harder than the configured rate.
    """

    def __init__(
        self, base_url: str, rate: float, *, max_in_flight: int = 64, seed: int | None = None
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate!r}")
        self.base_url = base_url.rstrip("/")
        self.rate = rate
        self.max_in_flight = max_in_flight
        self.stats = TrafficStats()
        self._random = random.Random(seed)

    def _request(self) -> tuple[str, str, dict[str, Any] | None]:
        pick = self._random.random()
        n = self._random.randint(1, 3)
        if pick < 0.4:
            return "GET", f"/api/products/sku-{n}", None
        if pick < 0.65:
            return "GET", f"/api/customers/c-{n}", None
        order = {"customer": f"c-{n}", "sku": f"sku-{self._random.randint(1, 3)}", "quantity": 1}
        return "POST", "/api/orders", order

    async def _one(self, client: httpx.AsyncClient) -> None:
        method, path, body = self._request()
        try:
            response = await client.request(method, self.base_url + path, json=body)
        except httpx.HTTPError as exc:
            self.stats.failed += 1
            self.stats.statuses[type(exc).__name__] += 1
            return
        self.stats.statuses[str(response.status_code)] += 1
        if response.status_code < 400:
            self.stats.ok += 1
        else:
            self.stats.failed += 1

    async def run(self, stop: asyncio.Event) -> TrafficStats:
        """Send requests until `stop` is set; waits (bounded) for those in flight."""
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.rate
        tasks: set[asyncio.Task[None]] = set()
        limits = httpx.Limits(max_connections=self.max_in_flight)
        async with httpx.AsyncClient(timeout=5.0, limits=limits) as client:
            next_at = loop.time()
            while not stop.is_set():
                if len(tasks) < self.max_in_flight:
                    task = asyncio.create_task(self._one(client))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    self.stats.sent += 1
                else:
                    self.stats.skipped += 1
                next_at = max(next_at + interval, loop.time() - 1.0)
                delay = next_at - loop.time()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=delay)
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=6.0)
                for task in pending:
                    task.cancel()
        return self.stats


@dataclass(slots=True)
class DiagnosisObserver:
    """Polls the analyzer's diagnosis, alerts and services, remembering what it ever reported.

    Times are seconds since the demo's start, so the summary can say how soon after the injection
    the root cause was named.
    """

    reader: ApiReader
    root_causes: dict[str, float] = field(default_factory=dict)  # service -> first named at
    root_polls: Counter[str] = field(default_factory=Counter)  # polls naming each root cause
    symptoms: dict[str, float] = field(default_factory=dict)
    at_risk: dict[str, float] = field(default_factory=dict)
    fired: dict[tuple[str, str], str] = field(default_factory=dict)  # (alert, service) -> role
    pending: dict[tuple[str, str], str] = field(default_factory=dict)  # never fired (yet)
    recoveries: list[str] = field(default_factory=list)
    peak_errors: dict[str, float] = field(default_factory=dict)
    diagnosis_note: str | None = "not polled yet"
    alerts_note: str | None = "not polled yet"

    async def poll(self, t: float) -> None:
        """One round of GETs; `t` is seconds since the demo's start."""
        payload, self.diagnosis_note = await self.reader.get("/api/v1/diagnosis")
        suspects, risks = parse_diagnosis(payload)
        named = set()
        for suspect in suspects:
            seen = self.root_causes if suspect.role == "root_cause" else self.symptoms
            seen.setdefault(suspect.service, t)
            if suspect.role == "root_cause":
                named.add(suspect.service)
        for risk in risks:
            self.at_risk.setdefault(risk.service, t)
        payload, self.alerts_note = await self.reader.get("/api/v1/alerts")
        active, history = parse_alerts(payload)
        for alert in (*active, *history):
            key = (alert.alertname, alert.service)
            if alert.state.startswith(("firing", "resolved")):
                self.fired.setdefault(key, alert.role)
                self.pending.pop(key, None)
            elif key not in self.fired:
                self.pending[key] = alert.role
            if alert.role == "root_cause" and alert.state.startswith("firing"):
                self.root_causes.setdefault(alert.service, t)
                named.add(alert.service)
        self.root_polls.update(named)
        for alert in history:
            message = alert.recovery or f"{alert.alertname} on {alert.service} resolved"
            if message not in self.recoveries:
                self.recoveries.append(message)
        payload, note = await self.reader.get("/api/v1/services", window="30s")
        if note is None:
            for row in parse_services(payload):
                if row.calls >= 10:
                    peak = max(self.peak_errors.get(row.name, 0.0), row.error_ratio)
                    self.peak_errors[row.name] = peak


def _ago(when: float, since: float | None) -> str:
    if since is None:
        return f"at +{when:.0f}s"
    return f"{max(0.0, when - since):.0f}s after the injection"


class DemoRunner:
    """Starts everything, plays the fault timeline, shows the dashboard, stops everything."""

    def __init__(self, options: DemoOptions, console: Console | None = None) -> None:
        from rich.console import Console

        self.options = options
        self.console = console or Console(file=sys.stdout, highlight=False)
        self.plain = not self.console.is_terminal if options.plain is None else options.plain
        self.children: dict[str, ChildProcess] = {}
        self.analyzer: ChildProcess | None = None
        self.api_url = ""
        self.ports: dict[str, int] = {}
        self.phase = "starting"
        self.traffic: TrafficGenerator | None = None
        self.injected_at: float | None = None
        self.healed_at: float | None = None
        self._t0 = time.monotonic()
        self._logdir: Path | None = None  # made when the children start
        self._keep_logs = False

    # -- output ---------------------------------------------------------------------------

    def elapsed(self) -> float:
        """Seconds since the traffic started (since construction before that)."""
        return time.monotonic() - self._t0

    def say(self, message: str) -> None:
        """A status line, stamped with the demo's clock."""
        self.console.print(
            f"[demo +{self.elapsed():5.1f}s] {message}", markup=False, soft_wrap=True
        )

    def header(self) -> list[str]:
        """The dashboard's top line: phase, clock, traffic."""
        stats = self.traffic.stats if self.traffic else TrafficStats()
        return [
            f"demo: {self.phase}  +{self.elapsed():.0f}s of {self.options.duration_s:.0f}s  "
            f"traffic {self.options.rate:g}/s: {stats.sent} sent, {stats.failed} failed"
        ]

    # -- processes ------------------------------------------------------------------------

    def _start_all(self) -> None:
        opts = self.options
        self._logdir = logdir = Path(tempfile.mkdtemp(prefix="watchman-demo-"))
        host, api_port = parse_address(opts.api)
        # The OTLP port and the services' ports, and the API's unless it was given.
        ports = _free_ports(["127.0.0.1"] * (1 + len(SERVICES)) + ([] if api_port else [host]))
        otlp_port = ports[0]
        self.ports = dict(zip(SERVICES, ports[1 : 1 + len(SERVICES)], strict=True))
        api_port = api_port or ports[-1]
        self.api_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{api_port}"
        env = dict(os.environ)
        rules = opts.rules
        if rules is None:
            rules = str(logdir / "demo-rules.yaml")
            Path(rules).write_text(json.dumps(DEMO_RULES, indent=2) + "\n")  # JSON is YAML
        analyzer = ChildProcess(
            "analyzer",
            [
                sys.executable,
                "-m",
                "watchman_collector",
                "serve",
                "--otlp-grpc",
                "off",
                "--otlp-http",
                f"127.0.0.1:{otlp_port}",
                "--api",
                f"{host}:{api_port}" if ":" not in host else f"[{host}]:{api_port}",
                "--rules",
                rules,
            ],
            env,
            logdir / "analyzer.log",
        )
        self.analyzer = analyzer
        self.say(f"starting the analyzer (pid {analyzer.start()}), API {self.api_url}")
        prefix, cwd = examples_package()
        service_env = dict(env)
        service_env.update(_TELEMETRY_ENV)
        service_env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{otlp_port}"
        # Every service learns every other's URL from NAME_URL; each reads only its callees'.
        for name, port in self.ports.items():
            service_env[f"{name.upper()}_URL"] = f"http://127.0.0.1:{port}"
        if cwd is not None:
            path = service_env.get("PYTHONPATH")
            service_env["PYTHONPATH"] = cwd + (os.pathsep + path if path else "")
        for name in SERVICES:
            child = ChildProcess(
                name,
                [sys.executable, "-m", f"{prefix}.{name}", "--port", str(self.ports[name])],
                {**service_env, "FAULT": ""},
                logdir / f"{name}.log",
                cwd=cwd,
            )
            self.children[name] = child
            pid = child.start()
            self.say(f"starting {name} (pid {pid}) on http://127.0.0.1:{self.ports[name]}")

    async def _wait_healthy(self, names: Sequence[str], client: httpx.AsyncClient) -> None:
        targets = {name: self._service_url(name) + "/healthz" for name in names}
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        pending = dict(targets)
        while pending:
            for name, url in list(pending.items()):
                child = self._child(name)
                if not child.alive:
                    self._keep_logs = True
                    raise DemoError(
                        f"{name} exited during startup (code {child.wait(0)}); its output:\n"
                        f"{child.tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url, timeout=1.0)).status_code == 200:
                        del pending[name]
            if pending and time.monotonic() > deadline:
                self._keep_logs = True
                raise DemoError(
                    f"not healthy within {_STARTUP_TIMEOUT_S:g}s: {', '.join(pending)} "
                    f"(logs in {self._logdir})"
                )
            if pending:
                await asyncio.sleep(0.2)

    def _child(self, name: str) -> ChildProcess:
        if name == "analyzer":
            assert self.analyzer is not None
            return self.analyzer
        return self.children[name]

    def _service_url(self, name: str) -> str:
        if name == "analyzer":
            return self.api_url
        return f"http://127.0.0.1:{self.ports[name]}"

    def stop_all(self) -> None:
        """Stop the services first (their last exports still reach the analyzer), then it."""
        stop_children(list(self.children.values()))
        if self.analyzer is not None:
            stop_children([self.analyzer], grace_s=10.0)
        codes = {c.name: c.wait(0) for c in (*self.children.values(), self.analyzer) if c}
        left = [name for name, code in codes.items() if code is None]
        if left:
            self.say(f"could not stop: {', '.join(left)}")
        else:
            self.say("stopped the analyzer and all services")
        if self._logdir is None:
            return
        if self._keep_logs:
            self.console.print(f"logs kept in {self._logdir}", markup=False, soft_wrap=True)
        else:
            shutil.rmtree(self._logdir, ignore_errors=True)

    # -- the fault ------------------------------------------------------------------------

    async def _inject(self, plan: FaultPlan, client: httpx.AsyncClient) -> None:
        url = self._service_url(plan.service) + "/fault"
        child = self.children[plan.service]
        if plan.kind == "crash":
            child.expected_down = True
            with contextlib.suppress(httpx.HTTPError):
                await client.post(url, json=plan.switch(), timeout=2.0)
            if await asyncio.to_thread(child.wait, 3.0) is None:
                child.signal_group(signal.SIGKILL)
                await asyncio.to_thread(child.wait, 3.0)
        else:
            try:
                (await client.post(url, json=plan.switch(), timeout=5.0)).raise_for_status()
            except httpx.HTTPError as exc:
                self.say(f"could not inject the fault into {plan.service}: {exc!r}")
                return
        self.injected_at = self.elapsed()
        self.phase = f"fault: {plan.describe()}"
        self.say(f"fault injected: {plan.describe()}")

    async def _heal(self, plan: FaultPlan, client: httpx.AsyncClient) -> None:
        child = self.children[plan.service]
        if plan.kind == "crash":
            self.say(f"healing: restarting {plan.service} (pid {child.start()})")
            await self._wait_healthy([plan.service], client)
        else:
            url = self._service_url(plan.service) + "/fault"
            try:
                (await client.delete(url, timeout=5.0)).raise_for_status()
            except httpx.HTTPError as exc:
                self.say(f"could not heal {plan.service}: {exc!r}")
                return
        self.healed_at = self.elapsed()
        self.phase = "healed, recovering"
        self.say(f"fault healed: {plan.service} is back to normal")

    # -- the run --------------------------------------------------------------------------

    def _check_children(self, reported: set[str]) -> None:
        for child in self.children.values():
            if not child.alive and not child.expected_down and child.name not in reported:
                reported.add(child.name)
                self._keep_logs = True
                self.say(f"{child.name} exited unexpectedly (code {child.wait(0)})")

    async def _sleep_until(self, t: float, stop: asyncio.Event, reported: set[str]) -> bool:
        """Wait until `t` seconds since the start; True if stopped first."""
        while not stop.is_set():
            left = t - self.elapsed()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=min(left, 1.0))
            self._check_children(reported)
        return True

    def _where_to_look(self) -> None:
        api = self.api_url
        for line in (
            "where to look:",
            f"  {api}/metrics          Prometheus metrics (service graph, health, alerts)",
            f"  {api}/api/v1/graph     the service graph as JSON",
            f"  {api}/api/v1/alerts    active alerts and their history",
            f"  {api}/api/v1/diagnosis root cause, symptoms, callers at risk",
            f"  watchman dashboard --url {api}   this console view, from another terminal",
            f"  shop: {self._service_url('gateway')}/api/products/sku-1",
        ):
            self.console.print(line, markup=False, soft_wrap=True)

    async def _observe(self, observer: DiagnosisObserver, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await observer.poll(self.elapsed())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=_POLL_S)

    async def run(self, stop: asyncio.Event) -> int:
        """The whole demo; the exit code (0 also after Ctrl-C)."""
        reader: ApiReader | None = None
        try:
            self._start_all()
            reader = ApiReader(self.api_url)
            async with httpx.AsyncClient() as client:
                await self._wait_healthy(["analyzer", *SERVICES], client)
                self.say("all services are healthy; traffic starts")
                self._where_to_look()
                self._t0 = time.monotonic()
                return await self._play(stop, client, reader)
        finally:
            if reader is not None:
                await reader.aclose()
            self.stop_all()

    async def _play(self, stop: asyncio.Event, client: httpx.AsyncClient, reader: ApiReader) -> int:
        opts = self.options
        self.traffic = TrafficGenerator(self._service_url("gateway"), opts.rate)
        observer = DiagnosisObserver(reader)
        quiet = asyncio.Event()  # stops traffic, observer and dashboard
        tasks: list[asyncio.Task[Any]] = [
            asyncio.create_task(self.traffic.run(quiet)),
            asyncio.create_task(self._observe(observer, quiet)),
        ]
        dashboard: Dashboard | None = None
        if opts.dashboard:
            # Shorter than the standalone dashboard's: a demo lasts minutes. A log gets a
            # snapshot per 10 s; a screen is redrawn anyway, so it can fetch more often.
            fast = ViewSpec(10.0 if self.plain else 5.0, 60.0)
            views = (fast, ViewSpec(30.0, 600.0))
            dashboard = Dashboard(
                self.api_url,
                views=views,
                plain=self.plain,
                header=self.header,
                console=self.console,
                stream=self.console.file,
            )
            tasks.append(asyncio.create_task(dashboard.run(quiet)))
        reported: set[str] = set()
        plan = opts.fault
        try:
            self.phase = "warm-up (healthy)"
            self.say(f"warm-up: {opts.warmup_s:g}s of healthy traffic at {opts.rate:g} req/s")
            stopped = await self._sleep_until(opts.warmup_s, stop, reported)
            if plan is not None and not stopped:
                await self._inject(plan, client)
            if plan is not None and self.injected_at is not None:
                heal_at = opts.warmup_s + opts.fault_s
                if heal_at < opts.duration_s or opts.keep_running:
                    stopped = await self._sleep_until(heal_at, stop, reported)
                    if not stopped:
                        await self._heal(plan, client)
            if not stopped:
                await self._sleep_until(opts.duration_s, stop, reported)
            if opts.keep_running and not stop.is_set():
                self.phase = "running until Ctrl-C"
                self.say("the timeline is over; everything keeps running until Ctrl-C")
                self._where_to_look()
                await stop.wait()
            if stop.is_set():
                self.say("interrupted; stopping")
        finally:
            quiet.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            if dashboard is not None:
                await dashboard.aclose()
        await observer.poll(self.elapsed())  # resolved alerts and their recovery messages
        self._summary(observer)
        return 0

    def _summary(self, observer: DiagnosisObserver) -> None:
        opts = self.options
        plan = opts.fault
        lines = ["== watchman demo summary =="]
        if plan is None:
            lines.append("fault: none")
        elif self.injected_at is None:
            lines.append(f"fault: {plan.describe()} (not injected: stopped during the warm-up)")
        else:
            healed = (
                f"healed at +{self.healed_at:.0f}s" if self.healed_at is not None else "not healed"
            )
            lines.append(
                f"fault: {plan.describe()}, injected at +{self.injected_at:.0f}s, {healed}"
            )
        if self.traffic is not None:
            lines.append(f"traffic: {self.traffic.stats.describe()}")
        since = self.injected_at
        if observer.diagnosis_note is not None and observer.alerts_note is not None:
            lines.append(
                "root cause: not reported (this analyzer serves no /api/v1/diagnosis or "
                f"/api/v1/alerts: {observer.diagnosis_note})"
            )
        elif observer.root_causes:
            # The judgement can waver while a fault unfolds (a caller looks like the cause
            # until its callee's silence is noticed): the one named most often leads.
            polls, first = observer.root_polls, observer.root_causes
            ranked = sorted(first, key=lambda n: (-polls[n], first[n]))
            lead = ranked[0]
            lines.append(
                f"root cause: {lead} (first named {_ago(observer.root_causes[lead], since)}, "
                f"in {observer.root_polls[lead]} polls)"
            )
            if ranked[1:]:
                others = ", ".join(f"{n} ({observer.root_polls[n]} polls)" for n in ranked[1:])
                lines.append(f"also named root cause at times: {others}")
        else:
            lines.append("root cause: none named")
        if observer.symptoms:
            lines.append(f"symptoms: {', '.join(sorted(observer.symptoms))}")
        if observer.at_risk:
            marked = ", ".join(
                f"{name} ({_ago(when, since)})"
                for name, when in sorted(observer.at_risk.items(), key=lambda kv: kv[1])
            )
            lines.append(f"at risk: {marked}")
        if observer.fired:
            alerts = ", ".join(f"{a} on {s}" for (a, s) in sorted(observer.fired))
            lines.append(f"alerts fired: {alerts}")
        if observer.pending:
            alerts = ", ".join(f"{a} on {s}" for (a, s) in sorted(observer.pending))
            lines.append(f"alerts pending, never fired: {alerts}")
        for message in observer.recoveries:
            lines.append(f"recovered: {message}")
        if observer.peak_errors:
            worst = sorted(observer.peak_errors.items(), key=lambda kv: -kv[1])
            shown = ", ".join(f"{name} {ratio:.0%}" for name, ratio in worst if ratio > 0)
            lines.append(f"peak error ratio over 30s: {shown or 'none'}")
        lines.append(f"analyzer API: {self.api_url}")
        for line in lines:
            self.console.print(line, markup=False, soft_wrap=True)


# -- command line --------------------------------------------------------------------------

HELP = "run the example shop, the analyzer and traffic on loopback, inject a fault, heal it"
DESCRIPTION = (
    "Start the analyzer and six example services (gateway, orders, products, customers, "
    "payments, store; instrumented only by watchman_otel.init()) on free loopback ports, drive "
    "traffic at the gateway, and after a healthy warm-up inject a fault into one service, then "
    "heal it. The console dashboard shows the services' health, the root cause and the callers "
    "at risk as the analyzer sees them; at the end a summary names the root cause the analyzer "
    "reported. No Docker, no Collector. Stops cleanly after --duration or on Ctrl-C (exit 0)."
)


def _duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fault_arg(text: str) -> FaultPlan | None:
    try:
        return parse_fault_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _rate_arg(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected requests per second, got {text!r}") from None
    if not 0 < rate <= 500:
        raise argparse.ArgumentTypeError(f"rate must be in (0, 500] requests/s, got {text!r}")
    return rate


def _api_arg(text: str) -> str:
    try:
        host, port = parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the `demo` options to `parser`."""
    parser.add_argument(
        "--duration",
        type=_duration_arg,
        default=180.0,
        metavar="DURATION",
        help="how long the timeline runs, from the first request (default 180s; 2m works too)",
    )
    parser.add_argument(
        "--warmup",
        type=_duration_arg,
        default=None,
        metavar="DURATION",
        help="healthy traffic before the fault, so the analyzer learns a baseline (default 60s, "
        "or a third of --duration when that is shorter)",
    )
    parser.add_argument(
        "--fault",
        type=_fault_arg,
        default=parse_fault_spec(DEFAULT_FAULT),
        metavar="SERVICE:KIND[:AMOUNT]",
        help=f"the fault to inject: SERVICE one of {', '.join(SERVICES)}; KIND error (AMOUNT: "
        "error rate, default 0.5, answered 503), latency (AMOUNT: ms added, default 1500) or "
        "crash (the process exits; healing restarts it); 'none' for no fault "
        f"(default {DEFAULT_FAULT}: a leaf whose failure cascades through orders to the gateway)",
    )
    parser.add_argument(
        "--fault-duration",
        type=_duration_arg,
        default=None,
        metavar="DURATION",
        help="how long the fault lasts before it is healed (default: 40%% of the time after the "
        "warm-up, at most 60s; a fault that would outlast --duration is not healed)",
    )
    parser.add_argument(
        "--rate",
        type=_rate_arg,
        default=20.0,
        metavar="N",
        help="requests per second the traffic generator sends to the gateway (default 20)",
    )
    parser.add_argument(
        "--api",
        type=_api_arg,
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="the analyzer's API address (default 127.0.0.1:0: a free port, printed at start)",
    )
    parser.add_argument(
        "--rules",
        default=None,
        metavar="PATH",
        help="the analyzer's alert rules file (default: the built-in thresholds with waits "
        "shortened to fit a demo: HighErrorRate fires after 20s instead of 2m, ServiceDown "
        "after 10s, and alerts keep firing only 10s after their cause clears)",
    )
    view = parser.add_mutually_exclusive_group()
    view.add_argument(
        "--no-dashboard",
        action="store_true",
        help="no console dashboard: status lines and the summary only",
    )
    view.add_argument(
        "--plain",
        action="store_true",
        help="plain-text dashboard snapshots even on a terminal (the default when stdout is "
        "not one)",
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="after the timeline, keep everything running (traffic too) until Ctrl-C",
    )


def options_from_args(args: argparse.Namespace) -> DemoOptions:
    """`DemoOptions` from parsed arguments; raises ValueError on an impossible timeline."""
    if args.duration <= 0:
        raise ValueError("--duration must be more than 0")
    warmup = min(60.0, args.duration / 3) if args.warmup is None else args.warmup
    if warmup >= args.duration:
        raise ValueError(
            f"--warmup ({warmup:g}s) must be shorter than --duration ({args.duration:g}s)"
        )
    if args.fault_duration is not None and args.fault_duration <= 0:
        raise ValueError("--fault-duration must be more than 0")
    return DemoOptions(
        duration_s=args.duration,
        warmup_s=warmup,
        fault=args.fault,
        fault_duration_s=args.fault_duration,
        rate=args.rate,
        dashboard=not args.no_dashboard,
        plain=True if args.plain else None,
        api=args.api,
        keep_running=args.keep_running,
        rules=args.rules,
    )


def run_command(args: argparse.Namespace, config: AnalyzerConfig | None = None) -> int:
    """Run `watchman demo` with parsed `args`; the exit code (0 done or interrupted, 1 failed)."""
    try:
        options = options_from_args(args)
    except ValueError as exc:
        sys.stderr.write(f"watchman demo: error: {exc}\n")
        return 2
    runner = DemoRunner(options)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
        return await runner.run(stop)

    try:
        return asyncio.run(main())
    except DemoError as exc:
        sys.stderr.write(f"watchman demo: {exc}\n")
        return 1
    except KeyboardInterrupt:  # before the handlers were installed; children stopped in finally
        return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `demo` to the `watchman` subparsers (an `argparse` `_SubParsersAction`)."""
    from watchman_collector.cli import Subcommand, add_subcommand

    return add_subcommand(
        subparsers, Subcommand("demo", HELP, DESCRIPTION, configure_parser, run_command)
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m watchman_collector.demo`: the subcommand on its own."""
    parser = argparse.ArgumentParser(prog="watchman demo", description=DESCRIPTION)
    configure_parser(parser)
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
