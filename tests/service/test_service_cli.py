"""The ``authz`` command line as a real process: check-config and serve.

keys generate and token mint: test_service_cli_dev.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from google.rpc import code_pb2

from tests.service.svc_helpers import (
    ISSUER,
    KID,
    SERVICE_NAME,
    SERVING,
    WAIT,
    Client,
    Signing,
    check_request,
    config_data,
    fingerprint,
    metadata,
    ok_headers,
    wait_until_serving,
    write_config,
)
from tests.support.repo import REPO_ROOT

EXIT_CONFIG = 2

# The commands run in another directory: this checkout's authz comes first on
# their path, not whichever one the virtual environment has installed.
CHECKOUT_ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
}


def authz(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authz.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
        env=CHECKOUT_ENV,
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
            env=CHECKOUT_ENV,
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


def test_serve_takes_logging_from_after_the_command_and_the_environment(
    tmp_path: Path, signing: Signing
) -> None:
    # Two workers: the supervisor hands its logging on to processes it starts.
    port = free_port()
    path = write_config(
        tmp_path / "serve.yaml",
        config_data(signing.jwks_file, f"127.0.0.1:{port}", grace_period_seconds=1),
    )
    stderr = tmp_path / "serve.stderr"
    with stderr.open("wb") as sink:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "authz.cli", "serve", "-c", str(path)),
                *("--workers", "2", "--log-level", "debug"),
            ],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env={**CHECKOUT_ENV, "AUTHZ_LOG_FORMAT": "text", "AUTHZ_LOG_LEVEL": "error"},
        )
    try:
        deadline = time.monotonic() + WAIT
        while stderr.read_text().count(f"listening on 127.0.0.1:{port}") < 2:
            assert process.poll() is None, stderr.read_text()
            assert time.monotonic() < deadline, stderr.read_text()
            time.sleep(0.05)  # poll interval
        process.send_signal(signal.SIGTERM)
        assert process.wait(WAIT) == 0, stderr.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(WAIT)
    lines = stderr.read_text().splitlines()
    # Info lines at all: --log-level debug after the command beat AUTHZ_LOG_LEVEL=error.
    assert any(" INFO authz.config: configuration loaded from" in line for line in lines), lines
    assert not [line for line in lines if line.startswith("{")]  # text, from every process
