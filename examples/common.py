"""What every example service shares: command line, downstream clients, the fault switch, serving.

A service module builds a Starlette/FastAPI ``app`` at import time and calls ``run(name, app)``;
``watchman_otel.init()`` is the only instrumentation line, called before the server starts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import httpx
import requests

__all__ = [
    "CALLS",
    "DEFAULT_PORTS",
    "Downstream",
    "Fault",
    "FaultInjector",
    "downstream_failed",
    "downstream_urls",
    "parse_fault",
    "run",
]

# Where each service listens when nothing says otherwise; the demo passes ports explicitly.
DEFAULT_PORTS: dict[str, int] = {
    "gateway": 8000,
    "orders": 8001,
    "products": 8002,
    "customers": 8003,
    "payments": 8004,
    "store": 8005,
}
# Who calls whom (the default downstream URLs are derived from DEFAULT_PORTS).
CALLS: dict[str, tuple[str, ...]] = {
    "gateway": ("orders", "products", "customers"),
    "orders": ("customers", "products", "payments", "store"),
    "products": ("store",),
    "customers": ("store",),
    "payments": (),
    "store": (),
}
_TIMEOUT = 2.0  # seconds per downstream call; a slow callee turns into a 502 upstream


@dataclass(frozen=True)
class Fault:
    """What the fault switch currently injects into every request but /healthz and /fault."""

    error_rate: float = 0.0  # share of requests answered with `status`
    status: int = 500
    latency_ms: float = 0.0  # added before the handler runs
    exit: bool = False  # the process exits right after answering the switch

    def active(self) -> bool:
        return self.error_rate > 0 or self.latency_ms > 0


def parse_fault(text: str | Mapping[str, Any] | None) -> Fault:
    """``error_rate=0.5,latency_ms=200,status=503`` (the FAULT variable) or a JSON object."""
    if not text:
        return Fault()
    if isinstance(text, str):
        if text.lstrip().startswith("{"):
            values: Mapping[str, Any] = json.loads(text)
        else:
            values = dict(item.split("=", 1) for item in text.split(",") if "=" in item)
    else:
        values = text
    fault = Fault()
    for key, value in values.items():
        if key == "error_rate":
            fault = replace(fault, error_rate=min(1.0, max(0.0, float(value))))
        elif key == "status":
            fault = replace(fault, status=int(value))
        elif key == "latency_ms":
            fault = replace(fault, latency_ms=max(0.0, float(value)))
        elif key == "exit":
            fault = replace(fault, exit=str(value).lower() in ("1", "true", "yes"))
        else:
            raise ValueError(f"unknown fault setting {key!r}")
    return fault


class FaultInjector:
    """ASGI middleware: the fault switch, set by FAULT at start or at runtime on ``/fault``.

    ``GET /fault`` shows it, ``POST /fault`` (JSON, same keys as FAULT) sets it, ``DELETE /fault``
    clears it; ``{"exit": true}`` makes the process exit (code 3) just after answering.
    It sits inside the instrumentation, so injected errors and latency are seen as the service's.
    """

    def __init__(self, app: Any, fault: Fault | None = None) -> None:
        self.app = app
        self.fault = fault or Fault()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == "/fault":
            await self._switch(scope, receive, send)
            return
        fault = self.fault
        if path != "/healthz" and fault.active():
            if fault.latency_ms:
                await asyncio.sleep(fault.latency_ms / 1000)
            if fault.error_rate and random.random() < fault.error_rate:
                await _send_json(send, fault.status, {"error": "injected fault"})
                return
        await self.app(scope, receive, send)

    async def _switch(self, scope: Any, receive: Any, send: Any) -> None:
        method = scope["method"]
        if method == "POST":
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            try:
                self.fault = parse_fault(body.decode() or "{}")
            except (ValueError, TypeError) as exc:
                await _send_json(send, 400, {"error": str(exc)})
                return
        elif method == "DELETE":
            self.fault = Fault()
        await _send_json(send, 200, asdict(self.fault))
        if self.fault.exit:
            # Answer first, then die the way a crashed process does (no cleanup, no flush).
            asyncio.get_running_loop().call_later(0.05, os._exit, 3)


async def _send_json(send: Any, status: int, payload: Any) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Downstream:
    """Base URLs of the services this one calls, with an httpx (async) and a requests (sync) client.

    Both libraries are instrumented by ``init()``; the examples use both on purpose.
    """

    def __init__(self, urls: Mapping[str, str]) -> None:
        self.urls = dict(urls)
        self._async: httpx.AsyncClient | None = None
        self._session = requests.Session()

    def url(self, service: str, path: str) -> str:
        return self.urls[service].rstrip("/") + path

    async def get(self, service: str, path: str) -> httpx.Response:
        try:
            return await self._client().get(self.url(service, path))
        except httpx.HTTPError as exc:
            return _unreachable_async(exc)

    async def post(self, service: str, path: str, payload: Any) -> httpx.Response:
        try:
            return await self._client().post(self.url(service, path), json=payload)
        except httpx.HTTPError as exc:
            return _unreachable_async(exc)

    def get_sync(self, service: str, path: str) -> requests.Response:
        try:
            return self._session.get(self.url(service, path), timeout=_TIMEOUT)
        except requests.RequestException as exc:
            return _unreachable_sync(exc)

    def post_sync(self, service: str, path: str, payload: Any) -> requests.Response:
        try:
            return self._session.post(self.url(service, path), json=payload, timeout=_TIMEOUT)
        except requests.RequestException as exc:
            return _unreachable_sync(exc)

    def _client(self) -> httpx.AsyncClient:
        # Created lazily: an AsyncClient belongs to the event loop that first uses it.
        if self._async is None:
            self._async = httpx.AsyncClient(timeout=_TIMEOUT)
        return self._async


# A callee that times out or refuses the connection is treated like one answering 504, so the
# caller's handler has one failure path (and the CLIENT span already recorded the error).
def _unreachable_async(exc: Exception) -> httpx.Response:
    return httpx.Response(504, json={"error": f"unreachable: {type(exc).__name__}"})


def _unreachable_sync(exc: Exception) -> requests.Response:
    response = requests.Response()
    response.status_code = 504
    response._content = json.dumps({"error": f"unreachable: {type(exc).__name__}"}).encode()
    return response


def downstream_failed(response: httpx.Response | requests.Response) -> bool:
    """Whether a callee's answer means this request fails too (5xx: we answer 502)."""
    return response.status_code >= 500


