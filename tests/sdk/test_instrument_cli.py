"""watchman-instrument: run an unmodified Python program with init() applied."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sdk.conftest import REPO_ROOT, child_env
from tests.sdk.otlp_receiver import OTLPReceiver
from watchman_otel._instrument_cli import main

PROGRAM = """
from opentelemetry import trace
with trace.get_tracer("plain-app").start_as_current_span("unmodified-work"):
    pass
print("DONE")
"""


def instrument(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m`-less `watchman-instrument` via its entry function in a child interpreter."""
    command = [
        sys.executable,
        "-c",
        "import sys; from watchman_otel._instrument_cli import main; sys.exit(main())",
        *args,
    ]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=30,
        env=env or child_env(),
        cwd=REPO_ROOT,
        check=False,
    )


def test_program_is_traced_without_code_change():
    """A program that never calls init() exports its spans under the service name given."""
    with OTLPReceiver() as receiver:
        result = instrument(
            "--service-name",
            "cli-service",
            "--endpoint",
            receiver.http_endpoint,
            sys.executable,
            "-c",
            PROGRAM,
        )
        assert result.returncode == 0, result.stderr
        assert "DONE" in result.stdout
        assert receiver.wait_for(lambda r: r.spans())
    resource, span = receiver.spans()[0]
    assert span.name == "unmodified-work"
    assert resource["service.name"] == "cli-service"


def test_existing_sitecustomize_still_runs(tmp_path: Path):
    """A sitecustomize the program already had is imported too (chained, not shadowed)."""
    (tmp_path / "sitecustomize.py").write_text("import os\nos.environ['CHAINED'] = 'yes'\n")
    env = child_env()
    env["PYTHONPATH"] = f"{REPO_ROOT}:{tmp_path}"
    env["OTEL_SDK_DISABLED"] = "true"
    result = instrument(
        sys.executable, "-c", "import os; print(os.environ.get('CHAINED'))", env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "yes"


def test_bad_setting_fails_before_running(capsys):
    """A bad option value exits 2 with a message naming the variable, and runs nothing."""
    assert main(["--heartbeat-interval", "abc", "true"]) == 2
    assert "WATCHMAN_HEARTBEAT_INTERVAL='abc'" in capsys.readouterr().err


def test_unknown_command_exits_127(capsys):
    """A command that is not on PATH exits 127."""
    assert main(["no-such-command-for-watchman"]) == 127
    assert "command not found" in capsys.readouterr().err


def test_console_script_is_declared():
    """The installed `watchman-instrument` script exists when the package is installed."""
    if shutil.which("watchman-instrument") is None:
        pytest.skip("package not installed with its scripts")
    result = subprocess.run(
        ["watchman-instrument", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "--service-name" in result.stdout
