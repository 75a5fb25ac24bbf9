"""Processes of the benchmark: CPU pinning, the floor server, and /proc accounting.

Process management itself is ``authz.dev.stack``'s (AuthzProcess, EnvoyProcess,
wait_for); this module only adds what a measurement needs on top of it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from authz.dev.stack import AuthzProcess, EnvoyProcess, StackError, wait_for

__all__ = [
    "REPO_ROOT",
    "CpuPlan",
    "FloorProcess",
    "ProcSample",
    "pid_of",
    "pinned",
    "sample",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuPlan:
    """Which CPUs Envoy + the load generator use, and which the service under test uses."""

    front: frozenset[int]
    service: frozenset[int]
    description: str

    @classmethod
    def choose(cls, mode: str) -> CpuPlan:
        cpus = sorted(os.sched_getaffinity(0))
        everything = frozenset(cpus)
        if mode == "none" or len(cpus) < 2:
            why = "BENCH_PIN=none" if mode == "none" else "a single CPU"
            return cls(
                everything, everything, f"not pinned ({why}): all processes share CPUs {cpus}"
            )
        if mode != "split":
            raise ValueError(f"BENCH_PIN must be 'split' or 'none', not {mode!r}")
        front, rest = frozenset(cpus[:1]), frozenset(cpus[1:])
        return cls(
            front,
            rest,
            f"Envoy (--concurrency 1) and wrk share CPU {cpus[0]}; "
            f"the service under test (authz or the floor) runs on CPU(s) {sorted(rest)}",
        )


@contextlib.contextmanager
def pinned(cpus: frozenset[int]) -> Iterator[None]:
    """Processes started inside the block inherit this CPU affinity."""
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


class FloorProcess(AuthzProcess):
    """The allow-all floor server (tests/bench/floor.py), started like ``authz serve``.

    It prints a plain ``listening on HOST:PORT`` line (authz logs its address as
    a JSON field instead); liveness check and SIGTERM-then-wait stop are shared.
    """

    def __init__(self, log: Path, threads: int = 0) -> None:
        """``threads``: 0 for the grpc.aio floor, else grpc.server with that many."""
        super().__init__(config=Path(os.devnull), log=log)
        self._sync = ["--sync", "--threads", str(threads)] if threads else []

    def _listening(self) -> str | None:
        if self._process is not None and self._process.poll() is not None:
            raise StackError(f"the floor exited with {self._process.returncode}")
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        for line in text.splitlines():
            if " listening on " in line:
                return line.rsplit(" listening on ", 1)[1].strip()
        return None

    def start(self, timeout: float = 30) -> FloorProcess:
        with self.log.open("wb") as sink:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "tests.bench.floor", "--listen", "127.0.0.1:0", *self._sync],
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
            )
        self.address = wait_for("the floor server to listen", self._listening, timeout, self.log)
        return self


def pid_of(process: AuthzProcess | EnvoyProcess) -> int:
    """The OS pid of a started stack process (stack.py keeps its Popen private)."""
    popen = process._process
    if popen is None:
        raise StackError("process is not running")
    return popen.pid


@dataclass(frozen=True)
class ProcSample:
    """One reading of a process's counters."""

    cpu_seconds: float  # utime + stime, every thread of the process
    rss_kib: int  # VmRSS
    peak_rss_kib: int  # VmHWM: the high-water mark since the process started


def sample(pid: int) -> ProcSample:
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces: count fields after its ')'.
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    status: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            status[name] = int(value.split()[0])  # kB
    return ProcSample(
        cpu_seconds=(utime + stime) / _TICKS,
        rss_kib=status.get("VmRSS", 0),
        peak_rss_kib=status.get("VmHWM", 0),
    )
