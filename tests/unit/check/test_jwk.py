"""jwk.py: the proof's public key, and its RFC 7638 thumbprint."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from authz.check.jwk import jwk_thumbprint, proof_key
from authz.dev.dpop_client import Signer, b64
from authz.errors import DpopKeyInvalid

# RFC 7638 §3.1: the example RSA key and its SHA-256 thumbprint.
RFC7638_KEY = {
    "kty": "RSA",
    "n": (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B"
        "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FD"
        "W2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vM"
        "QFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    ),
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_the_rfc_7638_example() -> None:
    assert jwk_thumbprint(RFC7638_KEY) == RFC7638_THUMBPRINT
    # The members outside the required set (alg, kid) do not count.
    assert jwk_thumbprint({k: RFC7638_KEY[k] for k in ("e", "kty", "n")}) == RFC7638_THUMBPRINT
    # And the proof key read from it has the same thumbprint.
    key = proof_key(RFC7638_KEY, "RS256")
    assert key.thumbprint == RFC7638_THUMBPRINT
    assert isinstance(key.key, rsa.RSAPublicKey)
    assert key.key.key_size == 2048


def test_thumbprints_match_an_independent_computation(
    ec256_key: ec.EllipticCurvePrivateKey,
    ec384_key: ec.EllipticCurvePrivateKey,
    rsa_key: rsa.RSAPrivateKey,
    ed25519_key: ed25519.Ed25519PrivateKey,
) -> None:
    for signer in [
        Signer(ec256_key, "ES256"),
        Signer(ec384_key, "ES384"),
        Signer(rsa_key, "PS256"),
        Signer(ed25519_key, "EdDSA"),
    ]:
        assert proof_key(signer.public_jwk(), signer.alg).thumbprint == signer.thumbprint()
        assert jwk_thumbprint(signer.public_jwk()) == signer.thumbprint()


def test_ed448_is_accepted_for_eddsa() -> None:
    raw = ed448.Ed448PrivateKey.generate().public_key().public_bytes_raw()
    key = proof_key({"kty": "OKP", "crv": "Ed448", "x": b64(raw)}, "EdDSA")
    assert isinstance(key.key, ed448.Ed448PublicKey)
    with pytest.raises(DpopKeyInvalid):
        proof_key({"kty": "OKP", "crv": "Ed448", "x": b64(raw[:-1])}, "EdDSA")
    with pytest.raises(DpopKeyInvalid):
        proof_key({"kty": "OKP", "crv": "X25519", "x": b64(raw[:32])}, "EdDSA")


def test_es512_needs_p521_with_full_length_coordinates() -> None:
    signer = Signer(ec.generate_private_key(ec.SECP521R1()), "ES512")
    jwk = signer.public_jwk()
    assert len(jwk["x"]) == 88  # 66 bytes, leading zeros kept (RFC 7518 §6.2.1.2)
    assert proof_key(jwk, "ES512").thumbprint == signer.thumbprint()
    with pytest.raises(DpopKeyInvalid):
        proof_key(jwk, "ES256")


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "RSA", "e": "AQAB"},
        {"kty": "EC", "crv": "P-256"},
        {"kty": "oct", "k": "AAAA"},
        {"kty": "OKP", "crv": "Ed25519"},
        {"kty": 1},
        {},
    ],
)
def test_incomplete_keys_have_no_thumbprint(jwk: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - missing members or an unknown kty
        jwk_thumbprint(jwk)


@pytest.mark.parametrize("algorithm", ["none", "HS256", "RS1", "ES256K", "", "eddsa", "Ed25519"])
def test_no_key_for_algorithms_outside_the_known_set(
    ec256_key: ec.EllipticCurvePrivateKey, algorithm: str
) -> None:
    with pytest.raises(DpopKeyInvalid):
        proof_key(Signer(ec256_key, "ES256").public_jwk(), algorithm)
