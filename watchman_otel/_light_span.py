"""Our instrumentations' spans, handed to the SDK's span processors without its live ``Span``.

The SDK's ``Tracer.start_span`` builds a ``Span`` with a lock, a ``BoundedAttributes`` that
checks every value again, bounded lists for events and links, calls each processor's
``on_start``, and at ``end()`` copies itself into a ``ReadableSpan`` for ``on_end``. For a
request served or an outbound call, which set a few plain attributes, a name and a status and
end, that is most of what the instrumentation costs the host (docs/performance.md). A
`LightSpan` keeps its attributes in a plain dict and is itself the ``ReadableSpan`` the
processors get at its end (nothing is copied).

It is used only where the outcome is the SDK's: the tracer is the SDK's own ``Tracer``, enabled,
without the SDK's internal metrics, without an attribute value length limit (and a count limit
of at least 32), and every processor behind it is a ``BatchSpanProcessor`` or
``SimpleSpanProcessor``, whose ``on_start`` does nothing. Ids, the sampler's decision and trace
state, the trace flags, the resource and the scope come from the tracer exactly as
``start_span`` takes them. Anything else (a user's processor, limits, another SDK) gets the
SDK's ``Span`` from ``start_span``, as before. A light span that is asked for more than plain
attributes, a name and a status (an event, an exception, a link, a value the SDK would have to
check) becomes an SDK ``Span`` from then on, with what it holds, so those keep the SDK's exact
rules.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from time import time_ns
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util import types

__all__ = ["PLAIN_VALUES", "LightSpan", "LightSpans"]

_logger = logging.getLogger(__name__)

# Processors whose `on_start` and `_on_ending` do nothing: skipping them changes nothing.
_QUIET_START = (BatchSpanProcessor, SimpleSpanProcessor)
PLAIN_VALUES = frozenset((str, int, float, bool))  # values the SDK keeps as they are
_UNSET = Status(StatusCode.UNSET)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_RANDOM_FLAG: int | None = getattr(TraceFlags, "RANDOM_TRACE_ID", None)  # W3C level 2 (newer APIs)
_NO_LINKS: Sequence[Link] = ()
_NO_PROCESSOR = sdk_trace.SpanProcessor()
# Taken only to end a span or make it the SDK's: two threads doing either at once must not hand
# the span over twice (the SDK's span takes its own lock for every write instead).
_HAND_OVER = threading.Lock()


class _SdkSpan(sdk_trace.Span):
    """The SDK's ``Span``, made here as the SDK's ``Tracer`` makes its own (``_Span``)."""


class _Plan:
    """What one SDK tracer gives its spans, read once; it holds while `tracer` and its
    `processors` (a new tuple when one is added) stay the same."""

    __slots__ = (
        "id_generator",
        "info",
        "is_enabled",
        "limits",
        "processor",
        "processors",
        "random_ids",
        "resource",
        "sampler",
        "scope",
        "tracer",
    )

    def __init__(self, tracer: sdk_trace.Tracer, processors: tuple[Any, ...]) -> None:
        self.tracer = tracer
        self.processors = processors
        # The tracer's configuration can turn it off at any time: asked per span (older SDKs
        # have no such switch).
        self.is_enabled = getattr(tracer, "_is_enabled", None)
        self.sampler = tracer.sampler
        self.id_generator = tracer.id_generator
        self.resource = tracer.resource
        self.processor = tracer.span_processor
        self.info = tracer.instrumentation_info
        self.scope = tracer._instrumentation_scope
        self.limits = tracer._span_limits
        is_random = getattr(self.id_generator, "is_trace_id_random", None)
        self.random_ids = bool(_RANDOM_FLAG is not None and is_random is not None and is_random())


def _quiet_processors(tracer: Any) -> tuple[Any, ...] | None:
    """The span processors behind `tracer`; None when a light span would not give the SDK's
    outcome with it."""
    if type(tracer) is not sdk_trace.Tracer:
        return None
    processors = getattr(tracer.span_processor, "_span_processors", None)
    if not isinstance(processors, tuple) or not all(type(p) in _QUIET_START for p in processors):
        return None
    metrics = getattr(tracer, "_tracer_metrics", None)
    if metrics is not None and type(metrics).__name__ != "NoOpTracerMetrics":
        return None  # the SDK's own span metrics are on: their calls live in start_span / end
    limits = getattr(tracer, "_span_limits", None)
    if (
        limits is None
        or getattr(tracer, "_instrumentation_scope", None) is None
        or limits.max_span_attribute_length is not None
        or (limits.max_span_attributes is not None and limits.max_span_attributes < 32)
    ):
        return None
    return processors


def _read_through(name: str) -> Any:
    """`ReadableSpan.<name>`, read from the SDK's span once the light one has become one."""
    read = getattr(sdk_trace.ReadableSpan, name).fget

    def get(self: LightSpan) -> Any:
        sdk = self._sdk
        return read(sdk if sdk is not None else self)

    return property(get, doc=f"The span's {name.replace('_', ' ')}.")


