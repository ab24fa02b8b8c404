"""The alert stage: a state machine per alert with the semantics of Prometheus alerting rules.

Each tick the detect and cascade stages hand over the conditions breached *now*, as `Signal`s, with
the clock's time. `AlertEvaluator.tick` turns them into alerts exactly as a Prometheus rule group
would for a rule whose expression returned those series:

- an alert is identified by its label set; a signal whose labels change (a `symptom` that becomes
  the `root_cause`, a `warning` that becomes `critical`) is a new alert, and the old one clears;
- a new alert is `pending`; it turns `firing` on the first tick at least `for` after it became
  active (at once when `for` is 0); a pending alert whose signal stops is dropped silently;
- a firing alert whose signal stops keeps firing until `keep_firing_for` has passed since the
  first tick without it, then resolves; a signal back in time resets that count;
- only `firing` and `resolved` are transitions (what notifiers send), each exactly once;
- a `symptom` or `at_risk` alert whose `root_cause` service has a firing root-cause alert is
  marked inhibited: still listed, not notified (Alertmanager's inhibition, computed here too).

Output order is deterministic (time, then labels), so a replay prints the same lines every run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from watchman_collector.rules import RuleSet, default_rules, format_duration

__all__ = [
    "Alert",
    "AlertEvaluator",
    "AlertState",
    "AlertTransition",
    "AlertUpdate",
    "Role",
    "Signal",
    "fingerprint",
]

_NS_PER_S = 1_000_000_000
_LABEL_NAMES = ("alertname", "service", "severity", "role", "root_cause")


class Role(StrEnum):
    """What the cascade stage made of a service: the cause, a caller suffering, or one at risk."""

    ROOT_CAUSE = "root_cause"
    SYMPTOM = "symptom"
    AT_RISK = "at_risk"


class AlertState(StrEnum):
    """Prometheus's alert states, plus `resolved` for a firing alert that ended."""

    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Signal:
    """One condition breached at this tick, as detect/cascade produce it.

    `root_cause` is the service blamed; for a `root_cause` signal it must equal `service`, which
    lets one Alertmanager inhibit rule (`equal: [root_cause]`) pair symptoms with their cause.
    `evidence` is free-form (numbers behind the decision) and is not part of the identity.
    """

    alertname: str
    service: str
    severity: str
    role: Role
    root_cause: str
    value: float
    summary: str
    description: str
    evidence: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.alertname or not self.service or not self.severity:
            msg = f"alertname, service and severity must be non-empty: {self!r}"
            raise ValueError(msg)
        object.__setattr__(self, "role", Role(self.role))  # accept the plain string too
        if self.role is Role.ROOT_CAUSE and self.root_cause != self.service:
            msg = (
                f"a root_cause signal blames its own service: root_cause={self.root_cause!r} "
                f"must equal service={self.service!r}"
            )
            raise ValueError(msg)

    @property
    def labels(self) -> dict[str, str]:
        """The identifying labels, in the documented order."""
        return {
            "alertname": self.alertname,
            "service": self.service,
            "severity": self.severity,
            "role": str(self.role),
            "root_cause": self.root_cause,
        }


def fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's alert fingerprint: FNV-1a 64 over sorted `name 0xff value 0xff`, 16 hex.

    The same value Alertmanager shows as `fingerprint` and in `status.inhibitedBy`, so our API and
    Alertmanager's can be joined without guessing.
    """
    h = 0xCBF29CE484222325
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode():
                h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
            h = ((h ^ 0xFF) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


@dataclass(frozen=True, slots=True)
class Alert:
    """A snapshot of one alert. Times are ns since the epoch; `fired_at_ns` is `startsAt`."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    state: AlertState
    active_at_ns: int
    value: float
    fired_at_ns: int | None = None
    resolved_at_ns: int | None = None
    keep_firing_since_ns: int | None = None
    inhibited_by: tuple[str, ...] = ()  # fingerprints of the firing root-cause alerts
    recipients: tuple[str, ...] = ()
    evidence: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def fingerprint(self) -> str:
        """Alertmanager's fingerprint of the labels."""
        return fingerprint(self.labels)

    @property
    def inhibited(self) -> bool:
        """True while a firing root-cause alert suppresses this symptom's notifications."""
        return bool(self.inhibited_by)

    @property
    def sort_key(self) -> tuple[str, ...]:
        """Deterministic order: the documented labels, then anything else."""
        return tuple(self.labels.get(name, "") for name in _LABEL_NAMES)


