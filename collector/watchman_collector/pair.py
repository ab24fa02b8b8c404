"""The `pair` stage: turn spans into calls between services.

A call is made from two halves that meet in a bounded store keyed by (trace id, the caller-side
span id): CLIENT↔SERVER (the server's parent is the client span), PRODUCER↔CONSUMER (the
consumer's parent, or one of its span links, is the producer span), and a parent/child pair of
other kinds whose `service.name` differs. A half whose partner does not come within `ttl_s` of
event time becomes an unpaired call to a virtual peer (or from `user`). Database client spans
are complete calls at once. OTLP delivers duplicates by design, so a span already seen (same
trace id and span id) is ignored and counted. See docs/pair.md for the rules and their order.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from watchman_collector.records import Call, ConnectionType, NodeKind, Span, SpanKind

__all__ = ["USER_NODE", "PairStats", "SpanPairer"]

USER_NODE = "user"
"""The client of root SERVER spans: the outside world (browsers, curl, uninstrumented callers)."""

_NS_PER_S = 1_000_000_000
_MAX_ADDRESSES = 10_000  # learned server.address → service entries (FIFO beyond)
_MAX_SERVICES = 10_000  # names known to report spans, to tell services from virtual peers

_CLIENT, _SERVER, _PRODUCER, _CONSUMER = (
    SpanKind.CLIENT,
    SpanKind.SERVER,
    SpanKind.PRODUCER,
    SpanKind.CONSUMER,
)
_CALLER = True  # the dedupe map's value for a CLIENT or PRODUCER span (others: their service)
# `error.type` values of the HTTP clients' instrumentations for a connection that never reached
# a server (httpx, requests, urllib3, aiohttp, the standard library).
_NEVER_ANSWERED = frozenset(
    {
        "ConnectError",
        "ConnectTimeout",
        "ConnectionError",
        "ConnectionRefusedError",
        "NewConnectionError",
        "ClientConnectorError",
    }
)
_DIRECT = ConnectionType.DIRECT
_VIRTUAL = ConnectionType.VIRTUAL_NODE
_MESSAGING = ConnectionType.MESSAGING_SYSTEM
_DATABASE = ConnectionType.DATABASE
_SERVICE = NodeKind.SERVICE


def _error_type(client: Span, server: Span) -> str | None:
    """The failed half's error.type, the caller's first (timeouts and refusals show there)."""
    if client.failed and client.error_type:
        return client.error_type
    if server.failed:
        return server.error_type or client.error_type
    return client.error_type if client.failed else None


@dataclass(frozen=True, slots=True)
class PairStats:
    """What the pairer did so far (counters only grow, except `pending`)."""

    pending: int  # halves waiting for their partner now
    paired: int  # calls made from two halves
    unpaired: int  # calls made from one half whose partner never came (expired or evicted)
    duplicates: int  # spans ignored: (trace_id, span_id) already seen
    evicted: int  # halves pushed out of a full store (each became an unpaired call)
    expired: int  # halves that waited `ttl_s` (each became an unpaired call)
    unnamed: int  # lone client halves with no peer attribute to name a node by: no call
    immediate: int  # calls complete from one span: database, root SERVER (from `user`)


class _Half:
    """One pending entry: a caller-side span, a callee-side span, or a non-RPC child."""

    __slots__ = ("client", "server", "stamp", "weak")

    def __init__(self, stamp: int, client: Span | None, server: Span | None, weak: bool) -> None:
        self.stamp = stamp  # the pairer's watermark when stored: FIFO order is expiry order
        self.client = client
        self.server = server
        self.weak = weak  # server is an INTERNAL child: a call only if its parent's service differs


class SpanPairer:
    """Pairs spans into `Call`s in a bounded store with a TTL in event time.

    `add()` returns the calls complete now; `expire(now_ns)` returns the unpaired calls of halves
    older than `ttl_s`. When `max_pending` halves wait, the oldest is evicted as an unpaired call.
    """

    def __init__(
        self,
        *,
        ttl_s: float = 10.0,
        max_pending: int = 100_000,
        dedupe_capacity: int = 200_000,
    ) -> None:
        if ttl_s <= 0 or max_pending < 1 or dedupe_capacity < 1:
            msg = f"need ttl_s > 0 and positive capacities, got {ttl_s=} {max_pending=}"
            raise ValueError(msg)
        self.ttl_s = ttl_s
        self.max_pending = max_pending
        self.dedupe_capacity = dedupe_capacity
        self._ttl_ns = int(ttl_s * _NS_PER_S)
        # OrderedDict, not dict: popping the oldest of a plain dict again and again rescans the
        # deleted slots at its front (quadratic); OrderedDict.popitem(last=False) is O(1).
        self._pending: OrderedDict[bytes, _Half] = OrderedDict()
        # Recently seen spans: the dedupe set, and each span's service (`_CALLER` for a CLIENT or
        # PRODUCER span), so a child can tell whether its parent was in another service. Values
        # are a shared str or bool, not a tuple per span, and keys the 64-bit hash of trace id +
        # span id, not the 24 bytes. Two spans whose ids hash alike would count as one: about two
        # chances in 10^9 among 300,000 ids, and not something a sender can aim for (bytes hashes
        # are keyed per process). The ids are kept in generations of half the capacity: the one
        # being filled and the two before it, so at least `dedupe_capacity` ids (at most 1.5×)
        # are remembered. Dropping a whole generation, rather than the oldest id one at a time,
        # keeps each dict free of the deleted slots a FIFO leaves behind, which made a
        # 200,000-id FIFO dict take 20 MiB instead of 10 (docs/performance.md).
        self._generation = (dedupe_capacity + 1) // 2
        self._seen: dict[int, str | bool] = {}  # the generation being filled
        self._newer: dict[int, str | bool] = {}  # the two full generations before it
        self._older: dict[int, str | bool] = {}
        self._addresses: OrderedDict[str, str] = OrderedDict()
        self._taught: dict[tuple[str, int | None], str] = {}
        self._services: OrderedDict[str, None] = OrderedDict()
        self._watermark = 0
        self._paired = self._unpaired = self._duplicates = 0
        self._evicted = self._expired = self._unnamed = self._immediate = 0

    @property
    def stats(self) -> PairStats:
        """A snapshot of the counters."""
        return PairStats(
            pending=len(self._pending),
            paired=self._paired,
            unpaired=self._unpaired,
            duplicates=self._duplicates,
            evicted=self._evicted,
            expired=self._expired,
            unnamed=self._unnamed,
            immediate=self._immediate,
        )

    def service_for_address(self, address: str, port: int | None = None) -> str | None:
        """The service learned for `address[:port]` from earlier paired calls, if any."""
        if port is not None:
            found = self._addresses.get(f"{address}:{port}")
            if found is not None:
                return found
        return self._addresses.get(address)

    def add(self, spans: Iterable[Span]) -> list[Call]:  # hot loop
        """Take spans in; return the calls that are complete now."""
        out: list[Call] = []
        seen, newer, older = self._seen, self._newer, self._older
        generation = self._generation
        pending = self._pending
        services = self._services
        last_service = None
        max_pending = self.max_pending
        watermark = self._watermark
        # Locals and inlined common cases: this loop runs once per span (see docs/performance.md).
        for span in spans:
            trace_id = span.trace_id
            key = trace_id + span.span_id
            seen_key = hash(key)
            if seen_key in seen or seen_key in newer or seen_key in older:
                self._duplicates += 1
                continue
            service = span.service
            kind = span.kind
            caller = kind is _CLIENT or kind is _PRODUCER
            seen[seen_key] = _CALLER if caller else service
            if len(seen) >= generation:
                seen, newer, older = self._next_generation()
            # Spans come grouped by resource, sharing one service string: check it once a run.
            if service is not last_service:
                last_service = service
                if service not in services:
                    services[service] = None
                    if len(services) > _MAX_SERVICES:
                        services.popitem(last=False)
            if span.end_ns > watermark:
                watermark = self._watermark = span.end_ns

            if caller:
                if kind is _CLIENT and span.db_system:
                    out.append(self._database_call(span))
                    continue
                if span.failed and span.error_type in _NEVER_ANSWERED:
                    # The connection failed: no server half will ever come, so the call counts
                    # now instead of after the TTL (a crashed callee is named seconds sooner).
                    self._lone_call(_Half(watermark, span, None, weak=False), out)
                    continue
                waiting = pending.get(key)
                if waiting is None:
                    # The usual case, inlined: the callee's half has not come yet.
                    pending[key] = _Half(watermark, span, None, False)
                    if len(pending) > max_pending:
                        self._evict(out)
                    continue
                if waiting.server is not None:
                    child = waiting.server
                    if not waiting.weak or child.service != service:
                        del pending[key]
                        out.append(self._paired_call(span, child))
                        continue
                self._store(key, _Half(watermark, span, None, weak=False), out)
                continue

            # A span of any other kind may be the parent of a child that came first.
            if pending:
                waiting = pending.get(key)
                if waiting is not None and waiting.server is not None and waiting.client is None:
                    del pending[key]
                    child = waiting.server
                    if child.service != service or not waiting.weak:
                        out.append(self._call(service, span.instance, child))

            parent = span.parent_span_id
            if kind is _SERVER or kind is _CONSUMER:
                if kind is _SERVER:
                    if not parent:
                        out.append(self._root_call(span))
                        continue
                    parent_key = trace_id + parent
                    waiting = pending.get(parent_key)
                    if waiting is not None and waiting.client is not None:
                        del pending[parent_key]
                        out.append(self._paired_call(waiting.client, span))
                        continue
                    if waiting is None and (
                        (h := hash(parent_key)) not in seen and h not in newer and h not in older
                    ):
                        # The usual case, inlined: the caller's half has not come yet.
                        pending[parent_key] = _Half(watermark, None, span, False)
                        if len(pending) > max_pending:
                            self._evict(out)
                        continue
                    keys = [parent_key]
                else:
                    keys = [trace_id + parent] if parent else []
                    keys.extend(t + s for t, s in span.links)
                    if not keys:
                        out.append(self._root_call(span))
                        continue
                if self._match_callee(span, keys, out):
                    continue
                self._store(keys[0], _Half(watermark, None, span, weak=False), out)
            elif parent:
                parent_key = trace_id + parent
                h = hash(parent_key)
                known = seen.get(h, newer.get(h, older.get(h)))  # `_known`, inlined
                if known is None:
                    if parent_key not in pending:
                        self._store(parent_key, _Half(watermark, None, span, weak=True), out)
                    continue
                waiting = pending.get(parent_key)
                if waiting is not None and waiting.client is not None:
                    # Child of a CLIENT/PRODUCER span: the callee's server side is not marked.
                    if waiting.client.service != service:
                        del pending[parent_key]
                        out.append(self._paired_call(waiting.client, span))
                elif known is not _CALLER and known != service:
                    out.append(self._call(known, "", span))  # type: ignore[arg-type]
        return out

    def expire(self, now_ns: int) -> list[Call]:
        """Turn halves stored more than `ttl_s` before `now_ns` (event time) into unpaired calls."""
        out: list[Call] = []
        cutoff = now_ns - self._ttl_ns
        pending = self._pending
        while pending:
            key = next(iter(pending))
            half = pending[key]
            if half.stamp > cutoff:
                break
            del pending[key]
            if not half.weak:
                self._expired += 1
                self._lone_call(half, out)
        return out

    def flush(self) -> list[Call]:
        """Turn every pending half into an unpaired call now (end of a replay)."""
        out: list[Call] = []
        while self._pending:
            _, half = self._pending.popitem(last=False)
            if not half.weak:
                self._expired += 1
                self._lone_call(half, out)
        return out

    # -- internals ---------------------------------------------------------------------------

    def _store(self, key: bytes, half: _Half, out: list[Call]) -> None:
        pending = self._pending
        if key in pending:  # a new key is appended last already: no move for it
            pending.move_to_end(key)
        pending[key] = half
        if len(pending) > self.max_pending:
            self._evict(out)

    def _evict(self, out: list[Call]) -> None:
        """Push the oldest halves out of a store holding more than `max_pending`."""
        pending = self._pending
        while len(pending) > self.max_pending:
            _, oldest = pending.popitem(last=False)
            if not oldest.weak:
                self._evicted += 1
                self._lone_call(oldest, out)

    def _next_generation(
        self,
    ) -> tuple[dict[int, str | bool], dict[int, str | bool], dict[int, str | bool]]:
        """Start a new generation of seen ids, forgetting the oldest; the three, newest first."""
        self._older, self._newer, self._seen = self._newer, self._seen, {}
        return self._seen, self._newer, self._older

    def _known(self, seen_key: int) -> str | bool | None:
        """The dedupe map's value for a seen span (its service, or `_CALLER`); None if unseen."""
        return self._seen.get(seen_key, self._newer.get(seen_key, self._older.get(seen_key)))

    def _match_callee(self, span: Span, keys: list[bytes], out: list[Call]) -> bool:
        pending = self._pending
        for key in keys:
            waiting = pending.get(key)
            if waiting is not None and waiting.client is not None:
                del pending[key]
                out.append(self._paired_call(waiting.client, span))
                return True
        # The parent arrived earlier and was not a caller span: a cross-service call without a
        # CLIENT span (an uninstrumented HTTP library that still propagated the context).
        if not span.parent_span_id:
            return False
        known = self._known(hash(keys[0]))
        if known is not None and known is not _CALLER:
            out.append(self._call(known, "", span))  # type: ignore[arg-type]
            return True
        return False

    def _paired_call(self, client: Span, server: Span) -> Call:
        self._paired += 1
        address = client.server_address
        client_service = client.service
        server_service = server.service
        if (
            address
            and client_service != server_service
            and self._taught.get((address, client.server_port)) != server_service
        ):
            self._learn(address, client.server_port, server_service)
        client_failed = client.failed
        server_failed = server.failed
        start = client.start_ns
        # Span.duration_s inlined: two property calls per paired call are measurable.
        client_ns = client.end_ns - start
        server_ns = server.end_ns - server.start_ns
        # Positional: keyword arguments cost measurably on a call made per paired span.
        return Call(
            client_service,
            server_service,
            _MESSAGING if client.kind is _PRODUCER or server.kind is _CONSUMER else _DIRECT,
            start,
            client_ns / 1e9 if client_ns > 0 else 0.0,
            server_ns / 1e9 if server_ns > 0 else 0.0,
            client_failed or server_failed,
            client.trace_id,
            _SERVICE,
            _SERVICE,
            client.instance,
            server.instance,
            _error_type(client, server) if client_failed or server_failed else None,
        )

    def _call(self, client: str, client_instance: str, child: Span) -> Call:
        """A call from a parent span that is no CLIENT/PRODUCER span to its child in a service.

        The parent's duration is not the call's, so the call has no client-side latency.
        """
        self._paired += 1
        return Call(
            client=client,
            server=child.service,
            connection_type=_MESSAGING if child.kind is _CONSUMER else _DIRECT,
            time_ns=child.start_ns,
            client_latency_s=None,
            server_latency_s=child.duration_s,
            failed=child.failed,
            trace_id=child.trace_id,
            client_instance=client_instance,
            server_instance=child.instance,
            error_type=child.error_type if child.failed else None,
        )

    def _root_call(self, span: Span) -> Call:
        self._immediate += 1
        if span.kind is _CONSUMER and span.messaging_system:
            client, client_kind = span.messaging_system, NodeKind.VIRTUAL
        else:
            client, client_kind = USER_NODE, NodeKind.USER
        return self._from_outside(span, client, client_kind)

    def _from_outside(self, span: Span, client: str, client_kind: NodeKind) -> Call:
        return Call(
            client=client,
            server=span.service,
            connection_type=_MESSAGING if span.kind is _CONSUMER else _VIRTUAL,
            time_ns=span.start_ns,
            client_latency_s=None,
            server_latency_s=span.duration_s,
            failed=span.failed,
            trace_id=span.trace_id,
            client_kind=client_kind,
            server_instance=span.instance,
            error_type=span.error_type if span.failed else None,
        )

    def _database_call(self, span: Span) -> Call:
        self._immediate += 1
        db = span.db_system or ""
        if span.peer_service:
            name = span.peer_service
        elif span.server_address:
            name = f"{db}@{span.server_address}"
        else:
            name = db
        # One span is all a database call has: its duration is both sides' latency, as the
        # servicegraph connector does, so server-side histograms of database edges are filled.
        ns = span.end_ns - span.start_ns
        latency = ns / 1e9 if ns > 0 else 0.0
        failed = span.failed
        return Call(
            span.service,
            name,
            _DATABASE,
            span.start_ns,
            latency,
            latency,
            failed,
            span.trace_id,
            _SERVICE,
            NodeKind.DATABASE,
            span.instance,
            "",
            span.error_type if failed else None,
        )

    def _lone_call(self, half: _Half, out: list[Call]) -> None:
        client = half.client
        if client is None:
            server = half.server
            if server is None:  # pragma: no cover - every stored half has one side
                return
            # Its caller propagated context but reported no span: an uninstrumented proxy,
            # a browser, a test client. Messaging: the broker delivered from an unseen producer.
            self._unpaired += 1
            if server.kind is _CONSUMER and server.messaging_system:
                out.append(self._from_outside(server, server.messaging_system, NodeKind.VIRTUAL))
            else:
                out.append(self._from_outside(server, USER_NODE, NodeKind.USER))
            return
        named = self._name_peer(client)
        if named is None:
            self._unnamed += 1
            return
        name, kind, connection = named
        self._unpaired += 1
        out.append(
            Call(
                client=client.service,
                server=name,
                connection_type=connection,
                time_ns=client.start_ns,
                client_latency_s=client.duration_s,
                server_latency_s=None,
                failed=client.failed,
                trace_id=client.trace_id,
                server_kind=kind,
                client_instance=client.instance,
                error_type=client.error_type if client.failed else None,
            )
        )

    def _name_peer(self, span: Span) -> tuple[str, NodeKind, ConnectionType] | None:
        """The node an unanswered caller span called, by the rules of docs/pair.md."""
        messaging = span.kind is _PRODUCER
        peer = span.peer_service
        if peer:
            if peer in self._services:
                return peer, NodeKind.SERVICE, _MESSAGING if messaging else _DIRECT
            return peer, NodeKind.VIRTUAL, _MESSAGING if messaging else _VIRTUAL
        address = span.server_address
        if address:
            learned = self.service_for_address(address, span.server_port)
            if learned is not None:
                return learned, NodeKind.SERVICE, _MESSAGING if messaging else _DIRECT
        if messaging and span.messaging_system:
            return span.messaging_system, NodeKind.VIRTUAL, _MESSAGING
        if address:
            return address, NodeKind.VIRTUAL, _MESSAGING if messaging else _VIRTUAL
        return None

    def _learn(self, address: str, port: int | None, service: str) -> None:
        addresses = self._addresses
        # Every paired call teaches the same mapping again: only a new or changed one costs work.
        # `_taught` remembers what is known to be taught already, without building the key.
        port_key = f"{address}:{port}" if port is not None else None
        if addresses.get(address) != service or (
            port_key is not None and addresses.get(port_key) != service
        ):
            for key in (address, port_key) if port_key is not None else (address,):
                addresses[key] = service
                addresses.move_to_end(key)
            while len(addresses) > _MAX_ADDRESSES:
                addresses.popitem(last=False)
            # A change (rare) may overwrite or evict entries `_taught` vouches for.
            self._taught.clear()
        elif len(self._taught) >= _MAX_ADDRESSES:
            self._taught.clear()
        self._taught[(address, port)] = service

    def __repr__(self) -> str:
        s = self.stats
        return f"SpanPairer(pending={s.pending}, paired={s.paired}, unpaired={s.unpaired})"
