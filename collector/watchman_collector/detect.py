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

A tick costs little per series when little changed: the window's sums and the baseline's order
statistics are kept up to date between ticks (`window`, `baseline`), and a verdict is worked out
again only when the numbers behind it changed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum

from watchman_collector.baseline import BaselineLearner, Robust
from watchman_collector.graph import InstanceState, NodeState, ServiceGraph
from watchman_collector.records import NodeKind
from watchman_collector.rules import RuleSet, Thresholds, default_rules
from watchman_collector.stats import Bucket, RedSeries
from watchman_collector.window import Kept, WindowQuantile, WindowReader

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
# A baseline's statistics before it has learned enough (`BaselineLearner.stats`).
_NO_STATS: tuple[Robust | None, Robust | None, float | None] = (None, None, None)
_NO_BOUNDS: tuple[int, int, int, tuple[int, int, int, int, bool]] = (
    -1,
    -1,
    -1,
    (0, 0, 0, 0, False),
)


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


# The verdicts are values, made afresh for thousands of nodes and edges on every tick, so they
# are not `frozen` (as `records.Span` and `Call`): a frozen dataclass's `__init__` sets each field
# through `object.__setattr__`, which was 14 % of the instructions of a tick that moves the window
# (measured). No stage changes one after it is made; `unsafe_hash` keeps them hashable. Their
# latency quantile is worked out when `p95_s` is read (`window.WindowQuantile`, equal, hashed and
# printed as its number): only cascade reads it, around anomalies, and working it out for every
# series was an eighth of a tick that moves the window (measured).


@dataclass(slots=True, unsafe_hash=True)
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
    _p95: WindowQuantile | None  # read `p95_s`
    baseline_error_ratio: float | None
    baseline_p95_s: float | None
    instances_up: int
    instances: int
    reports: bool  # the node itself reported spans or heartbeats in the window

    @property
    def p95_s(self) -> float | None:
        """The window's 95th percentile latency (histogram estimate), None without calls."""
        p95 = self._p95
        return None if p95 is None else p95.value

    def has(self, signal: str) -> bool:
        """Whether `signal` is among the evidence."""
        return any(e.signal == signal for e in self.evidence)


@dataclass(slots=True, unsafe_hash=True)
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
    _p95: WindowQuantile | None  # read `p95_s`
    baseline_error_ratio: float | None
    baseline_p95_s: float | None
    server_halves: int  # calls whose server half was seen (0: nobody answered)
    failed_latencies_s: tuple[float, ...]  # client latency of failed exemplars (timeouts show)

    @property
    def p95_s(self) -> float | None:
        """The window's 95th percentile latency (histogram estimate), None without calls."""
        p95 = self._p95
        return None if p95 is None else p95.value


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


class _SeriesState(WindowReader):
    """What detection keeps of one node or edge between ticks: its window, baseline, verdicts.

    The bucket leaving the window is the one the baseline learns next, from the histogram the
    window kept. While neither the window nor the baseline changed, the error and latency
    verdicts cannot change either and are not worked out again.
    """

    __slots__ = (
        "ahead",
        "base_err",
        "base_p95",
        "baseline",
        "judged",
        "result",
        "seen",
        "settings",
        "version",
    )

    def __init__(self, series: RedSeries) -> None:
        super().__init__(series)
        self.baseline: BaselineLearner | None = None
        self.seen = 0  # the last tick that judged this series
        # The last error and latency verdicts, for this window and baseline `version`.
        self.version = -1
        self.judged: tuple[Evidence, ...] = ()
        self.base_err: float | None = None  # baseline medians of the error ratio and latency
        self.base_p95: float | None = None
        self.result: EdgeHealth | None = None  # an edge's last verdict
        self.settings: _Settings | None = None  # its service's, while the rules are the same
        # The window's first bucket as kept, learned by the baseline ahead of the tick at which
        # it leaves the window (`BaselineLearner.checkpoint`, then `offer`); None when none was.
        self.ahead: Kept | None = None


@dataclass(frozen=True, slots=True)
class _Settings:
    """A service's policy and the nanosecond spans the tick derives from it."""

    policy: DetectPolicy
    settle_ns: int
    window_ns: int
    baseline_ns: int