@dataclass(frozen=True, slots=True)
class AlertTransition:
    """An alert that started firing or resolved at `time_ns`; `alert` is the state after it."""

    alert: Alert
    time_ns: int

    @property
    def status(self) -> str:
        """`firing` or `resolved`, as Alertmanager's webhook and our replay output say."""
        return "resolved" if self.alert.state is AlertState.RESOLVED else "firing"

    @property
    def message(self) -> str:
        """The alert's summary when it fires; the recovery message when it resolves."""
        if self.alert.state is AlertState.RESOLVED:
            return self.alert.annotations.get("recovery", "")
        return self.alert.annotations.get("summary", "")


@dataclass(frozen=True, slots=True)
class AlertUpdate:
    """What one tick produced: the transitions, then every active alert (pending and firing)."""

    time_ns: int
    transitions: tuple[AlertTransition, ...]
    alerts: tuple[Alert, ...]


@dataclass(slots=True)
class _Entry:
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    value: float
    evidence: Mapping[str, Any]
    active_at_ns: int
    for_ns: int
    keep_ns: int
    recipients: tuple[str, ...]
    state: AlertState = AlertState.PENDING
    fired_at_ns: int | None = None
    keep_firing_since_ns: int | None = None


class AlertEvaluator:
    """Keeps every active alert and a bounded history of resolved ones; `tick` advances them."""

    def __init__(self, rules: RuleSet | None = None, *, history_size: int = 256) -> None:
        self.rules = rules if rules is not None else default_rules()
        self._active: dict[tuple[tuple[str, str], ...], _Entry] = {}
        self._history: deque[Alert] = deque(maxlen=history_size)
        self._inhibited: dict[tuple[tuple[str, str], ...], tuple[str, ...]] = {}
        self._last_ns: int | None = None

    def tick(self, signals: Iterable[Signal], now_ns: int) -> AlertUpdate:
        """Advance every alert to `now_ns` given the conditions breached now."""
        if self._last_ns is not None and now_ns < self._last_ns:
            now_ns = self._last_ns  # the event-time watermark never goes back; neither do alerts
        self._last_ns = now_ns
        current = self._dedupe(signals)
        transitions: list[AlertTransition] = []
        fired: list[tuple[tuple[str, str], ...]] = []

        for key, signal in current.items():
            entry = self._active.get(key)
            if entry is None:
                self._active[key] = self._new_entry(signal, now_ns)
            else:
                entry.value = signal.value
                entry.annotations = _annotations(signal)
                entry.evidence = signal.evidence
                entry.keep_firing_since_ns = None

        for key in list(self._active):
            entry = self._active[key]
            if key not in current:
                if entry.state is AlertState.PENDING:
                    del self._active[key]  # never fired: nothing to recover from
                    continue
                if entry.keep_firing_since_ns is None:
                    entry.keep_firing_since_ns = now_ns
                if now_ns - entry.keep_firing_since_ns >= entry.keep_ns:
                    del self._active[key]
                    resolved = self._resolve(entry, now_ns)
                    self._history.appendleft(resolved)
                    transitions.append(AlertTransition(resolved, now_ns))
                continue
            if entry.state is AlertState.PENDING and now_ns - entry.active_at_ns >= entry.for_ns:
                entry.state = AlertState.FIRING
                entry.fired_at_ns = now_ns
                fired.append(key)

        self._inhibit()  # before the firing snapshots, so they carry this tick's inhibition
        transitions.extend(
            AlertTransition(self._snapshot(k, self._active[k]), now_ns) for k in fired
        )
        transitions.sort(key=lambda t: (t.time_ns, t.alert.sort_key, t.status))
        return AlertUpdate(now_ns, tuple(transitions), self.alerts())

    def alerts(self) -> tuple[Alert, ...]:
        """Every pending and firing alert, in label order."""
        snapshots = [self._snapshot(key, entry) for key, entry in self._active.items()]
        return tuple(sorted(snapshots, key=lambda a: a.sort_key))

    def history(self) -> tuple[Alert, ...]:
        """Resolved alerts, newest first, at most `history_size`."""
        return tuple(self._history)

    def _dedupe(self, signals: Iterable[Signal]) -> dict[tuple[tuple[str, str], ...], Signal]:
        # Two signals with one label set are one alert; keep the worst, deterministically.
        out: dict[tuple[tuple[str, str], ...], Signal] = {}
        for signal in signals:
            rule = self.rules.rule_for(signal.alertname, signal.service)
            if not rule.enabled:
                continue
            key = _key(signal.labels)
            kept = out.get(key)
            if kept is None or (signal.value, signal.summary, signal.description) > (
                kept.value,
                kept.summary,
                kept.description,
            ):
                out[key] = signal
        return out

    def _new_entry(self, signal: Signal, now_ns: int) -> _Entry:
        rule = self.rules.rule_for(signal.alertname, signal.service)
        return _Entry(
            labels=MappingProxyType(signal.labels),
            annotations=_annotations(signal),
            value=signal.value,
            evidence=signal.evidence,
            active_at_ns=now_ns,
            for_ns=int(rule.for_s * _NS_PER_S),
            keep_ns=int(rule.keep_firing_for_s * _NS_PER_S),
            recipients=self.rules.recipients_for(signal.severity, signal.service),
        )

    def _inhibit(self) -> None:
        causes: dict[str, list[str]] = {}
        for entry in self._active.values():
            if entry.state is AlertState.FIRING and entry.labels["role"] == Role.ROOT_CAUSE:
                causes.setdefault(entry.labels["service"], []).append(fingerprint(entry.labels))
        self._inhibited = {
            key: tuple(sorted(causes[entry.labels["root_cause"]]))
            for key, entry in self._active.items()
            if entry.labels["role"] != Role.ROOT_CAUSE
            and entry.labels["root_cause"] in causes
            and entry.labels["root_cause"] != entry.labels["service"]
        }

    def _snapshot(self, key: tuple[tuple[str, str], ...], entry: _Entry) -> Alert:
        return Alert(
            labels=entry.labels,
            annotations=entry.annotations,
            state=entry.state,
            active_at_ns=entry.active_at_ns,
            value=entry.value,
            fired_at_ns=entry.fired_at_ns,
            keep_firing_since_ns=entry.keep_firing_since_ns,
            inhibited_by=self._inhibited.get(key, ()),
            recipients=entry.recipients,
            evidence=entry.evidence,
        )

    def _resolve(self, entry: _Entry, now_ns: int) -> Alert:
        fired = entry.fired_at_ns if entry.fired_at_ns is not None else entry.active_at_ns
        labels = entry.labels
        recovery = (
            f"{labels['alertname']} on {labels['service']} recovered after "
            f"{format_duration((now_ns - fired) / _NS_PER_S)}"
        )
        snapshot = self._snapshot(_key(labels), entry)
        return replace(
            snapshot,
            state=AlertState.RESOLVED,
            resolved_at_ns=now_ns,
            keep_firing_since_ns=None,
            annotations=MappingProxyType({**entry.annotations, "recovery": recovery}),
        )


def _key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def _annotations(signal: Signal) -> Mapping[str, str]:
    return MappingProxyType({"summary": signal.summary, "description": signal.description})
