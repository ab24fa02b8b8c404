"""A real Prometheus server scrapes the analyzer's /metrics and PromQL sees the service graph."""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest

from tests.collector.test_serve_e2e import WAIT_S, running_server, send_calls, wait_for
from tests.conftest import free_port, require_binary

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RATE_QUERY = "sum by (client, server) (rate(traces_service_graph_request_total[1m]))"


def query(base: str, promql: str) -> list[dict]:
    response = httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=10)
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_promql_rate_by_client_and_server_returns_the_edges(tmp_path):
    """`sum by (client, server) (rate(traces_service_graph_request_total[1m]))` lists our edges."""
    binary = require_binary("prometheus")
    with running_server() as (_, addresses):
        send_calls(addresses, calls=5, failed_every=0)
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: watchman\n"
            "    static_configs:\n"
            f"      - targets: ['{addresses.api}']\n"
        )
        log = (tmp_path / "prometheus.log").open("w")
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:

            def ready() -> bool:
                if proc.poll() is not None:
                    pytest.fail(f"prometheus exited: {(tmp_path / 'prometheus.log').read_text()}")
                try:
                    return httpx.get(f"{base}/-/ready", timeout=2).status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(ready, "Prometheus to be ready")
            wait_for(
                lambda: query(base, 'up{job="watchman"} == 1'), "a successful scrape of /metrics"
            )
            # A second burst after the first scrape, so rate() sees the counters grow.
            send_calls(addresses, calls=5, failed_every=0)
            time.sleep(0.1)

            def grown() -> list[dict]:
                result = query(base, RATE_QUERY)
                rates = {
                    (r["metric"]["client"], r["metric"]["server"])
                    for r in result
                    if float(r["value"][1]) > 0
                }
                return result if ("frontend", "backend") in rates else []

            result = wait_for(grown, "a positive rate on frontend->backend")
            pairs = {(r["metric"]["client"], r["metric"]["server"]) for r in result}
            assert ("frontend", "backend") in pairs
            assert pairs <= {("frontend", "backend"), ("backend", "postgresql")}
            total = query(
                base, 'sum(traces_service_graph_request_total{client="frontend",server="backend"})'
            )
            assert float(total[0]["value"][1]) in (5.0, 10.0)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
