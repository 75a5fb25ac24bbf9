"""Certificate-bound access tokens (RFC 8705 §3): the client holds the token's certificate.

A bound token carries ``cnf["x5t#S256"]``: the base64url (unpadded) SHA-256 of
the DER client certificate it was issued to. The request is accepted only if
the client presented that very certificate in mutual TLS. Where authz learns
the certificate from is configured (``mtls.certificate_source``), never
guessed:

- ``peer``: Envoy ended the TLS connection and passes the certificate it
  verified as ``attributes.source.certificate`` (URL-encoded PEM; the ext_authz
  filter's ``include_peer_certificate``).
- ``xfcc``: a proxy in front ended TLS and states the certificate in
  ``x-forwarded-client-cert`` (``Hash=`` hex SHA-256 of the DER, or ``Cert=``
  URL-encoded PEM). Trusted only because that proxy replaces whatever a client
  sent (``SANITIZE_SET``), so exactly one element is accepted: more would be
  an earlier hop's claims, or a client's.

TLS has already proven the client holds the certificate's private key; this
module only compares digests, in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote

from cryptography import x509

from authz.check.jose import b64url_decode, b64url_encode
from authz.config.sender import MtlsConfig
from authz.errors import ClaimInvalid, MtlsBindingMismatch, MtlsCertificateMissing

__all__ = [
    "CertificateBinding",
    "bound_x5t",
    "certificate_thumbprint",
    "thumbprint_from_pem",
    "thumbprint_from_xfcc",
]

CNF_MEMBER = "x5t#S256"
# Far larger than any client certificate; bounds the work of parsing one.
MAX_CERTIFICATE_CHARS = 64 * 1024
_PEM = re.compile(
    r"-----BEGIN CERTIFICATE-----\r?\n([A-Za-z0-9+/=\r\n]+?)\r?\n?-----END CERTIFICATE-----\r?\n?"
)
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


def certificate_thumbprint(der: bytes) -> str:
    """RFC 8705 §3.1: base64url (no padding) of the SHA-256 of the DER certificate."""
    return b64url_encode(hashlib.sha256(der).digest())


def thumbprint_from_pem(url_encoded_pem: str) -> str:
    """The thumbprint of the one certificate in Envoy's URL-encoded PEM; ValueError if
    it is not exactly one parseable certificate."""
    if len(url_encoded_pem) > MAX_CERTIFICATE_CHARS:
        raise ValueError("certificate is too large")
    pem = unquote(url_encoded_pem, errors="strict")
    match = _PEM.fullmatch(pem)
    if match is None:
        raise ValueError("not exactly one PEM certificate")
    try:
        der = base64.b64decode("".join(match[1].split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("PEM body is not base64") from None
    # Parsed only to refuse what is not a certificate; the digest is of the
    # bytes as sent, which is what the issuer hashed.
    x509.load_der_x509_certificate(der)
    return certificate_thumbprint(der)


def thumbprint_from_xfcc(values: Sequence[str]) -> str | None:
    """The thumbprint an ``x-forwarded-client-cert`` states, None if it states none;
    ValueError if it is malformed or has more than one element."""
    value = ",".join(values)
    if not value:
        return None
    elements = _xfcc_elements(value)
    if len(elements) != 1:
        raise ValueError(f"{len(elements)} elements; the trusted hop sets exactly one")
    element = elements[0]
    from_hash = from_cert = None
    if "hash" in element:
        if not _SHA256_HEX.fullmatch(element["hash"]):
            raise ValueError("Hash is not a hex SHA-256 digest")
        from_hash = b64url_encode(bytes.fromhex(element["hash"]))
    if "cert" in element:
        from_cert = thumbprint_from_pem(element["cert"])
    if from_hash and from_cert and not hmac.compare_digest(from_hash, from_cert):
        raise ValueError("Hash and Cert name different certificates")
    return from_cert or from_hash


def bound_x5t(claims: Mapping[str, Any]) -> str | None:
    """An access token's ``cnf["x5t#S256"]``, None if it has none."""
    confirmation = claims.get("cnf")
    if confirmation is None:
        return None
    if not isinstance(confirmation, dict):
        raise ClaimInvalid("cnf claim is not an object")
    thumbprint = confirmation.get(CNF_MEMBER)
    if thumbprint is None:
        return None
    if not isinstance(thumbprint, str) or len(thumbprint) != 43:
        raise ClaimInvalid("cnf x5t#S256 is not a SHA-256 certificate thumbprint")
    b64url_decode(thumbprint, "cnf x5t#S256", ClaimInvalid)
    return thumbprint


