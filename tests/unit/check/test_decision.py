"""decision.Decider: one Check in order; every failure is a deny, never an allow."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from authz.check.decision import Decider, Decision
from authz.check.request import RequestView
from authz.check.revocation import RevocationList
from authz.check.verify import VerifiedToken, Verifier, fingerprint
from authz.config.loader import parse_config
from authz.config.models import Config
from authz.dev.tokens import claims_for, mint
from authz.errors import (
    ClaimInvalid,
    KeysUnavailable,
    MissingCredentials,
    MultipleCredentials,
    TokenExpired,
)
from authz.keys.sources import IssuerKeys
from tests.support.clock import FakeClock
from tests.support.doubles import StaticKeySource

ISS = "https://idp.example"
AUD = "api"
T0 = 1_700_000_000


@dataclass(frozen=True)
class Env:
    config: Config
    keys: StaticKeySource
    key: rsa.RSAPrivateKey


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, rsa_key: rsa.RSAPrivateKey) -> Env:
    tmp = tmp_path_factory.mktemp("decision")
    (tmp / "idp.pem").write_bytes(
        rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    text = f"""\
max_token_bytes: 2048
issuers:
  - issuer: {ISS}
    audiences: [{AUD}]
    algorithms: [RS256]
    keys:
      - pem_file: idp.pem
        kid: k1
identity:
  headers:
    x-auth-subject: sub
    x-auth-issuer: iss
    x-auth-scopes: scope
    x-auth-email: email
