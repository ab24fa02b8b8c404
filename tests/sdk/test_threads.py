"""Trace context carried into threads, thread pools and run_in_executor."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from watchman_otel._threads import instrument_threads, uninstrument_threads


def _current_span_id() -> int:
    return trace.get_current_span().get_span_context().span_id


@pytest.fixture
def tracer() -> Iterator[trace.Tracer]:
    instrument_threads()
    yield TracerProvider().get_tracer("test")
    uninstrument_threads()


def _in_thread(target: Callable[[], int]) -> int:
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(target()))
    thread.start()
    thread.join(5)
    return result[0]


def test_thread_inherits_context(tracer: trace.Tracer) -> None:
    """A threading.Thread started inside a span sees that span as current."""
    with tracer.start_as_current_span("parent") as span:
        assert _in_thread(_current_span_id) == span.get_span_context().span_id


def test_timer_inherits_context(tracer: trace.Tracer) -> None:
    """A threading.Timer sees the span current when it was started."""
    seen: list[int] = []
    with tracer.start_as_current_span("parent") as span:
        timer = threading.Timer(0, lambda: seen.append(_current_span_id()))
        timer.start()
    timer.join(5)
    assert seen == [span.get_span_context().span_id]


def test_thread_pool_submit_inherits_context(tracer: trace.Tracer) -> None:
    """ThreadPoolExecutor.submit runs the task in the submitter's context."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(_current_span_id).result(5)  # the worker thread exists before the span
        with tracer.start_as_current_span("parent") as span:
            assert pool.submit(_current_span_id).result(5) == span.get_span_context().span_id


def test_thread_pool_map_inherits_context(tracer: trace.Tracer) -> None:
    """ThreadPoolExecutor.map goes through submit, so it is covered too."""
    with ThreadPoolExecutor(max_workers=2) as pool, tracer.start_as_current_span("p") as span:
        ids = list(pool.map(lambda _: _current_span_id(), range(3)))
    assert ids == [span.get_span_context().span_id] * 3


@pytest.mark.asyncio
async def test_run_in_executor_inherits_context(tracer: trace.Tracer) -> None:
    """loop.run_in_executor (default and explicit pools) runs in the caller's context."""
    loop = asyncio.get_running_loop()
    with tracer.start_as_current_span("parent") as span:
        expected = span.get_span_context().span_id
        assert await loop.run_in_executor(None, _current_span_id) == expected
        with ThreadPoolExecutor(max_workers=1) as pool:
            assert await loop.run_in_executor(pool, _current_span_id) == expected


def test_instrument_is_idempotent_and_uninstrument_undoes(tracer: trace.Tracer) -> None:
    """Instrumenting twice is harmless; after uninstrument a new thread starts with no span."""
    instrument_threads()
    with tracer.start_as_current_span("parent") as span:
        assert _in_thread(_current_span_id) == span.get_span_context().span_id
    uninstrument_threads()
    uninstrument_threads()
    with tracer.start_as_current_span("parent"):
        assert _in_thread(_current_span_id) == 0
