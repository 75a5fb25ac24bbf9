"""A real identity provider's key endpoints on loopback, under the test's control.

Serves OIDC discovery (``/.well-known/openid-configuration``), a JWKS
(``/jwks.json`` and Kubernetes' ``/openid/v1/jwks``) over HTTP or HTTPS with a
CA made for the test. It can rotate keys, fail, stall, answer garbage or too
much, and counts every request so tests can bound fetches.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import ssl
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

JWKS_PATH = "/jwks.json"
KUBERNETES_JWKS_PATH = "/openid/v1/jwks"
DISCOVERY_PATH = "/.well-known/openid-configuration"


@dataclass(frozen=True)
class LoopbackCA:
    """A CA and a server certificate for 127.0.0.1 and localhost, as PEM files."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    @classmethod
    def create(cls, directory: Path, name: str = "authz test CA") -> LoopbackCA:
        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        server_key = ec.generate_private_key(ec.SECP256R1())
        server_cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name)
            .public_key(server_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        ca_file = directory / "ca.pem"
        ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        cert_file = directory / "server.pem"
        cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
        key_file = directory / "server.key"
        key_file.write_bytes(
            server_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cls(ca_file, cert_file, key_file)


class FakeIdP:
    """Discovery and JWKS endpoints; every behaviour is a plain attribute the test sets.

    ``mode``: "ok", "fail" (HTTP 500), "garbage" (not JSON), "huge" (a body past
    any sane cap), "stall" (hold the answer until ``release()``).
    """

    def __init__(self, tls: LoopbackCA | None = None, issuer: str | None = None) -> None:
        self.jwks: dict[str, Any] = {"keys": []}
        self.mode = "ok"
        self.cache_control: str | None = None
        self.required_token: str | None = None  # Bearer token the endpoints demand
        self.discovery_issuer: str | None = issuer
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls.cert_file, tls.key_file)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self._server.server_address[1]}"

    @property
    def issuer(self) -> str:
        return self.discovery_issuer or self.url

    def count(self, path: str) -> int:
        with self._lock:
            return self.requests[path]

    def total(self) -> int:
        with self._lock:
            return sum(self.requests.values())

    def release(self) -> None:
        self._release.set()

    def start(self) -> FakeIdP:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _record(self, path: str) -> None:
        with self._lock:
            self.requests[path] += 1


def _handler(idp: FakeIdP) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            idp._record(path)
            if idp.required_token is not None and (
                self.headers.get("authorization") != f"Bearer {idp.required_token}"
            ):
                return self._send(401, b'{"error":"unauthorized"}')
            if idp.mode == "stall":
                idp._release.wait(30)
            if idp.mode == "fail":
                return self._send(500, b"internal error")
            if idp.mode == "garbage":
                return self._send(200, b"<html>not json</html>")
            if idp.mode == "huge":
                return self._send(200, b'{"keys": [' + b'{"kty":"RSA"},' * 200_000 + b"{}]}")
            if path == DISCOVERY_PATH:
                document = {"issuer": idp.issuer, "jwks_uri": idp.url + JWKS_PATH}
                return self._send(200, json.dumps(document).encode())
            if path in (JWKS_PATH, KUBERNETES_JWKS_PATH):
                return self._send(200, json.dumps(idp.jwks).encode())
            return self._send(404, b"not found")

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            if idp.cache_control is not None and status == 200:
                self.send_header("cache-control", idp.cache_control)
            self.end_headers()
            # The client may have given up (size cap, timeout): expected in some tests.
            with contextlib.suppress(OSError):
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    return Handler
