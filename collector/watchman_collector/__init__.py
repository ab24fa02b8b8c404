"""watchman analyzer: OTLP in; service graph, root causes, cascade predictions and alerts out."""

from watchman_otel._version import __version__

__all__ = ["__version__"]
