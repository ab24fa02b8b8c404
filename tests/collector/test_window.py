"""The kept window reading equals a fresh `RedSeries.window` read, however the window moves."""

from __future__ import annotations

import copy
import random
from bisect import bisect_left

import pytest
from watchman_collector.stats import LATENCY_BUCKETS_S, RedSeries, quantile_of_counts
from watchman_collector.window import WindowQuantile, WindowReader

NS = 1_000_000_000
T0 = 1_700_000_000 * NS


def add_calls(series: RedSeries, rng: random.Random, start_s: float, end_s: float) -> None:
    """Random calls with event times in [start_s, end_s), some failed, some client-only."""
    t = start_s
    while t < end_s:
        time_ns = T0 + int(t * NS)
        latency = rng.lognormvariate(-3.5, 1.0)
        server = None if rng.random() < 0.3 else latency
        series.add(time_ns, rng.random() < 0.1, latency + 0.001, server, time_ns, 120.0)
        t += rng.expovariate(3.0)


def filled(seed: int, until_s: float) -> tuple[RedSeries, WindowReader, random.Random]:
    """A series of 10 s buckets with random calls from 0 to `until_s`, its reader and the rng."""
    rng = random.Random(seed)
    series = RedSeries(10.0, 3600.0)
    add_calls(series, rng, 0, until_s)
    return series, WindowReader(series), rng


def read(reader: WindowReader, series: RedSeries, eval_ns: int) -> None:
    """What detection does: skip an unchanged series, else read the window's buckets."""
    first = (eval_ns - 30 * NS) // (10 * NS)
    last = eval_ns // (10 * NS)
    total = series.total_calls
    if (first, last, total) == (reader.first, reader.last, reader.total_calls):
        reader.move_to(eval_ns, series.bucket_s)
    else:
        reader.first, reader.last, reader.total_calls = first, last, total
        reader.read(series.buckets(eval_ns, 30.0), eval_ns, series.bucket_s)


def assert_as_fresh(reader: WindowReader, series: RedSeries, eval_ns: int) -> None:
    """The reader's numbers are those of `RedSeries.window` at `eval_ns`."""
    view = series.window(eval_ns, 30.0)
    assert (reader.calls, reader.failed, reader.error_ratio, reader.rate_per_s) == (
        view.calls,
        view.failed,
        view.error_ratio,
        view.rate_per_s,
    )
    assert reader.served == view.server_latency.count
    for q in (0.5, 0.95, 0.99, 1.0):
        exact = view.latency.quantile(q)
        later = reader.quantile_later(q)  # before `quantile`: worked out from the buckets' bins
        assert reader.quantile(q) == exact
        assert later is None if exact is None else later.value == exact
        assert reader.holds(later)


def test_reading_follows_a_live_series_tick_by_tick() -> None:
    """Calls arriving as the clock moves, some late into judged buckets: always a fresh read."""
    series, reader, rng = filled(4, 60)
    for step in range(40):
        now_s = 60 + 5 * step
        add_calls(series, rng, now_s - 5, now_s)
        if step % 3 == 0:  # late arrivals into buckets already in the window
            add_calls(series, rng, now_s - 35, now_s - 30)
        eval_ns = T0 + (now_s - 10) * NS
        read(reader, series, eval_ns)
        assert_as_fresh(reader, series, eval_ns)


def test_reading_survives_idle_gaps_and_jumps() -> None:
    """Idle stretches, a jump far ahead and back to traffic: the numbers stay a fresh read's."""
    series, reader, rng = filled(9, 40)
    for now_s in [45, 50, 55, 60, 80, 85, 300, 305, 310]:
        eval_ns = T0 + (now_s - 10) * NS
        read(reader, series, eval_ns)
        assert_as_fresh(reader, series, eval_ns)
    add_calls(series, rng, 310, 360)
    for now_s in range(360, 420, 5):
        eval_ns = T0 + (now_s - 10) * NS
        read(reader, series, eval_ns)
        assert_as_fresh(reader, series, eval_ns)


