"""Customer profiles, read from the store (Starlette, httpx)."""

from __future__ import annotations

import sys

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .common import Downstream, downstream_failed, run

__all__ = ["app", "main"]

downstream = Downstream({})


async def customer(request: Request) -> JSONResponse:
    response = await downstream.get("store", f"/customers/{request.path_params['cid']}")
    if downstream_failed(response):
        return JSONResponse({"error": "store failed"}, status_code=502)
    return JSONResponse(response.json(), status_code=response.status_code)


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/customers/{cid}", customer), Route("/healthz", healthz)])


def main() -> None:
    run("customers", app, downstream, sys.argv[1:])


if __name__ == "__main__":
    main()
