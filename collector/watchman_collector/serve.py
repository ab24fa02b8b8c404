"""`watchman serve`: the OTLP/gRPC, OTLP/HTTP and API servers and the analyzer on one event loop.

Listening sockets are bound before anything starts, so a taken port fails at once with the
address in the message, and port 0 resolves to a real port that is logged. SIGINT and SIGTERM stop
the receivers first (the gRPC server with a grace period), then process what is still queued, then
stop the API, so a scrape during shutdown still answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import signal
import socket
import sys
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import uvicorn

from watchman_collector.alertmanager import AlertmanagerClient
from watchman_collector.clock import Clock, WallClock
from watchman_collector.config import OFF, AnalyzerConfig, format_address, parse_address
from watchman_collector.expose_api import make_api_app
from watchman_collector.intake import Limits
from watchman_collector.pipeline import Analyzer

if TYPE_CHECKING:
    import grpc.aio

__all__ = [
    "GC_THRESHOLD",
    "MALLOC_ARENAS",
    "AnalyzerServer",
    "BoundAddresses",
    "ServeError",
    "serve",
]

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 10.0
SHUTDOWN_GRACE_S = 5.0


class ServeError(RuntimeError):
    """A listener could not start (address in use, bad host, …)."""


@dataclass(frozen=True, slots=True)
class BoundAddresses:
    """Where the servers actually listen (`HOST:PORT`, None when disabled)."""

    otlp_grpc: str | None
    otlp_http: str | None
    api: str


class _Server(uvicorn.Server):
    # uvicorn's own signal capture would stop one server and re-raise the signal after it;
    # here one handler stops all three servers in order.
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _bind(address: str, what: str) -> socket.socket:
    host, port = parse_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=1024)
    except OSError as exc:
        raise ServeError(f"cannot listen for {what} on {address}: {exc.strerror or exc}") from exc


def _sockname(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return format_address(str(host), int(port))


class AnalyzerServer:
    """Runs the analyzer and its three listeners; `start()` then `stop()`, or `serve()`."""

    def __init__(self, config: AnalyzerConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.analyzer = Analyzer(config, clock if clock is not None else WallClock())
        self.addresses: BoundAddresses | None = None
        self._grpc: grpc.aio.Server | None = None
        self._api: tuple[_Server, asyncio.Task[None]] | None = None
        self._http: tuple[_Server, asyncio.Task[None]] | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._alertmanager: AlertmanagerClient | None = None
        self._ready = False

    @property
    def ready(self) -> bool:
        """True once every listener accepts and the consumer runs, until `stop()` begins."""
        return self._ready and self.analyzer.running

    def _uvicorn_server(self, app: Any) -> _Server:
        level = logging.DEBUG if self.config.log_level == "debug" else logging.WARNING
        config = uvicorn.Config(
            app,
            log_config=None,
            log_level=level,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=int(SHUTDOWN_GRACE_S),
        )
        return _Server(config)

    async def start(self) -> BoundAddresses:
        """Bind and start everything; raises `ServeError` when a listener cannot start."""
        cfg = self.config
        limits = Limits(
            grpc_max_message_bytes=cfg.grpc_max_message_bytes,
            http_max_body_bytes=cfg.http_max_body_bytes,
            # Retry-After carries whole seconds.
            retry_after_s=max(1, math.ceil(cfg.retry_after)),
        )
        analyzer = self.analyzer
        api_sock = _bind(cfg.api, "the API")
        try:
            http_sock = _bind(cfg.otlp_http, "OTLP/HTTP") if cfg.otlp_http != OFF else None
        except ServeError:
            api_sock.close()
            raise
        self._consumer = asyncio.create_task(analyzer.run(), name="watchman-analyzer")
        grpc_address: str | None = None
        try:
            if cfg.otlp_grpc != OFF:
                from watchman_collector.receive_grpc import start_grpc_server

                try:
                    self._grpc, port = await start_grpc_server(
                        cfg.otlp_grpc, analyzer.offer, analyzer.receiver_stats, limits
                    )
                except (RuntimeError, OSError) as exc:
                    raise ServeError(
                        f"cannot listen for OTLP/gRPC on {cfg.otlp_grpc}: {exc}"
                    ) from exc
                host, _ = parse_address(cfg.otlp_grpc)
                grpc_address = format_address(host, port)
            self._api = self._launch(make_api_app(analyzer, is_ready=lambda: self.ready), api_sock)
            if http_sock is not None:
                from watchman_collector.receive_http import make_otlp_http_app

                http_app = make_otlp_http_app(analyzer.offer, analyzer.receiver_stats, limits)
                self._http = self._launch(http_app, http_sock)
            await self._wait_started()
        except BaseException:
            await self.stop(grace_s=0.0)
            api_sock.close()
            if http_sock is not None:
                http_sock.close()
            raise
        self.addresses = BoundAddresses(
            otlp_grpc=grpc_address,
            otlp_http=_sockname(http_sock) if http_sock is not None else None,
            api=_sockname(api_sock),
        )
        if cfg.alertmanager:
            self._alertmanager = AlertmanagerClient(
                list(cfg.alertmanager), external_url=f"http://{self.addresses.api}"
            )
            await self._alertmanager.start()
            analyzer.diagnostician.listeners.append(self._alertmanager.observe)
            log.info("pushing alerts to Alertmanager at %s", ", ".join(cfg.alertmanager))
        self._ready = True
        log.info(
            "watchman serve: OTLP/gRPC on %s, OTLP/HTTP on %s, API on %s",
            self.addresses.otlp_grpc or OFF,
            self.addresses.otlp_http or OFF,
            self.addresses.api,
        )
        return self.addresses

    def _launch(self, app: Any, sock: socket.socket) -> tuple[_Server, asyncio.Task[None]]:
        server = self._uvicorn_server(app)
        return server, asyncio.create_task(server.serve(sockets=[sock]), name="watchman-http")

    def _listeners(self) -> list[tuple[_Server, asyncio.Task[None]]]:
        return [x for x in (self._api, self._http) if x is not None]

    async def _wait_started(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STARTUP_TIMEOUT_S
        while not all(s.started for s, _ in self._listeners()) or not self.analyzer.running:
            for _, task in self._listeners():
                if task.done():
                    raise ServeError(
                        f"an HTTP listener stopped during startup: {task.exception()!r}"
                    )
            if loop.time() > deadline:
                raise ServeError(f"listeners not started within {STARTUP_TIMEOUT_S:g}s")
            await asyncio.sleep(0.01)

    async def stop(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """Stop intake, process what is queued, then stop the API; safe to call twice."""
        self._ready = False
        # Receivers first: senders get UNAVAILABLE and retry elsewhere or later.
        if self._grpc is not None:
            await self._grpc.stop(grace_s)
            self._grpc = None
        if self._http is not None:
            await _stop_uvicorn(self._http)
            self._http = None
        if self._consumer is not None:
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer
            self._consumer = None
            flushed = self.analyzer.flush()
            if flushed:
                log.info("processed %d queued export requests before exit", flushed)
        if self._alertmanager is not None:
            await self._alertmanager.stop()
            self._alertmanager = None
        if self._api is not None:
            await _stop_uvicorn(self._api)
            self._api = None

    async def serve(self, stop: asyncio.Event | None = None) -> None:
        """Start, run until `stop` is set or SIGINT/SIGTERM arrives, then stop gracefully."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
        try:
            await self.start()
            await stop.wait()
            log.info("watchman serve: stopping")
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self.stop()
        log.info("watchman serve: stopped")


