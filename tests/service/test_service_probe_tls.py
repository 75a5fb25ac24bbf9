"""``python -m authz.probe`` over TLS: the probe of a listener with ``tls`` (k8s/tls).

The real server with TLS and a client CA, as k8s/tls runs it; the probe trusts
the CA, expects the Service's name and presents authz's own certificate
(issued for client authentication too). Without TLS, with another name, or
without a client certificate it gets no answer.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz import probe
from authz.server import AuthzServer
from tests.service.svc_helpers import ConfigFactory, serve_alone
from tests.support.pki import Issued, TestCA

NAME = "authz.authz.svc.cluster.local"


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "pki")


@pytest.fixture
def own(ca: TestCA) -> Issued:
    """authz's certificate: the server's, usable as a client's too."""
    return ca.issue(NAME, both=True)


@pytest.fixture
def server(make_config: ConfigFactory, ca: TestCA, own: Issued) -> Iterator[AuthzServer]:
    tls = {
        "cert_file": str(own.cert_file),
        "key_file": str(own.key_file),
        "client_ca_file": str(ca.ca_file),
    }
    yield from serve_alone(make_config(tls=tls))


def tls_args(ca: TestCA, client: Issued | None, name: str = NAME) -> list[str]:
    args = ["--tls-ca", str(ca.ca_file), "--tls-server-name", name]
    if client is not None:
        args += ["--tls-cert", str(client.cert_file), "--tls-key", str(client.key_file)]
    return args


def test_the_probe_asks_a_tls_listener_with_authzs_own_certificate(
    server: AuthzServer, ca: TestCA, own: Issued, capsys: pytest.CaptureFixture[str]
) -> None:
    assert probe.main([*tls_args(ca, own), server.address]) == 0
    assert capsys.readouterr().out == f"{server.address}: SERVING\n"


def test_without_tls_or_a_client_certificate_or_with_another_name_no_answer(
    server: AuthzServer, ca: TestCA, own: Issued
) -> None:
    assert probe.main(["--timeout", "2", server.address]) == 2  # plaintext
    assert probe.main(["--timeout", "2", *tls_args(ca, None), server.address]) == 2
    other_name = tls_args(ca, own, name="gateway.authz.svc.cluster.local")
    assert probe.main(["--timeout", "2", *other_name, server.address]) == 2


def test_a_missing_certificate_file_is_no_answer(
    server: AuthzServer, ca: TestCA, own: Issued, tmp_path: Path
) -> None:
    args = tls_args(ca, own)
    args[args.index("--tls-key") + 1] = str(tmp_path / "absent.key")
    assert probe.main([*args, server.address]) == 2


@pytest.mark.parametrize(
    "args",
    [
        ["--tls-server-name", NAME],
        ["--tls-cert", "c.pem", "--tls-key", "k.pem"],
        ["--tls-ca", "ca.pem", "--tls-cert", "c.pem"],
    ],
)
def test_incomplete_tls_options_are_refused(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "authz.probe", *args, "127.0.0.1:9001"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "need --tls-ca" in result.stderr or "go together" in result.stderr