class LightSpan(trace.Span, sdk_trace.ReadableSpan):
    """A recording span whose attributes are a dict until its end (see the module).

    A `ReadableSpan` like the SDK's span, it is what the processors get at its end (it takes no
    writes after that). Unlike the SDK's span it takes a lock only to end or to become the SDK's
    span, so write it from one thread at a time.
    """

    def __init__(  # noqa: PLR0917  # positional: made once per request or call
        self,
        plan: _Plan,
        kind: SpanKind,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        parent_context: Context,
        attributes: dict[str, Any],
    ) -> None:
        # ReadableSpan's fields, set here rather than by its __init__ (which would build a
        # default Resource first).
        self._name = name
        self._context = context
        self._kind = kind
        self._instrumentation_info = plan.info
        self._instrumentation_scope = plan.scope
        self._parent = parent
        self._start_time = time_ns()
        self._end_time: int | None = None
        self._attributes = self._values = attributes  # `_values` typed for writing
        self._events = ()
        self._links = ()
        self._resource = plan.resource
        self._status = _UNSET
        self._plan = plan
        self._parent_context = parent_context
        self._sdk: sdk_trace.Span | None = None

    name = _read_through("name")
    attributes = _read_through("attributes")
    events = _read_through("events")
    links = _read_through("links")
    status = _read_through("status")
    end_time = _read_through("end_time")
    dropped_attributes = _read_through("dropped_attributes")
    dropped_events = _read_through("dropped_events")
    dropped_links = _read_through("dropped_links")

    # -- what our instrumentations do with a span: no SDK span ------------------------------

    def get_span_context(self) -> SpanContext:
        """The ids this span was started with."""
        return self._context  # type: ignore[return-value]  # always set, by __init__

    def is_recording(self) -> bool:
        """True until the span ends."""
        sdk = self._sdk
        return sdk.is_recording() if sdk is not None else self._end_time is None

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        """Sets one attribute (a value the SDK would check makes this an SDK span first)."""
        if self._sdk is None:
            attributes = self._values
            limit = self._plan.limits.max_span_attributes
            if (
                self._end_time is None
                and type(key) is str
                and key
                and type(value) in PLAIN_VALUES
                and (limit is None or key in attributes or len(attributes) < limit)
            ):
                attributes[key] = value
                return
        self._as_sdk().set_attribute(key, value)

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        """Sets attributes (plain values here, any other through the SDK's span)."""
        if self._sdk is None and self._end_time is None:
            values = self._values
            limit = self._plan.limits.max_span_attributes
            plain = all(
                type(k) is str and k and type(v) in PLAIN_VALUES for k, v in attributes.items()
            )
            if plain and (limit is None or len(values) + len(attributes) <= limit):
                values.update(attributes)
                return
        self._as_sdk().set_attributes(attributes)

    def update_name(self, name: str) -> None:
        """Renames the span."""
        if self._sdk is None and self._end_time is None:
            self._name = name
            return
        self._as_sdk().update_name(name)

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """Sets the status by the SDK's rules (OK is final, UNSET is ignored)."""
        if self._sdk is not None or self._end_time is not None or not isinstance(status, Status):
            self._as_sdk().set_status(status, description)
            return
        if self._status.status_code is StatusCode.OK or status.status_code is StatusCode.UNSET:
            return
        if description is not None:
            self._as_sdk().set_status(status, description)  # the SDK's warning, its outcome
            return
        self._status = status

    def end(self, end_time: int | None = None) -> None:
        """Hands the finished span to the SDK's processors."""
        with _HAND_OVER:
            sdk = self._sdk
            ended = self._end_time is not None
            if sdk is None and not ended:
                self._end_time = end_time if end_time is not None else time_ns()
        if sdk is not None:
            sdk.end(end_time)
        elif ended:
            _logger.warning("Calling end() on an ended span.")
        else:
            self._plan.processor.on_end(self)

    # -- anything else: the SDK's span, with what this one holds --------------------------------

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        """Adds an event through the SDK's span."""
        self._as_sdk().add_event(name, attributes, timestamp)

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        """Adds a link through the SDK's span."""
        self._as_sdk().add_link(context, attributes)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """Records the exception as the SDK's span does."""
        self._as_sdk().record_exception(exception, attributes, timestamp, escaped)

    def _as_sdk(self) -> sdk_trace.Span:
        """The SDK's span for this one, made on first need (started at this span's start)."""
        sdk = self._sdk
        if sdk is not None:
            return sdk
        with _HAND_OVER:
            if self._sdk is not None:
                return self._sdk
            plan = self._plan
            ended = self._end_time is not None
            sdk = _SdkSpan(
                name=self._name,
                context=self.get_span_context(),
                parent=self._parent,
                sampler=plan.sampler,
                resource=plan.resource,
                attributes=self._values,
                # Ended and handed over already: an SDK span that only warns, as ended ones do.
                span_processor=_NO_PROCESSOR if ended else plan.processor,
                kind=self._kind,
                instrumentation_info=plan.info,
                limits=plan.limits,
                instrumentation_scope=plan.scope,
            )
            sdk.start(start_time=self._start_time, parent_context=self._parent_context)
            if self._status is not _UNSET:
                sdk.set_status(self._status)
            if ended:
                sdk.end(self._end_time)
            self._sdk = sdk
        return sdk

    def __repr__(self) -> str:
        return f"LightSpan(name={self._name!r}, context={self._context!r})"


