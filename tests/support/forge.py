"""Token forgery for tests: the attacker's side of the table."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def decode_segment(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def tamper_payload(token: str, **changes: Any) -> str:
    """New claims, old signature."""
    header, payload, signature = token.split(".")
    claims = decode_segment(payload)
    claims.update(changes)
    return f"{header}.{b64url_json(claims)}.{signature}"


def tamper_signature(token: str) -> str:
    """Flip one bit in the middle of the signature (keeps canonical base64url)."""
    header, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{header}.{payload}.{b64url(bytes(raw))}"


def unsigned(claims: dict[str, Any], alg: str = "none", kid: str | None = None) -> str:
    """An `alg: none` token (any spelling) with an empty signature."""
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    return f"{b64url_json(header)}.{b64url_json(claims)}."


def hmac_signed(
    claims: dict[str, Any], secret: bytes, alg: str = "HS256", kid: str | None = None
) -> str:
    """HMAC-signed token; with a public key's bytes as ``secret``: algorithm confusion."""
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    signing_input = f"{b64url_json(header)}.{b64url_json(claims)}"
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    signature = hmac.new(secret, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64url(signature)}"


def rs256_signed_text(payload_json: str, key: rsa.RSAPrivateKey, kid: str) -> str:
    """An RS256 token over ``payload_json`` exactly as written (e.g. a number
    literal like 1e400 that json.dumps cannot produce)."""
    header = b64url_json({"alg": "RS256", "typ": "JWT", "kid": kid})
    signing_input = f"{header}.{b64url(payload_json.encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


def public_pem(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
