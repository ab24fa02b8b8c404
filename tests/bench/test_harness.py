"""The benchmark harness: goals read from their text, tables, repeated runs, JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import Figure, goal_met, render_repeats, render_table, write_json


@pytest.mark.parametrize(
    ("goal", "value", "ratio", "expected"),
    [
        ("value >= 200k spans/s", 210_000.0, None, True),
        ("value >= 200k spans/s", 73_000.0, 0.05, False),
        ("value <= 100 ms", 99.5, 3.0, True),
        ("value <= 100 ms", 240.0, None, False),
        ("ratio <= 0.50", 40.0, 0.31, True),
        ("<= 0.50", 40.0, 0.7, False),
        ("<= 0.50", 40.0, None, None),
        ("value >= 1.5M spans/s", 1_600_000.0, None, True),
        ("within 5% of collector-up p99", 1.0, 1.01, None),
        (None, 1.0, 1.0, None),
    ],
)
def test_goal_met_reads_the_simple_goal_forms(
    goal: str | None, value: float, ratio: float | None, expected: bool | None
) -> None:
    """A goal names the value or the ratio (the default), a comparison and a scaled number."""
    assert goal_met(goal, value, ratio) is expected


def test_table_says_whether_each_goal_was_met() -> None:
    """The table shows value, same-run baseline, ratio and the goal's verdict per figure."""
    figures = [
        Figure("tick", 240.0, "ms", baseline=10.0, baseline_name="window", goal="value <= 100 ms"),
        Figure("sdk", 40.0, "µs", baseline=120.0, goal="<= 0.50"),
        Figure("share", 12.0, "%"),
    ]
    table = render_table(figures)
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["figure", "value"]
    assert "[goal value <= 100 ms: NOT met]" in lines[2]
    assert "24.00" in lines[2]
    assert "[goal <= 0.50: met]" in lines[3]
    assert "0.33" in lines[3]
    assert lines[4].split()[-1] == "–"


def test_repeats_put_the_runs_side_by_side_and_json_keeps_every_run(tmp_path: Path) -> None:
    """`--repeat` output lists each compared figure once with its ratio per run; JSON keeps all."""
    first = [Figure("a", 2.0, "x", baseline=4.0), Figure("note", 1.0, "x")]
    second = [Figure("a", 3.0, "x", baseline=4.0), Figure("note", 1.0, "x")]
    table = render_repeats([first, second]).splitlines()
    assert len(table) == 3  # header, rule, figure "a" (no ratio, no goal: not compared)
    assert table[2].split() == ["a", "2.0", "x", "0.50", "3.0", "x", "0.75"]
    path = tmp_path / "out.json"
    write_json([first, second], path, quick=True)
    document = json.loads(path.read_text())
    assert [run[0]["ratio"] for run in document["runs"]] == [0.5, 0.75]
    assert document["figures"][0]["value"] == 3.0
