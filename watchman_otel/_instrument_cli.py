"""`watchman-instrument CMD ...`: run a Python program with `init()` applied and no code change.

Like ``opentelemetry-instrument``: options become ``WATCHMAN_*`` variables, a directory holding a
``sitecustomize`` module is put first on PYTHONPATH, and CMD is exec'd. Every Python interpreter
the command starts (gunicorn or uvicorn workers included) then calls `init()` at start-up, before
the app's own imports, and chains to any ``sitecustomize`` it would otherwise have loaded.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from watchman_otel._errors import ConfigurationError, report_internal_error
from watchman_otel._settings import SETTINGS, resolve_config

__all__ = ["AUTOINIT_DIR", "bootstrap", "build_parser", "main"]

AUTOINIT_DIR = str(Path(__file__).parent / "_autoinit")
_CHAINED = "_watchman_chained_sitecustomize"


def build_parser() -> argparse.ArgumentParser:
    """One ``--option`` per settable registry entry, then the command to run."""
    parser = argparse.ArgumentParser(
        prog="watchman-instrument",
        description="Run a Python program with watchman_otel.init() applied.",
        epilog="Options set the WATCHMAN_* variable of the same name; see docs/sdk-settings.md.",
    )
    for setting in SETTINGS:
        if not setting.argument:
            continue
        parser.add_argument(
            "--" + setting.name.replace("_", "-"),
            dest=setting.name,
            metavar="VALUE",
            help=f"{setting.doc} (sets {setting.watchman_env})",
        )
    parser.add_argument("command", help="the program to run, e.g. uvicorn or python")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Validate the settings, prepare the environment and exec the command."""
    parser = build_parser()
    options = parser.parse_args(argv)
    environ = dict(os.environ)
    for setting in SETTINGS:
        value = getattr(options, setting.name, None) if setting.argument else None
        if value is not None:
            environ[setting.watchman_env] = value
    try:
        resolve_config({}, environ)  # fail here, with a clear message, not in every worker
    except ConfigurationError as exc:
        print(f"watchman-instrument: {exc}", file=sys.stderr)
        return 2
    executable = shutil.which(options.command)
    if executable is None:
        print(f"watchman-instrument: command not found: {options.command}", file=sys.stderr)
        return 127
    python_path = environ.get("PYTHONPATH")
    environ["PYTHONPATH"] = AUTOINIT_DIR + os.pathsep + python_path if python_path else AUTOINIT_DIR
    os.execve(executable, [options.command, *options.args], environ)
    return 0  # pragma: no cover - execve does not return


def _chain_sitecustomize() -> None:
    """Import the ``sitecustomize`` that ours shadows, if any (once)."""
    if _CHAINED in sys.modules:
        return
    ours = sys.modules.pop("sitecustomize", None)
    saved_path = list(sys.path)
    sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or ".") != AUTOINIT_DIR]
    try:
        sys.modules[_CHAINED] = importlib.import_module("sitecustomize")
    except ImportError:
        sys.modules[_CHAINED] = sys  # marker: nothing to chain
    finally:
        sys.path[:] = saved_path
        if ours is not None:
            sys.modules["sitecustomize"] = ours


def bootstrap() -> None:
    """Called by our ``sitecustomize``: chain the shadowed one, then `init()`; never raises."""
    try:
        _chain_sitecustomize()
        import watchman_otel

        watchman_otel.init()
    except Exception as exc:
        report_internal_error("watchman-instrument start-up", exc)
