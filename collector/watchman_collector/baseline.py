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
from math import isnan
from typing import TypeVar

from watchman_collector.stats import Bucket

__all__ = ["BaselineLearner", "Robust", "median_sigma"]

Robust = tuple[float, float]
"""(median, robust σ) of a set of values."""

_NAN = float("nan")
_B = TypeVar("_B")  # what a bucket's latency quantile is read from


def median_sigma(ordered: Sequence[float]) -> Robust:
    """Median and a robust σ (IQR / 1.349) of `ordered`, which is sorted and not empty.

    The median is `statistics.median`'s (the mean of the two middle values of an even count);
    the quartiles are the values at ranks n/4 and 3n/4.
    """
    n = len(ordered)
    med = _median(ordered)
    q1 = ordered[n // 4]
    q3 = ordered[(3 * n) // 4 if n > 1 else 0]
    return med, (q3 - q1) / 1.349


def _median(ordered: Sequence[float]) -> float:
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _latency_quantile(bucket: Bucket, q: float) -> float | None:
    return bucket.latency.quantile(q)


class BaselineLearner:
    """Summaries of one series' healthy past, newest `maxlen` buckets; frozen while anomalous.

    `learned_until_ns` moves on with every closed bucket offered, frozen or not, so a series
    that recovers learns only what closed after its anomaly ended.
    """

    __slots__ = (
        "_errors",
        "_oldest_first",
        "_p95s",
        "_rates",
        "_stats",
        "frozen",
        "learned_until_ns",
        "maxlen",
        "size",
        "version",
    )

    def __init__(self, maxlen: int) -> None:
        self.maxlen = maxlen
        self.learned_until_ns = 0  # end of the newest bucket offered
        self.frozen = False
        self.version = 0  # counts the summaries ever added: what depends on them can tell
        self.size = 0  # the summaries held, at most `maxlen` (`len`)
        # The summaries oldest first, to know which one leaves: (error ratio, latency quantile,
        # rate) after one another, NaN for an unknown value.
        self._oldest_first = array("d")
        # Sorted, in contiguous machine doubles: a tick inserts into thousands of these, and a
        # list's float objects are scattered in memory (reading them was most of the insert).
        self._errors = array("d")  # the summaries' error ratios that are known
        self._p95s = array("d")  # likewise for the latency quantiles
        self._rates = array("d")  # every summary's rate
        self._stats: tuple[Robust | None, Robust | None, float | None] | None = None

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
        self._stats = None
        self.version += 1
        self.size += 1
        rate = calls / bucket_s
        rates = self._rates
        # Where `insort` would put it; `insort` itself calls an array's `insert` by name: slower.
        rates.insert(bisect_right(rates, rate), rate)
        # A bucket with fewer calls than a third of the judging minimum has a rate but no
        # meaningful error ratio or quantile. Bisect and slice deletes run in C, inline.
        order = self._oldest_first
        if calls and calls >= min_calls // 3:
            error = failed / calls
            errors = self._errors
            errors.insert(bisect_right(errors, error), error)
            p95 = quantile_of(bucket, quantile)
            if p95 is None:
                p95 = _NAN
            else:
                p95s = self._p95s
                p95s.insert(bisect_right(p95s, p95), p95)
            order.fromlist([error, p95, rate])  # `extend` from a tuple takes the iterator path
        else:
            order.fromlist([_NAN, _NAN, rate])
        if self.size > self.maxlen:
            self.size -= 1
            error, p95, rate = order[0], order[1], order[2]
            del order[:3]
            if not isnan(error):
                errors = self._errors
                del errors[bisect_left(errors, error)]
            if not isnan(p95):
                p95s = self._p95s
                del p95s[bisect_left(p95s, p95)]
            del rates[bisect_left(rates, rate)]

    def stats(self) -> tuple[Robust | None, Robust | None, float | None]:
        """Robust statistics of errors and latency, and the median rate (None: no data)."""
        if self._stats is None:
            errors, p95s, rates = self._errors, self._p95s, self._rates
            self._stats = (
                median_sigma(errors) if errors else None,
                median_sigma(p95s) if p95s else None,
                _median(rates) if rates else None,
            )
        return self._stats
