"""RED statistics in event time: fixed-bound latency histograms and bucketed per-series counts.

The graph keeps one `RedSeries` per node and per edge. Calls land in the bucket of their own
event time (not their arrival time), so a restart or a burst of late data does not make spikes,
and 1 min / 5 min / 15 min views are sums of buckets. Cumulative totals beside the buckets only
ever grow, which is what Prometheus counters and histograms need.

A series is written once per call and has thousands of siblings, so its buckets are plain
numbers rather than objects: the newest ones flat lists bumped in place, older ones columns of
machine numbers, rolled up to a coarser width beyond the detail horizon. Histograms are made
when read. See docs/graph.md ("Memory").
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import accumulate, repeat
from operator import add, itemgetter
from typing import Any

__all__ = [
    "DETAIL_S",
    "LATENCY_BUCKETS_S",
    "ROLLUP_S",
    "Bucket",
    "BucketNumbers",
    "Histogram",
    "RedSeries",
    "RedView",
    "add_call",
    "quantile_of_counts",
]

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


def quantile_of_counts(
    bounds: tuple[float, ...], counts: Sequence[int], count: int, q: float, max_s: float = 0.0
) -> float | None:
    """`Histogram.quantile` of bins `counts` (`count` in all) without making a histogram.

    `max_s` is only read when there are no finite bounds.
    """
    if not 0.0 <= q <= 1.0:
        msg = f"quantile must be within [0, 1], got {q}"
        raise ValueError(msg)
    if not count:
        return None
    rank = q * count
    # The first bin whose running count reaches the rank, found in C (accumulate, bisect): it
    # holds calls, so a run of empty bins is never chosen. Rank 0 takes the first bin with any.
    running = list(accumulate(counts))
    i = bisect_right(running, 0) if rank <= 0 else bisect_left(running, rank)
    if i >= len(bounds):
        return bounds[-1] if bounds else max_s
    start = bounds[i - 1] if i else 0.0
    end = bounds[i]
    if i == 0 and end <= 0.0:
        return end
    below = running[i - 1] if i else 0
    return start + (end - start) * ((rank - below) / counts[i])


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
        return quantile_of_counts(self.bounds, self.counts, self.count, q, self.max_s)

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


# One open bucket is a flat list, the cheapest thing to bump once per call: calls, failed, then
# sum and max per kind of latency, then the bin counts per kind. Kinds: the client side of calls
# whose client half was seen, the server side of calls whose server half was seen, and the
# client side of calls seen from the client only. A call's `latency` (server side where seen,
# else client side) is the server kind plus the client-only kind, so it needs no bins of its own.
_CALLS = 0
_FAILED = 1
_CLIENT = 0
_SERVER = 1
_ALONE = 2
_KINDS = 3
_HEAD = 2 + 2 * _KINDS  # where the bins start
# The newest buckets stay plain lists: every call within the default allowed lateness (120 s)
# lands in one, and detection's windows (30–120 s) read them through cached histograms.
_OPEN_BUCKETS = 12
_NOT_OPEN = 1 << 62  # `RedSeries.open_from` before any bucket opened: past every index

DETAIL_S = 900.0
"""How far back buckets keep their own width: the longest window read at a fixed length (the
15 min node gauges) and detection's 10 min baseline fit inside it."""

ROLLUP_S = 300.0
"""The width buckets older than `DETAIL_S` are rolled up into, for the rest of the retention."""


def _empty_flat(nb: int) -> list[Any]:
    # The last item caches the `Bucket` made for readers, with the histograms it made: they
    # stay right while the bucket's calls do not change.
    template = _EMPTY.get(nb)
    if template is None:
        template = _EMPTY[nb] = [0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, *([0] * (_KINDS * nb)), None]
    return template[:]  # a copy in C: made once per bucket per series


_EMPTY: dict[int, list[Any]] = {}
_first = itemgetter(_CALLS)
_NO_FLOATS = array("d", bytes(16 * _KINDS))


def _made(bounds: tuple[float, ...], counts: list[int], sum_s: float, max_s: float) -> Histogram:
    """A histogram from its parts, without `Histogram.__init__`'s zeroed list."""
    h = Histogram.__new__(Histogram)
    h.bounds = bounds
    h.counts = counts
    h.count = sum(counts)
    h.sum_s = sum_s
    h.max_s = max_s
    return h


