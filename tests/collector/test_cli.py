"""The `watchman` command line: help, version, exit codes, config errors, and serve's lifecycle."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import httpx
import pytest
from watchman_collector import __version__
from watchman_collector.cli import COMMANDS, EXIT_USAGE, REGISTERED_MODULES, build_parser, main
from watchman_collector.config import SETTINGS


def test_every_setting_flag_is_in_the_help_with_its_env_var(capsys):
    """`serve --help` documents every serve setting with its WATCHMAN_* variable."""
    assert main(["serve", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for setting in SETTINGS:
        if "serve" in setting.commands:
            assert setting.flag in out
            assert setting.env in out


def test_replay_help_has_only_the_settings_replay_uses(capsys):
    """Listener flags belong to serve; replay's help does not offer them."""
    assert main(["replay", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--pair-ttl" in out
    assert "--summary" in out
    assert "--otlp-grpc" not in out


def test_every_argument_has_help_text():
    """No flag or positional of any subcommand is undocumented."""
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    assert {c.name for c in COMMANDS} <= set(subparsers.choices)
    for sub in subparsers.choices.values():
        for action in sub._actions:
            assert action.help, f"{sub.prog} {action.option_strings or action.dest} lacks help"


def test_registered_modules_slot_in_as_subcommands(capsys):
    """Modules in REGISTERED_MODULES that are installed appear in `watchman --help`."""
    import importlib.util

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in REGISTERED_MODULES:
        if importlib.util.find_spec(name) is not None:
            assert name.rsplit(".", 1)[1] in out


def test_version_and_usage_errors(capsys):
    """--version exits 0 with the version; no subcommand or an unknown flag exits 2."""
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out
    assert main([]) == EXIT_USAGE
    assert main(["serve", "--no-such-flag"]) == EXIT_USAGE


def test_invalid_setting_value_exits_2_with_the_source(capsys):
    """A bad value from env is a usage error naming the variable."""
    assert main(["serve"], env={"WATCHMAN_API": "nonsense"}) == EXIT_USAGE
    assert "WATCHMAN_API" in capsys.readouterr().err


def test_python_dash_m_runs_the_same_cli():
    """`python -m watchman_collector --help` lists the subcommands."""
    done = subprocess.run(
        [sys.executable, "-m", "watchman_collector", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    assert "serve" in done.stdout
    assert "replay" in done.stdout


@pytest.mark.integration
def test_serve_logs_bound_addresses_and_stops_on_sigterm():
    """`watchman serve` on port 0 logs real ports, answers /healthz, exits 0 on SIGTERM."""
    env = {**os.environ, "WATCHMAN_LOG_LEVEL": "info"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "watchman_collector",
            "serve",
            "--otlp-grpc",
            "127.0.0.1:0",
            "--otlp-http",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        line = ""
        for _ in range(200):
            line = proc.stderr.readline()
            if "API on" in line or not line:
                break
        match = re.search(r"OTLP/gRPC on (\S+), OTLP/HTTP on (\S+), API on (\S+)", line)
        assert match, line
        grpc_addr, http_addr, api_addr = match.groups()
        assert not grpc_addr.endswith(":0")
        assert not http_addr.endswith(":0")
        health = httpx.get(f"http://{api_addr}/healthz", timeout=10)
        assert health.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def test_serve_exits_1_when_the_port_is_taken():
    """A listener that cannot bind is reported with its address and exit code 1."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "watchman_collector",
                "serve",
                "--otlp-grpc",
                "off",
                "--otlp-http",
                "off",
                "--api",
                f"127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert f"127.0.0.1:{port}" in done.stderr


def test_cli_docs_list_every_setting():
    """docs/cli.md names every setting's flag and environment variable."""
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "cli.md").read_text()
    for setting in SETTINGS:
        assert f"`{setting.flag}`" in doc
        assert f"`{setting.env}`" in doc
