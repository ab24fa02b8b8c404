"""The console dashboard: API payloads in, health, root-cause marks and recovery messages out."""

from __future__ import annotations

import argparse
import asyncio
import io
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from rich.console import Console
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from watchman_collector import dashboard as dash
from watchman_collector.dashboard import (
    ApiReader,
    Dashboard,
    ViewSpec,
    parse_alerts,
    parse_diagnosis,
    parse_edges,
    parse_services,
    render_plain,
    render_rich,
)

from tests.conftest import free_port

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000


def _service(name: str, rate: float, errors: float, up: int = 1, total: int = 1) -> dict[str, Any]:
    calls = int(rate * 600)
    return {
        "name": name,
        "kind": "service",
        "first_seen_ns": T0,
        "last_seen_ns": T0,
        "instances": {"total": total, "up": up},
        "window": {
            "calls": calls,
            "failed": int(calls * errors),
            "rate_per_s": rate,
            "error_ratio": errors,
            "avg_s": 0.012,
            "p50_s": 0.01,
            "p95_s": 0.03,
            "p99_s": 0.05,
            "max_s": 0.25,
        },
        "total": {"calls": calls, "failed": int(calls * errors)},
    }


# Shapes as `GET /api/v1/services`, `/api/v1/graph`, `/api/v1/alerts` serve them during a
# payments fault (payments errors cascade to orders and gateway; customers is fine).
SERVICES = {
    "now_ns": T0,
    "window_s": 600.0,
    "services": [
        _service("payments", 6.0, 0.5),
        _service("orders", 6.0, 0.5),
        _service("gateway", 20.0, 0.15),
        _service("customers", 5.0, 0.0),
        _service("store", 15.0, 0.0, up=0, total=1),
    ],
}
GRAPH = {
    "now_ns": T0,
    "window_s": 600.0,
    "nodes": [],
    "edges": [
        {
            "client": client,
            "server": server,
            "connection_type": "",
            "unpaired": False,
            "window": {"calls": 100, "rate_per_s": rate, "error_ratio": err, "p95_s": 0.02},
            "total": {"calls": 100, "failed": 0},
        }
        for client, server, rate, err in (
            ("gateway", "customers", 5.0, 0.0),
            ("orders", "payments", 6.0, 0.5),
            ("gateway", "orders", 6.0, 0.5),
            ("products", "store", 8.0, 0.0),
        )
    ],
}
DIAGNOSIS = {
    "now_ns": T0,
    "suspects": [
        {
            "service": "orders",
            "role": "symptom",
            "root_cause": "payments",
            "score": 0.4,
            "health": "failing",
            "evidence": [{"signal": "error_ratio", "detail": "50% errors"}],
        },
        {
            "service": "payments",
            "role": "root_cause",
            "root_cause": "payments",
            "score": 0.9,
            "health": "failing",
            "evidence": [{"signal": "error_ratio", "detail": "50% errors (baseline 0%)"}],
        },
    ],
    "risks": [
        {
            "service": "gateway",
            "root_cause": "payments",
            "via": "orders",
            "predicted_error_ratio": 0.3,
            "eta_s": 20.0,
        }
    ],
    "services": {
        "customers": "healthy",
        "gateway": "healthy",
        "orders": "failing",
        "payments": "failing",
    },
}


def _alert(service: str, role: str, state: str, **extra: Any) -> dict[str, Any]:
    return {
        "labels": {
            "alertname": "ServiceErrors",
            "service": service,
            "severity": "critical" if role == "root_cause" else "warning",
            "role": role,
            "root_cause": "payments",
        },
        "annotations": {"summary": f"{service} answers 50% errors", "description": "..."},
        "state": state,
        "activeAt": "2026-11-23T10:00:00.000Z",
        "startsAt": "2026-11-23T10:00:30.000Z",
        "endsAt": None,
        "inhibited": False,
        **extra,
    }


