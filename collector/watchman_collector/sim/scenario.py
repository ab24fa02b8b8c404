"""What a simulation run is asked to do (`Scenario`) and what really happened in it (`GroundTruth`).

The ground truth is what an evaluation scores the analyzer against: each fault's target, kind,
onset and heal, and for every service the fault reached, when its own requests first and last
failed or were slowed because of it. It is measured inside the simulation by following each
request's outcome back to the fault that caused it, not inferred from the topology, so an optional
call, a retry that succeeded or a timeout longer than the added latency correctly leave a caller
unaffected.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from watchman_collector.sim.faults import Fault, FaultKind, Noise
from watchman_collector.sim.topology import Topology

__all__ = ["DEFAULT_START_NS", "FaultTruth", "GroundTruth", "Impact", "Scenario"]

DEFAULT_START_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z: fixed, so runs are repeatable


@dataclass(frozen=True, slots=True)
class Scenario:
    """One simulation run: a topology, a seed, how long, how much traffic, which faults.

    `rate` is entry requests per second. `noise=None` generates seeded noise outside the fault
    windows; pass `Noise()` for none. Event time starts at `start_ns`; after `duration_s` no new
    requests arrive and the SDKs drain their queues for `drain_s` more.
    """

    topology: Topology
    seed: int = 1
    duration_s: float = 900.0
    rate: float = 20.0
    faults: tuple[Fault, ...] = ()
    noise: Noise | None = None
    start_ns: int = DEFAULT_START_NS
    environment: str = "production"
    heartbeat_interval_s: float = 10.0
    drain_s: float = 30.0

    def __post_init__(self) -> None:
        """Check faults against the topology and the run's length."""
        if self.duration_s <= 0 or self.rate < 0:
            raise ValueError("duration must be > 0 and rate >= 0")
        targets = self.topology.fault_targets
        for fault in self.faults:
            if fault.target not in targets:
                raise ValueError(
                    f"fault {fault.spec()}: {fault.target!r} is not a service or database of "
                    f"topology {self.topology.name} ({', '.join(targets)})"
                )
            if fault.onset_s >= self.duration_s:
                raise ValueError(f"fault {fault.spec()} starts after the run ends")

    def resolved_noise(self) -> Noise:
        """The noise in force: the given one, or seeded noise away from the faults."""
        if self.noise is not None:
            return self.noise
        quiet = tuple((f.onset_s - 30, f.heal_s + 120) for f in self.faults)
        names = tuple(s.name for s in self.topology.services)
        return Noise.generate(names, self.duration_s, self.seed, quiet)

    def ns(self, t_s: float) -> int:
        """Event time of `t_s` seconds after the start."""
        return self.start_ns + round(t_s * 1e9)


@dataclass(slots=True)
class Impact:
    """How one fault reached one service: the service's own served requests that failed or slowed.

    `saw_errors` counts the service's calls that failed because of the fault, including those it
    survived (optional call, successful retry); a service can see errors and still be unaffected.
    """

    service: str
    failed: int = 0
    first_failed_ns: int | None = None
    last_failed_ns: int | None = None
    slowed: int = 0
    first_slowed_ns: int | None = None
    last_slowed_ns: int | None = None
    saw_errors: int = 0
    first_saw_errors_ns: int | None = None

    def note_failed(self, time_ns: int) -> None:
        """Count one served request that failed because of the fault."""
        self.failed += 1
        if self.first_failed_ns is None or time_ns < self.first_failed_ns:
            self.first_failed_ns = time_ns
        if self.last_failed_ns is None or time_ns > self.last_failed_ns:
            self.last_failed_ns = time_ns

    def note_slowed(self, time_ns: int) -> None:
        """Count one served request the fault made markedly slower."""
        self.slowed += 1
        if self.first_slowed_ns is None or time_ns < self.first_slowed_ns:
            self.first_slowed_ns = time_ns
        if self.last_slowed_ns is None or time_ns > self.last_slowed_ns:
            self.last_slowed_ns = time_ns

    def note_saw_error(self, time_ns: int) -> None:
        """Count one call of this service that failed because of the fault."""
        self.saw_errors += 1
        if self.first_saw_errors_ns is None or time_ns < self.first_saw_errors_ns:
            self.first_saw_errors_ns = time_ns

    @property
    def affected(self) -> bool:
        """Whether the service's own requests failed or slowed because of the fault."""
        return self.failed > 0 or self.slowed > 0

    @property
    def first_affected_ns(self) -> int | None:
        """The earlier of first failure and first slowdown."""
        times = [t for t in (self.first_failed_ns, self.first_slowed_ns) if t is not None]
        return min(times) if times else None


@dataclass(slots=True)
class FaultTruth:
    """One fault as it happened, with the services it reached (its own target included)."""

    target: str
    kind: FaultKind
    onset_ns: int
    heal_ns: int
    magnitude: float
    impacts: dict[str, Impact] = field(default_factory=dict)

    def impact(self, service: str) -> Impact:
        """The impact record of `service`, created on first use."""
        found = self.impacts.get(service)
        if found is None:
            found = self.impacts[service] = Impact(service)
        return found

    @property
    def affected(self) -> dict[str, int]:
        """Services other than the target whose requests truly suffered → when that began."""
        out = {}
        for name, imp in sorted(self.impacts.items()):
            first = imp.first_affected_ns
            if name != self.target and first is not None:
                out[name] = first
        return out


@dataclass(slots=True)
class GroundTruth:
    """Everything an evaluation needs to score a run, as plain data (`to_dict`, `to_json`)."""

    topology: str
    seed: int
    start_ns: int
    end_ns: int
    rate: float
    faults: list[FaultTruth] = field(default_factory=list)
    noise: Noise = field(default_factory=Noise)
    requests: int = 0
    spans: int = 0
    spans_dropped: int = 0  # lost in SDK queues: crashes, and full queues
    trace_exports: int = 0
    metric_exports: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; each fault lists `affected` (service → first affected ns)."""
        out = asdict(self)
        for fault_dict, fault in zip(out["faults"], self.faults, strict=True):
            fault_dict["kind"] = fault.kind.value
            fault_dict["affected"] = fault.affected
        return out

    def to_json(self) -> str:
        """The ground truth as indented JSON with sorted keys (byte-stable for a seed)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
