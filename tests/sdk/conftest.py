"""SDK test fixtures: a clean settings environment, an OTLP receiver, subprocess runners."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.sdk.otlp_receiver import OTLPReceiver
from watchman_otel import _init
from watchman_otel.testing import watchman_telemetry

__all__ = ["ChildResult", "clean_env", "receiver", "run_child", "watchman_telemetry"]

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_sdk_left_running() -> Iterator[None]:
    """Whatever a test started, the next test starts without a running SDK."""
    yield
    running = _init.current()
    if running is not None:
        running.shutdown(timeout=0.5)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No WATCHMAN_* / OTEL_* variable from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith(("OTEL_", "WATCHMAN_")) and name != "WATCHMAN_RAISE_INTERNAL_ERRORS":
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    """A well-behaved OTLP receiver on loopback (any SDK still running is stopped before it)."""
    with OTLPReceiver() as otlp:
        yield otlp
        running = _init.current()
        if running is not None:
            running.shutdown(timeout=0.5)


@dataclass
class ChildResult:
    """A finished child interpreter: exit code, output, seconds from its last print to its end."""

    returncode: int
    stdout: str
    stderr: str
    exit_seconds: float

    def lines(self, prefix: str) -> list[str]:
        """stdout lines starting with ``prefix``, prefix removed."""
        return [
            line[len(prefix) :].strip()
            for line in self.stdout.splitlines()
            if line.startswith(prefix)
        ]


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child interpreter: ours without OTEL_*/WATCHMAN_*, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "WATCHMAN_", "PYTEST_"))
    }
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["WATCHMAN_RAISE_INTERNAL_ERRORS"] = "1"
    env.update(extra)
    return env


def run_child(source: str, *, timeout: float = 30.0, **env: str) -> ChildResult:
    """Run ``source`` in a fresh interpreter; it prints ``EXITING <time.time()>`` before ending."""
    process = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(**env),
        cwd=REPO_ROOT,
        check=False,
    )
    ended = time.time()
    marks = [line for line in process.stdout.splitlines() if line.startswith("EXITING ")]
    exit_seconds = ended - float(marks[-1].split()[1]) if marks else float("nan")
    return ChildResult(process.returncode, process.stdout, process.stderr, exit_seconds)
