"""Grafana Node Graph frames of the service graph, in the panel's own field names.

The Node Graph panel recognises fields by name: nodes `id`, `title`, `subtitle`, `mainstat`,
`secondarystat`, `arc__*` (fractions that add up to 1, drawn around the circle), `color`, and
`detail__*` (shown in the node's context menu); edges `id`, `source`, `target`, `mainstat`,
`secondarystat`, `detail__*`. Grafana's Infinity datasource turns these JSON arrays into the two
frames the panel needs ("Nodes - Node Graph" and "Edges - Node Graph" queries). Numbers stay numbers
(milliseconds, requests per second) so a panel can give them units.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from watchman_collector.graph import EdgeState, NodeState, ServiceGraph
    from watchman_collector.stats import RedView

__all__ = [
    "DEGRADED_ERROR_RATIO",
    "FAILING_ERROR_RATIO",
    "edge_frames",
    "node_color",
    "node_frames",
    "nodegraph",
]

# Until the detect stage judges health, a node's colour comes from these plain thresholds.
DEGRADED_ERROR_RATIO = 0.01
FAILING_ERROR_RATIO = 0.05

GREEN, YELLOW, RED, GREY = "green", "yellow", "red", "grey"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def node_color(view: RedView, instances_total: int, instances_up: int) -> str:
    """The node's circle colour: red when failing or every instance is down, grey when idle."""
    if instances_total and not instances_up:
        return RED
    if not view.calls:
        return GREY if not instances_up else GREEN
    if view.error_ratio >= FAILING_ERROR_RATIO:
        return RED
    if view.error_ratio >= DEGRADED_ERROR_RATIO or instances_up < instances_total:
        return YELLOW
    return GREEN


def _node_frame(node: NodeState, now_ns: int, window_s: float) -> dict[str, Any]:
    view = node.served.window(now_ns, window_s)
    total = len(node.instances)
    up = sum(1 for inst in node.instances.values() if inst.is_up(now_ns))
    subtitle = str(node.kind) if not total else f"{node.kind} · {up}/{total} up"
    calls = view.calls
    return {
        "id": node.name,
        "title": node.name,
        "subtitle": subtitle,
        "mainstat": _ms(view.avg_s),
        "secondarystat": round(view.rate_per_s, 3),
        "arc__success": (1.0 - view.error_ratio) if calls else 0.0,
        "arc__failed": view.error_ratio if calls else 0.0,
        "color": node_color(view, total, up),
        "detail__kind": str(node.kind),
        "detail__instances": total,
        "detail__instances_up": up,
        "detail__calls": calls,
        "detail__failed": view.failed,
        "detail__p95_ms": _ms(view.p95_s),
    }


def _edge_frame(edge: EdgeState, now_ns: int, window_s: float) -> dict[str, Any]:
    view = edge.red.window(now_ns, window_s)
    return {
        "id": f"{edge.client}->{edge.server}",
        "source": edge.client,
        "target": edge.server,
        "mainstat": _ms(view.avg_s),
        "secondarystat": round(view.rate_per_s, 3),
        "detail__connection_type": str(edge.connection_type) or "direct",
        "detail__calls": view.calls,
        "detail__failed": view.failed,
        "detail__error_ratio": round(view.error_ratio, 4),
        "detail__p95_ms": _ms(view.p95_s),
    }


def node_frames(graph: ServiceGraph, now_ns: int, window_s: float) -> list[dict[str, Any]]:
    """One row per node: avg latency (ms) as mainstat, requests/s as secondarystat."""
    return [_node_frame(n, now_ns, window_s) for n in sorted(graph.nodes(), key=_name)]


def edge_frames(graph: ServiceGraph, now_ns: int, window_s: float) -> list[dict[str, Any]]:
    """One row per edge `client->server`: avg latency (ms) and requests/s over the window."""
    edges = sorted(graph.edges(), key=lambda e: e.key)
    return [_edge_frame(e, now_ns, window_s) for e in edges]


def nodegraph(graph: ServiceGraph, now_ns: int, window_s: float) -> dict[str, Any]:
    """Both frames: `{"nodes": [...], "edges": [...]}`, every edge's ends among the nodes."""
    nodes = node_frames(graph, now_ns, window_s)
    edges = edge_frames(graph, now_ns, window_s)
    known = {n["id"] for n in nodes}
    # An edge whose end left the graph (expiry) would make the panel draw a dangling line.
    edges = [e for e in edges if e["source"] in known and e["target"] in known]
    return {"nodes": nodes, "edges": edges}


def _name(node: NodeState) -> str:
    return node.name
