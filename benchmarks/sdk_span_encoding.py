"""Span encoding in the SDK's export thread: our encoder against the official `encode_spans`.

The spans are those `watchman_otel.init()` makes of real outbound `requests` calls to a local
HTTP server (light spans with the stable HTTP client attributes; each call's URL differs), with
init()'s resource. Each round encodes the same spans into an ``ExportTraceServiceRequest`` and
serializes it, as the OTLP/HTTP exporter does: in batches of 512 (the batch processor's default
batch size) and of one span (a quiet service, whose batches are small), the official encoder and
`watchman_otel._span_encoder` interleaved. The figures are the medians of the rounds, in
microseconds of wall time per span. The encoding runs in the batch processor's thread, but it
holds the interpreter lock and counts in the host's CPU, so it adds to figure 7's costs.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from benchmarks import Figure, benchmark

__all__ = ["sdk_span_encoding"]

_BATCH = 512


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _spans(count: int) -> list[Any]:
    """`count` finished client spans of real `requests` calls, as init() makes them."""
    import requests

    from watchman_otel.testing import capture_telemetry

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with capture_telemetry(service_name="bench-encoding") as capture, requests.Session() as s:
            for i in range(count):
                s.get(f"http://127.0.0.1:{server.server_port}/orders/{i}?page=1", timeout=5)
            return capture.spans()
    finally:
        server.shutdown()
        server.server_close()


def _per_span_us(encode: Callable[[Sequence[Any]], Any], spans: list[Any], size: int) -> float:
    began = time.perf_counter()
    for i in range(0, len(spans), size):
        encode(spans[i : i + size]).SerializePartialToString()
    return (time.perf_counter() - began) / len(spans) * 1e6


@benchmark("sdk_span_encoding")
def sdk_span_encoding(quick: bool) -> list[Figure]:
    """µs per span encoded, ours against the official encoder, in batches of 512 and of one."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as official

    from watchman_otel._span_encoder import encode_request, encode_spans

    spans = _spans(_BATCH)
    assert encode_request(spans) is not None, "the spans were left to the official encoder"
    assert encode_spans(spans) == official(spans)
    rounds = 3 if quick else 25
    samples: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):
        for size in (_BATCH, 1):
            for name, encode in (("official", official), ("ours", encode_spans)):
                samples.setdefault((name, size), []).append(_per_span_us(encode, spans, size))
    median = {key: statistics.median(values) for key, values in samples.items()}
    return [
        Figure(
            f"span encoding, batches of {size}, watchman_otel",
            median["ours", size],
            "µs",
            baseline=median["official", size],
            baseline_name="official encode_spans",
        )
        for size in (_BATCH, 1)
    ]