def test_empty_series_reads_as_no_calls() -> None:
    """A series without calls has no quantile and a zero rate."""
    series = RedSeries(10.0, 3600.0)
    reader = WindowReader(series)
    read(reader, series, T0 + 100 * NS)
    assert (reader.calls, reader.served, reader.rate_per_s) == (0, 0, 0.0)
    assert reader.quantile(0.95) is None


def test_bucket_quantile_uses_the_kept_histogram() -> None:
    """A bucket still in the window answers its quantile as the bucket itself does."""
    series, reader, _ = filled(1, 60)
    eval_ns = T0 + 50 * NS
    read(reader, series, eval_ns)
    for b in series.buckets(eval_ns, 30.0):
        assert reader.bucket_quantile(b, 0.95) == b.latency.quantile(0.95)


def test_sliding_by_one_bucket_equals_reading_the_window() -> None:
    """The steady-state slide, from open buckets, leaves the numbers a full read gives, and
    hands back the bucket that left as it is now (late calls into it included). Without a late
    call since the last read the buckets that stay are not looked up again (`stay`)."""
    series, reader, rng = filled(9, 60)
    slid = untouched = 0
    for step in range(30):
        now_s = 60 + 10 * step
        add_calls(series, rng, now_s - 10, now_s)
        if step % 4 == 1:  # late calls into the bucket about to leave the window
            add_calls(series, rng, now_s - 55, now_s - 54)
        # Judged to 15 s ago: the newest bucket lies past the window, as it does live.
        eval_ns = T0 + (now_s - 15) * NS
        first = (eval_ns - 30 * NS) // (10 * NS)
        # On a copy: `stay` moves the rate on and notes the read when the buckets are unchanged.
        untouched += copy.copy(reader).stay(series, first - 1, eval_ns, series.bucket_s)
        leaving = reader.slide(series, first, eval_ns, series.bucket_s) if reader.kept else None
        if leaving is None:
            reader.read(series.buckets(eval_ns, 30.0), eval_ns, series.bucket_s)
            reader.mark(series)  # as detection does after a read; a slide marks by itself
        else:
            slid += 1
            # The slide noted the series as read, as `mark` would have.
            # (The newest bucket's calls only matter, and are only read, when it lies in the
            # window or before it.)
            last = eval_ns // (10 * NS)
            noted = (reader.marked, reader.late_writes, reader.newest_read)
            calls = reader.newest_calls if reader.newest_read <= last else None
            reader.mark(series)
            assert noted == (reader.marked, reader.late_writes, reader.newest_read)
            assert calls == (reader.newest_calls if reader.newest_read <= last else None)
            assert reader.total_calls == reader.calls
            gone = series.buckets(leaving[0] + 1, 1e-9)[0]
            assert (leaving[0], leaving[1], leaving[2]) == (gone.start_ns, gone.calls, gone.failed)
            for q in (0.5, 0.95):
                assert reader.kept_quantile(leaving, q) == gone.latency.quantile(q)
        # As detection does after every read or slide: the window's range.
        reader.first, reader.last = first, eval_ns // (10 * NS)
        assert_as_fresh(reader, series, eval_ns)
    assert slid >= 20  # the steady state was taken, not only full reads
    assert 15 <= untouched < slid  # with and without late calls since the last read


