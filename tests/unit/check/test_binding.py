"""The binding phase in decision.Decider: DPoP and certificate-bound tokens by
the route's sender_constraint, and what the response says about them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from authz.check.binding import SenderChecks
from authz.check.certbound import certificate_thumbprint
from authz.check.decision import Decider, Decision, Step
from authz.check.request import RequestView
from authz.check.response import AllowParts, DenyParts, parts
from authz.check.verify import Verifier
from authz.config.loader import parse_config
from authz.config.models import Config
from authz.dev.dpop_client import Signer, proof
from authz.dev.tokens import claims_for, mint
from tests.support.clock import FakeClock
from tests.support.doubles import StaticKeySource
from tests.support.pki import TestCA

ISS = "https://idp.example"
BEARER_ONLY = "https://legacy.example"
AUD = "api"
T0 = 1_700_000_000
HOST = "api.example"


@dataclass(frozen=True)
class Env:
    config: Config
    keys: StaticKeySource
    key: rsa.RSAPrivateKey
    ca: TestCA
    nonce_config: Config


def _config(tmp: Path, *, nonce: bool = False) -> Config:
    nonce_section = "  nonce: {required: true, key_file: nonce.key}\n" if nonce else ""
    text = f"""\
issuers:
  - issuer: {ISS}
    audiences: [{AUD}]
    algorithms: [RS256]
    keys: [{{pem_file: idp.pem, kid: k1}}]
    issues: [bearer, dpop, mtls]
  - issuer: {BEARER_ONLY}
    audiences: [{AUD}]
    algorithms: [RS256]
    keys: [{{pem_file: idp.pem, kid: k1}}]
dpop:
  algorithms: [ES256]
{nonce_section}mtls: {{certificate_source: peer}}
identity:
  binding_header: x-auth-binding
routes:
  - name: refunds
    match: {{prefix: /refunds}}
    mode: protected
    sender_constraint: dpop
    requirements: {{scopes: [payments:refund]}}
  - name: either-admin
    match: {{prefix: /either-admin}}
    mode: protected
    sender_constraint: optional
    requirements: {{scopes: [admin]}}
  - name: shadow-pay
    match: {{prefix: /pay}}
    mode: protected
    shadow: true
    sender_constraint: dpop
  - name: pay
    match: {{prefix: /pay}}
    mode: protected
    sender_constraint: dpop
  - name: partners
    match: {{prefix: /partners}}
    mode: protected
    sender_constraint: mtls
  - name: either
    match: {{prefix: /either}}
    mode: protected
    sender_constraint: optional
  - name: plain
    mode: protected
"""
    return parse_config(text, source="test.yaml", base_dir=tmp)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, rsa_key: rsa.RSAPrivateKey) -> Env:
    tmp = tmp_path_factory.mktemp("binding")
    (tmp / "idp.pem").write_bytes(
        rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (tmp / "nonce.key").write_bytes(b"k" * 32)
    config = _config(tmp)
    return Env(
        config=config,
        keys=StaticKeySource.from_config(config),
        key=rsa_key,
        ca=TestCA(tmp / "pki"),
        nonce_config=_config(tmp, nonce=True),
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


def _decider(env: Env, clock: FakeClock, config: Config | None = None) -> Decider:
    config = config or env.config
    sender = SenderChecks.from_config(config, clock=clock)
    return Decider(config, Verifier(config, env.keys, clock), sender=sender)


@pytest.fixture
def decider(env: Env, clock: FakeClock) -> Decider:
    # A fresh decider per test: its replay store remembers the proofs it saw.
    return _decider(env, clock)


@pytest.fixture(scope="module")
def holder() -> Signer:
    return Signer(ec.generate_private_key(ec.SECP256R1()), "ES256")


def _token(env: Env, issuer: str = ISS, **claims: Any) -> str:
    body = claims_for("alice", issuer, AUD, scopes="read", ttl=300, now=T0)
    body.update(claims)
    return mint(env.key, "RS256", body, "k1")


def _request(
    path: str, authorization: str, dpop: tuple[str, ...] = (), **extra: Any
) -> RequestView:
    headers: dict[str, tuple[str, ...]] = {"authorization": (authorization,)}
    if dpop:
        headers["dpop"] = dpop
    return RequestView(method="GET", path=path, host=HOST, scheme="https", headers=headers, **extra)


def _dpop_request(holder: Signer, token: str, path: str = "/pay/1", **kw: Any) -> RequestView:
    made = proof(holder, iat=T0, htu=f"https://{HOST}{path}", access_token=token, **kw)
    return _request(path, f"DPoP {token}", (made,))


def test_a_dpop_bound_token_with_its_proof_is_allowed_once(
    env: Env, decider: Decider, holder: Signer
) -> None:
    token = _token(env, cnf={"jkt": holder.thumbprint()})
    request = _dpop_request(holder, token)
    trace: list[Step] = []
    allowed = decider.decide(request, trace)
    assert allowed.allowed, allowed.detail
    assert (allowed.route, allowed.binding) == ("pay", "dpop")
    assert allowed.binding_thumbprint == holder.thumbprint()
    # The shadow route checked the same proof: one check, not a replay of its own.
    assert allowed.shadows[0].allowed
    assert ("x-auth-binding", "dpop") in allowed.headers_to_set
    assert "dpop" in allowed.headers_to_remove
    assert any(step.phase.value == "binding" and step.outcome == "ok" for step in trace)
    # The token's verification is cached; the proof is checked anew, and is spent.
    replayed = decider.decide(request)
    assert replayed.reason == "dpop_replayed"
    assert decider.decide(_dpop_request(holder, token)).allowed


def test_the_deny_carries_the_dpop_challenge(env: Env, decider: Decider, holder: Signer) -> None:
    token = _token(env, cnf={"jkt": holder.thumbprint()})
    stale = _request(
        "/pay/1",
        f"DPoP {token}",
        (proof(holder, iat=T0 - 3600, htu=f"https://{HOST}/pay/1", access_token=token),),
    )
    denied = decider.decide(stale)
    assert denied.reason == "dpop_stale"
    answer = parts(denied, "authz")
    assert isinstance(answer, DenyParts)
    challenge = dict(answer.headers)["www-authenticate"]
    # A DPoP-only route: the DPoP challenge alone, with the error.
    assert challenge.startswith('DPoP algs="ES256", error="invalid_dpop_proof"')
    assert "Bearer" not in challenge


_NO_SCOPE = (
    'error="insufficient_scope", '
    'error_description="The access token does not grant access to this resource"'
)


def _scope_challenge(decider: Decider, request: RequestView) -> str:
    """The WWW-Authenticate value of ``request``'s insufficient_scope deny."""
    denied = decider.decide(request)
    assert (denied.status, denied.reason) == (403, "insufficient_scope")
    answer = parts(denied, "authz")
    assert isinstance(answer, DenyParts)
    return dict(answer.headers)["www-authenticate"]


