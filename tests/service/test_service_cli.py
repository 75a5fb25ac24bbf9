"""The ``authz`` command line as a real process: check-config, serve, keys, token."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.rpc import code_pb2

from authz.config.loader import load_config
from tests.service.svc_helpers import (
    AUDIENCE,
    ISSUER,
    KID,
    SERVICE_NAME,
    SERVING,
    WAIT,
    Client,
    ServerFactory,
    Signing,
    check_request,
    config_data,
    fingerprint,
    metadata,
    ok_headers,
    wait_until_serving,
    write_config,
)

EXIT_CONFIG = 2


def authz(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authz.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


def free_port() -> int:
    # The port may be taken again before the server binds it; good enough on loopback.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# --- check-config ----------------------------------------------------------


def test_check_config_accepts_a_good_file(tmp_path: Path, signing: Signing) -> None:
    path = write_config(tmp_path / "good.yaml", config_data(signing.jwks_file))
    result = authz("check-config", path, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"issuer {ISSUER}: {KID} RSA-2048 RS256",
        "routes: none (every request needs a valid token)",
        f"{path}: OK",
    ]
    assert "Traceback" not in result.stderr


GOOD_YAML = """\
listen: 127.0.0.1:0
realm: service-test
issuers:
  - issuer: https://issuer.service-test.example
    audiences: [orders-api]
    algorithms: [RS256]
    keys:
      - jwks_file: {jwks}
