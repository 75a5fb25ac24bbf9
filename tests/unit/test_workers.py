"""The supervisor's reading of a worker's exit status, and how many workers `auto` means."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from authz.workers import _exit_status, available_cpus


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


def _cgroup(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "50000 100000\n"}, 1),  # v2: half a CPU is one worker
        ({"cpu.max": "150000 100000\n"}, 2),  # v2: 1.5 CPUs, rounded up
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # v1
        (
            {"cpu,cpuacct/cpu.cfs_quota_us": "300000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
            3,
        ),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # no quota
        ({}, None),
        ({"cpu.max": "garbage"}, None),
    ],
)
def test_available_cpus_honours_a_cgroup_quota(
    tmp_path: Path, files: dict[str, str], quota: int | None
) -> None:
    affinity = len(os.sched_getaffinity(0))
    expected = affinity if quota is None else min(affinity, quota)
    assert available_cpus(_cgroup(tmp_path, files)) == expected
