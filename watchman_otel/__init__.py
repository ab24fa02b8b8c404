"""watchman-otel: make a Python service observable with one call, `watchman_otel.init()`."""

from watchman_otel._version import __version__

__all__ = ["__version__"]
