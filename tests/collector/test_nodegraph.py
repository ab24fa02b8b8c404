"""Grafana Node Graph frames: the panel's field names and consistent nodes and edges."""

from __future__ import annotations

import pytest
from watchman_collector.graph import ServiceGraph
from watchman_collector.nodegraph import edge_frames, node_frames, nodegraph
from watchman_collector.records import Call, ConnectionType

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000


def make_graph(failed_every=0):
    graph = ServiceGraph()
    calls = [
        Call(
            client="web",
            server="api",
            connection_type=ConnectionType.DIRECT,
            time_ns=T0 + i * S // 10,
            client_latency_s=0.012,
            server_latency_s=0.010,
            failed=bool(failed_every) and i % failed_every == 0,
            trace_id=(i + 1).to_bytes(16, "big"),
        )
        for i in range(100)
    ]
    graph.add_calls(calls)
    return graph


def test_node_fields_are_the_panel_names():
    """Nodes carry id, title, subtitle, mainstat, secondarystat, arc__*, color."""
    nodes = node_frames(make_graph(), T0 + 10 * S, 60)
    assert [n["id"] for n in nodes] == ["api", "web"]
    api = nodes[0]
    for key in ("id", "title", "subtitle", "mainstat", "secondarystat", "color"):
        assert key in api
    assert api["mainstat"] == pytest.approx(10.0, rel=0.5)  # milliseconds
    assert api["secondarystat"] > 0
    assert api["arc__success"] + api["arc__failed"] == pytest.approx(1.0)
    assert api["color"] == "green"


def test_failures_turn_the_node_red_and_fill_the_failed_arc():
    """Twenty per cent failed calls: arc__failed is 0.2 and the node is red."""
    api = node_frames(make_graph(failed_every=5), T0 + 10 * S, 60)[0]
    assert api["arc__failed"] == pytest.approx(0.2)
    assert api["color"] == "red"


def test_edges_reference_nodes():
    """Edges have id, source, target, mainstat, secondarystat; both ends are nodes."""
    frames = nodegraph(make_graph(), T0 + 10 * S, 60)
    ids = {n["id"] for n in frames["nodes"]}
    (edge,) = frames["edges"]
    assert edge["id"] == "web->api"
    assert (edge["source"], edge["target"]) == ("web", "api")
    assert {edge["source"], edge["target"]} <= ids
    assert edge["mainstat"] == pytest.approx(10.0, rel=0.5)
    assert edge["detail__calls"] == 100
    assert edge_frames(make_graph(), T0 + 10 * S, 60) == frames["edges"]


def test_idle_window_has_no_rates():
    """Outside the window the node shows no traffic and no latency, and empty arcs."""
    api = node_frames(make_graph(), T0 + 7200 * S, 60)[0]
    assert api["secondarystat"] == 0
    assert api["mainstat"] is None
    assert api["arc__success"] == api["arc__failed"] == 0.0
