"""decision.Decider with routes: modes, requirements, shadow, dry run, revocation, trace."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from authz.check.decision import Decider, Decision, Step, Unenforced
from authz.check.derived import MISSING
from authz.check.phases import identity
from authz.check.policy import Policy
from authz.check.request import RequestView
from authz.check.verify import VerifiedToken, Verifier, fingerprint
from authz.config.loader import parse_config
from authz.config.models import Config, EnvoyConfig
from authz.dev.tokens import claims_for, mint
from authz.errors import Forbidden, InvalidPath, NoRoute, TokenRevoked
from authz.runtime import build_runtime
from tests.support.clock import FakeClock
from tests.support.doubles import StaticKeySource, revocations_for

ISS = "https://idp.example"
AUD = "api"
T0 = 1_700_000_000

RULES = """\
roles_claim: realm_access.roles
revocation: {file: revoked.txt}
identity:
  headers:
    x-auth-subject: sub
    x-auth-scopes: scope
    x-auth-roles: realm_access.roles
routes:
  - name: health
    match: {path: /healthz}
    mode: public
  - name: profile
    match: {prefix: /me}
    mode: optional
  - name: payments
    match: {context_extensions: {service: payments}}
    mode: protected
    requirements: {scopes: [payments:write]}
    identity:
      headers: {x-auth-user: sub}
      payload_header: x-auth-payload
      strip_authorization: true
  - name: admin-shadow
    match: {prefix: /orders/admin}
    mode: protected
    shadow: true
    requirements: {roles: [auditor]}
  - name: orders
    match: {prefix: /orders}
    mode: protected
    requirements: {scopes: [orders:read]}
  - name: audit-shadow
    match: {prefix: /audit}
    mode: protected
    shadow: true
"""

# A shadow rule over everything, in front of a public and a protected route.
SHADOW_FIRST = """\
routes:
  - name: catch-all-shadow
    match: {prefix: /}
    mode: protected
    shadow: true
    requirements: {roles: [auditor]}
  - name: health
    match: {path: /healthz}
    mode: public
  - name: orders-shadow
    match: {prefix: /orders}
    mode: protected
    shadow: true
    requirements: {scopes: [orders:read]}
  - name: orders
    match: {prefix: /orders}
    mode: protected
"""


@dataclass(frozen=True)
class Env:
    config: Config
    key: rsa.RSAPrivateKey
    directory: Path

    def token(self, **extra: Any) -> str:
        claims = claims_for("alice", ISS, AUD, now=T0, **extra)
        return mint(self.key, "RS256", claims, kid="k1")


def _env(tmp_path: Path, rsa_key: rsa.RSAPrivateKey, rules: str = RULES) -> Env:
    (tmp_path / "idp.pem").write_bytes(
        rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (tmp_path / "revoked.txt").write_text("jti:stolen-1\nsub:mallory\n")
    text = f"""\
