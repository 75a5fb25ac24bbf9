"""DPoP proofs (RFC 9449 §4.3): each check accepts a good proof and refuses its own failure."""

from __future__ import annotations

import base64
import json
import string
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from authz.check.dpop import (
    DpopProof,
    DpopVerifier,
    access_token_hash,
    bound_jkt,
    www_authenticate_dpop,
)
from authz.check.nonce import NonceIssuer
from authz.check.replay import MemoryReplayStore
from authz.dev.dpop_client import Signer, b64, jws, proof
from authz.errors import (
    AuthzError,
    ClaimInvalid,
    DpopAlgorithmNotAllowed,
    DpopBindingMismatch,
    DpopKeyInvalid,
    DpopMethodMismatch,
    DpopNonceRequired,
    DpopProofMissing,
    DpopProofRepeated,
    DpopReplayed,
    DpopSignatureInvalid,
    DpopStale,
    DpopTokenHashMismatch,
    DpopUriMismatch,
    InternalError,
    InvalidDpopProof,
    ReplayStoreUnavailable,
)
from authz.forms.htu import request_uri
from tests.support.clock import FakeClock

NOW = 1_800_000_000.0
URI = "https://api.example.com/orders"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
NONCE_KEY = b"n" * 32


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def verifier(clock: FakeClock) -> DpopVerifier:
    return DpopVerifier(replay=MemoryReplayStore(1000, clock), clock=clock)


@pytest.fixture
def es256(ec256_key: ec.EllipticCurvePrivateKey) -> Signer:
    return Signer(ec256_key, "ES256")


@pytest.fixture
def signers(
    ec256_key: ec.EllipticCurvePrivateKey,
    ec384_key: ec.EllipticCurvePrivateKey,
    rsa_key: rsa.RSAPrivateKey,
    ed25519_key: ed25519.Ed25519PrivateKey,
) -> dict[str, Signer]:
    return {
        "ES256": Signer(ec256_key, "ES256"),
        "ES384": Signer(ec384_key, "ES384"),
        "RS256": Signer(rsa_key, "RS256"),
        "PS256": Signer(rsa_key, "PS256"),
        "EdDSA": Signer(ed25519_key, "EdDSA"),
    }


def check(verifier: DpopVerifier, value: str | list[str], **request: Any) -> DpopProof:
    values = [value] if isinstance(value, str) else value
    request.setdefault("method", "GET")
    request.setdefault("uri", URI)
    return verifier.verify(values, **request)


def refused(
    verifier: DpopVerifier, value: str | list[str], cls: type[AuthzError], **request: Any
) -> AuthzError:
    with pytest.raises(AuthzError) as info:
        check(verifier, value, **request)
    error = info.value
    assert type(error) is cls, (type(error).__name__, error.detail)
    # The detail names the check; it never carries the proof's bytes.
    for value_part in [value] if isinstance(value, str) else value:
        for part in value_part.split("."):
            assert len(part) < 8 or part not in error.detail
    return error


# --- a valid proof, with every algorithm of the default allow-list -------------------------


@pytest.mark.parametrize("alg", ["ES256", "ES384", "RS256", "PS256", "EdDSA"])
def test_a_valid_proof_is_accepted(
    verifier: DpopVerifier, signers: dict[str, Signer], alg: str
) -> None:
    signer = signers[alg]
    result = check(verifier, proof(signer, iat=NOW, jti="j-1"))
    assert result == DpopProof(thumbprint=signer.thumbprint(), jti="j-1", algorithm=alg)


def test_es512_when_configured(clock: FakeClock) -> None:
    signer = Signer(ec.generate_private_key(ec.SECP521R1()), "ES512")
    default = DpopVerifier(replay=MemoryReplayStore(10, clock), clock=clock)
    refused(default, proof(signer, iat=NOW), DpopAlgorithmNotAllowed)
    configured = DpopVerifier(
        replay=MemoryReplayStore(10, clock), clock=clock, algorithms=["ES512"]
    )
    assert check(configured, proof(signer, iat=NOW)).thumbprint == signer.thumbprint()


