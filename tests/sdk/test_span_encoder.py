"""Our span exporters' encoding: byte for byte the official encoder's request on the same spans."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import requests
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as official
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

import watchman_otel
from tests.sdk.otlp_receiver import OTLPReceiver
from watchman_otel import _span_encoder
from watchman_otel._light_span import LightSpan
from watchman_otel._span_encoder import FastSpanEncoding, encode_request, encode_spans
from watchman_otel.testing import capture_telemetry

_RESOURCE = Resource.create({"service.name": "checkout", "service.instance.id": "i-1"})
_SCOPE = InstrumentationScope("watchman_otel", "0.1.0")
_T0 = 1_767_225_600_000_000_000


def _context(span_id: int, *, remote: bool = False, state: TraceState | None = None) -> SpanContext:
    return SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=span_id,
        is_remote=remote,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=state,
    )


def _span(**fields: Any) -> ReadableSpan:
    """A finished span as the SDK hands it to exporters, with `fields` over plain defaults."""
    values: dict[str, Any] = {
        "name": "GET /cart",
        "context": _context(0x00F067AA0BA902B7),
        "parent": None,
        "resource": _RESOURCE,
        "attributes": {"http.request.method": "GET", "http.response.status_code": 200},
        "kind": SpanKind.SERVER,
        "status": Status(StatusCode.UNSET),
        "start_time": _T0,
        "end_time": _T0 + 1_500_000,
        "instrumentation_scope": _SCOPE,
    }
    values.update(fields)
    return ReadableSpan(**values)


def _assert_official(batch: Sequence[ReadableSpan]) -> None:
    """Our encoding took the batch and wrote the official encoder's bytes."""
    data = encode_request(batch)
    assert data is not None, "left to the official encoder"
    assert data == official(batch).SerializeToString()
    assert encode_spans(batch) == official(batch)


_PLAIN_SPANS: dict[str, Callable[[], list[ReadableSpan]]] = {
    "server span": lambda: [_span()],
    "every kind": lambda: [_span(kind=kind) for kind in SpanKind],
    "local parent": lambda: [_span(parent=_context(7))],
    "remote parent": lambda: [_span(parent=_context(7, remote=True))],
    "trace state": lambda: [_span(context=_context(9, state=TraceState([("a", "1"), ("b", "x")])))],
    "empty trace state": lambda: [_span(context=_context(9, state=TraceState()))],
    "error with description": lambda: [_span(status=Status(StatusCode.ERROR, "boom"))],
    "error": lambda: [_span(status=Status(StatusCode.ERROR))],
    "ok": lambda: [_span(status=Status(StatusCode.OK))],
    "no attributes": lambda: [_span(attributes={})],
    "empty name": lambda: [_span(name="")],
    "unicode": lambda: [_span(name="GET /größe/✓", attributes={"ключ": "значение ✓"})],
    "value types": lambda: [
        _span(
            attributes={
                "s": "text",
                "empty": "",
                "t": True,
                "f": False,
                "zero": 0,
                "n": -1,
                "big": 2**63 - 1,
                "small": -(2**63),
                "x": 0.25,
                "negative zero": -0.0,
                "inf": math.inf,
                "nan": math.nan,
                "long": "v" * 300,
            }
        )
    ],
    "same key, values of three types": lambda: [
        _span(attributes={"k": True}),
        _span(attributes={"k": 1}),
        _span(attributes={"k": 1.0}),
        _span(attributes={"k": "1"}),
    ],
    "no start or end": lambda: [_span(start_time=None, end_time=None)],
    "no scope": lambda: [_span(instrumentation_scope=None)],
    "scope with schema, attributes": lambda: [
        _span(
            instrumentation_scope=InstrumentationScope(
                "lib", None, "https://opentelemetry.io/schemas/1.24.0", {"a": 1}
            )
        )
    ],
    "resource with schema": lambda: [
        _span(resource=Resource({"service.name": "a"}, "https://opentelemetry.io/schemas/1.21.0"))
    ],
    "empty resource": lambda: [_span(resource=Resource({}))],
    # Equal objects group together, as the official encoder's dictionaries file them; 1 and
    # True are equal, but a Resource's hash (its JSON) tells them apart.
    "resources: equal, distinct, interleaved": lambda: [
        _span(resource=Resource({"service.name": "a"})),
        _span(resource=Resource({"service.name": "b"})),
        _span(resource=Resource({"service.name": "a"})),
        _span(resource=Resource({"service.name": "a", "n": 1})),
        _span(resource=Resource({"service.name": "a", "n": True})),
        _span(resource=Resource({"service.name": "a", "n": 1})),
    ],
    "scopes: equal, distinct, interleaved, none": lambda: [
        _span(instrumentation_scope=InstrumentationScope("x", "1")),
        _span(instrumentation_scope=None),
        _span(instrumentation_scope=InstrumentationScope("y")),
        _span(instrumentation_scope=InstrumentationScope("x", "1")),
        _span(instrumentation_scope=None),
    ],
}