def test_a_quiet_series_is_untouched_until_a_call_lands_in_its_newest_bucket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A series gone quiet has its newest bucket in the window: while that bucket keeps its
    calls (and none came late) the window is known unchanged; a call into it, which is not
    late, is seen, and the window read afresh."""
    series, reader, _ = filled(5, 40)  # calls until 40 s: the newest bucket is 30-40 s
    eval_ns = T0 + 45 * NS
    first = (eval_ns - 30 * NS) // (10 * NS)
    reader.read(series.buckets(eval_ns, 30.0), eval_ns, series.bucket_s)
    reader.mark(series)
    reader.first, reader.last = first, eval_ns // (10 * NS)
    assert reader.newest_read <= reader.last  # not the busy series' test: the newest's calls
    assert reader.stay(series, first, eval_ns, series.bucket_s)
    assert_as_fresh(reader, series, eval_ns)
    series.add(T0 + 35 * NS, True, 0.2, 0.2, T0 + 46 * NS, 120.0)
    assert series.late_writes == reader.late_writes  # into the newest bucket: not late
    assert not reader.stay(series, first, eval_ns, series.bucket_s)
    # Moved on a bucket, as detection does: the slide sees the staying bucket changed.
    eval_ns += 10 * NS
    first += 1
    assert reader.slide(series, first, eval_ns, series.bucket_s) is None
    reader.read(series.buckets(eval_ns, 30.0), eval_ns, series.bucket_s)
    reader.mark(series)
    reader.first, reader.last = first, eval_ns // (10 * NS)
    assert_as_fresh(reader, series, eval_ns)
    assert reader.stay(series, first, eval_ns, series.bucket_s)  # quiet again
    # A bucket later the slide takes the quiet window without looking its buckets up again.
    eval_ns += 10 * NS
    first += 1

    def looked_up(*_: object) -> None:
        raise AssertionError("the staying buckets were looked up again")

    monkeypatch.setattr(RedSeries, "open_calls", looked_up)
    assert reader.slide(series, first, eval_ns, series.bucket_s) is not None
    reader.first, reader.last = first, eval_ns // (10 * NS)
    assert_as_fresh(reader, series, eval_ns)


def test_slide_refuses_when_a_staying_bucket_changed() -> None:
    """A late call into a bucket that stays in the window: no slide, nothing changed."""
    series, reader, _ = filled(2, 70)
    eval_ns = T0 + 60 * NS
    reader.read(series.buckets(eval_ns, 30.0), eval_ns, series.bucket_s)
    before = (list(reader.key), list(reader.kept), reader.calls)
    series.add(T0 + 45 * NS, False, 0.01, 0.01, T0 + 70 * NS, 120.0)
    first = (eval_ns + 10 * NS - 30 * NS) // (10 * NS)
    assert reader.slide(series, first, eval_ns + 10 * NS, series.bucket_s) is None
    assert (reader.key, reader.kept, reader.calls) == before


def test_a_window_shorter_than_a_bucket_moves_on_bucket_by_bucket() -> None:
    """A 5 s window over 10 s buckets holds one bucket at times: moving it on reads as fresh."""
    series, reader, _ = filled(3, 120)
    for eval_s in range(45, 115, 10):
        eval_ns = T0 + eval_s * NS
        window = series.buckets(eval_ns, 5.0)
        assert len(window) == 1
        reader.read(window, eval_ns, series.bucket_s)
        view = series.window(eval_ns, 5.0)
        assert (reader.calls, reader.failed, reader.rate_per_s) == (
            view.calls,
            view.failed,
            view.rate_per_s,
        )
        assert reader.quantile(0.95) == view.latency.quantile(0.95)


# Floors on the default bounds and between them, below and above all of them.
FLOORS_S = (0.0, 0.001, 0.005, 0.0075, 0.01, 0.03, 0.05, 0.1, 0.2, 0.25, 1.0, 7.5, 100.0)


def test_surely_below_is_right_whenever_it_answers_and_answers_when_the_bins_settle_it() -> None:
    """`surely_below` never says below when the quantile is not, and says so whenever the
    quantile lies under the highest bound below the floor (its bin is wholly below); the same
    from a reader just made as from one that has followed the series and taken quantiles."""
    series, reader, rng = filled(6, 60)
    answered = unsettled = 0
    for step in range(40):
        now_s = 60 + 5 * step
        add_calls(series, rng, now_s - 5, now_s)
        eval_ns = T0 + (now_s - 10) * NS
        read(reader, series, eval_ns)
        fresh = WindowReader(series)  # no quantile taken of it yet
        read(fresh, series, eval_ns)
        view = series.window(eval_ns, 30.0)
        for q in (0.0, 0.5, 0.95, 0.99, 1.0):
            exact = view.latency.quantile(q)
            per_bucket = [fresh.surely_below(q, f) for f in FLOORS_S]
            reader.quantile(q)  # a quantile taken: answers stay the same
            assert [reader.surely_below(q, f) for f in FLOORS_S] == per_bucket
            for floor_s, below in zip(FLOORS_S, per_bucket, strict=True):
                if below:
                    assert exact is not None
                    assert exact < floor_s
                    answered += 1
                else:
                    j = bisect_left(LATENCY_BUCKETS_S, floor_s)
                    assert exact is None or j == 0 or exact >= LATENCY_BUCKETS_S[j - 1]
                    unsettled += exact is not None and exact < floor_s
    assert answered > 500  # it settles most windows below a floor, not none
    assert unsettled > 0  # and leaves those in the floor's own bin to the quantile


def test_a_quantile_taken_later_keeps_the_window_it_was_taken_of() -> None:
    """`quantile_later` answers the quantile of the window when it was taken, however the
    window moved on since; `holds` says whether the window's bins are still those."""
    series, reader, rng = filled(8, 60)
    taken: list[tuple[WindowQuantile | None, float | None]] = []
    for step in range(30):
        now_s = 60 + 10 * step
        add_calls(series, rng, now_s - 10, now_s)
        eval_ns = T0 + (now_s - 15) * NS
        before = taken[-1][0] if taken else None
        read(reader, series, eval_ns)
        if before is not None:
            assert not reader.holds(before)  # random calls: the bins changed
        taken.append((reader.quantile_later(0.95), series.window(eval_ns, 30.0).p95_s))
        assert reader.quantile_later(0.95) is taken[-1][0]  # the same until the bins change
    assert all(later is not None and later.value == exact for later, exact in taken)