def test_a_bound_proof_with_its_token(verifier: DpopVerifier, es256: Signer) -> None:
    value = proof(es256, iat=NOW, access_token=TOKEN)
    result = check(verifier, value, access_token=TOKEN, expected_jkt=es256.thumbprint())
    assert result.thumbprint == es256.thumbprint()


# --- 1. exactly one DPoP header value -------------------------------------------------------


def test_no_header_is_missing(verifier: DpopVerifier) -> None:
    refused(verifier, [], DpopProofMissing)


def test_two_header_values_are_refused(verifier: DpopVerifier, es256: Signer) -> None:
    first, second = proof(es256, iat=NOW), proof(es256, iat=NOW)
    refused(verifier, [first, second], DpopProofRepeated)
    # Envoy joins repeated header fields with a comma.
    refused(verifier, f"{first},{second}", DpopProofRepeated)
    refused(verifier, [first, first], DpopProofRepeated)


# --- 2. one well-formed JWS ------------------------------------------------------------------


def test_a_proof_over_the_size_limit(clock: FakeClock, es256: Signer) -> None:
    small = DpopVerifier(replay=MemoryReplayStore(10, clock), clock=clock, max_proof_bytes=600)
    value = proof(es256, iat=NOW, claims={"pad": "x" * 600})
    assert "limit" in refused(small, value, InvalidDpopProof).detail


@pytest.mark.parametrize(
    "value",
    ["", "abc", "a.b", "a.b.c.d", "a.b.c.d.e", "....", "eyJ9.eyJ9.", " . . "],
)
def test_not_a_compact_jws(verifier: DpopVerifier, value: str) -> None:
    refused(verifier, value, InvalidDpopProof)


def test_padded_or_non_canonical_base64url_is_refused(
    verifier: DpopVerifier, es256: Signer
) -> None:
    header, payload, signature = proof(es256, iat=NOW).split(".")
    refused(verifier, f"{header}=.{payload}.{signature}", InvalidDpopProof)
    refused(verifier, f"{header}.{payload}.{signature}==", InvalidDpopProof)
    refused(verifier, f"{header}.+{payload[1:]}.{signature}", InvalidDpopProof)
    # A last character whose unused low bits are not zero: the same bytes, spelt twice.
    assert len(signature) % 4 in (2, 3)
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    spelt = signature[:-1] + alphabet[alphabet.index(signature[-1]) + 1]
    assert base64.urlsafe_b64decode(spelt + "==") == base64.urlsafe_b64decode(signature + "==")
    refused(verifier, f"{header}.{payload}.{spelt}", InvalidDpopProof)


@pytest.mark.parametrize("where", ["header", "payload"])
def test_duplicate_json_members_are_refused(
    verifier: DpopVerifier, es256: Signer, where: str
) -> None:
    jwk = json.dumps(es256.public_jwk())
    header = f'{{"typ":"dpop+jwt","alg":"ES256","jwk":{jwk}}}'
    payload = f'{{"jti":"a","htm":"GET","htu":"{URI}","iat":{NOW}}}'
    if where == "header":
        header = header[:-1] + ',"alg":"none"}'
    else:
        payload = payload[:-1] + ',"htm":"POST"}'
    error = refused(verifier, jws(header, payload, es256), InvalidDpopProof)
    assert "duplicate member" in error.detail


@pytest.mark.parametrize(
    "payload",
    [b"[1]", b"not json", b'"string"', b"\xff\xfe{}", b'{"iat": NaN}', b'{"a": "\\ud800"}'],
)
def test_a_payload_that_is_not_a_strict_json_object(
    verifier: DpopVerifier, es256: Signer, payload: bytes
) -> None:
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": es256.public_jwk()}
    refused(verifier, jws(header, payload, es256), InvalidDpopProof)


def test_deeply_nested_json_is_refused(verifier: DpopVerifier, es256: Signer) -> None:
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": es256.public_jwk()}
    nested = "[" * 3000 + "]" * 3000
    big = DpopVerifier(replay=MemoryReplayStore(10), max_proof_bytes=65536)
    refused(big, jws(header, '{"a":' + nested + "}", es256), InvalidDpopProof)
    del verifier


