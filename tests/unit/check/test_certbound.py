"""certbound.py: a certificate-bound token (RFC 8705 §3) is accepted with its certificate only."""

from __future__ import annotations

import base64
import datetime
import hashlib
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from authz.check.certbound import (
    CertificateBinding,
    bound_x5t,
    certificate_thumbprint,
    thumbprint_from_pem,
    thumbprint_from_xfcc,
)
from authz.config.sender import MtlsConfig
from authz.errors import (
    ClaimInvalid,
    InvalidToken,
    MtlsBindingMismatch,
    MtlsCertificateMissing,
)


def _certificate(name: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def client_cert() -> x509.Certificate:
    return _certificate("client")


@pytest.fixture(scope="module")
def other_cert() -> x509.Certificate:
    return _certificate("someone else")


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def envoy_pem(cert: x509.Certificate) -> str:
    """As Envoy sends attributes.source.certificate and XFCC's Cert: URL-encoded PEM."""
    return quote(pem(cert), safe="")


def thumbprint(cert: x509.Certificate) -> str:
    digest = hashlib.sha256(der(cert)).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def bound_to(cert: x509.Certificate) -> dict[str, Any]:
    return {"sub": "alice", "cnf": {"x5t#S256": thumbprint(cert)}}


# --- the thumbprint --------------------------------------------------------------------------


def test_the_thumbprint_is_sha256_of_the_der_base64url(client_cert: x509.Certificate) -> None:
    value = certificate_thumbprint(der(client_cert))
    assert value == thumbprint(client_cert)
    assert len(value) == 43
    assert "=" not in value


def test_from_envoys_url_encoded_pem(client_cert: x509.Certificate) -> None:
    assert thumbprint_from_pem(envoy_pem(client_cert)) == thumbprint(client_cert)
    # Partly encoded (spaces and newlines only), or not at all: the same certificate.
    partly = pem(client_cert).replace(" ", "%20").replace("\n", "%0A")
    assert thumbprint_from_pem(partly) == thumbprint(client_cert)
    assert thumbprint_from_pem(pem(client_cert)) == thumbprint(client_cert)
    assert thumbprint_from_pem(pem(client_cert).replace("\n", "\r\n")) == thumbprint(client_cert)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not a certificate",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",  # base64, not DER
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        "%ZZ",
        "%C3%28",  # not UTF-8
    ],
)
def test_what_is_not_one_certificate(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each its own message
        thumbprint_from_pem(text)


def test_a_chain_is_not_one_certificate(
    client_cert: x509.Certificate, other_cert: x509.Certificate
) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        thumbprint_from_pem(quote(pem(client_cert) + pem(other_cert), safe=""))
    with pytest.raises(ValueError, match="too large"):
        thumbprint_from_pem("A" * 70_000)


# --- x-forwarded-client-cert -----------------------------------------------------------------


def test_xfcc_hash(client_cert: x509.Certificate) -> None:
    hex_digest = hashlib.sha256(der(client_cert)).hexdigest()
    value = (
        f'By=spiffe://cluster.local/ns/edge/sa/gw;Hash={hex_digest};Subject="CN=client,O=Acme";'
        "URI=spiffe://cluster.local/ns/app/sa/client"
    )
    assert thumbprint_from_xfcc([value]) == thumbprint(client_cert)
    assert thumbprint_from_xfcc([value.replace(hex_digest, hex_digest.upper())]) == thumbprint(
        client_cert
    )


def test_xfcc_cert_and_both(client_cert: x509.Certificate, other_cert: x509.Certificate) -> None:
    hex_digest = hashlib.sha256(der(client_cert)).hexdigest()
    cert = envoy_pem(client_cert)
    assert thumbprint_from_xfcc([f'Cert="{cert}"']) == thumbprint(client_cert)
    assert thumbprint_from_xfcc([f"Hash={hex_digest};Cert={cert}"]) == thumbprint(client_cert)
    with pytest.raises(ValueError, match="different certificates"):
        thumbprint_from_xfcc([f'Hash={hex_digest};Cert="{envoy_pem(other_cert)}"'])


def test_xfcc_quoted_values_hold_separators(client_cert: x509.Certificate) -> None:
    hex_digest = hashlib.sha256(der(client_cert)).hexdigest()
    value = f'Subject="CN=a;b,c=\\"d\\"";hash={hex_digest};DNS=x.example'
    assert thumbprint_from_xfcc([value]) == thumbprint(client_cert)


def test_xfcc_without_a_certificate() -> None:
    assert thumbprint_from_xfcc([]) is None
    assert thumbprint_from_xfcc([""]) is None
    assert thumbprint_from_xfcc(['By=spiffe://x;Subject="CN=a"']) is None


@pytest.mark.parametrize(
    "value",
    [
        f"Hash={'a' * 64},Hash={'b' * 64}",  # two hops: which one is trusted is a guess
        f"Hash={'a' * 63}",
        f"Hash={'g' * 64}",
        "Hash=",
        'Subject="unterminated',
        "Subject",
        f"Hash={'a' * 64};Hash={'a' * 64}",
        'Subject="a"x',
        "By=a=b",
        "=x",
        f"Hash={'a' * 64};",
    ],
)
def test_malformed_xfcc(value: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each its own message
        thumbprint_from_xfcc([value])


def test_several_xfcc_fields_are_several_elements() -> None:
    with pytest.raises(ValueError, match="2 elements"):
        thumbprint_from_xfcc([f"Hash={'a' * 64}", f"Hash={'b' * 64}"])


# --- the binding -----------------------------------------------------------------------------


def test_the_bound_certificate_is_accepted(client_cert: x509.Certificate) -> None:
    binding = CertificateBinding()
    accepted = binding.check(bound_to(client_cert), peer_certificate=envoy_pem(client_cert))
    assert accepted == thumbprint(client_cert)


def test_another_certificate_is_a_mismatch(
    client_cert: x509.Certificate, other_cert: x509.Certificate
) -> None:
    with pytest.raises(MtlsBindingMismatch) as info:
        CertificateBinding().check(bound_to(client_cert), peer_certificate=envoy_pem(other_cert))
    error = info.value
    assert (error.status, error.rfc6750_error, error.reason) == (
        401,
        "invalid_token",
        "mtls_binding_mismatch",
    )
    assert isinstance(error, InvalidToken)
    assert "BEGIN" not in error.detail


def test_no_certificate_is_missing(client_cert: x509.Certificate) -> None:
    with pytest.raises(MtlsCertificateMissing) as info:
        CertificateBinding().check(bound_to(client_cert))
    assert info.value.reason == "mtls_certificate_missing"
    assert info.value.status == 401


def test_an_unparseable_certificate_is_missing(client_cert: x509.Certificate) -> None:
    with pytest.raises(MtlsCertificateMissing, match="peer"):
        CertificateBinding().check(bound_to(client_cert), peer_certificate="garbage")


def test_an_unbound_token_is_a_mismatch(client_cert: x509.Certificate) -> None:
    with pytest.raises(MtlsBindingMismatch, match="not certificate-bound"):
        CertificateBinding().check({"sub": "alice"}, peer_certificate=envoy_pem(client_cert))
    with pytest.raises(MtlsBindingMismatch):
        CertificateBinding().check(
            {"cnf": {"jkt": "x" * 43}}, peer_certificate=envoy_pem(client_cert)
        )


def test_only_the_configured_source_is_read(client_cert: x509.Certificate) -> None:
    claims = bound_to(client_cert)
    forwarded = [f'Cert="{envoy_pem(client_cert)}"']
    # peer: an XFCC header (which a client could send) proves nothing.
    with pytest.raises(MtlsCertificateMissing):
        CertificateBinding("peer").check(claims, xfcc=forwarded)
    # xfcc: the peer is the proxy in front, not the client.
    with pytest.raises(MtlsCertificateMissing):
        CertificateBinding("xfcc").check(claims, peer_certificate=envoy_pem(client_cert))
    assert CertificateBinding("xfcc").check(claims, xfcc=forwarded) == thumbprint(client_cert)
    with pytest.raises(MtlsCertificateMissing, match="xfcc"):
        CertificateBinding("xfcc").check(claims, xfcc=[*forwarded, *forwarded])


def test_from_config() -> None:
    assert CertificateBinding.from_config(MtlsConfig()).source == "peer"
    xfcc = MtlsConfig(certificate_source="xfcc")
    assert CertificateBinding.from_config(xfcc).source == "xfcc"


def test_bound_x5t(client_cert: x509.Certificate) -> None:
    assert bound_x5t({}) is None
    assert bound_x5t({"cnf": {"jkt": "x"}}) is None
    assert bound_x5t(bound_to(client_cert)) == thumbprint(client_cert)
    malformed: list[dict[str, Any]] = [
        {"cnf": []},
        {"cnf": {"x5t#S256": 1}},
        {"cnf": {"x5t#S256": "short"}},
        {"cnf": {"x5t#S256": "+" * 43}},
    ]
    for claims in malformed:
        with pytest.raises(ClaimInvalid):
            bound_x5t(claims)
