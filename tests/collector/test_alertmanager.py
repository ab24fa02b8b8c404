"""The Alertmanager client: queueing and re-send rules, and pushes to a real Alertmanager."""

from __future__ import annotations

import asyncio
import subprocess
import time

import httpx
import pytest
from watchman_collector.alert import AlertEvaluator, Role, Signal
from watchman_collector.alert_output import format_rfc3339
from watchman_collector.alertmanager import AlertmanagerClient
from watchman_collector.rules import parse_rules

from tests.conftest import free_port, require_binary

S = 1_000_000_000

AM_CONFIG = """\
route:
  receiver: blackhole
receivers:
  - name: blackhole
inhibit_rules:
  # A symptom or at-risk alert is muted while its root cause's own alert fires.
  - source_matchers: ['role="root_cause"']
    target_matchers: ['role=~"symptom|at_risk"']
    equal: [root_cause]
"""

# Fire and resolve on the tick they are seen, so each test needs only a few ticks.
FAST = parse_rules(
    {
        "alerts": {
            name: {"for": "0s", "keep_firing_for": "0s"}
            for name in ("ServiceDown", "HighErrorRate", "CascadeRisk")
        }
    }
)


def signal(service, alertname="HighErrorRate", role=Role.ROOT_CAUSE, root=None):
    """A critical signal for `service` blaming `root` (itself by default)."""
    return Signal(
        alertname,
        service,
        "critical",
        role,
        root or service,
        0.5,
        f"{alertname} on {service}",
        f"{service} is in trouble",
    )


def start_alertmanager(tmp_path, port):
    """Start Alertmanager on 127.0.0.1:`port` with clustering off; wait until it is ready."""
    binary = require_binary("prometheus-alertmanager")
    config = tmp_path / "alertmanager.yml"
    config.write_text(AM_CONFIG)
    log = (tmp_path / "alertmanager.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            f"--storage.path={tmp_path / 'data'}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    pytest.fail("Alertmanager did not become ready: " + (tmp_path / "alertmanager.log").read_text())
    raise AssertionError


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory):
    """One real Alertmanager for the module; yields its base URL."""
    tmp_path = tmp_path_factory.mktemp("alertmanager")
    port = free_port()
    process = start_alertmanager(tmp_path, port)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def am_alerts(http, url, **params):
    """Alertmanager's own list of alerts, keyed by service."""
    response = await http.get(f"{url}/api/v2/alerts", params=params)
    response.raise_for_status()
    return {a["labels"]["service"]: a for a in response.json()}


async def poll(predicate, fetch, attempts=100):
    """Fetch until `predicate` holds (bounded); return the last answer."""
    answer = await fetch()
    for _ in range(attempts):
        if predicate(answer):
            return answer
        await asyncio.sleep(0.05)
        answer = await fetch()
    return answer


# --- queueing and re-send, no network ---------------------------------------------------------


def test_resend_schedule_follows_prometheus():
    """Firing alerts are queued when they fire and again once per resend interval, not per tick."""
    evaluator = AlertEvaluator(FAST)
    client = AlertmanagerClient("http://127.0.0.1:1", resend_interval_s=60)
    t0 = 1_800_000_000 * S
    queued = [client.observe(evaluator.tick([signal("a")], t0 + i * 15 * S)) for i in range(9)]
    assert queued == [1, 0, 0, 0, 1, 0, 0, 0, 1]


def test_resolved_alerts_are_resent_within_retention_then_forgotten():
    """A resolved alert is sent at once, re-sent each interval for the retention, then dropped."""
    evaluator = AlertEvaluator(FAST)
    client = AlertmanagerClient(
        "http://127.0.0.1:1", resend_interval_s=60, resolved_retention_s=150
    )
    t0 = 1_800_000_000 * S
    client.observe(evaluator.tick([signal("a")], t0))
    queued = [client.observe(evaluator.tick([], t0 + i * 30 * S)) for i in range(1, 9)]
    assert queued == [1, 0, 1, 0, 1, 0, 0, 0]
    assert client.queued == 4


def test_queue_is_bounded_and_drops_oldest():
    """A full queue drops the oldest alerts and counts them; observe never waits."""
    evaluator = AlertEvaluator(FAST)
    client = AlertmanagerClient("http://127.0.0.1:1", queue_size=3)
    update = evaluator.tick([signal(f"s{i}") for i in range(5)], 1_800_000_000 * S)
    assert client.observe(update) == 5
    assert client.queued == 3
    assert client.stats.dropped == 2


