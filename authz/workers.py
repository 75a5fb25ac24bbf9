"""Several serving processes on one port: one Python process uses one core.

``authz serve --workers N`` starts N children of itself, each a complete
server (its own gRPC threads, key store and audit writer) bound to the same TCP
port with SO_REUSEPORT, so the kernel spreads Envoy's connections over them.
The parent only supervises:

- SIGTERM/SIGINT are passed to every worker, which drain as one server does
  (NOT_SERVING, shutdown delay, grace period); the parent exits when all have,
  with the worst exit status;
- a worker that dies on its own is started again (at most once a second), so a
  crash costs one process's connections, not the service.

Health is coherent because every worker reports the same: each answers the
gRPC health service for itself, and all of them drain on the same signal.
With a metrics endpoint, the supervisor serves it for all workers
(worker_metrics.py): one scrape sees every decision.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from authz.observability.worker_metrics import WORKER_INDEX_ENV, WorkerMetrics

__all__ = ["WORKER_INDEX_ENV", "available_cpus", "supervise"]

log = logging.getLogger(__name__)

_RESTART_INTERVAL = 1.0
_PR_SET_PDEATHSIG = 1
_EXIT_CONFIG = 2  # cli.EXIT_CONFIG


def available_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity, bounded by a cgroup CPU quota
    (cgroup v2's cpu.max, or v1's cpu.cfs_quota_us over cpu.cfs_period_us)."""
    cpus = len(os.sched_getaffinity(0))
    quota = _cpu_quota(cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cpu_quota(cgroup: Path) -> float | None:
    """The quota in CPUs, or None where there is none (or it cannot be read)."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for v1 in (cgroup / "cpu", cgroup / "cpu,cpuacct"):
        try:
            quota_us = int((v1 / "cpu.cfs_quota_us").read_text())
            period_us = int((v1 / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us  # -1: none
    return None


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _prepare_worker() -> None:
    """Runs in the child between fork and exec.

    A worker must not outlive its supervisor (killed, OOM): it would keep
    serving the port outside anyone's control, hence Linux's PR_SET_PDEATHSIG.
    The stop signals are blocked (the mask survives exec) until the worker has
    installed its handlers (``unblock_stop_signals``): a SIGTERM forwarded while
    it is still importing stays pending and then drains it like any other,
    instead of killing it with the default action.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)


def unblock_stop_signals() -> None:
    """Called once the serving process handles SIGTERM/SIGINT itself; a no-op
    where they were never blocked. A signal that arrived meanwhile is delivered now."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


def _exit_status(code: int, forwarded: int | None) -> int:
    """A worker's exit status as the supervisor reports it: ended by the very
    signal the supervisor forwarded is a clean stop (it was asked to stop)."""
    if forwarded is not None and code == -forwarded:
        return 0
    return abs(code)


def _forward(
    signals: list[int],
    children: dict[int, subprocess.Popen[bytes]],
    sent: dict[int, int | None],
) -> None:
    for signum in signals:
        for index, child in children.items():
            if child.poll() is None:
                child.send_signal(signum)
                sent[index] = signum


def supervise(
    config: Path, workers: int, log_args: list[str], metrics_listen: str | None = None
) -> int:
    # The handler only records the request; the loop below forwards it. Sending
    # from the handler could miss a worker that start() is creating right then.
    requested: list[int] = []

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        requested.append(signum)

    for signum in _STOP_SIGNALS:
        signal.signal(signum, request_stop)

    shared_metrics: WorkerMetrics | None = None
    extra_env: dict[str, str] = {}
    if metrics_listen is not None:
        shared_metrics = WorkerMetrics(metrics_listen, workers)
        try:
            address = shared_metrics.start()
        except OSError as exc:
            shared_metrics.stop()
            log.error("metrics: cannot listen on %s: %s", metrics_listen, exc)
            return _EXIT_CONFIG
        extra_env = shared_metrics.environ()
        log.info("metrics of all workers on http://%s/metrics", address)
    try:
        return _supervise(config, workers, log_args, requested, extra_env)
    finally:
        if shared_metrics is not None:
            shared_metrics.stop()


def _supervise(
    config: Path,
    workers: int,
    log_args: list[str],
    requested: list[int],
    extra_env: dict[str, str],
) -> int:
    fatal = False
    children: dict[int, subprocess.Popen[bytes]] = {}
    last_start: dict[int, float] = {}
    # The last stop signal each worker was sent (None: not asked to stop yet).
    sent: dict[int, int | None] = {}

    def start(index: int) -> None:
        env = {**os.environ, **extra_env, WORKER_INDEX_ENV: str(index)}
        command = [sys.executable, "-m", "authz.cli", *log_args, "serve", "-c", str(config)]
        # The supervisor is single-threaded here, so preexec_fn is safe.
        children[index] = subprocess.Popen(command, env=env, preexec_fn=_prepare_worker)  # noqa: PLW1509
        last_start[index] = time.monotonic()
        sent[index] = None

    log.info("starting %d workers", workers, extra={"workers": workers})
    for index in range(workers):
        if requested:
            break
        start(index)
    worst = 0
    forwarded = 0  # how many of the requested signals every worker has been sent
    while children:
        if forwarded < len(requested):
            # A second SIGINT is passed on too: it ends a worker's drain delay.
            _forward(requested[forwarded:], children, sent)
            forwarded = len(requested)
        for index, child in list(children.items()):
            code = child.poll()
            if code is None:
                continue
            if requested:
                worst = max(worst, _exit_status(code, sent[index]))
                del children[index]
            elif code == _EXIT_CONFIG:
                # A configuration or bind error: every restart would fail alike.
                log.error("worker %d cannot serve (exit %d); stopping", index, code)
                fatal = True
                del children[index]
                requested.append(int(signal.SIGTERM))
            elif time.monotonic() - last_start[index] >= _RESTART_INTERVAL:
                log.error("worker %d exited with %d; starting it again", index, code)
                start(index)
        time.sleep(0.05)  # a supervision interval, not a readiness wait
    log.info("all workers stopped")
    return _EXIT_CONFIG if fatal else worst
