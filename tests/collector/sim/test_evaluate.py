"""The detection evaluation harness: metric definitions on hand-made timelines, and one real run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from watchman_collector.sim import get_topology
from watchman_collector.sim.evaluate import (
    AlertRecord,
    Case,
    CaseResult,
    Incident,
    Tick,
    aggregate,
    build_matrix,
    choose_targets,
    clear_time,
    detection_delays,
    false_alerts,
    firings,
    lead_times,
    main,
    node_name,
    percentile,
    rank_score,
    render_table,
    run_case,
)

S = 1_000_000_000
T0 = 1_000 * S  # onset
INCIDENT = Incident("payments", onset_ns=T0, heal_ns=T0 + 120 * S, affected={"orders": T0 + 20 * S})


def rc(service: str, state: str = "pending", alertname: str = "HighErrorRate") -> AlertRecord:
    return AlertRecord(alertname, service, "root_cause", service, state, "critical")


def symptom(service: str, cause: str, state: str, alertname: str = "HighErrorRate") -> AlertRecord:
    return AlertRecord(alertname, service, "symptom", cause, state, "critical")


def risk(service: str, cause: str) -> AlertRecord:
    return AlertRecord("CascadeRisk", service, "at_risk", cause, "firing", "warning")


def at(offset_s: float, *alerts: AlertRecord, ranking: tuple[str, ...] = ()) -> Tick:
    return Tick(T0 + round(offset_s * S), tuple(alerts), ranking)


def test_firing_before_onset_is_a_false_alert() -> None:
    """An alert that fires during the healthy warm-up counts as false, with its name and service."""
    ticks = [at(-30, symptom("gateway", "gateway", "firing", "HighLatency")), at(0), at(5)]
    found = false_alerts(ticks, INCIDENT)
    assert [(f.alertname, f.service, f.reason) for f in found] == [
        ("HighLatency", "gateway", "healthy phase")
    ]


def test_pending_alert_in_healthy_phase_is_not_false() -> None:
    """A pending alert that never fires is not a false alert (only firing pages anyone)."""
    ticks = [at(-30, rc("gateway")), at(-25, rc("gateway")), at(-20)]
    assert false_alerts(ticks, INCIDENT) == []
    assert false_alerts(ticks, None) == []


def test_every_firing_in_a_healthy_run_is_false() -> None:
    """With no incident at all, any firing alert is false, even one after the usual onset."""
    ticks = [at(500, rc("orders", "firing"))]
    assert [f.reason for f in false_alerts(ticks, None)] == ["healthy phase"]


def test_root_cause_firing_on_wrong_service_during_fault_is_false() -> None:
    """During the fault a firing root-cause alert on another service is false; symptoms are not."""
    ticks = [
        at(
            10,
            rc("payments", "firing"),
            rc("orders", "firing"),
            symptom("gateway", "payments", "firing"),
        )
    ]
    found = false_alerts(ticks, INCIDENT)
    assert [(f.service, f.reason) for f in found] == [("orders", "wrong root cause")]


def test_firings_counts_each_turn_to_firing_once() -> None:
    """An alert firing over several ticks fires once; firing again after resolving counts again."""
    ticks = [at(0, rc("a", "firing")), at(5, rc("a", "firing")), at(10), at(15, rc("a", "firing"))]
    assert [t for t, _ in firings(ticks)] == [T0, T0 + 15 * S]


def test_wrong_root_cause_gives_top1_zero() -> None:
    """When the first root-cause alert after onset ranks another service first, top-1 fails."""
    ticks = [at(5, rc("orders"), ranking=("orders", "payments"))]
    top1, top3, blamed, when = rank_score(ticks, INCIDENT)
    assert (top1, top3, blamed, when) == (False, True, "orders", T0 + 5 * S)


def test_top1_judged_at_first_root_cause_alert_not_before() -> None:
    """Ticks after onset without any root-cause alert are skipped; the ranking then is judged."""
    ticks = [
        at(-5, rc("orders"), ranking=("orders",)),
        at(5, symptom("orders", "payments", "pending"), ranking=("orders",)),
        at(10, rc("payments"), ranking=("payments", "orders")),
    ]
    assert rank_score(ticks, INCIDENT)[:3] == (True, True, "payments")


def test_top1_at_60s_reads_the_ranking_then() -> None:
    """Top-1 at onset + 60 s uses the first tick at or after it, alerts or not."""
    ticks = [
        at(5, rc("orders"), ranking=("orders",)),
        at(60, ranking=("payments",)),
    ]
    assert rank_score(ticks, INCIDENT, at_ns=T0 + 60 * S)[:3] == (True, True, "payments")


def test_no_root_cause_alert_scores_as_miss() -> None:
    """A fault no root-cause alert ever names scores top-1 and top-3 as misses."""
    assert rank_score([at(5), at(10)], INCIDENT) == (False, False, None, None)


def test_detection_delay_pending_and_firing() -> None:
    """Delay runs from onset to the target's first active and first firing root-cause alert."""
    ticks = [
        at(-10, rc("payments")),  # before onset: not a detection of this fault
        at(5, rc("orders")),
        at(15, rc("payments")),
        at(75, rc("payments", "firing")),
    ]
    assert detection_delays(ticks, INCIDENT) == (15.0, 75.0)


