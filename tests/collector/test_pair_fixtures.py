"""Pair and graph over recorded OTLP/JSON traces (one ExportTraceServiceRequest per line)."""

from __future__ import annotations

from pathlib import Path

import pytest
from watchman_collector.graph import ServiceGraph
from watchman_collector.pair import SpanPairer
from watchman_collector.records import ConnectionType, NodeKind

otlp_json = pytest.importorskip("watchman_collector.otlp_json")
decode = pytest.importorskip("watchman_collector.decode")

TESTDATA = Path(__file__).parent / "testdata"
MINUTE_NS = 60 * 1_000_000_000


def replay(name: str, *, expire: bool = True) -> tuple[SpanPairer, ServiceGraph]:
    """Run a fixture's requests, in file order, through decode → pair → graph."""
    pairer, graph = SpanPairer(ttl_s=10), ServiceGraph()
    for line in (TESTDATA / name).read_text().splitlines():
        batch = decode.decode_traces(otlp_json.parse_trace_request(line))
        assert batch.rejected == 0, batch.reason
        graph.add_calls(pairer.add(batch.spans))
    if expire:
        graph.add_calls(pairer.expire(graph.watermark_ns + MINUTE_NS))  # well past the TTL
    return pairer, graph


def totals(graph: ServiceGraph) -> dict[tuple[str, str], tuple[int, int, str]]:
    """Every edge as (calls, failed, connection_type)."""
    return {
        (e.client, e.server): (e.red.total_calls, e.red.total_failed, str(e.connection_type))
        for e in graph.edges()
    }


def test_failed_requests():
    """Failed calls count on their edge whether the client or the server half failed."""
    _, graph = replay("trace-with-failed-requests.json")
    assert totals(graph) == {
        ("user", "frontend"): (3, 2, "virtual_node"),
        ("frontend", "checkout"): (3, 2, ""),
    }
    checkout = graph.node("checkout")
    assert checkout is not None
    assert len(checkout.exemplars.failed) == 2


def test_virtual_nodes():
    """Unanswered calls become virtual nodes: peer.service first, else the address."""
    pairer, graph = replay("trace-with-virtual-nodes.json")
    assert totals(graph) == {
        ("user", "frontend"): (1, 0, "virtual_node"),
        ("frontend", "payments-provider"): (1, 0, "virtual_node"),
        ("frontend", "api.example.org"): (1, 0, "virtual_node"),
        ("frontend", "cdn.example.net"): (1, 1, "virtual_node"),
    }
    assert graph.node("payments-provider").kind is NodeKind.VIRTUAL  # type: ignore[union-attr]
    assert pairer.stats.expired == 3


def test_database_calls():
    """Database client spans are edges to database nodes named by system and address."""
    _, graph = replay("trace-with-database.json", expire=False)
    assert totals(graph) == {
        ("user", "orders"): (1, 0, "virtual_node"),
        ("orders", "postgresql@pg.internal"): (2, 1, "database"),
        ("orders", "redis"): (1, 0, "database"),
    }
    assert graph.node("redis").kind is NodeKind.DATABASE  # type: ignore[union-attr]


def test_messaging_with_links():
    """Consumers pair with producers by parent or by span link, as messaging_system edges."""
    pairer, graph = replay("trace-with-messaging-links.json", expire=False)
    assert totals(graph)[("orders", "billing")] == (2, 0, "messaging_system")
    assert pairer.stats.pending == 0


def test_duplicates():
    """A request delivered twice, and a span repeated inside one, count once."""
    pairer, graph = replay("trace-with-duplicates.json")
    assert totals(graph) == {
        ("user", "frontend"): (1, 0, "virtual_node"),
        ("frontend", "catalog"): (1, 0, ""),
    }
    assert pairer.stats.duplicates == 5  # 4 in the second delivery, 1 inside the first


def test_split_out_of_order():
    """Server halves that arrive batches before their clients still pair, with no unpaired."""
    pairer, graph = replay("trace-split-out-of-order.json", expire=False)
    assert totals(graph)[("frontend", "inventory")] == (2, 1, "")
    assert ("user", "auth") in totals(graph)
    assert pairer.stats.unpaired == 0
    assert pairer.stats.pending == 0


def test_crashed_callee_keeps_its_node_and_failures():
    """Calls to a service that died land on it (learned address) and show as failed, unpaired."""
    _, graph = replay("trace-crashed-callee.json")
    edge = graph.edge("frontend", "checkout")
    assert edge is not None
    assert (edge.red.total_calls, edge.red.total_failed, edge.unpaired) == (4, 3, 3)
    assert edge.connection_type is ConnectionType.DIRECT
    checkout = graph.node("checkout")
    assert checkout is not None
    assert checkout.kind is NodeKind.SERVICE
    assert checkout.served.total_failed == 3
    assert {e[0] for e in checkout.exemplars.failed} == {
        f"a{'0' * 28}{n:03x}" for n in (0x701, 0x702, 0x703)
    }