issuers:
  - issuer: {ISS}
    audiences: [{AUD}]
    algorithms: [RS256]
    keys: [{{pem_file: idp.pem, kid: k1}}]
{rules}"""
    config = parse_config(text, source="test.yaml", base_dir=tmp_path)
    return Env(config=config, key=rsa_key, directory=tmp_path)


@pytest.fixture
def env(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Env:
    return _env(tmp_path, rsa_key)


@pytest.fixture
def shadow_first(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Env:
    return _env(tmp_path, rsa_key, SHADOW_FIRST)


@pytest.fixture
def decider(env: Env) -> Decider:
    keys = StaticKeySource.from_config(env.config)
    return Decider(
        env.config, Verifier(env.config, keys, FakeClock(T0)), revocations_for(env.config)
    )


def _decide(decider: Decider, request: RequestView, trace: list[Step] | None = None) -> Decision:
    return decider.decide(request, trace)


def _request(
    path: str, token: str | None = None, method: str = "GET", **headers: str
) -> RequestView:
    values = {name: (value,) for name, value in headers.items()}
    if token is not None:
        values["authorization"] = (f"Bearer {token}",)
    return RequestView(method=method, path=path, host="api.example", headers=values)


# --- route selection -----------------------------------------------------------------


def test_unmatched_request_is_denied_403_no_route(decider: Decider) -> None:
    decision = _decide(decider, _request("/admin"))
    assert (decision.allowed, decision.status, decision.reason) == (False, 403, "no_route")
    assert isinstance(decision.error, NoRoute)
    assert decision.route == ""


def test_invalid_path_is_400_even_with_a_good_token(env: Env, decider: Decider) -> None:
    decision = _decide(decider, _request("/healthz/..%2f..%2forders", env.token()))
    assert (decision.status, decision.reason) == (400, "invalid_path")
    assert isinstance(decision.error, InvalidPath)


def test_context_extensions_select_the_route(env: Env, decider: Decider) -> None:
    request = RequestView(
        method="GET",
        path="/orders/1",
        headers={"authorization": (f"Bearer {env.token(scopes='orders:read')}",)},
        context_extensions={"service": "payments"},
    )
    decision = _decide(decider, request)
    assert (decision.allowed, decision.status, decision.route) == (False, 403, "payments")


# --- modes ----------------------------------------------------------------------------


def test_public_route_ignores_any_token_and_removes_forged_identity(decider: Decider) -> None:
    forged = {"x-auth-subject": "mallory", "x-auth-anything": "x"}
    decision = _decide(decider, _request("/healthz", "garbage", **forged))
    assert decision.allowed
    assert (decision.route, decision.mode) == ("health", "public")
    assert decision.token is None
    assert decision.token_fingerprint == ""
    assert decision.headers_to_set == ()
    assert set(decision.headers_to_remove) >= {
        "x-auth-subject",
        "x-auth-anything",
        "x-auth-user",
        "x-auth-payload",
    }


def test_optional_route_without_token_is_anonymous(decider: Decider) -> None:
    decision = _decide(decider, _request("/me", **{"x-auth-subject": "mallory"}))
    assert decision.allowed
    assert decision.token is None
    assert decision.headers_to_set == ()
    assert "x-auth-subject" in decision.headers_to_remove


def test_optional_route_with_another_scheme_is_anonymous(decider: Decider) -> None:
    request = RequestView(method="GET", path="/me", headers={"authorization": ("Basic YTpi",)})
    assert _decide(decider, request).allowed


def test_optional_route_with_a_token_verifies_it(env: Env, decider: Decider) -> None:
    decision = _decide(decider, _request("/me", env.token()))
    assert decision.allowed
    assert ("x-auth-subject", "alice") in decision.headers_to_set


def test_optional_route_with_a_bad_token_is_denied(env: Env, decider: Decider) -> None:
    # A token that is present must be good: a forged one never passes as anonymous.
    decision = _decide(decider, _request("/me", env.token(exp=T0 - 100)))
    assert (decision.allowed, decision.status, decision.reason) == (False, 401, "token_expired")
    decision = _decide(decider, _request("/me", "not-a.jwt.x"))
    assert (decision.allowed, decision.status) == (False, 401)


def test_optional_route_with_two_credentials_is_a_bad_request(env: Env, decider: Decider) -> None:
    token = env.token()
    request = RequestView(
        method="GET", path="/me", headers={"authorization": (f"Bearer {token}, Bearer {token}",)}
    )
    assert _decide(decider, request).status == 400


def test_protected_route_needs_a_token(decider: Decider) -> None:
    decision = _decide(decider, _request("/orders/1"))
    assert (decision.status, decision.reason, decision.route) == (401, "missing_token", "orders")


# --- requirements ---------------------------------------------------------------------


def test_protected_route_requirements_met(env: Env, decider: Decider) -> None:
    decision = _decide(decider, _request("/orders/1", env.token(scopes="orders:read")))
    assert decision.allowed
    assert dict(decision.headers_to_set) == {
        "x-auth-subject": "alice",
        "x-auth-scopes": "orders:read",
    }


def test_requirements_not_met_is_403_with_the_scope(env: Env, decider: Decider) -> None:
    token = env.token(scopes="orders:write")
    decision = _decide(decider, _request("/orders/1", token))
    assert (decision.allowed, decision.status, decision.reason) == (
        False,
        403,
        "insufficient_scope",
    )
    assert isinstance(decision.error, Forbidden)
    assert decision.error.scope == "orders:read"
    assert decision.detail == "missing scope orders:read"
    assert decision.headers_to_set == ()
    # Who was refused stays known (logs, access log), never the token.
    assert decision.token is not None
    assert decision.token.subject == "alice"
    assert decision.token_fingerprint == fingerprint(token)


# --- identity -------------------------------------------------------------------------


def test_route_identity_payload_and_stripped_authorization(env: Env, decider: Decider) -> None:
    token = env.token(scopes="payments:write", realm_access={"roles": ["a", "b"]})
    request = RequestView(
        method="POST",
        path="/pay",
        headers={"authorization": (f"Bearer {token}",), "x-auth-subject": ("mallory",)},
        context_extensions={"service": "payments"},
    )
    decision = _decide(decider, request)
    assert decision.allowed
    assert decision.headers_to_set == (
        ("x-auth-user", "alice"),
        ("x-auth-payload", token.split(".")[1]),
    )
    assert "authorization" in decision.headers_to_remove
    # Headers of the other routes are removed too: the client's copy must never pass.
    assert {"x-auth-subject", "x-auth-scopes", "x-auth-roles"} <= set(decision.headers_to_remove)


def test_authorization_is_kept_unless_stripped(env: Env, decider: Decider) -> None:
    decision = _decide(decider, _request("/orders/1", env.token(scopes="orders:read")))
    assert "authorization" not in decision.headers_to_remove


def test_array_claim_header(env: Env, decider: Decider) -> None:
    token = env.token(scopes="orders:read", realm_access={"roles": ["admin", "clerk"]})
    decision = _decide(decider, _request("/orders/1", token))
    assert ("x-auth-roles", "admin,clerk") in decision.headers_to_set


def test_claim_that_cannot_be_carried_denies(env: Env, decider: Decider) -> None:
    token = env.token(scopes="orders:read", realm_access={"roles": ["a", ""]})
    decision = _decide(decider, _request("/orders/1", token))
    assert (decision.status, decision.reason) == (401, "claim_invalid")


# --- revocation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "detail"),
    [
        ({"jti": "stolen-1"}, "jti is on the revocation list"),
        ({"sub": "mallory"}, "sub is on the revocation list"),
    ],
)
def test_revoked_token_is_401(
    env: Env, decider: Decider, claims: dict[str, Any], detail: str
) -> None:
    token = env.token(scopes="orders:read", **claims)
    decision = _decide(decider, _request("/orders/1", token))
    assert (decision.allowed, decision.status, decision.reason) == (False, 401, "token_revoked")
    assert isinstance(decision.error, TokenRevoked)
    assert decision.detail == detail


def test_revoked_token_on_an_optional_route_is_401(env: Env, decider: Decider) -> None:
    decision = _decide(decider, _request("/me", env.token(jti="stolen-1")))
    assert decision.reason == "token_revoked"


def test_revocation_is_never_silently_off(env: Env) -> None:
    # The runtime reads the list the configuration names into the Decider; a
    # Decider cannot be built without it.
    keys = StaticKeySource.from_config(env.config)
    decider = build_runtime(env.config, keys, FakeClock(T0)).decider
    decision = _decide(decider, _request("/orders/1", env.token(jti="stolen-1")))
    assert decision.reason == "token_revoked"
    with pytest.raises(ValueError, match="revocation list"):
        Decider(env.config, Verifier(env.config, keys, FakeClock(T0)))


# --- shadow ---------------------------------------------------------------------------
# admin-shadow (prefix /orders/admin, roles auditor) is a rule being rolled out in
# front of orders (prefix /orders, scope orders:read): it is reported, and orders decides.


def test_shadow_route_never_opens_what_the_routes_after_it_close(decider: Decider) -> None:
    decision = _decide(decider, _request("/orders/admin/x"))
    assert (decision.allowed, decision.status, decision.reason) == (False, 401, "missing_token")
    assert decision.route == "orders"
    assert decision.shadows == (
        Unenforced("admin-shadow", False, 401, "missing_token", "no Authorization header"),
    )


def test_shadow_route_would_deny_while_the_next_route_allows(env: Env, decider: Decider) -> None:
    token = env.token(scopes="orders:read", realm_access={"roles": ["clerk"]})
    decision = _decide(decider, _request("/orders/admin/x", token))
    assert (decision.allowed, decision.reason, decision.route) == (True, "allowed", "orders")
    assert decision.shadows == (
        Unenforced("admin-shadow", False, 403, "role_missing", "missing role auditor"),
    )
    # The identity is the deciding route's: orders' headers.
    assert dict(decision.headers_to_set)["x-auth-scopes"] == "orders:read"


def test_shadow_route_would_allow_while_the_next_route_denies(env: Env, decider: Decider) -> None:
    token = env.token(scopes="x", realm_access={"roles": ["auditor"]})
    decision = _decide(decider, _request("/orders/admin/x", token))
    assert (decision.allowed, decision.status, decision.reason) == (
        False,
        403,
        "insufficient_scope",
    )
    assert decision.shadows == (Unenforced("admin-shadow", True, 200, "allowed"),)
    assert decision.headers_to_set == ()


def test_request_no_route_after_the_shadow_route_takes_is_no_route(
    env: Env, decider: Decider
) -> None:
    decision = _decide(decider, _request("/audit/log", env.token()))
    assert (decision.allowed, decision.status, decision.reason) == (False, 403, "no_route")
    assert decision.route == ""
    assert decision.shadows == (Unenforced("audit-shadow", True, 200, "allowed"),)


def test_shadow_route_identity_never_reaches_upstream(shadow_first: Env) -> None:
    # A shadow route whose token verified, in front of a public route: the
    # public route decides, so the request goes upstream anonymous.
    env = shadow_first
    keys = StaticKeySource.from_config(env.config)
    decider = Decider(
        env.config, Verifier(env.config, keys, FakeClock(T0)), revocations_for(env.config)
    )
    decision = _decide(decider, _request("/healthz", env.token(realm_access={"roles": ["a"]})))
    assert (decision.allowed, decision.route) == (True, "health")
    assert decision.headers_to_set == ()
    assert decision.token is None


def test_shadow_and_deciding_route_verify_the_token_once(env: Env) -> None:
    class Counting:
        def __init__(self, inner: Verifier) -> None:
            self.inner = inner
            self.calls = 0

        def verify(self, token: str) -> VerifiedToken:
            self.calls += 1
            return self.inner.verify(token)

    keys = StaticKeySource.from_config(env.config)
    verifier = Counting(Verifier(env.config, keys, FakeClock(T0)))
    decider = Decider(env.config, verifier, revocations_for(env.config))
    decision = _decide(decider, _request("/orders/admin/x", env.token(scopes="orders:read")))
    assert decision.allowed
    assert len(decision.shadows) == 1
    assert verifier.calls == 1


def test_shadow_internal_error_is_reported_and_the_next_route_decides(
    shadow_first: Env,
) -> None:
    class Exploding:
        def verify(self, token: str) -> VerifiedToken:
            raise RuntimeError("boom")

    env = shadow_first
    decider = Decider(env.config, Exploding(), revocations_for(env.config))
    public = _decide(decider, _request("/healthz", env.token()))
    assert (public.allowed, public.route) == (True, "health")
    assert public.shadows == (
        Unenforced("catch-all-shadow", False, 503, "internal_error", "RuntimeError"),
    )
    # The deciding route meets the same fault: 503, never an allow.
    protected = _decide(decider, _request("/orders/1", env.token()))
    assert (protected.allowed, protected.status, protected.reason) == (
        False,
        503,
        "internal_error",
    )


def test_two_shadow_routes_are_both_reported(shadow_first: Env) -> None:
    env = shadow_first
    keys = StaticKeySource.from_config(env.config)
    decider = Decider(
        env.config, Verifier(env.config, keys, FakeClock(T0)), revocations_for(env.config)
    )
    trace: list[Step] = []
    decision = _decide(decider, _request("/orders/1", env.token(scopes="orders:read")), trace)
    assert (decision.reason, decision.route) == ("allowed", "orders")
    assert [shadow.would for shadow in decision.shadows] == ["deny", "allow"]
    assert [step.text for step in trace if step.phase == "shadow"] == [
        "catch-all-shadow would deny 403 role_missing; not enforced: the routes after it decide",
        "orders-shadow would allow; not enforced: the routes after it decide",
    ]


# --- dry run --------------------------------------------------------------------------


@pytest.fixture
def dry_run(env: Env) -> Decider:
    config = env.config.model_copy(update={"dry_run": True})
    return Decider(
        config,
        Verifier(config, StaticKeySource.from_config(config), FakeClock(T0)),
        revocations_for(config),
    )


def test_dry_run_allows_a_missing_token_and_records_the_deny(dry_run: Decider) -> None:
    decision = _decide(dry_run, _request("/orders/1", **{"x-auth-subject": "mallory"}))
    assert (decision.allowed, decision.status, decision.reason) == (True, 200, "dry_run")
    assert decision.dry_run == Unenforced(
        "orders", False, 401, "missing_token", "no Authorization header"
    )
    assert decision.headers_to_set == ()
    assert "x-auth-subject" in decision.headers_to_remove


def test_dry_run_keeps_the_identity_of_a_token_lacking_a_requirement(
    env: Env, dry_run: Decider
) -> None:
    decision = _decide(dry_run, _request("/orders/1", env.token(scopes="x")))
    assert (decision.allowed, decision.reason) == (True, "dry_run")
    assert decision.dry_run is not None
    assert decision.dry_run.reason == "insufficient_scope"
    assert ("x-auth-subject", "alice") in decision.headers_to_set


def test_dry_run_drops_an_identity_past_envoys_header_limits(env: Env) -> None:
    # One request header and two identity headers: three, where Envoy takes two.
    config = env.config.model_copy(
        update={"dry_run": True, "envoy": EnvoyConfig(max_request_headers_count=2)}
    )
    decider = Decider(
        config,
        Verifier(config, StaticKeySource.from_config(config), FakeClock(T0)),
        revocations_for(config),
    )
    decision = _decide(decider, _request("/orders/1", env.token(scopes="x")))
    assert (decision.allowed, decision.reason) == (True, "dry_run")
    assert decision.dry_run is not None
    assert decision.dry_run.reason == "insufficient_scope"
    assert decision.headers_to_set == ()


@pytest.mark.parametrize("claims", [{"exp": T0 - 100}, {"jti": "stolen-1"}])
def test_dry_run_never_passes_an_unverified_or_revoked_identity(
    env: Env, dry_run: Decider, claims: dict[str, Any]
) -> None:
    decision = _decide(dry_run, _request("/orders/1", env.token(scopes="orders:read", **claims)))
    assert (decision.allowed, decision.reason) == (True, "dry_run")
    assert decision.headers_to_set == ()


def test_dry_run_allows_no_route(dry_run: Decider) -> None:
    decision = _decide(dry_run, _request("/elsewhere"))
    assert (decision.allowed, decision.route) == (True, "")
    assert decision.dry_run is not None
    assert (decision.dry_run.route, decision.dry_run.reason) == ("", "no_route")


def test_dry_run_changes_nothing_for_an_allow(env: Env, dry_run: Decider) -> None:
    decision = _decide(dry_run, _request("/orders/1", env.token(scopes="orders:read")))
    assert (decision.reason, decision.dry_run) == ("allowed", None)


def test_dry_run_never_turns_a_503_into_an_allow(env: Env) -> None:
    class Exploding:
        def verify(self, token: str) -> VerifiedToken:
            raise RuntimeError("boom")

    config = env.config.model_copy(update={"dry_run": True})
    decision = _decide(
        Decider(config, Exploding(), revocations_for(config)), _request("/orders/1", env.token())
    )
    assert (decision.allowed, decision.status, decision.reason) == (False, 503, "internal_error")
    assert decision.dry_run is None


# --- trace ----------------------------------------------------------------------------


def test_trace_records_every_phase(env: Env, decider: Decider) -> None:
    trace: list[Step] = []
    decision = _decide(decider, _request("/orders/1", env.token(scopes="x")), trace)
    assert not decision.allowed
    assert [(step.phase, step.outcome) for step in trace] == [
        ("route", "skip"),
        ("route", "skip"),
        ("route", "skip"),
        ("route", "skip"),
        ("route", "ok"),
        ("credentials", "ok"),
        ("token", "ok"),
        ("revocation", "ok"),
        ("requirements", "fail"),
    ]
    assert trace[0].text == "health: path does not match"
    assert trace[2].text == "payments: context_extensions does not match"
    assert trace[-1].check is not None
    assert trace[-1].check.children[0].label == "scopes orders:read"


def test_tracing_does_not_change_the_decision(env: Env, decider: Decider) -> None:
    for request in (
        _request("/orders/1", env.token(scopes="orders:read")),
        _request("/orders/1", env.token(scopes="x")),
        _request("/reports", env.token()),
        _request("/nowhere"),
        _request("/me"),
    ):
        plain = _decide(decider, request)
        traced = _decide(decider, request, [])
        assert (plain.allowed, plain.status, plain.reason, plain.shadows) == (
            traced.allowed,
            traced.status,
            traced.reason,
            traced.shadows,
        )
        assert plain.headers_to_set == traced.headers_to_set
        assert plain.headers_to_remove == traced.headers_to_remove


# --- what a cached token derives once ----------------------------------------------------


def _twice(env: Env, decider: Decider, scopes: str) -> tuple[Decision, Decision]:
    """Two repeats of one token (from the verifier's cache), after its first Check."""
    token = env.token(scopes=scopes)
    _decide(decider, _request("/orders/0", token))  # seen once: nothing kept for it
    first = _decide(decider, _request("/orders/1", token))
    return first, _decide(decider, _request("/orders/2", token))


def test_a_cached_token_derives_requirements_and_identity_once_per_route(
    env: Env, decider: Decider
) -> None:
    first, second = _twice(env, decider, "orders:read")
    assert first.allowed
    assert second.allowed
    assert first.token is second.token  # the verifier's cached token
    # The same headers, not rendered again: derived once, for the route that decided.
    assert second.headers_to_set is first.headers_to_set
    assert second.headers_to_set == (("x-auth-subject", "alice"), ("x-auth-scopes", "orders:read"))


def test_a_failed_requirement_is_evaluated_afresh_and_never_shared(
    env: Env, decider: Decider
) -> None:
    first, second = _twice(env, decider, "orders:write")
    assert (
        (first.status, first.reason)
        == (second.status, second.reason)
        == (
            403,
            "insufficient_scope",
        )
    )
    # Each deny raised its own error: an exception object is never shared by Checks.
    assert first.error is not second.error


def test_what_a_token_derived_lives_with_its_verification(tmp_path: Path, env: Env) -> None:
    # A reload compiles new routes and builds a new verifier: its tokens start
    # with nothing derived, so the old routes' headers cannot leak into the new.
    (tmp_path / "reloaded").mkdir()
    other = _env(
        tmp_path / "reloaded", env.key, RULES.replace("x-auth-subject: sub", "x-auth-who: sub")
    )
    token_text = env.token(scopes="orders:read")
    keys = StaticKeySource.from_config(env.config)
    verifier = Verifier(env.config, keys, FakeClock(T0))
    verified = verifier.verify(token_text)
    [old_orders] = [r for r in Policy.from_config(env.config).routes if r.name == "orders"]
    assert identity(old_orders, verified, token_text)[0] == ("x-auth-subject", "alice")
    # Seen once, nothing is kept (a distinct token per request keeps no map) ...
    assert verified.derived.get(old_orders.index, "identity") is MISSING
    # ... repeated (the cache answered it again), what it derives is kept.
    assert verifier.verify(token_text) is verified
    assert identity(old_orders, verified, token_text)[0] == ("x-auth-subject", "alice")
    # The verifier's cache answers the same token with the same verification.
    assert verifier.verify(token_text).derived.get(old_orders.index, "identity") == (
        ("x-auth-subject", "alice"),
        ("x-auth-scopes", "orders:read"),
    )
    reloaded = Verifier(other.config, keys, FakeClock(T0)).verify(token_text)
    assert reloaded == verified
    assert reloaded.derived.get(old_orders.index, "identity") is MISSING
    [new_orders] = [r for r in Policy.from_config(other.config).routes if r.name == "orders"]
    assert identity(new_orders, reloaded, token_text)[0] == ("x-auth-who", "alice")
    # One entry per route and kind: bounded by the configuration, not by traffic.
    assert len(verified.derived) == 1
