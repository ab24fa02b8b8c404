"""The analyzer's HTTP face: `/metrics`, `/healthz` and the JSON API, as one ASGI app.

Handlers run on the analyzer's event loop and read its state directly (single owner, no locks).
Windowed numbers take `?window=` (`1m`, `300s`, …; default 5m) and are computed in the analyzer's
clock, so a replayed graph answers the same as it did live.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from watchman_collector import __version__
from watchman_collector.alert_output import alerts_payload
from watchman_collector.config import parse_duration
from watchman_collector.diagnose import diagnosis_json
from watchman_collector.expose_metrics import make_registry
from watchman_collector.nodegraph import edge_frames, node_frames, nodegraph

if TYPE_CHECKING:
    from watchman_collector.graph import EdgeState, InstanceState, NodeState
    from watchman_collector.pipeline import Analyzer
    from watchman_collector.stats import RedSeries, RedView

__all__ = ["DEFAULT_WINDOW_S", "MAX_WINDOW_S", "make_api_app"]

DEFAULT_WINDOW_S = 300.0
MAX_WINDOW_S = 24 * 3600.0


class _BadRequest(Exception):
    pass


def _window(request: Request) -> float:
    raw = request.query_params.get("window")
    if raw is None:
        return DEFAULT_WINDOW_S
    try:
        seconds = parse_duration(raw)
    except ValueError as exc:
        raise _BadRequest(f"window: {exc}") from None
    if not 0 < seconds <= MAX_WINDOW_S:
        raise _BadRequest(f"window: must be > 0 and at most {MAX_WINDOW_S:g}s, got {raw!r}")
    return seconds


def _view(view: RedView) -> dict[str, Any]:
    return {
        "calls": view.calls,
        "failed": view.failed,
        "rate_per_s": view.rate_per_s,
        "error_ratio": view.error_ratio,
        "avg_s": view.avg_s,
        "p50_s": view.p50_s,
        "p95_s": view.p95_s,
        "p99_s": view.p99_s,
        "max_s": view.max_s,
    }


def _totals(series: RedSeries) -> dict[str, Any]:
    return {"calls": series.total_calls, "failed": series.total_failed}


def _instance(inst: InstanceState, now_ns: int) -> dict[str, Any]:
    return {
        "instance": inst.instance,
        "host": inst.host,
        "up": inst.is_up(now_ns),
        "first_seen_ns": inst.first_seen_ns,
        "last_heartbeat_ns": inst.last_heartbeat_ns,
        "uptime_s": inst.uptime_s,
        "cpu_utilization": inst.cpu_utilization,
        "memory_bytes": inst.memory_bytes,
        "threads": inst.threads,
        "inflight": inst.inflight,
        "interval_s": inst.interval_s,
    }


def _node(node: NodeState, now_ns: int, window_s: float) -> dict[str, Any]:
    up = sum(1 for inst in node.instances.values() if inst.is_up(now_ns))
    return {
        "name": node.name,
        "kind": str(node.kind),
        "first_seen_ns": node.first_seen_ns,
        "last_seen_ns": node.last_seen_ns,
        "instances": {"total": len(node.instances), "up": up},
        "window": _view(node.served.window(now_ns, window_s)),
        "total": _totals(node.served),
    }


def _edge(edge: EdgeState, now_ns: int, window_s: float) -> dict[str, Any]:
    view = edge.red.window(now_ns, window_s)
    return {
        "client": edge.client,
        "server": edge.server,
        "connection_type": str(edge.connection_type),
        "first_seen_ns": edge.first_seen_ns,
        "last_seen_ns": edge.last_seen_ns,
        "unpaired": edge.unpaired,
        "window": {
            **_view(view),
            "client_p95_s": view.client_latency.quantile(0.95),
            "server_p95_s": view.server_latency.quantile(0.95),
        },
        "total": _totals(edge.red),
    }


def _exemplars(items: list[tuple[str, int, float]]) -> list[dict[str, Any]]:
    return [{"trace_id": t, "time_ns": ns, "latency_s": s} for t, ns, s in items]


def make_api_app(
    analyzer: Analyzer,
    *,
    registry: CollectorRegistry | None = None,
    is_ready: Callable[[], bool] | None = None,
) -> Starlette:
    """The ASGI app of `--api`: `/metrics`, `/healthz`, `/api/v1/*`.

    `is_ready` tells `/healthz` whether every listener is up (default: the consumer is running).
    """
    registry = registry if registry is not None else make_registry(analyzer)
    ready = is_ready if is_ready is not None else (lambda: analyzer.running)
    graph = analyzer.graph

    def now() -> int:
        return analyzer.clock.now_ns()

    async def metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), media_type=content_type)

    async def healthz(request: Request) -> Response:
        ok = ready()
        body = {
            "status": "ok" if ok else "unavailable",
            "version": __version__,
            "queue_depth": analyzer.queue_depth,
            "nodes": graph.graph.number_of_nodes(),
            "edges": graph.graph.number_of_edges(),
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    async def graph_json(request: Request) -> Response:
        window_s = _window(request)
        now_ns = now()
        return JSONResponse(
            {
                "now_ns": now_ns,
                "window_s": window_s,
                "nodes": [_node(n, now_ns, window_s) for n in sorted(graph.nodes(), key=_by_name)],
                "edges": [
                    _edge(e, now_ns, window_s) for e in sorted(graph.edges(), key=lambda e: e.key)
                ],
            }
        )

    async def services(request: Request) -> Response:
        window_s = _window(request)
        now_ns = now()
        nodes = sorted(graph.nodes(), key=_by_name)
        return JSONResponse(
            {
                "now_ns": now_ns,
                "window_s": window_s,
                "services": [_node(n, now_ns, window_s) for n in nodes],
            }
        )

    async def service(request: Request) -> Response:
        window_s = _window(request)
        name = request.path_params["name"]
        node = graph.node(name)
        if node is None:
            return JSONResponse({"error": f"unknown service {name!r}"}, status_code=404)
        now_ns = now()
        outgoing = [graph.edge(name, callee) for callee in graph.callees(name)]
        incoming = [graph.edge(caller, name) for caller in graph.callers(name)]
        body = _node(node, now_ns, window_s)
        body.update(
            {
                "now_ns": now_ns,
                "window_s": window_s,
                "instance_list": [_instance(i, now_ns) for _, i in sorted(node.instances.items())],
                "callers": sorted(graph.callers(name)),
                "callees": sorted(graph.callees(name)),
                "incoming": [_edge(e, now_ns, window_s) for e in incoming if e is not None],
                "outgoing": [_edge(e, now_ns, window_s) for e in outgoing if e is not None],
                "exemplars": {
                    "failed": _exemplars(list(node.exemplars.failed)),
                    "slowest": _exemplars(list(node.exemplars.slowest)),
                },
            }
        )
        return JSONResponse(body)

    async def nodegraph_both(request: Request) -> Response:
        return JSONResponse(nodegraph(graph, now(), _window(request)))

    async def nodegraph_nodes(request: Request) -> Response:
        return JSONResponse(node_frames(graph, now(), _window(request)))

    async def nodegraph_edges(request: Request) -> Response:
        return JSONResponse(edge_frames(graph, now(), _window(request)))

    async def alerts(request: Request) -> Response:
        evaluator = analyzer.diagnostician.evaluator
        return JSONResponse(alerts_payload(evaluator.alerts(), evaluator.history()))

    async def diagnosis(request: Request) -> Response:
        diag = analyzer.diagnostician
        return JSONResponse(diagnosis_json(diag.diagnosis, diag.detection))

    async def bad_request(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": str(exc)}, status_code=400)

    routes = [
        Route("/metrics", metrics, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/api/v1/graph", graph_json, methods=["GET"]),
        Route("/api/v1/services", services, methods=["GET"]),
        Route("/api/v1/services/{name:path}", service, methods=["GET"]),
        Route("/api/v1/nodegraph", nodegraph_both, methods=["GET"]),
        Route("/api/v1/nodegraph/nodes", nodegraph_nodes, methods=["GET"]),
        Route("/api/v1/nodegraph/edges", nodegraph_edges, methods=["GET"]),
        Route("/api/v1/alerts", alerts, methods=["GET"]),
        Route("/api/v1/diagnosis", diagnosis, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(GZipMiddleware, minimum_size=4096)],
        exception_handlers={_BadRequest: bad_request},
    )


def _by_name(node: NodeState) -> str:
    return node.name
