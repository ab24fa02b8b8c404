"""Our instrumentations' duration points, added to the SDK's aggregations without re-reading them.

For every ``Histogram.record`` the SDK cleans the point's attributes again (``Measurement``),
copies them, and hashes them into its aggregation key (a sorted walk with a type check per
value) before it finds the aggregation the point goes to. For a request served or an outbound
call, whose point carries the same few plain attributes call after call, that is most of what
the point costs the host (docs/performance.md). A `LightHistogram` remembers, per attribute set
it has seen, the SDK's key for it in each of the instrument's views, and then does what the
SDK's ``consume_measurement`` does with them: finds the aggregation (creating it, under the
view's lock, as the SDK does) and adds the value to it.

It is used only where the outcome is the SDK's: the instrument is the SDK's own histogram, its
measurement consumer and reader storages are the SDK's, the value is finite and not negative,
and every attribute key is a string and every value a ``str``, ``int``, ``float`` or ``bool`` (which
the SDK keeps as they are). Anything else, including an SDK whose internals are not the ones
this was written against, goes through ``Histogram.record`` as before.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from time import time_ns
from typing import Any

from opentelemetry.context import Context, get_current
from opentelemetry.metrics import Histogram

from watchman_otel._light_span import PLAIN_VALUES

__all__ = ["LightHistogram"]

_POINTS_SIZE = 1024  # attribute sets remembered per instrument; the SDK's own limit is 2000

try:  # the SDK's internals this mirrors; any other shape: the SDK's record() every time
    from opentelemetry.sdk.metrics._internal._view_instrument_match import (
        _hash_attributes,
        _ViewInstrumentMatch,
    )
    from opentelemetry.sdk.metrics._internal.instrument import Histogram as _SdkHistogram
    from opentelemetry.sdk.metrics._internal.measurement import Measurement
    from opentelemetry.sdk.metrics._internal.measurement_consumer import (
        SynchronousMeasurementConsumer,
    )
    from opentelemetry.sdk.metrics._internal.metric_reader_storage import MetricReaderStorage

    _SUPPORTED = (
        "should_sample_exemplar"
        in inspect.signature(_ViewInstrumentMatch.consume_measurement).parameters
    )
except (ImportError, AttributeError, TypeError, ValueError):  # pragma: no cover - other SDKs
    _SUPPORTED = False

_NOTHING = object()
# (view match, the SDK's key for the point's attributes in it, those attributes as it keeps them)
_Match = tuple[Any, Any, dict[str, Any]]


class _Plan:
    """What one SDK histogram's points go through, read once; it holds while the instrument
    and its consumer's reader storages (a new dict when a reader is added) stay the same."""

    __slots__ = ("consumer", "exemplar_filter", "instrument", "matches", "points", "storages")

    def __init__(self, instrument: Any, consumer: Any, storages: Any, matches: list[Any]) -> None:
        self.instrument = instrument
        self.consumer = consumer
        self.storages = storages
        self.exemplar_filter = consumer._sdk_config.exemplar_filter
        self.matches = matches  # every reader's view matches for the instrument, in order
        # (attribute items, their value types) -> the point's match per view
        self.points: dict[tuple[Any, ...], tuple[_Match, ...]] = {}


def _plan(instrument: Any) -> _Plan | None:
    """The plan for `instrument`; None when a light point would not give the SDK's outcome."""
    if not _SUPPORTED or not isinstance(instrument, _SdkHistogram):
        return None
    if type(instrument).record is not _SdkHistogram.record:
        return None  # a subclass that records its own way
    consumer = getattr(instrument, "_measurement_consumer", None)
    if type(consumer) is not SynchronousMeasurementConsumer:
        return None
    storages = getattr(consumer, "_reader_storages", None)
    if not isinstance(storages, dict) or not hasattr(instrument, "_is_enabled"):
        return None
    matches: list[Any] = []
    for storage in storages.values():
        if type(storage) is not MetricReaderStorage:
            return None
        for match in storage._get_or_init_view_instrument_match(instrument):
            if type(match) is not _ViewInstrumentMatch or not all(
                hasattr(match, name)
                for name in ("_reset_on_collect", "_attributes_aggregation", "_lock", "_view")
            ):
                return None
            matches.append(match)
    return _Plan(instrument, consumer, storages, matches)


