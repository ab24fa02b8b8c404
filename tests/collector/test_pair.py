"""Pairing spans into calls: the rules, the bounded store, duplicates and virtual peers."""

from __future__ import annotations

import itertools

import pytest
from watchman_collector.pair import USER_NODE, SpanPairer
from watchman_collector.records import ConnectionType, NodeKind, Span, SpanKind

S = 1_000_000_000
T0 = 1_700_000_000 * S
TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
_ids = itertools.count(1)


def sid() -> bytes:
    """A fresh, non-zero span id."""
    return next(_ids).to_bytes(8, "big")


def span(
    service: str,
    kind: SpanKind,
    *,
    span_id: bytes | None = None,
    parent: bytes = b"",
    start: int = T0,
    ms: float = 10.0,
    failed: bool = False,
    trace_id: bytes = TRACE,
    **attrs: object,
) -> Span:
    """A span with sensible defaults."""
    return Span(
        trace_id=trace_id,
        span_id=span_id or sid(),
        parent_span_id=parent,
        service=service,
        instance=f"{service}-1",
        kind=kind,
        start_ns=start,
        end_ns=start + int(ms * 1e6),
        failed=failed,
        **attrs,  # type: ignore[arg-type]
    )


def client_server(caller: str = "frontend", callee: str = "checkout", **client_attrs: object):
    """A CLIENT span in `caller` and its SERVER child in `callee`."""
    c = span(caller, SpanKind.CLIENT, ms=30, **client_attrs)
    s = span(callee, SpanKind.SERVER, parent=c.span_id, start=T0 + S // 1000, ms=20)
    return c, s


def test_client_and_server_make_one_call_with_both_latencies():
    """A CLIENT span and its SERVER child make one direct call with client and server latency."""
    c, s = client_server()
    calls = SpanPairer().add([c, s])
    assert len(calls) == 1
    call = calls[0]
    assert (call.client, call.server) == ("frontend", "checkout")
    assert call.connection_type is ConnectionType.DIRECT
    assert call.client_latency_s == pytest.approx(0.03)
    assert call.server_latency_s == pytest.approx(0.02)
    assert call.time_ns == c.start_ns
    assert (call.client_instance, call.server_instance) == ("frontend-1", "checkout-1")
    assert not call.failed


def test_halves_pair_across_batches_in_either_order():
    """The server half may come first and in another batch; the call completes on its partner."""
    c, s = client_server()
    pairer = SpanPairer()
    assert pairer.add([s]) == []
    assert pairer.stats.pending == 1
    calls = pairer.add([c])
    assert [(x.client, x.server) for x in calls] == [("frontend", "checkout")]
    assert pairer.stats.pending == 0
    assert pairer.stats.paired == 1


@pytest.mark.parametrize(("client_failed", "server_failed"), [(True, False), (False, True)])
def test_call_failed_when_either_half_failed(client_failed: bool, server_failed: bool):
    """A call fails when either span failed, as the servicegraph connector counts it."""
    c = span("a", SpanKind.CLIENT, failed=client_failed, error_type="timeout")
    s = span("b", SpanKind.SERVER, parent=c.span_id, failed=server_failed, error_type="500")
    (call,) = SpanPairer().add([c, s])
    assert call.failed
    assert call.error_type == ("timeout" if client_failed else "500")


def test_duplicates_are_ignored_and_counted():
    """A span delivered twice (same trace id and span id) counts once and bumps `duplicates`."""
    c, s = client_server()
    pairer = SpanPairer()
    calls = pairer.add([c, s, c]) + pairer.add([s, c])
    assert len(calls) == 1
    assert pairer.stats.duplicates == 3


def test_root_server_span_is_called_by_user():
    """A SERVER span without a parent is a call from the `user` node, at once."""
    root = span("frontend", SpanKind.SERVER, ms=50, failed=True)
    (call,) = SpanPairer().add([root])
    assert (call.client, call.server) == (USER_NODE, "frontend")
    assert call.client_kind is NodeKind.USER
    assert call.connection_type is ConnectionType.VIRTUAL_NODE
    assert call.client_latency_s is None
    assert call.server_latency_s == pytest.approx(0.05)
    assert call.failed


def test_database_client_span_is_a_call_to_a_database_node():
    """A CLIENT span with db.system is a database call at once, named by system and address."""
    db = span("checkout", SpanKind.CLIENT, db_system="postgresql", server_address="pg.internal")
    bare = span("checkout", SpanKind.CLIENT, db_system="redis")
    calls = SpanPairer().add([db, bare])
    assert [(c.server, c.server_kind, c.connection_type) for c in calls] == [
        ("postgresql@pg.internal", NodeKind.DATABASE, ConnectionType.DATABASE),
        ("redis", NodeKind.DATABASE, ConnectionType.DATABASE),
    ]
    assert calls[0].server_latency_s == calls[0].client_latency_s


def test_unanswered_client_goes_to_peer_service_after_ttl():
    """A CLIENT span with no SERVER child becomes, after the TTL, a call to its peer.service."""
    pairer = SpanPairer(ttl_s=10)
    c = span("frontend", SpanKind.CLIENT, peer_service="payments-api", failed=True)
    assert pairer.add([c]) == []
    assert pairer.expire(c.end_ns + 5 * S) == []
    (call,) = pairer.expire(c.end_ns + 10 * S)
    assert (call.server, call.server_kind) == ("payments-api", NodeKind.VIRTUAL)
    assert call.connection_type is ConnectionType.VIRTUAL_NODE
    assert call.server_latency_s is None
    assert call.failed
    assert pairer.stats.expired == 1
    assert pairer.stats.unpaired == 1


def test_unanswered_client_without_peer_service_is_named_by_address():
    """Without peer.service the virtual node is named by server.address."""
    pairer = SpanPairer()
    pairer.add([span("frontend", SpanKind.CLIENT, server_address="api.example.com")])
    (call,) = pairer.expire(T0 + 60 * S)
    assert (call.server, call.connection_type) == ("api.example.com", ConnectionType.VIRTUAL_NODE)


def test_unanswered_client_without_any_peer_attribute_is_counted_not_called():
    """A lone CLIENT span with nothing to name its peer makes no call and counts as unnamed."""
    pairer = SpanPairer()
    pairer.add([span("frontend", SpanKind.CLIENT)])
    assert pairer.expire(T0 + 60 * S) == []
    assert pairer.stats.unnamed == 1


def test_calls_to_a_crashed_service_land_on_it_by_learned_address():
    """After a paired call taught address → service, refused calls land on it, without waiting."""
    pairer = SpanPairer()
    c, s = client_server(server_address="checkout", server_port=8080)
    pairer.add([c, s])
    assert pairer.service_for_address("checkout", 8080) == "checkout"
    lost = span("frontend", SpanKind.CLIENT, server_address="checkout", server_port=8080,
                start=T0 + 5 * S, failed=True, error_type="ConnectionRefusedError")  # fmt: skip
    (call,) = pairer.add([lost])  # a refused connection is complete at once: no TTL wait
    assert pairer.expire(T0 + 60 * S) == []
    assert (call.server, call.server_kind) == ("checkout", NodeKind.SERVICE)
    assert call.connection_type is ConnectionType.DIRECT
    assert call.failed
    assert call.error_type == "ConnectionRefusedError"


def test_peer_service_naming_a_known_service_is_a_direct_call():
    """peer.service naming a service seen reporting spans is that service, not a virtual node."""
    pairer = SpanPairer()
    pairer.add([span("checkout", SpanKind.SERVER)])
    pairer.add([span("frontend", SpanKind.CLIENT, peer_service="checkout")])
    (call,) = pairer.expire(T0 + 60 * S)
    assert (call.server_kind, call.connection_type) == (NodeKind.SERVICE, ConnectionType.DIRECT)


def test_producer_and_consumer_pair_as_messaging():
    """A CONSUMER span whose parent is a PRODUCER span makes a messaging_system call."""
    p = span("orders", SpanKind.PRODUCER, messaging_system="kafka")
    c = span("billing", SpanKind.CONSUMER, parent=p.span_id, messaging_system="kafka")
    (call,) = SpanPairer().add([c, p])
    assert (call.client, call.server) == ("orders", "billing")
    assert call.connection_type is ConnectionType.MESSAGING_SYSTEM


def test_consumer_pairs_with_producer_through_a_span_link():
    """A CONSUMER in another trace pairs with the PRODUCER it links to."""
    p = span("orders", SpanKind.PRODUCER, messaging_system="kafka")
    other = bytes.fromhex("1" * 32)
    c = span("billing", SpanKind.CONSUMER, trace_id=other, links=((TRACE, p.span_id),))
    (call,) = SpanPairer().add([p, c])
    assert (call.client, call.server, call.connection_type) == (
        "orders",
        "billing",
        ConnectionType.MESSAGING_SYSTEM,
    )


def test_unconsumed_producer_goes_to_its_messaging_system():
    """A PRODUCER never consumed within the TTL is a call to its messaging system's node."""
    pairer = SpanPairer()
    pairer.add([span("orders", SpanKind.PRODUCER, messaging_system="rabbitmq")])
    (call,) = pairer.expire(T0 + 60 * S)
    assert (call.server, call.server_kind) == ("rabbitmq", NodeKind.VIRTUAL)
    assert call.connection_type is ConnectionType.MESSAGING_SYSTEM


def test_cross_service_parent_child_without_rpc_kinds_is_a_call():
    """An INTERNAL child in another service than its INTERNAL parent makes a call."""
    parent = span("scheduler", SpanKind.INTERNAL)
    child = span("worker", SpanKind.INTERNAL, parent=parent.span_id, ms=7)
    for order in ([parent, child], [child, parent]):
        (call,) = SpanPairer().add(order)
        assert (call.client, call.server) == ("scheduler", "worker")
        assert call.client_latency_s is None
        assert call.server_latency_s == pytest.approx(0.007)


def test_same_service_parent_child_is_no_call():
    """Parent and child in the same service are not a call, whichever comes first."""
    parent = span("frontend", SpanKind.SERVER, parent=sid())
    child = span("frontend", SpanKind.INTERNAL, parent=parent.span_id)
    pairer = SpanPairer()
    assert pairer.add([child, parent]) == []
    assert pairer.stats.pending == 1  # the SERVER span still waits for its client


def test_server_under_a_non_client_parent_in_another_service_is_a_call():
    """A SERVER span whose parent is an INTERNAL span of another service is a call from it."""
    parent = span("gateway", SpanKind.INTERNAL)
    child = span("users", SpanKind.SERVER, parent=parent.span_id)
    (call,) = SpanPairer().add([parent, child])
    assert (call.client, call.server) == ("gateway", "users")


def test_server_whose_parent_never_comes_is_called_by_user():
    """A SERVER span whose parent never arrives is, after the TTL, a call from `user`."""
    pairer = SpanPairer()
    pairer.add([span("checkout", SpanKind.SERVER, parent=sid())])
    (call,) = pairer.expire(T0 + 60 * S)
    assert (call.client, call.client_kind) == (USER_NODE, NodeKind.USER)
    assert call.client_latency_s is None


def test_full_store_evicts_the_oldest_half_as_unpaired():
    """When full, the oldest pending half is evicted into an unpaired call and counted."""
    pairer = SpanPairer(max_pending=2)
    spans = [span("a", SpanKind.CLIENT, peer_service=f"p{i}", start=T0 + i * S) for i in range(3)]
    calls = pairer.add(spans)
    assert [c.server for c in calls] == ["p0"]
    assert pairer.stats.evicted == 1
    assert pairer.stats.pending == 2


def test_ttl_is_event_time():
    """Halves expire by event time: nothing expires while `now` stays within the TTL."""
    pairer = SpanPairer(ttl_s=10)
    c = span("a", SpanKind.CLIENT, peer_service="x", start=T0)
    pairer.add([c])
    assert pairer.expire(T0 + 9 * S) == []
    assert len(pairer.expire(T0 + 11 * S)) == 1


def test_dedupe_memory_is_bounded():
    """The set of seen spans forgets the oldest beyond its capacity."""
    pairer = SpanPairer(dedupe_capacity=2)
    a, b, c = (span("x", SpanKind.INTERNAL) for _ in range(3))
    pairer.add([a, b, c, a])
    assert pairer.stats.duplicates == 0  # `a` was forgotten, so it is new again
    pairer.add([c])
    assert pairer.stats.duplicates == 1


@pytest.mark.parametrize("capacity", [1, 4, 5])
def test_dedupe_remembers_at_least_its_capacity(capacity: int):
    """The last `dedupe_capacity` spans sent again are duplicates; those long before are not."""
    pairer = SpanPairer(dedupe_capacity=capacity)
    spans = [span("x", SpanKind.INTERNAL) for _ in range(4 * capacity)]
    for n, s in enumerate(spans, 1):
        pairer.add([s])
        remembered = spans[max(0, n - capacity) : n]
        before = pairer.stats.duplicates
        pairer.add(remembered)
        assert pairer.stats.duplicates == before + len(remembered)
    # The dedupe map keeps three generations of ⌈capacity / 2⌉ ids: anything older is forgotten.
    before = pairer.stats.duplicates
    pairer.add(spans[: len(spans) - 3 * ((capacity + 1) // 2)])
    assert pairer.stats.duplicates == before


def test_parent_seen_generations_ago_still_names_the_caller():
    """A child whose parent is among the last `dedupe_capacity` spans still makes its call.

    With a capacity of 4, the parent, two other spans and the child: by the time the child is
    looked up, the parent's id is in the oldest generation the map keeps.
    """
    for parent_service, kind, child_service in [
        ("scheduler", SpanKind.INTERNAL, "worker"),  # INTERNAL parent and child
        ("gateway", SpanKind.SERVER, "users"),  # SERVER under an INTERNAL parent
    ]:
        pairer = SpanPairer(dedupe_capacity=4)
        parent = span(parent_service, SpanKind.INTERNAL)
        pairer.add([parent, span("x", SpanKind.INTERNAL), span("x", SpanKind.INTERNAL)])
        (call,) = pairer.add([span(child_service, kind, parent=parent.span_id)])
        assert (call.client, call.server) == (parent_service, child_service)


def test_flush_turns_everything_pending_into_calls():
    """flush() ends a replay: every pending half becomes an unpaired call."""
    pairer = SpanPairer()
    pairer.add([span("a", SpanKind.CLIENT, peer_service="x")])
    assert [c.server for c in pairer.flush()] == ["x"]
    assert pairer.stats.pending == 0


def test_invalid_settings_are_refused():
    """A non-positive TTL or capacity is a configuration error."""
    with pytest.raises(ValueError, match="ttl_s"):
        SpanPairer(ttl_s=0)