class LightSpans:
    """Starts spans of one kind for one tracer: light ones where that gives the SDK's outcome."""

    __slots__ = ("_kind", "_plan", "_resolve", "_tracer")

    def __init__(self, tracer: trace.Tracer, kind: SpanKind) -> None:
        self._tracer = tracer
        self._kind = kind
        # Our switching tracer (the global provider of `init()`) resolves to the SDK tracer of
        # the current pipeline; any other tracer is used as it is.
        self._resolve = getattr(tracer, "resolve", None)
        self._plan: _Plan | None = None

    def start(self, name: str, parent: Context, attributes: dict[str, Any]) -> trace.Span:
        """A started span under `parent` (`attributes` is taken, not copied)."""
        kind = self._kind
        tracer = self._resolve() if self._resolve is not None else self._tracer
        plan = self._plan
        if (
            plan is None
            or plan.tracer is not tracer
            or plan.processors is not getattr(plan.processor, "_span_processors", None)
        ):
            processors = _quiet_processors(tracer)
            if processors is None:
                return tracer.start_span(name, parent, kind, attributes)
            plan = self._plan = _Plan(tracer, processors)  # type: ignore[arg-type]
        is_enabled = plan.is_enabled
        if is_enabled is not None and not is_enabled():
            return tracer.start_span(name, parent, kind, attributes)
        parent_span: SpanContext | None = trace.get_current_span(parent).get_span_context()
        if parent_span is not None and parent_span.is_valid:
            trace_id = parent_span.trace_id
            random_ids = _RANDOM_FLAG is not None and parent_span.trace_flags.random_trace_id
        else:
            parent_span = None
            trace_id = plan.id_generator.generate_trace_id()
            random_ids = plan.random_ids
        result = plan.sampler.should_sample(parent, trace_id, name, kind, attributes, _NO_LINKS)
        decision = result.decision
        flags = _SAMPLED if decision.is_sampled() else _NOT_SAMPLED  # type: ignore[no-untyped-call]
        if random_ids:
            flags = TraceFlags(flags | _RANDOM_FLAG)  # type: ignore[operator]
        context = SpanContext(
            trace_id,
            plan.id_generator.generate_span_id(),
            is_remote=False,
            trace_flags=flags,
            trace_state=result.trace_state,
        )
        if not decision.is_recording():  # type: ignore[no-untyped-call]
            return trace.NonRecordingSpan(context)
        return LightSpan(plan, kind, name, context, parent_span, parent, dict(result.attributes))
