"""The serve-load benchmark's parts: fresh request variants, and one paced step end to end."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from watchman_collector.decode import decode_trace_bytes

from benchmarks import serve_load
from benchmarks._load_sender import Template, load_templates, variant, write_templates
from benchmarks.analyzer_throughput import build_requests

DUE_NS = 1_800_000_000_000_000_000  # 2027-01-15: after every simulated time


@pytest.fixture(scope="module")
def payloads() -> list[bytes]:
    return build_requests(2)


@pytest.fixture(scope="module")
def templates_file(payloads: list[bytes]) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "templates.bin"
        write_templates(payloads, path)
        yield path


@pytest.fixture(scope="module")
def templates(templates_file: Path) -> list[Template]:
    return load_templates(templates_file)


def test_templates_locate_every_span_trace_id_and_time(
    payloads: list[bytes], templates: list[Template]
) -> None:
    """Each template finds one trace id and two times per span, and its links' trace ids."""
    for payload, template in zip(payloads, templates, strict=True):
        spans = decode_trace_bytes(payload).spans
        assert template.payload == payload
        assert template.spans == len(spans) == 1000
        assert len(template.time_offsets) == 2 * len(spans)
        assert len(template.trace_id_offsets) == len(spans) + sum(len(s.links) for s in spans)
        assert template.last_time_ns == max(s.end_ns for s in spans)


def test_variant_changes_only_trace_ids_and_times(templates: list[Template]) -> None:
    """A variant is its template with trace ids tagged by pass and times moved to when it is due."""
    due_ns = DUE_NS
    seq = 3  # template 1 of pass 1
    original = decode_trace_bytes(templates[1].payload).spans
    moved = decode_trace_bytes(variant(templates, seq, due_ns)).spans
    delta = due_ns - templates[1].last_time_ns
    assert max(s.end_ns for s in moved) == due_ns
    for before, after in zip(original, moved, strict=True):
        assert after.trace_id == b"\x00\x00\x00\x02" + before.trace_id[4:]
        assert (after.start_ns, after.end_ns) == (before.start_ns + delta, before.end_ns + delta)
        assert after.links == tuple((b"\x00\x00\x00\x02" + t[4:], s) for t, s in before.links)
        assert (after.span_id, after.parent_span_id, after.service, after.kind) == (
            before.span_id,
            before.parent_span_id,
            before.service,
            before.kind,
        )


def test_passes_never_repeat_a_span(templates: list[Template]) -> None:
    """The same template in two passes yields disjoint (trace id, span id) keys."""
    keys = [
        {
            s.trace_id + s.span_id
            for s in decode_trace_bytes(variant(templates, seq, 1_800_000_000 * 10**9)).spans
        }
        for seq in (0, 2, 4)
    ]
    assert not keys[0] & keys[1]
    assert not keys[1] & keys[2]
    assert not keys[0] & keys[2]


@pytest.mark.integration
def test_a_paced_step_reaches_the_bare_server_in_full(templates_file: Path) -> None:
    """One ladder step sends every span of whole passes, and the bare server counts them all."""
    server_cores, sender_cores = serve_load._cores()
    senders = serve_load._Senders(templates_file, sender_cores, 1)
    try:
        ladder = serve_load._Ladder(senders, templates=2, calls_per_pass=0, step_s=0.2)
        with serve_load._running(lambda: serve_load._Bare(server_cores)) as bare:
            grpc_step = ladder.step(bare, "grpc", 10e3)
            http_step = ladder.step(bare, "http", 10e3)
    finally:
        senders.close()
    for step in (grpc_step, http_step):
        assert step.spans == 2000
        assert step.details["refused"] == step.details["errors"] == 0
        assert "spans counted" not in step.why
