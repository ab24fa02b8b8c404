"""Light histogram points (watchman_otel._light_histogram): the SDK's aggregations, reached once."""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import Histogram
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics._internal import _disable_meter_configurator
from opentelemetry.sdk.metrics._internal.exemplar import (
    AlwaysOnExemplarFilter,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import DropAggregation, View
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from watchman_otel import _light_histogram
from watchman_otel._light_histogram import LightHistogram
from watchman_otel._providers import SwitchingMeterProvider

_DELTA = {SdkHistogram: AggregationTemporality.DELTA}
_CALL = {"http.request.method": "GET", "server.address": "a.example", "server.port": 443}


def _span(span_id: int, sampled: bool = True) -> NonRecordingSpan:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    return NonRecordingSpan(SpanContext(0xABC, span_id, is_remote=False, trace_flags=flags))


def _span_context(span_id: int, sampled: bool = True) -> Context:
    return trace.set_span_in_context(_span(span_id, sampled), Context())


def _points(reader: InMemoryMetricReader) -> list[tuple[Any, ...]]:
    """What an exporter sends of the readers' histogram points, but for their times."""
    data = reader.get_metrics_data()
    found = []
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:  # type: ignore[union-attr]
                    attributes = dict(point.attributes or {})
                    found.append(
                        (
                            metric.name,
                            sorted((k, type(v).__name__, v) for k, v in attributes.items()),
                            getattr(point, "count", None),
                            point.sum if hasattr(point, "sum") else point.value,  # type: ignore[union-attr]
                            tuple(getattr(point, "bucket_counts", ())),
                            getattr(point, "min", None),
                            getattr(point, "max", None),
                            sorted(
                                (
                                    sorted((e.filtered_attributes or {}).items()),
                                    e.value,
                                    e.span_id,
                                    e.trace_id,
                                )
                                for e in point.exemplars
                            ),
                        )
                    )
    return sorted(found, key=repr)


class Pair:
    """The same histogram on two providers: one recorded through LightHistogram, one directly."""

    def __init__(
        self,
        readers: Callable[[], Sequence[InMemoryMetricReader]],
        *,
        views: Sequence[View] = (),
        exemplar_filter: Any = None,
    ) -> None:
        self.light_readers = list(readers())
        self.sdk_readers = list(readers())
        kwargs: dict[str, Any] = {"views": list(views)}
        if exemplar_filter is not None:
            kwargs["exemplar_filter"] = exemplar_filter
        self.light_provider = MeterProvider(metric_readers=self.light_readers, **kwargs)
        self.sdk_provider = MeterProvider(metric_readers=self.sdk_readers, **kwargs)
        self.light = LightHistogram(_histogram(self.light_provider))
        self.sdk = _histogram(self.sdk_provider)

    def record(self, amount: float, attributes: Any = None, context: Context | None = None) -> None:
        self.light.record(amount, attributes, context)
        self.sdk.record(amount, attributes, context)

    def collected(self) -> tuple[list[Any], list[Any]]:
        """Each side's points, reader by reader."""
        light = [_points(reader) for reader in self.light_readers]
        sdk = [_points(reader) for reader in self.sdk_readers]
        return light, sdk

    def assert_same(self) -> list[Any]:
        light, sdk = self.collected()
        assert light == sdk
        return light

    def close(self) -> None:
        self.light_provider.shutdown()
        self.sdk_provider.shutdown()


def _histogram(provider: Any) -> Histogram:
    meter = provider.get_meter("watchman_otel", "test")
    return meter.create_histogram(  # type: ignore[no-any-return]
        "http.client.request.duration",
        unit="s",
        explicit_bucket_boundaries_advisory=[0.005, 0.01, 0.1, 1.0],
    )


@pytest.fixture
def pairs() -> Any:
    made: list[Pair] = []

    def make(*args: Any, **kwargs: Any) -> Pair:
        made.append(Pair(*args, **kwargs))
        return made[-1]

    yield make
    for pair in made:
        pair.close()


def _one_reader() -> list[InMemoryMetricReader]:
    return [InMemoryMetricReader()]


def test_points_match_the_sdk_and_take_the_light_path(pairs: Any) -> None:
    pair = pairs(_one_reader)
    failed = {**_CALL, "http.response.status_code": 503, "error.type": "503"}
    for amount in (0.001, 0.02, 0.02, 3.0, 0.0):
        pair.record(amount, _CALL, Context())
    pair.record(0.5, failed, Context())
    pair.record(0.007, dict(reversed(list(_CALL.items()))), Context())  # same set, other order
    points = pair.assert_same()[0]
    assert sorted(p[2] for p in points) == [1, 6]
    # The light path was taken (an SDK whose internals differ would fall back, silently slower).
    plan = pair.light._plan
    assert plan is not None
    assert len(plan.points) == 3


def test_bool_int_and_float_values_stay_apart(pairs: Any) -> None:
    pair = pairs(_one_reader)
    for value in (1, True, 1.0, 1, "1"):
        pair.record(0.1, {"k": value}, Context())
    points = pair.assert_same()[0]
    assert sorted(p[1][0][1] for p in points) == ["bool", "float", "int", "str"]


def test_values_the_sdk_must_clean_go_through_it(pairs: Any, caplog: Any) -> None:
    pair = pairs(_one_reader)
    pair.record(0.1, {"list": ["a", "b"]}, Context())  # a sequence: the SDK makes it a tuple
    pair.record(0.1, {"": "empty key"}, Context())  # dropped, with a warning
    pair.record(0.1, {"obj": object()}, Context())  # replaced, with a warning
    pair.record(0.1, None, Context())
    pair.record(0.1, {}, Context())
    pair.record(-1.0, _CALL, Context())  # refused, with a warning
    pair.record(math.nan, _CALL, Context())
    pair.record(math.inf, _CALL, Context())
    pair.assert_same()
    plan = pair.light._plan
    assert plan is not None
    assert list(plan.points) == [((), ())]  # only {} was plain


def test_delta_collections_lose_no_point(pairs: Any) -> None:
    pair = pairs(lambda: [InMemoryMetricReader(preferred_temporality=_DELTA)])
    for round_ in range(4):
        for i in range(round_ + 1):
            pair.record(0.01 * (i + 1), _CALL, Context())
        if round_ == 2:
            pair.record(0.3, {**_CALL, "server.port": 8443}, Context())
        light, sdk = pair.collected()
        assert light == sdk
        assert sum(p[2] for p in light[0]) == round_ + 1 + (round_ == 2)


def test_two_readers_and_two_views(pairs: Any) -> None:
    views = [
        View(instrument_name="http.client.request.duration", attribute_keys={"server.address"}),
        View(
            instrument_name="http.client.request.duration",
            name="by_method",
            attribute_keys={"http.request.method"},
        ),
    ]
    pair = pairs(
        lambda: [InMemoryMetricReader(), InMemoryMetricReader(preferred_temporality=_DELTA)],
        views=views,
    )
    pair.record(0.1, _CALL, Context())
    pair.record(0.2, {**_CALL, "http.request.method": "POST"}, Context())
    pair.record(0.3, {**_CALL, "server.address": "b.example"}, Context())
    light = pair.assert_same()
    assert len(light[0]) == 4  # two addresses, two methods
    pair.record(0.4, _CALL, Context())
    pair.assert_same()


def test_a_dropping_view(pairs: Any) -> None:
    views = [View(instrument_name="http.client.request.duration", aggregation=DropAggregation())]
    pair = pairs(_one_reader, views=views)
    pair.record(0.1, _CALL, Context())
    assert pair.assert_same() == [[]]


def test_the_cardinality_limit_overflows_as_in_the_sdk(pairs: Any) -> None:
    views = [View(instrument_name="http.client.request.duration", aggregation_cardinality_limit=3)]
    pair = pairs(_one_reader, views=views)
    for port in range(6):
        pair.record(0.1, {**_CALL, "server.port": port}, Context())
        pair.record(0.2, {**_CALL, "server.port": port}, Context())
    points = pair.assert_same()[0]
    assert ("otel.metric.overflow", "bool", True) in [a for p in points for a in p[1]]


@pytest.mark.parametrize("exemplar_filter", [AlwaysOnExemplarFilter(), TraceBasedExemplarFilter()])
def test_exemplars_match_the_sdk(pairs: Any, exemplar_filter: Any) -> None:
    # Two views: one keeps every attribute, one only the method (its exemplars then carry the
    # attributes it dropped).
    views = [
        View(instrument_name="http.client.request.duration"),
        View(
            instrument_name="http.client.request.duration",
            name="by_method",
            attribute_keys={"http.request.method"},
        ),
    ]
    pair = pairs(_one_reader, exemplar_filter=exemplar_filter, views=views)
    pair.record(0.1, _CALL, _span_context(1))
    pair.record(0.02, _CALL, _span_context(2, sampled=False))
    pair.record(2.0, {**_CALL, "http.response.status_code": 200}, _span_context(3))
    pair.record(0.003, _CALL, Context())
    points = pair.assert_same()[0]
    assert any(e[0] for p in points for e in p[7])  # filtered attributes


def test_a_current_span_is_the_context_when_none_is_given(pairs: Any) -> None:
    pair = pairs(_one_reader)
    with trace.use_span(_span(7)):
        pair.record(0.1, _CALL)
        pair.record(0.2, _CALL, Context())  # an empty context is the current one, as in the SDK
    points = pair.assert_same()[0]
    assert [e[2] for e in points[0][7]] == [7, 7]  # the exemplars point at the current span


def test_a_disabled_meter_records_nothing(pairs: Any) -> None:
    pair = pairs(_one_reader)
    pair.record(0.1, _CALL, Context())
    for provider in (pair.light_provider, pair.sdk_provider):
        provider._set_meter_configurator(meter_configurator=_disable_meter_configurator)
    pair.record(0.2, _CALL, Context())
    points = pair.assert_same()[0]
    assert points[0][2] == 1


def test_a_reader_added_later_gets_the_points(pairs: Any) -> None:
    pair = pairs(_one_reader)
    pair.record(0.1, _CALL, Context())
    late_light, late_sdk = InMemoryMetricReader(), InMemoryMetricReader()
    pair.light_provider.add_metric_reader(late_light)
    pair.sdk_provider.add_metric_reader(late_sdk)
    pair.record(0.2, _CALL, Context())
    pair.assert_same()
    assert _points(late_light) == _points(late_sdk)
    assert _points(late_light)[0][2] == 1


def test_switching_providers_follows_the_switch() -> None:
    switching = SwitchingMeterProvider()
    histogram = LightHistogram(_histogram(switching))
    histogram.record(0.1, _CALL, Context())  # no provider yet: a no-op, not an error
    first, second = InMemoryMetricReader(), InMemoryMetricReader()
    providers = [MeterProvider(metric_readers=[first]), MeterProvider(metric_readers=[second])]
    try:
        switching.switch(providers[0])
        histogram.record(0.1, _CALL, Context())
        switching.switch(providers[1])
        histogram.record(0.2, _CALL, Context())
        histogram.record(0.3, _CALL, Context())
        assert [p[2] for p in _points(first)] == [1]
        assert [p[2] for p in _points(second)] == [2]
    finally:
        for provider in providers:
            provider.shutdown()


def test_an_sdk_subclass_or_api_histogram_goes_through_its_record(monkeypatch: Any) -> None:
    calls: list[tuple[Any, ...]] = []
    planned: list[Any] = []

    class Recording:
        def record(self, *args: Any) -> None:
            calls.append(args)

    plan = _light_histogram._plan
    monkeypatch.setattr(_light_histogram, "_plan", lambda i: planned.append(i) or plan(i))
    histogram = LightHistogram(Recording())  # type: ignore[arg-type]
    histogram.record(0.1, _CALL, None)
    histogram.record(0.2, _CALL, None)
    assert calls == [(0.1, _CALL, None), (0.2, _CALL, None)]
    assert len(planned) == 1  # found unfit once, not looked at again


def test_threads_recording_during_delta_collections_lose_nothing() -> None:
    reader = InMemoryMetricReader(preferred_temporality=_DELTA)
    provider = MeterProvider(metric_readers=[reader])
    histogram = LightHistogram(_histogram(provider))
    per_thread, threads = 3000, 4
    counted = 0

    def work(port: int) -> None:
        for i in range(per_thread):
            histogram.record(0.001, {**_CALL, "server.port": port + i % 3}, Context())

    workers = [threading.Thread(target=work, args=(n * 10,)) for n in range(threads)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        for worker in workers:
            worker.start()
        while any(worker.is_alive() for worker in workers):
            counted += sum(p[2] for p in _points(reader))
        for worker in workers:
            worker.join()
        counted += sum(p[2] for p in _points(reader))
        assert counted == per_thread * threads
    finally:
        sys.setswitchinterval(interval)
        provider.shutdown()
