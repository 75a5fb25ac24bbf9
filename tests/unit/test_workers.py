"""The supervisor's reading of a worker's exit status."""

from __future__ import annotations

import signal

import pytest

from authz.workers import _exit_status


@pytest.mark.parametrize(
    ("code", "forwarded", "expected"),
    [
        (0, signal.SIGTERM, 0),
        (-signal.SIGTERM, signal.SIGTERM, 0),  # ended by the signal it was sent
        (-signal.SIGINT, signal.SIGINT, 0),
        (-signal.SIGKILL, signal.SIGTERM, signal.SIGKILL),  # something else killed it
        (-signal.SIGTERM, None, signal.SIGTERM),  # never asked to stop
        (1, signal.SIGTERM, 1),
    ],
)
def test_exit_status(code: int, forwarded: int | None, expected: int) -> None:
    assert _exit_status(code, forwarded) == expected