@dataclass(frozen=True, slots=True)
class CertificateBinding:
    source: Literal["peer", "xfcc"] = "peer"

    @classmethod
    def from_config(cls, config: MtlsConfig) -> CertificateBinding:
        return cls(source=config.certificate_source)

    def presented(self, *, peer_certificate: str = "", xfcc: Sequence[str] = ()) -> str | None:
        """The thumbprint of the client's certificate, None when there is none.

        ``peer_certificate``: ``attributes.source.certificate`` ("" without one);
        ``xfcc``: every ``x-forwarded-client-cert`` value. Only the configured
        source is read.
        """
        try:
            if self.source == "xfcc":
                return thumbprint_from_xfcc(xfcc)
            return thumbprint_from_pem(peer_certificate) if peer_certificate else None
        except ValueError as exc:
            raise MtlsCertificateMissing(f"client certificate ({self.source}): {exc}") from None

    def check(
        self, claims: Mapping[str, Any], *, peer_certificate: str = "", xfcc: Sequence[str] = ()
    ) -> str:
        """The certificate's thumbprint if it is the one the token is bound to;
        MtlsCertificateMissing or MtlsBindingMismatch otherwise."""
        expected = bound_x5t(claims)
        if expected is None:
            raise MtlsBindingMismatch("token is not certificate-bound (no cnf x5t#S256)")
        presented = self.presented(peer_certificate=peer_certificate, xfcc=xfcc)
        if presented is None:
            raise MtlsCertificateMissing(f"no client certificate ({self.source})")
        if not hmac.compare_digest(presented.encode("ascii"), expected.encode("ascii")):
            raise MtlsBindingMismatch("client certificate is not the one the token is bound to")
        return presented


def _xfcc_elements(value: str) -> list[dict[str, str]]:
    """``k=v;k="v";...,k=v`` into one dict per element (keys lower-case).

    Values holding , ; = are double-quoted, a quote inside written ``\\"``.
    """
    elements: list[dict[str, str]] = []
    pairs: dict[str, str] = {}
    index, size = 0, len(value)
    while True:
        equals = value.find("=", index)
        if equals < 0:
            raise ValueError("an element pair has no '='")
        key = value[index:equals].strip().lower()
        if not key or any(c in key for c in ',;"'):
            raise ValueError("an element key is empty or malformed")
        index = equals + 1
        if index < size and value[index] == '"':
            text, index = _quoted(value, index + 1)
        else:
            end = index
            while end < size and value[end] not in ",;":
                end += 1
            text, index = value[index:end], end
            if '"' in text or "=" in text:
                raise ValueError("an unquoted value holds '\"' or '='")
        if key in pairs:
            raise ValueError(f"key {key!r} appears twice in one element")
        pairs[key] = text
        if index >= size:
            elements.append(pairs)
            return elements
        if value[index] == ",":
            elements.append(pairs)
            pairs = {}
        elif value[index] != ";":
            raise ValueError("a quoted value is followed by text")
        index += 1


def _quoted(value: str, index: int) -> tuple[str, int]:
    """The quoted string that starts after the quote at ``index - 1``, and where it ends."""
    out: list[str] = []
    size = len(value)
    while index < size:
        character = value[index]
        if character == "\\" and index + 1 < size:
            out.append(value[index + 1])
            index += 2
        elif character == '"':
            return "".join(out), index + 1
        else:
            out.append(character)
            index += 1
    raise ValueError("a quoted value is not closed")