ALERTS = {
    "alerts": [
        _alert("payments", "root_cause", "firing"),
        _alert("orders", "symptom", "firing", inhibited=True),
    ],
    "history": [
        {
            **_alert("store", "root_cause", "resolved"),
            "endsAt": "2026-11-23T09:50:00.000Z",
            "annotations": {
                "summary": "store down",
                "recovery": "ServiceDown on store recovered after 2m10s",
            },
        }
    ],
}


def _snapshot(**changes: Any) -> dash.Snapshot:
    suspects, risks = parse_diagnosis(DIAGNOSIS)
    changes.setdefault("health", dash.parse_health(DIAGNOSIS))
    active, history = parse_alerts(ALERTS)
    view = dash.ServiceView(ViewSpec(10, 600), parse_services(SERVICES), 1_700_000_000.0)
    base = dash.Snapshot(
        url="http://127.0.0.1:9464",
        taken_at=1_700_000_000.0,
        analyzer="ok (v0.1.0)",
        views=(view,),
        edges=parse_edges(GRAPH),
        suspects=suspects,
        risks=risks,
        active=active,
        history=history,
    )
    return dash.Snapshot(**{**{f: getattr(base, f) for f in base.__slots__}, **changes})


def _line(text: str, service: str) -> str:
    return next(line for line in text.splitlines() if line.strip().startswith(service + " "))


def test_services_payload_becomes_rows():
    """Rows carry name, rate, error ratio, latencies and instances from the services payload."""
    rows = {r.name: r for r in parse_services(SERVICES)}
    assert set(rows) == {"payments", "orders", "gateway", "customers", "store"}
    assert rows["payments"].error_ratio == 0.5
    assert rows["gateway"].rate_per_s == 20.0
    assert rows["store"].instances_up == 0
    assert rows["store"].max_s == 0.25


def test_edges_hottest_first():
    """Hot edges are ordered by failed calls per second, then by rate."""
    edges = parse_edges(GRAPH)
    assert [(e.client, e.server) for e in edges[:2]] == [
        ("gateway", "orders"),
        ("orders", "payments"),
    ]
    assert (edges[2].client, edges[2].server) == ("products", "store")


def test_plain_marks_root_cause_symptom_and_at_risk():
    """The plain view marks the root cause, its symptom and the caller at risk on their rows."""
    text = render_plain(_snapshot())
    assert "ROOT CAUSE" in _line(text, "payments")
    assert "failing" in _line(text, "payments")
    assert "symptom of payments" in _line(text, "orders")
    gateway = _line(text, "gateway")
    assert "AT RISK via orders" in gateway
    assert "in ~20s" in gateway
    assert "healthy" in _line(text, "customers")
    assert "down" in _line(text, "store")  # no diagnosis entry, but no instance is up


def test_plain_shows_alerts_and_recovery_messages():
    """Active alerts show their role; the history shows each recovery message."""
    text = render_plain(_snapshot())
    active = text.split("== active alerts ==")[1].split("== alert history ==")[0]
    assert "ServiceErrors payments  ROOT CAUSE" in active
    assert "firing, inhibited" in active
    history = text.split("== alert history ==")[1]
    assert "ServiceDown on store recovered after 2m10s" in history


def test_rich_render_has_the_same_marks():
    """The Live screen's tables show health, marks, alerts and recoveries too."""
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(render_rich(_snapshot()))
    text = console.export_text()
    assert "ROOT CAUSE" in text
    assert "symptom of payments" in text
    assert "AT RISK via orders" in text
    assert "failing" in text
    assert "ServiceDown on store recovered after 2m10s" in text


def test_alert_roles_mark_services_without_a_diagnosis():
    """With alerts but no diagnosis, the alerts' role labels mark the services' rows."""
    text = render_plain(
        _snapshot(suspects=(), risks=(), health={}, diagnosis_note="not available (404)")
    )
    assert "ROOT CAUSE" in _line(text, "payments")
    assert "symptom of payments" in _line(text, "orders")
    assert "AT RISK" not in _line(text, "gateway")


