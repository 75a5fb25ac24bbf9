"""authz keys generate and authz token mint, run as a user runs them: keys and
tokens a real server accepts, and input errors that exit 2 without a traceback."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from google.rpc import code_pb2

from authz.config.loader import load_config
from tests.service.svc_helpers import (
    AUDIENCE,
    ISSUER,
    WAIT,
    ServerFactory,
    check_request,
    config_data,
    metadata,
    ok_headers,
    write_config,
)
from tests.service.test_service_cli import EXIT_CONFIG, authz

# --- keys generate + token mint --------------------------------------------


def _issuer_keys(alg: str, directory: Path) -> dict[str, Any]:
    if alg.startswith("HS"):
        return {"secret_file": str(directory / "secret.key"), "kid": "dev-1"}
    return {"jwks_file": str(directory / "jwks.json")}


def _mint(directory: Path, alg: str, cwd: Path, *extra: str, name_alg: bool = True) -> str:
    key = directory / ("secret.key" if alg.startswith("HS") else "private.pem")
    named = ["--alg", alg] if name_alg else []  # else the key's type decides
    result = authz(
        "token", "mint", "--key", key, *named, "--kid", "dev-1",
        "--iss", ISSUER, "--aud", AUDIENCE, "--sub", "dev-user", "--scope", "a b",
        *extra,
        cwd=cwd,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.count(".") == 2
    return token


def _generate(alg: str, out: Path, cwd: Path) -> Sequence[str]:
    result = authz("keys", "generate", "--alg", alg, "--kid", "dev-1", "--out", out, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA", "HS256"])
def test_generated_key_and_minted_token_are_accepted_by_a_server(
    tmp_path: Path, start_server: ServerFactory, alg: str
) -> None:
    out = tmp_path / "dev-keys"
    lines = _generate(alg, out, tmp_path)

    if alg.startswith("HS"):
        secret = out / "secret.key"
        assert lines == [f"private key: {secret}"]
        assert secret.stat().st_mode & 0o777 == 0o600
        assert len(secret.read_bytes()) >= 32
    else:
        assert lines == [f"private key: {out / 'private.pem'}", f"public JWKS: {out / 'jwks.json'}"]
        assert (out / "private.pem").stat().st_mode & 0o777 == 0o600
        (jwk,) = json.loads((out / "jwks.json").read_text())["keys"]
        assert jwk["kid"] == "dev-1"
        assert jwk["alg"] == alg
        assert jwk["use"] == "sig"
        assert not {"d", "p", "q", "dp", "dq", "qi"} & jwk.keys()

    data = config_data(out, "127.0.0.1:0")
    data["issuers"][0]["algorithms"] = [alg]
    data["issuers"][0]["keys"] = [_issuer_keys(alg, out)]
    config_path = write_config(tmp_path / "dev.yaml", data)
    token = _mint(out, alg, tmp_path, name_alg=False)

    running = start_server(load_config(config_path))
    response = running.client.check(
        check_request({"authorization": f"Bearer {token}"}), timeout=WAIT
    )
    assert response.status.code == code_pb2.OK, metadata(response)
    assert ok_headers(response) == {
        "x-auth-subject": "dev-user",
        "x-auth-issuer": ISSUER,
        "x-auth-scopes": "a b",
    }


def test_minted_expired_token_is_denied(tmp_path: Path, start_server: ServerFactory) -> None:
    out = tmp_path / "dev-keys"
    _generate("ES256", out, tmp_path)
    data = config_data(out / "jwks.json", "127.0.0.1:0")
    data["issuers"][0]["algorithms"] = ["ES256"]
    config_path = write_config(tmp_path / "dev.yaml", data)
    token = _mint(out, "ES256", tmp_path, "--ttl", "-3600")

    running = start_server(load_config(config_path))
    response = running.client.check(
        check_request({"authorization": f"Bearer {token}"}), timeout=WAIT
    )
    assert response.denied_response.status.code == 401
    assert metadata(response)["reason"] == "token_expired"


def test_check_config_describes_generated_keys(tmp_path: Path) -> None:
    out = tmp_path / "dev-keys"
    _generate("ES256", out, tmp_path)
    data = config_data(out / "jwks.json", "127.0.0.1:0")
    data["issuers"][0]["algorithms"] = ["ES256"]
    path = write_config(tmp_path / "dev.yaml", data)

    result = authz("check-config", path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"issuer {ISSUER}: dev-1 EC-secp256r1 ES256" in result.stdout.splitlines()


def test_token_mint_with_a_missing_key_exits_2(tmp_path: Path) -> None:
    result = authz(
        "token", "mint", "--key", tmp_path / "nope.pem", "--iss", ISSUER,
        "--aud", AUDIENCE, "--sub", "x",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == EXIT_CONFIG
    assert "nope.pem" in result.stderr
    assert "cannot load the signing key" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("generated", "key_file", "alg"),
    [("ES256", "private.pem", "RS256"), ("RS256", "private.pem", "HS256")],
    ids=["ec-key-as-RS256", "rsa-pem-as-HS256"],
)
def test_token_mint_with_a_key_that_does_not_fit_the_alg_exits_2(
    tmp_path: Path, generated: str, key_file: str, alg: str
) -> None:
    out = tmp_path / "dev-keys"
    _generate(generated, out, tmp_path)
    result = authz(
        "token", "mint", "--key", out / key_file, "--alg", alg,
        "--iss", ISSUER, "--aud", AUDIENCE, "--sub", "x",
        cwd=tmp_path,
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == EXIT_CONFIG
    assert str(out / key_file) in result.stderr
    assert result.stdout == ""


def test_keys_generate_into_an_existing_file_exits_2(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("not a directory")
    result = authz("keys", "generate", "--kid", "k", "--out", taken, cwd=tmp_path)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == EXIT_CONFIG
    assert str(taken) in result.stderr
    assert taken.read_text() == "not a directory"
