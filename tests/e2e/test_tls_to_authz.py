"""Envoy to authz over mutual TLS, with the shipped envoy/gateway-tls.yaml and real certificates.

authz listens with ``tls`` (a server certificate naming "authz", and Envoy's
CA as ``client_ca_file``); Envoy presents its client certificate and checks
authz's. A valid token is allowed and an invalid one denied, exactly as over
plaintext; a client without a certificate from that CA gets no Check answered.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from authz._proto.envoy.service.auth.v3 import external_auth_pb2_grpc
from authz.dev.envoy_config import envoy_config, render_envoy_config
from authz.dev.stack import AuthzProcess, EnvoyProcess, http_request
from authz.dev.upstream import EchoUpstream
from tests.e2e.conftest import CONFIG, Keys
from tests.service.svc_helpers import check_request
from tests.support.pki import TestCA

pytestmark = pytest.mark.e2e

SHIPPED_DIR = "/etc/envoy/authz-tls/"


def _point_at(config: Any, files: dict[str, Path]) -> Any:
    """The shipped config with its certificate paths pointing at the test's files."""
    if isinstance(config, dict):
        if set(config) == {"filename"} and str(config["filename"]).startswith(SHIPPED_DIR):
            return {"filename": str(files[config["filename"].removeprefix(SHIPPED_DIR)])}
        return {key: _point_at(value, files) for key, value in config.items()}
    if isinstance(config, list):
        return [_point_at(item, files) for item in config]
    return config


@pytest.fixture(scope="module")
def tls_stack(
    keys: Keys, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, TestCA, str]]:
    """Envoy's URL, the CA, and authz's own address."""
    workdir = tmp_path_factory.mktemp("e2e-tls")
    ca = TestCA(workdir / "pki")
    server = ca.issue("authz", stem="authz")
    envoy_client = ca.issue("envoy", client=True, stem="envoy")
    config = yaml.safe_load(CONFIG)
    config["issuers"][0]["keys"][0]["jwks_file"] = str(keys.config.parent / "keys" / "jwks.json")
    config["tls"] = {
        "cert_file": str(server.cert_file),
        "key_file": str(server.key_file),
        "client_ca_file": str(ca.ca_file),
    }
    config_path = workdir / "authz.yaml"
    config_path.write_text(yaml.safe_dump(config))
    upstream = EchoUpstream()
    authz = AuthzProcess(config_path, workdir / "authz.log")
    envoy: EnvoyProcess | None = None
    try:
        upstream.start()
        authz.start()
        rendered = render_envoy_config(
            envoy_config("gateway-tls.yaml"), authz.endpoint, ("127.0.0.1", upstream.port)
        )
        files = {"ca.pem": ca.ca_file, "envoy.pem": envoy_client.cert_file}
        files["envoy.key"] = envoy_client.key_file
        envoy = EnvoyProcess(_point_at(rendered, files), workdir).start()
        yield f"http://127.0.0.1:{envoy.listener_port}", ca, authz.address
    finally:
        if envoy is not None:
            envoy.stop()
        authz.stop()
        upstream.stop()


def test_checks_travel_over_mutual_tls_and_decide_as_over_plaintext(
    tls_stack: tuple[str, TestCA, str], keys: Keys
) -> None:
    url, _, _ = tls_stack
    allowed = http_request(f"{url}/orders/1", {"Authorization": f"Bearer {keys.token()}"})
    assert allowed.status == 200
    assert allowed.json()["headers"]["x-auth-subject"] == "alice"
    denied = http_request(f"{url}/orders/1", {"Authorization": "Bearer not.a.token"})
    assert denied.status == 401


def test_a_client_without_envoys_certificate_gets_no_answer(
    tls_stack: tuple[str, TestCA, str], keys: Keys, tmp_path: Path
) -> None:
    _, ca, address = tls_stack
    stranger = TestCA(tmp_path / "other", "another CA").issue("envoy", client=True)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.ca_file.read_bytes(),
        private_key=stranger.key_file.read_bytes(),
        certificate_chain=stranger.cert_file.read_bytes(),
    )
    options = [("grpc.ssl_target_name_override", "authz")]
    with grpc.secure_channel(address, credentials, options=options) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as refused:
            stub.Check(check_request({"authorization": f"Bearer {keys.token()}"}), timeout=10)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
