"""verify.Verifier: strict parsing, pinned algorithms, exact claims, one exception boundary.

Tokens are made by hand (base64url + JSON + a real signature) so that each test
can break exactly one thing. Time comes from a fake clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from jwt.algorithms import get_default_algorithms

from authz.check.verify import MAX_TIMESTAMP, Verifier, fingerprint
from authz.config.loader import parse_config
from authz.config.models import Config
from authz.dev.keys import public_jwk
from authz.dev.tokens import claims_for, mint
from authz.errors import (
    AlgorithmNotAllowed,
    AudienceMismatch,
    AuthzError,
    ClaimInvalid,
    InternalError,
    InvalidToken,
    IssuedInFuture,
    KeysUnavailable,
    MissingClaim,
    SignatureInvalid,
    TokenExpired,
    TokenMalformed,
    TokenNotYetValid,
    TokenTooLarge,
    UnknownIssuer,
    UnknownKey,
)
from authz.keys.sources import IssuerKeys, KeySource
from tests.support.clock import FakeClock
from tests.support.doubles import StaticKeySource

ISS = "https://issuer.test"
HS_ISS = "https://hmac.test"
NOKID_ISS = "https://nokid.test"
TWO_ISS = "https://two.test"
AUD = "api"
T0 = 1_700_000_000
LEEWAY = 30
_ALGS = get_default_algorithms()


@dataclass(frozen=True)
class Env:
    config: Config
    keys: StaticKeySource
    rsa: RSAPrivateKey
    rsa_b: RSAPrivateKey
    ec: EllipticCurvePrivateKey
    ed: Ed25519PrivateKey
    secret: bytes
    rsa_pem: bytes


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _yaml_config(tmp: Path, text: str) -> Config:
    return parse_config(text, source="test.yaml", base_dir=tmp)


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory,
    rsa_key: rsa.RSAPrivateKey,
    rsa_key_b: rsa.RSAPrivateKey,
    hmac_secret: bytes,
) -> Env:
    # EC and Ed25519 keys are cheap: made here, so the fixture stays small.
    ec256_key = ec.generate_private_key(ec.SECP256R1())
    ed25519_key = ed25519.Ed25519PrivateKey.generate()
    tmp = tmp_path_factory.mktemp("verify")
    (tmp / "secret.key").write_bytes(hmac_secret + b"\n")
    (tmp / "rsa.pem").write_bytes(_pem(rsa_key))
    (tmp / "rsa_b.pem").write_bytes(_pem(rsa_key_b))
    rsa_jwk = public_jwk(rsa_key, "rsa", "RS256")
    del rsa_jwk["alg"]  # unrestricted: RS256 and PS256
    jwks = {
        "keys": [
            rsa_jwk,
            public_jwk(rsa_key_b, "rsa-rs", "RS256"),  # JWK alg narrows to RS256
            public_jwk(ec256_key, "ec", "ES256"),
            public_jwk(ed25519_key, "ed", "EdDSA"),
        ]
    }
    text = f"""\
issuers:
  - issuer: {ISS}
    audiences: [{AUD}, "https://svc.example/api"]
    algorithms: [RS256, PS256, ES256, EdDSA]
    leeway_seconds: {LEEWAY}
    keys:
      - jwks: {json.dumps(jwks)}
  - issuer: {HS_ISS}
    audiences: [{AUD}]
    algorithms: [HS256, RS256]
    keys:
      - secret_file: secret.key
        kid: hs
      - pem_file: rsa.pem
        kid: rsa
  - issuer: {NOKID_ISS}
    audiences: [{AUD}]
    algorithms: [RS256]
    keys:
      - pem_file: rsa.pem
  - issuer: {TWO_ISS}
    audiences: [{AUD}]
    algorithms: [RS256]
    keys:
      - pem_file: rsa.pem
      - pem_file: rsa_b.pem
