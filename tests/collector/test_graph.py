"""The service graph: nodes, edges, RED windows, instances, exemplars, expiry, cardinality cap."""

from __future__ import annotations

import random

import networkx as nx
import pytest
from watchman_collector.graph import OVERFLOW, ServiceGraph
from watchman_collector.records import Call, ConnectionType, Heartbeat, NodeKind

S = 1_000_000_000
T0 = 1_700_000_000 * S
TRACE = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")


def call(
    client: str = "frontend",
    server: str = "checkout",
    *,
    t: int = T0,
    failed: bool = False,
    client_s: float | None = 0.03,
    server_s: float | None = 0.02,
    connection: ConnectionType = ConnectionType.DIRECT,
    trace_id: bytes = TRACE,
    **kw: object,
) -> Call:
    """A call with sensible defaults."""
    return Call(
        client=client,
        server=server,
        connection_type=connection,
        time_ns=t,
        client_latency_s=client_s,
        server_latency_s=server_s,
        failed=failed,
        trace_id=trace_id,
        **kw,  # type: ignore[arg-type]
    )


def beat(service: str = "checkout", instance: str = "i-1", t: int = T0, **kw: object) -> Heartbeat:
    """A heartbeat with sensible defaults."""
    return Heartbeat(service=service, instance=instance, time_ns=t, uptime_s=60.0, **kw)  # type: ignore[arg-type]


def test_calls_make_nodes_and_an_edge_in_the_digraph():
    """Each call adds its client and server nodes and an edge, states as attributes."""
    g = ServiceGraph()
    g.add_calls([call(), call(failed=True)])
    assert isinstance(g.graph, nx.DiGraph)
    assert set(g.graph.nodes) == {"frontend", "checkout"}
    edge = g.graph.edges["frontend", "checkout"]["state"]
    assert edge is g.edge("frontend", "checkout")
    assert g.graph.nodes["checkout"]["state"] is g.node("checkout")
    assert (edge.red.total_calls, edge.red.total_failed) == (2, 1)
    assert g.callers("checkout") == ["frontend"]
    assert g.callees("frontend") == ["checkout"]
    assert g.callers("nobody") == []


def test_node_serves_only_calls_where_it_is_the_server():
    """A node's `served` series counts calls it received, not calls it made."""
    g = ServiceGraph()
    g.add_calls([call("frontend", "checkout"), call("checkout", "payments")])
    checkout, frontend = g.node("checkout"), g.node("frontend")
    assert checkout is not None
    assert frontend is not None
    assert checkout.served.total_calls == 1
    assert frontend.served.total_calls == 0


def test_windows_give_rate_errors_and_latency():
    """1 min / 5 min views come from event-time buckets."""
    g = ServiceGraph()
    now = T0 + 300 * S
    calls = [call(t=now - 200 * S)]  # first: sent after `now` it would be later than allowed
    calls += [call(t=now - i * S, failed=i % 4 == 0, server_s=0.1) for i in range(60)]
    g.add_calls(calls)
    edge = g.edge("frontend", "checkout")
    assert edge is not None
    one = edge.red.window(now, 60)
    five = edge.red.window(now, 300)
    assert one.calls == 60
    assert five.calls == 61
    assert one.error_ratio == pytest.approx(15 / 60)
    assert one.p95_s is not None
    assert 0.05 < one.p95_s <= 0.1


def test_late_calls_beyond_lateness_are_dropped_and_counted():
    """A call older than the watermark minus the allowed lateness is dropped and counted."""
    g = ServiceGraph(allowed_lateness_s=60)
    g.add_calls([call(t=T0 + 600 * S), call(t=T0 + 500 * S), call(t=T0)])
    edge = g.edge("frontend", "checkout")
    assert edge is not None
    assert edge.red.total_calls == 1
    assert edge.dropped == 2
    assert g.counters.late_dropped == 2


def test_heartbeats_alone_make_a_service_node_with_instances():
    """A service that only sends heartbeats is a node with its instance's usage."""
    g = ServiceGraph()
    g.add_heartbeats([beat(cpu_utilization=0.4, memory_bytes=123, threads=7, host="h1")])
    node = g.node("checkout")
    assert node is not None
    assert node.kind is NodeKind.SERVICE
    inst = node.instances["i-1"]
    assert (inst.cpu_utilization, inst.memory_bytes, inst.threads, inst.host) == (0.4, 123, 7, "h1")
    assert "checkout" in g.graph
    assert g.graph.degree("checkout") == 0


