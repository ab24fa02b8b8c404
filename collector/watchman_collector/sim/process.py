"""One simulated service process: its identity, and how its SDK batches, beats and crashes.

The SDK side is modelled on the OpenTelemetry Python SDK's defaults: the batch span processor
exports every `schedule_delay` (5 s by default, configurable per service), at once when 512 spans
are queued, in requests of at most 512 spans, and drops spans when 2048 are already queued. The
heartbeat reader exports every 10 s. A crashed process loses its queue and reports nothing until
it restarts with a new `service.instance.id`, its uptime starting again from zero.
"""

from __future__ import annotations

import heapq
import random
import uuid
from dataclasses import dataclass

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from watchman_collector.sim.encode import SimSpan, encode_heartbeat, encode_resource, encode_spans
from watchman_collector.sim.topology import Service
from watchman_otel._version import __version__

__all__ = ["MAX_EXPORT_BATCH", "MAX_QUEUE", "Export", "ServiceProcess"]

MAX_EXPORT_BATCH = 512  # OTEL_BSP_MAX_EXPORT_BATCH_SIZE default
MAX_QUEUE = 2048  # OTEL_BSP_MAX_QUEUE_SIZE default
_POD_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' generated-name alphabet
_SDK_VERSION = "1.45.1"


@dataclass(frozen=True, slots=True)
class Export:
    """One export request as a process's SDK sends it, at event time `time_ns`."""

    time_ns: int
    signal: str  # "traces" | "metrics"
    service: str
    instance: str
    request: ExportTraceServiceRequest | ExportMetricsServiceRequest


class ServiceProcess:
    """A process of a service: finished spans go in, export requests come out in time order.

    Spans are handed over with `finish` as the simulation produces them (any order); `advance`
    then plays the SDK's timeline up to a time, which is safe once no span ending before that
    time can still be produced.
    """

    def __init__(
        self,
        service: Service,
        index: int,
        *,
        seed: int,
        start_ns: int,
        environment: str,
        heartbeat_interval_s: float,
        crashes: list[tuple[int, int]],
    ) -> None:
        self.service = service
        self.rng = random.Random(f"process:{seed}:{service.name}:{index}")
        rng = self.rng
        rs_hash = "".join(rng.choice(_POD_ALPHABET) for _ in range(10))
        suffix = "".join(rng.choice(_POD_ALPHABET) for _ in range(5))
        self.host = f"{service.name}-{rs_hash}-{suffix}"
        self.ip = f"10.244.{rng.randrange(1, 250)}.{rng.randrange(2, 254)}"
        self.environment = environment
        self.instance = ""
        self.started_ns = start_ns - round(rng.uniform(600, 3 * 86400) * 1e9)
        self._interval_ns = round(heartbeat_interval_s * 1e9)
        self._delay_ns = round(service.export_delay_s * 1e9)
        self._pending: list[tuple[int, int, SimSpan]] = []
        self._seq = 0
        self._queue: list[SimSpan] = []
        self._crashes = sorted(crashes)
        self._windows = tuple(self._crashes)
        self._down = False
        self.dropped = 0
        self.busy_s = 0.0  # CPU-bound work since the last heartbeat
        self.served_s = 0.0  # time spent serving requests since the last heartbeat
        self._memory = service.memory_mb * 1024 * 1024 * rng.uniform(0.85, 1.15)
        self._restart(start_ns, first=True)

    def _restart(self, now_ns: int, *, first: bool = False) -> None:
        self.instance = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        if not first:
            self.started_ns = now_ns
        svc = self.service
        self._resource = encode_resource(
            (
                ("service.name", svc.name),
                ("service.version", svc.version),
                ("service.instance.id", self.instance),
                ("deployment.environment.name", self.environment),
                ("host.name", self.host),
                ("process.pid", 1 if first else self.rng.randrange(7, 60)),
                ("process.runtime.name", "cpython"),
                ("process.runtime.version", "3.11.7"),
                ("telemetry.sdk.language", "python"),
                ("telemetry.sdk.name", "opentelemetry"),
                ("telemetry.sdk.version", _SDK_VERSION),
                ("watchman.version", __version__),
            )
        )
        # Timers start with the process; the phase differs per process.
        self._next_tick = now_ns + round(self.rng.uniform(0.1, 1.0) * self._delay_ns)
        self._next_hb = now_ns + round(self.rng.uniform(0.1, 1.0) * self._interval_ns)

    def down_at(self, time_ns: int) -> bool:
        """Whether the process is crashed at `time_ns`."""
        return any(onset <= time_ns < heal for onset, heal in self._windows)

    def finish(self, span: SimSpan) -> None:
        """Hand over a finished span; it enters the SDK queue at its end time."""
        self._seq += 1
        heapq.heappush(self._pending, (span.end_ns, self._seq, span))

    def advance(self, until_ns: int, out: list[Export]) -> None:
        """Play the SDK's timeline up to (not including) `until_ns`, appending exports to `out`."""
        pending = self._pending
        crashes = self._crashes
        while True:
            t_span = pending[0][0] if pending else until_ns
            t_crash = crashes[0][1 if self._down else 0] if crashes else until_ns
            t = min(t_span, t_crash, self._next_tick, self._next_hb)
            if t >= until_ns:
                return
            if t == t_crash:
                if self._down:
                    crashes.pop(0)
                    self._down = False
                    self._restart(t)
                else:
                    self._down = True
                    self.dropped += len(self._queue)
                    self._queue.clear()
            elif t == t_span:
                span = heapq.heappop(pending)[2]
                if self._down or len(self._queue) >= MAX_QUEUE:
                    self.dropped += 1
                    continue
                self._queue.append(span)
                if len(self._queue) >= MAX_EXPORT_BATCH:
                    self._export_spans(t, out)
            elif t == self._next_tick:
                self._next_tick += self._delay_ns
                if not self._down:
                    while self._queue:
                        self._export_spans(t, out)
            else:
                self._next_hb += self._interval_ns
                if not self._down:
                    out.append(self._heartbeat(t))

    def flush(self, time_ns: int, out: list[Export]) -> None:
        """Export everything still queued or pending at `time_ns` (the SDK's shutdown flush)."""
        while self._pending:
            span = heapq.heappop(self._pending)[2]
            if not self._down and len(self._queue) < MAX_QUEUE:
                self._queue.append(span)
            else:
                self.dropped += 1
        while self._queue and not self._down:
            self._export_spans(time_ns, out)

    def _export_spans(self, time_ns: int, out: list[Export]) -> None:
        batch = self._queue[:MAX_EXPORT_BATCH]
        del self._queue[:MAX_EXPORT_BATCH]
        request = encode_spans(self._resource, batch)
        out.append(Export(time_ns, "traces", self.service.name, self.instance, request))

    def _heartbeat(self, time_ns: int) -> Export:
        rng = self.rng
        interval_s = self._interval_ns / 1e9
        cpu = min(0.98, 0.015 + self.busy_s / interval_s + rng.uniform(0.0, 0.02))
        inflight = round(self.served_s / interval_s + rng.uniform(0.0, 0.5))
        self._memory = max(self._memory * rng.uniform(0.995, 1.006), 48 * 1024 * 1024)
        self.busy_s = self.served_s = 0.0
        request = encode_heartbeat(
            self._resource,
            time_ns,
            uptime_s=round((time_ns - self.started_ns) / 1e9, 3),
            cpu_utilization=round(cpu, 4),
            memory_bytes=int(self._memory) + inflight * 512 * 1024,
            threads=self.service.threads + min(inflight, 32),
            inflight=inflight,
        )
        return Export(time_ns, "metrics", self.service.name, self.instance, request)
