"""What observability costs a Check: tracing off vs on, measured in-process.

    make bench            (or: .venv/bin/python -m tests.bench.bench_check)

Each scenario calls the real ``AuthorizationService.Check`` (request view,
decision with RS256 verification, span, metric, audit record, response) many
times on one thread, and prints the median time per Check over several
rounds. gRPC transport is left out on purpose: it costs the same in every
scenario and would hide the difference being measured.

Scenarios:
  bare        the decision and response alone (no span, metric or audit work)
  off         production defaults: no exporter (no-op tracer), metrics off,
              audit to a file
  traced      as "off", plus spans exported with OTLP/gRPC to a receiver in
              another process (as a collector would be)
  unsampled   as "traced", but Envoy's traceparent says "not sampled"
  metrics     as "off", plus metrics on (the Prometheus reader)
  all         traced + metrics
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from authz._proto.envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from authz.check import response
from authz.check.decision import Decider
from authz.check.request import view
from authz.check.verify import Verifier
from authz.config.loader import load_config
from authz.config.models import Config
from authz.dev.keys import load_private, write_keypair
from authz.dev.tokens import claims_for, mint
from authz.observability.observe import Observability
from authz.runtime import build_runtime
from authz.server import AuthorizationService
from tests.support.doubles import StaticKeySource

ISSUER = "https://idp.bench"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0{}"


class Context:
    """What Check reads from its gRPC context: the call's metadata and deadline."""

    def __init__(self, sampled: bool | None) -> None:
        self._metadata: tuple[tuple[str, str], ...] = (
            () if sampled is None else (("traceparent", TRACEPARENT.format(int(sampled))),)
        )

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None  # no deadline: a Check here is never late

    def is_active(self) -> bool:
        return True

    def add_callback(self, callback: object) -> bool:
        return True


def _request(token: str) -> external_auth_pb2.CheckRequest:
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        method="GET", path="/orders/42?page=1", host="api.example"
    )
    http.headers.update({"authorization": f"Bearer {token}", "x-request-id": "bench"})
    return external_auth_pb2.CheckRequest(
        attributes=attribute_context_pb2.AttributeContext(
            request=attribute_context_pb2.AttributeContext.Request(http=http)
        )
    )


def _config(workdir: Path, telemetry: str) -> Config:
    path = workdir / f"authz-{abs(hash(telemetry))}.yaml"
    path.write_text(
        f"""\
issuers:
  - issuer: {ISSUER}
    audiences: [api]
    algorithms: [RS256]
    keys: [{{jwks_file: keys/jwks.json}}]
audit: {{stdout: false, file: audit.jsonl}}
{telemetry}
"""
    )
    return load_config(path)


Call = Callable[[], None]


def _measure(calls: dict[str, Call], checks: int, rounds: int) -> dict[str, float]:
    """Microseconds per Check for each call: the best of ``rounds`` rounds of
    ``checks``, rounds interleaved across calls so that a noisy neighbour
    (another process on the machine) hits every scenario alike."""
    for call in calls.values():  # warm-up
        for _ in range(max(1, checks // 10)):
            call()
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(rounds):
        for name, call in calls.items():
            started = time.perf_counter()
            for _ in range(checks):
                call()
            best[name] = min(best[name], (time.perf_counter() - started) / checks * 1e6)
    return best


@contextlib.contextmanager
def _receiver() -> Iterator[str]:
    """An OTLP receiver in a child process (decoding spans must not be billed
    to the Checks); its endpoint."""
    code = (
        "import sys; from tests.support.otlp import OtlpReceiver; r = OtlpReceiver().start(); "
        "print(r.endpoint, flush=True); sys.stdin.read()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert child.stdout is not None
        yield child.stdout.readline().strip()
    finally:
        child.terminate()
        child.wait(10)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=2000, help="Checks per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="authz-bench-") as tmp, _receiver() as receiver:
        workdir = Path(tmp)
        private, _ = write_keypair(workdir / "keys", "RS256", "bench-1")
        token = mint(
            load_private(private), "RS256", claims_for("alice", ISSUER, "api", ttl=3600), "bench-1"
        )
        allowed, denied = _request(token), _request("")
        denied.attributes.request.http.headers.pop("authorization")
        tracing = f"  tracing: {{endpoint: '{receiver}'}}\n"
        metrics = "  metrics: {listen: '127.0.0.1:0'}\n"
        scenarios: dict[str, tuple[Config, bool | None]] = {
            "off": (_config(workdir, ""), True),
            "traced": (_config(workdir, "telemetry:\n" + tracing), True),
            "unsampled": (_config(workdir, "telemetry:\n" + tracing), False),
            "metrics": (_config(workdir, "telemetry:\n" + metrics), True),
            "all": (_config(workdir, "telemetry:\n" + tracing + metrics), True),
        }
        bare_config = scenarios["off"][0]
        bare = Decider(bare_config, Verifier(bare_config, StaticKeySource.from_config(bare_config)))
        calls: dict[str, Call] = {}
        for outcome, request in (("allow", allowed), ("deny", denied)):

            def bare_check(request: external_auth_pb2.CheckRequest = request) -> None:
                response.build(bare.decide(view(request)), "authz")

            calls[f"bare/{outcome}"] = bare_check

        running: list[Observability] = []
        for scenario, (config, sampled) in scenarios.items():
            observability = Observability.from_config(config, environ={})
            observability.start()
            running.append(observability)
            keys = StaticKeySource.from_config(config)
            runtime = build_runtime(config, keys)
            service = AuthorizationService(functools.partial(lambda r: r, runtime), observability)
            context: Any = Context(sampled)
            for outcome, request in (("allow", allowed), ("deny", denied)):

                def check(
                    request: external_auth_pb2.CheckRequest = request,
                    service: AuthorizationService = service,
                    context: Any = context,
                ) -> None:
                    service.Check(request, context)

                calls[f"{scenario}/{outcome}"] = check

        try:
            best = _measure(calls, args.checks, args.rounds)
        finally:
            for observability in running:
                asyncio.run(observability.stop())

    results = {
        scenario: {outcome: best[f"{scenario}/{outcome}"] for outcome in ("allow", "deny")}
        for scenario in ("bare", *scenarios)
    }
    print(f"µs per Check (best of {args.rounds} rounds x {args.checks} Checks, in-process)")
    print(f"{'scenario':<10} {'allow':>8} {'deny':>8}   vs off (allow / deny)")
    off = results["off"]
    for scenario, figures in results.items():
        ratio = f"{figures['allow'] / off['allow']:.2f}x / {figures['deny'] / off['deny']:.2f}x"
        print(f"{scenario:<10} {figures['allow']:>8.1f} {figures['deny']:>8.1f}   {ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
