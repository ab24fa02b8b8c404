"""Detection's learned baseline of one series, kept incrementally from tick to tick.

Each closed bucket of a node's or edge's `RedSeries` becomes one summary (error ratio, latency
quantile, request rate); the baseline is the median and a robust σ (IQR / 1.349) of the newest
summaries. The summaries are kept in sorted lists as they arrive and leave, so a tick reads the
statistics by index instead of rebuilding and sorting lists over the whole history: that
rebuild, for every series on every tick, was a seventh of a detection tick on a large graph.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from watchman_collector.stats import Bucket

__all__ = ["BaselineLearner", "Robust", "median_sigma"]

Robust = tuple[float, float]
"""(median, robust σ) of a set of values."""

# A summary's error ratio or latency quantile not learned (too few calls); the values are not
# negative. Not NaN: equal to itself, so two unknowns compare as the same value.
_UNKNOWN = -1.0
# A statistic whose values changed since it was worked out (`stats`): told by identity (a
# robust pair) or sign (a median rate is not negative).
_STALE: Robust = (_UNKNOWN, _UNKNOWN)
_STALE_RATE = _UNKNOWN
_B = TypeVar("_B")  # what a bucket's latency quantile is read from


def median_sigma(ordered: Sequence[float]) -> Robust:
    """Median and a robust σ (IQR / 1.349) of `ordered`, which is sorted and not empty.

    The median is `statistics.median`'s (the mean of the two middle values of an even count);
    the quartiles are the values at ranks n/4 and 3n/4.
    """
    n = len(ordered)
    mid = n // 2
    med = ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return med, (ordered[(3 * n) // 4 if n > 1 else 0] - ordered[n // 4]) / 1.349


def _latency_quantile(bucket: Bucket, q: float) -> float | None:
    return bucket.latency.quantile(q)


class BaselineLearner:
    """Summaries of one series' healthy past, newest `maxlen` buckets; frozen while anomalous.

    `learned_until_ns` moves on with every closed bucket offered, frozen or not, so a series
    that recovers learns only what closed after its anomaly ended.
    """

    __slots__ = (
        "_error_stats",
        "_errors",
        "_oldest",
        "_order",
        "_p95_stats",
        "_p95s",
        "_rate_median",
        "_rates",
        "_undo",
        "frozen",
        "learned_until_ns",
        "maxlen",
        "size",
        "summary",
        "version",
    )

    def __init__(self, maxlen: int) -> None:
        self.maxlen = maxlen
        self.learned_until_ns = 0  # end of the newest bucket offered
        self.frozen = False
        self.version = 0  # counts the summaries ever added: what depends on them can tell
        self.size = 0  # the summaries held, at most `maxlen` (`len`)
        # The summaries in the order they came, to know which one leaves: (error ratio, latency
        # quantile, rate) after one another, `_UNKNOWN` for a value not learned. Once full, a
        # ring: the newest takes the place of the oldest, at `_oldest` (moving the whole array
        # down by one summary, on every bucket of every series, was the biggest block of memory
        # a tick touched).
        self._order = array("d")
        self._oldest = 0
        # Sorted, in contiguous machine doubles: a tick inserts into thousands of these, and a
        # list's float objects are scattered in memory (reading them was most of the insert).
        self._errors = array("d")  # the summaries' error ratios that are known
        self._p95s = array("d")  # likewise for the latency quantiles
        self._rates = array("d")  # every summary's rate
        # `stats()` as last worked out; None until it is worked out again (read it first: a
        # tick reads it for every series, and most have not learned anything new since).
        self.summary: tuple[Robust | None, Robust | None, float | None] | None = None
        # Its parts, each worked out again only when its sorted values changed (`_STALE`): a
        # busy series learns a new rate with nearly every bucket, but its error ratio seldom
        # changes (none failed) and an idle one learns no quantile.
        self._error_stats: Robust | None = None
        self._p95_stats: Robust | None = None
        self._rate_median: float | None = None
        # How to take back the offer after a `checkpoint` (`undo`): the learned-until time, version,
        # size and ring position before it, and the summary it replaced (None while filling).
        self._undo: tuple[int, int, int, int, array[float] | None] | None = None

    def __len__(self) -> int:
        """How many bucket summaries the baseline holds (`size`)."""
        return self.size

    def learn(
        self,
        buckets: Iterable[Bucket],
        bucket_s: float,
        min_calls: int,
        quantile: float,
        *,
        quantile_of: Callable[[Bucket, float], float | None] | None = None,
    ) -> None:
        """Fold in the buckets that end after `learned_until_ns` (all of them closed).

        `bucket_s` is the series' bucket width (`RedSeries.bucket_s`); `quantile_of(bucket, q)`
        answers a bucket's latency quantile where the caller has its histogram at hand.
        """
        bucket_ns = int(bucket_s * 1_000_000_000)
        of = quantile_of or _latency_quantile
        for b in buckets:
            end = b.start_ns + bucket_ns
            if end > self.learned_until_ns:
                self.offer(end, b.calls, b.failed, bucket_s, min_calls, of, b, quantile)

    def offer(  # noqa: PLR0917  # once per series per closed bucket: positional
        self,
        end_ns: int,
        calls: int,
        failed: int,
        bucket_s: float,
        min_calls: int,
        quantile_of: Callable[[_B, float], float | None],
        bucket: _B,
        quantile: float,
    ) -> None:
        """Fold in one closed bucket ending at `end_ns`, after `learned_until_ns`.

        `quantile_of(bucket, quantile)` answers the bucket's latency quantile; it is called only
        when the bucket is learned with enough calls for one. (Its parts, not a `partial`: this
        runs for every series on a tick that moves the window.)
        """
        self.learned_until_ns = end_ns
        if self.frozen:
            return
        self.version += 1
        rate = calls / bucket_s
        # A bucket with fewer calls than a third of the judging minimum has a rate but no
        # meaningful error ratio or quantile.
        if calls and calls >= min_calls // 3:
            error = failed / calls
            p95 = quantile_of(bucket, quantile)
            if p95 is None:
                p95 = _UNKNOWN
        else:
            error = p95 = _UNKNOWN
        order = self._order
        if self.size < self.maxlen:
            order.fromlist([error, p95, rate])  # `extend` from a tuple takes the iterator path
            self.size += 1
            old_error = old_p95 = _UNKNOWN
            old_rate: float | None = None  # none leaves
        else:
            i = self._oldest
            old_error, old_p95, old_rate = order[i], order[i + 1], order[i + 2]
            order[i], order[i + 1], order[i + 2] = error, p95, rate
            i += 3
            self._oldest = 0 if i == len(order) else i
            # The sorted values change only where the summary that leaves differs from the one
            # that comes in: a steady series often repeats its rate (the same calls) and its error
            # ratio (none failed), and then neither they nor the statistics are touched.
            if rate == old_rate and error == old_error and p95 == old_p95:
                return
        self._exchange(old_error, old_p95, old_rate, error, p95, rate)

    def checkpoint(self) -> None:
        """Remember the learner as it is, for `undo` to take back the next `offer`.

        Detection learns the bucket that will leave the window at the next tick at the end of
        the tick before, once that tick's verdicts are made, so that the tick the window moves
        on has less to do; if the bucket is not the one that leaves after all (the next tick
        came at another time, or a late call changed it), `undo` puts the baseline back as it
        was, and the bucket is learned as usual.
        """
        size = self.size
        i = self._oldest
        self._undo = (
            self.learned_until_ns,
            self.version,
            size,
            i,
            None if size < self.maxlen else self._order[i : i + 3],
        )

    def undo(self) -> None:
        """Take back the `offer` after the last `checkpoint`: the learner is as it was then."""
        undo = self._undo
        assert undo is not None, "undo without a checkpoint"
        self._undo = None
        self.learned_until_ns, version, size, i, old = undo
        if self.version == version:
            return  # frozen: nothing was learned
        self.version = version
        order = self._order
        if old is None:  # filling: the summary was appended
            error, p95, rate = order[-3:]
            del order[-3:]
            self.size = size
            old_error = old_p95 = _UNKNOWN
            old_rate: float | None = None
        else:
            error, p95, rate = order[i : i + 3]
            old_error, old_p95, old_rate = old
            order[i : i + 3] = old
            self._oldest = i
            if rate == old_rate and error == old_error and p95 == old_p95:
                return  # `offer` left the sorted values as they were
        self._exchange(error, p95, rate, old_error, old_p95, old_rate)  # the reverse of `offer`'s

    def _exchange(  # noqa: PLR0917  # once per series per learned bucket: positional
        self,
        out_error: float,
        out_p95: float,
        out_rate: float | None,
        error: float,
        p95: float,
        rate: float | None,
    ) -> None:
        """Take one summary's values out of the sorted values and put another's in.

        Only where the two differ; `_UNKNOWN` (or a None rate) is no value to take out or put
        in. The statistics whose values change are marked stale (`stats`).
        """
        # Inserted where `insort` would put a value (`insort` itself calls an array's `insert` by
        # name: slower); bisect, insert and index deletes run in C, inline.
        if rate != out_rate:
            rates = self._rates
            if out_rate is not None:
                del rates[bisect_left(rates, out_rate)]
            if rate is not None:
                rates.insert(bisect_right(rates, rate), rate)
            self._rate_median = _STALE_RATE
        if error != out_error:
            errors = self._errors
            if out_error >= 0.0:
                del errors[bisect_left(errors, out_error)]
            if error >= 0.0:
                errors.insert(bisect_right(errors, error), error)
            self._error_stats = _STALE
        if p95 != out_p95:
            p95s = self._p95s
            if out_p95 >= 0.0:
                del p95s[bisect_left(p95s, out_p95)]
            if p95 >= 0.0:
                p95s.insert(bisect_right(p95s, p95), p95)
            self._p95_stats = _STALE
        self.summary = None

    def stats(self) -> tuple[Robust | None, Robust | None, float | None]:
        """Robust statistics of errors and latency, and the median rate (None: no data)."""
        stats = self.summary
        if stats is None:
            # Only the parts whose values changed are worked out again (`offer` marks them).
            error_stats = self._error_stats
            if error_stats is _STALE:
                errors = self._errors
                error_stats = self._error_stats = median_sigma(errors) if errors else None
            p95_stats = self._p95_stats
            if p95_stats is _STALE:
                p95s = self._p95s
                p95_stats = self._p95_stats = median_sigma(p95s) if p95s else None
            rate = self._rate_median
            if rate == _STALE_RATE:
                # As `median_sigma` works the median out, inline: a call less per series on a
                # tick that moves the window.
                rates = self._rates
                n = len(rates)
                mid = n // 2
                rate = self._rate_median = (
                    (rates[mid] if n % 2 else (rates[mid - 1] + rates[mid]) / 2) if n else None
                )
            stats = self.summary = (error_stats, p95_stats, rate)
        return stats
