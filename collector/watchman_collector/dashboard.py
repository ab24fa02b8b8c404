"""`watchman dashboard`: a live console view of a running analyzer, read from its JSON API.

Two service views refresh on their own cadence (by default every 10 s the last 10 minutes and
every minute the last hour); the call graph's hot edges, the diagnosis (root cause, symptom, at
risk) and the alerts refresh with the faster one. On a terminal it is a `rich` Live screen; when
stdout is not a terminal it prints a plain-text snapshot per refresh, so unattended runs and CI
logs stay readable. An endpoint the analyzer does not serve (yet) shows as "not available"
instead of stopping the view.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

import httpx

from watchman_collector.config import parse_duration

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from watchman_collector.config import AnalyzerConfig

__all__ = [
    "DEFAULT_URL",
    "DEFAULT_VIEWS",
    "DESCRIPTION",
    "HELP",
    "AlertRow",
    "ApiReader",
    "Dashboard",
    "EdgeRow",
    "RiskRow",
    "ServiceRow",
    "ServiceView",
    "Snapshot",
    "SuspectRow",
    "ViewSpec",
    "configure_parser",
    "health_of",
    "main",
    "mark_of",
    "parse_alerts",
    "parse_diagnosis",
    "parse_edges",
    "parse_health",
    "parse_services",
    "register",
    "render_plain",
    "render_rich",
    "run_command",
]

DEFAULT_URL = "http://127.0.0.1:9464"
_HEALTH_NAMES = ("healthy", "degraded", "failing", "down")
_HEALTH_STYLE = {
    "healthy": "green",
    "degraded": "yellow",
    "failing": "red",
    "down": "bold red",
}


@dataclass(frozen=True, slots=True)
class ViewSpec:
    """One service view: how often it is fetched and how far back its numbers reach."""

    refresh_s: float
    window_s: float

    @property
    def title(self) -> str:
        """`last 10m (every 10s)`."""
        return f"last {_duration(self.window_s)} (every {_duration(self.refresh_s)})"


DEFAULT_VIEWS = (ViewSpec(10.0, 600.0), ViewSpec(60.0, 3600.0))


@dataclass(frozen=True, slots=True)
class ServiceRow:
    """One service's numbers over a view's window (`health`: the analyzer's, when it says)."""

    name: str
    kind: str
    health: str | None
    instances_up: int
    instances: int
    calls: int
    rate_per_s: float
    error_ratio: float
    avg_s: float | None
    max_s: float | None


@dataclass(frozen=True, slots=True)
class ServiceView:
    """A view's rows as of its last successful fetch (`note` says why there are none)."""

    spec: ViewSpec
    rows: tuple[ServiceRow, ...] = ()
    fetched_at: float | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class EdgeRow:
    """Calls from `client` to `server` over the fast view's window."""

    client: str
    server: str
    calls: int
    rate_per_s: float
    error_ratio: float
    p95_s: float | None

    @property
    def failed_per_s(self) -> float:
        """Failed calls per second, the first key of "hot"."""
        return self.rate_per_s * self.error_ratio


@dataclass(frozen=True, slots=True)
class SuspectRow:
    """An unhealthy service and the part it plays (`root_cause`, `symptom`)."""

    service: str
    role: str
    root_cause: str
    score: float
    health: str | None
    evidence: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RiskRow:
    """A caller predicted to fail because of `root_cause`, reached through `via`."""

    service: str
    root_cause: str
    via: str
    predicted_error_ratio: float | None
    eta_s: float | None


@dataclass(frozen=True, slots=True)
class AlertRow:
    """One alert in Alertmanager's shape, flattened for display."""

    alertname: str
    service: str
    severity: str
    role: str
    root_cause: str
    state: str  # firing | pending | resolved | …
    starts_at: str | None
    ends_at: str | None
    summary: str
    recovery: str | None  # the recovery message of a resolved alert


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one refresh shows; plain data, so the renderers are pure functions."""

    url: str
    taken_at: float
    analyzer: str | None = None  # `ok (v0.1.0)`, or why not
    views: tuple[ServiceView, ...] = ()
    edges: tuple[EdgeRow, ...] = ()
    edges_note: str | None = None
    suspects: tuple[SuspectRow, ...] = ()
    risks: tuple[RiskRow, ...] = ()
    diagnosis_note: str | None = None
    active: tuple[AlertRow, ...] = ()
    history: tuple[AlertRow, ...] = ()
    alerts_note: str | None = None
    header: tuple[str, ...] = ()  # extra lines from the embedding program (the demo's phase)
    health: Mapping[str, str] = field(default_factory=dict)  # the diagnosis' verdict per service

    def suspect(self, service: str) -> SuspectRow | None:
        """The diagnosis entry of `service`, if it is unhealthy."""
        return next((s for s in self.suspects if s.service == service), None)

    def risk(self, service: str) -> RiskRow | None:
        """The cascade prediction for `service`, if it is at risk."""
        return next((r for r in self.risks if r.service == service), None)


# -- reading the API's payloads (defensively: fields may be missing while the API grows) ------


def _num(value: Any, default: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value) if math.isfinite(value) else default


def _opt(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _health(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and 0 <= value < len(_HEALTH_NAMES):
        return _HEALTH_NAMES[value]
    if isinstance(value, str) and value:
        return value.lower()
    if isinstance(value, Mapping):
        return _health(value.get("label") or value.get("state") or value.get("health"))
    return None


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _dicts(value: Any) -> list[Mapping[str, Any]]:
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


def parse_services(payload: Any) -> tuple[ServiceRow, ...]:
    """Rows of `/api/v1/services?window=…` (`services[]` with `window` and `instances`)."""
    items = payload.get("services") if isinstance(payload, Mapping) else payload
    rows = []
    for item in _dicts(items):
        window = _map(item.get("window"))
        inst = _map(item.get("instances"))
        rows.append(
            ServiceRow(
                name=str(item.get("name", "?")),
                kind=str(item.get("kind", "service")),
                health=_health(item.get("health")),
                instances_up=int(_num(inst.get("up"))),
                instances=int(_num(inst.get("total"))),
                calls=int(_num(window.get("calls"))),
                rate_per_s=_num(window.get("rate_per_s")),
                error_ratio=_num(window.get("error_ratio")),
                avg_s=_opt(window.get("avg_s")),
                max_s=_opt(window.get("max_s")),
            )
        )
    return tuple(sorted(rows, key=lambda r: r.name))


def parse_edges(payload: Any) -> tuple[EdgeRow, ...]:
    """Edges of `/api/v1/graph?window=…`, hottest first (failed calls/s, then calls/s)."""
    items = payload.get("edges") if isinstance(payload, Mapping) else None
    rows = []
    for item in _dicts(items):
        window = _map(item.get("window"))
        rows.append(
            EdgeRow(
                client=str(item.get("client", "?")),
                server=str(item.get("server", "?")),
                calls=int(_num(window.get("calls"))),
                rate_per_s=_num(window.get("rate_per_s")),
                error_ratio=_num(window.get("error_ratio")),
                p95_s=_opt(window.get("p95_s")),
            )
        )
    return tuple(sorted(rows, key=lambda e: (-e.failed_per_s, -e.rate_per_s, e.client, e.server)))


def parse_diagnosis(payload: Any) -> tuple[tuple[SuspectRow, ...], tuple[RiskRow, ...]]:
    """Suspects (best first) and at-risk callers of `/api/v1/diagnosis`."""
    if not isinstance(payload, Mapping):
        return (), ()
    suspects = []
    for item in _dicts(payload.get("suspects")):
        service = str(item.get("service", "?"))
        role = str(item.get("role") or "suspect")
        evidence = tuple(
            str(e.get("detail") or e.get("signal") or "") for e in _dicts(item.get("evidence"))
        )
        suspects.append(
            SuspectRow(
                service=service,
                role=role,
                root_cause=str(item.get("root_cause") or service),
                score=_num(item.get("score")),
                health=_health(item.get("health")),
                evidence=tuple(e for e in evidence if e),
            )
        )
    risks = [
        RiskRow(
            service=str(item.get("service", "?")),
            root_cause=str(item.get("root_cause") or "?"),
            via=str(item.get("via") or "?"),
            predicted_error_ratio=_opt(item.get("predicted_error_ratio")),
            eta_s=_opt(item.get("eta_s")),
        )
        for item in _dicts(payload.get("risks"))
    ]
    suspects.sort(key=lambda s: (s.role != "root_cause", -s.score, s.service))
    return tuple(suspects), tuple(risks)


def parse_health(payload: Any) -> dict[str, str]:
    """Each judged service's health from `/api/v1/diagnosis` (`services: {name: label}`)."""
    services = _map(payload).get("services")
    judged = {str(name): _health(value) for name, value in _map(services).items()}
    return {name: label for name, label in judged.items() if label}


def _alert(item: Mapping[str, Any], default_state: str) -> AlertRow:
    labels = _map(item.get("labels"))
    notes = _map(item.get("annotations"))
    status = item.get("status")
    if isinstance(status, Mapping):  # Alertmanager v2: {"state": "active", "inhibitedBy": …}
        state = str(status.get("state") or default_state)
    else:
        state = str(status or item.get("state") or default_state)
    if state == "active":
        state = "firing"
    if item.get("inhibited") or (isinstance(status, Mapping) and status.get("inhibitedBy")):
        state += ", inhibited"  # a symptom silenced by its root cause's alert
    recovery = (
        notes.get("recovery")
        or notes.get("recovery_message")
        or notes.get("resolved")
        or item.get("recovery")
    )
    service = str(labels.get("service", "?"))
    return AlertRow(
        alertname=str(labels.get("alertname", "?")),
        service=service,
        severity=str(labels.get("severity", "")),
        role=str(labels.get("role", "")),
        root_cause=str(labels.get("root_cause") or ""),
        state=state,
        starts_at=_text(item.get("startsAt") or item.get("activeAt")),
        ends_at=_text(item.get("endsAt")),
        summary=str(notes.get("summary") or notes.get("description") or ""),
        recovery=str(recovery) if recovery else None,
    )


def _text(value: Any) -> str | None:
    return str(value) if value else None


def parse_alerts(payload: Any) -> tuple[tuple[AlertRow, ...], tuple[AlertRow, ...]]:
    """Active alerts and past ones of `/api/v1/alerts`.

    Accepts the analyzer's `{"alerts": [...], "history": [...]}` (or `"active"`), Prometheus's
    `{"data": {"alerts": [...]}}` and a bare list; without a history, an alert whose state is
    `resolved` goes to it.
    """
    if isinstance(payload, Mapping) and isinstance(payload.get("data"), Mapping):
        payload = payload["data"]
    if isinstance(payload, Mapping) and "history" in payload:
        current = payload.get("active", payload.get("alerts"))
        active = [_alert(a, "firing") for a in _dicts(current)]
        history = [_alert(a, "resolved") for a in _dicts(payload.get("history"))]
    else:
        items = payload.get("alerts") if isinstance(payload, Mapping) else payload
        alerts = [_alert(a, "firing") for a in _dicts(items)]
        active = [a for a in alerts if not a.state.startswith("resolved")]
        history = [a for a in alerts if a.state.startswith("resolved")]
    # Newest history first; ISO-8601 timestamps sort as text.
    history.sort(key=lambda a: a.ends_at or a.starts_at or "", reverse=True)
    return tuple(active), tuple(history)


# -- fetching ------------------------------------------------------------------------------


class ApiReader:
    """GETs JSON from the analyzer's API; answers `(payload, None)` or `(None, why not)`."""

    def __init__(self, url: str, client: httpx.AsyncClient | None = None) -> None:
        self.url = url.rstrip("/")
        self._client = client or httpx.AsyncClient(timeout=5.0)
        self._owned = client is None

    async def get(self, path: str, **params: str) -> tuple[Any, str | None]:
        """The decoded JSON body of `path`, or a short reason it is not available."""
        try:
            response = await self._client.get(self.url + path, params=params or None)
        except httpx.HTTPError as exc:
            return None, f"unreachable ({type(exc).__name__})"
        if response.status_code == 404:
            return None, "not available (404)"
        if response.status_code >= 400 and response.status_code != 503:
            return None, f"HTTP {response.status_code}"
        try:
            return response.json(), None
        except ValueError:
            return None, "not JSON"

    async def aclose(self) -> None:
        """Close the HTTP client if this reader made it."""
        if self._owned:
            await self._client.aclose()


# -- rendering -----------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    if seconds >= 60:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{seconds:g}s"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _pct(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.1f}%"


def _clock(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S")


def _iso_clock(value: str | None) -> str:
    if not value:
        return "-"
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%H:%M:%S")
    return value


def health_of(row: ServiceRow, snapshot: Snapshot) -> str:
    """The analyzer's verdict on a service: its own field, else the diagnosis', else liveness."""
    if row.health:
        return row.health
    if row.name in snapshot.health:
        return snapshot.health[row.name]
    if row.kind == "user":
        return "-"  # the outside callers: nothing to judge
    suspect = snapshot.suspect(row.name)
    if suspect is not None and suspect.health:
        return suspect.health
    if row.instances and not row.instances_up:
        return "down"
    if snapshot.diagnosis_note is None and not snapshot.health:
        return "healthy"  # an older diagnosis without verdicts that does not name it
    return "?"


def mark_of(service: str, snapshot: Snapshot) -> str:
    """`ROOT CAUSE`, `symptom of X` or `AT RISK via Y` (with ETA), else empty."""
    suspect = snapshot.suspect(service)
    if suspect is not None:
        if suspect.role == "root_cause":
            return "ROOT CAUSE"
        if suspect.role == "symptom":
            return f"symptom of {suspect.root_cause}"
        return suspect.role
    risk = snapshot.risk(service)
    if risk is not None:
        text = f"AT RISK via {risk.via} (root cause {risk.root_cause}"
        if risk.predicted_error_ratio is not None:
            text += f", predicted {_pct(risk.predicted_error_ratio)} errors"
        if risk.eta_s is not None:
            text += ", now" if risk.eta_s <= 0 else f", in ~{_duration(round(risk.eta_s))}"
        return text + ")"
    # Without a diagnosis entry, an active alert's role label still tells the part it plays.
    alert = next((a for a in snapshot.active if a.service == service and a.role), None)
    return _alert_role(alert) if alert is not None else ""


def _alert_role(alert: AlertRow) -> str:
    if alert.role == "root_cause":
        return "ROOT CAUSE"
    if alert.role == "symptom":
        return f"symptom of {alert.root_cause or '?'}"
    if alert.role == "at_risk":
        return f"AT RISK (root cause {alert.root_cause or '?'})"
    return alert.role


def _recovery(alert: AlertRow) -> str:
    if alert.recovery:
        return alert.recovery
    return f"{alert.alertname} on {alert.service} recovered at {_iso_clock(alert.ends_at)}"


def _title_line(snapshot: Snapshot) -> str:
    return (
        f"watchman dashboard  {snapshot.url}  {_clock(snapshot.taken_at)} UTC  "
        f"analyzer: {snapshot.analyzer or '?'}"
    )


def _plain_services(view: ServiceView, snapshot: Snapshot) -> list[str]:
    lines = [f"== services, {view.spec.title}, as of {_clock(view.fetched_at)} =="]
    if not view.rows:
        lines.append(f"  {view.note or 'no services seen yet'}")
        return lines
    lines.append(
        f"  {'service':<14}{'health':<10}{'inst':>6}{'req/s':>9}{'errors':>9}"
        f"{'avg ms':>10}{'max ms':>10}  mark"
    )
    for row in view.rows:
        lines.append(
            f"  {row.name:<14}{health_of(row, snapshot):<10}"
            f"{f'{row.instances_up}/{row.instances}':>6}{row.rate_per_s:>9.2f}"
            f"{_pct(row.error_ratio):>9}{_ms(row.avg_s):>10}{_ms(row.max_s):>10}"
            f"  {mark_of(row.name, snapshot)}".rstrip()
        )
    if view.note:
        lines.append(f"  ({view.note}; showing the last good numbers)")
    return lines


def render_plain(snapshot: Snapshot, *, edges: int = 8, history: int = 10) -> str:
    """The snapshot as plain text (no colour, no cursor movement), ending with a newline."""
    lines = [_title_line(snapshot), *snapshot.header]
    for view in snapshot.views:
        lines.extend(_plain_services(view, snapshot))
    window = _duration(snapshot.views[0].spec.window_s) if snapshot.views else "?"
    lines.append(f"== hot edges, last {window} ==")
    if snapshot.edges:
        for edge in snapshot.edges[:edges]:
            lines.append(
                f"  {edge.client + ' -> ' + edge.server:<28}{edge.rate_per_s:>8.2f}/s"
                f"{_pct(edge.error_ratio):>9} errors   p95 {_ms(edge.p95_s)} ms"
            )
    else:
        lines.append(f"  {snapshot.edges_note or 'no calls seen yet'}")
    lines.append("== diagnosis ==")
    if snapshot.diagnosis_note:
        lines.append(f"  /api/v1/diagnosis {snapshot.diagnosis_note}")
    elif not snapshot.suspects and not snapshot.risks:
        lines.append("  all healthy")
    for suspect in snapshot.suspects:
        lines.append(
            f"  {suspect.service:<14}{mark_of(suspect.service, snapshot):<28}"
            f"score {suspect.score:.2f}  {'; '.join(suspect.evidence[:2])}".rstrip()
        )
    for risk in snapshot.risks:
        lines.append(f"  {risk.service:<14}{mark_of(risk.service, snapshot)}")
    lines.append("== active alerts ==")
    if snapshot.alerts_note:
        lines.append(f"  /api/v1/alerts {snapshot.alerts_note}")
    elif not snapshot.active:
        lines.append("  none")
    for alert in snapshot.active:
        lines.append(
            f"  [{alert.state}] {alert.severity:<9}{alert.alertname} {alert.service}  "
            f"{_alert_role(alert)}  since {_iso_clock(alert.starts_at)}  {alert.summary}".rstrip()
        )
    if snapshot.history:
        lines.append("== alert history ==")
        for alert in snapshot.history[:history]:
            lines.append(
                f"  [resolved] {alert.alertname} {alert.service} "
                f"{_iso_clock(alert.starts_at)}-{_iso_clock(alert.ends_at)}  {_recovery(alert)}"
            )
    return "\n".join(lines) + "\n"


def render_rich(snapshot: Snapshot, *, edges: int = 8, history: int = 10) -> RenderableType:
    """The snapshot as rich tables, for a Live screen."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list[RenderableType] = [Text(_title_line(snapshot), style="bold")]
    parts.extend(Text(line, style="cyan") for line in snapshot.header)
    for view in snapshot.views:
        table = Table(
            title=f"services, {view.spec.title}, as of {_clock(view.fetched_at)}",
            title_justify="left",
            expand=False,
        )
        for name, justify in (
            ("service", "left"),
            ("health", "left"),
            ("inst", "right"),
            ("req/s", "right"),
            ("errors", "right"),
            ("avg ms", "right"),
            ("max ms", "right"),
            ("mark", "left"),
        ):
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for row in view.rows:
            health = health_of(row, snapshot)
            mark = mark_of(row.name, snapshot)
            table.add_row(
                row.name,
                Text(health, style=_HEALTH_STYLE.get(health, "dim")),
                f"{row.instances_up}/{row.instances}",
                f"{row.rate_per_s:.2f}",
                Text(_pct(row.error_ratio), style="red" if row.error_ratio >= 0.01 else ""),
                _ms(row.avg_s),
                _ms(row.max_s),
                Text(mark, style="bold red" if mark == "ROOT CAUSE" else "yellow"),
            )
        if not view.rows or view.note:
            table.caption = view.note or "no services seen yet"
        parts.append(table)
    if snapshot.suspects or snapshot.risks:
        diagnosis = Table(title="diagnosis", title_justify="left")
        for name in ("service", "mark", "score", "evidence"):
            diagnosis.add_column(name)
        for suspect in snapshot.suspects:
            mark = mark_of(suspect.service, snapshot)
            diagnosis.add_row(
                suspect.service,
                Text(mark, style="bold red" if mark == "ROOT CAUSE" else "yellow"),
                f"{suspect.score:.2f}",
                "; ".join(suspect.evidence[:2]),
            )
        for risk in snapshot.risks:
            diagnosis.add_row(risk.service, Text(mark_of(risk.service, snapshot), "yellow"), "", "")
        parts.append(diagnosis)
    window = _duration(snapshot.views[0].spec.window_s) if snapshot.views else "?"
    hot = Table(title=f"hot edges, last {window}", title_justify="left")
    for name in ("client -> server", "req/s", "errors", "p95 ms"):
        hot.add_column(name, justify="left" if name.startswith("client") else "right")
    for edge in snapshot.edges[:edges]:
        hot.add_row(
            f"{edge.client} -> {edge.server}",
            f"{edge.rate_per_s:.2f}",
            Text(_pct(edge.error_ratio), style="red" if edge.error_ratio >= 0.01 else ""),
            _ms(edge.p95_s),
        )
    if not snapshot.edges:
        hot.caption = snapshot.edges_note or "no calls seen yet"
    parts.append(hot)
    alerts = Table(title="alerts", title_justify="left")
    for name in ("state", "alert", "service", "role", "since / until", "message"):
        alerts.add_column(name)
    for alert in snapshot.active:
        alerts.add_row(
            Text(alert.state, style="bold red" if alert.state == "firing" else "yellow"),
            f"{alert.alertname} ({alert.severity})",
            alert.service,
            _alert_role(alert),
            _iso_clock(alert.starts_at),
            alert.summary,
        )
    for alert in snapshot.history[:history]:
        alerts.add_row(
            Text("resolved", style="green"),
            alert.alertname,
            alert.service,
            _alert_role(alert),
            f"{_iso_clock(alert.starts_at)}-{_iso_clock(alert.ends_at)}",
            _recovery(alert),
        )
    notes = [
        f"/api/v1/{what} {note}"
        for what, note in (("alerts", snapshot.alerts_note), ("diagnosis", snapshot.diagnosis_note))
        if note
    ]
    if notes:
        alerts.caption = "; ".join(notes)
    elif not snapshot.active and not snapshot.history:
        alerts.caption = "no alerts"
    parts.append(alerts)
    return Group(*parts)


# -- the running view ----------------------------------------------------------------------


@dataclass(slots=True)
class _State:
    views: list[ServiceView]
    due: list[float]
    last: Snapshot | None = None


class Dashboard:
    """Fetches and shows snapshots of one analyzer, each view on its own cadence.

    `plain=None` picks the Live screen when the console is a terminal, plain text otherwise.
    `header` returns extra lines shown on top (the demo puts its phase there).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        views: Sequence[ViewSpec] = DEFAULT_VIEWS,
        plain: bool | None = None,
        edges: int = 8,
        history: int = 10,
        header: Callable[[], Iterable[str]] | None = None,
        console: Console | None = None,
        stream: IO[str] | None = None,
        reader: ApiReader | None = None,
    ) -> None:
        if not views:
            raise ValueError("a dashboard needs at least one view")
        from rich.console import Console

        self.url = url.rstrip("/")
        self.views = tuple(views)
        self.stream = stream or sys.stdout
        self.console = console or Console(file=self.stream)
        self.plain = (not self.console.is_terminal) if plain is None else plain
        self.edges = edges
        self.history = history
        self.header = header
        self.reader = reader or ApiReader(self.url)
        self._state = _State(
            views=[ServiceView(spec) for spec in self.views], due=[0.0 for _ in self.views]
        )

    @property
    def tick_s(self) -> float:
        """The fastest cadence: how often the screen (or a plain snapshot) is refreshed."""
        return min(spec.refresh_s for spec in self.views)

    async def snapshot(self, now: float | None = None) -> Snapshot:
        """Fetch what is due and return the current snapshot."""
        now = time.time() if now is None else now
        state = self._state
        reader = self.reader
        fast = min(self.views, key=lambda spec: spec.refresh_s)
        for i, spec in enumerate(self.views):
            # An empty view is fetched at every refresh until it has rows: a view started with
            # the analyzer would otherwise say "nothing seen" for a whole long cadence.
            if now + 1e-6 < state.due[i] and state.views[i].rows:
                continue
            state.due[i] = now + spec.refresh_s
            payload, note = await reader.get("/api/v1/services", window=_window(spec.window_s))
            if note is None:
                state.views[i] = ServiceView(spec, parse_services(payload), now)
            else:
                state.views[i] = replace(state.views[i], note=note)
        health, health_note = await reader.get("/healthz")
        analyzer: str | None = health_note
        if isinstance(health, Mapping):
            analyzer = f"{health.get('status', '?')} (v{health.get('version', '?')})"
        graph, edges_note = await reader.get("/api/v1/graph", window=_window(fast.window_s))
        diagnosis, diagnosis_note = await reader.get("/api/v1/diagnosis")
        alerts, alerts_note = await reader.get("/api/v1/alerts")
        suspects, risks = parse_diagnosis(diagnosis)
        health_map = parse_health(diagnosis)
        active, history = parse_alerts(alerts)
        state.last = Snapshot(
            url=self.url,
            taken_at=now,
            analyzer=analyzer,
            views=tuple(state.views),
            edges=parse_edges(graph),
            edges_note=edges_note,
            suspects=suspects,
            risks=risks,
            diagnosis_note=diagnosis_note,
            active=active,
            history=history,
            alerts_note=alerts_note,
            header=tuple(self.header()) if self.header else (),
            health=health_map,
        )
        return state.last

    def render(self, snapshot: Snapshot) -> RenderableType:
        """The rich renderable of `snapshot` with this dashboard's limits."""
        return render_rich(snapshot, edges=self.edges, history=self.history)

    def print_plain(self, snapshot: Snapshot) -> None:
        """Write one plain-text snapshot to the stream."""
        self.stream.write(render_plain(snapshot, edges=self.edges, history=self.history) + "\n")
        self.stream.flush()

    async def run(self, stop: asyncio.Event, *, iterations: int | None = None) -> Snapshot | None:
        """Refresh until `stop` is set (or `iterations` refreshes); returns the last snapshot."""
        if self.plain:
            count = 0
            while not stop.is_set():
                self.print_plain(await self.snapshot())
                count += 1
                if iterations is not None and count >= iterations:
                    break
                await _wait(stop, self.tick_s)
            return self._state.last
        from rich.live import Live

        first = await self.snapshot()
        with Live(
            self.render(first),
            console=self.console,
            refresh_per_second=1,
            auto_refresh=False,
            transient=False,
        ) as live:
            count = 1
            while not stop.is_set() and (iterations is None or count < iterations):
                # Redraw every second (the demo's header clock), fetch on the cadence.
                waited = await _wait(stop, 1.0)
                if waited:
                    break
                last = self._state.last
                due = min(self._state.due)
                if last is None or time.time() >= due:
                    snap = await self.snapshot()
                    count += 1
                elif self.header is not None:
                    snap = replace(last, header=tuple(self.header()))
                else:
                    continue
                live.update(self.render(snap), refresh=True)
        return self._state.last

    async def aclose(self) -> None:
        """Release the HTTP client."""
        await self.reader.aclose()


def _window(seconds: float) -> str:
    return f"{max(1, round(seconds))}s"


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True when `stop` was set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()


# -- command line --------------------------------------------------------------------------

HELP = "live console dashboard of a running analyzer (health, rates, errors, alerts)"
DESCRIPTION = (
    "Show a running analyzer's view of the services: per service health, request rate, error "
    "ratio, average and maximum latency, over two windows that refresh on their own cadence "
    "(default: every 10s the last 10 minutes, every minute the last hour); the call graph's "
    "hottest edges; the diagnosis with the root cause, its symptoms and the callers at risk "
    "marked; active alerts and the history of resolved ones with their recovery messages. On a "
    "terminal it is a live screen; when stdout is not a terminal it prints a plain-text snapshot "
    "per refresh. Ctrl-C stops it (exit 0)."
)


def _positive_duration(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text!r}")
    return seconds


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the `dashboard` options to `parser`."""
    parser.add_argument(
        "--url",
        default=None,
        metavar="URL",
        help=f"base URL of the analyzer's API (default: the --api setting, {DEFAULT_URL})",
    )
    parser.add_argument(
        "--refresh",
        type=_positive_duration,
        default=10.0,
        metavar="DURATION",
        help="how often the first view is fetched (default 10s)",
    )
    parser.add_argument(
        "--window",
        type=_positive_duration,
        default=600.0,
        metavar="DURATION",
        help="how far back the first view's numbers reach (default 10m)",
    )
    parser.add_argument(
        "--long-refresh",
        type=_positive_duration,
        default=60.0,
        metavar="DURATION",
        help="how often the second view is fetched (default 1m)",
    )
    parser.add_argument(
        "--long-window",
        type=_positive_duration,
        default=3600.0,
        metavar="DURATION",
        help="how far back the second view's numbers reach (default 1h)",
    )
    parser.add_argument(
        "--edges", type=int, default=8, metavar="N", help="hot edges shown (default 8)"
    )
    parser.add_argument(
        "--history", type=int, default=10, metavar="N", help="resolved alerts shown (default 10)"
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="print plain-text snapshots even on a terminal (the default when stdout is not one)",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="print one plain-text snapshot and exit (for scripts)",
    )


def _url_from_api(api: str) -> str:
    host, _, port = api.rpartition(":")
    if host in ("0.0.0.0", "[::]", ""):  # a wildcard listen address is reached on loopback
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def run_command(args: argparse.Namespace, config: AnalyzerConfig | None = None) -> int:
    """Run `watchman dashboard` with parsed `args`; the exit code."""
    url = args.url or (_url_from_api(config.api) if config is not None else DEFAULT_URL)
    dashboard = Dashboard(
        url,
        views=(ViewSpec(args.refresh, args.window), ViewSpec(args.long_refresh, args.long_window)),
        plain=True if (args.plain or args.once) else None,
        edges=max(0, args.edges),
        history=max(0, args.history),
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await dashboard.run(stop, iterations=1 if args.once else None)
        finally:
            await dashboard.aclose()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `dashboard` to the `watchman` subparsers (an `argparse` `_SubParsersAction`)."""
    from watchman_collector.cli import Subcommand, add_subcommand

    return add_subcommand(
        subparsers, Subcommand("dashboard", HELP, DESCRIPTION, configure_parser, run_command)
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m watchman_collector.dashboard`: the subcommand on its own."""
    parser = argparse.ArgumentParser(prog="watchman dashboard", description=DESCRIPTION)
    configure_parser(parser)
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