# --- 3. required parameters and claims, typed ------------------------------------------------


@pytest.mark.parametrize("name", ["typ", "alg", "jwk", "jti", "htm", "htu", "iat"])
def test_each_required_member_must_be_present(
    verifier: DpopVerifier, es256: Signer, name: str
) -> None:
    refused(verifier, proof(es256, iat=NOW, drop=(name,)), InvalidDpopProof)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("jti", 7),
        ("jti", ""),
        ("jti", "x" * 257),
        ("jti", ["a"]),
        ("htm", None),
        ("htu", {"u": 1}),
        ("iat", "1800000000"),
        ("iat", True),
        ("iat", None),
        ("iat", [NOW]),
    ],
)
def test_claims_of_the_wrong_type(
    verifier: DpopVerifier, es256: Signer, name: str, value: Any
) -> None:
    refused(verifier, proof(es256, iat=NOW, claims={name: value}), InvalidDpopProof)


def test_jti_up_to_the_bound_is_accepted(verifier: DpopVerifier, es256: Signer) -> None:
    assert check(verifier, proof(es256, iat=NOW, jti="x" * 256)).jti == "x" * 256


@pytest.mark.parametrize("name", ["crit", "jku", "x5u", "x5c", "x5t", "x5t#S256", "b64", "zip"])
def test_header_parameters_that_are_refused(
    verifier: DpopVerifier, es256: Signer, name: str
) -> None:
    value = proof(es256, iat=NOW, header={name: ["x"] if name in ("crit", "x5c") else "x"})
    assert name in refused(verifier, value, InvalidDpopProof).detail


def test_a_kid_next_to_the_jwk_is_harmless(verifier: DpopVerifier, es256: Signer) -> None:
    check(verifier, proof(es256, iat=NOW, header={"kid": "k1"}))


# --- 4. typ ----------------------------------------------------------------------------------


@pytest.mark.parametrize("typ", ["JWT", "jwt", "DPoP+JWT", "dpop+jwt ", "application/dpop+jwt", 1])
def test_typ_must_be_exactly_dpop_jwt(verifier: DpopVerifier, es256: Signer, typ: object) -> None:
    refused(verifier, proof(es256, iat=NOW, header={"typ": typ}), InvalidDpopProof)


# --- 5. alg ----------------------------------------------------------------------------------


def test_alg_none_is_refused(verifier: DpopVerifier, es256: Signer) -> None:
    header = {"typ": "dpop+jwt", "alg": "none", "jwk": es256.public_jwk()}
    payload = {"jti": "a", "htm": "GET", "htu": URI, "iat": NOW}
    refused(verifier, jws(header, payload, None) + "AA", DpopAlgorithmNotAllowed)


def test_hs256_is_refused_even_keyed_with_the_public_key(
    verifier: DpopVerifier, es256: Signer
) -> None:
    import hashlib
    import hmac

    jwk = es256.public_jwk()
    header = b64(json.dumps({"typ": "dpop+jwt", "alg": "HS256", "jwk": jwk}).encode())
    payload = b64(json.dumps({"jti": "a", "htm": "GET", "htu": URI, "iat": NOW}).encode())
    mac = hmac.new(json.dumps(jwk).encode(), f"{header}.{payload}".encode(), hashlib.sha256)
    refused(verifier, f"{header}.{payload}.{b64(mac.digest())}", DpopAlgorithmNotAllowed)


@pytest.mark.parametrize("algorithms", [["HS256"], ["none"], ["ES256", "HS512"], [], ["es256"]])
def test_the_allow_list_admits_asymmetric_algorithms_only(algorithms: list[str]) -> None:
    with pytest.raises(ValueError, match="asymmetric"):
        DpopVerifier(replay=MemoryReplayStore(1), algorithms=algorithms)


def test_an_algorithm_outside_the_configured_list(clock: FakeClock, es256: Signer) -> None:
    rsa_only = DpopVerifier(replay=MemoryReplayStore(10), clock=clock, algorithms=["PS256"])
    refused(rsa_only, proof(es256, iat=NOW), DpopAlgorithmNotAllowed)
    assert rsa_only.algorithms == ("PS256",)


