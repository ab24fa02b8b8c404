"""The analyzer's clocks: wall time live, the event-time watermark in replay."""

from __future__ import annotations

import time

from watchman_collector.clock import Clock, EventClock, WallClock


def test_wall_clock_reads_epoch_nanoseconds():
    """WallClock.now_ns() is the system's epoch time in nanoseconds."""
    before = time.time_ns()
    now = WallClock().now_ns()
    after = time.time_ns()
    assert before <= now <= after


def test_event_clock_is_the_highest_time_observed():
    """EventClock.now_ns() is the watermark: the highest event time observed so far."""
    clock = EventClock()
    assert clock.now_ns() == 0
    clock.observe(2_000)
    clock.observe(5_000)
    assert clock.now_ns() == 5_000


def test_event_clock_never_goes_back():
    """A late (older) event time does not move the watermark backwards."""
    clock = EventClock(start_ns=10_000)
    clock.observe(3_000)
    assert clock.now_ns() == 10_000


def test_both_clocks_satisfy_the_protocol():
    """WallClock and EventClock are both `Clock`s, so stages accept either."""
    assert isinstance(WallClock(), Clock)
    assert isinstance(EventClock(), Clock)
