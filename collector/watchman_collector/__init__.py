"""watchman analyzer: OTLP in; service graph, root causes, cascade predictions and alerts out."""

from importlib.metadata import PackageNotFoundError, version

# From the installed distribution's metadata, not `watchman_otel._version`: importing anything
# under `watchman_otel` loads the SDK and the OpenTelemetry SDK (≈ 10 MiB of RSS) into every
# analyzer process, which uses neither.
try:
    __version__ = version("watchman-otel")
except PackageNotFoundError:  # pragma: no cover - running from a source tree, not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
