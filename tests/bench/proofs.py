"""DPoP proofs for the benchmark, minted in parallel just before the run that sends them.

Each proof is what a client sends with its DPoP-bound token (RFC 9449 §4.2): a
new ``jti``, the method and the URI of the request, ``iat`` the moment it was
made, and ``ath`` the hash of the token. The header (``typ``, ``alg`` and the
holder's public JWK) is the same for all, so it is encoded once per worker;
the signature (ES256) is nearly all the remaining cost.

A proof is accepted once and only while its ``iat`` is recent (authz's
``dpop.iat_max_age_seconds``): proofs are minted for one run at a time, right
before it, never kept for a later one.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from authz.dev.dpop_client import Signer, access_token_hash, jws
from authz.dev.keys import load_private
from tests.bench.tokens import mint_in_pool, ranges

__all__ = ["ProofSpec", "mint_proofs"]


@dataclass(frozen=True)
class ProofSpec:
    private_key: Path  # the holder's ES256 key (PEM)
    method: str
    uri: str  # htu: the URI authz sees the request at
    access_token: str


@dataclass
class _Worker:
    signer: Signer
    header: bytes


_WORKER: _Worker | None = None


def _load_signer(path: Path) -> None:
    global _WORKER  # noqa: PLW0603 -- one signer per pool worker, loaded once
    # Ctrl-C reaches the whole process group: the parent alone handles it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signer = Signer(load_private(path), "ES256")
    header = {"typ": "dpop+jwt", "alg": signer.alg, "jwk": signer.public_jwk()}
    _WORKER = _Worker(signer, json.dumps(header, separators=(",", ":")).encode())


def _mint_range(job: tuple[ProofSpec, int]) -> list[str]:
    spec, count = job
    assert _WORKER is not None
    ath = access_token_hash(spec.access_token)
    return [
        jws(
            _WORKER.header,
            {
                "jti": str(uuid.uuid4()),
                "htm": spec.method,
                "htu": spec.uri,
                "iat": int(time.time()),
                "ath": ath,
            },
            _WORKER.signer,
        )
        for _ in range(count)
    ]


def mint_proofs(spec: ProofSpec, count: int, out: Path, workers: int) -> float:
    """Write ``count`` fresh proofs to ``out``, one a line; the seconds it took.
    In order: the file's first lines, sent first, are the oldest proofs."""
    jobs = [(spec, stop - start) for start, stop in ranges(count, workers)]
    return mint_in_pool(
        out, jobs, _mint_range, load=_load_signer, key=spec.private_key, workers=workers
    )
