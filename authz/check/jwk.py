"""The public key a DPoP proof carries in its ``jwk`` header, and its thumbprint.

The key comes from the client, so it is read as untrusted input: only the
members a public key of the algorithm's type needs, each canonical base64url
of the exact size (EC coordinates full length, RSA without leading zeros), no
private member, no ``oct`` key. One key therefore has one spelling, and one
RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order,
base64url, as an access token's ``cnf.jkt`` holds it (RFC 9449 §6.1).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from authz.check.jose import b64url_decode, b64url_encode
from authz.errors import DpopKeyInvalid
from authz.memo import BoundedMemo

__all__ = ["ProofKey", "jwk_thumbprint", "proof_key"]

PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)

# Members that only a private or symmetric key has (RFC 7518 §6.2.2, §6.3.2, §6.4).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
# EC curve -> (cryptography curve, coordinate bytes); the curve an ES* alg needs.
_CURVES: Mapping[str, tuple[ec.EllipticCurve, int]] = {
    "P-256": (ec.SECP256R1(), 32),
    "P-384": (ec.SECP384R1(), 48),
    "P-521": (ec.SECP521R1(), 66),
}
_EC_CURVE_OF = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_OKP_SIZES = {"Ed25519": 32, "Ed448": 57}
# RSA: 2048 bits at least (as for issuers' keys); at most 8192, because the
# client picks the key and verification cost grows with its size. The exponent
# is bounded for the same reason (65537 in practice).
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192
_MAX_EXPONENT_BYTES = 4
# RFC 7638 §3.2: the members each key type's thumbprint is made of.
_REQUIRED = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}


@dataclass(frozen=True, slots=True)
class ProofKey:
    key: PublicKey
    thumbprint: str  # RFC 7638, SHA-256, base64url


def proof_key(jwk: object, algorithm: str) -> ProofKey:
    """The public key ``jwk`` describes, checked to fit ``algorithm``; DpopKeyInvalid if not."""
    if not isinstance(jwk, dict):
        raise DpopKeyInvalid("jwk header is not a JSON object")
    private = sorted(_PRIVATE_MEMBERS & jwk.keys())
    if private:
        raise DpopKeyInvalid(f"jwk holds private or symmetric key members {private}")
    for name in ("alg", "use"):
        if name in jwk and not isinstance(jwk[name], str):
            raise DpopKeyInvalid(f"jwk {name} is not a string")
    if jwk.get("alg", algorithm) != algorithm:
        raise DpopKeyInvalid("jwk alg differs from the proof's alg")
    if jwk.get("use", "sig") != "sig":
        raise DpopKeyInvalid("jwk use is not sig")
    # A client signs every proof with the same key: the key object and its
    # thumbprint are kept by the members they are made of (a key's public
    # members are the key; nothing else of the JWK is read below).
    members = _members(jwk)
    known = _KEYS.get((algorithm, members)) if members is not None else None
    if known is not None:
        return known
    if algorithm in _EC_CURVE_OF:
        key: PublicKey = _ec_key(jwk, _EC_CURVE_OF[algorithm])
    elif algorithm in _RSA_ALGS:
        key = _rsa_key(jwk)
    elif algorithm == "EdDSA":
        key = _okp_key(jwk)
    else:
        raise DpopKeyInvalid("no key type fits the proof's alg")
    # Each reader above checked kty against the algorithm.
    made = ProofKey(key=key, thumbprint=_thumbprint(jwk, jwk["kty"]))
    if members is not None:
        _KEYS.put((algorithm, members), made)
    return made


# Proof keys already read, by algorithm and public members (BoundedMemo: locked).
_KEYS: BoundedMemo[tuple[str, tuple[str, ...]], ProofKey] = BoundedMemo(4096)


def _members(jwk: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The key's defining members (RFC 7638's), if all are strings; else None."""
    kty = jwk.get("kty")
    if not isinstance(kty, str) or kty not in _REQUIRED:
        return None
    values = tuple(jwk.get(name) for name in _REQUIRED[kty])
    if not all(isinstance(value, str) for value in values):
        return None
    return values  # type: ignore[return-value]


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of an EC, RSA or OKP public JWK."""
    kty = jwk.get("kty")
    if not isinstance(kty, str) or kty not in _REQUIRED:
        raise ValueError("thumbprints are defined here for EC, RSA and OKP keys")
    for name in _REQUIRED[kty]:
        if not isinstance(jwk.get(name), str):
            raise ValueError(f"jwk member {name} is missing or not a string")
    return _thumbprint(jwk, kty)


def _thumbprint(jwk: Mapping[str, Any], kty: str) -> str:
    # Members sorted, no whitespace, UTF-8 (RFC 7638 §3.3): json.dumps of a
    # dict built in sorted order gives exactly that for these ASCII strings.
    members = {name: jwk[name] for name in _REQUIRED[kty]}
    canonical = json.dumps(members, separators=(",", ":"), ensure_ascii=False)
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())


def _member(jwk: Mapping[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise DpopKeyInvalid(f"jwk {name} is missing or not a string")
    return b64url_decode(value, f"jwk {name}", DpopKeyInvalid)


def _ec_key(jwk: Mapping[str, Any], curve_name: str) -> ec.EllipticCurvePublicKey:
    if jwk.get("kty") != "EC":
        raise DpopKeyInvalid("jwk kty does not fit the proof's alg")
    if jwk.get("crv") != curve_name:
        raise DpopKeyInvalid("jwk crv does not fit the proof's alg")
    curve, size = _CURVES[curve_name]
    x, y = _member(jwk, "x"), _member(jwk, "y")
    if len(x) != size or len(y) != size:
        raise DpopKeyInvalid("jwk coordinates are not the curve's size")
    try:
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve
        )
        return numbers.public_key()
    except ValueError:
        raise DpopKeyInvalid("jwk point is not on the curve") from None


def _rsa_key(jwk: Mapping[str, Any]) -> rsa.RSAPublicKey:
    if jwk.get("kty") != "RSA":
        raise DpopKeyInvalid("jwk kty does not fit the proof's alg")
    n, e = _member(jwk, "n"), _member(jwk, "e")
    if n[0] == 0 or e[0] == 0:
        # RFC 7518 §6.3.1: the minimum number of octets; a leading zero would
        # give one key two thumbprints.
        raise DpopKeyInvalid("jwk n or e has leading zero octets")
    modulus, exponent = int.from_bytes(n, "big"), int.from_bytes(e, "big")
    if not MIN_RSA_BITS <= modulus.bit_length() <= MAX_RSA_BITS:
        raise DpopKeyInvalid(f"jwk RSA key is not {MIN_RSA_BITS} to {MAX_RSA_BITS} bits")
    if len(e) > _MAX_EXPONENT_BYTES:
        raise DpopKeyInvalid("jwk RSA exponent is too large")
    try:
        return rsa.RSAPublicNumbers(exponent, modulus).public_key()
    except ValueError:
        raise DpopKeyInvalid("jwk is not a usable RSA public key") from None


def _okp_key(jwk: Mapping[str, Any]) -> ed25519.Ed25519PublicKey | ed448.Ed448PublicKey:
    if jwk.get("kty") != "OKP":
        raise DpopKeyInvalid("jwk kty does not fit the proof's alg")
    curve = jwk.get("crv")
    if not isinstance(curve, str) or curve not in _OKP_SIZES:
        raise DpopKeyInvalid("jwk crv is not Ed25519 or Ed448")
    x = _member(jwk, "x")
    if len(x) != _OKP_SIZES[curve]:
        raise DpopKeyInvalid("jwk x is not the curve's size")
    try:
        if curve == "Ed25519":
            return ed25519.Ed25519PublicKey.from_public_bytes(x)
        return ed448.Ed448PublicKey.from_public_bytes(x)
    except ValueError:
        raise DpopKeyInvalid("jwk x is not a public key") from None
