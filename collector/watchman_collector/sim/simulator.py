"""The seeded event-time simulation: requests flowing through a topology → OTLP export requests.

Entry requests arrive as a Poisson stream. Each request is played depth-first: a SERVER span per
service hop whose own work is log-normal around the endpoint's median, CLIENT spans around each
downstream call (with the caller's timeout, retries carrying `http.request.resend_count`, optional
calls whose failure is swallowed, sequential or parallel fan-out), database CLIENT spans, and
PRODUCER spans whose messages a consumer processes later under a CONSUMER span. A callee keeps
working after its caller timed out, so its SERVER span outlives the CLIENT span, as in life.

Faults and noise change the work and the answers (`faults.py`). Every outcome carries the index of
the fault that caused its failure or delay, which is how the ground truth records who was truly
affected. Spans are then handed to their process's SDK model (`process.py`), which decides when
they are exported; exports of all processes come out merged in event-time order.

Everything random comes from generators seeded by the scenario's seed, and nothing iterates over
hash-ordered sets, so one seed gives the same bytes on every run.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator

from watchman_collector.sim.encode import AttrValue, SimSpan
from watchman_collector.sim.faults import FaultKind
from watchman_collector.sim.process import Export, ServiceProcess
from watchman_collector.sim.scenario import FaultTruth, GroundTruth, Scenario
from watchman_collector.sim.topology import (
    Database,
    Downstream,
    Endpoint,
    External,
    Service,
    Topic,
)

__all__ = ["Simulator", "simulate"]

_SERVER, _CLIENT, _PRODUCER, _CONSUMER = 2, 3, 4, 5
_BASE_ERROR_RATIO = 0.0005  # unexplained 500s of a healthy system
_SLOWED_MIN_S = 0.1  # a request counts as slowed by a fault from this much added time …
_SLOWED_RATIO = 0.5  # … when that is also half its unfaulted duration or more
_CHUNK_NS = 1_000_000_000

# error.type and exception type per client library: (timeout, refused, reset)
_HTTP_ERRORS = {
    "httpx": (
        ("ReadTimeout", "httpx.ReadTimeout", "timed out"),
        ("ConnectError", "httpx.ConnectError", "[Errno 111] Connection refused"),
        ("RemoteProtocolError", "httpx.RemoteProtocolError", "Server disconnected"),
    ),
    "requests": (
        ("ReadTimeout", "requests.exceptions.ReadTimeout", "Read timed out. (read timeout=%s)"),
        ("ConnectionError", "requests.exceptions.ConnectionError", "Connection refused"),
        ("ConnectionError", "requests.exceptions.ConnectionError", "Connection aborted."),
    ),
}
_DB_SCOPE = {
    "postgresql": "opentelemetry.instrumentation.psycopg",
    "mysql": "opentelemetry.instrumentation.pymysql",
    "redis": "opentelemetry.instrumentation.redis",
    "mongodb": "opentelemetry.instrumentation.pymongo",
}
# (error, timeout, refused) error types per database client
_DB_ERRORS = {
    "postgresql": ("InternalError", "QueryCanceled", "OperationalError"),
    "mysql": ("InternalError", "OperationalError", "OperationalError"),
    "redis": ("ResponseError", "TimeoutError", "ConnectionError"),
    "mongodb": ("OperationFailure", "ExecutionTimeout", "ServerSelectionTimeoutError"),
}
_USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 Version/18.1 Safari/605",
)
_CLIENT_UA = {"httpx": "python-httpx/0.28.1", "requests": "python-requests/2.32.3"}


class _Outcome:
    """What a hop returned to its caller."""

    __slots__ = ("cause", "delay_cause", "delay_s", "end_ns", "error", "status")

    def __init__(
        self,
        end_ns: int,
        status: int,
        *,
        error: str = "",
        cause: int | None = None,
        delay_s: float = 0.0,
        delay_cause: int | None = None,
    ) -> None:
        self.end_ns = end_ns
        self.status = status  # HTTP status; 0 when no response came
        self.error = error  # "" | "timeout" | "refused" | "reset" | an error.type
        self.cause = cause  # fault index behind a failure
        self.delay_s = delay_s  # time added by a fault on the critical path
        self.delay_cause = delay_cause

    @property
    def failed(self) -> bool:
        return bool(self.error) or self.status >= 500


class Simulator:
    """Plays one scenario. Iterate `exports()` once; `truth` is complete when it is exhausted."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        topo = scenario.topology
        self.topology = topo
        self.noise = scenario.resolved_noise()
        self.rng = random.Random(f"traffic:{scenario.seed}")
        self.truth = GroundTruth(
            topology=topo.name,
            seed=scenario.seed,
            start_ns=scenario.start_ns,
            end_ns=scenario.ns(scenario.duration_s),
            rate=scenario.rate,
            noise=self.noise,
        )
        self._faults = scenario.faults
        for fault in scenario.faults:
            self.truth.faults.append(
                FaultTruth(
                    target=fault.target,
                    kind=fault.kind,
                    onset_ns=scenario.ns(fault.onset_s),
                    heal_ns=scenario.ns(fault.heal_s),
                    magnitude=fault.strength,
                )
            )
        self._faults_of: dict[str, list[int]] = {}
        for i, fault in enumerate(scenario.faults):
            self._faults_of.setdefault(fault.target, []).append(i)
        self._blips_of: dict[str, list[int]] = {}
        for i, blip in enumerate(self.noise.blips):
            self._blips_of.setdefault(blip.target, []).append(i)

        self.processes: dict[str, list[ServiceProcess]] = {}
        for svc in topo.services:
            windows = [
                (scenario.ns(f.onset_s), scenario.ns(f.heal_s))
                for f in scenario.faults
                if f.target == svc.name and f.kind is FaultKind.CRASH
            ]
            self.processes[svc.name] = [
                ServiceProcess(
                    svc,
                    i,
                    seed=scenario.seed,
                    start_ns=scenario.start_ns,
                    environment=scenario.environment,
                    heartbeat_interval_s=scenario.heartbeat_interval_s,
                    crashes=_merge(windows),
                )
                for i in range(svc.instances)
            ]
        self._all = [p for svc in topo.services for p in self.processes[svc.name]]
        ip_rng = random.Random(f"ips:{scenario.seed}")
        self._cluster_ip = {
            s.name: f"10.96.{ip_rng.randrange(0, 255)}.{ip_rng.randrange(1, 255)}"
            for s in topo.services
        }
        self._deliveries: list[tuple[int, int, str, bytes, bytes]] = []
        self._seq = 0
        self._used = False

    # ---- ids, time, faults -------------------------------------------------------------------

    def _trace_id(self) -> bytes:
        return (self.rng.getrandbits(128) or 1).to_bytes(16, "big")

    def _span_id(self) -> bytes:
        return (self.rng.getrandbits(64) or 1).to_bytes(8, "big")

    def _t_s(self, time_ns: int) -> float:
        return (time_ns - self.scenario.start_ns) / 1e9

    def _lognormal(self, median_s: float, sigma: float = 0.4) -> float:
        return min(median_s * math.exp(self.rng.gauss(0.0, sigma)), median_s * 15)

    def _added_latency(self, target: str, time_ns: int) -> tuple[float, int | None]:
        t_s = self._t_s(time_ns)
        added, cause, biggest = 0.0, None, 0.0
        for i in self._faults_of.get(target, ()):
            extra = self._faults[i].added_latency_s(t_s)
            added += extra
            if extra > biggest:
                cause, biggest = i, extra
        for i in self._blips_of.get(target, ()):
            added += self.noise.blips[i].added_latency_s(t_s)
        return added, cause

    def _active(self, target: str, kind: FaultKind, time_ns: int) -> int | None:
        t_s = self._t_s(time_ns)
        for i in self._faults_of.get(target, ()):
            fault = self._faults[i]
            if fault.kind is kind and fault.active(t_s):
                return i
        return None

    def _errors_now(self, target: str, time_ns: int) -> int | None:
        i = self._active(target, FaultKind.ERROR, time_ns)
        if i is not None and self.rng.random() < self._faults[i].strength:
            return i
        return None

    def _crash_within(self, target: str, start_ns: int, end_ns: int) -> tuple[int, int] | None:
        for i in self._faults_of.get(target, ()):
            fault = self._faults[i]
            onset = self.scenario.ns(fault.onset_s)
            if fault.kind is FaultKind.CRASH and start_ns < onset <= end_ns:
                return onset, i
        return None

    def _heal_ns(self, fault: int) -> int:
        return self.scenario.ns(self._faults[fault].heal_s)

    # ---- hops ----------------------------------------------------------------------------------

    def _serve(
        self,
        svc: Service,
        ep: Endpoint,
        arrive_ns: int,
        trace_id: bytes,
        parent_id: bytes,
        *,
        caller: ServiceProcess | None,
        user_agent: str,
    ) -> _Outcome:
        down = self._active(svc.name, FaultKind.CRASH, arrive_ns)
        if down is not None:
            self.truth.faults[down].impact(svc.name).note_failed(arrive_ns)
            return _Outcome(arrive_ns, 0, error="refused", cause=down)
        proc = self.rng.choice(self.processes[svc.name])
        span_id = self._span_id()
        out = self._work(svc, ep, proc, arrive_ns, trace_id=trace_id, span_id=span_id)
        crash = self._crash_within(svc.name, arrive_ns, out.end_ns)
        if crash is not None:
            return _Outcome(crash[0], 0, error="reset", cause=crash[1])
        path = _path(ep.route, self.rng)
        attrs: list[tuple[str, AttrValue]] = [
            ("http.request.method", ep.method),
            ("url.scheme", "http"),
            ("url.path", path),
            ("http.route", ep.route),
            ("server.address", svc.dns),
            ("server.port", svc.port),
            ("network.protocol.version", "1.1"),
            ("client.address", caller.ip if caller else _user_ip(self.rng)),
            ("user_agent.original", user_agent),
            ("http.response.status_code", out.status),
        ]
        if out.status >= 500:
            attrs.append(("error.type", str(out.status)))
        proc.finish(
            SimSpan(
                trace_id,
                span_id,
                parent_id,
                _SERVER,
                f"{ep.method} {ep.route}",
                arrive_ns,
                out.end_ns,
                attrs,
                "opentelemetry.instrumentation.asgi",
                remote_parent=bool(parent_id),
                error=out.status >= 500,
            )
        )
        self._judge(svc.name, arrive_ns, out)
        return out

    def _judge(self, service: str, start_ns: int, out: _Outcome) -> None:
        """Record the ground truth of one served request, at the time it was answered."""
        if out.failed and out.cause is not None:
            self.truth.faults[out.cause].impact(service).note_failed(out.end_ns)
        if out.delay_cause is not None and out.delay_s >= _SLOWED_MIN_S:
            unfaulted = (out.end_ns - start_ns) / 1e9 - out.delay_s
            if out.delay_s >= _SLOWED_RATIO * unfaulted:
                self.truth.faults[out.delay_cause].impact(service).note_slowed(out.end_ns)

    def _work(
        self,
        svc: Service,
        ep: Endpoint,
        proc: ServiceProcess,
        start_ns: int,
        *,
        trace_id: bytes,
        span_id: bytes,
    ) -> _Outcome:
        """A service's own work and calls for one request; the outcome it answers with."""
        rng = self.rng
        base = self._lognormal(ep.work_s)
        added, lat_cause = self._added_latency(svc.name, start_ns)
        t = start_ns + round(base * 0.3e9)
        proc.busy_s += base
        delay = added if lat_cause is not None else 0.0
        delay_cause = lat_cause
        error_fault = self._errors_now(svc.name, start_ns)
        if error_fault is not None or rng.random() < _BASE_ERROR_RATIO:
            end = t + round(added * 1e9) + 300_000
            proc.served_s += (end - start_ns) / 1e9
            return _Outcome(end, 500, cause=error_fault, delay_s=delay, delay_cause=delay_cause)
        if ep.client_error_ratio and rng.random() < ep.client_error_ratio:
            end = t + 200_000
            proc.served_s += (end - start_ns) / 1e9
            return _Outcome(end, 404)
        status, cause = 200, None
        for call in ep.calls:
            if call.probability < 1.0 and rng.random() >= call.probability:
                continue
            copies = rng.randint(*call.fanout)
            results: list[_Outcome] = []
            if call.parallel:
                results = [self._call(proc, call, t, trace_id, span_id) for _ in range(copies)]
                t = max(r.end_ns for r in results)
                worst = max(results, key=lambda r: r.delay_s)
                if worst.delay_cause is not None:
                    delay, delay_cause = delay + worst.delay_s, worst.delay_cause
            else:
                for _ in range(copies):
                    r = self._call(proc, call, t, trace_id, span_id)
                    results.append(r)
                    t = r.end_ns
                    if r.delay_cause is not None:
                        delay, delay_cause = delay + r.delay_s, r.delay_cause
                    if r.failed and not call.optional:
                        break
            failure = next((r for r in results if r.failed), None)
            for r in results:
                if r.failed and r.cause is not None:
                    self.truth.faults[r.cause].impact(svc.name).note_saw_error(r.end_ns)
            if failure is not None and not call.optional:
                status, cause = _failure_status(svc, failure), failure.cause
                t += 500_000
                break
        else:
            t += round((base * 0.7 + added) * 1e9)
        proc.served_s += (t - start_ns) / 1e9
        return _Outcome(t, status, cause=cause, delay_s=delay, delay_cause=delay_cause)

    def _call(
        self,
        proc: ServiceProcess,
        call: Downstream,
        start_ns: int,
        trace_id: bytes,
        parent_id: bytes,
    ) -> _Outcome:
        part = self.topology.part(call.target)
        if isinstance(part, Database):
            return self._query(
                proc, part, call, start_ns=start_ns, trace_id=trace_id, parent_id=parent_id
            )
        if isinstance(part, Topic):
            return self._publish(proc, part, start_ns, trace_id, parent_id)
        t = start_ns
        delay, delay_cause = 0.0, None
        out = _Outcome(t, 0)
        for attempt in range(call.retries + 1):
            out = self._http_attempt(
                proc,
                part,
                call,
                start_ns=t,
                trace_id=trace_id,
                parent_id=parent_id,
                attempt=attempt,
            )
            if out.delay_cause is not None:
                delay, delay_cause = delay + out.delay_s, out.delay_cause
            if not out.failed:
                break
            if out.cause is not None:
                # time lost to a failed attempt is delay caused by the fault
                delay, delay_cause = delay + (out.end_ns - t) / 1e9, out.cause
            if attempt < call.retries:
                backoff = round(0.05e9 * (2**attempt) * self.rng.uniform(0.5, 1.5))
                delay += backoff / 1e9 if out.cause is not None else 0.0
                t = out.end_ns + backoff
        out.delay_s, out.delay_cause = delay, delay_cause
        return out

    def _http_attempt(
        self,
        proc: ServiceProcess,
        target: Service | External,
        call: Downstream,
        *,
        start_ns: int,
        trace_id: bytes,
        parent_id: bytes,
        attempt: int,
    ) -> _Outcome:
        rng = self.rng
        svc = proc.service
        span_id = self._span_id()
        net = round(rng.uniform(0.0002, 0.001) * 1e9)
        method, route = call.operation.split(" ", 1)
        path = _path(route, rng)
        if isinstance(target, Service):
            host, port, scheme = target.dns, target.port, "http"
            peer_ip = self._cluster_ip[target.name]
            served = self._serve(
                target,
                target.endpoint(call.operation),
                start_ns + net,
                trace_id,
                span_id,
                caller=proc,
                user_agent=_CLIENT_UA.get(svc.http_client, "python"),
            )
        else:
            host, port, scheme = target.name, target.port, "https"
            peer_ip = "203.0.113." + str(sum(target.name.encode()) % 250 + 1)
            took = round(self._lognormal(target.latency_s) * 1e9)
            status = 503 if rng.random() < target.error_ratio else 200
            served = _Outcome(start_ns + net + took, status)
        timeout_ns = round(call.timeout_s * 1e9)
        errors = _HTTP_ERRORS.get(svc.http_client, _HTTP_ERRORS["httpx"])
        status = 0
        failure: tuple[str, str, str] | None = None
        if served.error == "refused":
            end = start_ns + round(rng.uniform(0.0005, 0.002) * 1e9)
            failure, cause = errors[1], served.cause
        elif served.error == "reset":
            end = served.end_ns + net
            failure, cause = errors[2], served.cause
        elif served.end_ns + net - start_ns > timeout_ns:
            end = start_ns + timeout_ns
            failure = errors[0]
            cause = served.delay_cause if served.delay_cause is not None else served.cause
        else:
            end = served.end_ns + net
            status, cause = served.status, served.cause
        url = (
            f"{scheme}://{host}:{port}{path}"
            if port not in (80, 443)
            else f"{scheme}://{host}{path}"
        )
        attrs: list[tuple[str, AttrValue]]
        if svc.legacy_semconv:
            attrs = [
                ("http.method", method),
                ("http.url", url),
                ("net.peer.name", host),
                ("net.peer.port", port),
            ]
            if status:
                attrs.append(("http.status_code", status))
        else:
            attrs = [
                ("http.request.method", method),
                ("url.full", url),
                ("server.address", host),
                ("server.port", port),
                ("network.peer.address", peer_ip),
                ("network.peer.port", port),
                ("network.protocol.version", "1.1"),
            ]
            if attempt:
                attrs.append(("http.request.resend_count", attempt))
            if status:
                attrs.append(("http.response.status_code", status))
            if failure is not None:
                attrs.append(("error.type", failure[0]))
            elif status >= 400:
                attrs.append(("error.type", str(status)))
        events: list[tuple[str, int, list[tuple[str, AttrValue]]]] = []
        message = ""
        if failure is not None:
            text = failure[2] % call.timeout_s if "%s" in failure[2] else failure[2]
            message = f"{failure[0]}: {text}"
            events.append(
                ("exception", end, [("exception.type", failure[1]), ("exception.message", text)])
            )
        proc.finish(
            SimSpan(
                trace_id,
                span_id,
                parent_id,
                _CLIENT,
                f"HTTP {method}" if svc.legacy_semconv else method,
                start_ns,
                end,
                attrs,
                f"opentelemetry.instrumentation.{svc.http_client}",
                error=failure is not None or status >= 400,
                status_message=message,
                events=events,
            )
        )
        if failure is not None:
            return _Outcome(end, 0, error=failure[0], cause=cause)
        # a 4xx is the caller's own problem: not a failure, no fault behind it
        return _Outcome(
            end, status, cause=cause, delay_s=served.delay_s, delay_cause=served.delay_cause
        )

    def _query(
        self,
        proc: ServiceProcess,
        db: Database,
        call: Downstream,
        *,
        start_ns: int,
        trace_id: bytes,
        parent_id: bytes,
    ) -> _Outcome:
        rng = self.rng
        op, _, collection = call.operation.partition(" ")
        errors = _DB_ERRORS.get(db.system, ("Error", "Timeout", "ConnectionError"))
        down = self._active(db.name, FaultKind.CRASH, start_ns)
        added, lat_cause = self._added_latency(db.name, start_ns)
        took = self._lognormal(db.latency_s) + added
        error_type, cause = "", None
        if down is not None:
            took, error_type, cause = rng.uniform(0.0005, 0.002), errors[2], down
        elif took > call.timeout_s:
            took, error_type, cause = call.timeout_s, errors[1], lat_cause
        else:
            cause = self._errors_now(db.name, start_ns)
            if cause is not None:
                error_type = errors[0]
        end = start_ns + round(took * 1e9)
        if error_type and cause is not None:
            # a database reports nothing itself; its failures are seen in its clients' spans
            self.truth.faults[cause].impact(db.name).note_failed(end)
        if db.legacy_semconv:
            attrs: list[tuple[str, AttrValue]] = [
                ("db.system", db.system),
                ("db.name", db.namespace),
                ("db.operation", op),
                ("net.peer.name", db.host),
                ("net.peer.port", db.port),
            ]
            if collection:
                attrs.append(("db.sql.table", collection))
        else:
            attrs = [
                ("db.system.name", db.system),
                ("db.namespace", db.namespace),
                ("db.operation.name", op),
                ("server.address", db.host),
                ("server.port", db.port),
            ]
            if collection:
                attrs.append(("db.collection.name", collection))
            if error_type:
                attrs.append(("error.type", error_type))
        proc.finish(
            SimSpan(
                trace_id,
                self._span_id(),
                parent_id,
                _CLIENT,
                f"{op} {collection}" if collection else op,
                start_ns,
                end,
                attrs,
                _DB_SCOPE.get(db.system, "opentelemetry.instrumentation.dbapi"),
                error=bool(error_type),
                status_message=error_type,
            )
        )
        delay = added if lat_cause is not None else 0.0
        if error_type:
            return _Outcome(
                end, 0, error=error_type, cause=cause, delay_s=delay, delay_cause=lat_cause
            )
        return _Outcome(end, 200, delay_s=delay, delay_cause=lat_cause)

    def _publish(
        self,
        proc: ServiceProcess,
        topic: Topic,
        start_ns: int,
        trace_id: bytes,
        parent_id: bytes,
    ) -> _Outcome:
        span_id = self._span_id()
        end = start_ns + round(self._lognormal(0.002) * 1e9)
        proc.finish(
            SimSpan(
                trace_id,
                span_id,
                parent_id,
                _PRODUCER,
                f"send {topic.name}",
                start_ns,
                end,
                [
                    ("messaging.system", topic.system),
                    ("messaging.destination.name", topic.name),
                    ("messaging.operation.type", "send"),
                    ("messaging.operation.name", "send"),
                    ("server.address", topic.host),
                    ("server.port", topic.port),
                ],
                f"opentelemetry.instrumentation.{_MESSAGING_LIB}",
            )
        )
        deliver = end + round(self._lognormal(topic.lag_s) * 1e9)
        self._seq += 1
        heapq.heappush(self._deliveries, (deliver, self._seq, topic.name, trace_id, span_id))
        return _Outcome(end, 200)

    def _consume(self, deliver_ns: int, topic: Topic, trace_id: bytes, producer: bytes) -> None:
        svc = self.topology.service(topic.consumer)
        down = self._active(svc.name, FaultKind.CRASH, deliver_ns)
        if down is not None:
            # the broker keeps the message; the restarted consumer picks it up
            retry = self._heal_ns(down) + round(self.rng.uniform(1.0, 5.0) * 1e9)
            self._seq += 1
            heapq.heappush(self._deliveries, (retry, self._seq, topic.name, trace_id, producer))
            return
        proc = self.rng.choice(self.processes[svc.name])
        span_id = self._span_id()
        ep = svc.endpoint(topic.handler)
        out = self._work(svc, ep, proc, deliver_ns, trace_id=trace_id, span_id=span_id)
        if self._crash_within(svc.name, deliver_ns, out.end_ns) is not None:
            return
        attrs: list[tuple[str, AttrValue]] = [
            ("messaging.system", topic.system),
            ("messaging.destination.name", topic.name),
            ("messaging.operation.type", "process"),
            ("messaging.operation.name", "process"),
            ("messaging.consumer.group.name", topic.consumer_group or svc.name),
            ("server.address", topic.host),
            ("server.port", topic.port),
        ]
        if out.failed:
            attrs.append(("error.type", out.error or str(out.status)))
        proc.finish(
            SimSpan(
                trace_id,
                span_id,
                producer,
                _CONSUMER,
                f"process {topic.name}",
                deliver_ns,
                out.end_ns,
                attrs,
                f"opentelemetry.instrumentation.{_MESSAGING_LIB}",
                remote_parent=True,
                error=out.failed,
                links=((trace_id, producer),),
            )
        )
        self._judge(svc.name, deliver_ns, out)

    # ---- the run -------------------------------------------------------------------------------

    def _entry(self, arrive_ns: int) -> None:
        rng = self.rng
        name, key = rng.choices(self._entries, cum_weights=self._cum_weights)[0]
        svc = self.topology.service(name)
        self.truth.requests += 1
        self._serve(
            svc,
            svc.endpoint(key),
            arrive_ns,
            self._trace_id(),
            b"",
            caller=None,
            user_agent=rng.choice(_USER_AGENTS),
        )

    def exports(self) -> Iterator[Export]:
        """The run's export requests of all processes, in event-time order."""
        if self._used:
            raise RuntimeError("a Simulator runs once; make a new one for another run")
        self._used = True
        sc = self.scenario
        entries = sc.topology.entrypoints
        self._entries = [(name, key) for name, key, _ in entries]
        self._cum_weights = []
        total = 0.0
        for _, _, weight in entries:
            total += weight
            self._cum_weights.append(total)
        end_ns = sc.ns(sc.duration_s)
        next_arrival = self._next_arrival(sc.start_ns)
        chunk = sc.start_ns
        while chunk < end_ns:
            chunk_end = min(chunk + _CHUNK_NS, end_ns)
            while next_arrival < chunk_end:
                self._entry(next_arrival)
                next_arrival = self._next_arrival(next_arrival)
            yield from self._settle(chunk_end)
            chunk = chunk_end
        drain_end = end_ns + round(sc.drain_s * 1e9)
        while chunk < drain_end:
            chunk_end = min(chunk + _CHUNK_NS, drain_end)
            yield from self._settle(chunk_end)
            chunk = chunk_end
        out: list[Export] = []
        for proc in self._all:
            proc.flush(drain_end, out)
        yield from self._count(out)
        self.truth.spans_dropped = sum(p.dropped for p in self._all)

    def _next_arrival(self, after_ns: int) -> int:
        rate = self.scenario.rate * self.noise.rate_factor(self._t_s(after_ns))
        if rate <= 0:
            return after_ns + _CHUNK_NS  # idle second; the rate may step up later
        return after_ns + max(1, round(self.rng.expovariate(rate) * 1e9))

    def _settle(self, until_ns: int) -> Iterator[Export]:
        deliveries = self._deliveries
        topics = {t.name: t for t in self.topology.topics}
        while deliveries and deliveries[0][0] < until_ns:
            when, _, name, trace_id, producer = heapq.heappop(deliveries)
            self._consume(when, topics[name], trace_id, producer)
        out: list[Export] = []
        for proc in self._all:
            proc.advance(until_ns, out)
        out.sort(key=lambda e: e.time_ns)  # stable: ties keep the processes' fixed order
        yield from self._count(out)

    def _count(self, out: list[Export]) -> Iterator[Export]:
        truth = self.truth
        for export in out:
            if export.signal == "traces":
                truth.trace_exports += 1
                truth.spans += sum(
                    len(ss.spans) for rs in export.request.resource_spans for ss in rs.scope_spans
                )
            else:
                truth.metric_exports += 1
            yield export


_MESSAGING_LIB = "confluent_kafka"


def _failure_status(svc: Service, failure: _Outcome) -> int:
    if not svc.gateway:
        return 500
    if failure.error == "ReadTimeout" or "Timeout" in failure.error or "Canceled" in failure.error:
        return 504
    return 502


def _path(route: str, rng: random.Random) -> str:
    if "{" not in route:
        return route
    return "/".join(
        str(rng.randrange(1, 50_000)) if segment.startswith("{") else segment
        for segment in route.split("/")
    )


def _user_ip(rng: random.Random) -> str:
    return f"198.51.100.{rng.randrange(1, 255)}"


def _merge(windows: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(windows):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def simulate(scenario: Scenario) -> tuple[list[Export], GroundTruth]:
    """Run a scenario to the end: all exports in order, and the complete ground truth."""
    sim = Simulator(scenario)
    exports = list(sim.exports())
    return exports, sim.truth