def _dpop_at(env: Env, holder: Signer, path: str) -> RequestView:
    token = _token(env, cnf={"jkt": holder.thumbprint()})
    spent = proof(holder, iat=T0, htu=f"https://{HOST}{path}", access_token=token)
    return _request(path, f"DPoP {token}", (spent,))


def test_insufficient_scope_on_a_dpop_route_is_a_dpop_challenge(
    env: Env, decider: Decider, holder: Signer
) -> None:
    # RFC 9449 §7.1: the DPoP scheme, with RFC 6750's error and scope; no Bearer
    # challenge on a route that does not take Bearer tokens.
    assert _scope_challenge(decider, _dpop_at(env, holder, "/refunds/1")) == (
        f'DPoP algs="ES256", {_NO_SCOPE}, scope="payments:refund"'
    )


def test_insufficient_scope_goes_in_the_challenge_of_the_scheme_used(
    env: Env, decider: Decider, holder: Signer
) -> None:
    bearer = _request("/either-admin/1", f"Bearer {_token(env)}")
    assert _scope_challenge(decider, bearer) == (
        f'DPoP algs="ES256", Bearer realm="authz", {_NO_SCOPE}, scope="admin"'
    )
    assert _scope_challenge(decider, _dpop_at(env, holder, "/either-admin/1")) == (
        f'DPoP algs="ES256", {_NO_SCOPE}, scope="admin", Bearer realm="authz"'
    )


def test_a_bearer_scheme_is_no_credential_on_a_dpop_route(env: Env, decider: Decider) -> None:
    denied = decider.decide(_request("/pay/1", f"Bearer {_token(env)}"))
    assert (denied.status, denied.reason) == (401, "missing_token")
    answer = parts(denied, "authz")
    assert isinstance(answer, DenyParts)
    assert dict(answer.headers)["www-authenticate"] == 'DPoP algs="ES256"'


def test_a_dpop_bound_token_presented_as_bearer_is_refused(
    env: Env, decider: Decider, holder: Signer
) -> None:
    token = _token(env, cnf={"jkt": holder.thumbprint()})
    denied = decider.decide(_request("/either/1", f"Bearer {token}"))
    assert denied.reason == "binding_required"
    answer = parts(denied, "authz")
    assert isinstance(answer, DenyParts)
    challenge = dict(answer.headers)["www-authenticate"]
    assert challenge == (
        'DPoP algs="ES256", Bearer realm="authz", error="invalid_token", '
        'error_description="The access token must be presented with proof of its binding"'
    )


def test_an_unbound_token_on_an_optional_route_is_a_bearer_token(
    env: Env, decider: Decider
) -> None:
    allowed = decider.decide(_request("/either/1", f"Bearer {_token(env)}"))
    assert (allowed.allowed, allowed.binding) == (True, "none")
    assert ("x-auth-binding", "none") in allowed.headers_to_set