# --- against a real Alertmanager --------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.asyncio
async def test_firing_alert_is_listed_by_alertmanager(alertmanager):
    """A pushed firing alert appears in Alertmanager with our labels, times, URL, fingerprint."""
    evaluator = AlertEvaluator(FAST)
    async with AlertmanagerClient(alertmanager) as client, httpx.AsyncClient() as http:
        now = time.time_ns()
        update = evaluator.tick([signal("listed")], now)
        client.observe(update)
        assert await client.flush()
        listed = (await am_alerts(http, alertmanager))["listed"]
    [alert] = update.alerts
    assert listed["labels"] == dict(alert.labels)
    assert listed["annotations"] == {
        "summary": "HighErrorRate on listed",
        "description": "listed is in trouble",
    }
    assert listed["fingerprint"] == alert.fingerprint
    assert listed["startsAt"] == format_rfc3339(now)
    assert listed["endsAt"] == format_rfc3339(now + 4 * 60 * S)  # valid for 4 resend intervals
    assert listed["generatorURL"] == "http://127.0.0.1:9464/api/v1/services/listed"
    assert listed["status"]["state"] == "active"
    assert client.stats.sent == 1


@pytest.mark.integration
@pytest.mark.asyncio
async def test_resolved_alert_leaves_alertmanager(alertmanager):
    """A resolved push (endsAt = resolve time) removes the alert from the active list."""
    evaluator = AlertEvaluator(FAST)
    async with AlertmanagerClient(alertmanager) as client, httpx.AsyncClient() as http:
        now = time.time_ns()
        client.observe(evaluator.tick([signal("gone")], now - 2 * S))
        assert await client.flush()
        assert "gone" in await am_alerts(http, alertmanager)
        update = evaluator.tick([], now - S)
        assert [t.status for t in update.transitions] == ["resolved"]
        client.observe(update)
        assert await client.flush()
        assert "gone" not in await am_alerts(http, alertmanager)


@pytest.mark.integration
@pytest.mark.asyncio
async def test_alertmanager_inhibits_symptom_while_root_cause_fires(alertmanager):
    """With the documented inhibit rule, Alertmanager marks symptoms inhibited by the cause."""
    evaluator = AlertEvaluator(FAST)
    signals = [
        signal("db", alertname="ServiceDown"),
        signal("api", role=Role.SYMPTOM, root="db"),
        signal("edge", alertname="CascadeRisk", role=Role.AT_RISK, root="db"),
    ]
    async with AlertmanagerClient(alertmanager) as client, httpx.AsyncClient() as http:
        update = evaluator.tick(signals, time.time_ns())
        client.observe(update)
        assert await client.flush()

        async def fetch():
            return await am_alerts(http, alertmanager)

        listed = await poll(
            lambda a: all(
                a.get(s, {}).get("status", {}).get("inhibitedBy") for s in ("api", "edge")
            ),
            fetch,
        )
    ours = {a.labels["service"]: a for a in update.alerts}
    cause = ours["db"].fingerprint
    assert listed["db"]["status"] == {"inhibitedBy": [], "silencedBy": [], "state": "active"}
    for service in ("api", "edge"):
        assert listed[service]["status"]["state"] == "suppressed"
        assert listed[service]["status"]["inhibitedBy"] == [cause]
        assert ours[service].inhibited_by == (cause,)  # our view agrees with Alertmanager's


@pytest.mark.integration
@pytest.mark.asyncio
async def test_client_retries_until_alertmanager_is_up(tmp_path):
    """Pushes to an Alertmanager that is not up yet are retried with backoff, then delivered."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    evaluator = AlertEvaluator(FAST)
    client = AlertmanagerClient(url, max_attempts=200, backoff_s=0.05, backoff_max_s=0.1)
    process = None
    try:
        async with client, httpx.AsyncClient() as http:
            client.observe(evaluator.tick([signal("late")], time.time_ns()))
            while client.stats.failed_attempts < 2:
                await asyncio.sleep(0.02)
            process = start_alertmanager(tmp_path, port)
            assert await client.flush(timeout_s=30)
            assert "late" in await am_alerts(http, url)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=10)
    assert client.stats.sent == 1
    assert client.stats.failed_attempts >= 2
    assert client.stats.dropped == 0


@pytest.mark.integration
@pytest.mark.asyncio
async def test_rejected_payload_is_not_retried(alertmanager):
    """A 400 from Alertmanager (an alert without labels) is dropped at once, not retried."""
    async with AlertmanagerClient(alertmanager, max_attempts=5) as client:
        client._enqueue([{"labels": {}}])  # our alerts always have labels; forge one
        assert await client.flush()
    assert client.stats.failed_attempts == 1
    assert client.stats.dropped == 1
