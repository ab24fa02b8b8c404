"""`watchman replay`: Collector file-exporter JSON lines through the stages, in event time."""

from __future__ import annotations

import gzip
import json

import pytest
from watchman_collector.cli import main
from watchman_collector.replay import Replayer, ReplayError, summarize

T0 = 1_700_000_000_000_000_000
MS = 1_000_000


def attr(key, value):
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def span(trace, span_id, parent, kind, start_ms, dur_ms, *, error=False, attrs=()):
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


def traces_line(service, spans):
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


def heartbeat_line(service, at_ms, uptime_s):
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


def recording(calls=20, failed_every=4):
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


def edges_of(summary):
    return {(e["client"], e["server"]): e for e in summary["edges"]}


@pytest.fixture
def recorded(tmp_path):
    path = tmp_path / "traces.jsonl"
    path.write_text(recording())
    return path


def test_replay_builds_the_graph_from_a_recording(recorded):
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


def test_watermark_is_the_latest_event_time(recorded):
    """The event clock ends at the last span's end, not at the wall clock."""
    replayer = Replayer()
    replayer.replay([recorded], progress=False)
    assert replayer.clock.now_ns() == T0 + (19 * 100 + 40) * MS


def test_gzip_input_gives_the_same_summary(tmp_path, recorded):
    """A gzip file (detected by content) replays exactly like the plain one."""
    packed = tmp_path / "traces.jsonl.gz"
    packed.write_bytes(gzip.compress(recorded.read_bytes()))
    plain, zipped = Replayer(), Replayer()
    plain.replay([recorded], progress=False)
    zipped.replay([packed], progress=False)
    assert summarize(plain) == summarize(zipped)


def test_replay_is_deterministic(recorded):
    """Two replays of the same recording give identical summaries."""
    first, second = Replayer(), Replayer()
    first.replay([recorded], progress=False)
    second.replay([recorded], progress=False)
    assert summarize(first) == summarize(second)


def test_bad_lines_are_counted_and_skipped(tmp_path):
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


def test_strict_mode_stops_at_the_first_bad_line(tmp_path):
    """With strict=True a bad line raises ReplayError naming file and line."""
    path = tmp_path / "bad.jsonl"
    path.write_text("not json\n")
    with pytest.raises(ReplayError, match=r"bad\.jsonl:1: "):
        Replayer(strict=True).replay([path], progress=False)


def test_cli_summary_goes_to_stdout_as_one_json_line(recorded, capsys):
    """`watchman replay --summary`: stdout is one JSON object; people's text is on stderr."""
    assert main(["replay", "--summary", "--progress", "never", str(recorded)], env={}) == 0
    out, err = capsys.readouterr()
    (line,) = out.splitlines()
    summary = json.loads(line)
    assert summary["type"] == "summary"
    assert edges_of(summary)[("web", "api")]["calls"] == 20
    assert "web -> api" in err


def test_cli_without_summary_keeps_stdout_empty(recorded, capsys):
    """Without --summary nothing is written to stdout (it is reserved for alert transitions)."""
    assert main(["replay", "--progress", "never", str(recorded)], env={}) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "edges (2)" in err


def test_cli_strict_and_missing_file_exit_1(tmp_path, capsys):
    """A bad line under --strict and an unreadable path both exit with code 1."""
    path = tmp_path / "bad.jsonl"
    path.write_text("{}\n")
    assert main(["replay", "--strict", str(path)], env={}) == 1
    assert main(["replay", str(tmp_path / "missing.jsonl")], env={}) == 1
    assert "missing.jsonl" in capsys.readouterr().err


def test_progress_bar_does_not_change_the_result(recorded, capsys):
    """Drawing the progress bar (forced on) leaves the replay's result unchanged."""
    with_bar, without = Replayer(), Replayer()
    with_bar.replay([recorded], progress=True)
    without.replay([recorded], progress=False)
    assert summarize(with_bar) == summarize(without)
    assert capsys.readouterr().out == ""


def test_stdin_is_read_with_dash(recorded):
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
