"""Stdlib `logging` → OTLP logs, and trace ids on every `LogRecord` for the app's own formatters.

`LogExportHandler` sits on the root logger and hands records to the current LoggerProvider (the
active span's context travels with each record, so exported logs carry trace_id/span_id). The
record factory adds ``otelTraceID``, ``otelSpanID``, ``otelTraceSampled`` and ``otelServiceName`` —
the attribute names opentelemetry-instrumentation-logging uses — so a format string such as
``%(otelTraceID)s`` works.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry._logs import LoggerProvider, LogRecord, SeverityNumber

__all__ = [
    "LogExportHandler",
    "install_log_export",
    "install_trace_ids",
    "uninstall_log_export",
    "uninstall_trace_ids",
]

# Records of these loggers describe the export machinery itself; exporting them could loop.
_SKIPPED_PREFIXES = ("opentelemetry", "watchman_otel", "urllib3", "requests", "grpc")

# The standard attributes of a LogRecord: everything else was passed in `extra=` by the app.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "otelTraceID",
    "otelSpanID",
    "otelTraceSampled",
    "otelServiceName",
    "taskName",
}
_LEVELS = (
    (logging.CRITICAL, SeverityNumber.FATAL, "FATAL"),
    (logging.ERROR, SeverityNumber.ERROR, "ERROR"),
    (logging.WARNING, SeverityNumber.WARN, "WARN"),
    (logging.INFO, SeverityNumber.INFO, "INFO"),
    (logging.DEBUG, SeverityNumber.DEBUG, "DEBUG"),
)
_SUPPRESS_KEY = "suppress_instrumentation"


def _severity(levelno: int) -> tuple[SeverityNumber, str]:
    for threshold, number, text in _LEVELS:
        if levelno >= threshold:
            return number, text
    return SeverityNumber.TRACE, "TRACE"


def _attribute(value: Any) -> Any:
    if isinstance(value, str | bool | int | float):
        return value
    return repr(value)


class LogExportHandler(logging.Handler):
    """Forwards `logging` records to the current LoggerProvider; drops them while none is set."""

    def __init__(self) -> None:
        super().__init__(level=logging.NOTSET)
        self.provider: LoggerProvider | None = None
        self._busy = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        """Translate and emit; never raises, never recurses into itself."""
        last_resort = logging.lastResort
        if (
            last_resort is not None
            and record.levelno >= last_resort.level
            and _only_handler(self, record)
        ):
            # Without us the record would reach logging's last-resort stderr handler; an app
            # with no logging configuration must keep seeing its warnings.
            last_resort.handle(record)
        provider = self.provider
        if provider is None or record.name.startswith(_SKIPPED_PREFIXES):
            return
        if context_api.get_value(context_api._SUPPRESS_INSTRUMENTATION_KEY):
            return  # an exporter thread: its own logs must not feed the exporter
        if getattr(self._busy, "active", False):
            return
        self._busy.active = True
        try:
            provider.get_logger(record.name).emit(self._translate(record))
        except Exception:
            self.handleError(record)
        finally:
            self._busy.active = False

    def _translate(self, record: logging.LogRecord) -> LogRecord:
        number, text = _severity(record.levelno)
        attributes: dict[str, Any] = {
            key: _attribute(value) for key, value in vars(record).items() if key not in _RESERVED
        }
        attributes["code.file.path"] = record.pathname
        attributes["code.function.name"] = record.funcName
        attributes["code.line.number"] = record.lineno
        attributes["logger.name"] = record.name
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, exc, _ = record.exc_info
            attributes["exception.type"] = exc_type.__name__
            attributes["exception.message"] = str(exc)
            attributes["exception.stacktrace"] = logging.Formatter().formatException(
                record.exc_info
            )
        return LogRecord(
            timestamp=int(record.created * 1e9),
            observed_timestamp=time.time_ns(),
            context=context_api.get_current(),
            severity_number=number,
            severity_text=text,
            body=record.getMessage(),
            attributes=attributes,
        )


def _only_handler(handler: logging.Handler, record: logging.LogRecord) -> bool:
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None:
        if any(h is not handler for h in logger.handlers):
            return False
        logger = logger.parent if logger.propagate else None
    return True


_HANDLER = LogExportHandler()
_factory_lock = threading.Lock()
_previous_factory: Callable[..., logging.LogRecord] | None = None
_service_name = ""


def install_log_export(provider: LoggerProvider) -> LogExportHandler:
    """Attach the handler to the root logger (once) and point it at ``provider``."""
    _HANDLER.provider = provider
    root = logging.getLogger()
    if _HANDLER not in root.handlers:
        root.addHandler(_HANDLER)
    return _HANDLER


def uninstall_log_export() -> None:
    """Detach the handler from the root logger."""
    _HANDLER.provider = None
    logging.getLogger().removeHandler(_HANDLER)


def install_trace_ids(service_name: str) -> None:
    """Wrap the LogRecord factory so records carry the active trace and span ids (once)."""
    global _previous_factory, _service_name  # noqa: PLW0603 - logging's factory is process-global
    with _factory_lock:
        _service_name = service_name
        if _previous_factory is not None:
            return
        previous = logging.getLogRecordFactory()
        _previous_factory = previous

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            span_context = trace_api.get_current_span().get_span_context()
            if span_context.is_valid:
                record.otelTraceID = format(span_context.trace_id, "032x")
                record.otelSpanID = format(span_context.span_id, "016x")
                record.otelTraceSampled = span_context.trace_flags.sampled
            else:
                record.otelTraceID = "0"
                record.otelSpanID = "0"
                record.otelTraceSampled = False
            record.otelServiceName = _service_name
            return record

        logging.setLogRecordFactory(factory)


def uninstall_trace_ids() -> None:
    """Restore the LogRecord factory that was in place before `install_trace_ids`."""
    global _previous_factory  # noqa: PLW0603 - see install_trace_ids
    with _factory_lock:
        if _previous_factory is not None:
            logging.setLogRecordFactory(_previous_factory)
            _previous_factory = None
