"""`watchman replay`: Collector file-exporter JSON lines through the stages, in event time."""

from __future__ import annotations

import gc
import gzip
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from watchman_collector import replay
from watchman_collector.cli import main
from watchman_collector.decode import decode_metrics, decode_traces
from watchman_collector.otlp_json import parse_metrics_request, parse_trace_request
from watchman_collector.replay import Replayer, ReplayError, summarize

T0 = 1_700_000_000_000_000_000
MS = 1_000_000


def attr(key: str, value: str | int) -> dict[str, Any]:
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def span(
    trace: int,
    span_id: int,
    parent: int,
    kind: int,
    start_ms: int,
    dur_ms: int,
    *,
    error: bool = False,
    attrs: Iterable[tuple[str, str | int]] = (),
) -> dict[str, Any]:
    return {
        "traceId": f"{trace:032x}",
        "spanId": f"{span_id:016x}",
        "parentSpanId": f"{parent:016x}" if parent else "",
        "name": "op",
        "kind": kind,
        "startTimeUnixNano": str(T0 + start_ms * MS),
        "endTimeUnixNano": str(T0 + (start_ms + dur_ms) * MS),
        "status": {"code": 2} if error else {},
        "attributes": [attr(k, v) for k, v in attrs],
    }


def traces_line(service: str, spans: list[dict[str, Any]]) -> str:
    return json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [
                            attr("service.name", service),
                            attr("service.instance.id", f"{service}-1"),
                        ]
                    },
                    "scopeSpans": [{"scope": {"name": "test"}, "spans": spans}],
                }
            ]
        }
    )


def heartbeat_line(service: str, at_ms: int, uptime_s: float) -> str:
    return json.dumps(
        {
            "resourceMetrics": [
                {
                    "resource": {
                        "attributes": [
                            attr("service.name", service),
                            attr("service.instance.id", f"{service}-1"),
                        ]
                    },
                    "scopeMetrics": [
                        {
                            "metrics": [
                                {
                                    "name": "watchman.heartbeat",
                                    "gauge": {
                                        "dataPoints": [
                                            {
                                                "timeUnixNano": str(T0 + at_ms * MS),
                                                "asDouble": uptime_s,
                                            }
                                        ]
                                    },
                                }
                            ]
                        }
                    ],
                }
            ]
        }
    )


def recording(calls: int = 20, failed_every: int = 4) -> str:
    """web calls api `calls` times (every `failed_every`-th fails), api queries postgresql."""
    lines = []
    for i in range(calls):
        trace = i + 1
        failed = i % failed_every == 0
        client = span(trace, 1000 + i, 0, 3, i * 100, 40, error=failed)
        server = span(
            trace,
            2000 + i,
            1000 + i,
            2,
            i * 100 + 5,
            30,
            error=failed,
            attrs=[("http.response.status_code", 500 if failed else 200)],
        )
        db = span(
            trace, 3000 + i, 2000 + i, 3, i * 100 + 10, 5, attrs=[("db.system.name", "postgresql")]
        )
        lines.append(traces_line("web", [client]))
        lines.append(traces_line("api", [server, db]))
        if i % 5 == 0:
            lines.append(heartbeat_line("api", i * 100, 10 + i / 10))
    return "\n".join(lines) + "\n"


def edges_of(summary: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["client"], e["server"]): e for e in summary["edges"]}


@pytest.fixture
def recorded(tmp_path: Path) -> Path:
    path = tmp_path / "traces.jsonl"
    path.write_text(recording())
    return path


def test_replay_builds_the_graph_from_a_recording(recorded: Path) -> None:
    """Paired calls with failures, a database edge from an unpaired client span, heartbeats."""
    replayer = Replayer()
    stats = replayer.replay([recorded], progress=False)
    assert stats.trace_requests == 40
    assert stats.metric_requests == 4
    assert stats.spans == 60
    summary = summarize(replayer)
    edges = edges_of(summary)
    assert edges[("web", "api")]["calls"] == 20
    assert edges[("web", "api")]["failed"] == 5
    db = edges[("api", "postgresql")]
    assert db["calls"] == 20
    assert db["connection_type"] == "database"
    assert summary["input"]["heartbeats"] == 4
    api = next(n for n in summary["nodes"] if n["name"] == "api")
    assert api["instances"] == 1


def test_watermark_is_the_latest_event_time(recorded: Path) -> None:
    """The event clock ends at the last span's end, not at the wall clock."""
    replayer = Replayer()
    replayer.replay([recorded], progress=False)
    assert replayer.clock.now_ns() == T0 + (19 * 100 + 40) * MS


def test_gzip_input_gives_the_same_summary(tmp_path: Path, recorded: Path) -> None:
    """A gzip file (detected by content) replays exactly like the plain one."""
    packed = tmp_path / "traces.jsonl.gz"
    packed.write_bytes(gzip.compress(recorded.read_bytes()))
    plain, zipped = Replayer(), Replayer()
    plain.replay([recorded], progress=False)
    zipped.replay([packed], progress=False)
    assert summarize(plain) == summarize(zipped)


