"""The `graph` stage: the service graph, with RED statistics per node and edge in event time.

A networkx `DiGraph` whose nodes are services (with their instances' heartbeats), databases,
virtual peers and `user`, and whose edges are the calls between them. Every node keeps the calls
it served and every edge its calls in `RedSeries` buckets, plus exemplar trace ids of failed and
slowest calls. Nodes and edges idle for `idle_expiry_s` expire; beyond `max_nodes` / `max_edges`
new ones fold into `__overflow__`. See docs/graph.md.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field

import networkx as nx

from watchman_collector.records import Call, ConnectionType, Heartbeat, NodeKind
from watchman_collector.stats import DETAIL_S, ROLLUP_S, RedSeries

__all__ = [
    "OVERFLOW",
    "EdgeState",
    "Exemplars",
    "GraphCounters",
    "InstanceState",
    "NodeState",
    "ServiceGraph",
]

OVERFLOW = "__overflow__"
"""The node (and the edge between it and itself) that new names fold into beyond the caps."""

_NS_PER_S = 1_000_000_000
_DEFAULT_INTERVAL_S = 10.0
_MAX_INTERVAL_S = 600.0  # a gap longer than this is an outage, not the heartbeat interval
_MISSED_BEATS = 3  # heartbeats missing before an instance is down
_EXEMPLAR_MAX_AGE_S = 900.0  # the longest view (15 min): older exemplars explain nothing shown

Exemplar = tuple[str, int, float]
"""(trace id as 32 hex characters, call time ns, latency s)."""


class Exemplars:
    """A few trace ids worth opening: the latest failed calls and the slowest recent calls."""

    __slots__ = ("capacity", "failed", "slowest")

    def __init__(self, capacity: int = 5) -> None:
        self.capacity = capacity
        self.failed: list[Exemplar] = []  # oldest first
        self.slowest: list[Exemplar] = []  # slowest first

    def offer(self, trace_id: bytes, time_ns: int, latency_s: float, failed: bool) -> None:
        """Keep this call if it failed (latest `capacity`) or is among the slowest."""
        cap = self.capacity
        if cap <= 0:
            return
        if failed:
            self.failed.append((trace_id.hex(), time_ns, latency_s))
            if len(self.failed) > cap:
                del self.failed[0]
        slowest = self.slowest
        if len(slowest) < cap or latency_s > slowest[-1][2]:
            entry = (trace_id.hex(), time_ns, latency_s)
            i = len(slowest)
            while i and slowest[i - 1][2] < latency_s:
                i -= 1
            slowest.insert(i, entry)
            if len(slowest) > cap:
                slowest.pop()

    def forget_before(self, time_ns: int) -> None:
        """Drop exemplars of calls older than `time_ns`."""
        # Called for every node and edge on every tick: rebuild only when something is stale.
        if any(e[1] < time_ns for e in self.failed):
            self.failed = [e for e in self.failed if e[1] >= time_ns]
        if any(e[1] < time_ns for e in self.slowest):
            self.slowest = [e for e in self.slowest if e[1] >= time_ns]

    def __repr__(self) -> str:
        return f"Exemplars(failed={len(self.failed)}, slowest={len(self.slowest)})"


@dataclass(slots=True)
class InstanceState:
    """One process of a service, as its heartbeats describe it."""

    instance: str
    host: str | None
    first_seen_ns: int
    last_heartbeat_ns: int
    uptime_s: float = 0.0
    cpu_utilization: float | None = None
    memory_bytes: int | None = None
    threads: int | None = None
    inflight: int | None = None
    interval_s: float = _DEFAULT_INTERVAL_S  # learned from the gap between heartbeats

    def is_up(self, now_ns: int) -> bool:
        """True unless the heartbeat has been missing for three intervals at `now_ns`."""
        return now_ns - self.last_heartbeat_ns <= _MISSED_BEATS * self.interval_s * _NS_PER_S


@dataclass(slots=True)
class NodeState:
    """A node: a service, a database, a virtual peer or `user`."""

    name: str
    kind: NodeKind
    first_seen_ns: int
    last_seen_ns: int
    served: RedSeries  # calls where this node is the server
    instances: dict[str, InstanceState] = field(default_factory=dict)
    exemplars: Exemplars = field(default_factory=Exemplars)


@dataclass(slots=True)
class EdgeState:
    """Calls from `client` to `server`."""

    client: str
    server: str
    connection_type: ConnectionType
    first_seen_ns: int
    last_seen_ns: int
    red: RedSeries
    exemplars: Exemplars = field(default_factory=Exemplars)
    unpaired: int = 0  # calls whose server half was never seen (only the caller reported)
    dropped: int = 0  # calls later than the allowed lateness, not counted in `red`
    # (client, server), made once: the graph's key of this edge, and detection's (a tuple made
    # for every edge on every tick was one more object for the garbage collector to visit).
    key: tuple[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.key = (self.client, self.server)


@dataclass(slots=True)
class GraphCounters:
    """What the graph folded, dropped and expired (only grow)."""

    overflow_nodes: int = 0  # calls and heartbeats whose new node was folded into __overflow__
    overflow_edges: int = 0  # calls whose new edge was folded into __overflow__ → __overflow__
    late_dropped: int = 0  # calls older than the allowed lateness
    expired_nodes: int = 0
    expired_edges: int = 0
    expired_instances: int = 0


# A node named by a call keeps the most specific kind it was seen as: a peer first known only
# by name (virtual) that later reports spans or heartbeats is a service.
_KIND_RANK = {NodeKind.VIRTUAL: 0, NodeKind.USER: 1, NodeKind.DATABASE: 2, NodeKind.SERVICE: 3}


class ServiceGraph:
    """Nodes and edges with RED statistics, instances and exemplars; bounded and expiring."""

    def __init__(
        self,
        *,
        bucket_s: float = 10,
        retention_s: float = 3600,
        allowed_lateness_s: float = 120,
        idle_expiry_s: float = 900,
        max_nodes: int = 5000,
        max_edges: int = 50000,
        exemplars: int = 5,
        detail_s: float = DETAIL_S,
        rollup_s: float = ROLLUP_S,
    ) -> None:
        if max_nodes < 1 or max_edges < 1 or idle_expiry_s <= 0 or allowed_lateness_s < 0:
            msg = "need max_nodes, max_edges, idle_expiry_s > 0 and allowed_lateness_s >= 0"
            raise ValueError(msg)
        # Validates the bucket settings once, up front.
        RedSeries(bucket_s, retention_s, detail_s=detail_s, rollup_s=rollup_s)
        self.detail_s = detail_s  # buckets keep `bucket_s` this far back, then `rollup_s`
        self.rollup_s = rollup_s
        self.bucket_s = bucket_s
        self.retention_s = retention_s
        self.allowed_lateness_s = allowed_lateness_s
        self.idle_expiry_s = idle_expiry_s
        self.max_nodes = max_nodes
        self.max_edges = max_edges
        self.exemplar_capacity = exemplars
        self.graph: nx.DiGraph[str] = nx.DiGraph()
        self.counters = GraphCounters()
        self.watermark_ns = 0
        # Plain dicts beside the DiGraph: the hot path looks state up here, and touches
        # networkx only when a node or edge is created or removed.
        self._nodes: dict[str, NodeState] = {}
        self._edges: dict[tuple[str, str], EdgeState] = {}

    # -- input -------------------------------------------------------------------------------

    def add_calls(self, calls: Iterable[Call]) -> None:
        """Count calls on their edge and on the node that served them, in event time."""
        edges = self._edges
        nodes = self._nodes
        lateness = self.allowed_lateness_s
        rank = _KIND_RANK
        now = self.watermark_ns
        late_ns = lateness * _NS_PER_S
        bucket_ns = int(self.bucket_s * _NS_PER_S)
        # Offsets into a RedSeries' open bucket (see stats' layout): client bins, server bins,
        # client-only bins; before them calls, failed and (sum, max) per kind at 2..7.
        bounds, cb, sb, ob = RedSeries.layout()
        ci = si = 0
        # One pass per call on the hot path: node lookups and the exemplar test are inlined,
        # builtins (max/min) are comparisons; see docs/performance.md.
        for call in calls:
            t = call.time_ns
            if t > now:
                now = self.watermark_ns = t
            client = nodes.get(call.client)
            if client is None or rank[call.client_kind] > rank[client.kind]:
                client = self._node_for(call.client, call.client_kind, t)
            elif t > client.last_seen_ns:
                client.last_seen_ns = t
            elif t < client.first_seen_ns:
                client.first_seen_ns = t
            server = nodes.get(call.server)
            if server is None or rank[call.server_kind] > rank[server.kind]:
                server = self._node_for(call.server, call.server_kind, t)
            elif t > server.last_seen_ns:
                server.last_seen_ns = t
            elif t < server.first_seen_ns:
                server.first_seen_ns = t
            edge = edges.get((client.name, server.name))
            if edge is None:
                edge = self._new_edge(client.name, server.name, call.connection_type, t)
            elif (
                edge.connection_type is ConnectionType.VIRTUAL_NODE
                and call.connection_type is not ConnectionType.VIRTUAL_NODE
            ):
                edge.connection_type = call.connection_type
            if t > edge.last_seen_ns:  # noqa: PLR1730  # hot path: no max() call
                edge.last_seen_ns = t
            failed = call.failed
            client_s = call.client_latency_s
            server_s = call.server_latency_s
            # RedSeries.add for the edge and the node at once, inlined (stats.add_call does the
            # same): one lateness test, bucket index and bisect per latency for both, and the
            # open bucket bumped in place. Calls are ~80% of the graph stage's time.
            if now - t > late_ns:
                self.counters.late_dropped += 1
                edge.dropped += 1
                continue
            idx = t // bucket_ns
            if client_s is not None:
                if client_s < 0.0:  # noqa: PLR1730  # clock skew; hot path: no max()
                    client_s = 0.0
                ci = bisect_left(bounds, client_s)
            if server_s is not None:
                if server_s < 0.0:  # noqa: PLR1730  # clock skew; hot path: no max()
                    server_s = 0.0
                si = bisect_left(bounds, server_s)
            # The edge, then the node that served it: a call too late for the edge's buckets
            # is dropped, not counted on the node either.
            dropped = False
            for red in (edge.red, server.served):
                flat = red._open.get(idx) or red._open_for(idx)  # hot path
                if flat is None:
                    if not red._add_sealed(idx, failed, ci, client_s, si, server_s):
                        dropped = red is edge.red
                        if dropped:
                            break
                    continue
                if idx < red.newest_index:  # type: ignore[operator]  # set by _open_for
                    red.late_writes += 1  # detection re-reads only what changed (window.py)
                flat[0] += 1
                if failed:
                    flat[1] += 1
                if client_s is not None:
                    flat[cb + ci] += 1
                    flat[2] += client_s
                    if client_s > flat[3]:  # noqa: PLR1730  # hot path: no max() call
                        flat[3] = client_s
                    if server_s is None:
                        flat[ob + ci] += 1
                        flat[6] += client_s
                        if client_s > flat[7]:  # noqa: PLR1730  # hot path: no max() call
                            flat[7] = client_s
                if server_s is not None:
                    flat[sb + si] += 1
                    flat[4] += server_s
                    if server_s > flat[5]:  # noqa: PLR1730  # hot path: no max() call
                        flat[5] = server_s
            if dropped:
                self.counters.late_dropped += 1
                edge.dropped += 1
                continue
            if server_s is None:  # the callee never answered as far as anyone reported
                edge.unpaired += 1
                latency = client_s
                if latency is None:
                    continue
            else:
                latency = server_s
            # Exemplars.offer keeps failed calls and the slowest few: most calls are neither.
            exemplars = edge.exemplars
            slowest = exemplars.slowest
            if (
                failed
                or len(slowest) < exemplars.capacity
                or (slowest and latency > slowest[-1][2])
            ):
                exemplars.offer(call.trace_id, t, latency, failed)
            exemplars = server.exemplars
            slowest = exemplars.slowest
            if (
                failed
                or len(slowest) < exemplars.capacity
                or (slowest and latency > slowest[-1][2])
            ):
                exemplars.offer(call.trace_id, t, latency, failed)

    def add_heartbeats(self, hbs: Iterable[Heartbeat]) -> None:
        """Record instances' liveness and usage; a service with only heartbeats is a node too."""
        for hb in hbs:
            t = hb.time_ns
            self.watermark_ns = max(self.watermark_ns, t)
            node = self._node_for(hb.service, NodeKind.SERVICE, t)
            inst = node.instances.get(hb.instance)
            if inst is None:
                node.instances[hb.instance] = InstanceState(
                    instance=hb.instance,
                    host=hb.host,
                    first_seen_ns=t,
                    last_heartbeat_ns=t,
                    uptime_s=hb.uptime_s,
                    cpu_utilization=hb.cpu_utilization,
                    memory_bytes=hb.memory_bytes,
                    threads=hb.threads,
                    inflight=hb.inflight,
                )
                continue
            inst.first_seen_ns = min(inst.first_seen_ns, t)
            if t <= inst.last_heartbeat_ns:
                continue  # a duplicate or an older beat: keep the newest values
            gap_s = (t - inst.last_heartbeat_ns) / _NS_PER_S
            if gap_s <= _MAX_INTERVAL_S:
                inst.interval_s = gap_s
            inst.last_heartbeat_ns = t
            inst.uptime_s = hb.uptime_s
            inst.host = hb.host or inst.host
            inst.cpu_utilization = hb.cpu_utilization
            inst.memory_bytes = hb.memory_bytes
            inst.threads = hb.threads
            inst.inflight = hb.inflight

    def expire(self, now_ns: int) -> None:
        """Forget edges, instances and nodes idle for `idle_expiry_s` at `now_ns`; prune buckets."""
        self.watermark_ns = max(self.watermark_ns, now_ns)
        cutoff = now_ns - int(self.idle_expiry_s * _NS_PER_S)
        exemplar_cutoff = now_ns - int(_EXEMPLAR_MAX_AGE_S * _NS_PER_S)
        graph = self.graph
        for key, edge in list(self._edges.items()):
            if edge.last_seen_ns < cutoff:
                del self._edges[key]
                graph.remove_edge(*key)
                self.counters.expired_edges += 1
            else:
                edge.red.prune(now_ns)
                edge.exemplars.forget_before(exemplar_cutoff)
        for name, node in list(self._nodes.items()):
            for inst_id, inst in list(node.instances.items()):
                if inst.last_heartbeat_ns < cutoff:
                    del node.instances[inst_id]
                    self.counters.expired_instances += 1
            if node.last_seen_ns < cutoff and graph.degree(name) == 0:
                del self._nodes[name]
                graph.remove_node(name)
                self.counters.expired_nodes += 1
            else:
                node.served.prune(now_ns)
                node.exemplars.forget_before(exemplar_cutoff)

    # -- queries -----------------------------------------------------------------------------

    def node(self, name: str) -> NodeState | None:
        """The node called `name`, if present."""
        return self._nodes.get(name)

    def edge(self, client: str, server: str) -> EdgeState | None:
        """The edge from `client` to `server`, if present."""
        return self._edges.get((client, server))

    def nodes(self) -> list[NodeState]:
        """All nodes, in the order they were first seen."""
        return list(self._nodes.values())

    def edges(self) -> list[EdgeState]:
        """All edges, in the order they were first seen."""
        return list(self._edges.values())

    def callers(self, name: str) -> list[str]:
        """Names of the nodes with an edge into `name`, sorted."""
        return sorted(self.graph.predecessors(name)) if name in self.graph else []

    def callees(self, name: str) -> list[str]:
        """Names of the nodes `name` has an edge to, sorted."""
        return sorted(self.graph.successors(name)) if name in self.graph else []

    # -- internals ---------------------------------------------------------------------------

    def _node_for(self, name: str, kind: NodeKind, time_ns: int) -> NodeState:
        node = self._nodes.get(name)
        if node is None:
            if len(self._nodes) >= self.max_nodes:
                self.counters.overflow_nodes += 1
                node = self._nodes.get(OVERFLOW)
                if node is None:
                    node = self._new_node(OVERFLOW, NodeKind.VIRTUAL, time_ns)
            else:
                return self._new_node(name, kind, time_ns)
        elif _KIND_RANK[kind] > _KIND_RANK[node.kind]:
            node.kind = kind
        node.last_seen_ns = max(node.last_seen_ns, time_ns)
        node.first_seen_ns = min(node.first_seen_ns, time_ns)
        return node

    def _new_node(self, name: str, kind: NodeKind, time_ns: int) -> NodeState:
        node = NodeState(
            name=name,
            kind=kind,
            first_seen_ns=time_ns,
            last_seen_ns=time_ns,
            served=RedSeries(
                self.bucket_s, self.retention_s, detail_s=self.detail_s, rollup_s=self.rollup_s
            ),
            exemplars=Exemplars(self.exemplar_capacity),
        )
        self._nodes[name] = node
        self.graph.add_node(name, state=node)
        return node

    def _new_edge(
        self, client: str, server: str, connection_type: ConnectionType, time_ns: int
    ) -> EdgeState:
        if len(self._edges) >= self.max_edges:
            self.counters.overflow_edges += 1
            client = server = OVERFLOW
            if OVERFLOW not in self._nodes:
                self._new_node(OVERFLOW, NodeKind.VIRTUAL, time_ns)
            existing = self._edges.get((OVERFLOW, OVERFLOW))
            if existing is not None:
                return existing
            connection_type = ConnectionType.VIRTUAL_NODE
        edge = EdgeState(
            client=client,
            server=server,
            connection_type=connection_type,
            first_seen_ns=time_ns,
            last_seen_ns=time_ns,
            red=RedSeries(
                self.bucket_s, self.retention_s, detail_s=self.detail_s, rollup_s=self.rollup_s
            ),
            exemplars=Exemplars(self.exemplar_capacity),
        )
        self._edges[edge.key] = edge
        self.graph.add_edge(client, server, state=edge)
        return edge

    def __repr__(self) -> str:
        return f"ServiceGraph(nodes={len(self._nodes)}, edges={len(self._edges)})"