def test_an_issuer_that_issues_no_dpop_tokens(env: Env, decider: Decider, holder: Signer) -> None:
    token = _token(env, BEARER_ONLY, cnf={"jkt": holder.thumbprint()})
    denied = decider.decide(_dpop_request(holder, token, "/either/1"))
    assert (denied.reason, denied.detail) == (
        "binding_required",
        "the token's issuer does not issue DPoP-bound tokens",
    )


def test_a_route_without_a_constraint_is_as_before(
    env: Env, decider: Decider, holder: Signer
) -> None:
    token = _token(env, cnf={"jkt": holder.thumbprint()})
    # The DPoP scheme is no credential there; a bound token is a bearer token.
    missing = decider.decide(_dpop_request(holder, token, "/plain"))
    assert (missing.reason, missing.detail) == (
        "missing_token",
        "Authorization scheme is not Bearer",
    )
    answer = parts(missing, "authz")
    assert isinstance(answer, DenyParts)
    assert dict(answer.headers)["www-authenticate"] == 'Bearer realm="authz"'
    allowed = decider.decide(_request("/plain", f"Bearer {token}"))
    assert (allowed.allowed, allowed.binding) == (True, "none")


def test_a_nonce_is_required_then_accepted(env: Env, clock: FakeClock, holder: Signer) -> None:
    decider = _decider(env, clock, env.nonce_config)
    token = _token(env, cnf={"jkt": holder.thumbprint()})
    challenged = decider.decide(_dpop_request(holder, token))
    assert challenged.reason == "dpop_nonce_required"
    answer = parts(challenged, "authz")
    assert isinstance(answer, DenyParts)
    headers = dict(answer.headers)
    assert headers["www-authenticate"].startswith('DPoP algs="ES256", error="use_dpop_nonce"')
    allowed = decider.decide(_dpop_request(holder, token, nonce=headers["dpop-nonce"]))
    assert allowed.allowed, allowed.detail
    # Later, the nonce from the step before is accepted with a fresh one for the client.
    clock.advance(130)
    later = proof(
        holder,
        iat=clock.now(),
        htu=f"https://{HOST}/pay/1",
        access_token=token,
        nonce=headers["dpop-nonce"],
    )
    renewed = decider.decide(_request("/pay/1", f"DPoP {token}", (later,)))
    assert renewed.allowed, renewed.detail
    ok = parts(renewed, "authz")
    assert isinstance(ok, AllowParts)
    assert [name for name, _ in ok.response_headers] == ["dpop-nonce"]


def _peer(env: Env, name: str) -> tuple[str, str]:
    """A client certificate as Envoy sends it, and its thumbprint."""
    issued = env.ca.issue(name, client=True, stem=name)
    return quote(issued.cert_file.read_text()), certificate_thumbprint(issued.der)


def test_a_certificate_bound_token_needs_its_certificate(env: Env, decider: Decider) -> None:
    pem, thumbprint = _peer(env, "client-a")
    other, _ = _peer(env, "client-b")
    token = _token(env, cnf={"x5t#S256": thumbprint})
    allowed = decider.decide(_request("/partners/1", f"Bearer {token}", peer_certificate=pem))
    assert (allowed.allowed, allowed.binding, allowed.binding_thumbprint) == (
        True,
        "mtls",
        thumbprint,
    )
    wrong = decider.decide(_request("/partners/1", f"Bearer {token}", peer_certificate=other))
    assert wrong.reason == "mtls_binding_mismatch"
    none = decider.decide(_request("/either/1", f"Bearer {token}"))
    assert none.reason == "mtls_certificate_missing"
    unbound = decider.decide(_request("/partners/1", f"Bearer {_token(env)}", peer_certificate=pem))
    assert unbound.reason == "binding_required"


def test_decisions_record_no_proof(env: Env, decider: Decider, holder: Signer) -> None:
    token = _token(env, cnf={"jkt": holder.thumbprint()})
    request = _dpop_request(holder, token)
    decision: Decision = decider.decide(request)
    assert request.header("dpop")[0] not in repr(decision)


def test_a_dry_run_allow_records_how_the_sender_was_proven(
    env: Env, clock: FakeClock, holder: Signer
) -> None:
    dry = env.config.model_copy(update={"dry_run": True})
    decider = _decider(env, clock, dry)
    # The proof holds; the route's scope does not: a would-be 403, let through.
    allowed = decider.decide(_dpop_at(env, holder, "/refunds/1"))
    assert allowed.allowed
    assert allowed.dry_run is not None
    assert allowed.dry_run.reason == "insufficient_scope"
    assert (allowed.binding, allowed.binding_thumbprint) == ("dpop", holder.thumbprint())
    # The proof fails (no DPoP header): nothing was proven, and it says so.
    token = _token(env, cnf={"jkt": holder.thumbprint()})
    unproven = decider.decide(_request("/refunds/1", f"DPoP {token}"))
    assert unproven.allowed
    assert unproven.dry_run is not None
    assert unproven.dry_run.reason == "dpop_missing"
    assert (unproven.binding, unproven.binding_thumbprint) == ("none", "")
