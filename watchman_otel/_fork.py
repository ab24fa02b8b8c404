"""After-fork re-initialisation in the child: new instance id, new exporters, fresh metric state.

Pre-fork servers (gunicorn, uvicorn ``--workers``) fork after the app, and often `init()`, ran in
the parent. The child inherits the parent's providers: their Resource names the parent's instance,
their metric state holds the parent's counts, and their exporters share the parent's sockets. So
the child disowns that pipeline (its exporters drop everything and never touch the inherited
sockets) and builds its own, which the global switching providers then forward to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from watchman_otel._errors import report_internal_error

if TYPE_CHECKING:
    from watchman_otel._init import WatchmanSDK

__all__ = ["reinitialise"]

_logger = logging.getLogger("watchman_otel")


def reinitialise(sdk: WatchmanSDK, start_pipeline: Callable[[WatchmanSDK], None]) -> None:
    """Replace ``sdk``'s pipeline with a fresh one for this (child) process; never raises."""
    inherited = sdk.pipeline
    try:
        if inherited is not None:
            inherited.disown()
        start_pipeline(sdk)  # a new Resource: new service.instance.id and process.pid
    except Exception as exc:
        sdk.pipeline = None
        report_internal_error("re-initialising after fork", exc)
        return
    _logger.debug("watchman_otel: re-initialised after fork as instance %s", sdk.instance_id)