async def _stop_uvicorn(listener: tuple[_Server, asyncio.Task[None]]) -> None:
    server, task = listener
    server.should_exit = True
    with contextlib.suppress(asyncio.CancelledError, SystemExit):
        await task


GC_THRESHOLD = (50_000, 20, 100)
"""The garbage collector's thresholds `watchman serve` runs with (`gc.set_threshold`)."""

MALLOC_ARENAS = 2
"""glibc malloc arenas `watchman serve` allows unless `MALLOC_ARENA_MAX` is set."""

_M_ARENA_MAX = -8  # glibc's malloc.h


def _cap_malloc_arenas() -> None:
    # glibc gives each thread that allocates under contention an arena of its own, up to eight
    # per core, and each keeps the memory it freed: the gRPC server's threads held ≈ 3 MiB of
    # RSS this way at a steady 10k spans/s (docs/performance.md). Python's own allocations are
    # made under the GIL, so few arenas cost no throughput. Set before the servers start their
    # threads; the user's `MALLOC_ARENA_MAX` wins, and other C libraries are left alone.
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no mallopt in this C library
        return
    mallopt(_M_ARENA_MAX, MALLOC_ARENAS)


def serve(config: AnalyzerConfig) -> int:
    """Run `watchman serve` until a signal; the process exit code (0 clean, 1 startup failure)."""
    server = AnalyzerServer(config)
    # The analyzer keeps many long-lived small objects (pending span halves, buckets): a higher
    # first-generation threshold and freezing what start-up made cut the collector's share of
    # the hot path (measured ≈ 8 % end to end, docs/performance.md).
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    _cap_malloc_arenas()
    try:
        asyncio.run(server.serve())
    except ServeError as exc:
        log.error("%s", exc)  # the message is the whole story, no traceback
        return 1
    return 0
