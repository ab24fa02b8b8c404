"""Latency histograms and event-time RED series."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from watchman_collector.stats import (
    LATENCY_BUCKETS_S,
    Histogram,
    RedSeries,
    add_call,
    quantile_of_counts,
)

S = 1_000_000_000
T0 = 1_700_000_000 * S  # a bucket boundary for 10 s buckets


def test_default_buckets_are_the_servicegraph_connectors():
    """The bounds are the Collector servicegraph connector's default latency buckets."""
    assert LATENCY_BUCKETS_S == (
        0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1, 1.4, 2, 5, 10, 15,
    )  # fmt: skip


def test_value_on_a_bound_counts_in_that_bounds_bucket():
    """Bounds are inclusive upper bounds (`le`), +Inf last."""
    h = Histogram()
    h.observe(0.1)
    h.observe(0.1000001)
    h.observe(99.0)
    assert h.counts[LATENCY_BUCKETS_S.index(0.1)] == 1
    assert h.counts[LATENCY_BUCKETS_S.index(0.2)] == 1
    assert h.counts[-1] == 1
    assert h.cumulative()[-1] == h.count == 3
    assert h.max_s == 99.0
    assert h.sum_s == pytest.approx(99.2000001)


def test_negative_latency_counts_as_zero():
    """Clock skew cannot make a negative latency: it counts as 0 s."""
    h = Histogram()
    h.observe(-1.0)
    assert h.counts[0] == 1
    assert h.sum_s == 0.0


def test_quantile_interpolates_like_promql():
    """quantile() interpolates inside the bucket as PromQL's histogram_quantile does."""
    h = Histogram((1.0, 2.0, 4.0))
    for v in (0.5, 1.5, 1.5, 3.0):
        h.observe(v)
    # rank 2 of 4 falls in (1, 2] holding ranks 2..3: 1 + (2-1) * (2-1)/2
    assert h.quantile(0.5) == pytest.approx(1.5)
    # rank 0.4 in the first bucket, which starts at 0
    assert h.quantile(0.1) == pytest.approx(0.4)
    # rank 3.96 falls in (2, 4] holding one: 2 + 2 * 0.96
    assert h.quantile(0.99) == pytest.approx(3.92)


def test_quantile_in_the_inf_bucket_is_the_highest_bound():
    """A rank in the +Inf bucket answers the highest finite bound, as PromQL does."""
    h = Histogram((1.0, 2.0))
    h.observe(30.0)
    assert h.quantile(0.5) == 2.0


def test_quantile_of_empty_histogram_is_none_and_q_is_checked():
    """An empty histogram has no quantile; q outside [0, 1] is an error."""
    h = Histogram()
    assert h.quantile(0.5) is None
    with pytest.raises(ValueError, match="quantile"):
        h.quantile(1.5)


def test_merge_adds_counts_and_rejects_other_bounds():
    """merge() sums two histograms with the same bounds and refuses different bounds."""
    a, b = Histogram(), Histogram()
    a.observe(0.003)
    b.observe(0.003)
    b.observe(7.0)
    a.merge(b)
    assert a.count == 3
    assert a.max_s == 7.0
    assert a.counts[LATENCY_BUCKETS_S.index(0.004)] == 2
    with pytest.raises(ValueError, match="bounds"):
        a.merge(Histogram((1.0,)))


def test_window_sums_buckets_of_the_last_seconds():
    """window() counts the calls of the buckets within the window, not older ones."""
    series = RedSeries(bucket_s=10, retention_s=3600)
    now = T0 + 600 * S
    assert series.add(T0, False, 0.1, 0.05, now, 3600)  # 10 min ago
    for i in range(6):
        assert series.add(now - i * S, i == 0, 0.2, 0.1, now, 120)
    view = series.window(now, 60)
    assert view.calls == 6
    assert view.failed == 1
    assert view.error_ratio == pytest.approx(1 / 6)
    assert series.window(now, 900).calls == 7
    assert view.server_latency.count == 6
    assert view.client_latency.count == 6


def test_rate_divides_by_the_time_covered():
    """rate_per_s divides by the time the window's buckets cover up to now, not a full window."""
    series = RedSeries(bucket_s=10, retention_s=3600)
    now = T0 + 55 * S  # the oldest bucket overlapping the last 60 s starts at T0 - 10 s
    for _ in range(130):
        series.add(now, False, 0.01, None, now, 120)
    assert series.window(now, 60).rate_per_s == pytest.approx(2.0)


