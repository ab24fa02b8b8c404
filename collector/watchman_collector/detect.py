"""The `detect` stage: judge every node and edge of the service graph at each evaluation tick.

Each signal is compared with two things: an absolute floor (Kiali's traffic-health tolerances:
an error ratio is worth a look from 0.1 % and failing from 10 %) and a learned, robust baseline
of the same series (median and IQR of 10 s buckets over a trailing window). A signal counts only
when it clears both, so a service that always answers 2 % errors is not flagged, and one whose
errors jump from 0 to 1 % with real traffic is. The baseline stops learning while its series is
anomalous, so a long outage is compared with the healthy past, not with itself.

Liveness comes from heartbeats (an instance whose heartbeat is missing for three intervals is
down; all instances down is a down service) and, for a service that reports nothing, from its
callers: calls that fail without any server half seen mean nobody is answering.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from statistics import median

from watchman_collector.graph import EdgeState, NodeState, ServiceGraph
from watchman_collector.records import NodeKind
from watchman_collector.rules import RuleSet, Thresholds, default_rules
from watchman_collector.stats import Bucket, RedSeries, RedView

__all__ = [
    "DetectPolicy",
    "Detection",
    "Detector",
    "EdgeHealth",
    "Evidence",
    "Health",
    "NodeHealth",
    "PolicyBook",
    "Signals",
]

_NS = 1_000_000_000


class Health(IntEnum):
    """A node's or edge's state, worst last; the value is `watchman_service_health`."""

    HEALTHY = 0
    DEGRADED = 1
    FAILING = 2
    DOWN = 3

    @property
    def label(self) -> str:
        """Lower-case name, as shown in the API and dashboards."""
        return self.name.lower()


class Signals:
    """Names of the signals detection judges (used in evidence and alert rules)."""

    ERROR_RATIO = "error_ratio"
    LATENCY = "latency_p95"
    TRAFFIC_DROP = "traffic_drop"
    INSTANCES_DOWN = "instances_down"
    SERVICE_DOWN = "service_down"
    UNREACHABLE = "unreachable"
    SATURATION = "cpu_saturation"


@dataclass(frozen=True, slots=True)
class DetectPolicy:
    """How one service is judged: the rules file's thresholds plus the method's own constants.

    The user-facing thresholds come from `rules.Thresholds` (`from_thresholds`); the rest are
    constants of the method, documented in `docs/detect.md`.
    """

    window_s: float = 30.0  # the "now" window each tick judges
    min_calls: int = 10  # fewer calls in the window: no error/latency judgement
    error_degraded: float = 0.001  # Kiali: degraded from 0.1 % 5xx
    error_failing: float = 0.10  # Kiali: failure from 10 % 5xx
    latency_quantile: float = 0.95
    latency_degraded_s: float = 0.1  # floors the quantile must also clear
    latency_failing_s: float = 1.0
    traffic_drop_degraded: float = 0.5  # rate this fraction below the baseline median
    traffic_drop_failing: float = 0.9
    cpu_degraded: float = 0.8  # an instance's CPU utilization (of one core)
    cpu_failing: float = 0.95
    heartbeat_misses: int = 3  # heartbeat intervals missed before an instance is down
    # Constants of the method.
    baseline_s: float = 600.0  # trailing healthy history the baseline learns from
    settle_s: float = 10.0  # newest event time not judged yet: SDK batches arrive late
    min_baseline_buckets: int = 6  # fewer healthy buckets learned: absolute floors only
    error_min_excess: float = 0.02  # above the baseline median, at least this much …
    error_z: float = 4.0  # … and this many binomial standard errors, computed with …
    error_noise_floor: float = 0.01  # … at least this ratio: 2 failures in 75 calls is noise
    error_min_failed: int = 5  # fewer failed calls in the window are never an error verdict
    latency_factor: float = 2.0  # the quantile at least this many times the baseline's …
    latency_failing_factor: float = 5.0
    latency_min_excess_s: float = 0.05  # … and at least 50 ms slower
    latency_iqr_k: float = 3.0  # and beyond median + k·σ(IQR) of the baseline buckets
    traffic_min_rate: float = 0.5  # baseline requests/s below which a drop is not judged

    @classmethod
    def from_thresholds(cls, t: Thresholds) -> DetectPolicy:
        """The policy for a service whose rules-file thresholds are `t`."""
        return cls(
            window_s=t.window_s,
            min_calls=t.min_requests,
            error_degraded=t.error_ratio.degraded,
            error_failing=t.error_ratio.failing,
            latency_quantile=t.latency_quantile,
            latency_degraded_s=t.latency_s.degraded,
            latency_failing_s=t.latency_s.failing,
            traffic_drop_degraded=t.traffic_drop.degraded,
            traffic_drop_failing=t.traffic_drop.failing,
            cpu_degraded=t.cpu_utilization.degraded,
            cpu_failing=t.cpu_utilization.failing,
            heartbeat_misses=t.heartbeat_misses,
        )


class PolicyBook:
    """Per-service `DetectPolicy`s derived from a `RuleSet` (overrides applied), cached."""

    def __init__(self, rules: RuleSet | None = None) -> None:
        self.rules = rules or default_rules()
        self._cache: dict[int, DetectPolicy] = {}

    def __call__(self, service: str) -> DetectPolicy:
        """The policy in force for `service`."""
        thresholds = self.rules.thresholds_for(service)
        key = id(thresholds)
        policy = self._cache.get(key)
        if policy is None:
            policy = self._cache[key] = DetectPolicy.from_thresholds(thresholds)
        return policy


@dataclass(frozen=True, slots=True)
class Evidence:
    """One signal that made a node or edge unhealthy, with the numbers behind it."""

    signal: str
    health: Health
    value: float
    baseline: float | None
    threshold: float
    onset_ns: int | None
    detail: str


@dataclass(frozen=True, slots=True)
class NodeHealth:
    """The judgement of one node at one tick."""

    service: str
    kind: NodeKind
    health: Health
    evidence: tuple[Evidence, ...]
    onset_ns: int | None  # earliest onset among the evidence
    calls: int
    failed: int
    error_ratio: float
    rate_per_s: float
    p95_s: float | None
    baseline_error_ratio: float | None
    baseline_p95_s: float | None
    instances_up: int
    instances: int
    reports: bool  # the node itself reported spans or heartbeats in the window

    def has(self, signal: str) -> bool:
        """Whether `signal` is among the evidence."""
        return any(e.signal == signal for e in self.evidence)


@dataclass(frozen=True, slots=True)
class EdgeHealth:
    """The judgement of one edge (client-side view of calls from `client` to `server`)."""

    client: str
    server: str
    health: Health
    evidence: tuple[Evidence, ...]
    onset_ns: int | None
    calls: int
    failed: int
    error_ratio: float
    p95_s: float | None
    baseline_error_ratio: float | None
    baseline_p95_s: float | None
    server_halves: int  # calls whose server half was seen (0: nobody answered)
    failed_latencies_s: tuple[float, ...]  # client latency of failed exemplars (timeouts show)


@dataclass(frozen=True, slots=True)
class Detection:
    """Everything one tick concluded, keyed by node name and (client, server)."""

    now_ns: int
    nodes: Mapping[str, NodeHealth]
    edges: Mapping[tuple[str, str], EdgeHealth]

    def unhealthy(self) -> list[NodeHealth]:
        """Unhealthy nodes, worst first, then by name (deterministic)."""
        bad = [n for n in self.nodes.values() if n.health > Health.HEALTHY]
        return sorted(bad, key=lambda n: (-n.health, n.service))


_Robust = tuple[float, float]  # (median, robust sigma)


@dataclass(slots=True)
class _BucketSummary:
    calls: int
    error_ratio: float | None
    p95_s: float | None


@dataclass(slots=True)
class _Baseline:
    """Per-bucket summaries of one series' healthy past; frozen while the series is anomalous."""

    maxlen: int
    summaries: deque[_BucketSummary] = field(default_factory=deque)
    learned_until_ns: int = 0  # end of the newest bucket folded in
    frozen: bool = False
    # (median, robust sigma) of error ratios and latency quantiles, and the median rate:
    # recomputed only when a bucket was learned, not on every tick (the tick's hot spot).
    _stats: tuple[_Robust | None, _Robust | None, float | None] | None = None

    def learn(
        self, buckets: Iterable[Bucket], bucket_ns: int, min_calls: int, quantile: float
    ) -> None:
        for b in buckets:
            end = b.start_ns + bucket_ns
            if end <= self.learned_until_ns:
                continue
            self.learned_until_ns = end
            if self.frozen:
                continue
            enough = b.calls >= max(1, min_calls // 3)
            self._stats = None
            self.summaries.append(
                _BucketSummary(
                    calls=b.calls,
                    error_ratio=b.failed / b.calls if enough else None,
                    p95_s=b.latency.quantile(quantile) if enough else None,
                )
            )
            while len(self.summaries) > self.maxlen:
                self.summaries.popleft()

    def stats(self, bucket_s: float) -> tuple[_Robust | None, _Robust | None, float | None]:
        """Robust statistics of errors and latency, and the median rate (None: no data)."""
        if self._stats is None:
            errors = [s.error_ratio for s in self.summaries if s.error_ratio is not None]
            p95s = [s.p95_s for s in self.summaries if s.p95_s is not None]
            rates = [s.calls / bucket_s for s in self.summaries]
            self._stats = (
                _median_sigma(errors) if errors else None,
                _median_sigma(p95s) if p95s else None,
                median(rates) if rates else None,
            )
        return self._stats


def _median_sigma(values: list[float]) -> tuple[float, float]:
    """Median and a robust σ (IQR / 1.349) of `values` (non-empty)."""
    ordered = sorted(values)
    n = len(ordered)
    med = median(ordered)
    q1 = ordered[n // 4]
    q3 = ordered[(3 * n) // 4 if n > 1 else 0]
    return med, (q3 - q1) / 1.349


@dataclass(frozen=True, slots=True)
class _Judged:
    view: RedView
    evidence: tuple[Evidence, ...]
    base_err: float | None
    base_p95: float | None


class Detector:
    """Judges a `ServiceGraph` at each tick; keeps the baselines between ticks."""

    def __init__(self, rules: RuleSet | None = None) -> None:
        self.policy = PolicyBook(rules)
        self._baselines: dict[object, _Baseline] = {}

    def evaluate(self, graph: ServiceGraph, now_ns: int) -> Detection:
        """Judge every node and edge as of event time `now_ns`."""
        edges: dict[tuple[str, str], EdgeHealth] = {}
        for edge in graph.edges():
            edges[(edge.client, edge.server)] = self._judge_edge(edge, now_ns)
        nodes: dict[str, NodeHealth] = {}
        for node in graph.nodes():
            inbound = [edges[(c, node.name)] for c in graph.callers(node.name)]
            nodes[node.name] = self._judge_node(node, inbound, now_ns)
        live = {("n", n) for n in nodes} | {("e", *k) for k in edges}
        for key in [k for k in self._baselines if k not in live]:
            del self._baselines[key]
        return Detection(now_ns=now_ns, nodes=nodes, edges=edges)

    # -- series -----------------------------------------------------------------------------

    def _judge_series(
        self, key: object, series: RedSeries, policy: DetectPolicy, now_ns: int
    ) -> _Judged:
        eval_ns = now_ns - int(policy.settle_s * _NS)
        bucket_ns = int(series.bucket_s * _NS)
        baseline = self._baselines.get(key)
        if baseline is None:
            maxlen = max(1, int(policy.baseline_s // series.bucket_s))
            baseline = self._baselines[key] = _Baseline(maxlen=maxlen)
        # Fold in the buckets that closed before the current window began.
        window_start = eval_ns - int(policy.window_s * _NS)
        closed_until = window_start - window_start % bucket_ns
        learn_from = max(baseline.learned_until_ns, closed_until - int(policy.baseline_s * _NS))
        if closed_until > learn_from:
            history = series.buckets(closed_until - 1, (closed_until - learn_from) / _NS)
            baseline.learn(history, bucket_ns, policy.min_calls, policy.latency_quantile)

        view = series.window(eval_ns, policy.window_s)
        learned = len(baseline.summaries) >= policy.min_baseline_buckets
        err_stats, p95_stats, rate = baseline.stats(series.bucket_s) if learned else (None,) * 3
        evidence: list[Evidence] = []
        if view.calls >= policy.min_calls:
            ev = self._judge_errors(view, err_stats, policy, series, eval_ns)
            if ev is not None:
                evidence.append(ev)
            ev = self._judge_latency(view, p95_stats, policy, series, eval_ns)
            if ev is not None:
                evidence.append(ev)
        if rate is not None:
            ev = self._judge_traffic(view, rate, policy)
            if ev is not None:
                evidence.append(ev)
        # Only a learned baseline freezes: one frozen at start-up would never learn at all.
        baseline.frozen = learned and any(e.signal != Signals.TRAFFIC_DROP for e in evidence)
        return _Judged(
            view=view,
            evidence=tuple(evidence),
            base_err=err_stats[0] if err_stats else None,
            base_p95=p95_stats[0] if p95_stats else None,
        )

    @staticmethod
    def _judge_errors(
        view: RedView,
        history: _Robust | None,
        policy: DetectPolicy,
        series: RedSeries,
        eval_ns: int,
    ) -> Evidence | None:
        ratio = view.error_ratio
        # Without a learned baseline (start-up, a new service) only a failing ratio counts: a
        # steady 3 % of timeouts may be this service's normal, which the baseline will tell.
        floor = policy.error_degraded if history else policy.error_failing
        if ratio < floor or view.failed < policy.error_min_failed:
            return None
        base = history[0] if history else 0.0
        # The binomial standard error of the window's ratio under the baseline's ratio: a jump
        # from 0.5 % to 3 % on 40 calls is noise, on 4,000 calls it is not.
        p0 = min(max(base, policy.error_noise_floor), 0.999)
        se = math.sqrt(p0 * (1 - p0) / view.calls)
        if history:
            se = max(se, history[1])
        excess = ratio - base
        if excess < policy.error_min_excess or excess < policy.error_z * se:
            return None
        health = Health.FAILING if ratio >= policy.error_failing else Health.DEGRADED
        threshold = base + max(policy.error_min_excess, policy.error_z * se)
        onset = _onset(
            series, eval_ns, policy, lambda b: b.calls > 0 and b.failed / b.calls >= threshold
        )
        return Evidence(
            signal=Signals.ERROR_RATIO,
            health=health,
            value=ratio,
            baseline=base if history else None,
            threshold=threshold,
            onset_ns=onset,
            detail=f"{view.failed}/{view.calls} calls failed ({ratio:.1%}, "
            f"baseline {base:.1%}) over {policy.window_s:g}s",
        )

    @staticmethod
    def _judge_latency(
        view: RedView,
        history: _Robust | None,
        policy: DetectPolicy,
        series: RedSeries,
        eval_ns: int,
    ) -> Evidence | None:
        q = policy.latency_quantile
        p95 = view.latency.quantile(q)
        if p95 is None or not history:
            return None
        base, sigma = history
        threshold = max(
            policy.latency_degraded_s,
            base * policy.latency_factor,
            base + policy.latency_iqr_k * sigma,
            base + policy.latency_min_excess_s,
        )
        if p95 < threshold:
            return None
        failing = max(threshold, policy.latency_failing_s, base * policy.latency_failing_factor)
        health = Health.FAILING if p95 >= failing else Health.DEGRADED

        def slow(b: Bucket) -> bool:
            value = b.latency.quantile(q)
            return value is not None and value >= threshold

        return Evidence(
            signal=Signals.LATENCY,
            health=health,
            value=p95,
            baseline=base,
            threshold=threshold,
            onset_ns=_onset(series, eval_ns, policy, slow),
            detail=f"p{q * 100:g} {_ms(p95)} against a baseline of {_ms(base)} over "
            f"{policy.window_s:g}s",
        )

    @staticmethod
    def _judge_traffic(view: RedView, base: float, policy: DetectPolicy) -> Evidence | None:
        if base < policy.traffic_min_rate:
            return None
        drop = max(base - view.rate_per_s, 0.0) / base
        if drop < policy.traffic_drop_degraded:
            return None
        health = Health.FAILING if drop >= policy.traffic_drop_failing else Health.DEGRADED
        return Evidence(
            signal=Signals.TRAFFIC_DROP,
            health=health,
            value=view.rate_per_s,
            baseline=base,
            threshold=base * (1 - policy.traffic_drop_degraded),
            onset_ns=None,
            detail=f"{view.rate_per_s:.2f} req/s, {drop:.0%} below its baseline of "
            f"{base:.2f} req/s",
        )

    # -- nodes and edges --------------------------------------------------------------------

    def _judge_edge(self, edge: EdgeState, now_ns: int) -> EdgeHealth:
        policy = self.policy(edge.server)
        judged = self._judge_series(("e", edge.client, edge.server), edge.red, policy, now_ns)
        view = judged.view
        health = max((e.health for e in judged.evidence), default=Health.HEALTHY)
        failed_latencies = tuple(sorted(lat for _, _, lat in edge.exemplars.failed))
        return EdgeHealth(
            client=edge.client,
            server=edge.server,
            health=health,
            evidence=judged.evidence,
            onset_ns=_earliest(judged.evidence),
            calls=view.calls,
            failed=view.failed,
            error_ratio=view.error_ratio,
            p95_s=view.latency.quantile(0.95),
            baseline_error_ratio=judged.base_err,
            baseline_p95_s=judged.base_p95,
            server_halves=view.server_latency.count,
            failed_latencies_s=failed_latencies,
        )

    def _judge_node(self, node: NodeState, inbound: list[EdgeHealth], now_ns: int) -> NodeHealth:
        policy = self.policy(node.name)
        judged = self._judge_series(("n", node.name), node.served, policy, now_ns)
        evidence = list(judged.evidence)
        view = judged.view

        misses = policy.heartbeat_misses
        known = list(node.instances.values())
        up = [i for i in known if now_ns - i.last_heartbeat_ns <= misses * i.interval_s * _NS]
        # An instance that went silent before another one started was replaced (a restart, a
        # rolling deploy: new processes get new instance ids), not lost.
        newest_start = max((i.first_seen_ns for i in up), default=0)
        instances = [i for i in known if i in up or i.last_heartbeat_ns >= newest_start]
        if instances and not up:
            evidence.append(
                Evidence(
                    signal=Signals.SERVICE_DOWN,
                    health=Health.DOWN,
                    value=0,
                    baseline=float(len(instances)),
                    threshold=1,
                    onset_ns=max(i.last_heartbeat_ns for i in instances),
                    detail=f"no heartbeat from any of {len(instances)} instance(s) for "
                    f"{policy.heartbeat_misses} intervals",
                )
            )
        elif len(up) < len(instances):
            down = sorted({i.instance for i in instances} - {i.instance for i in up})
            evidence.append(
                Evidence(
                    signal=Signals.INSTANCES_DOWN,
                    health=Health.DEGRADED,
                    value=float(len(down)),
                    baseline=float(len(instances)),
                    threshold=1,
                    onset_ns=None,
                    detail=f"{len(down)} of {len(instances)} instances down: {', '.join(down)}",
                )
            )
        busiest = max(up, key=lambda i: i.cpu_utilization or 0.0, default=None)
        cpu = busiest.cpu_utilization if busiest is not None else None
        if busiest is not None and cpu is not None and cpu >= policy.cpu_degraded:
            evidence.append(
                Evidence(
                    signal=Signals.SATURATION,
                    health=Health.FAILING if cpu >= policy.cpu_failing else Health.DEGRADED,
                    value=cpu,
                    baseline=None,
                    threshold=policy.cpu_degraded,
                    onset_ns=None,
                    detail=f"instance {busiest.instance} at {cpu:.0%} CPU",
                )
            )

        # Calls that failed with nobody answering (no server half) mean the service is gone,
        # whatever its last heartbeat says: judged on the recent half of the window, this names
        # a crash within seconds instead of waiting for heartbeats to be missed.
        reports = bool(up) or view.server_latency.count > 0
        recent = node.served.window(
            now_ns - int(policy.settle_s * _NS), max(policy.window_s / 2, node.served.bucket_s)
        )
        unanswered = recent.calls - recent.server_latency.count
        if (
            node.kind is NodeKind.SERVICE
            and recent.calls >= policy.min_calls
            and unanswered >= 0.5 * recent.calls
            and recent.failed >= 0.5 * recent.calls
            and not any(e.signal == Signals.SERVICE_DOWN for e in evidence)
        ):
            evidence.append(
                Evidence(
                    signal=Signals.UNREACHABLE,
                    health=Health.DOWN,
                    value=recent.failed / recent.calls,
                    baseline=None,
                    threshold=0.5,
                    onset_ns=_earliest([ev for e in inbound for ev in e.evidence]),
                    detail=f"{recent.failed}/{recent.calls} calls from its callers failed and "
                    f"{unanswered} got no answer at all",
                )
            )

        health = max((e.health for e in evidence), default=Health.HEALTHY)
        p95 = view.latency.quantile(0.95)
        return NodeHealth(
            service=node.name,
            kind=node.kind,
            health=health,
            evidence=tuple(evidence),
            onset_ns=_earliest(evidence),
            calls=view.calls,
            failed=view.failed,
            error_ratio=view.error_ratio,
            rate_per_s=view.rate_per_s,
            p95_s=p95,
            baseline_error_ratio=judged.base_err,
            baseline_p95_s=judged.base_p95,
            instances_up=len(up),
            instances=len(instances),
            reports=reports,
        )


def _onset(
    series: RedSeries, eval_ns: int, policy: DetectPolicy, bad: Callable[[Bucket], bool]
) -> int | None:
    """The start of the earliest bucket of the recent anomalous run (change-point estimate).

    Walks back from `eval_ns` over up to twice the window and returns the start of the oldest
    bucket of the unbroken run that satisfies `bad`: a later threshold crossing does not move
    the onset, which is what makes root-cause ordering by onset reliable.
    """
    buckets = series.buckets(eval_ns, policy.window_s * 2)
    onset: int | None = None
    for b in reversed(buckets):
        if b.calls == 0:
            continue
        if bad(b):
            onset = b.start_ns
        else:
            break
    return onset


def _earliest(evidence: Iterable[Evidence]) -> int | None:
    onsets = [e.onset_ns for e in evidence if e.onset_ns is not None]
    return min(onsets) if onsets else None


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}ms"