class _Ring:
    """Sealed buckets in columns, one slot per bucket index modulo `size`, bins as 32-bit counts.

    A flat list per bucket costs ≈ 8 bytes per value plus the float objects; columns of machine
    numbers cost 4 bytes per bin and 8 per sum, and the bins of a kind a series never sees (the
    server side of a database edge, the client-only side of a fully paired one) are not stored.
    """

    __slots__ = ("bins", "cnt", "flt", "held", "nb", "size", "zero")

    def __init__(self, size: int, nb: int) -> None:
        self.size = size
        self.nb = nb
        self.held = array("q", [-1]) * size  # the index each slot holds, -1 when empty
        # Counts start as 16-bit bins and 32-bit calls; a sum that does not fit widens the
        # whole column (`_widened`): a busy series pays for its counts, an idle one does not.
        self.cnt = array("I", bytes(8 * size))  # calls, failed
        self.flt = array("d", bytes(16 * _KINDS * size))  # per kind: sum, max
        self.bins: list[array[int] | None] = [None] * _KINDS  # allocated on first use
        self.zero = array("H", bytes(2 * nb))

    def slot_of(self, idx: int) -> int:
        """The slot holding `idx`, -1 when none does."""
        s = idx % self.size
        return s if self.held[s] == idx else -1

    def claim(self, idx: int) -> int:
        """The slot for `idx`, emptied first if it held another index."""
        s = idx % self.size
        if self.held[s] != idx:
            if self.held[s] != -1:
                self.clear(s)
            self.held[s] = idx
        return s

    def clear(self, s: int) -> None:
        """Empty slot `s`."""
        self.held[s] = -1
        self.cnt[2 * s] = self.cnt[2 * s + 1] = 0
        o = 2 * _KINDS * s
        self.flt[o : o + 2 * _KINDS] = _NO_FLOATS
        nb = self.nb
        for b in self.bins:
            if b is not None:
                b[s * nb : (s + 1) * nb] = _zeros(b.typecode, nb)

    def add_flat(self, s: int, flat: list[Any]) -> None:
        """Add a bucket in the flat layout into slot `s`."""
        self._add_numbers(s, flat[_CALLS], flat[_FAILED], flat[2:_HEAD])
        nb = self.nb
        for k in range(_KINDS):
            part = flat[_HEAD + k * nb : _HEAD + (k + 1) * nb]
            if any(part):
                self._add_bins(s, k, part)

    def add_slot(self, s: int, other: _Ring, t: int) -> None:
        """Add slot `t` of `other` (same bins) into slot `s`: rolling a bucket up."""
        step = 2 * _KINDS
        self._add_numbers(
            s, other.cnt[2 * t], other.cnt[2 * t + 1], other.flt[step * t : step * (t + 1)]
        )
        nb = self.nb
        for k, b in enumerate(other.bins):
            if b is not None:
                part = b[t * nb : (t + 1) * nb]
                if any(part):
                    self._add_bins(s, k, part)

    def _add_numbers(self, s: int, calls: int, failed: int, floats: Sequence[float]) -> None:
        cnt = self.cnt
        try:
            cnt[2 * s] += calls
            cnt[2 * s + 1] += failed
        except OverflowError:
            cnt = self.cnt = _widened(cnt)
            cnt[2 * s] += calls
            cnt[2 * s + 1] += failed
        flt = self.flt
        o = 2 * _KINDS * s
        # Sums add up, maxima take the larger: client, server, client-only.
        flt[o] += floats[0]
        flt[o + 2] += floats[2]
        flt[o + 4] += floats[4]
        if floats[1] > flt[o + 1]:  # noqa: PLR1730  # per sealed bucket: no max() call
            flt[o + 1] = floats[1]
        if floats[3] > flt[o + 3]:  # noqa: PLR1730  # per sealed bucket: no max() call
            flt[o + 3] = floats[3]
        if floats[5] > flt[o + 5]:  # noqa: PLR1730  # per sealed bucket: no max() call
            flt[o + 5] = floats[5]

    def _add_bins(self, s: int, k: int, part: Sequence[int]) -> None:
        nb = self.nb
        lo, hi = s * nb, (s + 1) * nb
        b = self.bins[k]
        if b is None:
            b = self.bins[k] = array("H", bytes(2 * nb * self.size))
        current = b[lo:hi]
        summed = list(map(add, current, part)) if any(current) else part
        while True:
            try:
                b[lo:hi] = array(b.typecode, summed)
                return
            except OverflowError:
                b = self.bins[k] = _widened(b)

    def flat(self, s: int) -> list[Any]:
        """Slot `s` in the flat layout."""
        o = 2 * _KINDS * s
        out: list[Any] = [self.cnt[2 * s], self.cnt[2 * s + 1], *self.flt[o : o + 2 * _KINDS]]
        nb = self.nb
        for b in self.bins:
            out.extend(self.zero if b is None else b[s * nb : (s + 1) * nb])
        out.append(None)
        return out

    def run(self, s0: int, s1: int, k0: int, k1: int) -> tuple[Sequence[int], float, float]:
        """Bins of kinds `[k0, k1)` summed together over slots `[s0, s1]`, their sum and max."""
        nb = self.nb
        lo, hi = s0 * nb, (s1 + 1) * nb
        step = 2 * _KINDS
        end = step * (s1 + 1)
        flt = self.flt
        cells: Sequence[int] = self.zero
        sum_s = top = 0.0
        for k in range(k0, k1):
            b = self.bins[k]
            if b is None:  # a kind this series never saw
                continue
            o = step * s0 + 2 * k
            if s0 == s1:
                row: Sequence[int] = b[lo:hi]
                sum_s += flt[o]
                m = flt[o + 1]
            else:  # column sums of consecutive slots: one strided slice per bin
                row = [sum(b[lo + j : hi : nb]) for j in range(nb)]
                sum_s += sum(flt[o:end:step])
                m = max(flt[o + 1 : end : step])
            cells = row if cells is self.zero else list(map(add, cells, row))
            if m > top:  # noqa: PLR1730  # no max() call
                top = m
        return cells, sum_s, top

    def used(self) -> int:
        """How many slots hold a bucket."""
        return self.size - self.held.count(-1)


