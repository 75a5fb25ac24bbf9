"""authz token mint: without --alg, the key's own algorithm signs."""

from __future__ import annotations

import json
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from authz.cli import main
from authz.dev.keys import write_keypair

MINT = ["--iss", "https://idp.example", "--aud", "api", "--sub", "alice"]


def mint(capsys: pytest.CaptureFixture[str], key: Path, *extra: str) -> str:
    assert main(["token", "mint", "--key", str(key), *MINT, *extra]) == 0
    token = capsys.readouterr().out.strip()
    assert token.count(".") == 2
    return token


@pytest.mark.parametrize("alg", ["RS256", "ES256", "ES384", "ES512", "EdDSA"])
def test_the_key_type_picks_the_algorithm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], alg: str
) -> None:
    private, jwks = write_keypair(tmp_path, alg, "k1")
    token = mint(capsys, private)
    assert jwt.get_unverified_header(token)["alg"] == alg
    (jwk,) = json.loads(jwks.read_text())["keys"]
    claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=[alg], audience="api")
    assert claims["sub"] == "alice"


def test_a_secret_file_signs_hs256(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret, _ = write_keypair(tmp_path, "HS256", "k1")
    token = mint(capsys, secret)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    jwt.decode(token, secret.read_bytes(), algorithms=["HS256"], audience="api")


def test_a_named_algorithm_still_wins(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    private, _ = write_keypair(tmp_path, "RS256", "k1")
    assert jwt.get_unverified_header(mint(capsys, private, "--alg", "PS384"))["alg"] == "PS384"
    secret, _ = write_keypair(tmp_path / "hs", "HS256", "k1")
    assert jwt.get_unverified_header(mint(capsys, secret, "--alg", "HS512"))["alg"] == "HS512"


def test_a_curve_without_a_jws_algorithm_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = ec.generate_private_key(ec.SECP256K1())
    path = tmp_path / "k1.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    assert main(["token", "mint", "--key", str(path), *MINT]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{path}: cannot load the signing key: no JWS algorithm signs with curve secp256k1" in (
        captured.err
    )