def test_instance_is_down_after_three_missed_intervals():
    """An instance learns its heartbeat interval and is down after three missed beats."""
    g = ServiceGraph()
    g.add_heartbeats([beat(t=T0), beat(t=T0 + 5 * S)])
    node = g.node("checkout")
    assert node is not None
    inst = node.instances["i-1"]
    assert inst.interval_s == pytest.approx(5.0)
    assert inst.is_up(T0 + 20 * S)
    assert not inst.is_up(T0 + 21 * S)


def test_older_heartbeat_does_not_overwrite_newer_values():
    """A heartbeat older than the latest keeps the latest values."""
    g = ServiceGraph()
    g.add_heartbeats([beat(t=T0 + 10 * S, cpu_utilization=0.9), beat(t=T0, cpu_utilization=0.1)])
    node = g.node("checkout")
    assert node is not None
    assert node.instances["i-1"].cpu_utilization == 0.9
    assert node.instances["i-1"].first_seen_ns == T0


def test_virtual_node_becomes_a_service_when_it_reports():
    """A peer first known only by name becomes a service node once it reports itself."""
    g = ServiceGraph()
    g.add_calls([call(server="search", server_kind=NodeKind.VIRTUAL, server_s=None)])
    assert g.node("search").kind is NodeKind.VIRTUAL  # type: ignore[union-attr]
    g.add_heartbeats([beat("search")])
    assert g.node("search").kind is NodeKind.SERVICE  # type: ignore[union-attr]


def test_unpaired_counts_calls_without_a_server_half():
    """Calls the callee never answered (no server latency) count as unpaired on the edge."""
    g = ServiceGraph()
    g.add_calls([call(server_s=None, failed=True), call()])
    edge = g.edge("frontend", "checkout")
    assert edge is not None
    assert edge.unpaired == 1


def test_exemplars_keep_latest_failed_and_slowest_trace_ids():
    """Exemplars hold the latest failed calls and the slowest calls as hex trace ids."""
    g = ServiceGraph(exemplars=2)
    calls = [
        call(t=T0 + i * S, server_s=i / 10, failed=i % 2 == 1, trace_id=bytes([i]) * 16)
        for i in range(1, 8)
    ]
    g.add_calls(calls)
    edge = g.edge("frontend", "checkout")
    assert edge is not None
    assert [e[0] for e in edge.exemplars.failed] == [
        (bytes([5]) * 16).hex(),
        (bytes([7]) * 16).hex(),
    ]
    assert [round(e[2], 3) for e in edge.exemplars.slowest] == [0.7, 0.6]
    node = g.node("checkout")
    assert node is not None
    assert node.exemplars.slowest[0][1] == T0 + 7 * S


def test_idle_edges_and_nodes_expire_active_ones_stay():
    """Edges and nodes idle for idle_expiry_s expire; a node still called stays."""
    g = ServiceGraph(idle_expiry_s=60)
    g.add_calls([call("a", "old", t=T0), call("b", "live", t=T0 + 100 * S, failed=True)])
    g.expire(T0 + 120 * S)
    assert g.edge("a", "old") is None
    assert g.node("old") is None
    assert g.node("a") is None
    assert g.edge("b", "live") is not None
    assert set(g.graph.nodes) == {"b", "live"}
    assert (g.counters.expired_edges, g.counters.expired_nodes) == (1, 2)
    assert g.watermark_ns == T0 + 120 * S


def test_idle_instances_are_forgotten_but_a_called_service_stays():
    """An instance whose heartbeat stopped is forgotten after idle_expiry_s; the node stays."""
    g = ServiceGraph(idle_expiry_s=60)
    g.add_heartbeats([beat(t=T0)])
    g.add_calls([call(t=T0 + 100 * S, server_s=None, failed=True)])
    g.expire(T0 + 120 * S)
    node = g.node("checkout")
    assert node is not None
    assert node.instances == {}
    assert g.counters.expired_instances == 1


def test_node_cap_folds_new_nodes_into_overflow():
    """Beyond max_nodes new names fold into `__overflow__`, counted."""
    g = ServiceGraph(max_nodes=2)
    g.add_calls([call("a", "b"), call("a", "c"), call("d", "e")])
    assert set(g.graph.nodes) == {"a", "b", OVERFLOW}
    assert g.edge("a", OVERFLOW) is not None
    assert g.edge(OVERFLOW, OVERFLOW) is not None
    assert g.counters.overflow_nodes == 3


