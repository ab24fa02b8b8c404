"""The shop's front door: routes /api/* to orders, products and customers (Starlette, httpx)."""

from __future__ import annotations

import sys
from collections.abc import Awaitable

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .common import Downstream, downstream_failed, run

__all__ = ["app", "main"]

downstream = Downstream({})


async def _relay(callee: str, call: Awaitable[httpx.Response]) -> JSONResponse:
    response = await call
    if downstream_failed(response):
        return JSONResponse({"error": f"{callee} failed"}, status_code=502)
    return JSONResponse(response.json(), status_code=response.status_code)


async def product(request: Request) -> JSONResponse:
    sku = request.path_params["sku"]
    return await _relay("products", downstream.get("products", f"/products/{sku}"))


async def customer(request: Request) -> JSONResponse:
    cid = request.path_params["cid"]
    return await _relay("customers", downstream.get("customers", f"/customers/{cid}"))


async def order(request: Request) -> JSONResponse:
    payload = await request.json()
    return await _relay("orders", downstream.post("orders", "/orders", payload))


async def index(request: Request) -> JSONResponse:
    return JSONResponse({"service": "gateway", "try": ["/api/products/sku-1", "/api/orders"]})


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[
        Route("/", index),
        Route("/api/products/{sku}", product),
        Route("/api/customers/{cid}", customer),
        Route("/api/orders", order, methods=["POST"]),
        Route("/healthz", healthz),
    ]
)


def main() -> None:
    run("gateway", app, downstream, sys.argv[1:])


if __name__ == "__main__":
    main()