def _zeros(typecode: str, nb: int) -> array[int]:
    key = (typecode, nb)
    zeros = _ZEROS.get(key)
    if zeros is None:
        zeros = _ZEROS[key] = array(typecode, [0]) * nb
    return zeros


_ZEROS: dict[tuple[str, int], array[int]] = {}


def _widened(column: array[int]) -> array[int]:
    """The same counts in the next wider unsigned type (16 → 32 → 64 bits)."""
    return array("I" if column.typecode == "H" else "Q", column)


# Where a window's numbers are: an open bucket's flat list, or slots `[s0, s1]` of a ring
# (consecutive slots hold consecutive indices; a slot of the range without data is all zeros).
_Part = tuple[list[Any] | None, _Ring | None, int, int]


_SPANS = ((_CLIENT, _CLIENT + 1), (_SERVER, _SERVER + 1), (_SERVER, _ALONE + 1))
"""The stored kinds each histogram is made of, as a range: client, server, latency."""


def _histogram(parts: Sequence[_Part], which: int, bounds: tuple[float, ...]) -> Histogram:
    """The client (0), server (1) or latency (2: server, else client-only) histogram of `parts`.

    Open buckets add up one slice each, and a run of ring slots one strided slice per bin,
    with map(add) / sum in C; the float sums add up in bucket order, as a running sum would.
    """
    nb = len(bounds) + 1
    k0, k1 = _SPANS[which]
    lo_bin, hi_bin = _HEAD + k0 * nb, _HEAD + k1 * nb
    both = k1 - k0 == 2  # latency: server and client-only, side by side in the layout
    f0 = 2 + 2 * k0  # the first kind's sum; its max follows, then the next kind's sum and max
    if len(parts) == 1 and not both and parts[0][0] is not None:  # one open bucket: a bucket read
        only = parts[0][0]
        bins = only[lo_bin:hi_bin]
        return _made(bounds, bins, only[f0], only[f0 + 1]) if any(bins) else Histogram(bounds)
    counts: list[int] | None = None
    total = 0.0
    top = 0.0
    for flat, ring, s0, s1 in parts:
        if flat is not None:
            row: Sequence[int] = flat[lo_bin : lo_bin + nb]
            if both:
                # Most series have calls of one kind only: paired, or client-only (databases).
                alone = flat[lo_bin + nb : hi_bin]
                if any(alone):
                    row = list(map(add, row, alone)) if any(row) else alone
                total += flat[f0] + flat[f0 + 2]
                m = flat[f0 + 1]
                m2 = flat[f0 + 3]
                if m2 > m:  # noqa: PLR1730  # per view per tick: no max() call
                    m = m2
            else:
                total += flat[f0]
                m = flat[f0 + 1]
        else:
            assert ring is not None  # a part is a flat list or ring slots
            row, sum_s, m = ring.run(s0, s1, k0, k1)
            total += sum_s
        if m > top:  # noqa: PLR1730  # per view per tick: no max() call
            top = m
        # map(add) runs in C: a Python loop over the bins was most of a detection tick.
        counts = list(row) if counts is None else list(map(add, counts, row))
    if counts is None or not any(counts):
        return Histogram(bounds)
    return _made(bounds, counts, total, top)


_LATENCY = 2  # not a stored kind: server where seen, else client-only


def _open_latency(flat: list[Any], nb: int) -> list[int]:
    """An open bucket's latency bins: the server bins plus the client-only ones."""
    lo = _HEAD + nb
    row = flat[lo : lo + nb]
    alone = flat[lo + nb : lo + 2 * nb]
    return list(map(add, row, alone)) if any(alone) else row


BucketNumbers = tuple[int, int, int, tuple[int, ...] | None, int]
"""A bucket's calls, failed calls, calls whose server half was seen, latency bins (None: no
latency counted, as an empty `Bucket.latency`) and how many calls the bins hold."""
_NO_NUMBERS: BucketNumbers = (0, 0, 0, None, 0)
_NO_CALLS = repeat((0,))