def test_missed_detection_has_no_delay() -> None:
    """Only symptoms or other services' alerts: the fault counts as missed (None, None)."""
    ticks = [at(5, symptom("orders", "payments", "firing")), at(10, rc("orders", "firing"))]
    assert detection_delays(ticks, INCIDENT) == (None, None)


def test_lead_time_against_own_breach_alert() -> None:
    """A CascadeRisk before the caller's own breach alert fires gives a positive lead."""
    ticks = [
        at(10, risk("orders", "payments")),
        at(40, risk("orders", "payments"), symptom("orders", "payments", "firing")),
    ]
    (lead,) = lead_times(ticks, INCIDENT)
    assert (lead.caller, lead.lead_s, lead.breach_source) == ("orders", 30.0, "alert")


def test_lead_time_falls_back_to_ground_truth_and_can_be_negative() -> None:
    """Without a breach alert the truth's first affected time is the breach; late warnings < 0."""
    ticks = [at(50, risk("orders", "payments"))]
    (lead,) = lead_times(ticks, INCIDENT)
    assert (lead.lead_s, lead.breach_source) == (-30.0, "truth")


def test_unwarned_caller_has_no_lead() -> None:
    """An affected caller that never got a CascadeRisk is listed with no lead time."""
    (lead,) = lead_times([at(5, rc("payments"))], INCIDENT)
    assert lead.warned_ns is None
    assert lead.lead_s is None


def test_clear_time_waits_for_every_alert() -> None:
    """Cleared is the first tick at or after heal with no alert at all, pending included."""
    ticks = [
        at(110),  # quiet before heal does not count
        at(120, rc("payments", "firing")),
        at(150, symptom("orders", "payments", "pending")),
        at(185),
    ]
    assert clear_time(ticks, INCIDENT) == 65.0
    assert clear_time(ticks[:3], INCIDENT) is None


def test_percentile_nearest_rank() -> None:
    """p90 is the nearest-rank quantile; no values gives None."""
    assert percentile(range(1, 11), 0.9) == 9
    assert percentile([4.0], 0.9) == 4.0
    assert percentile([], 0.5) is None


def test_database_targets_use_the_analyzers_node_name() -> None:
    """A database fault target is scored under the `system@host` name pairing gives it."""
    shop = get_topology("shop")
    assert node_name(shop, "store") == "postgresql@postgres.shop.svc.cluster.local"
    assert node_name(shop, "payments") == "payments"


