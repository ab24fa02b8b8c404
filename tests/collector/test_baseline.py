"""The incremental baseline gives the numbers a recomputation over its history gives."""

from __future__ import annotations

import random
import statistics

from watchman_collector.baseline import BaselineLearner, median_sigma
from watchman_collector.stats import RedSeries

NS = 1_000_000_000
T0 = 1_700_000_000 * NS


def reference(values: list[float]) -> tuple[float, float]:
    """Median and IQR / 1.349 the straightforward way: sort, then pick the quartile ranks."""
    ordered = sorted(values)
    n = len(ordered)
    q3 = ordered[(3 * n) // 4 if n > 1 else 0]
    return statistics.median(values), (q3 - ordered[n // 4]) / 1.349


def busy_series(buckets: int, seed: int) -> RedSeries:
    """A series whose buckets have random traffic, errors and latency (some idle, some thin)."""
    rng = random.Random(seed)
    series = RedSeries(10.0, 3600.0)
    for i in range(buckets):
        start = T0 + i * 10 * NS
        calls = rng.choice([0, 1, 2, 5, 20, 60])
        error = rng.choice([0.0, 0.01, 0.2])
        for c in range(calls):
            t = start + c * (10 * NS // max(calls, 1))
            latency = rng.lognormvariate(-3.5, 0.8)
            server = None if rng.random() < 0.2 else latency
            series.add(t, rng.random() < error, latency + 0.001, server, t, 60.0)
    return series


def test_median_sigma_matches_statistics() -> None:
    """Median and robust sigma of a sorted list equal statistics.median and the IQR ranks."""
    rng = random.Random(3)
    for n in [1, 2, 3, 4, 5, 10, 59, 60]:
        values = [rng.choice([0.0, 0.5, rng.random()]) for _ in range(n)]
        assert median_sigma(sorted(values)) == reference(values)


def test_learner_matches_recomputation_over_its_history() -> None:
    """After every bucket, the kept statistics equal a recomputation over the newest ones."""
    series = busy_series(150, seed=11)
    learner = BaselineLearner(maxlen=20)
    buckets = series.buckets(T0 + 150 * 10 * NS - 1, 1500.0)
    history: list[tuple[float | None, float | None, float]] = []
    repeated = 0  # buckets that came in with the summary of the one that left
    kept_parts = 0  # statistics not worked out again: their values had not changed
    last = learner.stats()
    for b in buckets:
        learner.learn([b], 10.0, min_calls=10, quantile=0.95)
        enough = b.calls >= 3
        history.append(
            (
                b.failed / b.calls if enough else None,
                b.latency.quantile(0.95) if enough else None,
                b.calls / 10.0,
            )
        )
        if len(history) > 20 and history[-1] == history[-21]:
            repeated += 1
        recent = history[-20:]
        errors = [e for e, _, _ in recent if e is not None]
        p95s = [p for _, p, _ in recent if p is not None]
        rates = [r for _, _, r in recent]
        assert len(learner) == len(recent)
        stats = learner.stats()
        assert stats == (
            reference(errors) if errors else None,
            reference(p95s) if p95s else None,
            statistics.median(rates),
        )
        kept_parts += stats is not last and any(
            part is not None and part is was for part, was in zip(stats[:2], last[:2], strict=True)
        )
        last = stats
    # The learner leaves its sorted values alone when the summaries leaving and coming in are the
    # same: that happened here, and the statistics stayed right.
    assert repeated > 5
    # Only the statistics whose values changed are worked out again: the others are the same
    # objects as before, and equal to a recomputation (above).
    assert kept_parts > 20


def test_learner_takes_each_bucket_once() -> None:
    """Offering the same closed buckets again (overlapping reads) adds nothing."""
    series = busy_series(30, seed=5)
    learner = BaselineLearner(maxlen=60)
    buckets = series.buckets(T0 + 30 * 10 * NS - 1, 300.0)
    learner.learn(buckets[:20], 10.0, 10, 0.95)
    before = (len(learner), learner.stats(), learner.version)
    learner.learn(buckets[:20], 10.0, 10, 0.95)
    assert (len(learner), learner.stats(), learner.version) == before
    learner.learn(buckets[10:], 10.0, 10, 0.95)
    assert len(learner) == len(buckets)


def test_frozen_learner_moves_on_without_learning() -> None:
    """A frozen baseline skips the buckets that close meanwhile and learns the later ones."""
    series = busy_series(30, seed=8)
    buckets = series.buckets(T0 + 30 * 10 * NS - 1, 300.0)
    learner = BaselineLearner(maxlen=60)
    learner.learn(buckets[:10], 10.0, 10, 0.95)
    learner.frozen = True
    learner.learn(buckets[10:20], 10.0, 10, 0.95)
    assert len(learner) == 10
    assert learner.learned_until_ns == buckets[19].start_ns + 10 * NS
    learner.frozen = False
    learner.learn(buckets, 10.0, 10, 0.95)
    assert len(learner) == 10 + len(buckets[20:])


def test_quantile_hook_answers_for_the_bucket() -> None:
    """A caller's quantile_of replaces reading the bucket's histogram."""
    series = busy_series(10, seed=2)
    buckets = [b for b in series.buckets(T0 + 100 * NS - 1, 100.0) if b.calls >= 3]
    learner = BaselineLearner(maxlen=60)
    learner.learn(buckets, 10.0, 10, 0.95, quantile_of=lambda b, q: 0.5)
    p95 = learner.stats()[1]
    assert p95 is not None
    assert p95[0] == 0.5