"""
    config = parse_config(text, source="test.yaml", base_dir=tmp)
    return Env(config=config, keys=StaticKeySource.from_config(config), key=rsa_key)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def decider(env: Env, clock: FakeClock) -> Decider:
    return Decider(env.config, Verifier(env.config, env.keys, clock))


def _token(env: Env, **extra: Any) -> str:
    claims = claims_for("alice", ISS, AUD, now=T0, **extra)
    return mint(env.key, "RS256", claims, kid="k1")


def _decide(decider: Decider, request: RequestView) -> Decision:
    return decider.decide(request)


def _request(token: str | None = None, **headers: str) -> RequestView:
    values: dict[str, tuple[str, ...]] = {name: (value,) for name, value in headers.items()}
    if token is not None:
        values["authorization"] = (f"Bearer {token}",)
    return RequestView(method="GET", path="/orders", headers=values)


# --- allow ---------------------------------------------------------------------------


def test_allow_sets_identity_headers(env: Env, decider: Decider) -> None:
    token = _token(env, scopes="orders:read orders:write", email="alice@example.com")
    decision = _decide(decider, _request(token))
    assert decision.allowed
    assert decision.status == 200
    assert decision.reason == "allowed"
    assert decision.error is None
    assert decision.headers_to_set == (
        ("x-auth-subject", "alice"),
        ("x-auth-issuer", ISS),
        ("x-auth-scopes", "orders:read orders:write"),
        ("x-auth-email", "alice@example.com"),
    )
    assert decision.headers_to_remove == ()
    assert decision.token_fingerprint == fingerprint(token)
    assert decision.token is not None
    assert decision.token.subject == "alice"
    assert decision.token.issuer == ISS


def test_configured_identity_headers_not_set_are_removed(env: Env, decider: Decider) -> None:
    # No scope and no email claim: those headers are not set, so a client copy must go.
    decision = _decide(decider, _request(_token(env)))
    assert decision.allowed
    assert dict(decision.headers_to_set) == {"x-auth-subject": "alice", "x-auth-issuer": ISS}
    assert decision.headers_to_remove == ("x-auth-email", "x-auth-scopes")


def test_client_headers_in_the_namespace_are_removed(env: Env, decider: Decider) -> None:
    request = _request(
        _token(env, scopes="orders:read"),
        **{"x-auth-role": "admin", "x-auth-scopes": "admin", "x-auth-": "x", "x-authz": "keep"},
    )
    decision = _decide(decider, request)
    assert decision.allowed
    assert "x-auth-scopes" not in decision.headers_to_remove  # set, and so overwritten
    assert ("x-auth-scopes", "orders:read") in decision.headers_to_set
    assert decision.headers_to_remove == ("x-auth-", "x-auth-email", "x-auth-role")
    assert "x-authz" not in decision.headers_to_remove


def test_headers_to_set_and_remove_never_overlap(env: Env, decider: Decider) -> None:
    request = _request(_token(env), **{"x-auth-subject": "mallory", "x-auth-issuer": "evil"})
    decision = _decide(decider, request)
    setting = {name for name, _ in decision.headers_to_set}
    assert setting == {"x-auth-subject", "x-auth-issuer"}
    assert setting.isdisjoint(decision.headers_to_remove)
    assert dict(decision.headers_to_set)["x-auth-subject"] == "alice"


# --- deny ----------------------------------------------------------------------------


def test_missing_token(decider: Decider) -> None:
    decision = _decide(decider, _request())
    assert not decision.allowed
    assert decision.status == 401
    assert decision.reason == "missing_token"
    assert isinstance(decision.error, MissingCredentials)
    assert decision.token_fingerprint == ""
    assert decision.token is None
    assert decision.headers_to_set == ()
    assert decision.headers_to_remove == ()


def test_multiple_credentials(env: Env, decider: Decider) -> None:
    token = _token(env)
    request = RequestView(headers={"authorization": (f"Bearer {token}", f"Bearer {token}")})
    decision = _decide(decider, request)
    assert (decision.allowed, decision.status, decision.reason) == (
        False,
        400,
        "multiple_credentials",
    )
    assert isinstance(decision.error, MultipleCredentials)
    assert decision.token_fingerprint == ""


def test_token_too_large_uses_the_configured_limit(decider: Decider) -> None:
    decision = _decide(decider, _request("a" * 2049))
    assert (decision.status, decision.reason) == (401, "token_too_large")


def test_expired_token(env: Env, decider: Decider, clock: FakeClock) -> None:
    token = _token(env)
    clock.value = T0 + 10_000
    decision = _decide(decider, _request(token))
    assert not decision.allowed
    assert decision.status == 401
    assert decision.reason == "token_expired"
    assert isinstance(decision.error, TokenExpired)
    assert decision.detail == "token has expired"
    assert decision.token_fingerprint == fingerprint(token)
    assert decision.token is None
    # The token failed, but it named a configured issuer: the deny is attributed to it.
    assert decision.issuer == env.config.issuers[0].issuer
    assert decision.headers_to_set == ()


def test_forged_signature(env: Env, decider: Decider) -> None:
    token = _token(env)
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-8]}AAAAAAAA"
    decision = _decide(decider, _request(forged))
    assert (decision.allowed, decision.status, decision.reason) == (
        False,
        401,
        "signature_invalid",
    )
    assert decision.token_fingerprint == fingerprint(forged)


def test_an_identity_claim_with_a_line_break_is_carried_encoded(env: Env, decider: Decider) -> None:
    decision = _decide(decider, _request(_token(env, email="a@b\r\nx-auth-role: admin")))
    assert decision.allowed
    assert ("x-auth-email", "a@b%0D%0Ax-auth-role:%20admin") in decision.headers_to_set


def test_unusable_identity_claim_denies(env: Env, decider: Decider) -> None:
    decision = _decide(decider, _request(_token(env, email=["ok", ""])))
    assert not decision.allowed
    assert (decision.status, decision.reason) == (401, "claim_invalid")
    assert isinstance(decision.error, ClaimInvalid)
    assert decision.headers_to_set == ()


def test_a_numeric_jti_cannot_slip_past_a_revoked_jti(
    env: Env, clock: FakeClock, tmp_path: Path
) -> None:
    # "jti:123" lists the string "123"; a token carrying the number 123 would
    # never match it, so a non-string jti is refused before revocation is asked.
    revoked = tmp_path / "revoked.txt"
    revoked.write_text("jti:123\n")
    decider = Decider(
        env.config, Verifier(env.config, env.keys, clock), revocations=RevocationList(revoked)
    )
    decision = _decide(decider, _request(_token(env, jti=123)))
    assert (decision.allowed, decision.status, decision.reason) == (False, 401, "claim_invalid")
    assert decision.detail == "jti claim is not a string"
    assert decision.headers_to_set == ()
    # The string form of the same id is revoked, as listed.
    decision = _decide(decider, _request(_token(env, jti="123")))
    assert (decision.allowed, decision.status, decision.reason) == (False, 401, "token_revoked")


def test_keys_unavailable(env: Env) -> None:
    class NoKeys:
        def keys_for(self, issuer: str) -> IssuerKeys | None:
            return None

        def ready(self) -> bool:
            return False

    decider = Decider(env.config, Verifier(env.config, NoKeys(), FakeClock(T0)))
    decision = _decide(decider, _request(_token(env)))
    assert (decision.allowed, decision.status, decision.reason) == (
        False,
        503,
        "keys_unavailable",
    )
    assert isinstance(decision.error, KeysUnavailable)


class ExplodingVerifier:
    def verify(self, token: str) -> VerifiedToken:
        raise RuntimeError("verifier blew up")


class ClaimsWithoutItems:
    """A verifier whose 'claims' break identity rendering in an unforeseen way."""

    def verify(self, token: str) -> VerifiedToken:
        return VerifiedToken(
            issuer=ISS, subject="alice", claims=cast(Any, None), kid="k1", algorithm="RS256"
        )


@pytest.mark.parametrize("verifier", [ExplodingVerifier(), ClaimsWithoutItems()])
def test_unexpected_exception_is_a_503_deny(
    env: Env, verifier: object, caplog: pytest.LogCaptureFixture
) -> None:
    decider = Decider(env.config, cast(Verifier, verifier))
    token = _token(env)
    with caplog.at_level("ERROR", logger="authz.check.decision"):
        decision = _decide(decider, _request(token))
    assert not decision.allowed
    assert decision.status == 503
    assert decision.reason == "internal_error"
    assert decision.error is not None
    assert decision.error.reason == "internal_error"
    assert decision.token_fingerprint == fingerprint(token)
    assert decision.headers_to_set == ()
    assert "internal error while deciding" in caplog.text
    assert token not in caplog.text


def test_decision_is_immutable(decider: Decider) -> None:
    decision = _decide(decider, _request())
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.error = None  # type: ignore[misc]
    with pytest.raises(AttributeError):
        decision.allowed = True  # type: ignore[misc]


def test_deny_never_carries_the_token_text(env: Env, decider: Decider, clock: FakeClock) -> None:
    token = _token(env)
    clock.value = T0 + 10_000
    decision = _decide(decider, _request(token))
    assert token not in repr(decision)
    for part in token.split("."):
        assert part not in decision.detail


def test_default_decision_fields() -> None:
    decision = Decision.deny(MissingCredentials())
    assert decision.headers_to_set == ()
    assert decision.headers_to_remove == ()
    assert decision.token_fingerprint == ""
