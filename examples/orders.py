"""Order placement: checks the customer and product, charges, reserves stock, records (FastAPI).

Calls customers, products and payments with httpx and the store with requests through
``loop.run_in_executor``, so the trace also crosses a thread pool.
"""

from __future__ import annotations

import asyncio
import sys

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from .common import Downstream, downstream_failed, run

__all__ = ["app", "main"]

downstream = Downstream({})
app = FastAPI(title="orders")


class OrderRequest(BaseModel):
    customer: str
    sku: str
    quantity: int = 1


def _failed(callee: str) -> JSONResponse:
    return JSONResponse({"error": f"{callee} failed"}, status_code=502)


@app.post("/orders")
async def place_order(order: OrderRequest) -> JSONResponse:
    customer, product = await asyncio.gather(
        downstream.get("customers", f"/customers/{order.customer}"),
        downstream.get("products", f"/products/{order.sku}"),
    )
    for callee, response in (("customers", customer), ("products", product)):
        if downstream_failed(response):
            return _failed(callee)
        if response.status_code != 200:
            return JSONResponse(response.json(), status_code=response.status_code)
    amount = round(float(product.json()["price"]) * order.quantity, 2)
    payment = await downstream.post(
        "payments", "/charges", {"customer": order.customer, "amount": amount}
    )
    if downstream_failed(payment):
        return _failed("payments")
    if payment.status_code >= 400:
        return JSONResponse(payment.json(), status_code=payment.status_code)
    loop = asyncio.get_running_loop()
    reserved = await loop.run_in_executor(
        None,
        downstream.post_sync,
        "store",
        f"/stock/{order.sku}/reserve",
        {"quantity": order.quantity},
    )
    if downstream_failed(reserved):
        return _failed("store")
    if reserved.status_code != 200:
        return JSONResponse(reserved.json(), status_code=reserved.status_code)
    record = {"customer": order.customer, "sku": order.sku, "quantity": order.quantity}
    created = await loop.run_in_executor(
        None, downstream.post_sync, "store", "/orders", {**record, "amount": amount}
    )
    if downstream_failed(created):
        return _failed("store")
    return JSONResponse(created.json(), status_code=201)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    run("orders", app, downstream, sys.argv[1:])


if __name__ == "__main__":
    main()
