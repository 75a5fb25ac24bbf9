"""Soak: Envoy + authz at saturation with valid and invalid tokens, then the books are checked.

    python -m tests.soak.soak [--seconds 60] [--connections 16]

wrk drives Envoy through a Lua script that sends valid tokens to ``/v/...`` and
invalid ones (expired, wrong audience, tampered, missing) to ``/i/...``; the
path states what the answer must be. Afterwards:

- every request Envoy logged was answered correctly: ``/v`` 200, ``/i`` 401,
  and nothing else (no 5xx, no 403 for a policy that does not exist);
- authz's audit trail holds exactly one record per Check Envoy made (read after
  a graceful shutdown, which flushes it);
- authz's memory is flat: the last resident-set sample is within 10 % (+8 MiB)
  of the first sample after warm-up;
- wrk saw no socket errors.

Exits 1 when any check fails. Not part of ``make test``: ``make soak``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import yaml

from authz.dev.keys import load_private, write_keypair
from authz.dev.stack import ENVOY_GATEWAY, Stack
from authz.dev.tokens import claims_for, mint

ISSUER = "https://idp.soak.test"
AUDIENCE = "api"
KID = "soak-1"

WRK_SCRIPT = r"""
local entries = {}
local next_index = 1
local sent = {v = 0, i = 0}