def test_missing_endpoints_say_not_available():
    """Without diagnosis and alerts endpoints the view says so and judges only liveness."""
    snap = _snapshot(
        suspects=(),
        risks=(),
        active=(),
        history=(),
        health={},
        diagnosis_note="not available (404)",
        alerts_note="not available (404)",
    )
    text = render_plain(snap)
    assert "/api/v1/diagnosis not available (404)" in text
    assert "/api/v1/alerts not available (404)" in text
    assert "ROOT CAUSE" not in text
    assert "down" in _line(text, "store")
    assert "?" in _line(text, "payments")  # no verdict is invented


def test_alert_payload_shapes():
    """Prometheus's data envelope and a bare list with resolved alerts both parse."""
    prom = {"status": "success", "data": {"alerts": [_alert("payments", "root_cause", "firing")]}}
    active, history = parse_alerts(prom)
    assert [a.service for a in active] == ["payments"]
    assert history == ()
    bare = [_alert("payments", "root_cause", "firing"), _alert("store", "symptom", "resolved")]
    active, history = parse_alerts(bare)
    assert [a.service for a in active] == ["payments"]
    assert [a.service for a in history] == ["store"]
    assert "store recovered" in dash._recovery(history[0])  # generated when none is given
    assert parse_alerts({"unexpected": 1}) == ((), ())


def test_health_field_from_the_api_wins():
    """A `health` field on a service (label or number) is shown as the analyzer says it."""
    payload = {"services": [{**_service("store", 1.0, 0.0), "health": 3}]}
    rows = parse_services(payload)
    assert rows[0].health == "down"
    payload = {"services": [{**_service("store", 1.0, 0.0), "health": "Degraded"}]}
    assert parse_services(payload)[0].health == "degraded"


# -- against real HTTP ---------------------------------------------------------------------


