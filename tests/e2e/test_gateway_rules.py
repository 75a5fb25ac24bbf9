"""The README's orders/payments rules, through the real Envoy (envoy/gateway-routes.yaml).

The authz configuration is the README's "Writing rules" example itself, with
only the issuer, the key file and the ports changed for the test, so the
headers the README says each upstream receives are the headers it receives.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from authz.dev.stack import HttpResponse, Stack, http_request, wait_for
from tests.e2e.conftest import ISSUER, Keys
from tests.support.readme import yaml_block
from tests.support.repo import REPO_ROOT

pytestmark = pytest.mark.e2e

GATEWAY_ROUTES = REPO_ROOT / "envoy" / "gateway-routes.yaml"
README_ISSUER = "https://idp.example.com/realms/shop"
INSUFFICIENT = (
    'Bearer realm="shop", error="insufficient_scope", '
    'error_description="The access token does not grant access to this resource"'
)


def readme_config(keys: Keys, revoked: Path) -> str:
    text = yaml_block("Writing rules")
    for old, new in (
        (README_ISSUER, ISSUER),
        ("listen: 127.0.0.1:9001", "listen: 127.0.0.1:0"),
        ("jwks_file: keys/jwks.json", f"jwks_file: {keys.config.parent / 'keys' / 'jwks.json'}"),
        ("file: revoked.txt", f"file: {revoked}"),
    ):
        assert old in text, f"the README example no longer has {old!r}"
        text = text.replace(old, new)
    return text + "watch_interval_seconds: 0.1\n"


@contextlib.contextmanager
def readme_stack(keys: Keys, workdir: Path, revoked: str = "") -> Iterator[tuple[Stack, Path]]:
    """Envoy with envoy/gateway-routes.yaml, authz with the rules example and a
    revocation list holding ``revoked``, and the echo upstream."""
    revoked_file = workdir / "revoked.txt"
    revoked_file.write_text(revoked)
    config = workdir / "authz.yaml"
    config.write_text(readme_config(keys, revoked_file))
    with Stack(workdir, config, GATEWAY_ROUTES) as stack:
        yield stack, revoked_file


@dataclass
class Shop:
    stack: Stack
    keys: Keys
    revoked: Path

    def token(self, **claims: Any) -> str:
        defaults: dict[str, Any] = {"scope": "orders:read", "tenant": "acme"}
        return self.keys.token(**{**defaults, **claims})

    def get(
        self, path: str, token: str | None = None, method: str = "GET", **headers: str
    ) -> HttpResponse:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return http_request(self.stack.url(path), headers, method=method)

    def access_log_entry(self, field: str, value: str) -> dict[str, Any]:
        """The access log entry whose ``field`` is ``value``; polled until written.

        A client's x-request-id is replaced by Envoy's at the edge, so entries are
        found by a path of their own or by the id the upstream received.
        """
        envoy = self.stack.envoy
        assert envoy is not None

        def entry() -> dict[str, Any] | None:
            for item in envoy.access_log(1):
                if item.get(field) == value:
                    return item
            return None

        return wait_for(f"access log entry {field}={value}", entry, 15, envoy.log)

    def audit_record(self, path: str) -> dict[str, Any]:
        """The last audit record (authz's stdout) of a request for ``path``; polled."""
        authz = self.stack.authz

        def record() -> dict[str, Any] | None:
            found = None
            for line in authz.stdout.read_text().splitlines():
                with contextlib.suppress(ValueError):  # a line still being written
                    item = json.loads(line)
                    if item.get("type") == "decision" and item.get("path") == path:
                        found = item
            return found

        return wait_for(f"audit record of {path}", record, 15, authz.log)


@pytest.fixture(scope="module")
def shop(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    workdir = tmp_path_factory.mktemp("e2e-rules")
    with readme_stack(keys, workdir, "jti:stolen-1\n") as (stack, revoked):
        yield Shop(stack=stack, keys=keys, revoked=revoked)


def _identity(reply: HttpResponse) -> dict[str, str]:
    received: dict[str, str] = reply.json()["headers"]
    return {k: v for k, v in received.items() if k.startswith("x-auth-") or k == "authorization"}


# --- what each upstream receives (the README's promise) --------------------------------


def test_orders_upstream_receives_the_identity_headers(shop: Shop) -> None:
    token = shop.token(
        scope="orders:read orders:write", realm_access={"roles": ["clerk", "support"]}
    )
    reply = shop.get("/orders/42", token, **{"x-auth-subject": "mallory", "x-auth-admin": "1"})
    assert reply.status == 200, reply.body
    assert _identity(reply) == {
        "x-auth-subject": "alice",
        "x-auth-scopes": "orders:read orders:write",
        "x-auth-roles": "clerk,support",
        "x-auth-tenant": "acme",
        "authorization": f"Bearer {token}",
    }


def test_payments_upstream_receives_subject_and_payload_but_no_token(shop: Shop) -> None:
    token = shop.token(scope="payments:read")
    forged = {"x-auth-scopes": "payments:admin", "x-auth-tenant": "globex"}
    reply = shop.get("/payments/7", token, **forged)
    assert reply.status == 200, reply.body
    assert _identity(reply) == {
        "x-auth-subject": "alice",
        "x-auth-payload": token.split(".")[1],
    }


# --- requirements ---------------------------------------------------------------------


def test_missing_scope_is_403_with_the_challenge(shop: Shop) -> None:
    reply = shop.get("/orders/42", shop.token(scope="orders:read"), method="DELETE")
    assert reply.status == 403
    assert reply.headers["www-authenticate"] == f'{INSUFFICIENT}, scope="orders:write"'
    assert reply.json() == {
        "error": "insufficient_scope",
        "error_description": "The access token does not grant access to this resource",
    }


def test_claim_matcher_on_a_write(shop: Shop) -> None:
    ok = shop.get("/orders", shop.token(scope="orders:write"), method="POST")
    assert ok.status == 200
    other_tenant = shop.get(
        "/orders", shop.token(scope="orders:write", tenant="initech"), method="POST"
    )
    assert other_tenant.status == 403
    assert other_tenant.headers["www-authenticate"] == INSUFFICIENT


def test_any_of_roles_or_mfa(shop: Shop) -> None:
    path = "/payments/7/refunds"
    lead = shop.token(scope="payments:refund", realm_access={"roles": ["support-lead"]})
    mfa = shop.token(scope="payments:refund", amr=["pwd", "mfa"])
    neither = shop.token(scope="payments:refund", amr=["pwd"])
    assert shop.get(path, lead, method="POST").status == 200
    assert shop.get(path, mfa, method="POST").status == 200
    assert shop.get(path, neither, method="POST").status == 403


@pytest.mark.parametrize("prefix", ["/payments", "/billing"])
def test_the_refund_rule_holds_under_every_prefix_envoy_sends_to_payments(
    shop: Shop, prefix: str
) -> None:
    # Envoy sends /payments and /billing to the payments service: a reader may
    # refund under neither.
    reader = shop.token(scope="payments:read")
    reply = shop.get(f"{prefix}/7/refunds", reader, method="POST")
    assert reply.status == 403
    lead = shop.token(scope="payments:refund", realm_access={"roles": ["support-lead"]})
    assert shop.get(f"{prefix}/7/refunds", lead, method="POST").status == 200


# --- context_extensions from Envoy's routes -------------------------------------------


def test_envoy_context_extensions_select_the_rule(shop: Shop) -> None:
    # /billing is the payments service only because Envoy's route says so: no
    # authz route mentions /billing.
    orders_only = shop.token(scope="orders:read")
    path = f"/billing/invoices/{time.monotonic_ns()}"
    reply = shop.get(path, orders_only)
    assert reply.status == 403
    assert reply.headers["www-authenticate"] == f'{INSUFFICIENT}, scope="payments:read"'
    assert shop.access_log_entry("path", path)["authz_route"] == "payments"

    reply = shop.get("/billing/invoices/9", shop.token(scope="payments:read"))
    assert reply.status == 200
    assert "authorization" not in reply.json()["headers"]
    # The same path prefix under the orders service has no route: denied by default.
    assert shop.get("/invoices/9", shop.token(scope="payments:read")).status == 403


# --- modes, default deny and normalization --------------------------------------------


def test_public_route_removes_forged_identity(shop: Shop) -> None:
    reply = shop.get("/docs/api", **{"x-auth-subject": "mallory", "x-auth-roles": "admin"})
    assert reply.status == 200
    assert _identity(reply) == {}


def test_optional_route(shop: Shop) -> None:
    assert shop.get("/catalog/shoes").status == 200
    signed_in = shop.get("/catalog/shoes", shop.token())
    assert signed_in.status == 200
    assert signed_in.json()["headers"]["x-auth-subject"] == "alice"
    expired = shop.token(iat=int(time.time()) - 600, exp=int(time.time()) - 60)
    assert shop.get("/catalog/shoes", expired).status == 401


def test_no_route_is_denied_without_a_challenge(shop: Shop) -> None:
    reply = shop.get("/admin", shop.token(scope="orders:read orders:write"))
    assert reply.status == 403
    assert "www-authenticate" not in reply.headers
    assert reply.json()["error"] == "forbidden"


# Envoy normalizes the path (normalize_path, merge_slashes) before authz and the
# upstream see it: authz decides on the path the upstream receives.
@pytest.mark.parametrize(
    "path",
    [
        "/docs/../orders/1",  # /orders/1: not the public /docs route, orders-read
        "/docs/%2e%2e/orders/1",
        "/docs/..;/orders/1",  # Envoy reads "..;" as "..": /orders/1
        "/docs/../../orders",  # ".." stops at the root: /orders
    ],
)
def test_paths_are_normalized_before_the_rules_see_them(shop: Shop, path: str) -> None:
    reply = shop.get(path)
    assert reply.status == 401, reply.body
    assert reply.headers["www-authenticate"] == 'Bearer realm="shop"'  # authz's challenge


@pytest.mark.parametrize(
    ("path", "normalized"),
    [
        ("//docs//api/./v1", "/docs/api/v1"),
        # Dot segments first, then slashes merged: ".." removes the empty segment.
        ("/docs//..//orders/1", "/docs/orders/1"),
    ],
)
def test_the_public_route_sees_the_path_the_upstream_receives(
    shop: Shop, path: str, normalized: str
) -> None:
    reply = shop.get(path)
    assert reply.status == 200
    assert reply.json()["path"] == normalized


@pytest.mark.parametrize("path", ["/docs/..%2Forders/1", "/docs/..%5Corders/1"])
def test_an_encoded_slash_is_refused_by_envoy(shop: Shop, path: str) -> None:
    reply = shop.get(path)
    assert reply.status == 400
    # Envoy's own 400: authz's would carry a challenge and a JSON body.
    assert "www-authenticate" not in reply.headers
    assert reply.body == b""


# --- shadow and revocation ------------------------------------------------------------


def test_shadow_route_opens_nothing_and_reports_its_would_be_deny(shop: Shop) -> None:
    # orders-admin is a shadow route: without a token /orders/admin/* is what
    # orders-read makes it, a 401, and the shadow route's verdict is reported.
    reply = shop.get("/orders/admin/x")
    assert reply.status == 401
    assert reply.headers["www-authenticate"] == 'Bearer realm="shop"'
    entry = shop.access_log_entry("path", "/orders/admin/x")
    assert (entry["authz_decision"], entry["authz_reason"], entry["authz_route"]) == (
        "deny",
        "missing_token",
        "orders-read",
    )
    assert (entry["authz_shadow_route"], entry["authz_shadow_denied"]) == (
        "orders-admin",
        "missing_token",
    )
    record = shop.audit_record("/orders/admin/x")
    assert (record["decision"], record["status"], record["route"]) == ("deny", 401, "orders-read")
    assert record["shadow"] == [
        {
            "route": "orders-admin",
            "would": "deny",
            "status": 401,
            "reason": "missing_token",
            "detail": "no Authorization header",
        }
    ]


def test_shadow_route_would_deny_what_the_enforced_route_allows(shop: Shop) -> None:
    reply = shop.get("/orders/admin/stats", shop.token())
    assert reply.status == 200
    # The identity is the deciding route's (orders-read), not the shadow route's.
    assert reply.json()["headers"]["x-auth-scopes"] == "orders:read"
    entry = shop.access_log_entry("request_id", reply.json()["headers"]["x-request-id"])
    assert (entry["authz_decision"], entry["authz_route"]) == ("allow", "orders-read")
    assert (entry["authz_shadow_route"], entry["authz_shadow_denied"]) == (
        "orders-admin",
        "role_missing",
    )
    # The service log says so too, with the request id that finds the record.
    (line,) = [
        logged
        for logged in _json_lines(shop.stack.authz.log)
        if logged.get("request_id") == entry["request_id"]
    ]
    assert line["msg"] == "shadow route orders-admin would deny 403 role_missing"
    assert (line["shadow_route"], line["reason"], line["route"]) == (
        "orders-admin",
        "role_missing",
        "orders-read",
    )


def _json_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for text in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            lines.append(json.loads(text))
    return lines


def test_revoked_jti_is_denied_and_the_list_is_reread(shop: Shop) -> None:
    reply = shop.get("/orders/1", shop.token(jti="stolen-1"))
    assert reply.status == 401
    assert reply.headers["www-authenticate"] == (
        'Bearer realm="shop", error="invalid_token", '
        'error_description="The access token has been revoked"'
    )
    token = shop.token(jti="leaked-2")
    assert shop.get("/orders/1", token).status == 200
    fresh = shop.revoked.with_suffix(".new")
    fresh.write_text("jti:stolen-1\njti:leaked-2\n")
    os.replace(fresh, shop.revoked)

    def revoked() -> bool | None:
        return True if shop.get("/orders/1", token).status == 401 else None

    wait_for("the revocation list reload", revoked, 15, shop.stack.authz.log)