def _arguments(service: str, argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m examples.{service}")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("PORT", DEFAULT_PORTS[service]))
    )
    parser.add_argument(
        "--downstream",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="a callee's base URL (else the NAME_URL variable, else 127.0.0.1:default port)",
    )
    parser.add_argument("--fault", default=os.environ.get("FAULT", ""), help="e.g. error_rate=0.5")
    return parser.parse_args(argv)


def downstream_urls(service: str, given: Sequence[str] = ()) -> dict[str, str]:
    """Callee URLs: ``--downstream name=URL`` beats ``NAME_URL`` beats the default port."""
    urls = {
        callee: os.environ.get(f"{callee.upper()}_URL", f"http://127.0.0.1:{DEFAULT_PORTS[callee]}")
        for callee in CALLS[service]
    }
    for item in given:
        name, _, url = item.partition("=")
        urls[name] = url
    return urls


def run(service: str, app: Any, downstream: Downstream, argv: Sequence[str] | None = None) -> None:
    """Parse the command line, start watchman_otel, serve ``app`` with uvicorn until stopped."""
    import uvicorn

    import watchman_otel

    args = _arguments(service, argv)
    downstream.urls.update(downstream_urls(service, args.downstream))
    try:
        fault = parse_fault(args.fault)
    except ValueError as exc:
        sys.exit(f"{service}: bad --fault/FAULT: {exc}")
    # A user middleware, so it runs inside the instrumentation: injected errors and latency are
    # the service's own, as the analyzer should see them.
    app.add_middleware(FaultInjector, fault=fault)
    watchman_otel.init(service_name=service)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
