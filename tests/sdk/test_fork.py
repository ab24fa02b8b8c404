"""Fork (gunicorn/uvicorn workers): each worker has its own instance id, exporters and counts."""

from __future__ import annotations

import pytest

from tests.sdk.conftest import run_child
from tests.sdk.otlp_receiver import OTLPReceiver, iter_points

FORKING_APP = """
import os, time
import watchman_otel
from opentelemetry import metrics, trace

sdk = watchman_otel.init(
    service_name="worker-pool", endpoint={endpoint!r}, protocol={protocol!r},
    heartbeat_interval=0.1, metric_export_interval=0.1, span_schedule_delay=0.05,
)
# Made before the fork, as an app imported by a pre-fork server makes them.
counter = metrics.get_meter("app").create_counter("app.requests")
tracer = trace.get_tracer("app")
counter.add(5)
with tracer.start_as_current_span("in-parent"):
    pass
time.sleep(0.3)
pid = os.fork()
if pid == 0:
    counter.add(2)
    with tracer.start_as_current_span("in-child"):
        pass
    time.sleep(0.4)
    print("CHILD", watchman_otel._init.current().instance_id, os.getpid(), flush=True)
    watchman_otel.shutdown()
    os._exit(0)
print("PARENT", sdk.instance_id, os.getpid(), flush=True)
_, status = os.waitpid(pid, 0)
print("CHILD-STATUS", status, flush=True)
"""


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_forked_worker_reports_its_own_instance_and_counts(protocol):
    """The child exports under a new service.instance.id and pid, with only its own counts."""
    with OTLPReceiver() as receiver:
        endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
        result = run_child(FORKING_APP.format(endpoint=endpoint, protocol=protocol))
        assert result.returncode == 0, result.stderr
        assert result.lines("CHILD-STATUS") == ["0"]
        (parent_id, _) = result.lines("PARENT")[0].split()
        (child_id, child_pid) = result.lines("CHILD")[0].split()
        assert parent_id != child_id

        spans = {span.name: resource for resource, span in receiver.spans()}
        assert spans["in-parent"]["service.instance.id"] == parent_id
        assert spans["in-child"]["service.instance.id"] == child_id
        assert spans["in-child"]["process.pid"] == int(child_pid)

        counts: dict[str, set[int]] = {}
        beating: set[str] = set()
        for resource, metric in receiver.metrics():
            instance = resource["service.instance.id"]
            if metric.name == "app.requests":
                counts.setdefault(instance, set()).update(p.as_int for p in iter_points(metric))
            if metric.name == "watchman.heartbeat":
                beating.add(instance)
        assert counts[parent_id] == {5}
        assert counts[child_id] == {2}  # fresh metric state: not 7
        assert beating == {parent_id, child_id}
        assert "Traceback" not in result.stderr
