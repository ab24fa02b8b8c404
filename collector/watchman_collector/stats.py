"""RED statistics in event time: fixed-bound latency histograms and bucketed per-series counts.

The graph keeps one `RedSeries` per node and per edge. Calls land in the bucket of their own
event time (not their arrival time), so a restart or a burst of late data does not make spikes,
and 1 min / 5 min / 15 min views are sums of buckets. Cumulative totals beside the buckets only
ever grow, which is what Prometheus counters and histograms need.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import add

__all__ = ["LATENCY_BUCKETS_S", "Bucket", "Histogram", "RedSeries", "RedView"]

# The OpenTelemetry Collector servicegraph connector's default `latency_histogram_buckets`
# (seconds; +Inf implied), so our `traces_service_graph_request_*_seconds` series have the
# buckets Grafana's service graph and existing dashboards expect.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.002,
    0.004,
    0.006,
    0.008,
    0.01,
    0.05,
    0.1,
    0.2,
    0.4,
    0.8,
    1.0,
    1.4,
    2.0,
    5.0,
    10.0,
    15.0,
)

_NS_PER_S = 1_000_000_000


class Histogram:
    """A latency histogram with fixed upper bounds (`le`, inclusive) and an implied +Inf bucket.

    `counts` are per bucket (not cumulative), `len(bounds) + 1` of them, the last one for +Inf.
    """

    __slots__ = ("bounds", "count", "counts", "max_s", "sum_s")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS_S) -> None:
        self.bounds = bounds
        self.counts: list[int] = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum_s = 0.0
        self.max_s = 0.0

    def observe(self, value_s: float) -> None:
        """Count one observation; negative values (clock skew) count as 0."""
        if value_s < 0.0:  # noqa: PLR1730  # hot path: a branch is cheaper than a max() call
            value_s = 0.0
        # bisect_left: a value equal to a bound belongs to that bound's bucket (Prometheus `le`).
        self.counts[bisect_left(self.bounds, value_s)] += 1
        self.count += 1
        self.sum_s += value_s
        if value_s > self.max_s:  # noqa: PLR1730  # hot path, as above
            self.max_s = value_s

    def merge(self, other: Histogram) -> None:
        """Add another histogram with the same bounds into this one."""
        if other.bounds is not self.bounds and other.bounds != self.bounds:
            msg = "cannot merge histograms with different bounds"
            raise ValueError(msg)
        if not other.count:
            return
        # map(add) runs in C: a Python loop over the 17 counts was most of a detection tick.
        self.counts = list(map(add, self.counts, other.counts))
        self.count += other.count
        self.sum_s += other.sum_s
        if other.max_s > self.max_s:  # noqa: PLR1730  # per view per tick: no max() call
            self.max_s = other.max_s

    def cumulative(self) -> list[int]:
        """Cumulative counts per bound, the last one (+Inf) equal to `count`."""
        out: list[int] = []
        running = 0
        for n in self.counts:
            running += n
            out.append(running)
        return out

    def quantile(self, q: float) -> float | None:
        """The q-quantile estimated as PromQL's `histogram_quantile` does; None when empty.

        Linear interpolation inside the bucket holding the rank, the first bucket starting at 0;
        a rank in the +Inf bucket answers the highest finite bound. Same numbers as a
        Prometheus query over our exported buckets, so dashboards and alerts agree with us.
        """
        if not 0.0 <= q <= 1.0:
            msg = f"quantile must be within [0, 1], got {q}"
            raise ValueError(msg)
        if not self.count:
            return None
        rank = q * self.count
        below = 0
        bounds = self.bounds
        for i, n in enumerate(self.counts):
            if below + n >= rank and (n or i == len(bounds)):
                if i == len(bounds):
                    return bounds[-1] if bounds else self.max_s
                start = bounds[i - 1] if i else 0.0
                end = bounds[i]
                if i == 0 and end <= 0.0:
                    return end
                return start + (end - start) * ((rank - below) / n)
            below += n
        return bounds[-1] if bounds else self.max_s  # pragma: no cover - rank <= count always

    def copy(self) -> Histogram:
        """An independent copy."""
        dup = Histogram(self.bounds)
        dup.merge(self)
        return dup

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return (
            self.bounds == other.bounds
            and self.counts == other.counts
            and self.sum_s == other.sum_s
            and self.max_s == other.max_s
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Histogram(count={self.count}, sum_s={self.sum_s:.6g}, max_s={self.max_s:.6g})"


def _summed(histograms: list[Histogram], bounds: tuple[float, ...]) -> Histogram:
    """A new histogram holding the sum of `histograms` (all with `bounds`), added in order."""
    out = Histogram(bounds)
    counts: list[int] | None = None
    for h in histograms:
        if h.count:
            # map(add) runs in C: a Python loop over the counts was most of a detection tick.
            counts = h.counts[:] if counts is None else list(map(add, counts, h.counts))
            out.count += h.count
            out.sum_s += h.sum_s
            if h.max_s > out.max_s:  # noqa: PLR1730  # per view per tick: no max() call
                out.max_s = h.max_s
    if counts is not None:
        out.counts = counts
    return out


@dataclass(slots=True)
class Bucket:
    """The calls of one series whose event time falls in `[start_ns, start_ns + bucket_s)`.

    `latency` holds each call once: its server-side latency where the server half was seen,
    else its client-side latency (a crashed callee's timeouts still show in it).
    """

    start_ns: int
    calls: int = 0
    failed: int = 0
    client: Histogram = field(default_factory=Histogram)
    server: Histogram = field(default_factory=Histogram)
    latency: Histogram = field(default_factory=Histogram)


class RedView:
    """Rate, errors and duration of one series over the last `seconds` of event time.

    The three histograms are summed from the window's buckets when first read, not when the
    view is made: detection makes several views per series every tick and reads most of them
    for counts only. Read a view before adding calls to its series (one event loop does).
    """

    __slots__ = (
        "_buckets",
        "_client_latency",
        "_latency",
        "_server_latency",
        "bounds",
        "calls",
        "error_ratio",
        "failed",
        "rate_per_s",
        "seconds",
    )

    def __init__(  # noqa: PLR0917  # the former dataclass's fields, positional or by keyword
        self,
        seconds: float,
        calls: int,
        failed: int,
        rate_per_s: float,
        error_ratio: float,  # 0.0 when there were no calls
        latency: Histogram | None = None,  # per call: server side where seen, else client side
        client_latency: Histogram | None = None,
        server_latency: Histogram | None = None,
        *,
        buckets: Sequence[Bucket] = (),
        bounds: tuple[float, ...] = LATENCY_BUCKETS_S,
    ) -> None:
        self.seconds = seconds
        self.calls = calls
        self.failed = failed
        self.rate_per_s = rate_per_s
        self.error_ratio = error_ratio
        self.bounds = bounds
        self._buckets = buckets
        self._latency = latency
        self._client_latency = client_latency
        self._server_latency = server_latency

    @property
    def latency(self) -> Histogram:
        """Per call: the server-side latency where seen, else the client-side one."""
        if self._latency is None:
            self._latency = _summed([b.latency for b in self._buckets], self.bounds)
        return self._latency

    @property
    def client_latency(self) -> Histogram:
        """Client-side latency of the calls whose client half was seen."""
        if self._client_latency is None:
            self._client_latency = _summed([b.client for b in self._buckets], self.bounds)
        return self._client_latency

    @property
    def server_latency(self) -> Histogram:
        """Server-side latency of the calls whose server half was seen."""
        if self._server_latency is None:
            self._server_latency = _summed([b.server for b in self._buckets], self.bounds)
        return self._server_latency

    def __repr__(self) -> str:
        return (
            f"RedView(seconds={self.seconds}, calls={self.calls}, failed={self.failed}, "
            f"rate_per_s={self.rate_per_s:.6g}, error_ratio={self.error_ratio:.6g})"
        )

    @property
    def avg_s(self) -> float | None:
        """Mean latency, None when no calls."""
        h = self.latency
        return h.sum_s / h.count if h.count else None

    @property
    def max_s(self) -> float | None:
        """Highest latency, None when no calls."""
        return self.latency.max_s if self.latency.count else None

    @property
    def p50_s(self) -> float | None:
        """Median latency (histogram estimate), None when no calls."""
        return self.latency.quantile(0.5)

    @property
    def p95_s(self) -> float | None:
        """95th percentile latency (histogram estimate), None when no calls."""
        return self.latency.quantile(0.95)

    @property
    def p99_s(self) -> float | None:
        """99th percentile latency (histogram estimate), None when no calls."""
        return self.latency.quantile(0.99)


class RedSeries:
    """Calls, failures and latencies of one node or edge in event-time buckets of `bucket_s`.

    Buckets older than `retention_s` before the newest one are dropped; `total_*` keep counting
    everything ever accepted and never decrease.
    """

    __slots__ = (
        "_bucket_ns",
        "_buckets",
        "_newest",
        "_oldest",
        "_retention_n",
        "bounds",
        "bucket_s",
        "retention_s",
        "total_calls",
        "total_client",
        "total_failed",
        "total_server",
    )

    def __init__(
        self,
        bucket_s: float = 10.0,
        retention_s: float = 3600.0,
        *,
        bounds: tuple[float, ...] = LATENCY_BUCKETS_S,
    ) -> None:
        if bucket_s <= 0 or retention_s < bucket_s:
            msg = f"need 0 < bucket_s <= retention_s, got {bucket_s=} {retention_s=}"
            raise ValueError(msg)
        self.bucket_s = bucket_s
        self.retention_s = retention_s
        self.bounds = bounds
        self._bucket_ns = int(bucket_s * _NS_PER_S)
        self._retention_n = -(-int(retention_s * _NS_PER_S) // self._bucket_ns)  # ceil
        self._buckets: dict[int, Bucket] = {}
        self._newest: int | None = None  # bucket index (time_ns // bucket_ns)
        self._oldest: int | None = None  # lower bound of the indices still stored
        self.total_calls = 0
        self.total_failed = 0
        self.total_client = Histogram(bounds)
        self.total_server = Histogram(bounds)

    def add(  # noqa: PLR0917  # positional on purpose: called once per call on the hot path
        self,
        time_ns: int,
        failed: bool,
        client_latency_s: float | None,
        server_latency_s: float | None,
        now_ns: int,
        allowed_lateness_s: float,
    ) -> bool:
        """Count one call in the bucket of `time_ns`; False when it is too late and was dropped.

        Too late: older than `now_ns - allowed_lateness_s`, or older than the retained buckets.
        A call stamped after `now_ns` (a sender's clock ahead of ours) counts at `now_ns`.
        """
        if time_ns > now_ns:
            time_ns = now_ns
        elif now_ns - time_ns > allowed_lateness_s * _NS_PER_S:
            return False
        idx = time_ns // self._bucket_ns
        newest = self._newest
        if newest is None or idx > newest:
            self._newest = newest = idx
            self._prune(idx - self._retention_n + 1)
        elif idx <= newest - self._retention_n:
            return False
        bucket = self._buckets.get(idx)
        if bucket is None:
            bounds = self.bounds
            bucket = Bucket(idx * self._bucket_ns, 0, 0, Histogram(bounds), Histogram(bounds))
            bucket.latency = Histogram(bounds)
            self._buckets[idx] = bucket
            if self._oldest is None or idx < self._oldest:
                self._oldest = idx
        bucket.calls += 1
        self.total_calls += 1
        if failed:
            bucket.failed += 1
            self.total_failed += 1
        # Histogram.observe inlined, one bisect per value for all the histograms it lands in:
        # this runs twice per call (edge and node), up to five histograms each.
        if client_latency_s is not None:
            if client_latency_s < 0.0:  # noqa: PLR1730  # clock skew; hot path: no max()
                client_latency_s = 0.0
            i = bisect_left(self.bounds, client_latency_s)
            for h in (
                (bucket.client, self.total_client)
                if server_latency_s is not None
                else (
                    bucket.client,
                    self.total_client,
                    bucket.latency,
                )
            ):
                h.counts[i] += 1
                h.count += 1
                h.sum_s += client_latency_s
                if client_latency_s > h.max_s:  # noqa: PLR1730  # hot path: no max() call
                    h.max_s = client_latency_s
        if server_latency_s is not None:
            if server_latency_s < 0.0:  # noqa: PLR1730  # clock skew; hot path: no max()
                server_latency_s = 0.0
            i = bisect_left(self.bounds, server_latency_s)
            for h in (bucket.server, self.total_server, bucket.latency):
                h.counts[i] += 1
                h.count += 1
                h.sum_s += server_latency_s
                if server_latency_s > h.max_s:  # noqa: PLR1730  # hot path: no max() call
                    h.max_s = server_latency_s
        return True

    def prune(self, now_ns: int) -> None:
        """Drop buckets older than the retention before `now_ns` (frees memory of idle series)."""
        self._prune(now_ns // self._bucket_ns - self._retention_n + 1)

    def _prune(self, keep_from: int) -> None:
        oldest = self._oldest
        if oldest is None or oldest >= keep_from:
            return
        buckets = self._buckets
        # Walk the index range when it is short (the steady state: one step per new bucket),
        # else the stored keys (after a long idle gap the range can be millions of indices).
        if keep_from - oldest <= len(buckets):
            for i in range(oldest, keep_from):
                buckets.pop(i, None)
        else:
            for i in [i for i in buckets if i < keep_from]:
                del buckets[i]
        self._oldest = min(buckets) if buckets else None

    def _select(self, now_ns: int, seconds: float) -> tuple[int, int]:
        """First and last bucket index overlapping `(now_ns - seconds, now_ns]`."""
        if seconds <= 0:
            msg = f"window must be positive, got {seconds}"
            raise ValueError(msg)
        return (now_ns - int(seconds * _NS_PER_S)) // self._bucket_ns, now_ns // self._bucket_ns

    def buckets(self, now_ns: int, seconds: float) -> list[Bucket]:
        """The buckets overlapping the last `seconds` to `now_ns`, oldest first, gaps as zeros.

        The buckets are the series' own: read them, do not change them. Gaps share one empty
        histogram (an idle series would otherwise allocate three per missing bucket per read).
        """
        first, last = self._select(now_ns, seconds)
        get = self._buckets.get
        bucket_ns = self._bucket_ns
        empty: Histogram | None = None
        out: list[Bucket] = []
        for i in range(first, last + 1):
            b = get(i)
            if b is None:
                if empty is None:
                    empty = Histogram(self.bounds)
                b = Bucket(i * bucket_ns, 0, 0, empty, empty, empty)
            out.append(b)
        return out

    def window(self, now_ns: int, seconds: float) -> RedView:
        """Rate, errors and latency over the buckets overlapping the last `seconds` to `now_ns`.

        Unless `now_ns - seconds` falls on a bucket boundary the oldest bucket reaches back a
        little further, so the rate divides by the time actually covered (from the oldest
        bucket's start to `now_ns`, at least one bucket), not by `seconds`.
        """
        first, last = self._select(now_ns, seconds)
        bounds = self.bounds
        buckets = self._buckets
        # Iterate whichever is smaller: the window's index range or the stored buckets.
        if last - first < len(buckets):
            get = buckets.get
            present = [b for b in map(get, range(first, last + 1)) if b is not None]
        else:
            present = [buckets[i] for i in sorted(buckets) if first <= i <= last]
        calls = failed = 0
        for b in present:
            calls += b.calls
            failed += b.failed
        covered_s = (now_ns - first * self._bucket_ns) / _NS_PER_S
        if covered_s < self.bucket_s:  # noqa: PLR1730  # per view per tick: no max() call
            covered_s = self.bucket_s
        return RedView(
            seconds=seconds,
            calls=calls,
            failed=failed,
            rate_per_s=calls / covered_s,
            error_ratio=failed / calls if calls else 0.0,
            buckets=present,
            bounds=bounds,
        )

    @property
    def newest_ns(self) -> int | None:
        """Start of the newest bucket that holds data, None before the first call."""
        return None if self._newest is None else self._newest * self._bucket_ns

    def __len__(self) -> int:
        """How many buckets are stored."""
        return len(self._buckets)

    def __repr__(self) -> str:
        return (
            f"RedSeries(bucket_s={self.bucket_s}, buckets={len(self._buckets)}, "
            f"total_calls={self.total_calls}, total_failed={self.total_failed})"
        )
