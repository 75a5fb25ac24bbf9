"""Keys and many distinct tokens for the benchmark, minted in parallel.

Each token has its own subject and ``jti`` (so no two are equal) and the same
issuer, audience, scope and lifetime as the warm-path token. Signing is a plain
loop over ``cryptography`` (the RSA signature is nearly all the cost), spread
over a process pool; the header is encoded once.
"""

from __future__ import annotations

import base64
import json
import multiprocessing
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from authz.dev.keys import load_private

__all__ = ["TokenSpec", "mint_file", "mint_in_pool", "ranges"]

J = TypeVar("J")


@dataclass(frozen=True)
class TokenSpec:
    private_key: Path
    kid: str
    issuer: str
    audience: str
    scope: str
    ttl_seconds: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_KEY: rsa.RSAPrivateKey | None = None


def _load_key(path: Path) -> None:
    global _KEY  # noqa: PLW0603 -- one key per pool worker, loaded once
    # Ctrl-C reaches the whole process group: the parent alone handles it (and
    # terminates the pool), so workers do not print a traceback each.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    key = load_private(path)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError(f"{path}: the benchmark signs RS256 and needs an RSA key")
    _KEY = key


def _mint_range(job: tuple[TokenSpec, int, int, int]) -> list[str]:
    spec, start, stop, issued_at = job
    assert _KEY is not None
    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": spec.kid}).encode())
    tokens = []
    for number in range(start, stop):
        claims = {
            "iss": spec.issuer,
            "sub": f"user-{number}",
            "aud": spec.audience,
            "iat": issued_at,
            "exp": issued_at + spec.ttl_seconds,
            "scope": spec.scope,
            "jti": f"bench-{number}",
        }
        signing_input = f"{header}.{_b64(json.dumps(claims, separators=(',', ':')).encode())}"
        signature = _KEY.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        tokens.append(f"{signing_input}.{_b64(signature)}")
    return tokens


def ranges(count: int, workers: int) -> list[tuple[int, int]]:
    """``range(count)`` cut into (start, stop) pieces, several per worker."""
    size = max(500, count // (workers * 8))
    return [(start, min(start + size, count)) for start in range(0, count, size)]


def mint_in_pool(
    out: Path,
    jobs: Sequence[J],
    mint: Callable[[J], list[str]],
    *,
    load: Callable[[Path], None],
    key: Path,
    workers: int,
) -> float:
    """Run ``mint`` over ``jobs`` on ``workers`` processes, each set up with
    ``load(key)``; write what they mint to ``out``, one a line, in the jobs'
    order. The seconds it took."""
    started = time.monotonic()
    # spawn, not fork: a clean interpreter per worker whatever threads this one has.
    context = multiprocessing.get_context("spawn")
    # Leaving the block terminates the workers, also on Ctrl-C or an error.
    with (
        context.Pool(workers, initializer=load, initargs=(key,)) as pool,
        out.open("w") as sink,
    ):
        for minted in pool.imap(mint, jobs):
            sink.write("\n".join(minted) + "\n")
    return time.monotonic() - started


def mint_file(spec: TokenSpec, count: int, out: Path, workers: int) -> float:
    """Write ``count`` distinct tokens to ``out``, one a line; the seconds it took."""
    issued_at = int(time.time())
    jobs = [(spec, start, stop, issued_at) for start, stop in ranges(count, workers)]
    return mint_in_pool(
        out, jobs, _mint_range, load=_load_key, key=spec.private_key, workers=workers
    )
