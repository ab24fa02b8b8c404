"""Imported at start-up under `watchman-instrument`: runs `init()` before the program."""

from watchman_otel._instrument_cli import bootstrap

__all__: list[str] = []

bootstrap()
