"""Heartbeats, the contract the analyzer reads: names, units, cadence, own reader, stop."""

from __future__ import annotations

import time

from opentelemetry import metrics

import watchman_otel
from tests.sdk.otlp_receiver import OTLPReceiver, iter_points
from watchman_otel._heartbeat import HEARTBEAT_METRICS, HeartbeatSampler, rss_bytes


def heartbeats(receiver: OTLPReceiver) -> list[tuple[dict, float]]:
    """(resource attributes, uptime) of every `watchman.heartbeat` point received, in order."""
    return [
        (resource, point.as_double)
        for resource, metric in receiver.metrics()
        if metric.name == "watchman.heartbeat"
        for point in iter_points(metric)
    ]


def test_heartbeat_contract_names_units_and_gauges(clean_env, receiver):
    """Every heartbeat export carries the five documented gauges with their units, per instance."""
    sdk = watchman_otel.init(
        service_name="svc", endpoint=receiver.http_endpoint, heartbeat_interval=0.2
    )
    assert receiver.wait_for(lambda r: len(heartbeats(r)) >= 1)
    received = {metric.name: (resource, metric) for resource, metric in receiver.metrics()}
    assert set(HEARTBEAT_METRICS) <= set(received)
    for name, (unit, _) in HEARTBEAT_METRICS.items():
        resource, metric = received[name]
        assert metric.unit == unit, name
        assert metric.WhichOneof("data") == "gauge", name
        assert resource["service.instance.id"] == sdk.instance_id
    memory = next(iter_points(received["process.memory.usage"][1]))
    assert memory.as_int > 1_000_000
    threads = next(iter_points(received["process.thread.count"][1]))
    assert threads.as_int >= 1
    inflight = next(iter_points(received["watchman.inflight_requests"][1]))
    assert inflight.as_int == 0


def test_heartbeats_repeat_at_the_interval_with_growing_uptime(clean_env, receiver):
    """Heartbeats keep arriving on their own reader while the RED metric interval is a minute."""
    watchman_otel.init(
        service_name="svc",
        endpoint=receiver.http_endpoint,
        heartbeat_interval=0.1,
        metric_export_interval=60,
    )
    metrics.get_meter("app").create_counter("app.requests").add(1)
    assert receiver.wait_for(lambda r: len(heartbeats(r)) >= 4)
    uptimes = [uptime for _, uptime in heartbeats(receiver)]
    assert uptimes == sorted(uptimes)
    assert uptimes[0] > 0
    assert not any(metric.name == "app.requests" for _, metric in receiver.metrics())


def test_heartbeats_stop_after_shutdown(clean_env, receiver):
    """After shutdown() no further heartbeat arrives, however long we wait."""
    watchman_otel.init(service_name="svc", endpoint=receiver.http_endpoint, heartbeat_interval=0.1)
    assert receiver.wait_for(lambda r: len(heartbeats(r)) >= 2)
    watchman_otel.shutdown()
    count = len(heartbeats(receiver))
    assert not receiver.wait_for(lambda r: len(heartbeats(r)) > count, timeout=0.5)


def test_heartbeats_arrive_over_grpc(clean_env):
    """The heartbeat reader uses the configured protocol (grpc here)."""
    with OTLPReceiver() as receiver:
        watchman_otel.init(
            service_name="svc",
            endpoint=receiver.grpc_endpoint,
            protocol="grpc",
            heartbeat_interval=0.1,
        )
        assert receiver.wait_for(lambda r: len(heartbeats(r)) >= 2)
        assert set(receiver.transports()) == {"grpc"}
        watchman_otel.shutdown()


def test_sampler_values():
    """Uptime counts from the given start, CPU utilization reflects work done, RSS is positive."""
    sampler = HeartbeatSampler(started_at=time.time() - 5)
    assert 5 <= sampler.uptime() < 60
    sampler.cpu_utilization()
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    assert sampler.cpu_utilization() > 0
    assert rss_bytes() > 1_000_000


def test_process_start_time_is_in_the_past():
    """Without an explicit start, uptime is measured from the process start, not from init()."""
    assert HeartbeatSampler().uptime() > 0
