"""Developer and CI sessions: the same commands run on a laptop and in `.ci/run`."""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "typecheck", "docs", "tests"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = os.environ.get("WATCHMAN_NOX_PYTHON") or None  # None: the Python running nox


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite, analyzer extra installed, integration tests included."""
    session.install("-e", ".[collector,test]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def tests_sdk(session: nox.Session) -> None:
    """The SDK's tests with only the SDK installed: the analyzer's dependencies stay optional."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests/sdk", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy, strict on the SDK."""
    session.install("-e", ".[collector,test]", "mypy>=1.10", "types-requests", "types-PyYAML")
    session.run("mypy")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """MkDocs site, built strictly (broken links fail); the settings table is regenerated first."""
    session.install("-e", ".[collector]", "mkdocs>=1.6", "mkdocs-material>=9.5")
    session.run("python", "docs/gen_settings.py", "--check")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks: prints a table of figures, baselines measured in the same run, and ratios.

    `nox -s bench -- --quick` is the smoke mode CI runs.
    """
    session.install("-e", ".[collector,test]")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(python=PYTHON)
def evaluate(session: nox.Session) -> None:
    """Detection evaluation over simulated faults; `nox -s evaluate -- --quick` is the CI smoke."""
    session.install("-e", ".[collector]")
    session.run("python", "-m", "watchman_collector.sim.evaluate", *session.posargs)
