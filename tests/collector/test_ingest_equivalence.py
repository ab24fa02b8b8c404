"""decode → pair gives the same calls as before the hot-path work, on simulated traffic.

The digests below were taken with the decoder that read every wanted attribute of every span and
the pairer before its common cases were inlined (see docs/performance.md). Decode now reads per
span kind only what pair uses, so this pins that the calls out, and the pairer's counters, did
not change. If the simulator's output changes on purpose, recompute them with the old code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from watchman_collector.decode import decode_trace_bytes
from watchman_collector.pair import SpanPairer
from watchman_collector.records import Call
from watchman_collector.sim import Noise, Scenario, Simulator, get_topology, parse_fault

_CALL_FIELDS = Call.__slots__


def _requests(scenario: Scenario) -> Iterator[bytes]:
    """The scenario's trace requests, encoded, with every seventh one delivered twice."""
    n = 0
    for export in Simulator(scenario).exports():
        if export.signal != "traces":
            continue
        data = export.request.SerializeToString()
        yield data
        n += 1
        if n % 7 == 0:  # OTLP retries: whole requests arrive again
            yield data


def calls_digest(
    requests: list[bytes], decode: Callable[[bytes], object], pairer: SpanPairer
) -> tuple[int, str, tuple[int, ...]]:
    """(calls, sha256 of the calls in order, pairer counters) after decode → pair → expire."""
    digest = hashlib.sha256()
    count = 0

    def feed(calls: list[Call]) -> None:
        nonlocal count
        for call in calls:
            digest.update(repr(tuple(getattr(call, f) for f in _CALL_FIELDS)).encode())
            count += 1

    for data in requests:
        spans = decode(data).spans  # type: ignore[attr-defined]
        feed(pairer.add(spans))
        if spans:
            feed(pairer.expire(max(s.end_ns for s in spans)))
    feed(pairer.flush())
    s = pairer.stats
    counters = (s.paired, s.unpaired, s.duplicates, s.evicted, s.expired, s.unnamed, s.immediate)
    return count, digest.hexdigest(), counters


SHOP_FAULTS = Scenario(
    get_topology("shop"),
    seed=5,
    duration_s=40,
    rate=15,
    faults=(parse_fault("payments:crash@10+12"), parse_fault("orders:error@20+10")),
    drain_s=5,
)
LARGE_HEALTHY = Scenario(
    get_topology("large"), seed=2, duration_s=6, rate=25, noise=Noise(), drain_s=5
)

CASES: dict[str, tuple[Scenario, dict[str, Any], tuple[int, str, tuple[int, ...]]]] = {
    # name: (scenario, pairer settings, expected (calls, digest, counters))
    "shop-faults": (
        SHOP_FAULTS,
        {"ttl_s": 2.0},
        (
            2958,
            "f5d31636163ce4577478e8f01d96f03bf35241a268f9a39a05c5b7e3bfc95765",
            (652, 812, 459, 0, 795, 0, 1494),
        ),
    ),
    "large-small-store": (
        LARGE_HEALTHY,
        {"ttl_s": 1.0, "max_pending": 300, "dedupe_capacity": 2_000},
        (
            6073,
            "df67f6038afa88adab85b0d3d23d7748dff9e33858262aa1652c4976d7cdabc7",
            (581, 3708, 872, 2897, 811, 0, 1784),
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_calls_as_before(name: str) -> None:
    """Simulated traffic (faults, retries, messaging, a small store) pairs into the same calls."""
    scenario, settings, expected = CASES[name]
    got = calls_digest(list(_requests(scenario)), decode_trace_bytes, SpanPairer(**settings))
    assert got[0] > 0
    assert got == expected
