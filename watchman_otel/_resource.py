"""The `Resource` every signal of this process carries: who is speaking, which instance, which host.

The analyzer keys instances on ``service.instance.id``; it is a fresh UUID per process and is
replaced after fork, so gunicorn/uvicorn workers are told apart.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Mapping

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.version import __version__ as sdk_version

from watchman_otel._version import __version__

__all__ = ["WATCHMAN_VERSION_KEY", "build_resource"]

WATCHMAN_VERSION_KEY = "watchman.version"


def build_resource(
    *,
    service_name: str,
    service_version: str | None,
    environment: str | None,
    attributes: Mapping[str, str],
    instance_id: str | None = None,
) -> Resource:
    """Build the Resource; explicit service settings win over the same keys in ``attributes``.

    Built directly (not with ``Resource.create``) so no resource detector runs and no
    environment is read twice: the settings registry has already resolved OTEL_RESOURCE_ATTRIBUTES.
    """
    merged: dict[str, str | int] = dict(attributes)
    merged.update(
        {
            "service.name": service_name,
            "service.instance.id": instance_id or str(uuid.uuid4()),
            "host.name": socket.gethostname(),
            "process.pid": os.getpid(),
            "process.runtime.name": sys.implementation.name,
            "process.runtime.version": ".".join(map(str, sys.version_info[:3])),
            "telemetry.sdk.name": "opentelemetry",
            "telemetry.sdk.language": "python",
            "telemetry.sdk.version": sdk_version,
            "telemetry.distro.name": "watchman-otel",
            "telemetry.distro.version": __version__,
            WATCHMAN_VERSION_KEY: __version__,
        }
    )
    if service_version is not None:
        merged["service.version"] = service_version
    if environment is not None:
        merged["deployment.environment.name"] = environment
    return Resource(merged)
