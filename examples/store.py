"""The shop's data store: a SQLite database behind HTTP (products, stock, customers, orders).

The other services call it; in the service graph it is the shared dependency whose failure
cascades to everyone. Starlette; the database is in memory unless ``STORE_DB`` names a file.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .common import Downstream, run

__all__ = ["app", "main"]

_SEED = """
CREATE TABLE IF NOT EXISTS products (sku TEXT PRIMARY KEY, name TEXT, price REAL);
CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, quantity INTEGER);
CREATE TABLE IF NOT EXISTS customers (id TEXT PRIMARY KEY, name TEXT, tier TEXT);
CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT, customer TEXT, sku TEXT, quantity INTEGER, amount REAL
);
INSERT OR IGNORE INTO products VALUES
    ('sku-1', 'kettle', 29.0), ('sku-2', 'teapot', 19.5), ('sku-3', 'mug', 6.0);
INSERT OR IGNORE INTO stock VALUES ('sku-1', 100000), ('sku-2', 100000), ('sku-3', 100000);
INSERT OR IGNORE INTO customers VALUES
    ('c-1', 'Ada', 'gold'), ('c-2', 'Grace', 'silver'), ('c-3', 'Linus', 'bronze');
"""


class Database:
    """One SQLite connection shared by the server's threads (queries are tiny; a lock suffices)."""

    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.executescript(_SEED)

    def one(self, sql: str, *params: object) -> dict[str, object] | None:
        with self._lock:
            row = self._db.execute(sql, params).fetchone()
        return dict(row) if row else None

    def write(self, sql: str, *params: object) -> int:
        with self._lock, self._db:
            cursor = self._db.execute(sql, params)
        return cursor.lastrowid or cursor.rowcount


db = Database(os.environ.get("STORE_DB", ":memory:"))


def _found(row: dict[str, object] | None) -> JSONResponse:
    return JSONResponse(row) if row else JSONResponse({"error": "not found"}, status_code=404)


async def product(request: Request) -> JSONResponse:
    return _found(db.one("SELECT * FROM products WHERE sku = ?", request.path_params["sku"]))


async def stock(request: Request) -> JSONResponse:
    return _found(db.one("SELECT * FROM stock WHERE sku = ?", request.path_params["sku"]))


async def reserve(request: Request) -> JSONResponse:
    quantity = int((await request.json()).get("quantity", 1))
    changed = db.write(
        "UPDATE stock SET quantity = quantity - ? WHERE sku = ? AND quantity >= ?",
        quantity,
        request.path_params["sku"],
        quantity,
    )
    if not changed:
        return JSONResponse({"error": "out of stock"}, status_code=409)
    return JSONResponse({"reserved": quantity})


async def customer(request: Request) -> JSONResponse:
    return _found(db.one("SELECT * FROM customers WHERE id = ?", request.path_params["cid"]))


async def create_order(request: Request) -> JSONResponse:
    order = await request.json()
    order_id = db.write(
        "INSERT INTO orders (customer, sku, quantity, amount) VALUES (?, ?, ?, ?)",
        order["customer"],
        order["sku"],
        int(order["quantity"]),
        float(order["amount"]),
    )
    return JSONResponse({"id": order_id, **order}, status_code=201)


async def get_order(request: Request) -> JSONResponse:
    return _found(db.one("SELECT * FROM orders WHERE id = ?", int(request.path_params["oid"])))


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[
        Route("/products/{sku}", product),
        Route("/stock/{sku}", stock),
        Route("/stock/{sku}/reserve", reserve, methods=["POST"]),
        Route("/customers/{cid}", customer),
        Route("/orders", create_order, methods=["POST"]),
        Route("/orders/{oid:int}", get_order),
        Route("/healthz", healthz),
    ]
)


def main() -> None:
    run("store", app, Downstream({}), sys.argv[1:])


if __name__ == "__main__":
    main()