"""
    config = _yaml_config(tmp, text)
    return Env(
        config=config,
        keys=StaticKeySource.from_config(config),
        rsa=rsa_key,
        rsa_b=rsa_key_b,
        ec=ec256_key,
        ed=ed25519_key,
        secret=hmac_secret,
        rsa_pem=_pem(rsa_key),
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def verifier(env: Env, clock: FakeClock) -> Verifier:
    return Verifier(env.config, env.keys, clock)


# --- token crafting ------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def as_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def claims(drop: tuple[str, ...] = (), **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISS,
        "sub": "alice",
        "aud": AUD,
        "iat": T0,
        "exp": T0 + 300,
        "scope": "orders:read",
    }
    base.update(changes)
    for name in drop:
        base.pop(name, None)
    return base


def craft(
    header: Mapping[str, Any] | bytes,
    payload: Mapping[str, Any] | bytes,
    key: Any = None,
    alg: str | None = None,
) -> str:
    """A compact JWS from raw parts; signed with ``key`` under ``alg`` (or header alg)."""
    header_bytes = header if isinstance(header, bytes) else as_json(header)
    payload_bytes = payload if isinstance(payload, bytes) else as_json(payload)
    signing_input = f"{b64(header_bytes)}.{b64(payload_bytes)}"
    if key is None:
        signature = b"\x01" * 64
    else:
        algorithm = alg or (header["alg"] if isinstance(header, Mapping) else "RS256")
        signature = _ALGS[algorithm].sign(signing_input.encode(), key)
    return f"{signing_input}.{b64(signature)}"


def rs256(env: Env, payload: Mapping[str, Any] | bytes, kid: str | None = "rsa") -> str:
    header: dict[str, Any] = {"alg": "RS256", "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    return craft(header, payload, env.rsa)


def rejected(verifier: Verifier, token: str) -> AuthzError:
    with pytest.raises(AuthzError) as info:
        verifier.verify(token)
    return info.value


def assert_rejected(verifier: Verifier, token: str, cls: type[AuthzError]) -> AuthzError:
    error = rejected(verifier, token)
    assert type(error) is cls, f"{type(error).__name__}: {error.detail}"
    return error


# --- valid tokens ----------------------------------------------------------------


def test_valid_rs256(env: Env, verifier: Verifier) -> None:
    token = rs256(env, claims())
    result = verifier.verify(token)
    assert result.issuer == ISS
    assert result.subject == "alice"
    assert result.kid == "rsa"
    assert result.algorithm == "RS256"
    assert result.claims["scope"] == "orders:read"
    assert result.claims["aud"] == AUD


@pytest.mark.parametrize(
    ("alg", "kid", "attr"),
    [
        ("PS256", "rsa", "rsa"),
        ("ES256", "ec", "ec"),
        ("EdDSA", "ed", "ed"),
        ("RS256", "rsa-rs", ""),
    ],
)
def test_valid_other_algorithms(
    env: Env, verifier: Verifier, alg: str, kid: str, attr: str
) -> None:
    key = getattr(env, attr) if attr else env.rsa_b
    token = craft({"alg": alg, "kid": kid}, claims(), key)
    result = verifier.verify(token)
    assert result.algorithm == alg
    assert result.kid == kid


def test_valid_hs256(env: Env, verifier: Verifier) -> None:
    token = craft({"alg": "HS256", "kid": "hs"}, claims(iss=HS_ISS), env.secret)
    result = verifier.verify(token)
    assert result.issuer == HS_ISS
    assert result.algorithm == "HS256"


def test_token_minted_by_pyjwt_verifies(env: Env, verifier: Verifier) -> None:
    token = mint(env.ec, "ES256", claims_for("bob", ISS, [AUD], now=T0, scopes="a b"), kid="ec")
    result = verifier.verify(token)
    assert result.subject == "bob"
    assert result.claims["scope"] == "a b"


def test_no_kid_with_exactly_one_key(env: Env, verifier: Verifier) -> None:
    result = verifier.verify(rs256(env, claims(iss=NOKID_ISS), kid=None))
    assert result.issuer == NOKID_ISS
    assert result.kid is None


def test_no_kid_picks_the_one_key_for_the_algorithm(env: Env, verifier: Verifier) -> None:
    # The HMAC issuer has a secret and an RSA key; only one can do HS256.
    token = craft({"alg": "HS256"}, claims(iss=HS_ISS), env.secret)
    assert verifier.verify(token).algorithm == "HS256"


def test_no_kid_with_two_keys_is_unknown_key(env: Env, verifier: Verifier) -> None:
    error = assert_rejected(verifier, rs256(env, claims(iss=TWO_ISS), kid=None), UnknownKey)
    assert error.reason == "unknown_key"
    assert "2 keys could verify it" in error.detail


def test_subject_is_optional(env: Env, verifier: Verifier) -> None:
    assert verifier.verify(rs256(env, claims(drop=("sub",)))).subject is None


def test_subject_must_be_a_string(env: Env, verifier: Verifier) -> None:
    assert_rejected(verifier, rs256(env, claims(sub=42)), ClaimInvalid)


@pytest.mark.parametrize("jti", [123, 1.5, True, {"a": 1}, ["id-1"]])
def test_jti_must_be_a_string(env: Env, verifier: Verifier, jti: object) -> None:
    # RFC 7519 §4.1.7; a number would never match the revocation list's "jti:123".
    error = assert_rejected(verifier, rs256(env, claims(jti=jti)), ClaimInvalid)
    assert error.reason == "claim_invalid"
    assert error.detail == "jti claim is not a string"


@pytest.mark.parametrize("jti", ["id-1", "123", ""])
def test_a_string_jti_is_accepted(env: Env, verifier: Verifier, jti: str) -> None:
    assert verifier.verify(rs256(env, claims(jti=jti))).claims["jti"] == jti


def test_jti_is_optional(env: Env, verifier: Verifier) -> None:
    assert "jti" not in verifier.verify(rs256(env, claims())).claims
    assert verifier.verify(rs256(env, claims(jti=None))).claims["jti"] is None


# --- time claims ---------------------------------------------------------------


def test_expired(env: Env, verifier: Verifier, clock: FakeClock) -> None:
    clock.value = T0 + 300 + LEEWAY + 100
    error = assert_rejected(verifier, rs256(env, claims()), TokenExpired)
    assert error.reason == "token_expired"
    assert error.status == 401


def test_expiry_leeway_boundary(env: Env, verifier: Verifier, clock: FakeClock) -> None:
    token = rs256(env, claims(exp=T0 + 300))
    clock.value = T0 + 300 + LEEWAY - 1
    assert verifier.verify(token).subject == "alice"
    clock.value = T0 + 300 + LEEWAY
    assert_rejected(verifier, token, TokenExpired)


def test_expiry_with_a_fractional_clock(env: Env, verifier: Verifier, clock: FakeClock) -> None:
    token = rs256(env, claims(exp=T0 + 300))
    clock.value = T0 + 300 + LEEWAY - 0.001
    assert verifier.verify(token).subject == "alice"


def test_fractional_exp_is_a_numeric_date(env: Env, verifier: Verifier) -> None:
    assert verifier.verify(rs256(env, claims(exp=T0 + 300.5))).subject == "alice"


def test_not_before_in_the_future(env: Env, verifier: Verifier) -> None:
    error = assert_rejected(verifier, rs256(env, claims(nbf=T0 + LEEWAY + 1)), TokenNotYetValid)
    assert error.reason == "token_not_yet_valid"


def test_not_before_within_leeway(env: Env, verifier: Verifier) -> None:
    assert verifier.verify(rs256(env, claims(nbf=T0 + LEEWAY))).subject == "alice"


def test_issued_in_the_future(env: Env, verifier: Verifier) -> None:
    error = assert_rejected(verifier, rs256(env, claims(iat=T0 + LEEWAY + 1)), IssuedInFuture)
    assert error.reason == "issued_in_future"


def test_issued_at_within_leeway(env: Env, verifier: Verifier) -> None:
    assert verifier.verify(rs256(env, claims(iat=T0 + LEEWAY))).subject == "alice"


def test_iat_and_nbf_are_optional(env: Env, verifier: Verifier) -> None:
    assert verifier.verify(rs256(env, claims(drop=("iat", "nbf")))).subject == "alice"


def test_missing_exp(env: Env, verifier: Verifier) -> None:
    error = assert_rejected(verifier, rs256(env, claims(drop=("exp",))), MissingClaim)
    assert error.reason == "missing_claim"


def test_null_exp_is_missing(env: Env, verifier: Verifier) -> None:
    assert_rejected(verifier, rs256(env, claims(exp=None)), MissingClaim)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("exp", "123"),
        ("exp", str(T0 + 300)),
        ("exp", True),
        ("exp", False),
        ("exp", [T0 + 300]),
        ("exp", {"t": T0 + 300}),
        ("exp", 1e20),
        ("exp", -1),
        ("exp", MAX_TIMESTAMP + 1),
        ("nbf", "0"),
        ("nbf", True),
        ("iat", False),
        ("iat", -5),
        ("iat", 1e300),
    ],
)
def test_time_claim_that_is_not_a_numeric_date(
    env: Env, verifier: Verifier, name: str, value: Any
) -> None:
    error = assert_rejected(verifier, rs256(env, claims(**{name: value})), ClaimInvalid)
    assert error.reason == "claim_invalid"
    assert name in error.detail


def test_exp_at_the_largest_timestamp(env: Env, verifier: Verifier) -> None:
    assert verifier.verify(rs256(env, claims(exp=MAX_TIMESTAMP))).subject == "alice"


def test_exp_of_1e400_parses_as_infinity_and_is_refused(env: Env, verifier: Verifier) -> None:
    payload = as_json(claims()).replace(f'"exp":{T0 + 300}'.encode(), b'"exp":1e400')
    assert b"1e400" in payload
    assert_rejected(verifier, rs256(env, payload), ClaimInvalid)


def test_exp_as_a_huge_integer_is_claim_invalid(env: Env, verifier: Verifier) -> None:
    assert_rejected(verifier, rs256(env, claims(exp=10**400)), ClaimInvalid)


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_standard_json_constants(env: Env, verifier: Verifier, constant: bytes) -> None:
    payload = as_json(claims()).replace(f"{T0 + 300}".encode(), constant)
    assert constant in payload
    error = assert_rejected(verifier, rs256(env, payload), TokenMalformed)
    assert "non-standard constant" in error.detail


# --- audience --------------------------------------------------------------------


@pytest.mark.parametrize(
    "aud", [AUD, [AUD], ["other", AUD], "https://svc.example/api", ["x", "https://svc.example/api"]]
)
def test_audience_match(env: Env, verifier: Verifier, aud: Any) -> None:
    assert verifier.verify(rs256(env, claims(aud=aud))).claims["aud"] == aud


@pytest.mark.parametrize(
    "aud",
    ["ap", "apis", "API", " api", "api ", "https://svc.example/api/", "https://svc.example", ["x"]],
)
def test_audience_mismatch(env: Env, verifier: Verifier, aud: Any) -> None:
    error = assert_rejected(verifier, rs256(env, claims(aud=aud)), AudienceMismatch)
    assert error.reason == "audience_mismatch"


def test_audience_substring_is_not_a_match(env: Env, verifier: Verifier) -> None:
    assert_rejected(verifier, rs256(env, claims(aud="my-api-gateway")), AudienceMismatch)


@pytest.mark.parametrize("aud", [[], 5, True, {"aud": AUD}, [AUD, 5], [[AUD]], ""])
def test_audience_of_the_wrong_type(env: Env, verifier: Verifier, aud: Any) -> None:
    error = rejected(verifier, rs256(env, claims(aud=aud)))
    # "" is a string that names nobody; everything else is not a valid aud at all.
    expected = AudienceMismatch if aud == "" else ClaimInvalid
    assert type(error) is expected


def test_missing_audience(env: Env, verifier: Verifier) -> None:
    assert_rejected(verifier, rs256(env, claims(drop=("aud",))), MissingClaim)


# --- issuer ----------------------------------------------------------------------


@pytest.mark.parametrize("iss", ["https://evil.test", ISS + "/", ISS.upper(), " " + ISS, ""])
def test_unknown_issuer(env: Env, verifier: Verifier, iss: str) -> None:
    error = assert_rejected(verifier, rs256(env, claims(iss=iss)), UnknownIssuer)
    assert error.reason == "unknown_issuer"


def test_missing_issuer(env: Env, verifier: Verifier) -> None:
    assert_rejected(verifier, rs256(env, claims(drop=("iss",))), MissingClaim)


@pytest.mark.parametrize("iss", [5, [ISS], {"iss": ISS}, True])
def test_non_string_issuer(env: Env, verifier: Verifier, iss: Any) -> None:
    assert_rejected(verifier, rs256(env, claims(iss=iss)), ClaimInvalid)


def test_only_the_token_issuers_keys_apply(env: Env, verifier: Verifier) -> None:
    # Signed by the first issuer's EC key, claiming the HMAC issuer: "ec" is not its kid.
    token = craft({"alg": "ES256", "kid": "ec"}, claims(iss=HS_ISS), env.ec)
    assert_rejected(verifier, token, AlgorithmNotAllowed)
    token = craft({"alg": "RS256", "kid": "rsa-rs"}, claims(iss=HS_ISS), env.rsa_b)
    assert_rejected(verifier, token, UnknownKey)


# --- algorithms and keys -------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none(env: Env, verifier: Verifier, alg: str) -> None:
    token = craft({"alg": alg, "kid": "rsa"}, claims())
    error = assert_rejected(verifier, token, AlgorithmNotAllowed)
    assert error.reason == "algorithm_not_allowed"


def test_alg_none_with_empty_signature(env: Env, verifier: Verifier) -> None:
    header, payload, _ = craft({"alg": "none"}, claims()).split(".")
    error = rejected(verifier, f"{header}.{payload}.")
    assert isinstance(error, InvalidToken)
    assert type(error) in (TokenMalformed, AlgorithmNotAllowed)


@pytest.mark.parametrize(
    "header", [{"kid": "rsa"}, {"alg": None}, {"alg": 256}, {"alg": ["RS256"]}]
)
def test_alg_missing_or_not_a_string(env: Env, verifier: Verifier, header: dict[str, Any]) -> None:
    assert_rejected(verifier, craft(header, claims(), env.rsa, alg="RS256"), TokenMalformed)


def test_hs256_keyed_with_the_rsa_public_key_is_refused(env: Env, verifier: Verifier) -> None:
    # The classic algorithm confusion: HMAC over the token with the PEM as the secret.
    signing_input = f"{b64(as_json({'alg': 'HS256', 'kid': 'rsa'}))}.{b64(as_json(claims()))}"
    mac = hmac.new(env.rsa_pem, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64(mac)}"
    assert_rejected(verifier, token, AlgorithmNotAllowed)


def test_hs256_with_rsa_pem_against_an_issuer_that_allows_hs256(
    env: Env, verifier: Verifier
) -> None:
    # HS256 is allowed here, but key "rsa" is bound to RS256 only.
    token = craft({"alg": "HS256", "kid": "rsa"}, claims(iss=HS_ISS), env.rsa_pem)
    error = assert_rejected(verifier, token, AlgorithmNotAllowed)
    assert "RSA-2048" in error.detail
    # Without a kid the only HS256 key is the real secret, which this MAC does not match.
    token = craft({"alg": "HS256"}, claims(iss=HS_ISS), env.rsa_pem)
    assert_rejected(verifier, token, SignatureInvalid)


@pytest.mark.parametrize("alg", ["ES384", "RS512", "PS512", "HS256", "HS512"])
def test_alg_not_in_the_issuer_list(env: Env, verifier: Verifier, alg: str) -> None:
    keys: dict[str, Any] = {
        "ES": ec.generate_private_key(ec.SECP384R1()),
        "RS": env.rsa,
        "PS": env.rsa,
        "HS": env.secret,
    }
    token = craft({"alg": alg, "kid": "rsa"}, claims(), keys[alg[:2]])
    error = assert_rejected(verifier, token, AlgorithmNotAllowed)
    assert "not allowed for this issuer" in error.detail


def test_alg_that_does_not_fit_the_key(env: Env, verifier: Verifier) -> None:
    # RS256 is allowed for the issuer, but kid "ec" is an ES256 key.
    assert_rejected(
        verifier, craft({"alg": "RS256", "kid": "ec"}, claims(), env.rsa), AlgorithmNotAllowed
    )


def test_jwk_alg_restricts_the_key(env: Env, verifier: Verifier) -> None:
    # Key "rsa-rs" is published with alg RS256, so PS256 with it is refused.
    token = craft({"alg": "PS256", "kid": "rsa-rs"}, claims(), env.rsa_b)
    assert_rejected(verifier, token, AlgorithmNotAllowed)


def test_unknown_kid(env: Env, verifier: Verifier) -> None:
    error = assert_rejected(verifier, rs256(env, claims(), kid="rotated-away"), UnknownKey)
    assert error.reason == "unknown_key"


@pytest.mark.parametrize("kid", [5, ["rsa"], {"kid": "rsa"}, True])
def test_kid_that_is_not_a_string(env: Env, verifier: Verifier, kid: Any) -> None:
    token = craft({"alg": "RS256", "kid": kid}, claims(), env.rsa)
    assert_rejected(verifier, token, TokenMalformed)


def test_signed_with_another_key(env: Env, verifier: Verifier) -> None:
    token = craft({"alg": "RS256", "kid": "rsa"}, claims(), env.rsa_b)
    error = assert_rejected(verifier, token, SignatureInvalid)
    assert error.reason == "signature_invalid"


def test_tampered_payload(env: Env, verifier: Verifier) -> None:
    header, _, signature = rs256(env, claims()).split(".")
    forged = b64(as_json(claims(sub="admin")))
    assert_rejected(verifier, f"{header}.{forged}.{signature}", SignatureInvalid)


def test_tampered_header(env: Env, verifier: Verifier) -> None:
    _, payload, signature = rs256(env, claims()).split(".")
    header = b64(as_json({"alg": "RS256", "kid": "rsa", "typ": "at+jwt"}))
    assert_rejected(verifier, f"{header}.{payload}.{signature}", SignatureInvalid)


def _flip_signature_bit(token: str) -> str:
    header, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{header}.{payload}.{b64(bytes(raw))}"


@pytest.mark.parametrize(
    ("alg", "kid", "iss"),
    [
        ("RS256", "rsa", ISS),
        ("PS256", "rsa", ISS),
        ("ES256", "ec", ISS),
        ("EdDSA", "ed", ISS),
        ("HS256", "hs", HS_ISS),
    ],
)
def test_tampered_signature(env: Env, verifier: Verifier, alg: str, kid: str, iss: str) -> None:
    keys = {"rsa": env.rsa, "ec": env.ec, "ed": env.ed, "hs": env.secret}
    token = craft({"alg": alg, "kid": kid}, claims(iss=iss), keys[kid])
    assert verifier.verify(token).algorithm == alg
    assert_rejected(verifier, _flip_signature_bit(token), SignatureInvalid)


@pytest.mark.parametrize("length", [1, 32, 63, 65, 128])
def test_ec_signature_of_the_wrong_length(env: Env, verifier: Verifier, length: int) -> None:
    header, payload, _ = craft({"alg": "ES256", "kid": "ec"}, claims(), env.ec).split(".")
    signature = b64(bytes([7]) * length)
    token = f"{header}.{payload}.{signature}"
    assert_rejected(verifier, token, SignatureInvalid)


def test_ec_signature_of_zeros_is_refused(env: Env, verifier: Verifier) -> None:
    # "Psychic signatures" (CVE-2022-21449): r = s = 0 must never verify.
    header, payload, _ = craft({"alg": "ES256", "kid": "ec"}, claims(), env.ec).split(".")
    assert_rejected(verifier, f"{header}.{payload}.{b64(bytes(64))}", SignatureInvalid)


def test_embedded_jwk_header_is_ignored(env: Env, verifier: Verifier) -> None:
    # CVE-2018-0114 style: the token brings its own key; only configured keys count.
    attacker_jwk = public_jwk(env.rsa_b, "rsa", "RS256")
    header = {"alg": "RS256", "kid": "rsa", "jwk": attacker_jwk}
    assert_rejected(verifier, craft(header, claims(), env.rsa_b), SignatureInvalid)
    header = {"alg": "RS256", "kid": "attacker", "jku": "https://evil.test/jwks.json"}
    assert_rejected(verifier, craft(header, claims(), env.rsa_b), UnknownKey)


def test_ec_der_signature_is_refused(env: Env, verifier: Verifier) -> None:
    # JWS ES256 signatures are raw r||s; a DER signature is a different spelling.
    signing_input = f"{b64(as_json({'alg': 'ES256', 'kid': 'ec'}))}.{b64(as_json(claims()))}"
    der = env.ec.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    assert_rejected(verifier, f"{signing_input}.{b64(der)}", SignatureInvalid)


# --- strict parsing ----------------------------------------------------------------


def test_padded_signature(env: Env, verifier: Verifier) -> None:
    token = rs256(env, claims())
    assert_rejected(verifier, token + "=", TokenMalformed)
    assert_rejected(verifier, token + "==", TokenMalformed)


def test_padded_header(env: Env, verifier: Verifier) -> None:
    header_json = {"alg": "RS256", "kid": "rsa", "typ": "JWT", "x": ""}
    while len(as_json(header_json)) % 3 == 0:
        header_json["x"] += "x"
    _, payload, signature = craft(header_json, claims(), env.rsa).split(".")
    padded = base64.urlsafe_b64encode(as_json(header_json)).decode()
    assert padded.endswith("=")
    assert_rejected(verifier, f"{padded}.{payload}.{signature}", TokenMalformed)


def _alphabet() -> str:
    return "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.mark.parametrize("segment", [0, 1, 2])
def test_non_canonical_base64(env: Env, verifier: Verifier, segment: int) -> None:
    parts = rs256(env, claims()).split(".")
    # Pad the chosen segment's JSON or signature so its encoding leaves spare bits.
    if segment < 2:
        raw = base64.urlsafe_b64decode(parts[segment] + "===")
        while len(raw) % 3 == 0:
            raw += b" "
        parts[segment] = b64(raw)
    value = parts[segment]
    assert len(value) % 4 in (2, 3), "the last character must carry unused bits"
    alphabet = _alphabet()
    last = alphabet.index(value[-1])
    parts[segment] = value[:-1] + alphabet[last ^ 1]
    # Same bytes once decoded, so only the canonical-form check can catch it.
    assert base64.urlsafe_b64decode(parts[segment] + "==") == base64.urlsafe_b64decode(value + "==")
    error = assert_rejected(verifier, ".".join(parts), TokenMalformed)
    assert "canonical" in error.detail


@pytest.mark.parametrize("count", [1, 2, 4, 5, 6])
def test_wrong_number_of_segments(env: Env, verifier: Verifier, count: int) -> None:
    parts = rs256(env, claims()).split(".")
    segments = (parts * 2)[:count]
    error = assert_rejected(verifier, ".".join(segments), TokenMalformed)
    assert f"{count} segments" in error.detail


def test_five_segments_are_named_as_jwe(env: Env, verifier: Verifier) -> None:
    error = assert_rejected(verifier, "a.b.c.d.e", TokenMalformed)
    assert "JWE" in error.detail


@pytest.mark.parametrize(
    "token", ["", ".", "..", "a..c", ".b.c", "a.b.", "e30.e30.A", "e30.e30.!!!!", "e30.e30.a+b/"]
)
def test_empty_or_invalid_segments(verifier: Verifier, token: str) -> None:
    assert_rejected(verifier, token, TokenMalformed)


@pytest.mark.parametrize("name", ["crit", "b64", "zip", "enc"])
def test_unsupported_header_parameter(env: Env, verifier: Verifier, name: str) -> None:
    values: dict[str, Any] = {"crit": ["exp"], "b64": False, "zip": "DEF", "enc": "A256GCM"}
    token = craft({"alg": "RS256", "kid": "rsa", name: values[name]}, claims(), env.rsa)
    error = assert_rejected(verifier, token, TokenMalformed)
    assert repr(name) in error.detail


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_payload_not_utf8(env: Env, verifier: Verifier, encoding: str) -> None:
    payload = json.dumps(claims()).encode(encoding)
    assert json.loads(payload) == claims()  # what a lenient parser would accept
    assert_rejected(verifier, rs256(env, payload), TokenMalformed)


def test_header_not_utf8(env: Env, verifier: Verifier) -> None:
    header = json.dumps({"alg": "RS256", "kid": "rsa"}).encode("utf-16")
    assert_rejected(verifier, craft(header, claims(), env.rsa, alg="RS256"), TokenMalformed)


def test_invalid_utf8_bytes(env: Env, verifier: Verifier) -> None:
    payload = as_json(claims(sub="ZZ")).replace(b"ZZ", b"\xff\xfe")
    assert_rejected(verifier, rs256(env, payload), TokenMalformed)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"iss":"https://issuer.test","iss":"https://evil.test"}',
        b'{"sub":"alice","aud":"api","exp":1,"exp":2}',
        b'{"nested":{"a":1,"a":2}}',
    ],
)
def test_duplicate_json_member(env: Env, verifier: Verifier, payload: bytes) -> None:
    error = assert_rejected(verifier, rs256(env, payload), TokenMalformed)
    assert "duplicate member" in error.detail


def test_duplicate_header_member(env: Env, verifier: Verifier) -> None:
    header = b'{"alg":"HS256","alg":"RS256","kid":"rsa"}'
    assert_rejected(verifier, craft(header, claims(), env.rsa, alg="RS256"), TokenMalformed)


@pytest.mark.parametrize("header", [b'["RS256"]', b'"RS256"', b"null", b"42", b"true"])
def test_header_not_an_object(env: Env, verifier: Verifier, header: bytes) -> None:
    error = assert_rejected(verifier, craft(header, claims(), env.rsa, alg="RS256"), TokenMalformed)
    assert "header is not a JSON object" in error.detail


@pytest.mark.parametrize("payload", [b"[]", b'"claims"', b"null", b"1"])
def test_payload_not_an_object(env: Env, verifier: Verifier, payload: bytes) -> None:
    error = assert_rejected(verifier, rs256(env, payload), TokenMalformed)
    assert "payload is not a JSON object" in error.detail


@pytest.mark.parametrize("payload", [b"", b"{", b"{'iss': 1}", b'{"a":1}x', b'{"a":01}'])
def test_payload_not_json(env: Env, verifier: Verifier, payload: bytes) -> None:
    assert_rejected(verifier, rs256(env, payload), TokenMalformed)


def test_deeply_nested_json(env: Env) -> None:
    config = env.config.model_copy(update={"max_token_bytes": 300_000})
    verifier = Verifier(config, env.keys, FakeClock(T0))
    token = craft({"alg": "RS256", "kid": "rsa"}, b"[" * 100_000, key=None)
    assert len(token) < 300_000
    assert_rejected(verifier, token, TokenMalformed)


def test_deeply_nested_header(env: Env) -> None:
    config = env.config.model_copy(update={"max_token_bytes": 300_000})
    verifier = Verifier(config, env.keys, FakeClock(T0))
    token = craft(b'{"x":[' * 30_000, claims(), key=None)
    assert_rejected(verifier, token, TokenMalformed)


def test_integer_too_long_to_parse_is_malformed(env: Env, verifier: Verifier) -> None:
    payload = b'{"iss":"https://issuer.test","n":' + b"9" * 5000 + b"}"
    token = craft({"alg": "RS256", "kid": "rsa"}, payload, key=None)
    assert len(token) < env.config.max_token_bytes
    assert_rejected(verifier, token, TokenMalformed)


def test_token_too_large(env: Env, verifier: Verifier) -> None:
    limit = env.config.max_token_bytes
    error = assert_rejected(verifier, "a" * (limit + 1), TokenTooLarge)
    assert error.reason == "token_too_large"
    # At the limit, size is not the problem (the shape is).
    assert_rejected(verifier, "a" * limit, TokenMalformed)


def test_large_valid_token_within_the_limit(env: Env, verifier: Verifier) -> None:
    token = rs256(env, claims(pad="x" * 5000))
    assert len(token) <= env.config.max_token_bytes
    assert verifier.verify(token).claims["pad"] == "x" * 5000


def test_non_ascii_token_text(verifier: Verifier) -> None:
    assert_rejected(verifier, "é.é.é", TokenMalformed)


# --- the key source and the one exception boundary -------------------------------------


class NoKeys:
    def keys_for(self, issuer: str) -> IssuerKeys | None:
        return None

    def ready(self) -> bool:
        return False


class EmptyKeys:
    def keys_for(self, issuer: str) -> IssuerKeys | None:
        return IssuerKeys(by_kid={}, without_kid=())

    def ready(self) -> bool:
        return False


class BrokenKeys:
    def keys_for(self, issuer: str) -> IssuerKeys | None:
        raise RuntimeError("key store exploded")

    def ready(self) -> bool:
        return True


@pytest.mark.parametrize("source", [NoKeys(), EmptyKeys()], ids=["none", "empty"])
def test_keys_unavailable(env: Env, source: KeySource) -> None:
    verifier = Verifier(env.config, source, FakeClock(T0))
    error = assert_rejected(verifier, rs256(env, claims()), KeysUnavailable)
    assert error.status == 503
    assert error.reason == "keys_unavailable"


def test_unexpected_exception_becomes_internal_error(env: Env) -> None:
    verifier = Verifier(env.config, BrokenKeys(), FakeClock(T0))
    error = assert_rejected(verifier, rs256(env, claims()), InternalError)
    assert error.status == 503
    assert error.reason == "internal_error"
    assert isinstance(error.__cause__, RuntimeError)
    assert "RuntimeError" in error.detail
    assert "exploded" not in error.detail


def test_key_source_is_consulted_per_token(env: Env) -> None:
    class Rotating:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def keys_for(self, issuer: str) -> IssuerKeys | None:
            self.calls.append(issuer)
            return env.keys.keys_for(issuer)

        def ready(self) -> bool:
            return True

    source = Rotating()
    verifier = Verifier(env.config, source, FakeClock(T0))
    verifier.verify(rs256(env, claims()))
    assert source.calls == [ISS]


def test_issuer_is_checked_before_keys(env: Env) -> None:
    # An unknown issuer never reaches the key source (no lookups an attacker can steer).
    verifier = Verifier(env.config, BrokenKeys(), FakeClock(T0))
    assert_rejected(verifier, rs256(env, claims(iss="https://evil.test")), UnknownIssuer)


def test_default_clock_is_wall_time(env: Env) -> None:
    verifier = Verifier(env.config, env.keys)
    # T0 is in the past relative to any real clock, so a T0+300 token has expired.
    assert_rejected(verifier, rs256(env, claims()), TokenExpired)


# --- fingerprint -----------------------------------------------------------------------


def test_fingerprint_is_a_short_stable_hash(env: Env) -> None:
    token = rs256(env, claims())
    fp = fingerprint(token)
    assert fp == hashlib.sha256(token.encode()).hexdigest()[:16]
    assert fingerprint(token) == fp
    assert fingerprint(rs256(env, claims(sub="bob"))) != fp
    assert fp not in token
