"""The whole loop with real servers: a fault in the demo's shop pages once, its symptoms stay quiet.

The demo's six example services send OTLP to the real analyzer; a real Prometheus scrapes the
analyzer and evaluates the repository's rule files; a real Alertmanager, with the repository's
config, routes what Prometheus forwards. Only two things are rewritten for the test: addresses
(free loopback ports) with one-second scrape and evaluation intervals, and the webhook receivers,
which point at a local HTTP server that records every notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from rich.console import Console
from watchman_collector.demo import DemoOptions, DemoRunner, FaultPlan

from tests.conftest import free_port, require_binary

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_YML = REPO / "collector" / "prometheus" / "prometheus.yml"
RULES = REPO / "collector" / "prometheus" / "rules"
ALERTMANAGER_YML = REPO / "collector" / "alertmanager" / "alertmanager.yml"
WEBHOOK_PLACEHOLDER = "http://127.0.0.1:5001"

# The demo's HighErrorRate waits 20 s (`for`) before firing and Alertmanager's critical route
# 10 s (`group_wait`) before its first notification; with the services' start and the warm-up
# the loop closes about 55 s after the demo starts. 90 s leaves room on a busy machine.
WARMUP_S = 8.0
DEADLINE_S = 90.0
T = TypeVar("T")

ROOT_CAUSE_QUERY = 'watchman_alerts{role="root_cause",service="payments",alertstate="firing"}'


class WebhookReceiver:
    """A local stand-in for the pager and chat webhooks: records each notification's JSON."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        lock = threading.Lock()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with lock:
                    received.append((self.path, body))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # Alertmanager's retries would flood the test output

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def alerts(self) -> list[tuple[str, dict[str, Any]]]:
        """(path, alert) for every alert of every notification so far."""
        return [(path, alert) for path, body in list(self.received) for alert in body["alerts"]]


class ServerProcess:
    """A real server binary in its own process group, its output in a log file."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def check(self) -> None:
        """Fail at once, with the log, when the server has exited."""
        if self.process.poll() is not None:
            pytest.fail(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")

    def stop(self) -> None:
        """SIGTERM to the group, SIGKILL if it lingers."""
        for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            if self.process.poll() is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(wait_s)

    def tail(self, lines: int = 40) -> str:
        """The last lines of its output."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class DemoThread:
    """`DemoRunner` on its own event loop in a thread, so the test can poll while it plays."""

    def __init__(self, options: DemoOptions) -> None:
        self.output = io.StringIO()
        self.runner = DemoRunner(options, console=Console(file=self.output, width=120))
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self.thread = threading.Thread(target=self._run, name="demo", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._started.set()
            await self.runner.run(self._stop)

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc
        finally:
            self._started.set()

    def start(self) -> None:
        """Start the demo's thread."""
        self.thread.start()
        self._started.wait(10)

    def check(self) -> None:
        """Fail at once when the demo stopped early."""
        if self.error is not None:
            pytest.fail(f"the demo failed: {self.error!r}")
        if not self.thread.is_alive():
            pytest.fail("the demo ended before the loop closed")

    def stop(self) -> None:
        """Stop the timeline; the runner stops every child. Kill leftovers if it hangs."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._stop.set)
        if self.thread.ident is not None:  # started
            self.thread.join(timeout=40)
        children = [*self.runner.children.values(), self.runner.analyzer]
        for child in children:
            if child is not None and child.alive:
                child.signal_group(signal.SIGKILL)
                child.wait(5)

    def logs(self) -> str:
        """The demo's console and the tail of each child's output (before its logs are removed)."""
        parts = [f"--- demo console ---\n{self.output.getvalue()}"]
        for child in (self.runner.analyzer, *self.runner.children.values()):
            if child is not None:
                parts.append(f"--- {child.name} ---\n{child.tail(30)}")
        return "\n".join(parts)


def prometheus_config(api: str, alertmanager: str, own: str) -> dict[str, Any]:
    """The repository's prometheus.yml with loopback targets and 1 s intervals."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(RULES / "*.rules.yml")]
    config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [alertmanager]}]
    targets = {"watchman": api, "prometheus": own, "alertmanager": alertmanager}
    jobs = []
    for job in config["scrape_configs"]:
        # No Collector runs here: its job would only add a target that is down.
        if job["job_name"] in targets:
            job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
            job.pop("scrape_interval", None)
            jobs.append(job)
    config["scrape_configs"] = jobs
    return config


def alertmanager_config(webhooks: str) -> str:
    """The repository's alertmanager.yml with its webhooks pointing at `webhooks`."""
    text = ALERTMANAGER_YML.read_text()
    assert WEBHOOK_PLACEHOLDER in text
    return text.replace(WEBHOOK_PLACEHOLDER, webhooks)


