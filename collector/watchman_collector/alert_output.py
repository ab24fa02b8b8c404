"""Alerts as the outside world reads them: Alertmanager-v2 JSON, the API payload, `watchman_alerts`.

One module so the replay output, `GET /api/v1/alerts`, the Alertmanager client and the metric
agree on every field. Timestamps are RFC 3339 in UTC with milliseconds, truncated, so the same
event time always prints the same text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from watchman_collector.alert import Alert, AlertState, AlertTransition

__all__ = [
    "alert_json",
    "alerts_metric",
    "alerts_payload",
    "format_rfc3339",
    "postable_alert",
    "transition_json",
    "transition_line",
]

_ALERTS_LABELS = ("alertname", "alertstate", "service", "severity", "role", "root_cause")


def format_rfc3339(time_ns: int) -> str:
    """`2026-11-23T09:42:23.123Z`: RFC 3339, UTC, milliseconds truncated (not rounded)."""
    seconds, rest_ns = divmod(time_ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rest_ns // 1_000_000:03d}Z"


def _starts_at(alert: Alert) -> int:
    # Prometheus sends FiredAt as startsAt; a pending alert has only its ActiveAt.
    return alert.fired_at_ns if alert.fired_at_ns is not None else alert.active_at_ns


def transition_json(transition: AlertTransition) -> dict[str, Any]:
    """The replay contract's object: labels, annotations, startsAt, endsAt (resolved), status."""
    alert = transition.alert
    out: dict[str, Any] = {
        "labels": dict(sorted(alert.labels.items())),
        "annotations": dict(sorted(alert.annotations.items())),
        "startsAt": format_rfc3339(_starts_at(alert)),
    }
    if alert.resolved_at_ns is not None:
        out["endsAt"] = format_rfc3339(alert.resolved_at_ns)
    out["status"] = transition.status
    return out


def transition_line(transition: AlertTransition) -> str:
    """One JSON line (no newline) for a transition: compact, keys in the documented order."""
    return json.dumps(transition_json(transition), separators=(",", ":"), ensure_ascii=False)


def postable_alert(alert: Alert, *, generator_url: str, ends_at_ns: int | None) -> dict[str, Any]:
    """An Alertmanager `POST /api/v2/alerts` item.

    `ends_at_ns` is the resolve time of a resolved alert, or for a firing one the time until
    which it is valid without being re-sent (Prometheus's ValidUntil).
    """
    out: dict[str, Any] = {
        "labels": dict(sorted(alert.labels.items())),
        "annotations": dict(sorted(alert.annotations.items())),
        "startsAt": format_rfc3339(_starts_at(alert)),
    }
    if ends_at_ns is not None:
        out["endsAt"] = format_rfc3339(ends_at_ns)
    if generator_url:
        out["generatorURL"] = generator_url
    return out


def alert_json(alert: Alert) -> dict[str, Any]:
    """One alert in `GET /api/v1/alerts`: Prometheus's API fields plus ours."""
    return {
        "labels": dict(sorted(alert.labels.items())),
        "annotations": dict(sorted(alert.annotations.items())),
        "state": str(alert.state),
        "activeAt": format_rfc3339(alert.active_at_ns),
        "startsAt": format_rfc3339(alert.fired_at_ns) if alert.fired_at_ns is not None else None,
        "endsAt": format_rfc3339(alert.resolved_at_ns)
        if alert.resolved_at_ns is not None
        else None,
        "value": alert.value,
        "fingerprint": alert.fingerprint,
        "inhibited": alert.inhibited,
        "inhibitedBy": list(alert.inhibited_by),
        "recipients": list(alert.recipients),
        "evidence": dict(alert.evidence),
    }


def alerts_payload(active: Iterable[Alert], history: Iterable[Alert]) -> dict[str, Any]:
    """The `GET /api/v1/alerts` body: `{"alerts": [active...], "history": [resolved...]}`."""
    return {
        "alerts": [alert_json(a) for a in active],
        "history": [alert_json(a) for a in history],
    }


def alerts_metric(active: Iterable[Alert]) -> GaugeMetricFamily:
    """`watchman_alerts{alertname, alertstate, service, severity, role, root_cause} 1`.

    The shape of Prometheus's own `ALERTS` series: one sample per pending or firing alert, gone
    when the alert is gone. Inhibition is not a state here, as in Prometheus.
    """
    family = GaugeMetricFamily(
        "watchman_alerts",
        "Pending and firing alerts, in the shape of Prometheus's ALERTS series.",
        labels=list(_ALERTS_LABELS),
    )
    for alert in active:
        if alert.state is AlertState.RESOLVED:
            continue
        labels = {**alert.labels, "alertstate": str(alert.state)}
        family.add_metric([labels.get(name, "") for name in _ALERTS_LABELS], 1.0)
    return family
