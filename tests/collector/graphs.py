"""Hand-built service graphs for the detect and cascade tests: calls second by second."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from watchman_collector.graph import ServiceGraph
from watchman_collector.records import Call, ConnectionType, Heartbeat, NodeKind

NS = 1_000_000_000
T0 = 1_700_000_000 * NS


@dataclass
class Dep:
    """One dependency of a service: called `per_request` times per request it serves."""

    server: str
    per_request: float = 1.0
    optional: bool = False  # its failure does not fail the caller
    timeout_s: float = 1.0
    kind: NodeKind = NodeKind.SERVICE


@dataclass
class Svc:
    """A service's own behaviour, changed by faults during the scenario."""

    latency_s: float = 0.02
    error_ratio: float = 0.0
    down: bool = False
    deps: list[Dep] = field(default_factory=list)


class Shop:
    """A small topology driven request by request: user → gateway → orders → payments/db …"""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.services: dict[str, Svc] = {
            "gateway": Svc(deps=[Dep("orders"), Dep("catalog")]),
            "orders": Svc(
                deps=[
                    Dep("payments"),
                    Dep("postgresql", kind=NodeKind.DATABASE),
                    Dep("recommend", optional=True, timeout_s=0.5),
                ]
            ),
            "catalog": Svc(deps=[Dep("postgresql", kind=NodeKind.DATABASE)]),
            "payments": Svc(latency_s=0.03),
            "recommend": Svc(),
            "postgresql": Svc(latency_s=0.005),
        }
        self.graph = ServiceGraph()
        self.now_ns = T0
        self.trace = 0

    def _call(self, name: str, t_ns: int, calls: list[Call]) -> tuple[float, bool]:
        """Serve one request at `name`; returns (latency, failed) as its caller sees it."""
        svc = self.services[name]
        latency = svc.latency_s * self.rng.uniform(0.7, 1.3)
        failed = self.rng.random() < svc.error_ratio
        for dep in svc.deps:
            n = int(dep.per_request) + (self.rng.random() < dep.per_request % 1)
            for _ in range(n):
                callee = self.services[dep.server]
                if callee.down:
                    client_lat, dep_failed, server_lat = 0.002, True, None
                else:
                    server_lat, dep_failed = self._call(dep.server, t_ns, calls)
                    client_lat = server_lat + 0.001
                    if client_lat > dep.timeout_s:
                        client_lat, dep_failed = dep.timeout_s, True
                self.trace += 1
                calls.append(
                    Call(
                        client=name,
                        server=dep.server,
                        connection_type=ConnectionType.DATABASE
                        if dep.kind is NodeKind.DATABASE
                        else ConnectionType.DIRECT,
                        time_ns=t_ns,
                        client_latency_s=client_lat,
                        server_latency_s=None
                        if server_lat is None or dep.kind is NodeKind.DATABASE
                        else server_lat,
                        failed=dep_failed,
                        trace_id=self.trace.to_bytes(16, "big"),
                        server_kind=dep.kind,
                    )
                )
                latency += client_lat
                failed = failed or (dep_failed and not dep.optional)
        return latency, failed

    def run(
        self,
        seconds: int,
        rate: int = 20,
        every_second: Callable[[int], None] | None = None,
    ) -> None:
        """Drive `rate` requests per second for `seconds`, heartbeats every 10 s."""
        for s in range(seconds):
            if every_second:
                every_second(s)
            calls: list[Call] = []
            for i in range(rate):
                t = self.now_ns + i * (NS // rate)
                if self.services["gateway"].down:
                    continue
                lat, failed = self._call("gateway", t, calls)
                self.trace += 1
                calls.append(
                    Call(
                        "user",
                        "gateway",
                        ConnectionType.DIRECT,
                        t,
                        None,
                        lat,
                        failed,
                        self.trace.to_bytes(16, "big"),
                        client_kind=NodeKind.USER,
                    )
                )
            self.graph.add_calls(calls)
            if (self.now_ns // NS) % 10 == 0:
                self.graph.add_heartbeats(
                    Heartbeat(name, f"{name}-1", self.now_ns, 100.0, cpu_utilization=0.2)
                    for name, svc in self.services.items()
                    if not svc.down and name != "postgresql"
                )
            self.now_ns += NS
