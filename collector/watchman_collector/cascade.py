"""The `cascade` stage: tell root causes from symptoms, and predict which callers fail next.

Named `cascade`, not `propagate`: in OpenTelemetry "propagate" means passing trace context.

Root cause vs symptom. A node's anomaly is *explained* when the calls it makes into an unhealthy
dependency carry it: at least half of its excess failures are excess failures on its outgoing
unhealthy edges, or at least half of its extra p95 latency shows on such an edge. An explained
node is a symptom and is attributed, edge by edge downstream, to the root cause that explains it.
An unhealthy node that nothing below it explains is a root cause; a service that is down (no
heartbeat, or nobody answers its callers) is always its own root cause.

Cascade prediction. From each root cause the walk goes upstream over callers. For a caller `u` of
a failing node `v` the expected error ratio is `share × p_fail × propagation`: the calls into
`v` per request `u` serves, the share of those calls failing now (or, when `v` is slowing down,
the share already near the timeout `u` shows), and how often a failed call into `v` has made `u`
fail so far (a Beta-smoothed ratio: an optional call's failures stop propagating once observed).
A caller whose expected error ratio clears its own failing threshold while its observed one does
not yet is *at risk*; the ETA is when the callee's p95 reaches the caller's timeout on its current
slope, or now when errors already flow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from watchman_collector.alert import Role
from watchman_collector.detect import (
    Detection,
    EdgeHealth,
    Evidence,
    Health,
    NodeHealth,
    PolicyBook,
    Signals,
)
from watchman_collector.graph import ServiceGraph
from watchman_collector.records import NodeKind
from watchman_collector.rules import RuleSet
from watchman_collector.stats import RedSeries

__all__ = ["CascadePredictor", "Diagnosis", "Risk", "Role", "Suspect"]

_NS = 1_000_000_000

# Evidence that can travel along calls; saturation and a partial instance loss stay local.
_CAUSAL = frozenset(
    {
        Signals.ERROR_RATIO,
        Signals.LATENCY,
        Signals.SERVICE_DOWN,
        Signals.UNREACHABLE,
    }
)
_DOWN = frozenset({Signals.SERVICE_DOWN, Signals.UNREACHABLE})
_SEVERITY = {Health.DOWN: 1.0, Health.FAILING: 0.8, Health.DEGRADED: 0.5, Health.HEALTHY: 0.0}


@dataclass(frozen=True, slots=True)
class Suspect:
    """One unhealthy node, with the part it plays."""

    service: str
    role: Role
    root_cause: str  # the service blamed; equal to `service` for a root cause
    score: float  # 0..1, the ranking of suspects
    health: Health
    onset_ns: int | None
    evidence: tuple[Evidence, ...]
    path: tuple[str, ...]  # from this node down to its root cause (just itself for a root)
    explained: float  # 0..1, how much of the anomaly its unhealthy callees carry
    exemplars: tuple[str, ...]  # trace ids (hex) of failed and slowest calls


@dataclass(frozen=True, slots=True)
class Risk:
    """A caller predicted to fail because of a failing dependency."""

    service: str
    root_cause: str
    via: str  # the callee through which the failure reaches it
    share: float  # calls into `via` per request the caller serves (capped at 1)
    propagation: float  # observed chance that a failed call into `via` fails the caller
    predicted_error_ratio: float
    current_error_ratio: float
    threshold: float  # the caller's failing threshold
    eta_s: float | None  # seconds until the predicted breach; 0 = now; None = unknown
    reason: str  # "errors" | "timeouts"
    depth: int  # hops from the root cause


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """Ranked suspects and predicted cascades at one tick."""

    now_ns: int
    suspects: tuple[Suspect, ...]
    risks: tuple[Risk, ...]

    def root_causes(self) -> list[Suspect]:
        """The suspects judged root causes, best first."""
        return [s for s in self.suspects if s.role is Role.ROOT_CAUSE]

    def suspect(self, service: str) -> Suspect | None:
        """The suspect entry of `service`, if it is unhealthy."""
        return next((s for s in self.suspects if s.service == service), None)


class CascadePredictor:
    """Turns a `Detection` on a `ServiceGraph` into a `Diagnosis`."""

    def __init__(
        self,
        rules: RuleSet | None = None,
        *,
        max_depth: int = 6,
        prior_propagation: float = 0.5,
        prior_weight: float = 5.0,
        explained_share: float = 0.5,
        horizon_s: float = 120.0,
    ) -> None:
        self.policy = PolicyBook(rules)
        self.max_depth = max_depth
        self.prior_propagation = prior_propagation
        self.prior_weight = prior_weight
        self.explained_share = explained_share
        self.horizon_s = horizon_s

    def diagnose(self, graph: ServiceGraph, detection: Detection) -> Diagnosis:
        """Rank suspects and predict cascades for one tick."""
        nodes = detection.nodes
        causal = {
            name: n
            for name, n in nodes.items()
            if n.health > Health.HEALTHY and any(e.signal in _CAUSAL for e in n.evidence)
        }
        explained: dict[str, tuple[float, str | None]] = {
            name: self._explanation(graph, detection, n) for name, n in causal.items()
        }
        # A callee can be implicated by its callers alone: their calls into it fail or slow
        # down while its own series looks fine (a slow ramp its own baseline absorbed, or a
        # peer that reports nothing). It is then judged by those unhealthy edges.
        implicated = _implicated(
            graph,
            detection,
            {via for _, via in explained.values() if via is not None} - set(causal),
        )
        for name in implicated:
            explained[name] = (0.0, None)
        judged: dict[str, NodeHealth] = {**causal, **implicated}
        roots = {name for name, (_, via) in explained.items() if via is None}

        def attribute(name: str, seen: tuple[str, ...]) -> tuple[str, ...]:
            via = explained[name][1]
            if via is None or via in seen or via not in explained:
                return (*seen, name)
            return attribute(via, (*seen, name))

        paths = {name: attribute(name, ()) for name in judged}
        # A cycle of mutual explanations has no root below it: its deepest member is the root.
        for path in paths.values():
            if path[-1] not in roots:
                roots.add(path[-1])
                explained[path[-1]] = (explained[path[-1]][0], None)

        symptoms_of: dict[str, int] = dict.fromkeys(roots, 0)
        for name, path in paths.items():
            if name not in roots:
                symptoms_of[path[-1]] = symptoms_of.get(path[-1], 0) + 1
        total = max(len(judged), 1)
        onsets = [n.onset_ns for n in judged.values() if n.onset_ns is not None]
        first_onset = min(onsets) if onsets else None

        suspects: list[Suspect] = []
        for name, node in judged.items():
            path = paths[name]
            severity = _SEVERITY[node.health]
            if name in roots:
                # The more of the incident a root explains, and the earlier it started, the
                # likelier it is the cause; ties are broken by name for deterministic output.
                reach = (1 + symptoms_of.get(name, 0)) / (1 + total)
                early = 1.0
                if first_onset is not None and node.onset_ns is not None:
                    early = 1.0 / (1.0 + max(node.onset_ns - first_onset, 0) / (60 * _NS))
                score = severity * (0.5 + 0.3 * reach + 0.2 * early)
                role = Role.ROOT_CAUSE
                path = (name,)
            else:
                score = 0.3 * severity * (1.0 - explained[name][0] / 2)
                role = Role.SYMPTOM
            suspects.append(
                Suspect(
                    service=name,
                    role=role,
                    root_cause=path[-1],
                    score=round(min(score, 1.0), 4),
                    health=node.health,
                    onset_ns=node.onset_ns,
                    evidence=node.evidence,
                    path=path,
                    explained=round(explained[name][0], 4),
                    exemplars=_exemplars(graph, name),
                )
            )
        # Nodes unhealthy only locally (saturation, lost instances, a traffic drop) are never
        # blamed for others. A traffic drop below a failing caller is that caller's symptom.
        for name, node in nodes.items():
            if node.health == Health.HEALTHY or name in judged:
                continue
            upstream = _upstream_root(graph, name, paths, roots)
            suspects.append(
                Suspect(
                    service=name,
                    role=Role.ROOT_CAUSE if upstream is None else Role.SYMPTOM,
                    root_cause=upstream or name,
                    score=round(0.2 * _SEVERITY[node.health], 4),
                    health=node.health,
                    onset_ns=node.onset_ns,
                    evidence=node.evidence,
                    path=(name,) if upstream is None else (name, upstream),
                    explained=0.0,
                    exemplars=_exemplars(graph, name),
                )
            )
        suspects.sort(key=lambda s: (-s.score, s.onset_ns or 0, s.service))
        risks = self._predict(graph, detection, sorted(roots), judged)
        return Diagnosis(now_ns=detection.now_ns, suspects=tuple(suspects), risks=risks)

    # -- root cause vs symptom ---------------------------------------------------------------

    def _explanation(
        self,
        graph: ServiceGraph,
        detection: Detection,
        node: NodeHealth,
    ) -> tuple[float, str | None]:
        """How much of `node`'s anomaly its unhealthy outgoing edges carry, and the main callee."""
        if any(e.signal in _DOWN for e in node.evidence):
            return 0.0, None
        bad: list[EdgeHealth] = []
        for callee in graph.callees(node.service):
            edge = detection.edges.get((node.service, callee))
            if edge is None or callee == node.service:
                continue
            callee_health = detection.nodes.get(callee)
            callee_bad = callee_health is not None and any(
                e.signal in _CAUSAL for e in callee_health.evidence
            )
            if callee_bad or any(e.signal in _CAUSAL for e in edge.evidence):
                bad.append(edge)
        slower_edges = (
            _slower_edges(graph, detection, node.service, bad) if node.has(Signals.LATENCY) else []
        )
        if not bad and not slower_edges:
            return 0.0, None
        # Either kind of anomaly may be carried: failed calls on the edges, or extra latency on
        # them — counted once per call the node makes on the edge per request it serves, so
        # retries and fan-out are accounted for. A node whose "errors" are its callers timing
        # out on it while it waits on a slow dependency is explained by that latency.
        carried: dict[str, float] = {}
        shares: list[float] = []
        if node.has(Signals.ERROR_RATIO):
            base = node.baseline_error_ratio or 0.0
            excess = node.failed - node.calls * base
            for e in bad:
                carried[e.server] = max(e.failed - e.calls * (e.baseline_error_ratio or 0.0), 0.0)
            shares.append(min(sum(carried.values()) / excess, 1.0) if excess > 0 else 1.0)
        if node.has(Signals.LATENCY) and node.p95_s is not None:
            extra = node.p95_s - (node.baseline_p95_s or 0.0)
            served = max(node.calls, 1)
            slower: dict[str, float] = {}
            # Any callee that got slower may carry the latency, flagged or not: early in a
            # gradual slowdown the callee's own test lags behind its callers' sum of waits.
            for e in slower_edges:
                delta = max((e.p95_s or 0.0) - (e.baseline_p95_s or e.p95_s or 0.0), 0.0)
                slower[e.server] = delta * max(e.calls / served, 1.0)
                carried[e.server] = carried.get(e.server, 0.0) + slower[e.server]
            shares.append(min(max(slower.values()) / extra, 1.0) if extra > 0 else 1.0)
        if not shares:  # only a traffic drop or the like: not something callees explain
            return 0.0, None
        share = max(shares)
        if share < self.explained_share:
            return share, None
        main = max(carried, key=lambda k: (carried[k], k))
        return share, main

    # -- cascade prediction ------------------------------------------------------------------

    def _predict(
        self,
        graph: ServiceGraph,
        detection: Detection,
        roots: list[str],
        causal: Mapping[str, NodeHealth],
    ) -> tuple[Risk, ...]:
        best: dict[tuple[str, str], Risk] = {}
        for root in roots:
            # (node, probability that a call into it fails now or soon, eta, reason, depth)
            frontier: list[tuple[str, float, float | None, str, int]] = [
                (root, 1.0, 0.0, "errors", 0)
            ]
            visited = {root}
            while frontier:
                callee, _, _, _, depth = frontier.pop(0)
                if depth >= self.max_depth:
                    continue
                for caller in sorted(graph.callers(callee)):
                    node = detection.nodes.get(caller)
                    edge = detection.edges.get((caller, callee))
                    if node is None or edge is None or node.kind is not NodeKind.SERVICE:
                        continue
                    risk = self._risk(graph, root, node, edge, depth + 1)
                    if risk is None:
                        continue
                    key = (caller, root)
                    if (
                        key not in best
                        or risk.predicted_error_ratio > best[key].predicted_error_ratio
                    ):
                        best[key] = risk
                    if caller not in visited:
                        visited.add(caller)
                        frontier.append(
                            (caller, risk.predicted_error_ratio, risk.eta_s, risk.reason, depth + 1)
                        )
        # At risk: the predicted error ratio clears the caller's threshold (now, or within the
        # horizon when a callee's latency is heading for the caller's timeout) while the observed
        # one does not yet. A caller already slowed down by the callee (a latency symptom) can
        # still be at risk of the errors its timeouts will bring.
        at_risk = [
            r
            for r in best.values()
            if r.current_error_ratio < r.threshold
            and not _failing_on_errors(detection.nodes.get(r.service))
            and (
                r.predicted_error_ratio >= r.threshold
                or (r.reason == "timeouts" and r.eta_s is not None and r.eta_s <= self.horizon_s)
            )
        ]
        at_risk.sort(key=lambda r: (r.eta_s if r.eta_s is not None else 1e18, r.service))
        return tuple(at_risk)

    def _risk(
        self, graph: ServiceGraph, root: str, caller: NodeHealth, edge: EdgeHealth, depth: int
    ) -> Risk | None:
        policy = self.policy(caller.service)
        if edge.baseline_error_ratio is None and edge.baseline_p95_s is None:
            return None  # nothing learned about this edge yet (start-up): no prediction
        served = max(caller.calls, 1)
        share = min(edge.calls / served, 1.0) if caller.calls else 1.0
        # Failing now on this edge, above its own baseline.
        p_fail = max(edge.error_ratio - (edge.baseline_error_ratio or 0.0), 0.0)
        reason, eta = "errors", 0.0 if p_fail > 0 else None
        timeout = _timeout(edge)
        if timeout is not None and edge.p95_s is not None:
            state = graph.edge(edge.client, edge.server)
            slope = _p95_slope(state.red, graph.watermark_ns) if state else None
            near = _share_above(graph, edge, 0.8 * timeout)
            if near > p_fail:
                p_fail, reason = near, "timeouts"
                if edge.p95_s >= timeout:
                    eta = 0.0
                elif slope is not None and slope > 0:
                    eta = (timeout - edge.p95_s) / slope
                else:
                    eta = None
        if p_fail <= 0:
            return None
        excess = max(caller.failed - caller.calls * (caller.baseline_error_ratio or 0.0), 0.0)
        propagation = (excess + self.prior_weight * self.prior_propagation) / (
            edge.failed + self.prior_weight
        )
        propagation = min(max(propagation, 0.0), 1.0)
        predicted = min(share * p_fail * propagation, 1.0)
        return Risk(
            service=caller.service,
            root_cause=root,
            via=edge.server,
            share=round(share, 4),
            propagation=round(propagation, 4),
            predicted_error_ratio=round(predicted, 4),
            current_error_ratio=round(caller.error_ratio, 4),
            threshold=policy.error_failing,
            eta_s=None if eta is None else round(eta, 1),
            reason=reason,
            depth=depth,
        )