def test_targets_are_chosen_deterministically_by_shape() -> None:
    """Each topology yields a leaf, a mid-tier service and a database, the same every time."""
    for name in ("shop", "mesh", "large"):
        topology = get_topology(name)
        targets = choose_targets(topology)
        assert set(targets) == {"leaf", "mid", "db"}
        assert targets == choose_targets(topology)
        assert {d.name for d in topology.databases} >= {targets["db"]}
    assert choose_targets(get_topology("shop"))["mid"] == "orders"


def test_matrix_covers_every_topology_kind_and_healthy_runs() -> None:
    """The full matrix has all topologies × kinds, ≥ 5 min warm-up, ≥ 3 min after heal."""
    cases = build_matrix()
    kinds = {(c.topology, c.kind) for c in cases}
    for topology in ("shop", "mesh", "large"):
        for kind in ("error", "latency", "crash", "ramp", "healthy"):
            assert (topology, kind) in kinds
    assert all(c.warmup_s >= 300 for c in cases)
    assert all(c.after_s >= 180 for c in cases if c.kind != "healthy")
    assert len({c.id for c in cases}) == len(cases)
    assert len(build_matrix(quick=True)) < len(cases)


def test_aggregate_counts_misses_as_wrong() -> None:
    """Aggregation: top-1 over all fault cases, delays over detected ones, false alerts summed."""
    ticks = [at(10, rc("payments"), ranking=("payments",)), at(200)]
    right = _result(ticks, "right")
    missed = _result([at(10), at(200)], "missed")
    row = aggregate([right, missed])
    assert row["top1"] == 0.5
    assert row["missed"] == 1
    assert row["delay_median_s"] == 10.0
    table = render_table([{"topology": "shop", "kind": "error", **row}])
    assert "| shop | error | 2 | 0.50 |" in table


def _result(ticks: list[Tick], name: str) -> CaseResult:
    result = CaseResult(name, "shop", "error", "payments", "leaf", 1)
    result.top1, result.top3, result.blamed, _ = rank_score(ticks, INCIDENT)
    result.delay_s, result.fire_delay_s = detection_delays(ticks, INCIDENT)
    result.detected = result.delay_s is not None
    result.clear_s = clear_time(ticks, INCIDENT)
    return result


@pytest.mark.integration
def test_quick_run_produces_every_field(tmp_path: Path) -> None:
    """A short real crash scenario through simulator and analyzer yields every metric's field."""
    case = Case("shop", "crash", "payments", "leaf", 3, 20.0, warmup_s=120, fault_s=60, after_s=60)
    result = run_case(case)
    assert result.id == "shop/crash/payments/s3"
    assert result.ticks > 50
    assert result.spans > 0
    assert result.blamed is not None  # something was blamed: a crash of payments is not silent
    for field in ("top1", "top3", "top1_60s", "delay_s", "fire_delay_s", "clear_s", "leads"):
        assert hasattr(result, field)
    assert all({"caller", "lead_s", "breach_source"} <= set(lead) for lead in result.leads)


def test_cli_writes_json_and_reports_from_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command writes rows and cases as JSON to --json; --from prints that run's table again."""
    tiny = [Case("shop", "error", "orders", "mid", 1, 5.0, warmup_s=60, fault_s=30, after_s=30)]
    monkeypatch.setattr("watchman_collector.sim.evaluate.build_matrix", lambda quick: tiny)
    out = tmp_path / "evaluation.json"
    assert main(["--quick", "--workers", "1", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["run"]["mode"] == "quick"
    assert doc["cases"][0]["id"] == "shop/error/orders/s1"
    assert doc["rows"][-1]["topology"] == "overall"
    assert {"top1", "delay_median_s", "false_alerts", "lead_median_s", "clear_max_s"} <= set(
        doc["rows"][-1]
    )
    capsys.readouterr()
    assert main(["--from", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| overall |" in printed
    assert "false alerts" in printed