# --- 6.-7. the jwk: public, of the alg's type; the signature by it ---------------------------


@pytest.mark.parametrize("alg", ["ES256", "RS256", "EdDSA"])
def test_a_jwk_with_private_members_is_refused(
    verifier: DpopVerifier, signers: dict[str, Signer], alg: str
) -> None:
    signer = signers[alg]
    value = proof(signer, iat=NOW, header={"jwk": signer.private_jwk()})
    assert "private" in refused(verifier, value, DpopKeyInvalid).detail


@pytest.mark.parametrize("member", ["d", "p", "q", "dp", "dq", "qi", "oth", "k"])
def test_each_private_member_alone_is_refused(
    verifier: DpopVerifier, es256: Signer, member: str
) -> None:
    jwk = {**es256.public_jwk(), member: "AQAB"}
    refused(verifier, proof(es256, iat=NOW, header={"jwk": jwk}), DpopKeyInvalid)


def test_a_symmetric_jwk_is_refused(verifier: DpopVerifier, es256: Signer) -> None:
    jwk = {"kty": "oct", "k": b64(b"s" * 32)}
    refused(verifier, proof(es256, iat=NOW, header={"jwk": jwk}), DpopKeyInvalid)


def test_a_key_of_another_type_than_alg(verifier: DpopVerifier, signers: dict[str, Signer]) -> None:
    # An RSA key's JWK under alg ES256; an ES384 key under ES256; Ed25519 under RS256.
    for alg, key_alg in [("ES256", "RS256"), ("ES256", "ES384"), ("RS256", "EdDSA")]:
        value = proof(signers[alg], iat=NOW, jwk_signer=signers[key_alg])
        refused(verifier, value, DpopKeyInvalid)


@pytest.mark.parametrize(
    "change",
    [
        {"x": b64(b"\x01" * 32)},  # not on the curve
        {"x": b64(b"\x01" * 31)},  # too short
        {"crv": "P-384"},
        {"kty": "RSA"},
        {"alg": "ES384"},
        {"use": "enc"},
        {"y": 5},
        {"x": "AA=="},
        "not an object",
    ],
)
def test_a_malformed_ec_jwk(verifier: DpopVerifier, es256: Signer, change: Any) -> None:
    jwk = change if isinstance(change, str) else {**es256.public_jwk(), **change}
    refused(verifier, proof(es256, iat=NOW, header={"jwk": jwk}), DpopKeyInvalid)


def test_rsa_jwk_rules(verifier: DpopVerifier, signers: dict[str, Signer]) -> None:
    signer = signers["RS256"]
    jwk = signer.public_jwk()
    n = jwk["n"]
    padded = b64(b"\x00" + base64.urlsafe_b64decode(n + "=" * (-len(n) % 4)))
    for bad in [{"n": padded}, {"e": b64(b"\x00\x01\x00\x01")}, {"e": b64(b"\x01" * 5)}]:
        value = proof(signer, iat=NOW, header={"jwk": {**jwk, **bad}})
        refused(verifier, value, DpopKeyInvalid)


def test_a_weak_rsa_key_is_refused(verifier: DpopVerifier, rsa_1024_key: rsa.RSAPrivateKey) -> None:
    signer = Signer(rsa_1024_key, "RS256")
    assert "bits" in refused(verifier, proof(signer, iat=NOW), DpopKeyInvalid).detail


def test_the_signature_is_checked_with_the_jwk(verifier: DpopVerifier, es256: Signer) -> None:
    other = Signer(ec.generate_private_key(ec.SECP256R1()), "ES256")
    refused(verifier, proof(es256, iat=NOW, jwk_signer=other), DpopSignatureInvalid)


def test_a_tampered_payload_fails_the_signature(verifier: DpopVerifier, es256: Signer) -> None:
    header, _, signature = proof(es256, iat=NOW, htm="POST").split(".")
    forged = b64(json.dumps({"jti": "a", "htm": "GET", "htu": URI, "iat": NOW}).encode())
    refused(verifier, f"{header}.{forged}.{signature}", DpopSignatureInvalid)


