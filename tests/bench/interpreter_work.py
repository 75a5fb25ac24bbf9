"""How much Python a warm Check runs, part by part: exact counts, not timings.

    .venv/bin/python -m tests.bench.interpreter_work      (also the first table of
                                                           make bench-check)

Timings on a shared 2-core machine move by ±20 % from one run to the next; the
number of bytecode instructions the interpreter executes for a Check does not.
This traces warm Checks (``sys.settrace`` with opcode events) through the
service's own parts, set up as ``make bench`` runs authz (audit file, metrics,
tracing to an exporter with no trace parent; here nothing is sampled, so every
Check takes the same path): the span begun, the request parsed into its view,
the decision, the observation finished (audit record, metrics, span end), the
answer encoded. C code (protobuf, the JSON encoder, hashing, syscalls) runs no
bytecode and is not counted: the counts say where interpreted work remains.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from authz._proto.envoy.service.auth.v3 import external_auth_pb2
from authz.check import response
from authz.check.request import view
from authz.config.loader import load_config
from authz.dev.keys import load_private, write_keypair
from authz.dev.tokens import claims_for, mint
from authz.observability.observe import Observability
from authz.runtime import build_runtime
from authz.server import AuthorizationService
from tests.bench.attribution import ISSUER, check_request, write_config

__all__ = ["PARTS", "count", "main"]

PARTS = ("begin (span)", "request view", "decision", "finish (audit, metrics, span)", "answer")
# The same Check as the service runs it: the parts, and the call's metadata,
# deadline and cancellation read, and the decision log.
_HANDLER = "the service's handler (AuthorizationService.Check)"
# An address nothing listens on: with nothing sampled, no span is ever exported.
_NOWHERE = "http://127.0.0.1:9"


def count(workdir: Path, token: str, checks: int) -> list[tuple[str, float, float]]:
    """(part, opcodes per Check, Python calls per Check) for ``checks`` warm Checks."""
    wire = check_request(token).SerializeToString()
    telemetry = (
        f"telemetry: {{tracing: {{endpoint: '{_NOWHERE}', root_sample_ratio: 0.0}}, "
        "metrics: {listen: '127.0.0.1:0'}}"
    )
    audit = f"{{stdout: false, file: {workdir / 'audit.jsonl'}}}"
    config = load_config(write_config(workdir, telemetry, audit))
    observability = Observability.from_config(config, environ={})
    observability.start()
    runtime = build_runtime(config, None, None, observability.tracing.tracer)
    answer = response.Encoded()
    metadata = (("x-request-id", "bench"),)
    part = [""]
    opcodes: Counter[str] = Counter()
    calls: Counter[str] = Counter()

    def one() -> None:
        request = external_auth_pb2.CheckRequest.FromString(wire)
        part[0] = PARTS[0]
        observation = observability.begin(metadata)
        with observation:
            part[0] = PARTS[1]
            the_view = view(request)
            part[0] = PARTS[2]
            decision = runtime.decider.decide(the_view, budget=0.2)
        part[0] = PARTS[3]
        answered = observability.finish(
            observation, the_view, decision, late=None, recording=runtime.recording
        )
        assert answered.allowed, answered
        part[0] = PARTS[4]
        answer(answered, config.realm)
        part[0] = ""

    def tracer(frame: FrameType, event: str, arg: object) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            opcodes[part[0]] += 1
        elif event == "call":
            calls[part[0]] += 1
        return tracer

    service = AuthorizationService(lambda: runtime, observability)
    context: Any = _Context(metadata)

    def handler() -> None:
        request = external_auth_pb2.CheckRequest.FromString(wire)
        part[0] = _HANDLER
        service.Check(request, context)
        part[0] = ""

    try:
        for _ in range(3):  # the token verified and cached, the answer encoded once
            one()
            handler()
        sys.settrace(tracer)
        try:
            for _ in range(checks):
                one()
            for _ in range(checks):
                handler()
        finally:
            sys.settrace(None)
    finally:
        asyncio.run(observability.stop())
    rows = [(name, opcodes[name] / checks, calls[name] / checks) for name in PARTS]
    total = (sum(row[1] for row in rows), sum(row[2] for row in rows))
    whole = (_HANDLER, opcodes[_HANDLER] / checks, calls[_HANDLER] / checks)
    return [*rows, ("sum of the parts", *total), whole]


class _Context:
    """What Check reads from its gRPC context: metadata, deadline, cancellation."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def time_remaining(self) -> float:
        return 0.25  # Envoy's ext_authz timeout in the shipped configs

    def is_active(self) -> bool:
        return True

    def add_callback(self, callback: object) -> bool:
        return True


def table(rows: Sequence[tuple[str, float, float]]) -> None:
    print("\nPython work per warm Check (bytecode instructions, Python calls; exact counts):")
    for label, opcodes, calls in rows:
        print(f"  {label:<48} {opcodes:8.0f} ops {calls:7.1f} calls")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=300)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="authz-work-") as tmp:
        workdir = Path(tmp)
        private, _ = write_keypair(workdir / "keys", "RS256", "bench-1")
        claims = claims_for("alice", ISSUER, "api", scopes="orders:read", ttl=3600)
        token = mint(load_private(private), "RS256", claims, "bench-1")
        table(count(workdir, token, args.checks))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