class Bucket:
    """The calls of one series whose event time falls in `[start_ns, start_ns + width)`.

    `latency` holds each call once: its server-side latency where the server half was seen,
    else its client-side latency (a crashed callee's timeouts still show in it). The width is
    the series' `bucket_s`, or its `rollup_s` for buckets older than its `detail_s`. The three
    histograms are made when first read.
    """

    __slots__ = (
        "_bounds",
        "_client",
        "_latency",
        "_part",
        "_server",
        "calls",
        "failed",
        "start_ns",
    )

    def __init__(  # made per read bucket: positional
        self,
        start_ns: int,
        calls: int = 0,
        failed: int = 0,
        bounds: tuple[float, ...] = LATENCY_BUCKETS_S,
        part: _Part | None = None,
    ) -> None:
        self.start_ns = start_ns
        self.calls = calls
        self.failed = failed
        self._bounds = bounds
        self._part = part
        self._client: Histogram | None = None
        self._server: Histogram | None = None
        self._latency: Histogram | None = None

    def _made(self, which: int) -> Histogram:
        part = self._part
        return Histogram(self._bounds) if part is None else _histogram((part,), which, self._bounds)

    @property
    def served(self) -> int:
        """How many of the calls had their server half seen (`server.count`, counted directly)."""
        h = self._server
        if h is not None:
            return h.count
        part = self._part
        if part is None:
            return 0
        flat, ring, s, _ = part
        nb = len(self._bounds) + 1
        if flat is not None:
            return sum(flat[_HEAD + nb : _HEAD + 2 * nb])
        assert ring is not None  # a part is a flat list or a ring slot
        b = ring.bins[_SERVER]
        return 0 if b is None else sum(b[s * nb : (s + 1) * nb])

    def latency_counts(self) -> list[int]:
        """The bins of `latency` (per bound, then +Inf), read without making the histogram."""
        h = self._latency
        if h is not None:
            return h.counts[:]
        part = self._part
        nb = len(self._bounds) + 1
        if part is None:
            return [0] * nb
        flat, ring, s, _ = part
        if flat is not None:
            return _open_latency(flat, nb)
        assert ring is not None  # a part is a flat list or a ring slot
        return list(ring.run(s, s, _SERVER, _ALONE + 1)[0])

    @property
    def client(self) -> Histogram:
        """Client-side latency of the calls whose client half was seen."""
        if self._client is None:
            self._client = self._made(_CLIENT)
        return self._client

    @property
    def server(self) -> Histogram:
        """Server-side latency of the calls whose server half was seen."""
        if self._server is None:
            self._server = self._made(_SERVER)
        return self._server

    @property
    def latency(self) -> Histogram:
        """Per call: the server-side latency where seen, else the client-side one."""
        if self._latency is None:
            self._latency = self._made(_LATENCY)
        return self._latency

    def __repr__(self) -> str:
        return f"Bucket(start_ns={self.start_ns}, calls={self.calls}, failed={self.failed})"