@pytest.mark.parametrize("case", sorted(_PLAIN_SPANS))
def test_plain_spans_are_encoded_as_the_official_encoder_does(case: str) -> None:
    _assert_official(_PLAIN_SPANS[case]())


def test_attributes_the_sdk_dropped_are_counted_as_the_official_encoder_counts_them() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=_RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("s") as span:
        span.set_attributes({f"k{i}": i for i in range(200)})  # the limit is 128
    (finished,) = exporter.get_finished_spans()
    assert finished.dropped_attributes == 72
    _assert_official([finished])


def _random_value(rng: random.Random) -> Any:
    return rng.choice(
        [
            lambda: rng.choice(["", "GET", "ü✓", "x" * rng.randrange(200)]),
            lambda: rng.random() < 0.5,
            lambda: rng.randrange(-(2**63), 2**63),
            lambda: rng.randrange(-300, 300),
            lambda: rng.choice([0.0, -0.0, 1e-300, -2.5, math.inf, math.nan, rng.random()]),
        ]
    )()


def test_random_batches_are_encoded_as_the_official_encoder_does() -> None:
    """Batches of random plain spans: resources and scopes shared, equal or apart; every field."""
    rng = random.Random(7)
    resources = [Resource({"service.name": f"s{i % 3}", "n": i % 2}) for i in range(5)]
    scopes: list[InstrumentationScope | None] = [
        None,
        InstrumentationScope("a"),
        InstrumentationScope("a"),
        InstrumentationScope("b", "2", "https://x/schema", {"k": "v"}),
    ]
    for _ in range(200):
        batch = []
        for _ in range(rng.randrange(1, 30)):
            remote = rng.random() < 0.5
            parent = rng.choice([None, _context(rng.randrange(1, 2**64), remote=remote)])
            state = rng.choice([None, TraceState([("v", str(rng.randrange(9)))])])
            status = rng.choice(
                [Status(StatusCode.UNSET), Status(StatusCode.OK), Status(StatusCode.ERROR, "e")]
            )
            batch.append(
                _span(
                    name=rng.choice(["", "GET", "POST /orders/{id}"]),
                    context=_context(rng.randrange(1, 2**64), state=state),
                    parent=parent,
                    kind=rng.choice(list(SpanKind)),
                    status=status,
                    resource=rng.choice(resources),
                    instrumentation_scope=rng.choice(scopes),
                    start_time=rng.randrange(2**63),
                    end_time=rng.randrange(2**63),
                    attributes={
                        rng.choice(["k", "", "http.route", f"a{i}"]): _random_value(rng)
                        for i in range(rng.randrange(8))
                    },
                )
            )
        _assert_official(batch)