def _slower_edges(
    graph: ServiceGraph, detection: Detection, name: str, bad: list[EdgeHealth]
) -> list[EdgeHealth]:
    """The unhealthy outgoing edges plus those clearly slower than their learned baseline."""
    out = list(bad)
    for callee in graph.callees(name):
        e = detection.edges.get((name, callee))
        if e is None or e in out or e.p95_s is None or e.baseline_p95_s is None:
            continue
        if e.p95_s >= 2 * e.baseline_p95_s and e.p95_s - e.baseline_p95_s >= 0.05:
            out.append(e)
    return out


def _implicated(
    graph: ServiceGraph, detection: Detection, names: set[str]
) -> dict[str, NodeHealth]:
    """Verdicts for callees judged only through their callers' unhealthy edges into them."""
    out: dict[str, NodeHealth] = {}
    for name in sorted(names):
        node = detection.nodes.get(name)
        if node is None:
            continue
        edges = [
            e
            for c in graph.callers(name)
            if (e := detection.edges.get((c, name))) is not None and e.health > Health.HEALTHY
        ]
        if not edges:
            # Slower for its callers without a verdict of its own yet: judged on that latency.
            slow = [
                e
                for c in graph.callers(name)
                if (e := detection.edges.get((c, name))) is not None
                and e.p95_s is not None
                and e.baseline_p95_s is not None
                and e.p95_s >= 2 * e.baseline_p95_s
            ]
            if not slow:
                continue
            worst = max(slow, key=lambda e: (e.p95_s or 0.0) / (e.baseline_p95_s or 1.0))
            p95, base = worst.p95_s or 0.0, worst.baseline_p95_s or 0.0
            out[name] = replace(
                node,
                health=Health.DEGRADED,
                evidence=(
                    Evidence(
                        signal=Signals.LATENCY,
                        health=Health.DEGRADED,
                        value=p95,
                        baseline=base,
                        threshold=2 * base,
                        onset_ns=None,
                        detail=f"{worst.client} waits p95 {p95 * 1000:.0f}ms on it against a "
                        f"baseline of {base * 1000:.0f}ms",
                    ),
                ),
                onset_ns=None,
            )
            continue
        evidence = tuple(ev for e in edges for ev in e.evidence if ev.signal in _CAUSAL)
        onsets = [ev.onset_ns for ev in evidence if ev.onset_ns is not None]
        out[name] = replace(
            node,
            health=max(e.health for e in edges),
            evidence=evidence,
            onset_ns=min(onsets) if onsets else None,
        )
    return out


