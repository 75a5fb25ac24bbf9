"""What a DPoP Check costs beside a bearer Check, in process: µs per Check.

    make bench-check      (or: .venv/bin/python -m tests.bench.dpop_cost)

The service's real ``AuthorizationService.Check`` on one configuration (an
RS256 issuer that issues both kinds, a route with ``sender_constraint:
optional``, the in-memory replay store): a bearer token, warm, against a
DPoP-bound token, warm, presented with a fresh ES256 proof per Check, as
clients send them. Proofs are minted before the rounds (the client's cost is
not the service's). The target: a DPoP Check at most 1.5x a bearer Check.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import yaml

from authz._proto.envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from authz.config.loader import load_config
from authz.dev.dpop_client import Signer, proof
from authz.dev.keys import generate, load_private, write_keypair
from authz.dev.tokens import claims_for, mint
from authz.observability.observe import Observability
from authz.runtime import build_runtime
from authz.server import AuthorizationService
from tests.bench.bench_check import Context

__all__ = ["main"]

ISSUER = "https://idp.bench.local"
HOST = "api.example"
PATH = "/orders/42"


def _request(authorization: str, dpop: str | None) -> external_auth_pb2.CheckRequest:
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        method="GET", path=PATH, host=HOST, scheme="https"
    )
    headers = {"authorization": authorization, "x-request-id": "bench"}
    if dpop is not None:
        headers["dpop"] = dpop
    http.headers.update(headers)
    return external_auth_pb2.CheckRequest(
        attributes=attribute_context_pb2.AttributeContext(
            request=attribute_context_pb2.AttributeContext.Request(http=http)
        )
    )


def _config(workdir: Path) -> Path:
    config: dict[str, Any] = {
        "issuers": [
            {
                "issuer": ISSUER,
                "audiences": ["api"],
                "algorithms": ["RS256"],
                "keys": [{"jwks_file": "keys/jwks.json"}],
                "issues": ["bearer", "dpop"],
            }
        ],
        "audit": {"stdout": False, "file": "audit.jsonl"},
        "dpop": {"algorithms": ["ES256"], "replay": {"store": "memory"}},
        "routes": [{"name": "orders", "mode": "protected", "sender_constraint": "optional"}],
    }
    path = workdir / "authz.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=2000, help="Checks per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with TemporaryDirectory(prefix="authz-dpop-bench-") as tmp:
        workdir = Path(tmp)
        private, _ = write_keypair(workdir / "keys", "RS256", "bench-1")
        key = load_private(private)
        holder = Signer(generate("ES256"), "ES256")
        bearer = mint(key, "RS256", claims_for("alice", ISSUER, "api", ttl=3600), "bench-1")
        bound_claims = claims_for("alice", ISSUER, "api", ttl=3600)
        bound_claims["cnf"] = {"jkt": holder.thumbprint()}
        bound = mint(key, "RS256", bound_claims, "bench-1")
        config = load_config(_config(workdir))
        observability = Observability.from_config(config, environ={})
        observability.start()
        service = AuthorizationService(lambda: runtime, observability)
        runtime = build_runtime(config)
        context: Any = Context(None)
        bearer_request = _request(f"Bearer {bearer}", None)
        htu = f"https://{HOST}{PATH}"
        total = args.checks * (args.rounds + 1)
        proofs = [
            _request(
                f"DPoP {bound}",
                proof(holder, iat=time.time(), htu=htu, access_token=bound),
            )
            for _ in range(total)
        ]
        # Warm both: the tokens verified and cached, the answers memoized.
        for request in (bearer_request, proofs.pop()):
            answer = external_auth_pb2.CheckResponse.FromString(service.Check(request, context))
            assert answer.status.code == 0, answer
        best = {"bearer": float("inf"), "dpop": float("inf")}
        try:
            for _ in range(args.rounds):
                started = time.perf_counter()
                for _ in range(args.checks):
                    service.Check(bearer_request, context)
                elapsed = time.perf_counter() - started
                best["bearer"] = min(best["bearer"], elapsed / args.checks * 1e6)
                batch = [proofs.pop() for _ in range(args.checks)]
                started = time.perf_counter()
                for request in batch:
                    service.Check(request, context)
                elapsed = time.perf_counter() - started
                best["dpop"] = min(best["dpop"], elapsed / args.checks * 1e6)
            last = external_auth_pb2.CheckResponse.FromString(service.Check(proofs.pop(), context))
            assert last.status.code == 0, last  # every proof fresh: none refused
        finally:
            asyncio.run(observability.stop())
    ratio = best["dpop"] / best["bearer"]
    print(f"\nµs per Check (best of {args.rounds} rounds x {args.checks} Checks, in-process):")
    print(f"  bearer, warm token                      {best['bearer']:8.1f}")
    print(f"  DPoP, warm token, fresh ES256 proof     {best['dpop']:8.1f}   {ratio:.2f}x bearer")
    print(f"  target: DPoP <= 1.5x bearer: {'PASS' if ratio <= 1.5 else 'FAIL'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