_LEFT_TO_THE_OFFICIAL: dict[str, Callable[[], ReadableSpan]] = {
    "an event": lambda: _span(events=[Event("exception", {"exception.type": "E"}, _T0)]),
    "a link": lambda: _span(links=[Link(_context(3), {"k": "v"})]),
    "a sequence value": lambda: _span(attributes={"k": ("a", "b")}),
    "a bytes value": lambda: _span(attributes={"k": b"\x00"}),
    "an int past 64 bits": lambda: _span(attributes={"k": 2**63}),
    "a str subclass": lambda: _span(attributes={"k": type("Text", (str,), {})("v")}),
    "text that is not UTF-8": lambda: _span(name="\ud800"),
}


@pytest.mark.parametrize("case", sorted(_LEFT_TO_THE_OFFICIAL))
def test_a_batch_holding_anything_else_is_left_to_the_official_encoder(case: str) -> None:
    batch = [_span(), _LEFT_TO_THE_OFFICIAL[case]()]
    assert encode_request(batch) is None
    try:
        expected = official(batch)
    except Exception as error:  # the official encoder's own failure stays its own
        with pytest.raises(type(error)):
            encode_spans(batch)
    else:
        assert encode_spans(batch) == expected


def test_our_instrumentations_light_spans_are_encoded_as_the_official_encoder_does(
    clean_env: pytest.MonkeyPatch,
) -> None:
    """Light spans of real outbound calls, and one read through the SDK's span it became."""
    with OTLPReceiver() as target, capture_telemetry(service_name="svc") as capture:
        with requests.Session() as session:
            session.post(target.http_endpoint + "/v1/traces", data=b"")
            session.get(target.http_endpoint + "/nowhere?q=1")
        spans = capture.spans()
    assert len(spans) == 2
    assert all(type(span) is LightSpan for span in spans)
    _assert_official(spans)
    light = spans[0]
    assert isinstance(light, LightSpan)
    light.record_exception(ValueError("late"))  # ended: the SDK's span it becomes ignores it
    assert light._sdk is not None
    _assert_official(spans)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the batches our encoding took (the spans in each)."""
    taken: list[int] = []
    encode = _span_encoder.encode_request

    def counting(spans: Sequence[ReadableSpan]) -> bytes | None:
        data = encode(spans)
        if data is not None:
            taken.append(len(spans))
        return data

    monkeypatch.setattr(_span_encoder, "encode_request", counting)
    return taken


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_the_official_exporters_send_our_encoding_and_users_exporters_keep_theirs(
    protocol: str, receiver: OTLPReceiver, spy: list[int]
) -> None:
    """Through the official exporter, wrapped, the receiver gets the official request; the
    same exporter class unwrapped (a user's own) is not changed."""

    def exporter() -> Any:
        if protocol == "grpc":
            return GrpcSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True, timeout=5)
        return HttpSpanExporter(endpoint=receiver.http_endpoint + "/v1/traces", timeout=5)

    batch = _PLAIN_SPANS["resources: equal, distinct, interleaved"]()
    ours = FastSpanEncoding(exporter())
    assert ours.installed
    assert ours.export(batch).name == "SUCCESS"
    assert spy == [len(batch)]
    users = exporter()
    assert users.export(batch).name == "SUCCESS"
    assert spy == [len(batch)]  # not through our encoding
    ours.shutdown()
    users.shutdown()
    received = receiver.requests("traces")
    assert len(received) == 2
    assert received[0] == received[1] == official(batch)


def test_init_exports_spans_through_our_encoding(
    clean_env: pytest.MonkeyPatch, receiver: OTLPReceiver, spy: list[int]
) -> None:
    watchman_otel.init(service_name="svc", endpoint=receiver.http_endpoint)
    try:
        requests.get(receiver.http_endpoint + "/ping", timeout=5)
    finally:
        watchman_otel.shutdown()
    assert spy, "init()'s span exporter did not use our encoding"
    ((_, span),) = receiver.spans()
    assert span.name == "GET"
