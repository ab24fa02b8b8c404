"""The API app: /healthz, /metrics negotiation, /api/v1/graph, services and nodegraph endpoints."""

from __future__ import annotations

import httpx
import pytest
import pytest_asyncio
from watchman_collector.clock import EventClock
from watchman_collector.expose_api import make_api_app
from watchman_collector.pipeline import Analyzer
from watchman_collector.records import Call, ConnectionType, Heartbeat

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000


@pytest.fixture
def analyzer():
    a = Analyzer(clock=EventClock(T0 + 20 * S))
    a.graph.add_calls(
        Call(
            client="web",
            server="orders",
            connection_type=ConnectionType.DIRECT,
            time_ns=T0 + i * S,
            client_latency_s=0.03,
            server_latency_s=0.02,
            failed=i == 0,
            trace_id=(i + 1).to_bytes(16, "big"),
        )
        for i in range(10)
    )
    a.graph.add_heartbeats([Heartbeat("orders", "o-1", T0 + 19 * S, 60.0, 0.1, 1 << 20, 4, 0, "h")])
    return a


@pytest_asyncio.fixture
async def client(analyzer):
    ready = {"ok": True}
    app = make_api_app(analyzer, is_ready=lambda: ready["ok"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://watchman") as c:
        c.ready = ready
        yield c


@pytest.mark.asyncio
async def test_healthz_follows_readiness(client):
    """200 with status ok when ready, 503 otherwise."""
    ok = await client.get("/healthz")
    assert ok.status_code == 200
    assert ok.json()["status"] == "ok"
    client.ready["ok"] = False
    assert (await client.get("/healthz")).status_code == 503


@pytest.mark.asyncio
async def test_metrics_negotiates_the_format(client):
    """Plain text by default, OpenMetrics when the scraper asks for it."""
    text = await client.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain")
    assert (
        'traces_service_graph_request_total{client="web",connection_type="",server="orders"} 10.0'
        in text.text
    )
    om = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.endswith("# EOF\n")


@pytest.mark.asyncio
async def test_graph_lists_nodes_and_edges_with_window_stats(client):
    """/api/v1/graph: nodes and edges with calls, failures and latency over the window."""
    body = (await client.get("/api/v1/graph", params={"window": "1m"})).json()
    assert body["window_s"] == 60
    assert [n["name"] for n in body["nodes"]] == ["orders", "web"]
    (edge,) = body["edges"]
    assert (edge["client"], edge["server"], edge["connection_type"]) == ("web", "orders", "")
    assert edge["window"]["calls"] == 10
    assert edge["window"]["failed"] == 1
    assert edge["window"]["error_ratio"] == pytest.approx(0.1)
    assert edge["total"] == {"calls": 10, "failed": 1}
    orders = body["nodes"][0]
    assert orders["instances"] == {"total": 1, "up": 1}


@pytest.mark.asyncio
async def test_service_detail_and_unknown_service(client):
    """/api/v1/services/{name}: callers, instances, exemplars; 404 JSON for an unknown name."""
    assert [s["name"] for s in (await client.get("/api/v1/services")).json()["services"]] == [
        "orders",
        "web",
    ]
    body = (await client.get("/api/v1/services/orders")).json()
    assert body["callers"] == ["web"]
    assert body["callees"] == []
    assert body["instance_list"][0]["instance"] == "o-1"
    assert body["incoming"][0]["client"] == "web"
    assert body["exemplars"]["failed"][0]["trace_id"] == (1).to_bytes(16, "big").hex()
    missing = await client.get("/api/v1/services/nope")
    assert missing.status_code == 404
    assert "nope" in missing.json()["error"]


@pytest.mark.asyncio
async def test_bad_window_is_a_400(client):
    """An unparsable or absurd window answers 400 with the reason."""
    bad = await client.get("/api/v1/graph", params={"window": "soon"})
    assert bad.status_code == 400
    assert "window" in bad.json()["error"]
    assert (await client.get("/api/v1/graph", params={"window": "0s"})).status_code == 400


@pytest.mark.asyncio
async def test_nodegraph_endpoints(client):
    """Both frames together, and each alone for Infinity's two queries."""
    both = (await client.get("/api/v1/nodegraph")).json()
    assert (await client.get("/api/v1/nodegraph/nodes")).json() == both["nodes"]
    assert (await client.get("/api/v1/nodegraph/edges")).json() == both["edges"]
    assert both["edges"][0]["source"] == "web"
