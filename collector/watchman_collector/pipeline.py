"""The analyzer: the one place that wires the stages (intake queue → pair → graph → tick hooks).

Receivers hand decoded `Batch`es to `Analyzer.offer`, which never blocks: a full queue answers
False and the receiver tells the sender to retry later. One consumer task (`run`) drains the queue
and runs pair and graph synchronously on the event loop, so graph state has a single owner and
readers on the same loop (scrapes, the JSON API) need no locks. Replay calls `process` and
`maybe_tick` directly with an event-time clock, so the same code computes the same windows.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from watchman_collector.clock import Clock, EventClock, WallClock
from watchman_collector.config import AnalyzerConfig
from watchman_collector.detect import DetectPolicy
from watchman_collector.diagnose import Diagnostician
from watchman_collector.graph import ServiceGraph
from watchman_collector.intake import ReceiverStats
from watchman_collector.pair import SpanPairer
from watchman_collector.records import Batch
from watchman_collector.rules import RuleSet, default_rules, load_rules
from watchman_collector.stats import DETAIL_S

__all__ = ["Analyzer", "AnalyzerCounters", "TickSubscriber", "detail_horizon_s"]

log = logging.getLogger(__name__)

_NS_PER_S = 1_000_000_000

TickSubscriber = Callable[[int], None]
"""Called with the clock's `now_ns` after each tick's pair/graph expiry (detect, cascade, alert)."""


def detail_horizon_s(rules: RuleSet) -> float:
    """How far back the graph keeps full-resolution buckets: what detection reads, at least.

    Detection reads a series' baseline history plus twice its window (the onset estimate looks
    back that far); beyond the horizon buckets are rolled up and would no longer line up.
    """
    thresholds = [rules.thresholds, *(rules.thresholds_for(s) for s in rules.services)]
    policies = [DetectPolicy.from_thresholds(t) for t in thresholds]
    reach_s = max(p.baseline_s + 2 * p.window_s + p.settle_s for p in policies)
    return max(DETAIL_S, reach_s + 60.0)  # a bucket of slack either side


@dataclass(slots=True)
class AnalyzerCounters:
    """What the analyzer itself has done since it started."""

    batches: int = 0
    spans: int = 0
    heartbeats: int = 0
    calls: int = 0
    ticks: int = 0
    tick_errors: int = 0


class Analyzer:
    """Owns the span pairer, the service graph, the receivers' counters and the intake queue.

    `tick_subscribers` is the extension point for the stages after graph: each is called with the
    clock's time on every tick, after pending span halves expired into calls and idle state left
    the graph. A subscriber that raises is logged and counted, never allowed to stop intake.
    """

    def __init__(self, config: AnalyzerConfig | None = None, clock: Clock | None = None) -> None:
        self.config = config or AnalyzerConfig()
        self.clock: Clock = clock if clock is not None else WallClock()
        cfg = self.config
        self.pairer = SpanPairer(
            ttl_s=cfg.pair_ttl,
            max_pending=cfg.pair_max_pending,
            dedupe_capacity=cfg.dedupe_capacity,
        )
        self.rules = load_rules(cfg.rules) if cfg.rules else default_rules()
        self.graph = ServiceGraph(
            detail_s=detail_horizon_s(self.rules),
            bucket_s=cfg.bucket,
            retention_s=cfg.retention,
            allowed_lateness_s=cfg.allowed_lateness,
            idle_expiry_s=cfg.idle_expiry,
            max_nodes=cfg.max_nodes,
            max_edges=cfg.max_edges,
            exemplars=cfg.exemplars,
        )
        self.receiver_stats = ReceiverStats()
        self.queue: asyncio.Queue[Batch] = asyncio.Queue(maxsize=cfg.queue_size)
        self.diagnostician = Diagnostician(self.graph, self.rules)
        self.tick_subscribers: list[TickSubscriber] = [self.diagnostician]
        self.counters = AnalyzerCounters()
        self._tick_ns = max(int(cfg.tick_interval * _NS_PER_S), 1)
        self._next_tick_ns: int | None = None
        self._observe = clock.observe if isinstance(clock, EventClock) else None
        self.running = False

    # -- intake ---------------------------------------------------------------------------------

    def offer(self, batch: Batch) -> bool:
        """Queue a batch without waiting; False when the queue is full (the sender should retry)."""
        try:
            self.queue.put_nowait(batch)
        except asyncio.QueueFull:
            return False
        return True

    @property
    def queue_depth(self) -> int:
        """Batches waiting for the consumer."""
        return self.queue.qsize()

    # -- the stages -----------------------------------------------------------------------------

    def process(self, batch: Batch) -> None:
        """Run one batch through pair and graph now, and move an event-time clock forward."""
        counters = self.counters
        counters.batches += 1
        if batch.spans:
            counters.spans += len(batch.spans)
            calls = self.pairer.add(batch.spans)
            if calls:
                counters.calls += len(calls)
                self.graph.add_calls(calls)
        if batch.heartbeats:
            counters.heartbeats += len(batch.heartbeats)
            self.graph.add_heartbeats(batch.heartbeats)
        observe = self._observe
        if observe is not None:
            latest = max((s.end_ns for s in batch.spans), default=0)
            latest = max(latest, max((h.time_ns for h in batch.heartbeats), default=0))
            if latest:
                observe(latest)

    def tick(self, now_ns: int) -> None:
        """Expire pending span halves into calls, expire idle graph state, then run subscribers."""
        self.counters.ticks += 1
        calls = self.pairer.expire(now_ns)
        if calls:
            self.counters.calls += len(calls)
            self.graph.add_calls(calls)
        self.graph.expire(now_ns)
        for subscriber in list(self.tick_subscribers):
            try:
                subscriber(now_ns)
            except Exception:
                self.counters.tick_errors += 1
                log.exception("tick subscriber %r failed", subscriber)
                if _raise_internal_errors():
                    raise

    def maybe_tick(self) -> bool:
        """Tick when a tick interval of clock time has passed since the last one; True if it did."""
        now_ns = self.clock.now_ns()
        if now_ns <= 0:
            return False  # an event clock that has seen nothing yet
        if self._next_tick_ns is None:
            self._next_tick_ns = now_ns + self._tick_ns
            return False
        if now_ns < self._next_tick_ns:
            return False
        self.tick(now_ns)
        # Skip whole intervals that a gap in event time jumped over: one tick covers them.
        missed = (now_ns - self._next_tick_ns) // self._tick_ns
        self._next_tick_ns += (missed + 1) * self._tick_ns
        return True

    def drain(self) -> None:
        """Turn every span half still waiting into an unpaired call (the end of a replay).

        The graph's clock is not moved, so windows still end at the last event seen.
        """
        calls = self.pairer.flush()
        if calls:
            self.counters.calls += len(calls)
            self.graph.add_calls(calls)

    # -- the live consumer ----------------------------------------------------------------------

    async def run(self) -> None:
        """Drain the intake queue forever, ticking every `tick_interval` of clock time.

        Cancel the task to stop; `flush` processes what is still queued.
        """
        self.running = True
        interval_s = self._tick_ns / _NS_PER_S
        try:
            while True:
                try:
                    batch = await asyncio.wait_for(self.queue.get(), timeout=interval_s)
                except TimeoutError:
                    self.maybe_tick()
                    continue
                self._process_logged(batch)
                # Drain what else is queued before yielding, without starving the tick.
                while not self.queue.empty():
                    self._process_logged(self.queue.get_nowait())
                self.maybe_tick()
        finally:
            self.running = False

    def flush(self) -> int:
        """Process every batch still queued (graceful shutdown); returns how many there were."""
        n = 0
        while not self.queue.empty():
            self._process_logged(self.queue.get_nowait())
            n += 1
        return n

    def _process_logged(self, batch: Batch) -> None:
        try:
            self.process(batch)
        except Exception:
            # A bug in a stage must not stop intake for everyone; the batch is lost and logged.
            log.exception("processing a batch of %d spans failed", len(batch.spans))
            if _raise_internal_errors():
                raise


def _raise_internal_errors() -> bool:
    # Under the test suite internal errors propagate, so a stage's bug fails the test that hit it.
    return os.environ.get("WATCHMAN_RAISE_INTERNAL_ERRORS") == "1"
