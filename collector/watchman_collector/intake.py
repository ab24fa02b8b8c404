"""What the OTLP receivers share: the sink they feed, their limits and their counters.

The counters are plain ints in dicts, bumped on the receive path; the expose stage turns them into
Prometheus metrics at scrape time, so nothing here imports prometheus_client.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from watchman_collector.records import Batch

__all__ = [
    "Limits",
    "Outcome",
    "ReceiverStats",
    "Sink",
    "Transport",
]

Sink = Callable[[Batch], bool]
"""Takes a decoded batch; False when the analyzer is overloaded (→ UNAVAILABLE / HTTP 503)."""

Transport = Literal["grpc", "http"]
Outcome = Literal["accepted", "rejected", "refused"]

_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Receiver limits. `http_max_body_bytes` applies after decompression."""

    grpc_max_message_bytes: int = 4 * _MIB  # gRPC's own default receive limit
    http_max_body_bytes: int = 20 * _MIB  # the Collector's confighttp default
    retry_after_s: float = 1.0  # the retry delay suggested on overload


@dataclass(slots=True)
class ReceiverStats:
    """Counters of what the receivers did, keyed by label values.

    - `requests[(transport, signal, outcome)]`: export requests; outcome `accepted` (possibly
      with some items rejected), `rejected` (malformed: 400 / INVALID_ARGUMENT, too large, wrong
      content type) or `refused` (overload: 503 / UNAVAILABLE, retryable);
    - `spans[(transport, outcome)]`: spans accepted, rejected by decode, or refused with
      their batch;
    - `refused[(transport, reason)]`: requests not accepted, by reason (`overloaded`,
      `malformed`, `too_large`, `unsupported_media_type`, …).
    """

    requests: defaultdict[tuple[str, str, str], int] = field(
        default_factory=lambda: defaultdict(int)
    )
    spans: defaultdict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    refused: defaultdict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))

    def record_batch(self, transport: Transport, signal: str, batch: Batch, *, taken: bool) -> None:
        """Count one decoded request: taken by the sink, or refused because it was full."""
        if taken:
            self.requests[(transport, signal, "accepted")] += 1
            if signal == "traces":
                self.spans[(transport, "accepted")] += len(batch.spans)
                if batch.rejected:
                    self.spans[(transport, "rejected")] += batch.rejected
        else:
            self.requests[(transport, signal, "refused")] += 1
            self.refused[(transport, "overloaded")] += 1
            if signal == "traces":
                self.spans[(transport, "refused")] += len(batch.spans)
                if batch.rejected:
                    self.spans[(transport, "rejected")] += batch.rejected

    def record_rejected(self, transport: Transport, signal: str, reason: str) -> None:
        """Count one request answered with a non-retryable error (malformed, too large, …)."""
        self.requests[(transport, signal, "rejected")] += 1
        self.refused[(transport, reason)] += 1
