"""The load generator (wrk) and what Envoy's access log says about a run.

Every wrk run loads ``lua/report.lua``, whose ``done()`` prints one
``BENCH_RESULT {json}`` line with exact percentiles and error counts; a run with a
distinct token or DPoP proof per request also loads ``lua/tokens.lua``.
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from authz.dev.stack import StackError, wait_for
from tests.bench.procs import pinned

__all__ = ["AccessLog", "LogWindow", "Run", "TokenFeed", "lua_script", "run_wrk", "wrk_binary"]

LUA = Path(__file__).resolve().parent / "lua"
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s*(\d+)")


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise StackError("wrk is not installed: `make bench` installs it (apt-get install wrk)")
    return found


def lua_script(workdir: Path, distinct_tokens: bool) -> Path:
    """report.lua, with tokens.lua appended when every request needs its own token or proof."""
    text = (LUA / "report.lua").read_text()
    if distinct_tokens:
        text += "\n" + (LUA / "tokens.lua").read_text()
    path = workdir / ("wrk-tokens.lua" if distinct_tokens else "wrk-report.lua")
    path.write_text(text)
    return path


@dataclass
class TokenFeed:
    """A file of credentials, one per request, consumed by consecutive runs: each
    run starts on unused lines. Each line goes in ``header`` after ``prefix``.
    ``once``: a line must never be sent twice (a DPoP proof); a thread that runs
    out stops sending instead of starting over."""

    path: Path
    count: int
    offset: int = 0
    header: str = "Authorization"
    prefix: str = "Bearer "
    once: bool = False


@dataclass
class Run:
    """One wrk run, as wrk measured it."""

    connections: int
    threads: int
    seconds: float
    requests: int
    duration_s: float
    requests_per_s: float
    latency_us: dict[str, float]
    errors: dict[str, int]
    non_2xx: int
    tokens: dict[str, int]
    wrk_cpu_seconds: float
    command: list[str] = field(default_factory=list)

    @property
    def failures(self) -> int:
        """Non-2xx answers and socket errors (connect, read, write, timeout)."""
        return self.non_2xx + sum(self.errors.values()) - self.errors.get("status", 0)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["failures"] = self.failures
        return data


def run_wrk(
    url: str,
    *,
    connections: int,
    threads: int,
    seconds: float,
    script: Path,
    cpus: frozenset[int],
    authorization: str | None = None,
    feed: TokenFeed | None = None,
    log: Path | None = None,
) -> Run:
    """Run wrk once (pinned to ``cpus``) and parse its result; a wrk failure raises."""
    command = [
        wrk_binary(),
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={max(1, round(seconds))}s",
        "--timeout=2s",
        f"--script={script}",
    ]
    if authorization is not None:
        command.append(f"--header=Authorization: {authorization}")
    command.append(url)
    restarted = 0
    if feed is not None:
        if feed.offset + threads > feed.count:
            if feed.once:
                raise StackError(f"{feed.path}: every line is used, and none may be sent again")
            # Every token has been used: start over (reported as reuse, not hidden).
            feed.offset, restarted = 0, 1
        command += [
            "--",
            str(feed.path),
            str(feed.offset),
            str(threads),
            feed.header,
            feed.prefix,
            "stop" if feed.once else "reuse",
        ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        with pinned(cpus):
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=seconds + 60, check=False
            )
    except subprocess.TimeoutExpired:
        raise StackError(f"wrk did not finish within {seconds + 60:.0f} s") from None
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if log is not None:
        with log.open("a") as sink:
            sink.write(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}\n")
    line = next(
        (text for text in done.stdout.splitlines() if text.startswith("BENCH_RESULT ")), None
    )
    if done.returncode != 0 or line is None:
        raise StackError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    result = json.loads(line.removeprefix("BENCH_RESULT "))
    non_2xx = _NON_2XX.search(done.stdout)
    duration = result["duration_us"] / 1e6
    tokens: dict[str, int] = {**result["tokens"], "file_restarted": restarted}
    if feed is not None:
        # Thread k took lines offset+k, offset+k+threads, ...: skip past the busiest one.
        feed.offset += threads * tokens["most_per_thread"]
    return Run(
        connections=connections,
        threads=threads,
        seconds=seconds,
        requests=result["requests"],
        duration_s=duration,
        requests_per_s=result["requests"] / duration if duration else 0.0,
        latency_us=result["latency_us"],
        errors=result["errors"],
        non_2xx=int(non_2xx.group(1)) if non_2xx else result["errors"]["status"],
        tokens=tokens,
        wrk_cpu_seconds=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        command=command,
    )


@dataclass
class LogWindow:
    """Envoy's access log entries written during one run."""

    entries: int
    statuses: dict[str, int]
    decisions: dict[str, int]
    # Envoy's own measure of the ext_authz Check call (emit_filter_state_stats).
    authz_latency_us: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class AccessLog:
    """The JSON access log file of one Envoy; a run is read from a byte offset on."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def settle(self, at_least: int, since: int, timeout: float = 20) -> int:
        """Wait until ``at_least`` entries follow ``since`` and the file stops growing."""
        last = {"size": -1, "at": time.monotonic()}

        def settled() -> int | None:
            size = self.size()
            now = time.monotonic()
            if size != last["size"]:
                last["size"], last["at"] = size, now
                return None
            # Envoy flushes every 100 ms (EnvoyProcess): 0.3 s unchanged is final.
            if now - last["at"] < 0.3 or self._count(since) < at_least:
                return None
            return size

        return wait_for(f"{at_least} access log entries in {self.path}", settled, timeout, None)

    def _count(self, since: int) -> int:
        with self.path.open("rb") as handle:
            handle.seek(since)
            return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))

    def window(self, since: int, until: int) -> LogWindow:
        statuses: dict[str, int] = {}
        decisions: dict[str, int] = {}
        latencies: list[int] = []
        entries = 0
        with self.path.open("rb") as handle:
            handle.seek(since)
            data = handle.read(until - since)
        for raw in data.splitlines():
            if not raw.startswith(b"{"):
                continue
            entry = json.loads(raw)
            entries += 1
            status = str(entry.get("status"))
            statuses[status] = statuses.get(status, 0) + 1
            decision = entry.get("authz_decision")
            if decision not in (None, "-", ""):
                decisions[str(decision)] = decisions.get(str(decision), 0) + 1
            latency = entry.get("authz_latency_us")
            if isinstance(latency, int | float) or (isinstance(latency, str) and latency.isdigit()):
                latencies.append(int(latency))
        return LogWindow(
            entries=entries,
            statuses=statuses,
            decisions=decisions,
            authz_latency_us=_percentiles(latencies),
        )


def _percentiles(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def rank(percent: float) -> float:
        # Nearest rank: the smallest value with at least percent% of values at or below it.
        index = max(0, min(len(ordered) - 1, -(-len(ordered) * percent // 100) - 1))
        return float(ordered[int(index)])

    return {
        "count": float(len(ordered)),
        "mean": sum(ordered) / len(ordered),
        "p50": rank(50),
        "p90": rank(90),
        "p99": rank(99),
        "p99.9": rank(99.9),
        "max": float(ordered[-1]),
    }
