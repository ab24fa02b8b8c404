"""The SDK's error types and its rule for internal errors: log them, never raise into the host."""

from __future__ import annotations

import logging
import os

__all__ = ["ConfigurationError", "report_internal_error"]

_logger = logging.getLogger("watchman_otel")


class ConfigurationError(ValueError):
    """A setting has a value the SDK cannot use; the message names the setting and the fix."""


def report_internal_error(what: str, exc: BaseException) -> None:
    """Log an error inside the SDK instead of raising it into the host.

    Under our own tests (``WATCHMAN_RAISE_INTERNAL_ERRORS=1``) it is re-raised so the bug is seen.
    """
    if os.environ.get("WATCHMAN_RAISE_INTERNAL_ERRORS") == "1":
        raise exc
    _logger.warning("watchman_otel: %s failed: %s", what, exc, exc_info=exc)
