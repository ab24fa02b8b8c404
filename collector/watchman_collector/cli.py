"""The `watchman` command: `serve` runs the analyzer, `replay` replays recorded OTLP JSON lines.

Subcommands are entries of `COMMANDS` (name, help, how to add its arguments, how to run it), so
new ones slot in without touching the others. Settings flags come from the registry in `config`,
so every flag's help names its environment variable and default. Exit codes: 0 success, 1 a
runtime failure (a port in use, an unreadable file, a bad line under `--strict`), 2 a usage or
configuration error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from watchman_collector import __version__
from watchman_collector.config import (
    CONFIG_ENV,
    SETTINGS,
    AnalyzerConfig,
    ConfigError,
    resolve,
)

__all__ = [
    "COMMANDS",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "REGISTERED_MODULES",
    "Subcommand",
    "add_subcommand",
    "build_parser",
    "main",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

log = logging.getLogger("watchman_collector")


@dataclass(frozen=True, slots=True)
class Subcommand:
    """One `watchman` subcommand: its arguments and what runs it (returns the exit code)."""

    name: str
    help: str
    description: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, AnalyzerConfig], int]


def _add_settings(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        help=f"YAML file of settings (keys as the flags without dashes, e.g. otlp_grpc); "
        f"env {CONFIG_ENV}",
    )
    group = parser.add_argument_group(
        "settings", "each also read from its WATCHMAN_* variable or the --config file"
    )
    for setting in SETTINGS:
        if command not in setting.commands:
            continue
        group.add_argument(
            setting.flag,
            dest=setting.name,
            metavar=setting.metavar or None,
            default=None,
            help=f"{setting.help} (env {setting.env}; default {setting.default})",
        )


def _configure_serve(parser: argparse.ArgumentParser) -> None:
    _add_settings(parser, "serve")


def _run_serve(args: argparse.Namespace, config: AnalyzerConfig) -> int:
    from watchman_collector.serve import serve

    return serve(config)


def _configure_replay(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="OTLP JSON lines files as the Collector's file exporter writes them "
        "(gzip recognised by content; '-' reads stdin)",
    )
    parser.add_argument(
        "--summary",
        action="store_true",
        help='also write the final graph as one JSON object ("type": "summary") to stdout',
    )
    parser.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="no human-readable summary on stderr",
    )
    parser.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress bar on stderr: auto draws it when stderr is a terminal and the input is "
        "8 MiB or more (default auto)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="stop with exit code 1 at the first line that is not a valid OTLP JSON request "
        "(default: skip it, count it, warn)",
    )
    _add_settings(parser, "replay")


def _run_replay(args: argparse.Namespace, config: AnalyzerConfig) -> int:
    from watchman_collector.replay import Replayer, ReplayError, format_summary, summarize

    progress = {"auto": None, "always": True, "never": False}[args.progress]
    replayer = Replayer(config, strict=args.strict, out=sys.stdout)
    try:
        replayer.replay(args.paths, progress=progress)
    except ReplayError as exc:
        log.error("%s", exc)  # the message names file and line; no traceback
        return EXIT_FAILURE
    except OSError as exc:
        log.error("cannot read %s: %s", exc.filename, exc.strerror or exc)
        return EXIT_FAILURE
    summary = summarize(replayer)
    if not args.quiet:
        format_summary(summary, sys.stderr)
    if args.summary:
        sys.stdout.write(json.dumps(summary, separators=(",", ":")) + "\n")
        sys.stdout.flush()
    return EXIT_OK


COMMANDS: tuple[Subcommand, ...] = (
    Subcommand(
        "serve",
        "run the analyzer: OTLP receivers, service graph, /metrics and the JSON API",
        "Receive OTLP (gRPC and HTTP), keep the live service graph, and serve /metrics, "
        "/healthz and /api/v1/* on the --api address. Stops cleanly on SIGINT or SIGTERM.",
        _configure_serve,
        _run_serve,
    ),
    Subcommand(
        "replay",
        "replay recorded OTLP JSON lines through the analyzer in event time",
        "Read OTLP JSON lines (the Collector's file exporter format, .gz too), run them through "
        "the same stages as 'serve' with an event-time clock, and print a summary of the final "
        "graph on stderr (--summary: also as JSON on stdout).",
        _configure_replay,
        _run_replay,
    ),
)


def add_subcommand(subparsers: Any, command: Subcommand) -> argparse.ArgumentParser:
    """Add a module's own `command` to the `watchman` subparsers (for its `register`).

    `main` runs it through the parser's `_command` default, and reads `args.config` (the
    settings file) for every subcommand: a module's command without `--config` reads none.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        command.name, help=command.help, description=command.description
    )
    command.configure(parser)
    parser.set_defaults(config=None, _command=command)
    return parser


REGISTERED_MODULES: tuple[str, ...] = ("watchman_collector.demo", "watchman_collector.dashboard")
"""Modules that add their own subcommand with `register(subparsers) -> ArgumentParser`.

The parser they add sets `_command` (a `Subcommand`) and `config` defaults; absent modules are
skipped, so a trimmed installation still has `serve` and `replay`.
"""


def build_parser() -> argparse.ArgumentParser:
    """The `watchman` parser: one subparser per `COMMANDS` entry and per registered module."""
    parser = argparse.ArgumentParser(
        prog="watchman",
        description="watchman analyzer: OTLP in; service graph, health and alerts out.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        child = sub.add_parser(command.name, help=command.help, description=command.description)
        command.configure(child)
        child.set_defaults(_command=command)
    for name in REGISTERED_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def _setup_logging(level: str) -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_watchman", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._watchman = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level.upper())


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run the `watchman` command line; returns the exit code (the console script exits with it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    command: Subcommand = args._command
    flags = {s.name: getattr(args, s.name, None) for s in SETTINGS}
    try:
        config = resolve(flags, os.environ if env is None else env, getattr(args, "config", None))
    except ConfigError as exc:
        sys.stderr.write(f"watchman {command.name}: error: {exc}\n")
        return EXIT_USAGE
    _setup_logging(config.log_level)
    try:
        return command.run(args, config)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