@pytest.mark.parametrize("alg", ["ES256", "RS256", "PS256", "EdDSA"])
def test_a_wrong_signature_length_is_a_signature_failure(
    verifier: DpopVerifier, signers: dict[str, Signer], alg: str
) -> None:
    header, payload, signature = proof(signers[alg], iat=NOW).split(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    for wrong in (raw[:-1], raw + b"\x00", raw[: len(raw) // 2]):
        refused(verifier, f"{header}.{payload}.{b64(wrong)}", DpopSignatureInvalid)


# --- 8.-9. htm and htu -----------------------------------------------------------------------


@pytest.mark.parametrize("htm", ["POST", "get", "GET ", "HEAD"])
def test_htm_must_be_the_request_method(verifier: DpopVerifier, es256: Signer, htm: str) -> None:
    refused(verifier, proof(es256, iat=NOW, htm=htm), DpopMethodMismatch)


@pytest.mark.parametrize(
    "htu",
    [
        "https://api.example.com/orders/1",
        "https://api.example.com/Orders",
        "http://api.example.com/orders",
        "https://api.example.com:8443/orders",
        "https://evil.example.com/orders",
        "https://user@api.example.com/orders",
        "https://api.example.com/orders%2F",
        "/orders",
        "https://api.example.com/%zz",
    ],
)
def test_htu_must_be_the_request_uri(verifier: DpopVerifier, es256: Signer, htu: str) -> None:
    refused(verifier, proof(es256, iat=NOW, htu=htu), DpopUriMismatch)


@pytest.mark.parametrize(
    "htu",
    [
        "https://api.example.com/orders?page=2",
        "https://api.example.com/orders#top",
        "HTTPS://API.Example.COM:443/orders",
        "https://api.example.com/a/../orders",
        "https://api.example.com/./orders",
        "https://api.example.com/%6Frders",
    ],
)
def test_htu_equal_after_normalization(verifier: DpopVerifier, es256: Signer, htu: str) -> None:
    check(verifier, proof(es256, iat=NOW, htu=htu), uri=URI + "?q=1")


def test_a_request_uri_without_normal_form_refuses_every_proof(
    verifier: DpopVerifier, es256: Signer
) -> None:
    value = proof(es256, iat=NOW, htu="https://api.example.com/orders")
    refused(verifier, value, DpopUriMismatch, uri="https://api.example.com:99999/orders")


# --- 10. server nonces -----------------------------------------------------------------------


@pytest.fixture
def nonces() -> NonceIssuer:
    return NonceIssuer(NONCE_KEY, step_seconds=60)


@pytest.fixture
def nonce_verifier(clock: FakeClock, nonces: NonceIssuer) -> DpopVerifier:
    return DpopVerifier(replay=MemoryReplayStore(100, clock), clock=clock, nonces=nonces)


def test_without_a_nonce_the_client_is_challenged_with_one(
    nonce_verifier: DpopVerifier, es256: Signer, nonces: NonceIssuer
) -> None:
    error = refused(nonce_verifier, proof(es256, iat=NOW), DpopNonceRequired)
    assert isinstance(error, DpopNonceRequired)
    assert error.status == 401
    assert error.rfc6750_error == "use_dpop_nonce"
    assert nonces.valid(error.nonce, NOW)
    # The client retries with it, and is accepted.
    result = check(nonce_verifier, proof(es256, iat=NOW, nonce=error.nonce))
    assert result.next_nonce is None


def test_a_wrong_or_expired_nonce_is_challenged(
    nonce_verifier: DpopVerifier, es256: Signer, nonces: NonceIssuer, clock: FakeClock
) -> None:
    refused(nonce_verifier, proof(es256, iat=NOW, nonce="x" * 43), DpopNonceRequired)
    old = nonces.issue(NOW - 120)
    error = refused(nonce_verifier, proof(es256, iat=NOW, nonce=old), DpopNonceRequired)
    assert isinstance(error, DpopNonceRequired)
    assert error.nonce == nonces.issue(clock.now())


def test_last_steps_nonce_is_accepted_with_a_fresh_one(
    nonce_verifier: DpopVerifier, es256: Signer, nonces: NonceIssuer
) -> None:
    previous = nonces.issue(NOW - 60)
    result = check(nonce_verifier, proof(es256, iat=NOW, nonce=previous))
    assert result.next_nonce == nonces.issue(NOW)


@pytest.mark.parametrize("nonce", [5, ["n"], "n" * 257])
def test_a_nonce_of_the_wrong_type(
    nonce_verifier: DpopVerifier, es256: Signer, nonce: object
) -> None:
    refused(nonce_verifier, proof(es256, iat=NOW, claims={"nonce": nonce}), InvalidDpopProof)


def test_without_required_nonces_a_nonce_claim_is_ignored(
    verifier: DpopVerifier, es256: Signer
) -> None:
    assert check(verifier, proof(es256, iat=NOW, nonce="anything")).next_nonce is None


# --- 11. iat within the window ---------------------------------------------------------------


@pytest.mark.parametrize("offset", [-60, -30, 0, 5])
def test_iat_inside_the_window(verifier: DpopVerifier, es256: Signer, offset: float) -> None:
    check(verifier, proof(es256, iat=NOW + offset))


@pytest.mark.parametrize("offset", [-60.5, -3600, 5.5, 3600])
def test_iat_outside_the_window_is_stale(
    verifier: DpopVerifier, es256: Signer, offset: float
) -> None:
    refused(verifier, proof(es256, iat=NOW + offset), DpopStale)


def test_iat_far_out_of_range_is_stale(verifier: DpopVerifier, es256: Signer) -> None:
    for iat in (0, -1, 10**30, 1e308):
        refused(verifier, proof(es256, iat=iat), DpopStale)


def test_an_infinite_iat_is_stale(verifier: DpopVerifier, es256: Signer) -> None:
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": es256.public_jwk()}
    payload = f'{{"jti":"a","htm":"GET","htu":"{URI}","iat":1e999}}'
    refused(verifier, jws(header, payload, es256), DpopStale)


def test_the_window_is_configurable(clock: FakeClock, es256: Signer) -> None:
    narrow = DpopVerifier(
        replay=MemoryReplayStore(10), clock=clock, iat_max_age=10, iat_max_future=0
    )
    refused(narrow, proof(es256, iat=NOW - 11), DpopStale)
    refused(narrow, proof(es256, iat=NOW + 1), DpopStale)
    check(narrow, proof(es256, iat=NOW - 10))


# --- 12. ath and the key binding -------------------------------------------------------------


def test_with_a_token_ath_is_required(verifier: DpopVerifier, es256: Signer) -> None:
    refused(verifier, proof(es256, iat=NOW), InvalidDpopProof, access_token=TOKEN)


def test_ath_of_another_token_is_refused(verifier: DpopVerifier, es256: Signer) -> None:
    value = proof(es256, iat=NOW, access_token=TOKEN + "x")
    refused(verifier, value, DpopTokenHashMismatch, access_token=TOKEN)


def test_without_a_token_ath_is_not_checked(verifier: DpopVerifier, es256: Signer) -> None:
    check(verifier, proof(es256, iat=NOW, claims={"ath": "whatever"}))


def test_ath_matches_the_rfc_example() -> None:
    # RFC 9449 §7.1: the access token of its examples and that proof's ath.
    token = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
    assert access_token_hash(token) == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"


def test_the_key_must_be_the_tokens(verifier: DpopVerifier, es256: Signer) -> None:
    other = Signer(ec.generate_private_key(ec.SECP256R1()), "ES256")
    value = proof(es256, iat=NOW, access_token=TOKEN)
    refused(
        verifier,
        value,
        DpopBindingMismatch,
        access_token=TOKEN,
        expected_jkt=other.thumbprint(),
    )


def test_bound_jkt_reads_cnf(es256: Signer) -> None:
    assert bound_jkt({}) is None
    assert bound_jkt({"cnf": {"x5t#S256": "x"}}) is None
    assert bound_jkt({"cnf": {"jkt": es256.thumbprint()}}) == es256.thumbprint()
    malformed: list[dict[str, Any]] = [
        {"cnf": "x"},
        {"cnf": {"jkt": 5}},
        {"cnf": {"jkt": "short"}},
        {"cnf": {"jkt": "=" * 43}},
    ]
    for claims in malformed:
        with pytest.raises(ClaimInvalid):
            bound_jkt(claims)


# --- replay ----------------------------------------------------------------------------------


def test_a_proof_is_accepted_once(verifier: DpopVerifier, es256: Signer) -> None:
    value = proof(es256, iat=NOW)
    check(verifier, value)
    refused(verifier, value, DpopReplayed)


def test_a_jti_reused_in_a_new_proof_is_a_replay(verifier: DpopVerifier, es256: Signer) -> None:
    check(verifier, proof(es256, iat=NOW, jti="same"))
    refused(verifier, proof(es256, iat=NOW + 1, jti="same"), DpopReplayed)
    # The same jti for another URI is another proof.
    other = "https://api.example.com/invoices"
    check(verifier, proof(es256, iat=NOW, jti="same", htu=other), uri=other)


def test_a_refused_proof_does_not_use_up_its_jti(verifier: DpopVerifier, es256: Signer) -> None:
    value = proof(es256, iat=NOW, access_token=TOKEN)
    refused(verifier, value, DpopTokenHashMismatch, access_token=TOKEN + "x")
    check(verifier, value, access_token=TOKEN)


def test_the_replay_window_covers_the_iat_window(clock: FakeClock, es256: Signer) -> None:
    store = MemoryReplayStore(10, clock)
    verifier = DpopVerifier(replay=store, clock=clock)
    value = proof(es256, iat=NOW + 5)
    check(verifier, value)
    # Still acceptable by iat until NOW+65, so still remembered until then.
    clock.advance(64.9)
    refused(verifier, value, DpopReplayed)
    clock.advance(0.2)
    refused(verifier, value, DpopStale)


class BrokenStore:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def first_use(self, key: bytes, ttl: float) -> bool:
        raise self.error


def test_an_unavailable_replay_store_is_a_503(clock: FakeClock, es256: Signer) -> None:
    verifier = DpopVerifier(replay=BrokenStore(ReplayStoreUnavailable("down")), clock=clock)
    error = refused(verifier, proof(es256, iat=NOW), ReplayStoreUnavailable)
    assert error.status == 503


def test_anything_unforeseen_is_an_internal_error(clock: FakeClock, es256: Signer) -> None:
    verifier = DpopVerifier(replay=BrokenStore(RuntimeError("bug")), clock=clock)
    assert refused(verifier, proof(es256, iat=NOW), InternalError).status == 503


# --- the challenge, and the request's URI ----------------------------------------------------


def test_www_authenticate_dpop() -> None:
    assert www_authenticate_dpop(["ES256", "PS256"]) == 'DPoP algs="ES256 PS256"'
    assert www_authenticate_dpop(["ES256"], "invalid_dpop_proof", "Bad proof", realm="api") == (
        'DPoP realm="api", algs="ES256", error="invalid_dpop_proof", error_description="Bad proof"'
    )
    for bad in ['say "hi"', "back\\slash", "new\nline"]:
        with pytest.raises(ValueError, match="quoted"):
            www_authenticate_dpop(["ES256"], "invalid_dpop_proof", bad)


def test_the_verifiers_challenge_for_its_errors(verifier: DpopVerifier) -> None:
    assert verifier.challenge(DpopReplayed("x")) == (
        'DPoP algs="ES256 PS256 RS256 EdDSA ES384", error="invalid_dpop_proof", '
        'error_description="The DPoP proof is invalid"'
    )
    assert 'error="use_dpop_nonce"' in verifier.challenge(DpopNonceRequired("x", nonce="n"))
    assert verifier.challenge() == 'DPoP algs="ES256 PS256 RS256 EdDSA ES384"'


def test_request_uri() -> None:
    assert request_uri("https", "api.example.com", "/a?b") == "https://api.example.com/a?b"
    assert request_uri("http", "10.0.0.1:8080", "/a", "https://api.example.com") == (
        "https://api.example.com/a"
    )
    for path in ("*", "api.example.com:443", ""):
        with pytest.raises(DpopUriMismatch):
            request_uri("https", "api.example.com", path)