def wait_ready(server: ServerProcess, url: str) -> None:
    """Poll `url` (a `/-/ready` endpoint) until it answers 200."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        server.check()
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.2)
    pytest.fail(f"{server.name} not ready within 30 s:\n{server.tail()}")


def eventually(
    probe: Callable[[], T | None], what: str, deadline: float, *checks: Callable[[], None]
) -> T:
    """Call `probe` until it returns something (not None, not empty) or the deadline passes."""
    last: T | None = None
    while time.monotonic() < deadline:
        for check in checks:
            check()
        with contextlib.suppress(httpx.TransportError):
            last = probe()
            if last:
                return last
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}; last seen: {last!r}")


def prom_query(base: str, promql: str) -> list[dict[str, Any]]:
    """The result vector of an instant PromQL query."""
    body = httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=5).json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.fixture
def webhooks() -> Iterator[WebhookReceiver]:
    """The local webhook receiver, stopped after the test."""
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.mark.timeout(DEADLINE_S + 90)  # our own deadline fails first, with the logs
def test_a_payments_fault_pages_its_root_cause_and_inhibits_the_symptoms(
    tmp_path: Path, webhooks: WebhookReceiver
) -> None:
    """Demo fault -> analyzer -> Prometheus rule -> Alertmanager: one page, symptoms suppressed."""
    prometheus_bin = require_binary("prometheus")
    alertmanager_bin = require_binary("prometheus-alertmanager")
    api_port, prom_port, am_port = free_port(), free_port(), free_port()
    api, prom, am = (f"127.0.0.1:{p}" for p in (api_port, prom_port, am_port))

    am_config = tmp_path / "alertmanager.yml"
    am_config.write_text(alertmanager_config(webhooks.url))
    prom_config = tmp_path / "prometheus.yml"
    prom_config.write_text(yaml.safe_dump(prometheus_config(api, am, prom)))

    servers: list[ServerProcess] = []
    demo = DemoThread(
        DemoOptions(
            duration_s=DEADLINE_S + 60,  # stopped by the test once the loop is closed
            warmup_s=WARMUP_S,
            fault=FaultPlan("payments", "error"),
            fault_duration_s=DEADLINE_S + 60,  # never healed while the test looks
            rate=20.0,
            dashboard=False,
            plain=True,
            api=api,
        )
    )
    try:
        servers.append(
            ServerProcess(
                "alertmanager",
                [
                    alertmanager_bin,
                    f"--config.file={am_config}",
                    f"--storage.path={tmp_path / 'am-data'}",
                    f"--web.listen-address={am}",
                    "--cluster.listen-address=",
                ],
                tmp_path / "alertmanager.log",
            )
        )
        servers.append(
            ServerProcess(
                "prometheus",
                [
                    prometheus_bin,
                    f"--config.file={prom_config}",
                    f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                    f"--web.listen-address={prom}",
                ],
                tmp_path / "prometheus.log",
            )
        )
        for server, address in zip(servers, (am, prom), strict=True):
            wait_ready(server, f"http://{address}/-/ready")
        demo.start()
        deadline = time.monotonic() + DEADLINE_S
        checks = [demo.check, *(s.check for s in servers)]
        try:
            _assert_the_loop_closes(f"http://{prom}", f"http://{am}", webhooks, deadline, checks)
        except BaseException:
            print(demo.logs())
            for server in servers:
                print(f"--- {server.name} ---\n{server.tail()}")
            raise
    finally:
        demo.stop()
        for server in servers:
            server.stop()


def _assert_the_loop_closes(
    prom: str, am: str, webhooks: WebhookReceiver, deadline: float, checks: list[Callable[[], None]]
) -> None:
    # (1) The analyzer's own verdict, scraped: payments is the firing root cause.
    series = eventually(
        lambda: prom_query(prom, ROOT_CAUSE_QUERY), "the root cause in PromQL", deadline, *checks
    )
    assert series[0]["metric"]["root_cause"] == "payments"
    alertname = series[0]["metric"]["alertname"]

    # (2) The forwarding rule picked it up and fires, with the analyzer's labels only.
    def forwarded() -> dict[str, Any] | None:
        body = httpx.get(f"{prom}/api/v1/alerts", timeout=5).json()
        for alert in body["data"]["alerts"]:
            labels = alert["labels"]
            if (
                alert["state"] == "firing"
                and labels.get("role") == "root_cause"
                and labels.get("service") == "payments"
            ):
                return dict(alert)
        return None

    rule_alert = eventually(forwarded, "the forwarded alert firing", deadline, *checks)
    assert rule_alert["labels"]["alertname"] == alertname
    assert not {"alertstate", "job", "instance", "shard"} & set(rule_alert["labels"])

    # (3) Alertmanager: the root cause active, a symptom it explains suppressed by it.
    def listed() -> tuple[dict[str, Any], dict[str, Any]] | None:
        alerts = httpx.get(f"{am}/api/v2/alerts", timeout=5).json()
        root = next(
            (
                a
                for a in alerts
                if a["labels"].get("role") == "root_cause"
                and a["labels"].get("service") == "payments"
            ),
            None,
        )
        symptom = next(
            (
                a
                for a in alerts
                if a["labels"].get("role") == "symptom"
                and a["labels"].get("service") in ("orders", "gateway")
                and a["labels"].get("root_cause") == "payments"
                and a["status"]["state"] == "suppressed"
            ),
            None,
        )
        return (root, symptom) if root is not None and symptom is not None else None

    root, symptom = eventually(listed, "an inhibited symptom in Alertmanager", deadline, *checks)
    assert root["status"]["state"] == "active"
    assert symptom["status"]["inhibitedBy"]
    assert root["fingerprint"] in symptom["status"]["inhibitedBy"]

    # (4) One notification names the root cause; no symptom was ever sent.
    def paged() -> list[tuple[str, dict[str, Any]]]:
        return [
            (path, alert)
            for path, alert in webhooks.alerts()
            if alert["labels"].get("service") == "payments"
            and alert["labels"].get("role") == "root_cause"
        ]

    pages = eventually(paged, "the root cause's notification", deadline, *checks)
    severity = pages[0][1]["labels"]["severity"]
    assert pages[0][0] == {"critical": "/alerts/critical", "warning": "/alerts/warning"}.get(
        severity, "/alerts/default"
    )
    sent = webhooks.alerts()
    assert not [a for _, a in sent if a["labels"].get("role") == "symptom"], sent