def _upstream_root(
    graph: ServiceGraph, name: str, paths: Mapping[str, tuple[str, ...]], roots: set[str]
) -> str | None:
    """The root cause of the nearest unhealthy caller (up to four hops), if any."""
    frontier, seen = [name], {name}
    for _ in range(4):
        callers = sorted({c for n in frontier for c in graph.callers(n)} - seen)
        for caller in callers:
            if caller in paths:
                return paths[caller][-1]
            if caller in roots:
                return caller
        seen.update(callers)
        frontier = callers
    return None


def _failing_on_errors(node: NodeHealth | None) -> bool:
    return node is not None and any(
        e.signal in _DOWN or (e.signal == Signals.ERROR_RATIO and e.health >= Health.FAILING)
        for e in node.evidence
    )


def _timeout(edge: EdgeHealth) -> float | None:
    """The timeout the caller shows: failed calls piling up at one client latency.

    Two or more failed exemplars within ±20 % of their median, well above the edge's usual p95,
    are taken as the caller giving up at a fixed deadline.
    """
    lat = edge.failed_latencies_s
    if len(lat) < 2:
        return None
    mid = lat[len(lat) // 2]
    close = [x for x in lat if abs(x - mid) <= 0.2 * mid]
    usual = edge.baseline_p95_s or 0.0
    if len(close) >= 2 and mid >= max(2 * usual, 0.05):
        return mid
    return None


def _share_above(graph: ServiceGraph, edge: EdgeHealth, limit_s: float) -> float:
    """Share of the edge's recent calls slower than `limit_s` (client side)."""
    state = graph.edge(edge.client, edge.server)
    if state is None:
        return 0.0
    view = state.red.window(graph.watermark_ns, 30.0)
    hist = view.client_latency if view.client_latency.count else view.latency
    if not hist.count:
        return 0.0
    above = 0
    for bound, n in zip((*hist.bounds, float("inf")), hist.counts, strict=True):
        if bound > limit_s:
            above += n
    return above / hist.count


def _p95_slope(series: RedSeries, now_ns: int) -> float | None:
    """Least-squares slope (seconds of p95 per second) over the last two minutes of buckets."""
    points: list[tuple[float, float]] = []
    for b in series.buckets(now_ns, 120.0):
        q = b.latency.quantile(0.95)
        if q is not None and b.calls >= 3:
            points.append((b.start_ns / _NS, q))
    if len(points) < 4:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    if den == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / den


def _exemplars(graph: ServiceGraph, name: str) -> tuple[str, ...]:
    node = graph.node(name)
    if node is None:
        return ()
    ids = [t for t, _, _ in node.exemplars.failed] + [t for t, _, _ in node.exemplars.slowest]
    return tuple(dict.fromkeys(ids))[:5]
