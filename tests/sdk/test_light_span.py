"""Light spans (watchman_otel._light_span): the SDK's outcome without its live span."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

import pytest
import requests
from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.conftest import free_port
from tests.sdk import test_requests_lean
from tests.sdk.test_asgi import Telemetry, _get, _starlette
from tests.sdk.test_outbound import EchoServer, Outbound
from watchman_otel import _requests
from watchman_otel._light_span import LightSpan, LightSpans
from watchman_otel._outbound import uninstrument_outbound

# The outbound tests' fixtures: a loopback echo server, in-memory providers (uninstrumented after).
server = test_requests_lean.server
outbound = test_requests_lean.outbound


class WatchingProcessor(SimpleSpanProcessor):
    """A processor of the user's own type: it sees span starts, so spans must be the SDK's."""

    def __init__(self) -> None:
        super().__init__(InMemorySpanExporter())
        self.started: list[Any] = []

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        self.started.append(span)


def _view(span: ReadableSpan) -> dict[str, Any]:
    """What an exporter sends of a span, but for its own ids and times."""
    assert span.context is not None
    return {
        "name": span.name,
        "kind": span.kind,
        "attributes": dict(span.attributes or {}),
        "status": (span.status.status_code, span.status.description),
        "events": [
            (e.name, {k: v for k, v in (e.attributes or {}).items() if k != "exception.stacktrace"})
            for e in span.events
        ],
        "links": list(span.links),
        "parent": span.parent,
        "trace_flags": span.context.trace_flags,
        "trace_state": span.context.trace_state,
        "remote": span.context.is_remote,
        "resource": span.resource,
        "scope": span.instrumentation_scope,
        "dropped": (span.dropped_attributes, span.dropped_events, span.dropped_links),
        "timed": span.start_time is not None and span.end_time >= span.start_time,  # type: ignore[operator]
    }


def _call(url: str, parent: Context) -> None:
    token = context.attach(parent)
    try:
        requests.get(url, timeout=5)
    except requests.ConnectionError:
        pass
    finally:
        context.detach(token)


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/orders/1", {}),  # a root span: a new trace
        ("/orders/1", {"traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"}),
        (
            "/fail/500",
            {"traceparent": "00-" + "12" * 16 + "-" + "34" * 8 + "-01", "tracestate": "a=1,b=2"},
        ),
        ("refused", {}),  # the call raises: exception event, error status
    ],
)
def test_light_spans_export_what_the_sdk_span_exports(
    outbound: Outbound, server: EchoServer, path: str, headers: dict[str, str]
) -> None:
    """The same calls with only the SDK's processors (light spans) and with a user's processor
    (the SDK's span) export the same spans, parent, flags and trace state included."""
    outbound.install(["requests"])
    parent = propagate.extract(headers)
    url = f"http://127.0.0.1:{free_port()}/x" if path == "refused" else server.url + path
    state = _requests._state
    assert state is not None
    _call(url, parent)
    light = state.spans._plan
    assert light is not None  # the light path was taken
    watching = WatchingProcessor()
    outbound.tracer_provider.add_span_processor(watching)
    _call(url, parent)
    assert len(watching.started) == 1  # the SDK's span, started as the SDK starts it
    first, second = outbound.client_spans()
    assert _view(first) == _view(second)
    assert first.context is not None
    assert second.context is not None
    assert first.context.span_id != second.context.span_id
    if headers:
        assert first.parent is not None
        assert first.context.trace_id == first.parent.trace_id == second.context.trace_id
    else:
        assert first.parent is None
    if path == "refused":
        (event,) = first.events
        assert event.name == "exception"
        assert first.status.status_code is StatusCode.ERROR


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/items/7?q=1", {}),
        ("/api/users/ann", {"traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"}),
        ("/unavailable", {"traceparent": "00-" + "12" * 16 + "-" + "34" * 8 + "-00"}),
        ("/boom", {"traceparent": "00-" + "56" * 16 + "-" + "78" * 8 + "-01", "tracestate": "k=v"}),
        ("/nowhere", {}),
    ],
)
async def test_light_server_spans_export_what_the_sdk_span_exports(
    path: str, headers: dict[str, str]
) -> None:
    """The ASGI middleware's SERVER spans, light and the SDK's, for routed, failing, raising,
    unrouted and sampled-out requests: the same exported spans."""
    telemetry = Telemetry()
    app = telemetry.wrap(_starlette())
    await _get(app, path, headers=headers)
    watching = WatchingProcessor()
    telemetry.tracer_provider.add_span_processor(watching)
    await _get(app, path, headers=headers)
    spans = telemetry.server_spans()
    sampled = not headers.get("traceparent", "-01").endswith("-00")
    assert len(watching.started) == (1 if sampled else 0)  # the SDK records sampled spans only
    assert len(spans) == (2 if sampled else 0)
    if sampled:
        first, second = spans
        assert _view(first) == _view(second)
        assert first.name == second.name