class _PayloadServer:
    """A tiny API on loopback serving the recorded payloads and logging each request."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.port = free_port()
        self.payloads: dict[str, Any] = {
            "/api/v1/services": SERVICES,
            "/api/v1/graph": GRAPH,
            "/api/v1/alerts": ALERTS,
            "/healthz": {"status": "ok", "version": "9.9"},
        }

        async def serve(request: Request) -> JSONResponse:
            self.requests.append(str(request.url.path) + "?" + str(request.url.query))
            body = self.payloads.get(request.url.path)
            if body is None:
                return JSONResponse({"error": "not found"}, status_code=404)
            return JSONResponse(body)

        app = Starlette(routes=[Route("/{path:path}", serve)])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> _PayloadServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "payload server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(5)


@pytest.fixture
def api() -> Iterator[_PayloadServer]:
    with _PayloadServer() as server:
        yield server


@pytest.mark.integration
def test_views_refresh_on_their_own_cadence(api):
    """Each view is fetched with its own window and only when its refresh interval is due."""
    board = Dashboard(api.url, views=(ViewSpec(10, 600), ViewSpec(60, 3600)), stream=io.StringIO())

    async def go() -> dash.Snapshot:
        try:
            await board.snapshot(now=1000.0)
            await board.snapshot(now=1010.0)
            return await board.snapshot(now=1060.0)
        finally:
            await board.aclose()

    snap = asyncio.run(go())
    windows = [r.split("window=")[1] for r in api.requests if r.startswith("/api/v1/services?")]
    assert windows == ["600s", "3600s", "600s", "600s", "3600s"]
    assert snap.analyzer == "ok (v9.9)"
    assert snap.diagnosis_note == "not available (404)"
    assert [a.service for a in snap.active] == ["payments", "orders"]
    assert any(r.startswith("/api/v1/graph?window=600s") for r in api.requests)


@pytest.mark.integration
def test_empty_views_are_fetched_until_they_have_rows(api):
    """A view with no services yet is fetched at every refresh, then on its own cadence."""
    api.payloads["/api/v1/services"] = {"services": []}
    board = Dashboard(api.url, views=(ViewSpec(10, 600), ViewSpec(60, 3600)), stream=io.StringIO())

    async def go() -> None:
        try:
            await board.snapshot(now=1000.0)
            await board.snapshot(now=1010.0)
            api.payloads["/api/v1/services"] = SERVICES
            await board.snapshot(now=1020.0)
            await board.snapshot(now=1030.0)
        finally:
            await board.aclose()

    asyncio.run(go())
    windows = [r.split("window=")[1] for r in api.requests if r.startswith("/api/v1/services?")]
    assert windows == ["600s", "3600s", "600s", "3600s", "600s", "3600s", "600s"]


@pytest.mark.integration
def test_plain_run_prints_a_snapshot_per_refresh(api):
    """Off a terminal, each refresh prints one plain-text snapshot with the marks."""
    out = io.StringIO()
    board = Dashboard(api.url, views=(ViewSpec(0.05, 600),), stream=out)
    assert board.plain  # a StringIO is not a terminal

    async def go() -> None:
        try:
            await board.run(asyncio.Event(), iterations=2)
        finally:
            await board.aclose()

    asyncio.run(go())
    text = out.getvalue()
    assert text.count("watchman dashboard  " + api.url) == 2
    assert "\x1b[" not in text  # no escape sequences in logs
    assert "ServiceErrors payments  ROOT CAUSE" in text
    assert "ServiceDown on store recovered after 2m10s" in text


@pytest.mark.integration
def test_once_from_the_command_line(api, capsys):
    """`dashboard --url URL --once` prints one snapshot and exits 0."""
    assert dash.main(["--url", api.url, "--once"]) == 0
    out = capsys.readouterr().out
    assert out.count("== services, last 10m (every 10s)") == 1
    assert "== services, last 1h (every 1m)" in out
    assert "firing" in out


def test_unreachable_analyzer_is_shown_not_raised():
    """A dead URL becomes `unreachable` notes in the snapshot, not an exception."""
    board = Dashboard(f"http://127.0.0.1:{free_port()}", stream=io.StringIO())

    async def go() -> dash.Snapshot:
        try:
            return await board.snapshot()
        finally:
            await board.aclose()

    snap = asyncio.run(go())
    assert snap.analyzer is not None
    assert snap.analyzer.startswith("unreachable")
    assert snap.views[0].note is not None
    assert snap.views[0].note.startswith("unreachable")
    assert "unreachable" in render_plain(snap)


def test_real_api_payloads_parse():
    """The analyzer's own API app answers in the shapes the dashboard reads."""
    from watchman_collector.clock import EventClock
    from watchman_collector.expose_api import make_api_app
    from watchman_collector.pipeline import Analyzer
    from watchman_collector.records import Call, ConnectionType, Heartbeat

    analyzer = Analyzer(clock=EventClock(T0 + 20 * S))
    analyzer.graph.add_calls(
        Call(
            client="gateway",
            server="orders",
            connection_type=ConnectionType.DIRECT,
            time_ns=T0 + i * S,
            client_latency_s=0.03,
            server_latency_s=0.02,
            failed=i < 3,
            trace_id=(i + 1).to_bytes(16, "big"),
        )
        for i in range(12)
    )
    analyzer.graph.add_heartbeats(
        [Heartbeat("orders", "o-1", T0 + 19 * S, 60.0, 0.1, 1 << 20, 4, 0, "h")]
    )
    transport = httpx.ASGITransport(app=make_api_app(analyzer, is_ready=lambda: True))

    async def go() -> dash.Snapshot:
        client = httpx.AsyncClient(transport=transport)
        board = Dashboard(
            "http://watchman",
            views=(ViewSpec(10, 60),),
            stream=io.StringIO(),
            reader=ApiReader("http://watchman", client),
        )
        try:
            return await board.snapshot()
        finally:
            await client.aclose()

    snap = asyncio.run(go())
    rows = {r.name: r for r in snap.views[0].rows}
    assert rows["orders"].calls == 12
    assert rows["orders"].error_ratio == pytest.approx(0.25)
    assert rows["orders"].instances_up == 1
    assert [(e.client, e.server) for e in snap.edges] == [("gateway", "orders")]
    assert snap.analyzer is not None
    assert snap.analyzer.startswith("ok")


