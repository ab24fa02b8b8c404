"""The catalogue: product details and stock, read from the store (FastAPI).

``/products/{sku}`` calls the store with httpx from an async handler; ``/products/{sku}/stock``
calls it with requests from a sync handler (run in a thread pool): both carry the trace.
"""

from __future__ import annotations

import sys

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from .common import Downstream, downstream_failed, run

__all__ = ["app", "main"]

downstream = Downstream({})
app = FastAPI(title="products")


@app.get("/products/{sku}")
async def get_product(sku: str) -> JSONResponse:
    response = await downstream.get("store", f"/products/{sku}")
    if downstream_failed(response):
        return JSONResponse({"error": "store failed"}, status_code=502)
    return JSONResponse(response.json(), status_code=response.status_code)


@app.get("/products/{sku}/stock")
def get_stock(sku: str) -> JSONResponse:
    response = downstream.get_sync("store", f"/stock/{sku}")
    if downstream_failed(response):
        return JSONResponse({"error": "store failed"}, status_code=502)
    return JSONResponse(response.json(), status_code=response.status_code)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    run("products", app, downstream, sys.argv[1:])


if __name__ == "__main__":
    main()