def test_edge_cap_folds_new_edges_into_overflow_edge():
    """Beyond max_edges new edges fold into one overflow edge, counted."""
    g = ServiceGraph(max_edges=1)
    g.add_calls([call("a", "b"), call("a", "c"), call("c", "a")])
    assert g.edge("a", "c") is None
    overflow = g.edge(OVERFLOW, OVERFLOW)
    assert overflow is not None
    assert overflow.red.total_calls == 2
    assert g.counters.overflow_edges == 2


def test_virtual_edge_upgrades_to_direct():
    """An edge first seen as virtual_node takes the direct type once a paired call shows."""
    g = ServiceGraph()
    g.add_calls([call(connection=ConnectionType.VIRTUAL_NODE, server_s=None), call()])
    edge = g.edge("frontend", "checkout")
    assert edge is not None
    assert edge.connection_type is ConnectionType.DIRECT


def test_old_exemplars_are_forgotten_on_expire():
    """Exemplars older than 15 minutes are dropped at expire(); recent ones stay."""
    g = ServiceGraph()
    g.add_calls(
        [call(t=T0, failed=True), call(t=T0 + 1000 * S, failed=True, trace_id=b"\x01" * 16)]
    )
    g.expire(T0 + 1000 * S)
    edge = g.edge("frontend", "checkout")
    assert edge is not None
    assert [e[0] for e in edge.exemplars.failed] == [(b"\x01" * 16).hex()]
    assert [e[0] for e in edge.exemplars.slowest] == [(b"\x01" * 16).hex()]


def test_edge_and_node_series_count_as_red_series_add_would():
    """add_calls' inlined counting leaves each edge's and node's series as RedSeries.add would."""
    from watchman_collector.stats import RedSeries

    graph = ServiceGraph(allowed_lateness_s=120)
    rng = random.Random(11)
    edge_ref: dict[tuple[str, str], RedSeries] = {}
    node_ref: dict[str, RedSeries] = {}
    now = 0  # the graph's watermark before its first call
    batch = []
    for i in range(3000):
        t = T0 + i * 100_000_000 - rng.choice((0, 0, 3, 30, 150)) * S
        client, server = rng.choice((("a", "b"), ("a", "c"), ("b", "c")))
        c = call(
            client,
            server,
            t=t,
            failed=rng.random() < 0.1,
            client_s=rng.choice((None, rng.uniform(-0.001, 2.0))),
            server_s=rng.choice((None, rng.uniform(0.0, 1.0))) if i % 3 else 0.01,
        )
        batch.append(c)
        now = max(now, t)
        ref = edge_ref.setdefault((client, server), RedSeries())
        if ref.add(t, c.failed, c.client_latency_s, c.server_latency_s, now, 120):
            node_ref.setdefault(server, RedSeries()).add(
                t, c.failed, c.client_latency_s, c.server_latency_s, now, 120
            )
        if len(batch) == 100:
            graph.add_calls(batch)
            batch = []
    pairs = [(graph.edge(*k).red, v) for k, v in edge_ref.items()]  # type: ignore[union-attr]
    pairs += [(graph.node(k).served, v) for k, v in node_ref.items()]  # type: ignore[union-attr]
    for got, want in pairs:
        assert (got.total_calls, got.total_failed) == (want.total_calls, want.total_failed)
        assert got.total_client == want.total_client
        for seconds in (30, 120, 900):
            g, w = got.window(now, seconds), want.window(now, seconds)
            assert (g.calls, g.failed) == (w.calls, w.failed)
            assert g.latency == w.latency
            assert g.server_latency == w.server_latency


def test_late_calls_are_counted_on_the_edge_and_the_node() -> None:
    """A call into a bucket before the newest counts as a late write on both its series."""
    graph = ServiceGraph()
    on_time = [
        Call("a", "b", ConnectionType.DIRECT, T0 + i * S, 0.01, 0.01, False, bytes(16))
        for i in (1, 12)
    ]
    graph.add_calls(on_time)
    graph.add_calls(
        [Call("a", "b", ConnectionType.DIRECT, T0 + 3 * S, 0.01, 0.01, False, bytes(16))]
    )
    edge, node = graph.edge("a", "b"), graph.node("b")
    assert edge is not None
    assert node is not None
    assert (edge.red.late_writes, node.served.late_writes) == (1, 1)
