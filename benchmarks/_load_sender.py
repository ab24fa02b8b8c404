"""A paced OTLP sender for `serve_load`, run as a subprocess: exact request rates, fresh spans.

The parent writes a few pre-encoded 1000-span requests (the templates) to a file and starts one
or more senders. Each sender reads steps as JSON lines on stdin and answers each with one JSON
line on stdout. A step is a global sequence of requests `first_seq .. first_seq + count`, request
`k` due at `start + k / rate`; sender `index` of `senders` takes every `senders`-th request.

Request `seq` is template `seq % templates` with every trace id tagged with the pass number
`seq // templates` (so the analyzer never sees a duplicate span, however long the run) and every
start/end time moved so its latest is the time it is due (so event time follows wall time as
live traffic does). The variants are built before the step starts; the timed part only sends. A
refused request (UNAVAILABLE, HTTP 503) is counted, never retried: the step is then not sustained.
"""

from __future__ import annotations

import asyncio
import json
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "EXPORT_METHOD",
    "Template",
    "load_templates",
    "main",
    "variant",
    "write_templates",
]

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
_PROTOBUF = "application/x-protobuf"
_LEN, _FIXED64, _VARINT, _FIXED32 = 2, 1, 0, 5


@dataclass(frozen=True, slots=True)
class Template:
    """One encoded request, with where its trace ids and span times sit in the bytes."""

    payload: bytes
    trace_id_offsets: tuple[int, ...]  # span and link trace ids, 16 bytes each
    time_offsets: tuple[int, ...]  # span start and end times, little-endian fixed64
    last_time_ns: int  # the latest start or end time in the request
    spans: int


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value start, value end) of each field in `buf[pos:end]`."""
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _LEN:
            length, pos = _varint(buf, pos)
            yield number, wire, pos, pos + length
            pos += length
        elif wire == _FIXED64:
            yield number, wire, pos, pos + 8
            pos += 8
        elif wire == _VARINT:
            _, after = _varint(buf, pos)
            yield number, wire, pos, after
            pos = after
        elif wire == _FIXED32:
            yield number, wire, pos, pos + 4
            pos += 4
        else:
            raise ValueError(f"unexpected wire type {wire}")


def _template(payload: bytes) -> Template:
    # ExportTraceServiceRequest.resource_spans(1) → ResourceSpans.scope_spans(2) →
    # ScopeSpans.spans(2) → Span: trace_id(1), start(7), end(8), links(13) → Link.trace_id(1).
    trace_ids: list[int] = []
    times: list[int] = []
    spans = 0
    for n1, _, s1, e1 in _fields(payload, 0, len(payload)):
        if n1 != 1:
            continue
        for n2, _, s2, e2 in _fields(payload, s1, e1):
            if n2 != 2:
                continue
            for n3, _, s3, e3 in _fields(payload, s2, e2):
                if n3 != 2:
                    continue
                spans += 1
                for n4, wire, s4, e4 in _fields(payload, s3, e3):
                    if n4 == 1 and e4 - s4 == 16:
                        trace_ids.append(s4)
                    elif n4 in (7, 8) and wire == _FIXED64:
                        times.append(s4)
                    elif n4 == 13:
                        for n5, _, s5, e5 in _fields(payload, s4, e4):
                            if n5 == 1 and e5 - s5 == 16:
                                trace_ids.append(s5)
    last = max(struct.unpack_from("<Q", payload, off)[0] for off in times) if times else 0
    return Template(payload, tuple(trace_ids), tuple(times), last, spans)


def write_templates(payloads: list[bytes], path: Path) -> None:
    """Store encoded requests length-prefixed in `path` (read back with `load_templates`)."""
    with path.open("wb") as out:
        for payload in payloads:
            out.write(struct.pack(">I", len(payload)))
            out.write(payload)


def load_templates(path: Path) -> list[Template]:
    """The requests `write_templates` stored, each with its trace id and time offsets."""
    data = path.read_bytes()
    out: list[Template] = []
    offset = 0
    while offset < len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        offset += 4
        out.append(_template(data[offset : offset + length]))
        offset += length
    return out


def variant(templates: list[Template], seq: int, due_ns: int) -> bytes:
    """Request `seq`: its template with trace ids tagged by pass and times moved to `due_ns`."""
    template = templates[seq % len(templates)]
    buf = bytearray(template.payload)
    tag = struct.pack(">I", seq // len(templates) + 1)
    for off in template.trace_id_offsets:
        buf[off : off + 4] = tag
    # The request's latest time becomes the time it is due: an exporter sends what has ended.
    delta = due_ns - template.last_time_ns
    unpack, pack = struct.unpack_from, struct.pack_into
    for off in template.time_offsets:
        pack("<Q", buf, off, unpack("<Q", buf, off)[0] + delta)
    return bytes(buf)


@dataclass(slots=True)
class _Outcome:
    ok: int = 0
    refused: int = 0
    errors: int = 0
    rejected_spans: int = 0
    last_response: float = 0.0
    error: str = ""
    latencies: list[float] = field(default_factory=list)


def _rejected_spans(body: bytes) -> int:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    if not body:
        return 0
    return int(ExportTraceServiceResponse.FromString(body).partial_success.rejected_spans)


class _Sender:
    """Holds one channel / HTTP session per target and sends the steps it is given."""

    def __init__(self, templates: list[Template]) -> None:
        self.templates = templates
        self._grpc: dict[int, Any] = {}
        self._http: Any = None

    async def close(self) -> None:
        for channel, _ in self._grpc.values():
            await channel.close()
        if self._http is not None:
            await self._http.close()

    def _grpc_export(self, port: int) -> Any:
        if port not in self._grpc:
            import grpc.aio

            channel = grpc.aio.insecure_channel(
                f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 * 2**20)]
            )
            self._grpc[port] = (channel, channel.unary_unary(EXPORT_METHOD))
        return self._grpc[port][1]

    def _session(self) -> Any:
        if self._http is None:
            import aiohttp

            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, force_close=False)
            )
        return self._http

    async def _one(self, proto: str, port: int, payload: bytes, outcome: _Outcome) -> None:
        sent = time.time()
        try:
            if proto == "grpc":
                import grpc

                try:
                    body = await self._grpc_export(port)(payload, timeout=30)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.UNAVAILABLE:
                        outcome.refused += 1
                    else:
                        outcome.errors += 1
                        outcome.error = f"{exc.code().name}: {exc.details()}"
                    return
            else:
                async with self._session().post(
                    f"http://127.0.0.1:{port}/v1/traces",
                    data=payload,
                    headers={"content-type": _PROTOBUF},
                ) as response:
                    body = await response.read()
                    if response.status == 503:
                        outcome.refused += 1
                        return
                    if response.status != 200:
                        outcome.errors += 1
                        outcome.error = f"HTTP {response.status}"
                        return
            outcome.rejected_spans += _rejected_spans(body)
            outcome.ok += 1
        except Exception as exc:  # a broken connection is an error of the step, not the sender
            outcome.errors += 1
            outcome.error = repr(exc)
        finally:
            outcome.last_response = time.time()
            outcome.latencies.append(outcome.last_response - sent)

    async def step(self, command: dict[str, Any]) -> dict[str, Any]:
        """Send this sender's share of one step; returns counts and timings."""
        proto, port = str(command["proto"]), int(command["port"])
        rate, start = float(command["rate"]), float(command["start"])
        first, count = int(command["first_seq"]), int(command["count"])
        index, senders = int(command["index"]), int(command["senders"])
        mine = range(index, count, senders)
        due = [start + k / rate for k in mine]
        payloads = [
            variant(self.templates, first + k, int(t * 1e9)) for k, t in zip(mine, due, strict=True)
        ]
        if proto == "grpc":
            self._grpc_export(port)
        else:
            self._session()
        outcome = _Outcome()
        tasks: list[asyncio.Task[None]] = []
        max_lag = 0.0
        late_start = time.time() > start
        for t, payload in zip(due, payloads, strict=True):
            wait = t - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                max_lag = max(max_lag, -wait)
            tasks.append(asyncio.create_task(self._one(proto, port, payload, outcome)))
        last_send = time.time()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
        latencies = sorted(outcome.latencies) or [0.0]
        return {
            "latency_p50_s": latencies[len(latencies) // 2],
            "latency_max_s": latencies[-1],
            "sent": len(payloads),
            "spans": sum(self.templates[(first + k) % len(self.templates)].spans for k in mine),
            "ok": outcome.ok,
            "refused": outcome.refused,
            "errors": outcome.errors,
            "error": outcome.error,
            "rejected_spans": outcome.rejected_spans,
            "last_send": last_send,
            "last_response": outcome.last_response,
            "max_lag_s": max_lag,
            "late_start": late_start,
        }


async def _serve_stdin(path: Path) -> None:
    sender = _Sender(load_templates(path))
    loop = asyncio.get_running_loop()
    print(json.dumps({"ready": len(sender.templates)}), flush=True)
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line.strip():
                break  # EOF or an empty line: done
            result = await sender.step(json.loads(line))
            print(json.dumps(result), flush=True)
    finally:
        await sender.close()


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks._load_sender TEMPLATES`: answer steps read from stdin."""
    args = sys.argv[1:] if argv is None else argv
    asyncio.run(_serve_stdin(Path(args[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
