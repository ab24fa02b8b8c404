"""Card payments: a leaf service that approves or declines charges (FastAPI, no downstream)."""

from __future__ import annotations

import sys
import uuid

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from .common import Downstream, run

__all__ = ["app", "main"]

_LIMIT = 10_000.0  # charges above this are declined: a 402, a client error, not a failure

app = FastAPI(title="payments")


class Charge(BaseModel):
    customer: str
    amount: float


@app.post("/charges")
async def charge(request: Charge) -> JSONResponse:
    if request.amount > _LIMIT:
        return JSONResponse({"status": "declined"}, status_code=402)
    return JSONResponse({"status": "approved", "id": uuid.uuid4().hex}, status_code=201)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    run("payments", app, Downstream({}), sys.argv[1:])


if __name__ == "__main__":
    main()
