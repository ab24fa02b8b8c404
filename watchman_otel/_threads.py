"""Trace context into threads: ``threading.Thread``/``Timer``, thread pools, ``run_in_executor``.

contrib's ``ThreadingInstrumentor`` wraps ``Thread.start``/``run``, ``Timer`` and
``ThreadPoolExecutor.submit``; ``loop.run_in_executor`` goes through ``submit``, so it is covered
too (``asyncio.to_thread`` copies the context by itself). We wrap it rather than patch again.
"""

from __future__ import annotations

import threading

from opentelemetry.instrumentation.threading import ThreadingInstrumentor

from watchman_otel._errors import report_internal_error

__all__ = ["instrument_threads", "uninstrument_threads"]

_lock = threading.Lock()
_ours = False  # whether we (not the user or opentelemetry-instrument) instrumented threading


def instrument_threads() -> None:
    """Carry the current OpenTelemetry context into new threads and pool tasks; idempotent."""
    global _ours  # noqa: PLW0603 -- process-wide patch state
    with _lock:
        instrumentor = ThreadingInstrumentor()
        if instrumentor.is_instrumented_by_opentelemetry:
            return
        try:
            instrumentor.instrument()
        except Exception as exc:  # a failed patch only loses context in threads
            report_internal_error("instrumenting threads", exc)
            return
        _ours = instrumentor.is_instrumented_by_opentelemetry


def uninstrument_threads() -> None:
    """Undo ``instrument_threads`` (only what we did); idempotent."""
    global _ours  # noqa: PLW0603
    with _lock:
        if not _ours:
            return
        try:
            ThreadingInstrumentor().uninstrument()
        except Exception as exc:
            report_internal_error("uninstrumenting threads", exc)
        _ours = False
