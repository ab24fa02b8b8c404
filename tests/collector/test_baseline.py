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


def learner_state(learner: BaselineLearner) -> tuple[object, ...]:
    """Everything a learner's later answers depend on, as values."""
    return (
        learner.learned_until_ns,
        learner.version,
        learner.size,
        learner.stats(),
        list(learner._order),
        learner._oldest,
        list(learner._errors),
        list(learner._p95s),
        list(learner._rates),
    )


def test_a_bucket_learned_ahead_is_taken_back_exactly() -> None:
    """`undo` puts the learner back as it was at its last `checkpoint`, while it fills, once it is
    full, frozen, and when the bucket repeats the summary it replaces; a learner that took
    buckets back and learned others gives the numbers of one that never learned them."""
    rng = random.Random(9)
    learner, twin = BaselineLearner(maxlen=12), BaselineLearner(maxlen=12)
    p95s = [0.01, 0.02, 0.05, None]
    cases = {"filling": 0, "full": 0, "frozen": 0, "repeated": 0}
    end = T0
    for step in range(400):
        end += 10 * NS
        calls, failed = rng.choice([0, 2, 5, 20]), rng.choice([0, 0, 1, 3])
        failed = min(failed, calls)
        p95 = rng.choice(p95s)
        frozen = rng.random() < 0.1
        learner.frozen = twin.frozen = frozen
        before = learner_state(learner)
        if rng.random() < 0.5:  # learned ahead, then taken back
            size = learner.size
            repeat = rng.random() < 0.3 and learner.size == learner.maxlen
            if repeat:  # the summary that the bucket would replace, repeated
                i = learner._oldest
                error, old_p95, rate = learner._order[i : i + 3]
                calls = round(rate * 10.0)
                failed = round(error * calls) if error >= 0 else 0
                p95 = None if old_p95 < 0 else old_p95
            learner.checkpoint()
            learner.offer(end, calls, failed, 10.0, 6, lambda _, __, p=p95: p, None, 0.95)
            changed = learner_state(learner) != before
            learner.undo()
            assert learner_state(learner) == before, step
            assert changed or frozen or repeat  # it had learned the bucket
            if frozen:
                cases["frozen"] += 1
            elif repeat:
                cases["repeated"] += 1
            else:
                cases["filling" if size < learner.maxlen else "full"] += 1
        else:  # learned as it leaves, by both
            for each in (learner, twin):
                each.offer(end, calls, failed, 10.0, 6, lambda _, __, p=p95: p, None, 0.95)
            assert learner_state(learner) == learner_state(twin), step
    assert min(cases.values()) > 3, cases