class RedView:
    """Rate, errors and duration of one series over the last `seconds` of event time.

    The three histograms are summed from the window's buckets when first read, not when the
    view is made: detection makes several views per series every tick and reads most of them
    for counts only. Read a view before adding calls to its series (one event loop does).
    """

    __slots__ = (
        "_client_latency",
        "_latency",
        "_parts",
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
        parts: Sequence[_Part] = (),
        bounds: tuple[float, ...] = LATENCY_BUCKETS_S,
    ) -> None:
        self.seconds = seconds
        self.calls = calls
        self.failed = failed
        self.rate_per_s = rate_per_s
        self.error_ratio = error_ratio
        self.bounds = bounds
        self._parts = parts
        self._latency = latency
        self._client_latency = client_latency
        self._server_latency = server_latency

    @property
    def latency(self) -> Histogram:
        """Per call: the server-side latency where seen, else the client-side one."""
        if self._latency is None:
            self._latency = self._made(_LATENCY)
        return self._latency

    @property
    def client_latency(self) -> Histogram:
        """Client-side latency of the calls whose client half was seen."""
        if self._client_latency is None:
            self._client_latency = self._made(_CLIENT)
        return self._client_latency

    @property
    def server_latency(self) -> Histogram:
        """Server-side latency of the calls whose server half was seen."""
        if self._server_latency is None:
            self._server_latency = self._made(_SERVER)
        return self._server_latency

    def _made(self, which: int) -> Histogram:
        return _histogram(self._parts, which, self.bounds)

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

    The newest two buckets are plain lists that calls bump; older ones are sealed into columns
    of machine numbers. Buckets within `detail_s` of the newest keep their width; older ones
    are rolled up into buckets of `rollup_s` until they fall out of `retention_s`. `total_*`
    keep counting everything ever accepted and never decrease.
    """

    __slots__ = (
        "_bucket_ns",
        "_coarse",
        "_coarse_n",
        "_fine",
        "_fine_n",
        "_head",
        "_nb",
        "_open",
        "_open_n",
        "_retention_n",
        "_rollup_n",
        "_tcache",
        "_tot",
        "bounds",
        "bucket_s",
        "detail_s",
        "late_writes",
        "newest_index",
        "open_from",
        "retention_s",
        "rollup_s",
    )

    def __init__(
        self,
        bucket_s: float = 10.0,
        retention_s: float = 3600.0,
        *,
        bounds: tuple[float, ...] = LATENCY_BUCKETS_S,
        detail_s: float = DETAIL_S,
        rollup_s: float = ROLLUP_S,
    ) -> None:
        if bucket_s <= 0 or retention_s < bucket_s:
            msg = f"need 0 < bucket_s <= retention_s, got {bucket_s=} {retention_s=}"
            raise ValueError(msg)
        if detail_s <= 0 or rollup_s <= 0:
            msg = f"need detail_s > 0 and rollup_s > 0, got {detail_s=} {rollup_s=}"
            raise ValueError(msg)
        self.bucket_s = bucket_s
        self.retention_s = retention_s
        self.detail_s = detail_s
        self.rollup_s = rollup_s
        self.bounds = bounds
        self._nb = len(bounds) + 1
        self._bucket_ns = bucket_ns = int(bucket_s * _NS_PER_S)
        self._retention_n = -(-int(retention_s * _NS_PER_S) // bucket_ns)  # ceil
        # The oldest bucket a `detail_s` window overlaps starts up to one bucket earlier, and
        # `now` may be a bucket past the newest: two buckets of margin.
        fine_n = -(-int(detail_s * _NS_PER_S) // bucket_ns) + 2
        fine_n = max(fine_n, _OPEN_BUCKETS + 1)  # the open buckets are never rolled up
        if fine_n >= self._retention_n:
            self._fine_n = self._retention_n
            self._rollup_n = 0  # no rolled-up buckets: every retained bucket keeps its width
            self._coarse_n = 0
        else:
            self._fine_n = fine_n
            self._rollup_n = max(1, round(rollup_s / bucket_s))
            self._coarse_n = -(-self._retention_n // self._rollup_n) + 1
        self._open_n = min(_OPEN_BUCKETS, self._retention_n)
        self._fine: _Ring | None = None  # rings are allocated when the first bucket is sealed
        self._coarse: _Ring | None = None
        self._open: dict[int, list[Any]] = {}
        self._head: int | None = None  # the newest bucket index the rings are aligned to
        # The oldest open bucket's index (`is_open`); none is open before the first call.
        self.open_from = _NOT_OPEN
        self.newest_index: int | None = None  # the newest bucket index holding data
        # Calls counted into a bucket older than `newest_index` (open or sealed): while this
        # stays the same, no bucket before the newest changed (detection's idle test).
        self.late_writes = 0
        self._tot = _empty_flat(self._nb)[:-1]  # every sealed bucket and late call, summed
        self._tcache: tuple[int, Histogram, Histogram] | None = None

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
        return add_call(
            self,
            None,
            time_ns,
            failed,
            client_latency_s,
            server_latency_s,
            now_ns,
            allowed_lateness_s,
        )

    @staticmethod
    def layout(
        bounds: tuple[float, ...] = LATENCY_BUCKETS_S,
    ) -> tuple[tuple[float, ...], int, int, int]:
        """`bounds` and where an open bucket's client, server and client-only bins start.

        For a caller that bumps open buckets in place (the graph's per-call loop): items 0 and
        1 are calls and failed, 2..7 the sum and max of the client, server and client-only
        latencies, then the bins.
        """
        nb = len(bounds) + 1
        return bounds, _HEAD, _HEAD + nb, _HEAD + 2 * nb

    # -- totals ------------------------------------------------------------------------------

    @property
    def total_calls(self) -> int:
        """Every call ever accepted."""
        # In C: detection reads it for every series on every tick.
        return int(self._tot[_CALLS] + sum(map(_first, self._open.values())))

    @property
    def total_failed(self) -> int:
        """Every failed call ever accepted."""
        return int(self._tot[_FAILED]) + sum(int(f[_FAILED]) for f in self._open.values())

    @property
    def total_client(self) -> Histogram:
        """Client-side latency of every accepted call whose client half was seen."""
        return self._totals()[1]

    @property
    def total_server(self) -> Histogram:
        """Server-side latency of every accepted call whose server half was seen."""
        return self._totals()[2]

    def _totals(self) -> tuple[int, Histogram, Histogram]:
        # Made when read (a scrape reads each several times), kept while no call was added.
        calls = self.total_calls
        cached = self._tcache
        if cached is None or cached[0] != calls:
            parts: list[_Part] = [(self._tot, None, 0, 0)]
            parts += [(self._open[i], None, 0, 0) for i in sorted(self._open)]
            bounds = self.bounds
            cached = self._tcache = (
                calls,
                _histogram(parts, _CLIENT, bounds),
                _histogram(parts, _SERVER, bounds),
            )
        return cached

    # -- writing -----------------------------------------------------------------------------

    def _open_for(self, idx: int) -> list[Any] | None:
        """The open bucket for `idx`, made if need be; None when `idx` is already sealed."""
        head = self._head
        if head is None or idx > head:
            self._advance(idx)
        elif idx <= head - self._open_n:
            return None
        flat = self._open[idx] = _empty_flat(self._nb)
        if self.newest_index is None or idx > self.newest_index:
            self.newest_index = idx
        return flat

    def _add_sealed(  # noqa: PLR0917  # the hot path's arguments, passed on
        self,
        idx: int,
        failed: bool,
        ci: int,
        client_s: float | None,
        si: int,
        server_s: float | None,
    ) -> bool:
        """Count one late call straight into its sealed bucket; False when out of retention."""
        assert self._head is not None  # a sealed bucket implies a head
        if idx <= self._head - self._retention_n:
            return False
        flat = _empty_flat(self._nb)
        _bump(flat, self._nb, failed, ci, client_s, si, server_s)
        self._fold(flat)
        self._place(idx, flat)
        self.late_writes += 1  # counted as late whatever the newest: a sealed bucket changed
        if self.newest_index is None or idx > self.newest_index:
            self.newest_index = idx
        return True

    def _fold(self, flat: list[Any]) -> None:
        tot = self._tot
        a, b, c = tot[3], tot[5], tot[7]  # the maxima, which do not add up
        tot[:] = map(add, tot, flat)  # stops at the totals' end, before the flat's cache item
        tot[3] = a if a > flat[3] else flat[3]
        tot[5] = b if b > flat[5] else flat[5]
        tot[7] = c if c > flat[7] else flat[7]

    def _place(self, idx: int, flat: list[Any]) -> None:
        """Add a bucket's numbers into the ring slot for `idx` (dropped when out of retention)."""
        head = self._head
        assert head is not None  # only called once something was added
        if idx <= head - self._retention_n:
            return
        if idx > head - self._fine_n:
            fine = self._fine
            if fine is None:
                fine = self._fine = _Ring(self._fine_n - self._open_n, self._nb)
            s = idx % fine.size
            if fine.held[s] not in {-1, idx}:
                self._evict(s)
            fine.add_flat(fine.claim(idx), flat)
            return
        coarse = self._coarse
        if coarse is None:
            coarse = self._coarse = _Ring(self._coarse_n, self._nb)
        coarse.add_flat(coarse.claim(idx // self._rollup_n), flat)

    def _evict(self, s: int) -> None:
        """Move fine slot `s` into its rolled-up bucket (or drop it without roll-up) and free it."""
        fine = self._fine
        assert fine is not None  # only called for a slot that holds a bucket
        idx = fine.held[s]
        if self._rollup_n and self._head is not None and idx > self._head - self._retention_n:
            coarse = self._coarse
            if coarse is None:
                coarse = self._coarse = _Ring(self._coarse_n, self._nb)
            coarse.add_slot(coarse.claim(idx // self._rollup_n), fine, s)
        fine.clear(s)

    def _advance(self, head: int) -> None:
        """Make `head` the newest index: seal open buckets, roll up and drop old ones."""
        old = self._head
        self._head = head
        self.open_from = head - self._open_n + 1
        opens = self._open
        if opens:
            seal_to = head - self._open_n  # inclusive
            # The open indices lie in (old - open_n, old]: walk that range unless it is longer.
            if old is not None and seal_to - (old - self._open_n) <= len(opens):
                stale = [i for i in range(old - self._open_n + 1, seal_to + 1) if i in opens]
            else:
                stale = [i for i in opens if i <= seal_to]
            for i in sorted(stale):
                flat = opens.pop(i)
                self._fold(flat)
                self._place(i, flat)
        fine = self._fine
        if old is None or fine is None:
            return
        held = fine.held
        keep_from = head - self._fine_n + 1
        start = old - self._fine_n + 1
        if keep_from - start >= fine.size:
            for s in range(fine.size):
                if held[s] != -1 and held[s] < keep_from:
                    self._evict(s)
        else:
            for i in range(start, keep_from):
                s = i % fine.size
                if held[s] == i:
                    self._evict(s)
        coarse = self._coarse
        # A rolled-up bucket goes when all of it is older than the retention.
        oldest_kept = (head - self._retention_n + 1) // self._rollup_n if self._rollup_n else 0
        if coarse is not None and oldest_kept != (old - self._retention_n + 1) // self._rollup_n:
            for s in range(coarse.size):
                if coarse.held[s] != -1 and coarse.held[s] < oldest_kept:
                    coarse.clear(s)

    def prune(self, now_ns: int) -> None:
        """Drop buckets older than the retention before `now_ns` (frees memory of idle series)."""
        idx = now_ns // self._bucket_ns
        if self._head is not None and idx > self._head:
            idle = idx - self._head >= self._retention_n + self._rollup_n
            self._advance(idx)
            if idle:  # nothing retained is left: give the rings' memory back
                self._fine = self._coarse = None

    # -- reading -----------------------------------------------------------------------------

    def _select(self, now_ns: int, seconds: float) -> tuple[int, int]:
        """First and last bucket index overlapping `(now_ns - seconds, now_ns]`."""
        if seconds <= 0:
            msg = f"window must be positive, got {seconds}"
            raise ValueError(msg)
        return (now_ns - int(seconds * _NS_PER_S)) // self._bucket_ns, now_ns // self._bucket_ns

    def _rolled_range(self, first: int, last: int) -> tuple[int, int, int]:
        """Rolled-up indices `[c0, c1]` a range reaches into, and the fine index it goes on from.

        c0 > c1 when the range stays within the buckets that keep their width.
        """
        head = self._head
        if head is None:
            return 1, 0, first
        fine_lo = head - self._fine_n + 1
        if first >= fine_lo or not self._rollup_n:
            return 1, 0, max(first, fine_lo)
        rollup = self._rollup_n
        c0 = max(first // rollup, (head - self._retention_n + 1) // rollup)
        return c0, min(fine_lo - 1, last) // rollup, fine_lo

    def buckets(self, now_ns: int, seconds: float) -> list[Bucket]:
        """The buckets overlapping the last `seconds` to `now_ns`, oldest first, gaps as zeros.

        Where the range reaches back beyond `detail_s`, the rolled-up buckets come first, each
        `rollup_s` wide. Read the buckets before adding calls to the series.
        """
        first, last = self._select(now_ns, seconds)
        bounds = self.bounds
        bucket_ns = self._bucket_ns
        if self.is_open(first):
            # Within the open buckets (detection's windows): no ring to look at.
            get = self._open.get
            out: list[Bucket] = []
            for i in range(first, last + 1):
                flat = get(i)
                if flat is None:
                    out.append(Bucket(i * bucket_ns, 0, 0, bounds))
                else:
                    out.append(self._open_bucket(i, flat))
            return out
        out = []
        c0, c1, first = self._rolled_range(first, last)
        coarse = self._coarse
        for c in range(c0, c1 + 1):
            s = -1 if coarse is None else coarse.slot_of(c)
            start = c * self._rollup_n * bucket_ns
            if s < 0 or coarse is None:
                out.append(Bucket(start, 0, 0, bounds))
            else:
                cnt = coarse.cnt
                out.append(Bucket(start, cnt[2 * s], cnt[2 * s + 1], bounds, (None, coarse, s, s)))
        opens = self._open
        fine = self._fine
        for i in range(first, last + 1):
            flat = opens.get(i)
            if flat is not None:
                out.append(self._open_bucket(i, flat))
                continue
            s = -1 if fine is None else fine.slot_of(i)
            if s < 0 or fine is None:
                out.append(Bucket(i * bucket_ns, 0, 0, bounds))
            else:
                cnt = fine.cnt
                out.append(
                    Bucket(i * bucket_ns, cnt[2 * s], cnt[2 * s + 1], bounds, (None, fine, s, s))
                )
        return out

    def _open_bucket(self, idx: int, flat: list[Any]) -> Bucket:
        """Open bucket `idx` as a `Bucket`, kept on it until its calls change."""
        b: Bucket | None = flat[-1]
        if b is None or b.calls != flat[_CALLS]:
            b = flat[-1] = Bucket(
                idx * self._bucket_ns, flat[0], flat[1], self.bounds, (flat, None, 0, 0)
            )
        return b

    def newest_calls(self) -> int:
        """The calls of the newest bucket while it is open; -1 once sealed, or with no bucket.

        Calls land in the newest bucket or a newer one unless they are late (`late_writes`), so
        while the newest index, this and `late_writes` stay the same, no bucket took a call.
        """
        newest = self.newest_index
        flat = None if newest is None else self._open.get(newest)
        return -1 if flat is None else flat[_CALLS]

    def is_open(self, idx: int) -> bool:
        """Whether bucket `idx` is open: not sealed yet (it may hold no calls)."""
        return idx >= self.open_from

    def open_calls(self, first: int, last: int) -> list[int] | None:
        """The calls of buckets `first..last`, or None unless all of them are still open.

        Detection's windows lie within the open buckets (the newest `_OPEN_BUCKETS`); reading
        them costs a lookup each, and `open_numbers` reads the rest of one without making a
        `Bucket`.
        """
        if not self.is_open(first):
            return None
        # In C: a lookup per bucket, a missing one read as no calls.
        return list(map(_first, map(self._open.get, range(first, last + 1), _NO_CALLS)))

    def open_numbers(self, idx: int) -> BucketNumbers:
        """Open bucket `idx` (see `open_calls`) as `buckets` would read it, without a `Bucket`.

        The numbers are `(calls, failed, served, latency bins, calls in the bins)`, as
        `Bucket.calls`, `.failed`, `.served`, `.latency_counts()` and their sum give them.
        """
        flat = self._open.get(idx)
        if flat is None or not flat[_CALLS]:
            return _NO_NUMBERS
        nb = self._nb
        lo = _HEAD + nb
        row = flat[lo : lo + nb]  # the server bins
        alone = flat[lo + nb : lo + 2 * nb]
        served = sum(row)
        # `_open_latency`, inline, summing the server bins from the same slice: once per series
        # on a tick that moves the window, where the call and the second slice cost ≈ 1.7 % of
        # the tick's instructions. `test_bucket_counts_without_histograms_match_the_histograms`
        # holds the two together.
        if any(alone):
            bins = tuple(map(add, row, alone))
            total = sum(bins)
        elif served:
            bins, total = tuple(row), served
        else:
            return (flat[_CALLS], flat[_FAILED], 0, None, 0)
        return (flat[_CALLS], flat[_FAILED], served, bins, total)

    def calls_in(self, now_ns: int, seconds: float) -> int:
        """The calls of the buckets `buckets(now_ns, seconds)` gives, without making them.

        Buckets only gain calls, so while this and the range stay the same, so do the buckets:
        detection's test for an idle series, reading only the window's own buckets.
        """
        calls = self.open_calls(*self._select(now_ns, seconds))
        if calls is not None:
            return sum(calls)
        return sum(b.calls for b in self.buckets(now_ns, seconds))

    def window(self, now_ns: int, seconds: float) -> RedView:
        """Rate, errors and latency over the buckets overlapping the last `seconds` to `now_ns`.

        Unless `now_ns - seconds` falls on a bucket boundary the oldest bucket reaches back a
        little further, so the rate divides by the time actually covered (from the oldest
        bucket's start to `now_ns`, at least one bucket), not by `seconds`. Beyond `detail_s`
        that oldest bucket is a rolled-up one, up to `rollup_s` wide.
        """
        first, last = self._select(now_ns, seconds)
        parts: list[_Part] = []
        calls = failed = 0
        start = first
        c0, c1, fine_from = self._rolled_range(first, last)
        if c0 <= c1:
            start = (first // self._rollup_n) * self._rollup_n
            if self._coarse is not None:
                calls, failed = _ring_parts(self._coarse, c0, c1, parts)
        fine = self._fine
        head = self._head
        if fine is not None and head is not None:
            hi = min(last, head - self._open_n)
            if fine_from <= hi:
                n, f = _ring_parts(fine, fine_from, hi, parts)
                calls += n
                failed += f
        if head is not None:
            get = self._open.get
            for i in range(max(first, head - self._open_n + 1), last + 1):
                flat = get(i)
                if flat is not None:
                    parts.append((flat, None, 0, 0))
                    calls += flat[_CALLS]
                    failed += flat[_FAILED]
        covered_s = (now_ns - start * self._bucket_ns) / _NS_PER_S
        if covered_s < self.bucket_s:  # noqa: PLR1730  # per view per tick: no max() call
            covered_s = self.bucket_s
        return RedView(
            seconds=seconds,
            calls=calls,
            failed=failed,
            rate_per_s=calls / covered_s,
            error_ratio=failed / calls if calls else 0.0,
            parts=parts,
            bounds=self.bounds,
        )

    @property
    def newest_ns(self) -> int | None:
        """Start of the newest bucket that holds data, None before the first call."""
        return None if self.newest_index is None else self.newest_index * self._bucket_ns

    def __len__(self) -> int:
        """How many buckets are stored (open, sealed and rolled up)."""
        rings = (r.used() for r in (self._fine, self._coarse) if r is not None)
        return len(self._open) + sum(rings)

    def __repr__(self) -> str:
        return (
            f"RedSeries(bucket_s={self.bucket_s}, buckets={len(self)}, "
            f"total_calls={self.total_calls}, total_failed={self.total_failed})"
        )


def _ring_parts(ring: _Ring, lo: int, hi: int, parts: list[_Part]) -> tuple[int, int]:
    """Append the slots holding indices `[lo, hi]` of `ring` to `parts`; their calls and failed.

    The caller keeps `[lo, hi]` within the indices the ring may hold, so a slot there holds
    that index or nothing (zeros): whole runs of slots are summed without looking at each.
    """
    if hi - lo >= ring.size:  # pragma: no cover - callers clip to the ring's range
        lo = hi - ring.size + 1
    s0, s1 = lo % ring.size, hi % ring.size
    runs = [(s0, s1)] if s0 <= s1 else [(s0, ring.size - 1), (0, s1)]
    calls = failed = 0
    cnt = ring.cnt
    for a, b in runs:
        parts.append((None, ring, a, b))
        calls += sum(cnt[2 * a : 2 * (b + 1) : 2])
        failed += sum(cnt[2 * a + 1 : 2 * (b + 1) : 2])
    return calls, failed


def _bump(  # noqa: PLR0917  # the hot path's arguments
    flat: list[Any],
    nb: int,
    failed: bool,
    ci: int,
    client_s: float | None,
    si: int,
    server_s: float | None,
) -> None:
    """Count one call into a bucket in the flat layout (bins `ci` / `si` already found)."""
    flat[_CALLS] += 1
    if failed:
        flat[_FAILED] += 1
    if client_s is not None:
        flat[_HEAD + ci] += 1
        flat[2] += client_s
        if client_s > flat[3]:  # noqa: PLR1730  # hot path: no max() call
            flat[3] = client_s
        if server_s is None:
            flat[_HEAD + 2 * nb + ci] += 1
            flat[6] += client_s
            if client_s > flat[7]:  # noqa: PLR1730  # hot path: no max() call
                flat[7] = client_s
    if server_s is not None:
        flat[_HEAD + nb + si] += 1
        flat[4] += server_s
        if server_s > flat[5]:  # noqa: PLR1730  # hot path: no max() call
            flat[5] = server_s


def add_call(  # noqa: PLR0917  # the per-call hot path, inlined on purpose
    first: RedSeries,
    second: RedSeries | None,
    time_ns: int,
    failed: bool,
    client_latency_s: float | None,
    server_latency_s: float | None,
    now_ns: int,
    allowed_lateness_s: float,
) -> bool:
    """Count one call in `first` and, if given, `second` (same bucket width and bounds).

    The graph counts each call on its edge and on the node that served it: the lateness test,
    the bucket index and the bin of each latency are worked out once for both. Returns False,
    counting nothing, when `first` refused the call as too late (see `RedSeries.add`).
    """
    if time_ns > now_ns:
        time_ns = now_ns
    elif now_ns - time_ns > allowed_lateness_s * _NS_PER_S:
        return False
    idx = time_ns // first._bucket_ns  # one module's hot path
    bounds = first.bounds
    ci = si = 0
    if client_latency_s is not None:
        if client_latency_s < 0.0:  # noqa: PLR1730  # clock skew; hot path: no max()
            client_latency_s = 0.0
        # bisect_left: a value equal to a bound belongs to that bound's bucket (Prometheus `le`).
        ci = bisect_left(bounds, client_latency_s)
    if server_latency_s is not None:
        if server_latency_s < 0.0:  # noqa: PLR1730  # clock skew; hot path: no max()
            server_latency_s = 0.0
        si = bisect_left(bounds, server_latency_s)
    nb = first._nb
    for series in (first, second):
        if series is None:
            break
        flat = series._open.get(idx) or series._open_for(idx)
        if flat is None:
            if (
                not series._add_sealed(idx, failed, ci, client_latency_s, si, server_latency_s)
                and series is first
            ):
                return False
            continue
        if idx < series.newest_index:  # type: ignore[operator]  # set by _open_for
            series.late_writes += 1
        _bump(flat, nb, failed, ci, client_latency_s, si, server_latency_s)
    return True