def test_late_call_beyond_allowed_lateness_is_refused():
    """A call older than now minus the allowed lateness is dropped (add returns False)."""
    series = RedSeries(bucket_s=10, retention_s=3600)
    now = T0 + 1000 * S
    assert series.add(now - 100 * S, False, 0.1, None, now, 120)
    assert not series.add(now - 200 * S, False, 0.1, None, now, 120)
    assert series.total_calls == 1


def test_late_call_within_lateness_lands_in_its_own_bucket():
    """Late data within the allowed lateness is counted in the bucket of its event time."""
    series = RedSeries(bucket_s=10, retention_s=3600)
    now = T0 + 100 * S
    series.add(now, False, 0.1, None, now, 120)
    series.add(T0 + 5 * S, True, 0.1, None, now, 120)
    buckets = series.buckets(now, 100)
    assert buckets[0].start_ns == T0
    assert (buckets[0].calls, buckets[0].failed) == (1, 1)
    assert buckets[-1].calls == 1
    assert sum(b.calls for b in buckets[1:-1]) == 0


def test_buckets_fill_gaps_with_zeros_oldest_first():
    """buckets() returns one bucket per interval, oldest first, empty ones filled in."""
    series = RedSeries(bucket_s=10, retention_s=3600)
    now = T0 + 59 * S
    series.add(T0 + 1 * S, False, 0.1, None, now, 120)
    buckets = series.buckets(now, 60)
    assert [b.start_ns for b in buckets] == [T0 + i * 10 * S for i in range(-1, 6)]
    assert [b.calls for b in buckets] == [0, 1, 0, 0, 0, 0, 0]


def test_future_call_counts_at_now():
    """A call stamped after now (a sender's clock ahead) is counted in the current bucket."""
    series = RedSeries(bucket_s=10, retention_s=3600)
    series.add(T0 + 3600 * S, False, 0.1, None, T0, 120)
    assert series.window(T0, 10).calls == 1


def test_totals_never_decrease_when_buckets_roll_off():
    """Cumulative totals keep every accepted call although old buckets are dropped."""
    series = RedSeries(bucket_s=10, retention_s=60)
    for i in range(30):
        t = T0 + i * 10 * S
        series.add(t, i % 2 == 0, 0.1, 0.05, t, 120)
    assert len(series) <= 6
    assert series.total_calls == 30
    assert series.total_failed == 15
    assert series.total_client.count == 30
    assert series.total_server.count == 30


def test_prune_frees_idle_series():
    """prune(now) drops buckets that fell out of the retention during an idle gap."""
    series = RedSeries(bucket_s=10, retention_s=60)
    series.add(T0, False, 0.1, None, T0, 120)
    series.prune(T0 + 10_000 * S)
    assert len(series) == 0
    assert series.total_calls == 1


def test_view_latency_prefers_server_side_per_call():
    """A view's latency takes each call's server latency where seen, else its client latency."""
    series = RedSeries(bucket_s=10, retention_s=3600)
    series.add(T0, False, 0.5, 0.3, T0, 120)  # paired: server side counts
    series.add(T0, True, 9.0, None, T0, 120)  # the callee never answered: client side counts
    view = series.window(T0, 60)
    assert view.latency.count == 2
    assert view.max_s == 9.0
    assert view.avg_s == pytest.approx(4.65)
    assert view.p50_s is not None
    assert view.p99_s is not None


def test_empty_view_has_no_latency_and_zero_error_ratio():
    """A window without calls has rate 0, error ratio 0.0 and no latency figures."""
    view = RedSeries().window(T0, 300)
    assert (view.calls, view.rate_per_s, view.error_ratio) == (0, 0.0, 0.0)
    assert view.avg_s is view.max_s is view.p50_s is view.p95_s is view.p99_s is None


# -- the compact representation against a plain model of the same semantics ----------------------