"""


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        # Written out so the expected line number can be read off the text.
        ("audiences: [orders-api]", "audiences: []", "5: issuers[0].audiences"),
        ("algorithms: [RS256]", "algorithms: [none]", "6: issuers[0].algorithms[0]"),
        (
            "    keys:",
            "    leeway_secs: 10\n    keys:",
            "7: issuers[0].leeway_secs",
        ),
        ("listen: 127.0.0.1:0", "listen: localhost", "1: listen"),
        ("algorithms: [RS256]", "algorithms: [HS256]", "4: issuers[0]"),
    ],
)
def test_check_config_reports_file_line_and_key_path(
    tmp_path: Path, signing: Signing, old: str, new: str, where: str
) -> None:
    text = GOOD_YAML.format(jwks=signing.jwks_file)
    assert old in text
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace(old, new))
    result = authz("check-config", path, cwd=tmp_path)

    assert result.returncode == EXIT_CONFIG
    assert result.stdout == ""
    assert result.stderr.startswith("authz: configuration error:\n")
    assert f"{path}:{where}: " in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_template_is_good(tmp_path: Path, signing: Signing) -> None:
    # The base of the cases above passes, so each failure is the one change.
    path = tmp_path / "good.yaml"
    path.write_text(GOOD_YAML.format(jwks=signing.jwks_file))
    result = authz("check-config", path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_check_config_reports_a_duplicate_key(tmp_path: Path, signing: Signing) -> None:
    text = yaml.safe_dump(config_data(signing.jwks_file), sort_keys=False)
    path = tmp_path / "dup.yaml"
    path.write_text(text + "realm: again\n")
    result = authz("check-config", path, cwd=tmp_path)

    assert result.returncode == EXIT_CONFIG
    assert f"{path}:" in result.stderr
    assert "realm: duplicate key" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_reports_a_missing_key_file(tmp_path: Path, signing: Signing) -> None:
    missing = tmp_path / "nowhere" / "jwks.json"
    path = write_config(tmp_path / "keys.yaml", config_data(missing))
    result = authz("check-config", path, cwd=tmp_path)

    assert result.returncode == EXIT_CONFIG
    assert "configuration error" in result.stderr
    assert str(missing) in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_reports_a_missing_config_file(tmp_path: Path) -> None:
    result = authz("check-config", tmp_path / "absent.yaml", cwd=tmp_path)
    assert result.returncode == EXIT_CONFIG
    assert "absent.yaml" in result.stderr
    assert "Traceback" not in result.stderr


# --- serve -----------------------------------------------------------------


class Served:
    def __init__(self, process: subprocess.Popen[bytes], stderr: Path, target: str) -> None:
        self.process = process
        self.stderr_path = stderr
        self.target = target

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


@pytest.fixture
def serve(tmp_path: Path, signing: Signing) -> Iterator[Served]:
    port = free_port()
    path = write_config(
        tmp_path / "serve.yaml",
        config_data(signing.jwks_file, f"127.0.0.1:{port}", grace_period_seconds=2),
    )
    stderr = tmp_path / "serve.stderr"
    with stderr.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "authz.cli", "--log-level", "debug", "serve", "-c", str(path)],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
        )
    served = Served(process, stderr, f"127.0.0.1:{port}")
    try:
        yield served
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(WAIT)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_answers_checks_and_stops_cleanly_on_signal(
    serve: Served, signing: Signing, signum: signal.Signals
) -> None:
    wait_until_serving(serve.target, deadline=time.monotonic() + WAIT)
    assert serve.process.poll() is None

    client = Client.connect(serve.target)
    try:
        assert client.health(SERVICE_NAME) == SERVING
        token = signing.token("alice")
        response = client.check(check_request({"authorization": f"Bearer {token}"}), timeout=WAIT)
        assert response.status.code == code_pb2.OK
        assert ok_headers(response)["x-auth-subject"] == "alice"
        denied = client.check(check_request({}), timeout=WAIT)
        assert denied.denied_response.status.code == 401
        expired = signing.token("bob", ttl=-3600)
        denied = client.check(check_request({"authorization": f"Bearer {expired}"}), timeout=WAIT)
        assert metadata(denied)["reason"] == "token_expired"
    finally:
        client.close()

    serve.process.send_signal(signum)
    assert serve.process.wait(WAIT) == 0, serve.stderr
    stderr = serve.stderr
    assert f"listening on {serve.target}" in stderr
    assert "stopped" in stderr
    assert "Traceback" not in stderr
    # Decisions are logged (deny at info, allow at debug) by fingerprint, never the token.
    assert f'"token_fp": "{fingerprint(expired)}"' in stderr
    assert f'"token_fp": "{fingerprint(token)}"' in stderr
    for logged in (token, expired):
        for segment in logged.split("."):
            assert segment not in stderr


def test_serve_with_a_bad_config_exits_2(tmp_path: Path, signing: Signing) -> None:
    data = config_data(signing.jwks_file, "127.0.0.1:0")
    data["issuers"][0]["algorithms"] = ["none"]
    path = write_config(tmp_path / "bad.yaml", data)
    result = authz("serve", "-c", path, cwd=tmp_path)

    assert result.returncode == EXIT_CONFIG
    assert "configuration error" in result.stderr
    assert "issuers[0].algorithms[0]" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_on_a_taken_port_exits_2(tmp_path: Path, signing: Signing) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        path = write_config(
            tmp_path / "taken.yaml", config_data(signing.jwks_file, f"127.0.0.1:{port}")
        )
        result = authz("serve", "-c", path, cwd=tmp_path)

    assert result.returncode == EXIT_CONFIG
    assert "cannot bind" in result.stderr
    assert "Traceback" not in result.stderr


# --- keys generate + token mint --------------------------------------------


def _issuer_keys(alg: str, directory: Path) -> dict[str, Any]:
    if alg.startswith("HS"):
        return {"secret_file": str(directory / "secret.key"), "kid": "dev-1"}
    return {"jwks_file": str(directory / "jwks.json")}


def _mint(directory: Path, alg: str, cwd: Path, *extra: str) -> str:
    key = directory / ("secret.key" if alg.startswith("HS") else "private.pem")
    result = authz(
        "token", "mint", "--key", key, "--alg", alg, "--kid", "dev-1",
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
    token = _mint(out, alg, tmp_path)

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
