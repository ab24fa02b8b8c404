"""The baseline for `serve_load`: an OTLP/gRPC and OTLP/HTTP server that only parses, run alone.

It has the same shape as `watchman serve` (one `grpc.aio` server and one uvicorn server on one
event loop, in its own process) but each trace export is only parsed with
`ExportTraceServiceRequest.FromString` and its spans counted; `GET /count` on the HTTP port
answers `{"spans": N, "requests": N}`. Started as
`python -m benchmarks._bare_server GRPC_PORT HTTP_PORT`; it prints `ready` once both listen.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["main"]

_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


class _Counts:
    def __init__(self) -> None:
        self.spans = 0
        self.requests = 0

    def parse(self, data: bytes) -> bytes:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        request = ExportTraceServiceRequest.FromString(data)
        self.spans += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        self.requests += 1
        return b""  # an empty ExportTraceServiceResponse


Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def _http_app(counts: _Counts) -> Callable[[Any, Receive, Send], Awaitable[None]]:
    async def app(scope: Any, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] == "GET":
            body = json.dumps({"spans": counts.spans, "requests": counts.requests}).encode()
            content_type = b"application/json"
        else:
            parts = []
            while True:
                message = await receive()
                parts.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            body = counts.parse(b"".join(parts))
            content_type = b"application/x-protobuf"
        headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


async def _serve(grpc_port: int, http_port: int) -> None:
    import grpc
    import uvicorn

    counts = _Counts()

    async def export(data: bytes, context: Any) -> bytes:
        return counts.parse(data)

    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 * 2**20)])
    handler = grpc.unary_unary_rpc_method_handler(export)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(_SERVICE, {"Export": handler})]
    )
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()
    config = uvicorn.Config(
        _http_app(counts),
        host="127.0.0.1",
        port=http_port,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    http = uvicorn.Server(config)
    task = asyncio.create_task(http.serve())
    while not http.started:
        await asyncio.sleep(0.01)
    print("ready", flush=True)
    await task  # uvicorn stops on SIGTERM / SIGINT
    await server.stop(0)


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT."""
    args = sys.argv[1:] if argv is None else argv
    asyncio.run(_serve(int(args[0]), int(args[1])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
