"""Shared fixtures for the unit tests: real keys, made once per session.

RSA key generation costs tens of milliseconds, so every key here is
session-scoped; tests never mutate them. Helpers that build tokens or
requests live in the test module that needs them.
"""

from __future__ import annotations

import secrets

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def rsa_key_b() -> rsa.RSAPrivateKey:
    """A second, unrelated RSA key: the attacker's, or a second issuer key."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def rsa_1024_key() -> rsa.RSAPrivateKey:
    """Deliberately weak: the tests prove it is refused."""
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505


@pytest.fixture(scope="session")
def ec256_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def ec384_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="session")
def ed25519_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="session")
def hmac_secret() -> bytes:
    """48 random bytes, printable so it survives a file round trip unchanged."""
    return secrets.token_urlsafe(48)[:48].encode()
