"""Detection's reading of one series' window, kept up to date from tick to tick.

Summing latency histograms over the window was most of the cost of judging a series, so a
bucket's latency bins are read once, when it enters the window, and again only if its call count
changed (a bucket only ever gains calls). They are added up over the window only when a tick needs
the window's quantile: most need only to know that it is below a floor (`surely_below`, from the
bins of each bucket), or a quantile a verdict works out if it is ever read (`quantile_later`).
A window none of whose buckets took a call since the last read is not read again at all: calls
land in the series' newest bucket unless they are late, and the series counts its late ones
(`RedSeries.late_writes`), so two numbers tell. The numbers are those `RedSeries.window` gives.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from operator import add, itemgetter

from watchman_collector.stats import Bucket, Histogram, RedSeries, quantile_of_counts

__all__ = ["Kept", "WindowQuantile", "WindowReader"]

_NS = 1_000_000_000
# `WindowReader.surely_below` counts only the bins whose upper bound lies below a floor by this
# much: an interpolated quantile may round a few units in the last place above its bin's bound.
_MARGIN = 1e-9
_BINS = itemgetter(4)  # a kept bucket's latency bins

# A window bucket as last read: start, calls, failed calls, calls whose server half was seen,
# its latency bins (None: no latency) and how many calls they hold, and the latency histogram
# itself only for a histogram without finite bounds (whose quantile is its highest value).
Kept = tuple[int, int, int, int, tuple[int, ...] | None, int, Histogram | None]
"""A window bucket as last read (`WindowReader.kept`)."""
_EMPTY: tuple[tuple[int, ...] | None, int, Histogram | None] = (None, 0, None)


def _summed(parts: Sequence[Sequence[int] | None], size: int) -> list[int]:
    """Latency bins added up, bin by bin (None: a bucket without latency); `size` bins."""
    counts: list[int] | None = None
    for bins in parts:
        if bins is not None:
            counts = list(bins) if counts is None else list(map(add, counts, bins))
    return [0] * size if counts is None else counts


def _keep(bucket: Bucket) -> Kept:
    # The bins are read from the bucket's numbers: making its histograms for them was most of
    # a tick's cost when the window moved on.
    counts = bucket.latency_counts()
    total = sum(counts)
    if not total:
        return (bucket.start_ns, bucket.calls, bucket.failed, bucket.served, *_EMPTY)
    return (
        bucket.start_ns,
        bucket.calls,
        bucket.failed,
        bucket.served,
        tuple(counts),
        total,
        None if len(counts) > 1 else bucket.latency,
    )


class WindowQuantile:
    """A quantile of a window's latency bins as they were when taken, worked out when read.

    Most verdicts' latency quantile is never read (only cascade reads it, around anomalies), so
    a verdict holds this instead of the number. It stands for its value: equality, hashing and
    `repr` are those of `value`. `parts` are the bins of the window's buckets (immutable), added
    up when the value is first read; they hold calls, so the value is a number.
    """

    __slots__ = ("_bounds", "_max_s", "_parts", "_q", "_value")

    def __init__(
        self,
        bounds: tuple[float, ...],
        parts: tuple[tuple[int, ...] | None, ...],
        q: float,
        max_s: float,
    ) -> None:
        self._bounds = bounds
        self._parts = parts
        self._q = q
        self._max_s = max_s
        self._value: float | None = None  # None: not worked out yet

    @property
    def value(self) -> float:
        """The quantile (`Histogram.quantile` of the bins), worked out on the first read."""
        value = self._value
        if value is None:
            counts = _summed(self._parts, len(self._bounds) + 1)
            value = quantile_of_counts(self._bounds, counts, sum(counts), self._q, self._max_s)
            assert value is not None  # the parts hold calls
            self._value = value
        return value

    def __eq__(self, other: object) -> bool:
        if isinstance(other, WindowQuantile):
            return self.value == other.value
        if isinstance(other, float | int):
            return self.value == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        return repr(self.value)


class WindowReader:
    """The window of one series as of the last tick: calls, failures, latency bins, rate."""

    __slots__ = (
        "bounds",
        "bucket_ns",
        "calls",
        "error_ratio",
        "failed",
        "first",
        "kept",
        "key",
        "last",
        "late_writes",
        "later",
        "marked",
        "newest_calls",
        "newest_read",
        "rate_per_s",
        "served",
        "total",
        "total_calls",
    )

    def __init__(self, series: RedSeries) -> None:
        self.bounds = series.bounds
        self.bucket_ns = int(series.bucket_s * _NS)
        self.key: list[int] = []  # the window's first bucket start and per-bucket calls
        self.kept: list[Kept] = []  # the window's buckets, oldest first
        self.first = self.last = 0  # indices of the window's first and last buckets
        self.total_calls = -1  # the window's calls when last read (-1: read it again)
        self.calls = self.failed = self.served = 0  # served: calls whose server half was seen
        self.rate_per_s = self.error_ratio = 0.0
        self.total = 0  # calls in the latency bins
        # The last quantile taken of this window (`quantile_later`; None: none since its bins
        # changed). The bins are added up only for it: most ticks need only a bound of the
        # quantile, or none (`surely_below`).
        self.later: WindowQuantile | None = None
        # The series as of the last read (`mark`): its late writes and newest bucket index.
        self.marked: RedSeries | None = None
        self.late_writes = 0
        self.newest_read = -1
        self.newest_calls = -1  # the calls of that newest bucket then (`newest_calls`)

    def mark(self, series: RedSeries) -> None:
        """Note how far `series` had been written when the window was read from it."""
        self.marked = series
        self.late_writes = series.late_writes
        newest = series.newest_index
        self.newest_read = -1 if newest is None else newest
        self.newest_calls = series.newest_calls()

    def stay(self, series: RedSeries, first: int, eval_ns: int, bucket_s: float) -> bool:
        """Whether buckets `first` to `last` are still as read; if so, the rate moved to `eval_ns`.

        Calls land in a series' newest bucket or a newer one, except late ones, which
        `RedSeries.late_writes` counts. So when no late call came since the last read, and the
        newest bucket then lay past the window, or is still the newest with the same calls (a
        quiet series), the window's buckets are unchanged: a test of a few numbers instead of a
        lookup per bucket. Only for open buckets (sealed ones age out). When they are unchanged
        the window's rate is moved on (`move_to`) and the series noted as read (as `mark` would,
        inline): most series cost a tick that does not move the window this and `move_to`.
        """
        if (
            series is not self.marked
            or series.late_writes != self.late_writes
            or first < series.open_from  # `is_open(first)`, without a call
        ):
            return False
        if self.newest_read > self.last:
            newest = series.newest_index
            self.newest_read = -1 if newest is None else newest
            self.newest_calls = series.newest_calls()
        elif series.newest_index != self.newest_read or series.newest_calls() != self.newest_calls:
            return False
        self.move_to(eval_ns, bucket_s)
        return True

    def forget(self) -> None:
        """Read the window afresh at the next tick (other rules: other windows)."""
        self.key = []
        self.total_calls = -1
        self.marked = None
        self.first = self.last = -2  # no bucket index: neither "the same" nor "one on"

    def read(self, window: list[Bucket], eval_ns: int, bucket_s: float) -> bool:
        """Take in the window's buckets (`RedSeries.buckets` to `eval_ns`); False if changed."""
        start_ns = window[0].start_ns
        key = [start_ns, *[b.calls for b in window]]
        same = key == self.key
        if not same:
            self.key = key
            old = self.kept
            n_old = len(old)
            # Where the old window's buckets are in the new one (one further per bucket moved):
            # a bucket kept with the same calls is taken as it was, not read again.
            shift = (start_ns - old[0][0]) // self.bucket_ns if old else 0
            kept: list[Kept] = []
            calls = failed = served = total = 0
            for i, b in enumerate(window):
                n = b.calls
                j = i + shift
                if 0 <= j < n_old and old[j][1] == n and old[j][0] == b.start_ns:
                    k = old[j]
                elif not n:
                    k = (b.start_ns, 0, 0, 0, *_EMPTY)
                else:
                    k = _keep(b)
                kept.append(k)
                calls += n
                failed += k[2]
                served += k[3]
                total += k[5]
            self.kept = kept
            self.total = total
            self.calls, self.failed, self.served = calls, failed, served
            self.error_ratio = failed / calls if calls else 0.0
            self.later = None
        self.move_to(eval_ns, bucket_s)
        return same

    def slide(self, series: RedSeries, first: int, eval_ns: int, bucket_s: float) -> Kept | None:
        """The steady state, read from open buckets: the window moved on by one bucket.

        `first` is the index of the new window's first bucket. Unless the window's buckets are
        open (`RedSeries.open_calls`) and those that stay are as they were, nothing is changed
        and None is returned (read the window instead); else the window is moved on to
        `eval_ns` (`move_to`), the series noted as read (`mark`), and the bucket that left the
        window, as it is now, returned for the baseline to learn.
        """
        kept = self.kept
        key = self.key
        n = len(kept)
        if not n or not key or not self.bounds:
            return None
        bucket_ns = self.bucket_ns
        start_ns = first * bucket_ns
        if key[0] != start_ns - bucket_ns:
            return None
        gone = kept[0]
        late_writes = series.late_writes
        newest = series.newest_index
        if (
            series is self.marked
            and late_writes == self.late_writes
            and (
                self.newest_read > self.last
                or (newest == self.newest_read and series.newest_calls() == self.newest_calls)
            )
            and first > series.open_from  # `is_open(first - 1)`, without a call
        ):
            # As `stay`: no call landed in the old window since it was read, so only the new
            # bucket is read.
            leaving = gone
            del key[0]  # in place: the key is this reader's own list
        else:
            calls = series.open_calls(first - 1, first + n - 2)  # the old window's buckets
            if calls is None or calls[1:] != key[2:]:
                return None
            # A late call may have landed in the leaving bucket since it was last read.
            leaving = (
                gone if calls[0] == gone[1] else (gone[0], *series.open_numbers(first - 1), None)
            )
            key = calls
        # `key` holds the leaving bucket's calls, then those of the buckets that stay.
        key[0] = start_ns
        calls_in, failed_in, served_in, bins, total = series.open_numbers(first + n - 1)
        key.append(calls_in)
        self.key = key
        # The oldest bucket leaves and the new one comes in; then the rate (`move_to`) and the
        # read marks (`mark`), inline: a call each for every series, on a tick that moves the
        # window. `test_sliding_by_one_bucket_equals_reading_the_window` holds them together.
        del kept[0]
        kept.append(
            (start_ns + (n - 1) * bucket_ns, calls_in, failed_in, served_in, bins, total, None)
        )
        # The bins are added up when a quantile is taken: a bucket that comes in with the bins of
        # the one that left leaves them, and the quantile taken, as they were (the bounds are
        # not empty, above; one bin without bounds holds no values).
        if gone[4] != bins:
            self.total += total - gone[5]
            self.later = None
        self.calls = in_window = self.calls + calls_in - gone[1]
        self.failed = failed = self.failed + failed_in - gone[2]
        self.served += served_in - gone[3]
        self.error_ratio = failed / in_window if in_window else 0.0
        covered_s = (eval_ns - start_ns) / _NS
        if covered_s < bucket_s:  # noqa: PLR1730  # per series: no max() call
            covered_s = bucket_s
        self.rate_per_s = in_window / covered_s
        self.total_calls = in_window
        self.marked = series
        self.late_writes = late_writes
        if newest is None:
            self.newest_read = self.newest_calls = -1
        else:
            self.newest_read = newest
            # Read only for a quiet series (its newest bucket in the window or before it).
            self.newest_calls = (
                -1
                if newest > first + n - 1
                else calls_in
                if newest == first + n - 1
                else series.newest_calls()
            )
        return leaving

    def kept_quantile(self, k: Kept, q: float) -> float | None:
        """The latency quantile of a bucket as kept (`Bucket.latency.quantile`)."""
        if k[6] is not None:
            return k[6].quantile(q)
        counts = k[4]
        return None if counts is None else quantile_of_counts(self.bounds, counts, k[5], q)

    def move_to(self, eval_ns: int, bucket_s: float) -> None:
        """The window's rate as of `eval_ns`, its buckets unchanged."""
        # As `RedSeries.window`: divided by the time covered, from the first bucket's start.
        covered_s = (eval_ns - self.key[0]) / _NS
        if covered_s < bucket_s:  # noqa: PLR1730  # once per series per tick: no max() call
            covered_s = bucket_s
        self.rate_per_s = self.calls / covered_s

    def bucket_quantile(self, bucket: Bucket, q: float) -> float | None:
        """A bucket's latency quantile, from its histogram as kept in the window if it is."""
        kept = self.kept
        if kept:
            j = (bucket.start_ns - kept[0][0]) // self.bucket_ns
            if 0 <= j < len(kept):
                k = kept[j]
                if k[0] == bucket.start_ns and k[1] == bucket.calls:
                    return self.kept_quantile(k, q)
        return bucket.latency.quantile(q)

    def surely_below(self, q: float, floor_s: float) -> bool:
        """Whether the window's q-quantile is below `floor_s`, known without working it out.

        True when the calls in the bins wholly below the floor already reach the quantile's
        rank (then the quantile lies in one of those bins); False when that does not settle it
        (work the quantile out). A slice and a sum per bucket, without adding the bins up.
        """
        below = bisect_left(self.bounds, floor_s * (1.0 - _MARGIN))  # bins wholly below
        calls = 0
        for k in self.kept:
            bins = k[4]
            if bins is not None:
                calls += sum(bins[:below])
        return calls > 0 and calls >= q * self.total

    def quantile_later(self, q: float) -> WindowQuantile | None:
        """The q-quantile of the window as it is now, worked out when read; None without calls."""
        later = self.later
        if later is not None and later._q == q:
            return later  # the window did not change since: the same (a verdict keeps it)
        if not self.total:
            return None
        # Without finite bounds the quantile is the highest value, which only histograms hold.
        max_s = 0.0 if self.bounds else max(k[6].max_s for k in self.kept if k[6] is not None)
        later = self.later = WindowQuantile(self.bounds, tuple(map(_BINS, self.kept)), q, max_s)
        return later

    def holds(self, quantile: WindowQuantile | None) -> bool:
        """Whether `quantile` is this window's (`quantile_later`), its bins unchanged since."""
        return not self.total if quantile is None else quantile is self.later

    def quantile(self, q: float) -> float | None:
        """The q-quantile of the window's latency (`Histogram.quantile`); None without calls."""
        later = self.quantile_later(q)
        return None if later is None else later.value