def _point_matches(plan: _Plan, attributes: Mapping[str, Any]) -> tuple[_Match, ...] | None:
    """The SDK's aggregation key for `attributes` in each view, as ``consume_measurement``
    computes it; None when the SDK would clean the attributes (it then records the point)."""
    for key, value in attributes.items():
        if type(key) is not str or not key or type(value) not in PLAIN_VALUES:
            return None
    found = []
    for match in plan.matches:
        kept = dict(attributes)
        keys = match._view._attribute_keys
        if keys is not None:
            kept = {k: v for k, v in kept.items() if k in keys}
        found.append((match, _hash_attributes(kept), kept))
    return tuple(found)


class LightHistogram:
    """Records into `histogram` (the SDK's, or a proxy of ours in front of it) as the SDK would,
    without cleaning and hashing an attribute set it has seen before.

    ``record`` takes the same arguments as ``Histogram.record``. The attributes may be changed or
    reused by the caller after the call, as with the SDK.
    """

    __slots__ = ("_declined", "_histogram", "_plan")

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        self._plan: _Plan | None = None
        # The instrument last found unfit (its type or its SDK's internals): not looked at again
        # until a provider switch brings another.
        self._declined: Any = _NOTHING

    def record(
        self,
        amount: float,
        attributes: Mapping[str, Any] | None = None,
        context: Context | None = None,
    ) -> None:
        """Add `amount` to the histogram under `attributes` (``Histogram.record``)."""
        histogram = self._histogram
        # Our proxies forward to `_real_instrument`, which a provider switch replaces.
        instrument: Any = getattr(histogram, "_real_instrument", histogram)
        plan = self._plan
        if instrument is self._declined:
            plan = None
        elif (
            plan is None
            or plan.instrument is not instrument
            or plan.consumer._reader_storages is not plan.storages
        ):
            plan = self._plan = _plan(instrument)
            if plan is None:
                self._declined = instrument
        if (
            plan is None
            or attributes is None
            or not 0 <= amount < math.inf  # the SDK warns about these: let it
            or not instrument._is_enabled()
        ):
            histogram.record(amount, attributes, context)
            return
        try:
            key = (tuple(attributes.items()), tuple(map(type, attributes.values())))
            matches = plan.points.get(key)
        except TypeError:  # an unhashable value: the SDK cleans it
            histogram.record(amount, attributes, context)
            return
        if matches is None:
            matches = _point_matches(plan, attributes)
            if matches is None:
                histogram.record(amount, attributes, context)
                return
            if len(plan.points) >= _POINTS_SIZE:
                plan.points.clear()
            plan.points[key] = matches
        if not context:  # as the SDK: an empty context means the current one
            context = get_current()
        now = time_ns()
        measurement = Measurement(amount, now, instrument, context, None)
        sample = plan.exemplar_filter.should_sample(amount, now, attributes, context)
        if sample:
            # The reservoir keeps the point's attributes; the SDK's Measurement holds its own
            # copy of them (set as its __post_init__ sets it, the attributes being plain).
            object.__setattr__(measurement, "attributes", dict(attributes))
        # As the SDK's _ViewInstrumentMatch.consume_measurement, from its aggregation key on.
        for match, aggregation_key, kept in matches:
            if match._reset_on_collect:
                # A delta collection replaces the aggregations: hold the view's lock throughout.
                with match._lock:
                    aggregation = match._attributes_aggregation.get(aggregation_key)
                    if aggregation is None:
                        aggregation = match._get_or_create_aggregation(aggregation_key, dict(kept))
                    aggregation.aggregate(measurement, sample)
                continue
            aggregation = match._attributes_aggregation.get(aggregation_key)
            if aggregation is None:
                with match._lock:
                    aggregation = match._get_or_create_aggregation(aggregation_key, dict(kept))
            aggregation.aggregate(measurement, sample)
