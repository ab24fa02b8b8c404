"""Interpreter exit: the flush deadline leaves part of shutdown_timeout to the teardown after it."""

from __future__ import annotations

import pytest

import watchman_otel
from watchman_otel import _init


@pytest.mark.parametrize(
    ("budget", "deadline"),
    [(2.0, 1.0), (1.0, 0.5), (0.4, 0.2), (10.0, 9.0)],
)
def test_exit_flush_deadline_reserves_a_share_for_teardown(budget: float, deadline: float) -> None:
    """The exit hook flushes for the budget minus min(half of it, 1 s)."""
    assert _init.exit_flush_deadline(budget) == pytest.approx(deadline)


def test_exit_hook_uses_the_reduced_deadline(
    clean_env: pytest.MonkeyPatch,
) -> None:
    """At exit the running SDK is shut down with the reduced deadline, integrations left alone."""
    sdk = watchman_otel.init(
        service_name="exit-budget", endpoint="http://127.0.0.1:9", shutdown_timeout=2.0
    )
    calls: list[tuple[float | None, bool]] = []
    original = _init._shutdown

    def spy(target: _init.WatchmanSDK, timeout: float | None, *, uninstall: bool) -> bool:
        calls.append((timeout, uninstall))
        return original(target, 0.2, uninstall=True)

    clean_env.setattr(_init, "_shutdown", spy)
    _init._at_exit()
    ((timeout, uninstall),) = calls
    assert timeout == pytest.approx(1.0)
    assert uninstall is False
    assert not sdk.active
