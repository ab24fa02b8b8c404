"""Pushes alerts to Alertmanager's `POST /api/v2/alerts` the way Prometheus's notifier does.

`observe` runs on the analyzer's tick and never waits: it decides what needs sending and appends
it to a bounded queue (oldest dropped when full, as Prometheus does). A background task drains
the queue in batches, retrying failures with capped exponential backoff. Like Prometheus:

- a firing alert is sent when it fires and re-sent every `resend_interval` (Prometheus: 1m),
  with `endsAt` four resend intervals ahead, so Alertmanager resolves it by itself if we vanish;
- a resolved alert is sent with `endsAt` = its resolve time, and re-sent every interval for
  `resolved_retention` (Prometheus: 15m), so a lost request cannot leave it firing;
- `startsAt` is the time the alert fired, not when it became pending.

Inhibited symptoms are pushed too: Alertmanager applies its own inhibit rule (docs/alerts.md) and
must know the symptom to notify it if the root cause resolves first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from watchman_collector.alert import Alert, AlertState, AlertUpdate
from watchman_collector.alert_output import postable_alert

if TYPE_CHECKING:
    # Imported when a client starts: httpx (and what it pulls in) is ≈ 8 MiB of RSS that
    # `watchman serve` without an Alertmanager would carry for nothing.
    import httpx

__all__ = ["AlertmanagerClient", "AlertmanagerStats"]

log = logging.getLogger(__name__)

_NS_PER_S = 1_000_000_000


@dataclass(slots=True)
class AlertmanagerStats:
    """What the client did: alerts delivered, failed attempts, alerts dropped (queue or retries)."""

    sent: int = 0
    batches: int = 0
    failed_attempts: int = 0
    dropped: int = 0


class AlertmanagerClient:
    """Queue and sender for one or more Alertmanagers (each gets every batch, as in Prometheus)."""

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        external_url: str = "http://127.0.0.1:9464",
        resend_interval_s: float = 60.0,
        resolved_retention_s: float = 900.0,
        queue_size: int = 10_000,
        batch_size: int = 256,
        timeout_s: float = 10.0,
        max_attempts: int = 3,
        backoff_s: float = 0.5,
        backoff_max_s: float = 8.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.endpoints = [u.rstrip("/") + "/api/v2/alerts" for u in self.urls]
        self.external_url = external_url.rstrip("/")
        self.stats = AlertmanagerStats()
        self._resend_ns = int(resend_interval_s * _NS_PER_S)
        self._retention_ns = int(resolved_retention_s * _NS_PER_S)
        self._batch_size = max(batch_size, 1)
        self._timeout_s = timeout_s
        self._max_attempts = max(max_attempts, 1)
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._queue: deque[dict[str, Any]] = deque(maxlen=max(queue_size, 1))
        self._last_sent: dict[str, int] = {}
        self._resolved: dict[str, Alert] = {}
        self._http = http_client
        self._own_http = http_client is None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.Event | None = None

    @property
    def queued(self) -> int:
        """Alerts waiting to be sent."""
        return len(self._queue)

    def generator_url(self, alert: Alert) -> str:
        """The back-link Alertmanager shows: this service's page on the analyzer's API."""
        service = alert.labels.get("service", "")
        return f"{self.external_url}/api/v1/services/{quote(service, safe='')}"

    def observe(self, update: AlertUpdate) -> int:
        """Queue what this tick needs sent (new, resolved, or due for re-send); never waits."""
        now = update.time_ns
        changed = {t.alert.fingerprint for t in update.transitions}
        for transition in update.transitions:
            if transition.alert.state is AlertState.RESOLVED:
                self._resolved[transition.alert.fingerprint] = transition.alert
        due: list[dict[str, Any]] = []
        firing: set[str] = set()
        for alert in update.alerts:
            if alert.state is not AlertState.FIRING:
                continue
            fp = alert.fingerprint
            firing.add(fp)
            self._resolved.pop(fp, None)  # the same labels firing again: a new alert
            if fp in changed or self._is_due(fp, now):
                ends = now + 4 * self._resend_ns
                due.append(
                    postable_alert(alert, generator_url=self.generator_url(alert), ends_at_ns=ends)
                )
                self._last_sent[fp] = now
        for fp, alert in list(self._resolved.items()):
            resolved_at = alert.resolved_at_ns if alert.resolved_at_ns is not None else now
            if now - resolved_at > self._retention_ns:
                del self._resolved[fp]
                continue
            if fp in changed or self._is_due(fp, now):
                url = self.generator_url(alert)
                due.append(postable_alert(alert, generator_url=url, ends_at_ns=resolved_at))
                self._last_sent[fp] = now
        for fp in [fp for fp in self._last_sent if fp not in firing and fp not in self._resolved]:
            del self._last_sent[fp]
        self._enqueue(due)
        return len(due)

    def _is_due(self, fp: str, now: int) -> bool:
        last = self._last_sent.get(fp)
        return last is None or now - last >= self._resend_ns

    def _enqueue(self, items: list[dict[str, Any]]) -> None:
        if not items:
            return
        assert self._queue.maxlen is not None
        overflow = len(self._queue) + len(items) - self._queue.maxlen
        if overflow > 0:
            self.stats.dropped += overflow  # the deque drops the oldest, as Prometheus does
            log.warning("Alertmanager queue full, dropped %d oldest alerts", overflow)
        self._queue.extend(items)
        if self._idle is not None:
            self._idle.clear()
        if self._wake is not None:
            self._wake.set()

    async def start(self) -> None:
        """Start the background sender on the running loop."""
        if self._task is not None:
            return
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(timeout=self._timeout_s)
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        if self._queue:
            self._wake.set()
        else:
            self._idle.set()
        self._task = asyncio.create_task(self._run(), name="alertmanager-sender")

    async def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until the queue is empty and nothing is in flight; False on timeout."""
        if self._task is None or self._idle is None:
            return not self._queue
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()  # cleared whenever something is queued
        except TimeoutError:
            return False
        return True

    async def stop(self, *, drain_timeout_s: float = 5.0) -> None:
        """Send what is queued (bounded by `drain_timeout_s`), then stop the sender."""
        if self._task is not None:
            await self.flush(drain_timeout_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    async def __aenter__(self) -> AlertmanagerClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _run(self) -> None:
        assert self._wake is not None
        assert self._idle is not None
        while True:
            if not self._queue:
                self._idle.set()
                await self._wake.wait()
            self._wake.clear()
            self._idle.clear()
            while self._queue:
                count = min(self._batch_size, len(self._queue))
                batch = [self._queue.popleft() for _ in range(count)]
                await self._send(batch)

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        delivered = False
        for endpoint in self.endpoints:
            delivered |= await self._send_one(endpoint, batch)
        if delivered:
            self.stats.sent += len(batch)
            self.stats.batches += 1
        else:
            self.stats.dropped += len(batch)

    async def _send_one(self, endpoint: str, batch: list[dict[str, Any]]) -> bool:
        import httpx

        assert self._http is not None
        for attempt in range(self._max_attempts):
            try:
                response = await self._http.post(endpoint, json=batch, timeout=self._timeout_s)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    return True
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code < 500 and response.status_code != 429:
                    # The payload is wrong; sending it again cannot help.
                    self.stats.failed_attempts += 1
                    log.warning(
                        "Alertmanager %s rejected %d alerts: %s", endpoint, len(batch), problem
                    )
                    return False
            self.stats.failed_attempts += 1
            if attempt + 1 < self._max_attempts:
                delay = min(self._backoff_s * 2**attempt, self._backoff_max_s)
                log.info("Alertmanager %s: %s; retrying in %.1fs", endpoint, problem, delay)
                await asyncio.sleep(delay)
            else:
                log.warning(
                    "Alertmanager %s: %s; gave up on %d alerts after %d attempts",
                    endpoint,
                    problem,
                    len(batch),
                    self._max_attempts,
                )
        return False