def test_replay_is_deterministic(recorded: Path) -> None:
    """Two replays of the same recording give identical summaries."""
    first, second = Replayer(), Replayer()
    first.replay([recorded], progress=False)
    second.replay([recorded], progress=False)
    assert summarize(first) == summarize(second)


def test_bad_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    """Malformed JSON and bad ids are skipped with file:line; logs lines are counted apart."""
    path = tmp_path / "mixed.jsonl"
    good = traces_line("web", [span(1, 1, 0, 3, 0, 10, attrs=[("peer.service", "billing")])])
    path.write_text(
        "\n".join(['{"resourceSpans": [', good, "", '{"resourceLogs": []}', "[1, 2]"]) + "\n"
    )
    replayer = Replayer()
    stats = replayer.replay([path], progress=False)
    assert stats.bad_lines == 2
    assert stats.blank_lines == 1
    assert stats.log_requests == 1
    assert stats.errors[0].startswith(f"{path}:1: ")
    assert ("web", "billing") in edges_of(summarize(replayer))


def test_strict_mode_stops_at_the_first_bad_line(tmp_path: Path) -> None:
    """With strict=True a bad line raises ReplayError naming file and line."""
    path = tmp_path / "bad.jsonl"
    path.write_text("not json\n")
    with pytest.raises(ReplayError, match=r"bad\.jsonl:1: "):
        Replayer(strict=True).replay([path], progress=False)


def test_cli_summary_goes_to_stdout_as_one_json_line(
    recorded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`watchman replay --summary`: stdout is one JSON object; people's text is on stderr."""
    assert main(["replay", "--summary", "--progress", "never", str(recorded)], env={}) == 0
    out, err = capsys.readouterr()
    (line,) = out.splitlines()
    summary = json.loads(line)
    assert summary["type"] == "summary"
    assert edges_of(summary)[("web", "api")]["calls"] == 20
    assert "web -> api" in err


def test_cli_without_summary_keeps_stdout_empty(
    recorded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --summary nothing is written to stdout (it is reserved for alert transitions)."""
    assert main(["replay", "--progress", "never", str(recorded)], env={}) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "edges (2)" in err


def test_cli_strict_and_missing_file_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad line under --strict and an unreadable path both exit with code 1."""
    path = tmp_path / "bad.jsonl"
    path.write_text("{}\n")
    assert main(["replay", "--strict", str(path)], env={}) == 1
    assert main(["replay", str(tmp_path / "missing.jsonl")], env={}) == 1
    assert "missing.jsonl" in capsys.readouterr().err


def test_progress_bar_does_not_change_the_result(
    recorded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Drawing the progress bar (forced on) leaves the replay's result unchanged."""
    with_bar, without = Replayer(), Replayer()
    with_bar.replay([recorded], progress=True)
    without.replay([recorded], progress=False)
    assert summarize(with_bar) == summarize(without)
    assert capsys.readouterr().out == ""


def test_stdin_is_read_with_dash(recorded: Path) -> None:
    """`watchman replay --summary -` reads the recording from stdin."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "watchman_collector", "replay", "--summary", "-q", "-"],
        input=recorded.read_bytes(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert edges_of(summary)[("web", "api")]["calls"] == 20


@pytest.fixture(scope="module")
def faulty_recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated shop whose payments service fails for a while, as OTLP JSON lines."""
    from watchman_collector.sim import Scenario, Simulator, get_topology
    from watchman_collector.sim.faults import Fault, FaultKind
    from watchman_collector.sim.writer import write_jsonl

    fault = Fault("payments", FaultKind.ERROR, 50, 50)
    scenario = Scenario(
        get_topology("shop"), seed=3, duration_s=120, rate=4, faults=(fault,), drain_s=10
    )
    path = tmp_path_factory.mktemp("replay") / "shop.jsonl"
    write_jsonl(Simulator(scenario).exports(), path)
    return path


def replay_output(path: Path) -> tuple[str, dict[str, Any]]:
    """The alert transition lines and the summary a replay of `path` writes."""
    out = io.StringIO()
    replayer = Replayer(out=out)
    replayer.replay([path], progress=False)
    return out.getvalue(), summarize(replayer)


def test_direct_json_decode_gives_the_same_alerts_as_the_protobuf_path(
    faulty_recording: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alert transition lines and summary are byte-for-byte those of the protobuf decode paths."""
    lines, summary = replay_output(faulty_recording)
    assert '"status":"firing"' in lines
    monkeypatch.setattr(
        replay, "decode_trace_json", lambda data: decode_traces(parse_trace_request(data))
    )
    monkeypatch.setattr(
        replay, "decode_metrics_json", lambda data: decode_metrics(parse_metrics_request(data))
    )
    assert replay_output(faulty_recording) == (lines, summary)


def test_replay_leaves_the_garbage_collector_as_it_found_it(recorded: Path) -> None:
    """Replay pauses the cyclic collector only while decoding a line, and restores its state."""
    assert gc.isenabled()
    Replayer().replay([recorded], progress=False)
    assert gc.isenabled()
    gc.disable()
    try:
        Replayer().replay([recorded], progress=False)
        assert not gc.isenabled()
    finally:
        gc.enable()
