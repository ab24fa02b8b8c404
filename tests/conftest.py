"""Shared test helpers: finding real binaries for integration tests, free loopback ports."""

from __future__ import annotations

import os
import shutil
import socket

import pytest

os.environ.setdefault("WATCHMAN_RAISE_INTERNAL_ERRORS", "1")


def require_binary(name: str) -> str:
    """Return the path of a binary a test needs; skip without it, or fail when CI requires it."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed (Debian: apt-get install {name})"
    if os.environ.get("WATCHMAN_REQUIRE_INTEGRATION") == "1":
        pytest.fail(message + "; WATCHMAN_REQUIRE_INTEGRATION=1 makes this a failure")
    pytest.skip(message)
    raise AssertionError  # unreachable: skip raises


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
