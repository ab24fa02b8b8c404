"""Grafana provisioning: datasources, dashboard JSON, and every panel query against the analyzer.

Panel queries are checked twice: each metric name must be one the analyzer documents (or a
recording rule's, or Prometheus's own), and each expression must parse as PromQL, which
`promtool check rules` proves by loading them all as recording rules.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_binary
from tests.deploy import (
    DEPLOY,
    PROMETHEUS_OWN_NAMES,
    REPO,
    analyzer_metric_names,
    load_yaml,
    promql_metric_names,
    recorded_names,
    run_tool,
)

GRAFANA = DEPLOY / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
INFINITY = "yesoreyeram-infinity-datasource"
# Grafana's built-in variables, replaced by something of the right kind for promtool.
_GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
_LABEL_VALUES = re.compile(r"label_values\((?:([A-Za-z_:][\w:]*)\s*(?:\{[^}]*\})?\s*,)?\s*\w+\)")


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _datasources() -> dict[str, dict[str, Any]]:
    config = load_yaml(GRAFANA / "provisioning" / "datasources" / "datasources.yml")
    return {ds["uid"]: ds for ds in config["datasources"]}


def _prometheus_queries() -> Iterator[tuple[str, str, str]]:
    """(dashboard uid, panel title and refId, expression) of every Prometheus target."""
    for path in DASHBOARDS:
        dashboard = _load(path)
        for panel in _panels(dashboard):
            for target in panel.get("targets", []):
                if target["datasource"]["type"] == "prometheus":
                    where = f"{panel['title']} {target['refId']}"
                    yield dashboard["uid"], where, target["expr"]


def test_the_four_dashboards_exist() -> None:
    """Service overview, service graph, alerts and cascade, analyzer self-health."""
    uids = {_load(path)["uid"] for path in DASHBOARDS}
    assert uids == {
        "watchman-overview",
        "watchman-service-graph",
        "watchman-alerts",
        "watchman-analyzer",
    }


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_has_the_fields_grafana_needs(path: Path) -> None:
    """Each dashboard has uid, title, schemaVersion, time, panels with type, title and gridPos."""
    dashboard = _load(path)
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"])
    assert dashboard["title"].startswith("watchman / ")
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["id"] is None  # provisioning assigns database ids
    assert "watchman" in dashboard["tags"]
    assert {"from", "to"} <= set(dashboard["time"])
    assert isinstance(dashboard["templating"]["list"], list)
    for panel in _panels(dashboard):
        assert panel["type"]
        assert panel["title"]
        grid = panel["gridPos"]
        assert grid["w"] > 0
        assert grid["h"] > 0
        assert grid["x"] >= 0
        assert grid["x"] + grid["w"] <= 24


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panel_ids_are_unique(path: Path) -> None:
    """No two panels of a dashboard share an id; no two targets of a panel share a refId."""
    panels = list(_panels(_load(path)))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        refs = [target["refId"] for target in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_datasource_is_provisioned(path: Path) -> None:
    """Each panel, target and variable names a provisioned datasource uid of the right type."""
    datasources = _datasources()
    dashboard = _load(path)
    refs = [v["datasource"] for v in dashboard["templating"]["list"]]
    for panel in _panels(dashboard):
        if panel["type"] in {"row", "text"}:
            continue
        refs.append(panel["datasource"])
        refs.extend(target["datasource"] for target in panel["targets"])
    assert refs
    for ref in refs:
        assert ref["uid"] in datasources, ref
        assert datasources[ref["uid"]]["type"] == ref["type"], ref


def test_every_query_reads_series_the_analyzer_exposes() -> None:
    """Every metric in every panel and variable query is documented, recorded, or Prometheus's."""
    allowed = analyzer_metric_names() | recorded_names() | PROMETHEUS_OWN_NAMES
    checked = 0
    for uid, where, expr in _prometheus_queries():
        names = promql_metric_names(expr)
        assert names, (uid, where)
        assert names <= allowed, (uid, where, names - allowed)
        checked += 1
    for path in DASHBOARDS:
        for variable in _load(path)["templating"]["list"]:
            match = _LABEL_VALUES.fullmatch(variable["definition"])
            assert match, variable["definition"]
            assert match.group(1) in allowed
    assert checked > 30


def test_every_query_parses_as_promql(tmp_path: Path) -> None:
    """`promtool check rules` loads every panel expression as a recording rule."""
    promtool = require_binary("promtool")
    rules = []
    for i, (uid, _where, expr) in enumerate(_prometheus_queries()):
        promql = expr
        for variable, value in _GRAFANA_VARS.items():
            promql = promql.replace(variable, value)
        promql = re.sub(r"\$\{?\w+(?::\w+)?\}?", "x", promql)
        rules.append({"record": f"panel:{uid.replace('-', '_')}:q{i}", "expr": promql})
    path = tmp_path / "panels.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = run_tool([promtool, "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_promql_check_rejects_a_broken_expression(tmp_path: Path) -> None:
    """The parse check can fail: promtool rejects an expression with an unclosed call."""
    promtool = require_binary("promtool")
    path = tmp_path / "broken.rules.yml"
    rule = {"record": "panel:broken", "expr": "sum(rate(watchman_service_requests_total[1m])"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": [rule]}]}))
    assert run_tool([promtool, "check", "rules", str(path)]).returncode != 0


def test_node_graph_reads_nodes_and_edges_from_the_analyzer_api() -> None:
    """The node graph panel asks the Infinity datasource for the nodes and edges frames."""
    dashboard = _load(GRAFANA / "dashboards" / "watchman-service-graph.json")
    (panel,) = [p for p in _panels(dashboard) if p["type"] == "nodeGraph"]
    assert panel["datasource"] == {"type": INFINITY, "uid": "watchman-api"}
    formats = {t["format"]: t for t in panel["targets"]}
    assert set(formats) == {"node-graph-nodes", "node-graph-edges"}
    assert formats["node-graph-nodes"]["root_selector"] == "nodes"
    assert formats["node-graph-edges"]["root_selector"] == "edges"
    architecture = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    for target in panel["targets"]:
        assert target["type"] == "json"
        assert target["source"] == "url"
        assert f"`{target['url']}`" in architecture  # a documented API route


def test_datasources_provisioning() -> None:
    """Prometheus is the default, Tempo's service map reads it, Infinity has the plugin's id."""
    config = load_yaml(GRAFANA / "provisioning" / "datasources" / "datasources.yml")
    assert config["apiVersion"] == 1
    uids = [ds["uid"] for ds in config["datasources"]]
    assert len(uids) == len(set(uids))
    datasources = _datasources()
    assert datasources["prometheus"]["type"] == "prometheus"
    assert datasources["prometheus"]["isDefault"] is True
    service_map = datasources["tempo"]["jsonData"]["serviceMap"]["datasourceUid"]
    assert datasources[service_map]["type"] == "prometheus"
    infinity = datasources["watchman-api"]
    assert infinity["type"] == INFINITY
    assert infinity["url"] in infinity["jsonData"]["allowedHosts"]
    for destination in datasources["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]:
        assert destination["datasourceUid"] in datasources


def test_dashboard_provider_loads_files() -> None:
    """One file provider, in a watchman folder, that the UI cannot edit out of sync."""
    config = load_yaml(GRAFANA / "provisioning" / "dashboards" / "dashboards.yml")
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["allowUiUpdates"] is False
    assert provider["options"]["path"].startswith("/")
