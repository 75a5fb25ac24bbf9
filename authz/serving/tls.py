"""The listener's TLS certificates, re-read when their files change.

gRPC asks for the server's certificate configuration before every new
connection's handshake (``grpc.dynamic_ssl_server_credentials``): the files
are checked then (a stat each), and re-read when they changed, so a rotated
Secret or a renewed certificate is served without a restart. A new pair is
taken only when it is whole and consistent (the key matches the certificate,
the CA file parses): a half-written rotation keeps the pair in force, logged.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from authz.config.models import Config, ListenTlsConfig
from authz.errors import ConfigError
from authz.watch import WatchedFile

__all__ = ["ServerCertificates"]

log = logging.getLogger(__name__)


class ServerCertificates:
    """The listener's certificate, key and (optional) client CA; one lock."""

    def __init__(self, tls: ListenTlsConfig, config: Config) -> None:
        self._cert = config.resolve(tls.cert_file)
        self._key = config.resolve(tls.key_file)
        self._ca = config.resolve(tls.client_ca_file) if tls.client_ca_file else None
        paths = [self._cert, self._key, *([self._ca] if self._ca else [])]
        self._watched = [WatchedFile(path) for path in paths]
        self._lock = threading.Lock()
        self._current = self._load()  # ConfigError at start: the server does not start

    @property
    def requires_client_certificates(self) -> bool:
        return self._ca is not None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._current,
            # grpc's stubs say the fetcher returns a configuration; its documentation
            # (and the C core) take None for "keep the one in use".
            self._fetch,  # type: ignore[arg-type]
            require_client_authentication=self._ca is not None,
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """For gRPC, before a handshake: a new configuration, or None to keep the one in use."""
        with self._lock:
            # Every file is stat'ed: changed() also records the new state of each.
            changed = [watched.changed() for watched in self._watched]
            if not any(changed):
                return None
            try:
                self._current = self._load()
            except ConfigError as exc:
                log.error("listener TLS: keeping the certificate in use: %s", exc)
                return None
            log.info("listener TLS: certificate files changed; serving the new certificate")
            return self._current

    def _load(self) -> grpc.ServerCertificateConfiguration:
        cert, key = _read(self._cert), _read(self._key)
        try:
            certificate = x509.load_pem_x509_certificate(cert)
            private = load_pem_private_key(key, password=None)
        except ValueError as exc:
            raise ConfigError(
                f"tls: {self._cert} / {self._key}: not a PEM certificate and key: {exc}"
            ) from None
        public = private.public_key()
        if public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) != (
            certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        ):
            raise ConfigError(f"tls: {self._key} is not the key of {self._cert}")
        roots = None
        if self._ca is not None:
            roots = _read(self._ca)
            try:
                x509.load_pem_x509_certificates(roots)
            except ValueError as exc:
                raise ConfigError(f"tls: {self._ca}: not PEM certificates: {exc}") from None
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=roots)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"tls: {path}: cannot read: {exc.strerror or exc}") from None
