"""DPoP proofs built by hand from ``cryptography`` keys: the client side, for the demo and tests.

Nothing here uses authz's own code: a proof the verifier accepts was made
independently of it (JWS by RFC 7515, JWK by RFC 7517/7518/8037, thumbprint by
RFC 7638), so the tests can catch the verifier agreeing with itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

__all__ = ["PrivateKey", "Signer", "access_token_hash", "b64", "jws", "proof"]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

_HASHES: dict[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint(value: int, size: int | None = None) -> str:
    length = size if size is not None else max(1, (value.bit_length() + 7) // 8)
    return b64(value.to_bytes(length, "big"))


def access_token_hash(token: str) -> str:
    return b64(hashlib.sha256(token.encode("ascii")).digest())


@dataclass(frozen=True)
class Signer:
    """A private key and the JWS algorithm it signs with."""

    key: PrivateKey
    alg: str

    def public_jwk(self) -> dict[str, Any]:
        key = self.key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            numbers = key.public_key().public_numbers()
            size = (key.curve.key_size + 7) // 8
            return {
                "kty": "EC",
                "crv": _CURVE_NAMES[key.curve.name],
                "x": _uint(numbers.x, size),
                "y": _uint(numbers.y, size),
            }
        if isinstance(key, rsa.RSAPrivateKey):
            public = key.public_key().public_numbers()
            return {"kty": "RSA", "n": _uint(public.n), "e": _uint(public.e)}
        raw = key.public_key().public_bytes_raw()
        return {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}

    def private_jwk(self) -> dict[str, Any]:
        """The public JWK plus the private members a client must never send."""
        jwk = self.public_jwk()
        key = self.key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            jwk["d"] = _uint(key.private_numbers().private_value)
        elif isinstance(key, rsa.RSAPrivateKey):
            private = key.private_numbers()
            jwk.update(
                d=_uint(private.d),
                p=_uint(private.p),
                q=_uint(private.q),
                dp=_uint(private.dmp1),
                dq=_uint(private.dmq1),
                qi=_uint(private.iqmp),
            )
        else:
            jwk["d"] = b64(key.private_bytes_raw())
        return jwk

    def thumbprint(self) -> str:
        """RFC 7638: the required members, sorted, no whitespace, SHA-256."""
        jwk = self.public_jwk()
        required = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}.get(
            jwk["kty"], ("crv", "kty", "x")
        )
        text = "{" + ",".join(f'"{name}":"{jwk[name]}"' for name in required) + "}"
        return b64(hashlib.sha256(text.encode("ascii")).digest())

    def sign(self, data: bytes) -> bytes:
        key = self.key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(data)
        digest = _HASHES[self.alg[2:]]()
        if isinstance(key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(key.sign(data, ec.ECDSA(digest)))
            size = (key.curve.key_size + 7) // 8
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        if self.alg.startswith("PS"):
            pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            return key.sign(data, pss, digest)
        return key.sign(data, padding.PKCS1v15(), digest)


def _segment(part: dict[str, Any] | str | bytes) -> str:
    if isinstance(part, dict):
        part = json.dumps(part, separators=(",", ":"))
    if isinstance(part, str):
        part = part.encode("utf-8")
    return b64(part)


def jws(
    header: dict[str, Any] | str | bytes,
    payload: dict[str, Any] | str | bytes,
    signer: Signer | None,
) -> str:
    """A compact JWS; header or payload as a dict, or as raw JSON text/bytes for
    what a dict cannot hold (duplicate members). No signer: empty signature."""
    signing_input = f"{_segment(header)}.{_segment(payload)}"
    signature = signer.sign(signing_input.encode("ascii")) if signer is not None else b""
    return f"{signing_input}.{b64(signature)}"


def proof(
    signer: Signer,
    *,
    iat: float,
    htm: str = "GET",
    htu: str = "https://api.example.com/orders",
    jti: str | None = None,
    access_token: str | None = None,
    nonce: str | None = None,
    header: dict[str, Any] | None = None,
    claims: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
    jwk_signer: Signer | None = None,
) -> str:
    """A DPoP proof by ``signer``; ``header``/``claims`` override or add members,
    ``drop`` removes them (from either), ``jwk_signer`` puts another key's JWK
    in the header (to prove the signature is checked with the jwk)."""
    full_header: dict[str, Any] = {
        "typ": "dpop+jwt",
        "alg": signer.alg,
        "jwk": (jwk_signer or signer).public_jwk(),
        **(header or {}),
    }
    payload: dict[str, Any] = {
        "jti": jti or str(uuid.uuid4()),
        "htm": htm,
        "htu": htu,
        "iat": iat,
    }
    if access_token is not None:
        payload["ath"] = access_token_hash(access_token)
    if nonce is not None:
        payload["nonce"] = nonce
    payload.update(claims or {})
    for name in drop:
        full_header.pop(name, None)
        payload.pop(name, None)
    return jws(full_header, payload, signer)
