"""Faults and benign noise the simulator injects, and their effect on a service at an event time.

Four fault kinds, each on one service or database from `onset` to `heal` (seconds after the
scenario's start):

- `error`: a share of requests (magnitude, default 0.6) answer 500 at once;
- `latency`: every request takes `magnitude` seconds longer (default 3.0), enough that callers
  with shorter timeouts give up;
- `ramp`: the extra latency grows linearly from 0 at onset to `magnitude` (default 4.0) at heal;
- `crash`: every process of the service is gone: no spans, no heartbeats, callers' connections are
  refused; spans still queued in the SDK are lost; at heal the processes restart with new
  `service.instance.id`s.

Noise is what a healthy system does that must not page anyone: short latency blips on one service
and steps in the traffic rate.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "Blip",
    "Fault",
    "FaultKind",
    "Noise",
    "TrafficStep",
    "parse_fault",
]


class FaultKind(StrEnum):
    """The kinds of fault the simulator injects."""

    ERROR = "error"
    LATENCY = "latency"
    RAMP = "ramp"
    CRASH = "crash"


_DEFAULT_MAGNITUDE = {
    FaultKind.ERROR: 0.6,
    FaultKind.LATENCY: 3.0,
    FaultKind.RAMP: 4.0,
    FaultKind.CRASH: 1.0,
}


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault: `target` (a service or database) misbehaves from onset to heal.

    `magnitude` is the error ratio (`error`), the added seconds (`latency`), the added seconds
    reached at heal (`ramp`), unused for `crash`; `None` takes the kind's default.
    """

    target: str
    kind: FaultKind
    onset_s: float
    duration_s: float
    magnitude: float | None = None

    def __post_init__(self) -> None:
        """Reject negative times and out-of-range magnitudes early, with the fault in the text."""
        if self.onset_s < 0 or self.duration_s <= 0:
            raise ValueError(f"{self}: onset must be >= 0 and duration > 0")
        if self.kind is FaultKind.ERROR and not 0 < self.strength <= 1:
            raise ValueError(f"{self}: an error ratio must be in (0, 1]")
        if self.strength < 0:
            raise ValueError(f"{self}: magnitude must not be negative")

    @property
    def heal_s(self) -> float:
        """When the fault ends, in seconds after the scenario's start."""
        return self.onset_s + self.duration_s

    @property
    def strength(self) -> float:
        """The magnitude, or the kind's default when none was given."""
        return _DEFAULT_MAGNITUDE[self.kind] if self.magnitude is None else self.magnitude

    def active(self, t_s: float) -> bool:
        """Whether the fault is in force at `t_s` seconds after the start."""
        return self.onset_s <= t_s < self.heal_s

    def added_latency_s(self, t_s: float) -> float:
        """Extra seconds a request arriving at `t_s` spends in the target."""
        if not self.active(t_s):
            return 0.0
        if self.kind is FaultKind.LATENCY:
            return self.strength
        if self.kind is FaultKind.RAMP:
            return self.strength * (t_s - self.onset_s) / self.duration_s
        return 0.0

    def spec(self) -> str:
        """The fault in the command line's syntax; `parse_fault(f.spec()) == f`."""
        mag = "" if self.magnitude is None else f"={self.magnitude:g}"
        return f"{self.target}:{self.kind.value}{mag}@{self.onset_s:g}+{self.duration_s:g}"


_FAULT_RE = re.compile(
    r"^(?P<target>[A-Za-z0-9._-]+):(?P<kind>[a-z]+)(?:=(?P<mag>[0-9.]+))?"
    r"@(?P<onset>[0-9.]+)\+(?P<duration>[0-9.]+)$"
)


def parse_fault(text: str) -> Fault:
    """Parse `target:kind[=magnitude]@onset+duration`, e.g. `payments:crash@300+120`.

    Times are seconds after the scenario's start. Raises ValueError with the expected shape.
    """
    match = _FAULT_RE.match(text.strip())
    if match is None:
        raise ValueError(
            f"bad fault {text!r}: expected target:kind[=magnitude]@onset+duration, "
            "e.g. payments:crash@300+120 or orders:latency=2.5@200+60"
        )
    try:
        kind = FaultKind(match["kind"])
    except ValueError:
        known = ", ".join(k.value for k in FaultKind)
        raise ValueError(f"bad fault {text!r}: kind must be one of {known}") from None
    mag = match["mag"]
    return Fault(
        target=match["target"],
        kind=kind,
        onset_s=float(match["onset"]),
        duration_s=float(match["duration"]),
        magnitude=None if mag is None else float(mag),
    )


@dataclass(frozen=True, slots=True)
class Blip:
    """A short latency increase on one service that should not alert: `added_s` for a while."""

    target: str
    at_s: float
    duration_s: float
    added_s: float

    def added_latency_s(self, t_s: float) -> float:
        """Extra seconds a request arriving at `t_s` spends in the target."""
        return self.added_s if self.at_s <= t_s < self.at_s + self.duration_s else 0.0


@dataclass(frozen=True, slots=True)
class TrafficStep:
    """From `at_s` on, the entry request rate is multiplied by `factor` (until the next step)."""

    at_s: float
    factor: float


@dataclass(frozen=True, slots=True)
class Noise:
    """The benign variation of a scenario: latency blips and traffic steps."""

    blips: tuple[Blip, ...] = ()
    steps: tuple[TrafficStep, ...] = ()

    def rate_factor(self, t_s: float) -> float:
        """The traffic multiplier in force at `t_s`."""
        factor = 1.0
        for step in self.steps:
            if step.at_s <= t_s:
                factor = step.factor
        return factor

    @classmethod
    def generate(
        cls,
        targets: tuple[str, ...],
        duration_s: float,
        seed: int,
        quiet: tuple[tuple[float, float], ...] = (),
        every_s: float = 120.0,
    ) -> Noise:
        """Seeded noise for a run: about one blip per `every_s` seconds and a few traffic steps.

        Nothing starts inside a `quiet` window (start, end): noise belongs to the healthy phase,
        so that the evaluation can count alerts on it as false.
        """
        rng = random.Random(f"noise:{seed}")

        def is_quiet(start: float, end: float) -> bool:
            return any(start < q_end and q_start < end for q_start, q_end in quiet)

        blips: list[Blip] = []
        t = rng.uniform(20.0, every_s)
        while t < duration_s - 30:
            length = rng.uniform(4.0, 15.0)
            if not is_quiet(t, t + length):
                blips.append(
                    Blip(rng.choice(targets), round(t, 3), round(length, 3), rng.uniform(0.03, 0.2))
                )
            t += rng.uniform(0.5, 1.5) * every_s
        steps: list[TrafficStep] = []
        for _ in range(max(1, int(duration_s // 400))):
            at = rng.uniform(0.1, 0.9) * duration_s
            if not is_quiet(at - 60, at + 60):
                steps.append(TrafficStep(round(at, 3), round(rng.uniform(0.6, 1.6), 3)))
        steps.sort(key=lambda s: s.at_s)
        return cls(tuple(blips), tuple(steps))