class Detector:
    """Judges a `ServiceGraph` at each tick; keeps the baselines between ticks.

    `learn_ahead`: when ticks come at a steady interval, learn the bucket that leaves each
    window at the end of the tick before the one at which it leaves (the same verdicts, the
    work of a bucket split over its ticks); False learns each bucket as it leaves.
    """

    def __init__(self, rules: RuleSet | None = None, *, learn_ahead: bool = True) -> None:
        self.policy = PolicyBook(rules)
        self._nodes: dict[str, _SeriesState] = {}
        self._edges: dict[tuple[str, str], _SeriesState] = {}
        self._tick = 0
        # The last window's bounds (`_judge_series`): eval_ns, window_ns, bucket_ns, and its
        # first bucket, that bucket's start, its last bucket, the start of the one before, and
        # whether the next tick is expected to move the window on by one bucket.
        self._bounds: tuple[int, int, int, tuple[int, int, int, int, bool]] = _NO_BOUNDS
        # Learn the bucket that leaves the window at the next tick at the end of this one, when
        # the next tick is expected to move the window on (ticks come at a steady interval):
        # the tick that moves the window then only slides it. Verdicts are the same either way.
        self.learn_ahead = learn_ahead
        self._last_now: int | None = None
        self._interval = 0  # between the last two ticks: when the next one is expected
        # Settings per service, valid while `policy` and its rules are the same objects.
        self._settings: dict[str, _Settings] = {}
        self._settings_of: tuple[PolicyBook, RuleSet] | None = None

    def evaluate(self, graph: ServiceGraph, now_ns: int) -> Detection:
        """Judge every node and edge as of event time `now_ns`."""
        self._tick = tick = self._tick + 1
        last_now = self._last_now
        # Not positive (none expected): `_judge_series` expects no move.
        self._interval = now_ns - last_now if self.learn_ahead and last_now is not None else 0
        self._last_now = now_ns
        self._bounds = _NO_BOUNDS  # its expectation of the next tick is this tick's
        book = self.policy
        cached = self._settings_of
        if cached is None or cached[0] is not book or cached[1] is not book.rules:
            self._settings = {}
            self._settings_of = (book, book.rules)
            for kept in [*self._edges.values(), *self._nodes.values()]:
                kept.forget()  # other rules: redo it all
                kept.settings = None
        states = self._edges
        edges = self._judge_edges(graph, states, tick, now_ns)
        nodes: dict[str, NodeHealth] = {}
        node_states = self._nodes
        for node in graph.nodes():
            name = node.name
            state = node_states.get(name)
            if state is None:
                state = node_states[name] = _SeriesState(node.served)
            state.seen = tick
            nodes[name] = self._judge_node(node, state, graph, edges, now_ns)
        # A series gone from the graph forgets its baseline (it starts afresh if it returns).
        if len(states) > len(edges):
            self._edges = {k: s for k, s in states.items() if s.seen == tick}
        if len(node_states) > len(nodes):
            self._nodes = {k: s for k, s in node_states.items() if s.seen == tick}
        return Detection(now_ns=now_ns, nodes=nodes, edges=edges)

    def _settings_for(self, service: str) -> _Settings:
        settings = self._settings.get(service)
        if settings is None:
            policy = self.policy(service)
            settings = self._settings[service] = _Settings(
                policy,
                int(policy.settle_s * _NS),
                int(policy.window_s * _NS),
                int(policy.baseline_s * _NS),
            )
        return settings

    # -- series -----------------------------------------------------------------------------

    def _judge_series(
        self, state: _SeriesState, series: RedSeries, settings: _Settings, eval_ns: int
    ) -> tuple[tuple[Evidence, ...], bool]:
        """Read and judge one series into `state`: its evidence, and whether all is as before.

        As before: the same window counts, the same baseline and no evidence, now or then.
        """
        policy = settings.policy
        bucket_s = series.bucket_s
        bucket_ns = state.bucket_ns  # the series' (`WindowReader`)
        baseline = state.baseline
        if baseline is None:
            baseline = state.baseline = BaselineLearner(max(1, int(policy.baseline_s // bucket_s)))
        # The buckets that closed before the current window began feed the baseline. The same
        # for every series with the same window on a tick: worked out once (big-integer
        # divisions were ≈ 2 % of a tick), tested with three comparisons.
        bounds = self._bounds
        window_ns = settings.window_ns
        if bounds[0] != eval_ns or bounds[1] != window_ns or bounds[2] != bucket_ns:
            first = (eval_ns - window_ns) // bucket_ns
            last = eval_ns // bucket_ns
            # The next tick, if it comes after the same interval as this one, moves the window
            # on by one bucket at both ends.
            next_ns = eval_ns + self._interval
            bounds = self._bounds = (
                eval_ns,
                window_ns,
                bucket_ns,
                (
                    first,
                    first * bucket_ns,
                    last,
                    (first - 1) * bucket_ns,
                    next_ns > eval_ns
                    and (next_ns - window_ns) // bucket_ns == first + 1
                    and next_ns // bucket_ns == last + 1,
                ),
            )
        first, closed_until, last, closed_before, moves_next = bounds[3]
        leaving = None
        ahead = state.ahead
        if (
            first == state.first + 1
            and last == state.last + 1
            and baseline.learned_until_ns == (closed_before if ahead is None else closed_until)
            and bucket_ns <= settings.baseline_ns
        ):
            # The steady state: the window moved on by one bucket, and the bucket that left it
            # is the one the baseline learns next (it had learned up to the one before, and
            # learns no further back than `baseline_ns`), or learned ahead at the last tick.
            # Read from the open buckets, without making `Bucket`s, when the buckets that stay
            # are as they were.
            leaving = state.slide(series, first, eval_ns, bucket_s)
        if ahead is not None:
            state.ahead = None
            if leaving is not ahead:
                # Not the bucket learned ahead, as it was (another tick, a late call): the
                # baseline is put back, and learns what did leave as usual.
                baseline.undo()
        if leaving is not None:
            # `slide` has moved the window on and noted the series as read (`mark`).
            if leaving is not ahead:
                baseline.offer(
                    closed_until,
                    leaving[1],
                    leaving[2],
                    bucket_s,
                    policy.min_calls,
                    state.kept_quantile,
                    leaving,
                    policy.latency_quantile,
                )
            same = False
        else:
            unmoved = first == state.first and last == state.last
            if baseline.learned_until_ns < closed_until and settings.baseline_ns > 0:
                # The baseline has buckets to learn, from `baseline_ns` before the window at most.
                learn_from = closed_until - settings.baseline_ns
                if baseline.learned_until_ns > learn_from:  # noqa: PLR1730  # no max() call
                    learn_from = baseline.learned_until_ns
                span_s = (closed_until - learn_from) / _NS
                # Read with the window in one call, from the first bucket `buckets(closed_until
                # - 1, span_s)` selects, when the range keeps one bucket width (no rolled-up
                # buckets).
                learn_first = (closed_until - 1 - int(span_s * _NS)) // bucket_ns
                buckets = series.buckets(eval_ns, (eval_ns - learn_first * bucket_ns) / _NS)
                oldest = buckets[0].start_ns // bucket_ns
                if oldest <= learn_first and len(buckets) == last - oldest + 1:
                    history = buckets[learn_first - oldest : first - oldest]
                    window: list[Bucket] | None = buckets[first - oldest :]
                else:
                    history = series.buckets(closed_until - 1, span_s)
                    window = series.buckets(eval_ns, policy.window_s)
                baseline.learn(
                    history,
                    bucket_s,
                    policy.min_calls,
                    policy.latency_quantile,
                    quantile_of=state.bucket_quantile,
                )
            # A series whose window took no call since the last tick, read over the same
            # buckets, has the same window: an idle series costs a few counter reads, not a
            # window read (`stay` moves its rate on and notes the series as read).
            elif unmoved and state.stay(series, first, eval_ns, bucket_s):
                window = None
            elif unmoved and series.calls_in(eval_ns, policy.window_s) == state.total_calls:
                state.move_to(eval_ns, bucket_s)
                state.mark(series)
                window = None
            else:
                window = series.buckets(eval_ns, policy.window_s)
            if window is None:
                same = baseline.version == state.version
            else:
                state.mark(series)  # the window was read from the series as it is now
                same = state.read(window, eval_ns, bucket_s) and baseline.version == state.version
                state.total_calls = state.calls
        state.first, state.last = first, last

        learned = baseline.size >= policy.min_baseline_buckets
        summary = baseline.summary if learned else _NO_STATS
        if summary is None:
            summary = baseline.stats()
        err_stats, p95_stats, base_rate = summary
        judged = state.judged
        if not same or judged:
            # Errors and latency only change with the window or the baseline, but the onset of
            # a verdict moves with the clock: work them out again while there is one.
            state.version = baseline.version
            state.base_err = err_stats[0] if err_stats else None
            state.base_p95 = p95_stats[0] if p95_stats else None
            judged = ()
            if state.calls >= policy.min_calls:
                # Each judgement is called only past the first test it makes (the common,
                # healthy case costs a comparison, not a call).
                if state.failed >= policy.error_min_failed:
                    ev = self._judge_errors(state, err_stats, policy, series, eval_ns)
                    if ev is not None:
                        judged = (ev,)
                # Most windows are surely below the latency floor: then their quantile is not
                # needed (a verdict works its own out when read).
                if p95_stats is not None and not state.surely_below(
                    policy.latency_quantile, policy.latency_degraded_s
                ):
                    p95 = state.quantile(policy.latency_quantile)
                    if p95 is not None and p95 >= policy.latency_degraded_s:
                        ev = self._judge_latency(p95, p95_stats, policy, series, eval_ns)
                        if ev is not None:
                            judged = (*judged, ev)
            state.judged = judged
        # Only a learned baseline freezes: one frozen at start-up would never learn at all.
        baseline.frozen = learned and bool(judged)
        if moves_next and baseline.learned_until_ns == closed_until:
            # The verdicts are made: the baseline learns now the bucket that leaves the window
            # at the next tick, as that tick would (`checkpoint`, then `offer`: the next tick
            # takes it back if another bucket leaves after all), and works its statistics out.
            kept = state.kept
            if (
                kept
                and kept[0][0] == closed_until
                and state.bounds  # else the next tick reads the window instead of sliding it
                and bucket_ns <= settings.baseline_ns
            ):
                leaves_next = kept[0]
                baseline.checkpoint()
                baseline.offer(
                    closed_until + bucket_ns,
                    leaves_next[1],
                    leaves_next[2],
                    bucket_s,
                    policy.min_calls,
                    state.kept_quantile,
                    leaves_next,
                    policy.latency_quantile,
                )
                state.ahead = leaves_next
                if baseline.summary is None and baseline.size >= policy.min_baseline_buckets:
                    baseline.stats()
        # The rate moves with the clock: judged on every tick, past a test that keeps a margin
        # for rounding (`_judge_traffic` decides).
        if (
            base_rate is not None
            and base_rate >= policy.traffic_min_rate
            and state.rate_per_s <= base_rate * (1.000001 - policy.traffic_drop_degraded)
        ):
            ev = self._judge_traffic(state, base_rate, policy)
            if ev is not None:
                return (*judged, ev), False
        return judged, same and not judged

    @staticmethod
    def _judge_errors(
        view: _SeriesState,
        history: Robust | None,
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
        p95: float,
        history: Robust,
        policy: DetectPolicy,
        series: RedSeries,
        eval_ns: int,
    ) -> Evidence | None:
        """`p95`: the window's latency quantile (`policy.latency_quantile`)."""
        q = policy.latency_quantile
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
    def _judge_traffic(view: _SeriesState, base: float, policy: DetectPolicy) -> Evidence | None:
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

    def _judge_edges(
        self,
        graph: ServiceGraph,
        states: dict[tuple[str, str], _SeriesState],
        tick: int,
        now_ns: int,
    ) -> dict[tuple[str, str], EdgeHealth]:
        """Judge every edge of `graph`, keeping their state in `states` (seen at `tick`).

        One loop with the judgement of an edge in its body, rather than a call per edge: 0.6 % of
        the instructions of a tick that moves the window on 400 services.
        """
        edges: dict[tuple[str, str], EdgeHealth] = {}
        judge_series = self._judge_series
        for edge in graph.edges():
            key = edge.key
            state = states.get(key)
            if state is None:
                state = states[key] = _SeriesState(edge.red)
            state.seen = tick
            settings = state.settings
            if settings is None:
                settings = state.settings = self._settings_for(edge.server)
            evidence, same = judge_series(state, edge.red, settings, now_ns - settings.settle_ns)
            failed = edge.exemplars.failed
            last = state.result
            # A healthy edge whose numbers did not change is judged as before: the same object,
            # not one more of thousands built on a tick.
            if (
                not evidence
                and not failed
                and last is not None
                and not last.evidence
                and not last.failed_latencies_s
                and (
                    same
                    or (
                        last.calls == state.calls
                        and last.failed == state.failed
                        and last.server_halves == state.served
                        and last.baseline_error_ratio == state.base_err
                        and last.baseline_p95_s == state.base_p95
                        and state.holds(last._p95)
                    )
                )
            ):
                edges[key] = last
                continue
            # Positional: keywords make a dataclass slower to build.
            edges[key] = state.result = EdgeHealth(
                edge.client,
                edge.server,
                max(e.health for e in evidence) if evidence else Health.HEALTHY,
                evidence,
                _earliest(evidence) if evidence else None,
                state.calls,
                state.failed,
                state.error_ratio,
                state.quantile_later(0.95),
                state.base_err,
                state.base_p95,
                state.served,
                tuple(sorted(lat for _, _, lat in failed)) if failed else (),
            )
        return edges

    def _judge_node(
        self,
        node: NodeState,
        state: _SeriesState,
        graph: ServiceGraph,
        edges: Mapping[tuple[str, str], EdgeHealth],
        now_ns: int,
    ) -> NodeHealth:
        settings = state.settings
        if settings is None:
            settings = state.settings = self._settings_for(node.name)
        policy = settings.policy
        eval_ns = now_ns - settings.settle_ns
        judged, _ = self._judge_series(state, node.served, settings, eval_ns)
        view = state
        evidence = list(judged)

        misses = policy.heartbeat_misses
        known = node.instances
        up: list[InstanceState] = []
        # The first busiest instance up, as max() would pick it: in the same loop, a list
        # comprehension and a second loop over the instances were 2 % of a tick.
        busiest: InstanceState | None = None
        top = 0.0
        for i in known.values():
            if now_ns - i.last_heartbeat_ns <= misses * i.interval_s * _NS:
                up.append(i)
                cpu_i = i.cpu_utilization or 0.0
                if busiest is None or cpu_i > top:
                    busiest, top = i, cpu_i
        if len(up) == len(known):
            instances = up
        else:
            # An instance that went silent before another one started was replaced (a restart,
            # a rolling deploy: new processes get new instance ids), not lost.
            newest_start = max((i.first_seen_ns for i in up), default=0)
            instances = [
                i for i in known.values() if i in up or i.last_heartbeat_ns >= newest_start
            ]
            if not up:
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
        # a crash within seconds instead of waiting for heartbeats to be missed. The recent half
        # is the tail of the window unless a bucket is wider than the window: then, when the
        # whole window failed too little, so did its tail, and it is not read (the common,
        # healthy case costs two comparisons, not a call).
        if (
            node.kind is NodeKind.SERVICE
            and (view.failed >= 0.5 * policy.min_calls or settings.window_ns < view.bucket_ns)
            and not any(e.signal == Signals.SERVICE_DOWN for e in evidence)
        ):
            ev = self._judge_unreachable(node, policy, eval_ns, graph=graph, edges=edges)
            if ev is not None:
                evidence.append(ev)

        return NodeHealth(
            node.name,
            node.kind,
            max(e.health for e in evidence) if evidence else Health.HEALTHY,
            tuple(evidence),
            _earliest(evidence) if evidence else None,
            view.calls,
            view.failed,
            view.error_ratio,
            view.rate_per_s,
            view.quantile_later(0.95),
            view.base_err,
            view.base_p95,
            len(up),
            len(instances),
            bool(up) or view.served > 0,
        )

    @staticmethod
    def _judge_unreachable(
        node: NodeState,
        policy: DetectPolicy,
        eval_ns: int,
        *,
        graph: ServiceGraph,
        edges: Mapping[tuple[str, str], EdgeHealth],
    ) -> Evidence | None:
        served = node.served
        recent = served.window(eval_ns, max(policy.window_s / 2, served.bucket_s))
        if recent.calls < policy.min_calls or recent.failed < 0.5 * recent.calls:
            return None
        unanswered = recent.calls - recent.server_latency.count
        if unanswered < 0.5 * recent.calls:
            return None
        inbound = [edges[(c, node.name)] for c in graph.callers(node.name)]
        return Evidence(
            signal=Signals.UNREACHABLE,
            health=Health.DOWN,
            value=recent.failed / recent.calls,
            baseline=None,
            threshold=0.5,
            onset_ns=_earliest([ev for e in inbound for ev in e.evidence]),
            detail=f"{recent.failed}/{recent.calls} calls from its callers failed and "
            f"{unanswered} got no answer at all",
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
