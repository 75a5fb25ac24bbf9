"""The cold verification path against the raw signature check it cannot avoid.

    python -m tests.bench.verify_cost        (part of `make bench-check`)

Prints, for an RS256 token with the verified-token cache off: the raw RSA-2048
signature verification by cryptography, authz's whole Verifier.verify (parse,
key lookup, signature, every claim check), and PyJWT's jwt.decode for the same
checks; best of 5 rounds. The target: Verifier.verify within 1.5x of raw.
"""

from __future__ import annotations

import base64
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from authz.check.verify import Verifier
from authz.config.loader import parse_config
from authz.dev.keys import load_private, write_keypair
from authz.dev.tokens import claims_for, mint
from tests.support.doubles import StaticKeySource

ISSUER = "https://idp.bench.test"


def _best(call: Callable[[], object], count: int = 3000, rounds: int = 5) -> float:
    """Microseconds per call, the best of ``rounds``."""
    timings = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(count):
            call()
        timings.append((time.perf_counter() - start) / count * 1e6)
    return min(timings)


def main() -> int:
    directory = Path(tempfile.mkdtemp(prefix="authz-verify-cost-"))
    private_path, jwks_path = write_keypair(directory / "keys", "RS256", "k1")
    config = parse_config(
        f"""
token_cache_entries: 0
issuers:
  - issuer: {ISSUER}
    audiences: [api]
    algorithms: [RS256]
    keys: [{{jwks_file: {jwks_path}}}]
""",
        base_dir=directory,
    )
    verifier = Verifier(config, StaticKeySource.from_config(config))
    key = load_private(private_path)
    assert isinstance(key, rsa.RSAPrivateKey)
    token = mint(key, "RS256", claims_for("alice", ISSUER, "api", scopes="a b", ttl=3600), "k1")
    header, payload, signature = token.split(".")
    raw_signature = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    signing_input = f"{header}.{payload}".encode()
    public = key.public_key()
    assert verifier.verify(token).subject == "alice"

    raw = _best(
        lambda: public.verify(raw_signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
    )
    ours = _best(lambda: verifier.verify(token))
    pyjwt = _best(
        lambda: jwt.decode(token, public, algorithms=["RS256"], audience="api", issuer=ISSUER)
    )
    print("cold verification, RS256 (RSA-2048), cache off; µs per token, best of 5 rounds")
    print(f"  raw signature check (cryptography)   {raw:6.1f}")
    ratio = ours / raw
    print(f"  authz Verifier.verify                {ours:6.1f}   {ratio:.2f}x raw (target 1.5x)")
    print(f"  PyJWT jwt.decode, same checks        {pyjwt:6.1f}   {pyjwt / raw:.2f}x raw")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