def test_the_current_span_during_the_call_takes_what_the_app_sets(
    outbound: Outbound, server: EchoServer
) -> None:
    """A response hook that writes to the current span: plain values, a list (which the SDK
    checks), an event and a renaming all reach the exported span, with the injected ids."""
    outbound.install(["requests"])
    seen: list[trace.Span] = []
    read: dict[str, Any] = {}

    def hook(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        span = trace.get_current_span()
        seen.append(span)
        span.set_attribute("app.note", "kept")
        span.set_attribute("app.tries", 2)
        assert isinstance(span, ReadableSpan)  # read like the SDK's span
        read["before"] = (span.name, dict(span.attributes or {}), span.is_recording())
        span.set_attribute("app.list", [1, 2])
        span.add_event("hooked", {"n": 1})
        span.update_name("GET orders")
        read["after"] = (span.name, [e.name for e in span.events], span.attributes["app.list"])  # type: ignore[index]

    with requests.Session() as session:
        session.hooks["response"].append(hook)
        session.get(f"{server.url}/orders/2", timeout=5)
    (span,) = outbound.client_spans()
    assert isinstance(seen[0], LightSpan)
    name, attributes, recording = read["before"]
    assert (name, attributes["app.note"], attributes["app.tries"], recording) == (
        "GET",
        "kept",
        2,
        True,
    )
    assert read["after"] == ("GET orders", ["hooked"], (1, 2))
    assert seen[0].name == "GET orders"
    assert not seen[0].is_recording()
    assert span.name == "GET orders"
    attributes = dict(span.attributes or {})
    assert attributes["app.note"] == "kept"
    assert attributes["app.tries"] == 2
    assert attributes["app.list"] == (1, 2)
    assert attributes["http.response.status_code"] == 200
    assert [(e.name, dict(e.attributes or {})) for e in span.events] == [("hooked", {"n": 1})]
    assert span.context is not None
    traceparent = server.received[-1]["traceparent"]
    assert traceparent.split("-")[1:3] == [
        f"{span.context.trace_id:032x}",
        f"{span.context.span_id:016x}",
    ]


def test_a_span_sampled_out_is_not_recorded_and_propagates_unsampled(
    server: EchoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sampler decides as in start_span: nothing exported, flags 00 on the wire."""
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    outbound = Outbound()
    outbound.tracer_provider = TracerProvider(sampler=ALWAYS_OFF)
    outbound.tracer_provider.add_span_processor(SimpleSpanProcessor(outbound.exporter))
    try:
        outbound.install(["requests"])
        recording: list[bool] = []
        with requests.Session() as session:
            session.hooks["response"].append(
                lambda *_, **__: recording.append(trace.get_current_span().is_recording())
            )
            assert session.get(f"{server.url}/orders/3", timeout=5).status_code == 200
            outbound.tracer_provider.add_span_processor(WatchingProcessor())  # the SDK's span
            assert session.get(f"{server.url}/orders/3", timeout=5).status_code == 200
        assert recording == [False, False]
    finally:
        uninstrument_outbound()
    assert outbound.client_spans() == []
    light, sdk = (int(r["traceparent"].rsplit("-", 1)[1], 16) for r in server.received[-2:])
    assert light == sdk  # the random-trace-id flag too, where the API has it
    assert not light & 1  # not sampled


def test_attribute_limits_send_spans_down_the_sdk_path(
    server: EchoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A value length limit is the SDK's to apply: url.full comes out truncated."""
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    outbound = Outbound()
    outbound.tracer_provider = TracerProvider(span_limits=SpanLimits(max_span_attribute_length=12))
    outbound.tracer_provider.add_span_processor(SimpleSpanProcessor(outbound.exporter))
    try:
        outbound.install(["requests"])
        requests.get(f"{server.url}/a/long/path", timeout=5)
        state = _requests._state
        assert state is not None
        assert state.spans._plan is None  # never planned: the SDK's span every time
    finally:
        uninstrument_outbound()
    (span,) = outbound.client_spans()
    assert dict(span.attributes or {})["url.full"] == server.url[:12]


def _light(exporter: InMemorySpanExporter) -> LightSpan:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = LightSpans(provider.get_tracer("t"), SpanKind.CLIENT).start("GET", Context(), {"a": 1})
    assert isinstance(span, LightSpan)
    return span


def test_status_follows_the_sdk_rules() -> None:
    """UNSET is ignored, OK is final, a StatusCode with a description is kept."""
    exporter = InMemorySpanExporter()
    span = _light(exporter)
    span.set_status(Status(StatusCode.UNSET))
    span.set_status(Status(StatusCode.OK))
    span.set_status(Status(StatusCode.ERROR, "late"))
    span.end()
    other = _light(exporter)
    other.set_status(StatusCode.ERROR, "refused")
    other.end()
    ok, error = exporter.get_finished_spans()
    assert ok.status.status_code is StatusCode.OK
    assert (error.status.status_code, error.status.description) == (StatusCode.ERROR, "refused")


def test_an_ended_span_is_exported_once_and_takes_nothing_more(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A second end and writes after the end are ignored with the SDK's warnings."""
    exporter = InMemorySpanExporter()
    span = _light(exporter)
    span.set_attribute("b", "x")
    span.end()
    assert not span.is_recording()
    with caplog.at_level(logging.WARNING):
        span.end()
        span.set_attribute("c", 1)
        span.set_status(Status(StatusCode.ERROR))
    (exported,) = exporter.get_finished_spans()
    assert dict(exported.attributes or {}) == {"a": 1, "b": "x"}
    assert exported.status.status_code is StatusCode.UNSET
    assert exported.kind is SpanKind.CLIENT
    assert len([r for r in caplog.records if "ended span" in r.getMessage()]) == 3


def test_other_tracers_get_their_own_spans() -> None:
    """A tracer that is not the SDK's (no-op here) starts its own span."""
    span = LightSpans(trace.NoOpTracer(), SpanKind.CLIENT).start("GET", Context(), {})
    assert not isinstance(span, LightSpan)
    assert not span.is_recording()


def test_a_processor_added_later_is_seen_on_the_next_call() -> None:
    """The plan is made again when the provider's processors change."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spans = LightSpans(provider.get_tracer("t"), SpanKind.CLIENT)
    assert isinstance(spans.start("GET", Context(), {}), LightSpan)
    watching = WatchingProcessor()
    provider.add_span_processor(watching)
    later = spans.start("GET", Context(), {})
    assert not isinstance(later, LightSpan)
    assert watching.started == [later]


@pytest.mark.parametrize("first", ["end", "add_event"])
def test_threads_ending_or_upgrading_at_once_hand_the_span_over_once(first: str) -> None:
    """Threads end a span (or add an event, then end it) at the same moment: one export each.
    The interpreter switches threads as often as it can, so a check-then-set race shows."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        exporter = InMemorySpanExporter()
        for _ in range(100):
            span = _light(exporter)
            barrier = threading.Barrier(4)

            def work(n: int, span: LightSpan = span, barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                if first == "add_event":
                    span.add_event(f"e{n}")
                span.end()

            threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        sys.setswitchinterval(interval)
    exported = exporter.get_finished_spans()
    assert len(exported) == 100
    assert len({s.context.span_id for s in exported if s.context is not None}) == 100
