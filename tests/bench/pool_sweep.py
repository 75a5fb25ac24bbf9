"""What each size of the gRPC worker pool costs: authz warm (d) and the sync floor (c2).

    python -m tests.bench.pool_sweep [--sizes 1,2,4,8,16] [--rounds 2] [--seconds 5]

For every pool size, ``make bench``'s own harness (tests/bench/run.py) measures
(c2), the allow-all on grpc.server with that many threads, and (d), authz with
``serving.threads`` set to it, through the same Envoy and wrk. Rounds are
interleaved across sizes, so a noisy neighbour hits every size alike; the
table keeps each size's best round (highest req/s, lowest CPU per request).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.bench.procs import REPO_ROOT

__all__ = ["main"]


def _run(size: int, seconds: float, out: Path) -> dict[str, dict[str, Any]]:
    command = [
        sys.executable,
        "-m",
        "tests.bench.run",
        "--variants",
        "c2,d",
        "--service-threads",
        str(size),
        "--seconds",
        str(seconds),
        "--c1-seconds",
        "3",
        "--docs",
        "-",
        "--out",
        str(out),
    ]
    subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True)
    document = json.loads((out / "results.json").read_text())
    return {variant["key"]: variant for variant in document["variants"] if variant["ok"]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,2,4,8,16")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    best: dict[tuple[int, str], dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="authz-pool-sweep-") as scratch:
        for round_ in range(args.rounds):
            for size in sizes:
                out = Path(scratch) / f"{size}-{round_}"
                for key, variant in _run(size, args.seconds, out).items():
                    figures = {
                        "rps": variant["c16"]["requests_per_s"],
                        "cpu": variant["service_process"]["cpu_us_per_request"],
                        "c1_p50": variant["c1"]["latency_us"]["p50"],
                    }
                    kept = best.setdefault((size, key), figures)
                    kept["rps"] = max(kept["rps"], figures["rps"])
                    kept["cpu"] = min(kept["cpu"], figures["cpu"])
                    kept["c1_p50"] = min(kept["c1_p50"], figures["c1_p50"])
    print(f"\ngRPC worker pool sweep (best of {args.rounds} rounds x {args.seconds:g} s):")
    print(
        f"{'threads':>7}  {'(c2) req/s':>10} {'µs/req':>7}  "
        f"{'(d) req/s':>9} {'µs/req':>7} {'c1 p50 µs':>9}  {'(d)/(c2)':>8}"
    )
    for size in sizes:
        floor, authz = best.get((size, "c2")), best.get((size, "d"))
        if floor is None or authz is None:
            print(f"{size:>7}  (a run failed)")
            continue
        print(
            f"{size:>7}  {floor['rps']:>10,.0f} {floor['cpu']:>7.0f}  "
            f"{authz['rps']:>9,.0f} {authz['cpu']:>7.0f} {authz['c1_p50']:>9.0f}  "
            f"{authz['rps'] / floor['rps']:>8.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