def test_register_adds_the_subcommand():
    """`register` adds `dashboard` with its options and a runnable command."""
    parser = argparse.ArgumentParser(prog="watchman")
    sub = parser.add_subparsers(dest="command")
    dash.register(sub)
    args = parser.parse_args(["dashboard", "--refresh", "5s", "--long-window", "2h", "--plain"])
    assert (args.refresh, args.window, args.long_window, args.plain) == (5.0, 600.0, 7200.0, True)
    assert args._command.name == "dashboard"
    assert args.config is None  # `cli.main` reads it for every subcommand
    help_text = sub.choices["dashboard"].format_help()
    assert "root cause" in help_text
    assert "--long-refresh" in help_text
    with pytest.raises(SystemExit):
        parser.parse_args(["dashboard", "--refresh", "0s"])


@pytest.mark.integration
def test_runs_through_the_cli_contract(api, capsys):
    """Run as `cli.main` runs subcommands, the URL defaults to the resolved `--api` setting."""
    from watchman_collector.config import SETTINGS, resolve

    parser = argparse.ArgumentParser(prog="watchman")
    dash.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["dashboard", "--once"])
    flags = {s.name: getattr(args, s.name, None) for s in SETTINGS}
    config = resolve(flags, {"WATCHMAN_API": f"127.0.0.1:{api.port}"}, args.config)
    assert args._command.run(args, config) == 0
    out = capsys.readouterr().out
    assert f"watchman dashboard  {api.url}" in out
    assert "ROOT CAUSE" in out  # from the alerts' role label, diagnosis being absent


def test_real_diagnosis_payload_marks_services():
    """The analyzer's own `diagnosis_json` gives health verdicts, roles and risks on the rows."""
    from watchman_collector.cascade import Diagnosis, Risk, Role, Suspect
    from watchman_collector.detect import Detection, Evidence, Health, NodeHealth
    from watchman_collector.diagnose import diagnosis_json
    from watchman_collector.records import NodeKind

    def node(name: str, health: Health) -> NodeHealth:
        return NodeHealth(
            name, NodeKind.SERVICE, health, (), None, 100, 0, 0.0, 1.0, None, None, None, 1, 1, True
        )

    evidence = Evidence("error_ratio", Health.FAILING, 0.5, 0.0, 0.1, T0, "50% errors")
    suspects = (
        Suspect(
            "payments",
            Role.ROOT_CAUSE,
            "payments",
            0.9,
            Health.FAILING,
            T0,
            (evidence,),
            ("payments",),
            0.0,
            (),
        ),
        Suspect(
            "orders",
            Role.SYMPTOM,
            "payments",
            0.4,
            Health.FAILING,
            T0,
            (evidence,),
            ("orders", "payments"),
            0.9,
            (),
        ),
    )
    risks = (Risk("gateway", "payments", "orders", 0.3, 0.8, 0.3, 0.02, 0.1, 0.0, "errors", 2),)
    detection = Detection(
        T0,
        {
            "payments": node("payments", Health.FAILING),
            "orders": node("orders", Health.FAILING),
            "gateway": node("gateway", Health.HEALTHY),
            "store": node("store", Health.DEGRADED),
        },
        {},
    )
    payload = diagnosis_json(Diagnosis(T0, suspects, risks), detection)
    found, at_risk = parse_diagnosis(payload)
    text = render_plain(_snapshot(suspects=found, risks=at_risk, health=dash.parse_health(payload)))
    assert "ROOT CAUSE" in _line(text, "payments")
    assert "50% errors" in text
    assert "symptom of payments" in _line(text, "orders")
    gateway = _line(text, "gateway")
    assert "healthy" in gateway
    assert "AT RISK via orders (root cause payments, predicted 30.0% errors, now)" in gateway
    assert "degraded" in _line(text, "store")  # the verdict wins over liveness
    assert "?" in _line(text, "customers")  # not judged: no verdict invented