@dataclass
class _Model:
    """Every accepted call kept as is: the semantics of the series, computed the slow way."""

    bucket_s: float = 10.0
    retention_s: float = 3600.0
    calls: list[tuple[int, bool, float | None, float | None]] = field(default_factory=list)
    newest: int | None = None

    def add(  # RedSeries.add's signature
        self, t: int, failed: bool, c: float | None, s: float | None, now: int, late_s: float
    ) -> bool:
        t = min(t, now)
        if now - t > late_s * S:
            return False
        idx = t // int(self.bucket_s * S)
        keep = -(-int(self.retention_s * S) // int(self.bucket_s * S))
        if self.newest is not None and idx <= self.newest - keep:
            return False
        self.newest = idx if self.newest is None else max(self.newest, idx)
        clamp = lambda v: None if v is None else max(v, 0.0)  # noqa: E731
        self.calls.append((idx, failed, clamp(c), clamp(s)))
        return True

    def histogram(self, idx_from: int, idx_to: int, which: str) -> Histogram:
        h = Histogram()
        for idx, _, c, s in self.calls:
            if idx_from <= idx <= idx_to:
                v = {"client": c, "server": s, "latency": s if s is not None else c}[which]
                if v is not None:
                    h.observe(v)
        return h

    def count(self, idx_from: int, idx_to: int) -> tuple[int, int]:
        chosen = [f for idx, f, _, _ in self.calls if idx_from <= idx <= idx_to]
        return len(chosen), sum(chosen)


def _same(got: Histogram, want: Histogram) -> None:
    assert got.counts == want.counts
    assert got.count == want.count
    assert got.max_s == want.max_s
    assert got.sum_s == pytest.approx(want.sum_s, rel=1e-9, abs=1e-12)


def _random_traffic(
    seed: int, series: RedSeries, model: _Model, buckets: int, late_s: float = 120.0
) -> int:
    """Feed both the same random calls (late ones, one-sided ones, skewed clocks); the last now."""
    rng = random.Random(seed)
    now = T0
    for _ in range(buckets):
        now += rng.choice((3, 7, 10, 10, 10, 25)) * S
        for _ in range(rng.randrange(0, 6)):
            t = now - rng.choice((0, 0, 0, 1, 5, 15, 40, 119, 130, 5000)) * S + rng.randrange(S)
            c = rng.choice((None, rng.uniform(-0.01, 0.3), rng.expovariate(2.0), 0.1, 20.0))
            s_ = rng.choice((None, None, rng.uniform(0, 0.2), 0.002))
            if c is None and s_ is None:
                c = 0.05
            failed = rng.random() < 0.2
            assert series.add(t, failed, c, s_, now, late_s) == model.add(
                t, failed, c, s_, now, late_s
            )
    return now


@pytest.mark.parametrize("seed", range(6))
def test_windows_buckets_and_totals_match_a_plain_model(seed: int):
    """Windows within the detail horizon, buckets and totals count exactly what a model keeping
    every call would."""
    series = RedSeries(bucket_s=10, retention_s=3600)
    model = _Model()
    now = _random_traffic(seed, series, model, buckets=300)
    idx_now = now // (10 * S)
    for seconds in (10, 30, 60, 120, 300, 600, 900):
        view = series.window(now, seconds)
        first = (now - seconds * S) // (10 * S)
        assert (view.calls, view.failed) == model.count(first, idx_now)
        for which, got in (
            ("client", view.client_latency),
            ("server", view.server_latency),
            ("latency", view.latency),
        ):
            _same(got, model.histogram(first, idx_now, which))
    for b in series.buckets(now - 10 * S, 120):
        idx = b.start_ns // (10 * S)
        assert (b.calls, b.failed) == model.count(idx, idx)
        _same(b.latency, model.histogram(idx, idx, "latency"))
        _same(b.server, model.histogram(idx, idx, "server"))
        _same(b.client, model.histogram(idx, idx, "client"))
    everything = (-(2**62), 2**62)
    assert (series.total_calls, series.total_failed) == model.count(*everything)
    _same(series.total_client, model.histogram(*everything, "client"))
    _same(series.total_server, model.histogram(*everything, "server"))


@pytest.mark.parametrize("seed", range(4))
def test_bucket_counts_without_histograms_match_the_histograms(seed: int):
    """`Bucket.served`, `Bucket.latency_counts()`, `calls_in` and `quantile_of_counts` give what
    the histograms and buckets give, for open, sealed and rolled-up buckets alike."""
    series = RedSeries(bucket_s=10, retention_s=3600)
    model = _Model()
    now = _random_traffic(seed, series, model, buckets=200, late_s=3000.0)
    for seconds in (20, 30, 45, 120, 900, 2000):
        buckets = series.buckets(now, seconds)
        assert series.calls_in(now, seconds) == sum(b.calls for b in buckets)
        for b in buckets:
            fresh = series.buckets(b.start_ns + 1, 1e-9)[0]  # no histogram made yet
            assert (fresh.start_ns, fresh.calls) == (b.start_ns, b.calls)
            assert fresh.served == b.server.count
            assert fresh.latency_counts() == b.latency.counts
            assert b.served == b.server.count  # and once the histograms exist
            assert b.latency_counts() == b.latency.counts
            for q in (0.0, 0.5, 0.95, 1.0):
                h = b.latency
                assert quantile_of_counts(h.bounds, h.counts, h.count, q) == h.quantile(q)
    # The open buckets read without `Bucket`s: the numbers the buckets give.
    head = series._head
    assert head is not None
    first = head - 11  # the oldest open bucket
    assert series.open_calls(first - 1, head) is None  # one of them already sealed
    calls = series.open_calls(first, head + 1)
    assert calls is not None
    for idx, n in zip(range(first, head + 2), calls, strict=True):
        b = series.buckets(idx * series._bucket_ns + 1, 1e-9)[0]
        numbers = series.open_numbers(idx)
        assert n == b.calls == numbers[0]
        counts = b.latency_counts()
        bins = tuple(counts) if sum(counts) else None
        assert numbers == (b.calls, b.failed, b.served, bins, sum(counts))
    empty = RedSeries().buckets(T0, 30)[0]
    assert (empty.served, empty.latency_counts()) == (0, [0] * (len(LATENCY_BUCKETS_S) + 1))
    assert RedSeries().calls_in(T0, 30) == 0
    assert RedSeries().open_calls(0, 3) is None


def _quantile_by_walking(
    bounds: tuple[float, ...], counts: list[int], count: int, q: float, max_s: float
) -> float | None:
    """The bin walk `Histogram.quantile` is defined by, one bin after another."""
    if not count:
        return None
    rank = q * count
    below = 0
    for i, n in enumerate(counts):
        if below + n >= rank and (n or i == len(bounds)):
            if i == len(bounds):
                return bounds[-1] if bounds else max_s
            start = bounds[i - 1] if i else 0.0
            end = bounds[i]
            if i == 0 and end <= 0.0:
                return end
            return start + (end - start) * ((rank - below) / n)
        below += n
    return bounds[-1] if bounds else max_s


def test_quantile_of_counts_is_the_bin_walk() -> None:
    """The running-count search answers exactly what walking the bins does, empty bins,
    rank 0, a first bound at 0 and no finite bounds included."""
    rng = random.Random(11)
    for _ in range(20_000):
        size = rng.choice([len(LATENCY_BUCKETS_S), 3, 1, 0])
        bounds = (
            LATENCY_BUCKETS_S
            if size == len(LATENCY_BUCKETS_S)
            else tuple(sorted(rng.uniform(0, 2) for _ in range(size)))
        )
        if bounds and rng.random() < 0.05:
            bounds = (0.0, *bounds[1:])
        counts = [rng.choice([0, 0, 1, 2, 5, 100]) for _ in range(len(bounds) + 1)]
        q = rng.choice([0.0, 0.5, 0.95, 0.99, 1.0, rng.random()])
        max_s = rng.uniform(0, 3)
        expected = _quantile_by_walking(bounds, counts, sum(counts), q, max_s)
        assert quantile_of_counts(bounds, counts, sum(counts), q, max_s) == expected


def test_quantile_of_counts_without_finite_bounds_is_the_highest_value():
    """Without finite bounds the quantile is the `max_s` given, as `Histogram.quantile` says."""
    h = Histogram(())
    h.observe(0.3)
    h.observe(0.7)
    assert quantile_of_counts((), h.counts, h.count, 0.5, h.max_s) == h.quantile(0.5) == 0.7
    with pytest.raises(ValueError, match="quantile"):
        quantile_of_counts((), [1], 1, 1.5)


def test_late_calls_land_in_sealed_and_rolled_up_buckets():
    """With a long allowed lateness, calls older than the open buckets still count where they
    belong, in windows and totals alike."""
    series = RedSeries(bucket_s=10, retention_s=3600)
    model = _Model()
    now = _random_traffic(7, series, model, buckets=200, late_s=3000)
    everything = (-(2**62), 2**62)
    assert (series.total_calls, series.total_failed) == model.count(*everything)
    for seconds in (200, 600, 900):
        first = (now - seconds * S) // (10 * S)
        view = series.window(now, seconds)
        assert (view.calls, view.failed) == model.count(first, now // (10 * S))
        _same(view.latency, model.histogram(first, now // (10 * S), "latency"))


def test_older_buckets_roll_up_into_wider_ones():
    """Beyond `detail_s` buckets are `rollup_s` wide: a long window counts whole rolled-up
    buckets and divides by the time they cover, and memory stays bounded."""
    series = RedSeries(bucket_s=10, retention_s=3600, detail_s=900, rollup_s=300)
    for i in range(2 * 360):  # two hours, one call per bucket
        t = T0 + i * 10 * S
        series.add(t, i % 10 == 0, 0.1, 0.05, t, 120)
    now = T0 + 720 * 10 * S - 1
    view = series.window(now, 3600)
    first = (now - 3600 * S) // (10 * S)
    start = first // 30 * 30  # the rolled-up bucket holding the window's start
    assert view.calls == 720 - (start - T0 // (10 * S))
    assert view.rate_per_s == pytest.approx(view.calls / ((now - start * 10 * S) / S))
    assert view.server_latency.count == view.calls
    assert series.total_calls == 720
    assert len(series) <= 12 + 92 + 14
    buckets = series.buckets(now, 3600)
    assert buckets[0].start_ns == start * 10 * S
    assert buckets[1].start_ns - buckets[0].start_ns == 300 * S
    assert buckets[-1].start_ns == (now // (10 * S)) * 10 * S
    assert sum(b.calls for b in buckets) == view.calls


def test_counts_past_sixteen_bits_widen_their_column():
    """A bucket with more calls in one bin than a 16-bit count holds keeps them all."""
    series = RedSeries(bucket_s=10, retention_s=3600)
    for _ in range(70_000):
        series.add(T0, False, 0.001, None, T0, 120)
    later = T0 + 300 * S  # the busy bucket is sealed by now
    series.add(later, False, 0.001, None, later, 120)
    assert series.window(later, 600).client_latency.counts[0] == 70_001
    assert next(b for b in series.buckets(later, 600) if b.start_ns == T0).calls == 70_000
    assert series.total_client.count == 70_001


def test_add_call_counts_in_both_series_as_two_adds_would():
    """add_call(a, b, ...) leaves a and b as a.add(...) and b.add(...) would."""
    a, b, ref = RedSeries(), RedSeries(), RedSeries()
    rng = random.Random(3)
    for i in range(500):
        t = T0 + i * S
        c, s_ = rng.uniform(0, 1), rng.choice((None, 0.01, 0.5))
        assert add_call(a, b, t, i % 7 == 0, c, s_, t, 120) == ref.add(t, i % 7 == 0, c, s_, t, 120)
    now = T0 + 500 * S
    for series in (a, b):
        _same(series.window(now, 300).latency, ref.window(now, 300).latency)
        assert series.total_calls == ref.total_calls == 500


@pytest.mark.parametrize("retention_s", [60, 200, 1200])
def test_short_retention_keeps_exactly_the_retained_buckets(retention_s: int):
    """With a retention shorter than (or near) the detail horizon, windows count exactly the
    calls of the retained buckets, as before."""
    series = RedSeries(bucket_s=10, retention_s=retention_s)
    model = _Model(retention_s=retention_s)
    now = _random_traffic(8, series, model, buckets=250)
    assert model.newest is not None
    keep_from = model.newest - retention_s // 10 + 1
    last = now // (10 * S)
    for seconds in (30, 120, 600, 900):
        first = max((now - seconds * S) // (10 * S), keep_from)
        view = series.window(now, seconds)
        assert (view.calls, view.failed) == model.count(first, last)
        _same(view.latency, model.histogram(first, last, "latency"))


def test_late_writes_count_calls_older_than_the_newest_bucket() -> None:
    """`late_writes` counts calls into a bucket before the newest one, open or sealed."""
    series = RedSeries(10.0, 3600.0)
    now = T0 + 1000 * S

    def add(at_s: float) -> None:
        assert series.add(T0 + int(at_s * S), False, 0.01, 0.01, now, 3600.0)

    add(5)
    add(15)
    add(12)  # the newest bucket again
    assert series.late_writes == 0
    add(5)  # before the newest: late
    assert series.late_writes == 1
    add(300)  # far ahead: the first buckets are sealed
    assert series.late_writes == 1
    assert not series.is_open((T0 + 15 * S) // (10 * S))
    assert series.is_open((T0 + 300 * S) // (10 * S))
    add(15)  # into a sealed bucket
    assert series.late_writes == 2
    assert series.newest_index == (T0 + 300 * S) // (10 * S)
