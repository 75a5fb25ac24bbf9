"""TLS on the gRPC listener: encrypted Checks, client certificates, rotation without restart.

The real server with ``tls``; real certificates from a test CA; real gRPC
clients (and a plain TLS socket to read which certificate the server shows).
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from authz._proto.envoy.service.auth.v3 import external_auth_pb2_grpc
from authz.errors import ConfigError
from authz.server import AuthzServer
from tests.service.svc_helpers import (
    WAIT,
    ConfigFactory,
    Signing,
    check_request,
    serve_alone,
)
from tests.support.pki import Issued, TestCA


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "pki")


def _channel(server: AuthzServer, ca: TestCA, client: Issued | None = None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.ca_file.read_bytes(),
        private_key=client.key_file.read_bytes() if client else None,
        certificate_chain=client.cert_file.read_bytes() if client else None,
    )
    return grpc.secure_channel(
        server.address,
        credentials,
        options=[("grpc.ssl_target_name_override", "localhost")],
    )


def _check(channel: grpc.Channel, token: str) -> Any:
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)  # type: ignore[no-untyped-call]
    return stub.Check(check_request({"authorization": f"Bearer {token}"}), timeout=WAIT)


def _presented(server: AuthzServer, ca: TestCA, client: Issued | None = None) -> bytes:
    """The certificate the server presents to a new connection, DER."""
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    context.check_hostname = False
    context.set_alpn_protocols(["h2"])
    if client is not None:
        context.load_cert_chain(client.cert_file, client.key_file)
    host, port = server.address.rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=WAIT) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def _tls(server: Issued, client_ca: Path | None = None) -> dict[str, str]:
    settings = {"cert_file": str(server.cert_file), "key_file": str(server.key_file)}
    if client_ca is not None:
        settings["client_ca_file"] = str(client_ca)
    return settings


def test_checks_are_served_over_tls_and_plaintext_is_refused(
    make_config: ConfigFactory, signing: Signing, ca: TestCA
) -> None:
    server_cert = ca.issue("localhost")
    config = make_config(
        tls={"cert_file": str(server_cert.cert_file), "key_file": str(server_cert.key_file)}
    )
    for server in serve_alone(config):
        with _channel(server, ca) as channel:
            assert _check(channel, signing.token()).status.code == 0
        with grpc.insecure_channel(server.address) as plain:
            with pytest.raises(grpc.RpcError) as refused:
                _check(plain, signing.token())
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


def test_with_a_client_ca_only_its_clients_may_ask(
    make_config: ConfigFactory, signing: Signing, ca: TestCA, tmp_path: Path
) -> None:
    server_cert = ca.issue("localhost")
    envoy = ca.issue("envoy", client=True)
    stranger = TestCA(tmp_path / "other", "another CA").issue("envoy", client=True)
    config = make_config(tls=_tls(server_cert, ca.ca_file))
    for server in serve_alone(config):
        with _channel(server, ca, envoy) as channel:
            assert _check(channel, signing.token()).status.code == 0
        for client in (None, stranger):
            with _channel(server, ca, client) as channel:
                with pytest.raises(grpc.RpcError) as refused:
                    _check(channel, signing.token())
                assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


def test_a_rotated_certificate_is_served_without_a_restart(
    make_config: ConfigFactory, signing: Signing, ca: TestCA
) -> None:
    first = ca.issue("localhost", stem="server")
    config = make_config(tls=_tls(first))
    for server in serve_alone(config):
        assert _presented(server, ca) == first.der
        # A broken rotation (a key that is not the certificate's) keeps the pair in force.
        other = ca.issue("localhost", stem="other")
        os.replace(other.key_file, first.key_file)
        assert _presented(server, ca) == first.der
        # The whole new pair, written as a Secret update would: served to new connections.
        second = ca.issue("localhost", stem="server")
        deadline = time.monotonic() + WAIT
        while _presented(server, ca) != second.der:
            assert time.monotonic() < deadline, "the new certificate was never served"
            time.sleep(0.05)  # poll interval, not a readiness guess
        with _channel(server, ca) as channel:
            assert _check(channel, signing.token()).status.code == 0


def test_an_unusable_certificate_stops_the_start_with_the_file_named(
    make_config: ConfigFactory, ca: TestCA, tmp_path: Path
) -> None:
    server_cert = ca.issue("localhost")
    wrong_key = ca.issue("elsewhere").key_file
    config = make_config(tls={**_tls(server_cert), "key_file": str(wrong_key)})
    with pytest.raises(ConfigError) as info:
        for _ in serve_alone(config):
            pass
    assert str(wrong_key) in str(info.value)
    assert "is not the key of" in str(info.value)