function init(args)
  for line in io.lines(args[1]) do
    local kind, token = line:match("^(%a) (.*)$")
    table.insert(entries, {kind = kind, token = token})
  end
  next_index = math.random(#entries)
end

function request()
  local entry = entries[next_index]
  next_index = next_index % #entries + 1
  sent[entry.kind] = sent[entry.kind] + 1
  local headers = {}
  if entry.token ~= "-" then
    headers["Authorization"] = "Bearer " .. entry.token
  end
  return wrk.format("GET", "/" .. entry.kind .. "/item", headers)
end
"""


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _tokens(private_path: Path, path: Path) -> int:
    key = load_private(private_path)
    now = int(time.time())
    lines = []
    for n in range(200):
        valid = mint(key, "RS256", claims_for(f"user-{n}", ISSUER, AUDIENCE, ttl=3600), KID)
        lines.append(f"v {valid}")
    invalid = [
        mint(key, "RS256", claims_for("late", ISSUER, AUDIENCE, now=now - 7200, ttl=60), KID),
        mint(key, "RS256", claims_for("elsewhere", ISSUER, "other-api"), KID),
        valid[:-4] + ("AAAA" if not valid.endswith("AAAA") else "BBBA"),
        mint(key, "RS256", claims_for("ghost", ISSUER, AUDIENCE), "unknown-kid"),
        "-",  # no token at all
    ]
    lines.extend(f"i {token}" for token in invalid * 20)
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def _envoy_template(workdir: Path) -> Path:
    """The gateway with "/" answered by Envoy itself: the soak measures Envoy and
    authz, not the sample upstream (a Python thread per connection)."""
    config = yaml.safe_load(ENVOY_GATEWAY.read_text())
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                routes = network_filter["typed_config"]["route_config"]["virtual_hosts"]
                for host in routes:
                    for route in host["routes"]:
                        if "route" in route:
                            del route["route"]
                            route["direct_response"] = {
                                "status": 200,
                                "body": {"inline_string": "ok"},
                            }
    path = workdir / "envoy-soak.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _config(workdir: Path, audit_file: Path) -> Path:
    config = {
        "listen": "127.0.0.1:0",
        "grace_period_seconds": 10,
        "issuers": [
            {
                "issuer": ISSUER,
                "audiences": [AUDIENCE],
                "algorithms": ["RS256"],
                "keys": [{"jwks_file": "keys/jwks.json"}],
            }
        ],
        "audit": {"stdout": False, "file": str(audit_file)},
    }
    path = workdir / "authz.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _wrk(url: str, script: Path, tokens: Path, seconds: int, connections: int) -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("soak: wrk is not installed (make soak installs it)")
    result = subprocess.run(
        [
            wrk,
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
            "--",
            str(tokens),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"soak: wrk failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def run(seconds: int, connections: int, workdir: Path) -> int:
    private_path, _ = write_keypair(workdir / "keys", "RS256", KID)
    audit_file = workdir / "audit.jsonl"
    config = _config(workdir, audit_file)
    tokens = workdir / "tokens.txt"
    print(f"soak: {_tokens(private_path, tokens)} distinct requests in rotation")
    script = workdir / "soak.lua"
    script.write_text(WRK_SCRIPT)

    samples: list[int] = []
    with Stack(workdir / "stack", config, _envoy_template(workdir)) as stack:
        envoy = stack.envoy
        assert envoy is not None
        pid = stack.authz.pid
        stop_sampling = threading.Event()

        def sample() -> None:
            while not stop_sampling.wait(1.0):
                samples.append(_rss_kib(pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        print(f"soak: {seconds}s at {connections} connections through {stack.url()}")
        output = _wrk(stack.url("/"), script, tokens, seconds, connections)
        stop_sampling.set()
        sampler.join(5)
        # Stop authz first: Checks Envoy gave up on may still finish; after this
        # every count is final, and the audit trail is flushed.
        exit_code = stack.authz.stop()
        # Every Check call Envoy made to authz, answered in time or not.
        checks = envoy.stats("cluster.authz.upstream_rq_total")["cluster.authz.upstream_rq_total"]
        timeouts = envoy.stats("cluster.authz.upstream_rq_timeout").get(
            "cluster.authz.upstream_rq_timeout", 0
        )
        entries = envoy.access_log(1)
    print(output)
    failures: list[str] = []
    outcomes: Counter[tuple[str, int]] = Counter()
    for entry in entries:
        path = str(entry.get("path") or "")
        kind = path[1:2]
        outcomes[(kind, int(entry["status"]))] += 1
    # Status 0: wrk closed the connection at the end with the request in flight.
    aborted = sum(count for (_, status), count in outcomes.items() if status == 0)
    if aborted > connections:
        failures.append(f"{aborted} requests without an answer")
    expected = {("v", 200), ("i", 401)}
    wrong = {k: n for k, n in outcomes.items() if k not in expected and k[1] != 0}
    print(f"soak: Envoy's Check calls that timed out: {timeouts}")
    total = sum(outcomes.values())
    print(f"soak: {total} requests logged by Envoy; outcomes {dict(outcomes)}")
    if wrong:
        failures.append(f"wrong answers: {wrong}")
    if total == 0:
        failures.append("no request was logged")
    records = audit_file.read_text().splitlines() if audit_file.exists() else []
    decisions = [json.loads(line) for line in records if '"type":"dropped"' not in line]
    print(f"soak: {len(decisions)} audit records; Envoy made {checks} Check calls")
    # A Check cancelled with its aborted request may never have been decided.
    if not checks - aborted <= len(decisions) <= checks:
        failures.append(f"audit records {len(decisions)} for {checks} checks ({aborted} aborted)")
    if exit_code != 0:
        failures.append(f"authz exited with {exit_code} after SIGTERM")
    socket_errors = re.search(r"Socket errors: (.*)", output)
    if socket_errors:
        failures.append(f"wrk socket errors: {socket_errors.group(1)}")
    warm = samples[len(samples) // 4 :] if len(samples) >= 4 else samples
    if warm:
        first, last, peak = warm[0], warm[-1], max(warm)
        print(f"soak: authz RSS after warm-up {first} KiB, at the end {last} KiB, peak {peak} KiB")
        if last > first * 1.10 + 8 * 1024:
            failures.append(f"memory grew from {first} KiB to {last} KiB")
    for failure in failures:
        print(f"soak: FAILED: {failure}")
    print("soak: OK" if not failures else "soak: FAILED")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak.soak", description=__doc__)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="authz-soak-") as directory:
        return run(args.seconds, args.connections, Path(directory))


if __name__ == "__main__":
    sys.exit(main())