def test_a_bucket_with_the_bins_of_the_one_that_left_keeps_the_quantile_taken() -> None:
    """Steady traffic: the bucket coming in has the bins of the one leaving, the window's
    bins are as they were, and the quantile taken still holds."""
    series = RedSeries(10.0, 3600.0)
    for i in range(12):  # two calls of 20 ms in each 10 s bucket
        for t_s in (i * 10 + 1, i * 10 + 6):
            series.add(T0 + t_s * NS, False, 0.021, 0.02, T0 + t_s * NS, 120.0)
    reader = WindowReader(series)
    eval_ns = T0 + 60 * NS
    first = (eval_ns - 30 * NS) // (10 * NS)
    reader.read(series.buckets(eval_ns, 30.0), eval_ns, series.bucket_s)
    reader.mark(series)
    reader.first, reader.last = first, eval_ns // (10 * NS)
    taken = reader.quantile_later(0.95)
    assert reader.slide(series, first + 1, eval_ns + 10 * NS, series.bucket_s) is not None
    assert reader.holds(taken)
    assert reader.quantile_later(0.95) is taken
    assert taken is not None
    assert taken.value == series.window(eval_ns + 10 * NS, 30.0).p95_s


def test_a_quantile_taken_later_stands_for_its_value() -> None:
    """Equal, hashed and printed as its value: verdicts holding one stay values."""
    bins = (0, 3, 5, 2, *([0] * (len(LATENCY_BUCKETS_S) - 3)))
    value = quantile_of_counts(LATENCY_BUCKETS_S, bins, 10, 0.95)
    assert value is not None
    split = (bins[:2] + (0,) * (len(bins) - 2), (0, 0, *bins[2:]))  # two buckets' bins
    one = WindowQuantile(LATENCY_BUCKETS_S, (bins,), 0.95, 0.0)
    two = WindowQuantile(LATENCY_BUCKETS_S, (*split, None), 0.95, 0.0)
    assert one == two == value
    assert one != WindowQuantile(LATENCY_BUCKETS_S, (bins,), 0.5, 0.0)
    assert hash(one) == hash(two) == hash(value)
    assert repr(one) == repr(value)
    assert one.value == value
