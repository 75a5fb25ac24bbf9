"""Signing keys for development and tests, and their public JWKS."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

__all__ = ["PrivateKey", "generate", "load_private", "public_jwk", "write_keypair"]

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
_CURVES: dict[str, ec.EllipticCurve] = {
    "ES256": ec.SECP256R1(),
    "ES384": ec.SECP384R1(),
    "ES512": ec.SECP521R1(),
}


def generate(algorithm: str, rsa_bits: int = 2048) -> PrivateKey:
    if algorithm[:2] in ("RS", "PS"):
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    if algorithm in _CURVES:
        return ec.generate_private_key(_CURVES[algorithm])
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"cannot generate a key pair for {algorithm!r} (HS* uses a secret file)")


def public_jwk(key: PrivateKey, kid: str, algorithm: str) -> dict[str, Any]:
    public = key.public_key()
    jwk: dict[str, Any]
    if isinstance(public, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    return {**jwk, "kid": kid, "alg": algorithm, "use": "sig"}


def load_private(path: Path) -> PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(
        key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise ValueError(f"{path}: unsupported private key type {type(key).__name__}")
    return key


def write_keypair(out_dir: Path, algorithm: str, kid: str) -> tuple[Path, Path]:
    """Write ``private.pem`` (mode 0600) and ``jwks.json``; HS* writes ``secret.key``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if algorithm.startswith("HS"):
        secret_path = out_dir / "secret.key"
        _write_private(secret_path, secrets.token_urlsafe(48).encode())
        return secret_path, secret_path
    key = generate(algorithm)
    private_path = out_dir / "private.pem"
    _write_private(
        private_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    jwks_path = out_dir / "jwks.json"
    jwks_path.write_text(json.dumps({"keys": [public_jwk(key, kid, algorithm)]}, indent=2) + "\n")
    return private_path, jwks_path


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
