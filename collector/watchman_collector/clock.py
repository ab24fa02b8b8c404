"""The analyzer's notion of "now": the wall clock when live, the event-time watermark in replay.

Windows, expiry and alert timers all ask a `Clock` instead of `time.time_ns()`, so a replay of
recorded OTLP computes the same windows as the live run did, and tests need no sleeping.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "EventClock", "WallClock"]


@runtime_checkable
class Clock(Protocol):
    """Anything that tells the current time in integer nanoseconds since the Unix epoch."""

    def now_ns(self) -> int:
        """The current time, ns since the epoch."""
        ...


class WallClock:
    """The system's real-time clock, for the live analyzer."""

    __slots__ = ()

    def now_ns(self) -> int:
        """`time.time_ns()`: event times are epoch-based, so a monotonic clock would not compare."""
        return time.time_ns()

    def __repr__(self) -> str:
        return "WallClock()"


class EventClock:
    """The watermark of event time: the highest timestamp observed so far.

    It never goes back, so one late or skewed record cannot rewind windows that later records
    already moved forward. Before anything is observed it reads `start_ns` (0 by default).
    """

    __slots__ = ("_now_ns",)

    def __init__(self, start_ns: int = 0) -> None:
        self._now_ns = start_ns

    def observe(self, time_ns: int) -> None:
        """Move the watermark forward to `time_ns` if that is later than it."""
        self._now_ns = max(self._now_ns, time_ns)

    def now_ns(self) -> int:
        """The highest event time observed."""
        return self._now_ns

    def __repr__(self) -> str:
        return f"EventClock(now_ns={self._now_ns})"
