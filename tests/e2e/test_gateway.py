"""Every answer a client can get through the gateway, checked through real Envoy."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from authz.dev.stack import Stack, wait_for
from tests.e2e.conftest import AUDIENCE, ISSUER, KID, Keys
from tests.support import forge

pytestmark = pytest.mark.e2e

INVALID_TOKEN = (
    'Bearer realm="authz", error="invalid_token", error_description="The access token is invalid"'
)


def test_valid_token_reaches_upstream_with_identity_headers(
    stack: Stack, bearer: Callable[..., dict[str, str]]
) -> None:
    reply = stack.get("/orders/7?x=1", bearer())
    assert reply.status == 200
    received = reply.json()
    assert received["path"] == "/orders/7?x=1"
    assert received["headers"]["x-auth-subject"] == "alice"
    assert received["headers"]["x-auth-issuer"] == ISSUER
    assert received["headers"]["x-auth-scopes"] == "orders:read"


def test_forged_identity_headers_never_reach_upstream(
    stack: Stack, keys: Keys, bearer: Callable[..., dict[str, str]]
) -> None:
    # A token without scope: x-auth-scopes is not set by authz, so only removal
    # keeps the forged one out. x-auth-email is in the namespace but not configured.
    token = keys.token(scope=None)
    forged = {"x-auth-subject": "mallory", "x-auth-scopes": "admin", "x-auth-email": "m@evil"}
    reply = stack.get("/orders", bearer(token, **forged))
    assert reply.status == 200
    headers = reply.json()["headers"]
    assert headers["x-auth-subject"] == "alice"
    assert "x-auth-scopes" not in headers
    assert "x-auth-email" not in headers


def test_missing_token_gets_a_bare_challenge(stack: Stack) -> None:
    reply = stack.get("/orders")
    assert reply.status == 401
    assert reply.headers["www-authenticate"] == 'Bearer realm="authz"'
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {
        "error": "unauthorized",
        "error_description": "A bearer token is required",
    }


def _expect_invalid_token(stack: Stack, token: str) -> None:
    reply = stack.get("/orders", {"Authorization": f"Bearer {token}"})
    assert reply.status == 401, reply.body
    assert reply.headers["www-authenticate"].startswith(
        'Bearer realm="authz", error="invalid_token"'
    )
    body = reply.json()
    assert body["error"] == "invalid_token"
    assert token not in reply.body.decode()


def test_malformed_token(stack: Stack) -> None:
    _expect_invalid_token(stack, "not.a-jwt")
    reply = stack.get("/orders", {"Authorization": "Bearer not.a-jwt"})
    assert reply.headers["www-authenticate"] == INVALID_TOKEN


def test_tampered_payload(stack: Stack, keys: Keys) -> None:
    _expect_invalid_token(stack, forge.tamper_payload(keys.token(), sub="admin"))


def test_tampered_signature(stack: Stack, keys: Keys) -> None:
    _expect_invalid_token(stack, forge.tamper_signature(keys.token()))


def test_expired_token(stack: Stack, keys: Keys) -> None:
    now = int(time.time())
    token = keys.token(iat=now - 600, exp=now - 60)
    _expect_invalid_token(stack, token)
    reply = stack.get("/orders", {"Authorization": f"Bearer {token}"})
    assert 'error_description="The access token expired"' in reply.headers["www-authenticate"]


def test_token_not_yet_valid(stack: Stack, keys: Keys) -> None:
    _expect_invalid_token(stack, keys.token(nbf=int(time.time()) + 3600))


def test_wrong_issuer(stack: Stack, keys: Keys) -> None:
    _expect_invalid_token(stack, keys.token(iss="https://evil.example"))


def test_issuer_prefix_is_not_the_issuer(stack: Stack, keys: Keys) -> None:
    _expect_invalid_token(stack, keys.token(iss=ISSUER + ".evil"))


def test_wrong_audience(stack: Stack, keys: Keys) -> None:
    _expect_invalid_token(stack, keys.token(aud="billing-api"))


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none(stack: Stack, keys: Keys, alg: str) -> None:
    _expect_invalid_token(stack, forge.unsigned(keys.claims(), alg=alg, kid=KID))


def test_hs256_signed_with_the_rsa_public_key(stack: Stack, keys: Keys) -> None:
    pem = forge.public_pem(keys.private.public_key())
    _expect_invalid_token(stack, forge.hmac_signed(keys.claims(), pem, kid=KID))


def test_unknown_kid(stack: Stack, keys: Keys) -> None:
    _expect_invalid_token(stack, keys.token(kid="rotated-away"))


def test_two_authorization_headers_are_a_bad_request(stack: Stack, keys: Keys) -> None:
    # urllib cannot repeat a header; Envoy joins duplicates with "," anyway.
    token = keys.token()
    reply = stack.get("/orders", {"Authorization": f"Bearer {token}, Bearer {token}"})
    assert reply.status == 400
    assert 'error="invalid_request"' in reply.headers["www-authenticate"]


def test_health_route_needs_no_token(stack: Stack) -> None:
    reply = stack.get("/healthz")
    assert reply.status == 200
    assert reply.body == b"ok\n"


def test_access_log_carries_the_decision_and_reason(stack: Stack, keys: Keys) -> None:
    envoy = stack.envoy
    assert envoy is not None
    # Told apart by path: Envoy replaces a client's x-request-id at the edge.
    allowed_path = f"/orders/ok-{time.monotonic_ns()}"
    denied_path = f"/orders/expired-{time.monotonic_ns()}"
    stack.get(allowed_path, {"Authorization": f"Bearer {keys.token()}"})
    expired = keys.token(iat=1, exp=2)
    stack.get(denied_path, {"Authorization": f"Bearer {expired}"})

    def both() -> dict[str, dict[str, object]] | None:
        found = {e["path"]: e for e in envoy.access_log(1)}
        return found if allowed_path in found and denied_path in found else None

    entries = wait_for("both access log entries", both, 15, envoy.log)
    allowed, denied = entries[allowed_path], entries[denied_path]
    assert allowed["authz_decision"] == "allow"
    assert allowed["authz_sub"] == "alice"
    assert allowed["authz_reason"] == "allowed"
    assert denied["authz_decision"] == "deny"
    assert denied["authz_reason"] == "token_expired"
    assert expired not in json.dumps([allowed, denied])


def test_envoy_counts_denies(stack: Stack) -> None:
    assert stack.envoy is not None
    before = stack.envoy.stats("ext_authz").get("http.ingress.ext_authz.denied", 0)
    assert stack.get("/orders").status == 401
    after = stack.envoy.stats("ext_authz")["http.ingress.ext_authz.denied"]
    assert after == before + 1


def test_audience_list_containing_ours_is_accepted(stack: Stack, keys: Keys) -> None:
    reply = stack.get("/orders", {"Authorization": f"Bearer {keys.token(aud=['x', AUDIENCE])}"})
    assert reply.status == 200
