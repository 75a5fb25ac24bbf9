"""Every Envoy config in envoy/ is accepted by the real Envoy binary."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from authz.dev.stack import envoy_binary
from tests.support.pki import TestCA
from tests.support.repo import REPO_ROOT

pytestmark = pytest.mark.e2e

CONFIGS = sorted((REPO_ROOT / "envoy").glob("*.yaml"))


def test_there_are_configs_to_check() -> None:
    assert CONFIGS, "envoy/ holds no *.yaml"


# Where a config expects certificate files (gateway-tls.yaml, and
# gateway-mtls-clients.yaml's for clients): Envoy reads them while validating,
# so the test validates a copy pointing at real ones.
TLS_DIR = "/etc/envoy/authz-tls/"
CLIENT_TLS_DIR = "/etc/envoy/client-tls/"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.name)
def test_envoy_validates(config: Path, tmp_path: Path) -> None:
    text = config.read_text()
    if TLS_DIR in text or CLIENT_TLS_DIR in text:
        ca = TestCA(tmp_path / "pki")
        client = ca.issue("envoy", client=True, stem="envoy")
        server = ca.issue("gateway", stem="server")
        for name, path in (
            (TLS_DIR + "ca.pem", ca.ca_file),
            (TLS_DIR + "envoy.pem", client.cert_file),
            (TLS_DIR + "envoy.key", client.key_file),
            (CLIENT_TLS_DIR + "client-ca.pem", ca.ca_file),
            (CLIENT_TLS_DIR + "server.pem", server.cert_file),
            (CLIENT_TLS_DIR + "server.key", server.key_file),
        ):
            text = text.replace(name, str(path))
        assert "filename: /etc/envoy/" not in text, "a certificate the test does not provide"
        config = tmp_path / config.name
        config.write_text(text)
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"configuration '{config}' OK" in result.stdout + result.stderr


def test_a_broken_config_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    text = (REPO_ROOT / "envoy" / "gateway.yaml").read_text()
    broken.write_text(text.replace("failure_mode_allow", "failure_mode_alow"))
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(broken), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
