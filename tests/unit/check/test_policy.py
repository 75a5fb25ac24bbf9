"""policy: route matching (first match wins, deny by default) and every requirement type."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from authz.check.policy import Check, Policy, Route
from authz.check.request import RequestView
from authz.check.verify import VerifiedToken
from authz.config.loader import parse_config
from authz.errors import (
    ClaimMismatch,
    ConfigError,
    Forbidden,
    InvalidHost,
    InvalidPath,
    IssuerNotAllowed,
    NoRoute,
    RoleMissing,
)

ISS = "https://idp.example"
OTHER = "https://other.example"

BASE = f"""\
issuers:
  - issuer: {ISS}
    audiences: [api]
    algorithms: [RS256]
    keys: [{{pem_file: idp.pem}}]
  - issuer: {OTHER}
    audiences: [api]
    algorithms: [RS256]
    keys: [{{pem_file: other.pem}}]
"""


def _policy(text: str) -> Policy:
    return Policy.from_config(parse_config(BASE + text, source="test.yaml", base_dir=Path()))


def _request(
    path: str = "/",
    method: str = "GET",
    host: str = "api.example.com",
    **extensions: str,
) -> RequestView:
    return RequestView(method=method, path=path, host=host, context_extensions=extensions)


def _token(issuer: str = ISS, **claims: Any) -> VerifiedToken:
    return _token_from(claims, issuer)


def _token_from(claims: dict[str, Any], issuer: str = ISS) -> VerifiedToken:
    payload = {"iss": issuer, "sub": "alice", **claims}
    return VerifiedToken(
        issuer=issuer, subject="alice", claims=payload, kid="k1", algorithm="RS256"
    )


def _route_name(policy: Policy, request: RequestView) -> str:
    return policy.match(request).route.name


# --- matching --------------------------------------------------------------------------

ROUTES = """\
routes:
  - name: health
    match: {path: /healthz}
    mode: public
  - name: payments
    match: {context_extensions: {service: payments}}
    mode: protected
  - name: admin-host
    match: {hosts: [admin.example.com, "*.admin.example.com"]}
    mode: protected
  - name: order-item
    match:
      pattern: /orders/{order}/items/{item}
      methods: [GET]
    mode: protected
  - name: orders-write
    match: {prefix: /orders, methods: [POST, PUT, DELETE]}
    mode: protected
  - name: orders
    match: {prefix: /orders}
    mode: optional
  - name: root
    match: {path: /}
    mode: public
"""


@pytest.fixture(scope="module")
def policy() -> Policy:
    return _policy(ROUTES)


@pytest.mark.parametrize(
    ("request_view", "route"),
    [
        (_request("/healthz"), "health"),
        (_request("/healthz/"), "health"),
        (_request("/healthz/?probe=1"), "health"),
        (_request("/healthz?probe=%2e%2e"), "health"),
        # context_extensions win over the path (earlier route)
        (_request("/healthz/x", service="payments"), "payments"),
        (_request("/orders/1", service="payments"), "payments"),
        (_request("/orders/1", service="orders"), "orders"),
        # hosts: exact, wildcard suffix, port and case ignored
        (_request("/x", host="admin.example.com"), "admin-host"),
        (_request("/x", host="ADMIN.example.com:8443"), "admin-host"),
        (_request("/x", host="eu.admin.example.com"), "admin-host"),
        (_request("/x", host="a.b.admin.example.com"), "admin-host"),
        # patterns take one non-empty segment per parameter
        (_request("/orders/7/items/3"), "order-item"),
        (_request("/orders/7/items/3/"), "order-item"),
        (_request("/orders/7/items/3", "POST"), "orders-write"),
        (_request("/orders/7/items"), "orders"),
        (_request("/orders/7/items/3/x"), "orders"),
        (_request("/orders/%C3%A9/items/3"), "order-item"),
        # prefixes take whole segments
        (_request("/orders"), "orders"),
        (_request("/orders/"), "orders"),
        (_request("/orders", "DELETE"), "orders-write"),
        (_request("/"), "root"),
        (_request("/?x=1"), "root"),
    ],
)
def test_first_matching_route_wins(policy: Policy, request_view: RequestView, route: str) -> None:
    assert _route_name(policy, request_view) == route


@pytest.mark.parametrize(
    "request_view",
    [
        _request("/orders-archive"),
        _request("/ordersx/1"),
        _request("/Orders/1"),
        _request("/healthzz"),
        _request("/x", host="admin.example.com.evil.test"),
        _request("/x", host="xadmin.example.com"),
        _request("/x", host="example.com"),
        _request("/other", service="billing"),
    ],
)
def test_unmatched_requests_are_denied(policy: Policy, request_view: RequestView) -> None:
    with pytest.raises(NoRoute) as info:
        policy.match(request_view)
    assert info.value.status == 403
    assert info.value.reason == "no_route"


def test_methods_are_case_sensitive() -> None:
    # RFC 9110: "get" is not GET.
    policy = _policy("routes:\n  - name: r\n    match: {methods: [GET]}\n    mode: public\n")
    assert _route_name(policy, _request(method="GET")) == "r"
    with pytest.raises(NoRoute):
        policy.match(_request(method="get"))


def test_wildcard_host_does_not_take_the_bare_domain() -> None:
    policy = _policy(
        'routes:\n  - name: w\n    match: {hosts: ["*.example.com"]}\n    mode: public\n'
    )
    assert _route_name(policy, _request(host="a.example.com")) == "w"
    with pytest.raises(NoRoute):
        policy.match(_request(host="example.com"))
    with pytest.raises(NoRoute):
        policy.match(_request(host="aexample.com"))


def test_pattern_parameters(policy: Policy) -> None:
    match = policy.match(_request("/orders/o-7/items/%C3%A9b/?x=1"))
    assert match.route.name == "order-item"
    assert match.path == "/orders/o-7/items/%C3%A9b/"  # as Envoy forwards it
    assert dict(match.params) == {"order": "o-7", "item": "éb"}


def test_invalid_path_is_refused_before_matching(policy: Policy) -> None:
    with pytest.raises(InvalidPath):
        policy.match(_request("/healthz/..%2f..%2fadmin"))
    with pytest.raises(InvalidPath):
        policy.match(_request("/../healthz"))
    with pytest.raises(InvalidPath):
        policy.match(_request("//healthz"))  # Envoy merges slashes: not what it forwards


@pytest.mark.parametrize("host", ["admin.example.com:", "evil@admin.example.com", "admin:x"])
def test_invalid_host_is_refused_before_matching(policy: Policy, host: str) -> None:
    with pytest.raises(InvalidHost):
        policy.match(_request("/x", host=host))


def test_skipped_routes_are_reported_with_the_failing_condition(policy: Policy) -> None:
    skipped: list[tuple[Route, str]] = []
    policy.match(_request("/orders/1", "PUT"), skipped)
    assert [(route.name, why) for route, why in skipped] == [
        ("health", "path"),
        ("payments", "context_extensions"),
        ("admin-host", "host"),
        ("order-item", "path"),
    ]
    assert skipped[3][0].describe("path") == "pattern /orders/{order}/items/{item}"


def test_all_extensions_must_match() -> None:
    policy = _policy(
        "routes:\n  - name: r\n    match: {context_extensions: {a: '1', b: '2'}}\n"
        "    mode: public\n"
    )
    assert _route_name(policy, _request(a="1", b="2", c="3")) == "r"
    with pytest.raises(NoRoute):
        policy.match(_request(a="1"))
    with pytest.raises(NoRoute):
        policy.match(_request(a="1", b="3"))


def test_no_routes_means_one_implicit_protected_route_that_ignores_the_path() -> None:
    policy = Policy.from_config(parse_config(BASE, source="t.yaml", base_dir=Path()))
    assert not policy.explicit
    for raw in ("/", "/anything/../at/all?x", "", "/a%2fb"):
        match = policy.match(_request(raw))
        assert match.route.name == ""
        assert match.route.mode == "protected"
        assert match.route.requirement is None


def test_identity_names_cover_every_route() -> None:
    policy = _policy(
        """\
identity:
  headers: {x-auth-subject: sub}
routes:
  - name: a
    match: {prefix: /a}
    mode: protected
    identity: {headers: {x-auth-user: sub, x-auth-tenant: tenant}}
  - name: b
    match: {prefix: /b}
    mode: protected
    identity: {payload_header: x-auth-payload}
"""
    )
    assert set(policy.identity_names) == {
        "x-auth-subject",
        "x-auth-user",
        "x-auth-tenant",
        "x-auth-payload",
    }


# --- paths an upstream may read as another path -----------------------------------------

# The docs/rules.md shape: a public /docs, an admin rule before broader ones.
READERS = """\
routes:
  - name: docs
    match: {prefix: /docs}
    mode: public
  - name: refund
    match: {pattern: "/payments/{payment}/refunds", methods: [POST], ignore_case: true}
    mode: protected
  - name: admin
    match: {prefix: /orders/admin, ignore_case: true}
    mode: protected
  - name: health
    match: {path: /healthz, ignore_case: true}
    mode: public
  - name: exact-admin
    match: {prefix: /exact/admin}
    mode: protected
  - name: rest
    match: {prefix: /}
    mode: optional
"""


@pytest.fixture(scope="module")
def readers() -> Policy:
    return _policy(READERS)


@pytest.mark.parametrize(
    "path",
    [
        "/docs/%EF%BC%8E%EF%BC%8E/orders/admin/x",
        "/docs/%EF%BC%8F/x",
        "/docs/%E2%80%A4%E2%80%A4/orders/admin/x",
        "/docs/%E2%80%A5/orders/admin/x",
        "/docs/%EF%B9%92%EF%B9%92/orders/admin/x",
        "/orders/%EF%BD%81dmin/x",
        "/orders/admin./x",
        "/orders/admin%20/x",
        "/payments/7/refunds.",
        "/payments/7/refunds%20",
    ],
)
def test_a_path_an_upstream_may_read_as_another_is_refused_before_any_route(
    readers: Policy, path: str
) -> None:
    skipped: list[tuple[Route, str]] = []
    with pytest.raises(InvalidPath) as info:
        readers.match(_request(path, "POST"), skipped)
    assert (info.value.status, info.value.reason) == (400, "invalid_path")
    assert skipped == []  # refused before the public /docs route could take it


def test_the_paths_section_turns_each_refusal_off() -> None:
    allow_all = "paths: {lookalikes: allow, trailing_dot_or_space: allow}\n"
    lax = _policy(allow_all + READERS)
    assert _route_name(lax, _request("/docs/%EF%BC%8E%EF%BC%8E/orders/admin/x")) == "docs"
    assert _route_name(lax, _request("/orders/admin./x")) == "rest"
    only_dots = _policy("paths: {lookalikes: allow}\n" + READERS)
    assert _route_name(only_dots, _request("/orders/%EF%BD%81dmin")) == "rest"
    with pytest.raises(InvalidPath):
        only_dots.match(_request("/orders/admin%20/x"))
    # A shadow route's successors read paths as the policy does.
    assert lax.after(lax.routes[0]).reading == lax.reading
    assert [route.name for route in lax.after(lax.routes[3]).routes] == ["exact-admin", "rest"]


@pytest.mark.parametrize(
    ("method", "path", "route", "params"),
    [
        ("GET", "/orders/ADMIN/x", "admin", {}),
        ("GET", "/Orders/Admin", "admin", {}),
        ("GET", "/orders/adm%C4%B1n/x", "admin", {}),  # dotless i: "admin" to Java
        ("GET", "/orders/ADM%C4%B0N", "admin", {}),
        ("GET", "/orders/administrator", "rest", {}),  # whole segments still
        ("GET", "/HEALTHZ/", "health", {}),
        ("GET", "/healthz/x", "rest", {}),
        ("POST", "/payments/Ab-7/Refunds", "refund", {"payment": "Ab-7"}),  # kept as sent
        ("POST", "/PAYMENTS/7/REFUNDS/", "refund", {"payment": "7"}),
        ("GET", "/payments/7/Refunds", "rest", {}),  # the method still decides
        # The default is exact: a case-insensitive upstream needs ignore_case.
        ("GET", "/exact/admin/x", "exact-admin", {}),
        ("GET", "/exact/ADMIN/x", "rest", {}),
    ],
)
def test_ignore_case_compares_path_and_pattern_literals_case_folded(
    readers: Policy, method: str, path: str, route: str, params: dict[str, str]
) -> None:
    match = readers.match(_request(path, method))
    assert (match.route.name, dict(match.params)) == (route, params)
    assert match.path == path  # what the upstream gets is unchanged


def test_ignore_case_folds_the_configured_side_too() -> None:
    policy = _policy(
        "routes:\n"
        "  - name: a\n    match: {prefix: /Orders/ADMIN, ignore_case: true}\n    mode: public\n"
        '  - name: p\n    match: {pattern: "/X/{Id}/Y", ignore_case: true}\n    mode: public\n'
    )
    assert _route_name(policy, _request("/orders/admin/1")) == "a"
    match = policy.match(_request("/x/Q/y"))
    assert (match.route.name, dict(match.params)) == ("p", {"Id": "Q"})
    assert policy.routes[0].describe("path") == "prefix /orders/admin (ignoring case)"


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        (
            "  - name: r\n    match: {ignore_case: true}\n    mode: public\n",
            "ignore_case needs a path, prefix or pattern",
        ),
        (
            "  - name: r\n    match: {prefix: /orders/admin.}\n    mode: public\n",
            "no request can reach this path: segment 2 of the path ends in '.'",
        ),
        (
            "  - name: r\n    match: {path: /%EF%BD%81dmin}\n    mode: public\n",
            "no request can reach this path: a percent-escape in path decodes to U+FF41",
        ),
        (
            '  - name: r\n    match: {pattern: "/{id}/x%20"}\n    mode: public\n',
            "ends in a space",
        ),
    ],
)
def test_routes_no_request_could_reach_are_configuration_errors(routes: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        _policy("routes:\n" + routes)
    assert "test.yaml:" in str(info.value)


def test_with_the_refusal_off_such_a_route_is_reachable() -> None:
    text = "paths: {trailing_dot_or_space: allow}\nroutes:\n"
    policy = _policy(text + "  - name: r\n    match: {prefix: /orders/admin.}\n    mode: public\n")
    assert _route_name(policy, _request("/orders/admin./x")) == "r"


@pytest.mark.parametrize("value", ["yes", "true", "remove"])
def test_paths_settings_are_refuse_or_allow(value: str) -> None:
    with pytest.raises(ConfigError, match=r"paths\.lookalikes"):
        _policy(f"paths: {{lookalikes: {value}}}\n")


def test_without_routes_the_path_is_not_examined() -> None:
    policy = Policy.from_config(parse_config(BASE, source="t.yaml", base_dir=Path()))
    for raw in ("/docs/%EF%BC%8E%EF%BC%8E/admin", "/admin./x"):
        assert policy.match(_request(raw)).route.name == ""


# --- requirements ----------------------------------------------------------------------


def _check(requirements: str, token: VerifiedToken, roles_claim: str = "") -> Check:
    text = (roles_claim and f"roles_claim: {roles_claim}\n") + (
        "routes:\n  - name: r\n    mode: protected\n    requirements:\n"
        + "".join(f"      {line}\n" for line in requirements.splitlines())
    )
    policy = _policy(text)
    route = policy.routes[0]
    check = policy.authorize(route, token)
    assert check is not None
    return check


def _error(check: Check) -> Forbidden:
    assert not check.passed
    assert check.error is not None
    return check.error


def test_route_without_requirements_has_nothing_to_check() -> None:
    policy = _policy("routes:\n  - name: r\n    mode: protected\n")
    assert policy.authorize(policy.routes[0], _token()) is None


@pytest.mark.parametrize(
    ("claims", "passed"),
    [
        ({"scope": "orders:read orders:write"}, True),
        ({"scope": "orders:write orders:read extra"}, True),
        ({"scp": ["orders:read", "orders:write"]}, True),
        ({"scp": "orders:read orders:write"}, True),
        ({"scope": "orders:read"}, False),
        ({"scope": "orders:read orders:writer"}, False),
        ({"scope": "ORDERS:READ ORDERS:WRITE"}, False),
        ({}, False),
        ({"scope": ["orders:read", "orders:write"]}, False),  # malformed: fails
        ({"scp": ["orders:read orders:write"]}, False),  # malformed: fails
    ],
)
def test_scopes_are_all_required(claims: dict[str, Any], passed: bool) -> None:
    check = _check("scopes: [orders:read, orders:write]", _token(**claims))
    assert check.passed is passed
    if not passed:
        error = _error(check)
        assert type(error) is Forbidden
        assert error.reason == "insufficient_scope"
        assert error.scope == "orders:read orders:write"


def test_scope_failure_names_the_missing_scope() -> None:
    error = _error(_check("scopes: [orders:read, orders:write]", _token(scope="orders:read")))
    assert error.detail == "missing scope orders:write"


@pytest.mark.parametrize(
    ("issuer", "passed"), [(ISS, True), (OTHER, False)], ids=["listed", "not-listed"]
)
def test_issuers(issuer: str, passed: bool) -> None:
    check = _check(f"issuers: [{ISS}]", _token(issuer))
    assert check.passed is passed
    if not passed:
        error = _error(check)
        assert isinstance(error, IssuerNotAllowed)
        assert error.reason == "issuer_not_allowed"
        assert error.status == 403
        assert error.rfc6750_error == "insufficient_scope"


@pytest.mark.parametrize(
    ("claims", "passed"),
    [
        ({"realm_access": {"roles": ["admin", "clerk"]}}, True),
        ({"realm_access": {"roles": ["clerk"]}}, False),
        ({"realm_access": {"roles": "admin"}}, False),  # one role: "admin" only
        ({"realm_access": {"roles": []}}, False),
        ({"realm_access": ["admin", "clerk"]}, False),
        ({"realm_access": {"roles": ["admin", 5]}}, False),
        ({"roles": ["admin", "clerk"]}, False),  # the wrong place
        ({}, False),
    ],
)
def test_roles_from_a_nested_claim(claims: dict[str, Any], passed: bool) -> None:
    check = _check("roles: [admin, clerk]", _token(**claims), roles_claim="realm_access.roles")
    assert check.passed is passed
    if not passed:
        assert isinstance(_error(check), RoleMissing)
        assert _error(check).scope == ""


def test_roles_default_claim_and_single_string() -> None:
    assert _check("roles: [admin]", _token(roles=["admin"])).passed
    assert _check("roles: [admin]", _token(roles="admin")).passed
    assert not _check("roles: [admin]", _token(roles="admin clerk")).passed


def test_route_roles_claim_overrides_the_default() -> None:
    policy = _policy(
        "roles_claim: realm_access.roles\nroutes:\n  - name: r\n    mode: protected\n"
        '    roles_claim: ["https://example.com/roles"]\n    requirements: {roles: [admin]}\n'
    )
    route = policy.routes[0]
    dotted = _token_from({"https://example.com/roles": ["admin"]})
    nested = _token(realm_access={"roles": ["admin"]})
    passed, failed = policy.authorize(route, dotted), policy.authorize(route, nested)
    assert passed is not None
    assert passed.passed
    assert failed is not None
    assert not failed.passed


@pytest.mark.parametrize(
    ("matcher", "claims", "passed"),
    [
        ("{claim: tenant, equals: acme}", {"tenant": "acme"}, True),
        ("{claim: tenant, equals: acme}", {"tenant": "Acme"}, False),
        ("{claim: tenant, equals: acme}", {"tenant": ["acme"]}, False),
        ("{claim: tenant, equals: acme}", {}, False),
        ("{claim: org.id, equals: 42}", {"org": {"id": 42}}, True),
        ("{claim: org.id, equals: 42}", {"org": {"id": 42.0}}, True),
        ("{claim: org.id, equals: 42}", {"org": {"id": "42"}}, False),
        ("{claim: org.id, equals: 1}", {"org": {"id": True}}, False),
        ("{claim: verified, equals: true}", {"verified": True}, True),
        ("{claim: verified, equals: true}", {"verified": 1}, False),
        ("{claim: verified, equals: true}", {"verified": "true"}, False),
        ("{claim: level, one_of: [gold, silver]}", {"level": "silver"}, True),
        ("{claim: level, one_of: [gold, silver]}", {"level": "bronze"}, False),
        ("{claim: level, one_of: [gold, silver]}", {"level": ["gold"]}, False),
        ("{claim: groups, contains: staff}", {"groups": ["a", "staff"]}, True),
        ("{claim: groups, contains: staff}", {"groups": ["staffers"]}, False),
        ("{claim: groups, contains: staff}", {"groups": "staff"}, False),  # arrays only
        ("{claim: groups, contains: staff}", {"groups": "all staff"}, False),
        ("{claim: groups, contains: 7}", {"groups": [7]}, True),
        ("{claim: groups, contains: 7}", {"groups": ["7"]}, False),
        (
            '{claim: ["https://x.example/tier"], equals: pro}',
            {"https://x.example/tier": "pro"},
            True,
        ),
        ("{claim: https://x.example/tier, equals: pro}", {"https://x.example/tier": "pro"}, False),
    ],
)
def test_claim_matchers(matcher: str, claims: dict[str, Any], passed: bool) -> None:
    check = _check(f"claims: [{matcher}]", _token_from(claims))
    assert check.passed is passed
    if not passed:
        error = _error(check)
        assert isinstance(error, ClaimMismatch)
        assert error.reason == "claim_mismatch"


def test_claim_mismatch_detail_never_echoes_the_claim_value() -> None:
    error = _error(_check("claims: [{claim: tenant, equals: acme}]", _token(tenant="secret-co")))
    assert "secret-co" not in error.detail
    assert "tenant" in error.detail


def test_every_key_of_a_requirement_must_hold() -> None:
    requirements = "scopes: [orders:read]\nroles: [clerk]\nissuers: [" + ISS + "]"
    good = _token(scope="orders:read", roles=["clerk"])
    assert _check(requirements, good).passed
    check = _check(requirements, _token(scope="orders:read"))
    assert isinstance(_error(check), RoleMissing)
    # Every part is evaluated (explain shows them all); the first failure decides.
    check = _check(requirements, _token(OTHER))
    assert [child.passed for child in check.children] == [False, False, False]
    assert isinstance(_error(check), IssuerNotAllowed)


def test_any_of_needs_one_alternative() -> None:
    requirements = """\
any_of:
  - scopes: [orders:admin]
  - roles: [support]
  - claims: [{claim: tenant, equals: acme}]"""
    assert _check(requirements, _token(scope="orders:admin")).passed
    assert _check(requirements, _token(roles=["support"])).passed
    assert _check(requirements, _token(tenant="acme")).passed
    check = _check(requirements, _token(scope="orders:read", roles=["clerk"]))
    error = _error(check)
    assert type(error) is Forbidden
    assert error.reason == "insufficient_scope"
    # The challenge can name one scope set: the first alternative's.
    assert error.scope == "orders:admin"
    assert error.detail.startswith("none holds: missing scope orders:admin; missing role support")
    [any_of] = check.children
    assert len(any_of.children) == 3


def test_nested_all_of_inside_any_of() -> None:
    requirements = """\
scopes: [orders:read]
any_of:
  - all_of:
      - roles: [clerk]
      - claims: [{claim: tenant, equals: acme}]
  - roles: [admin]"""
    assert _check(requirements, _token(scope="orders:read", roles=["admin"])).passed
    assert _check(requirements, _token(scope="orders:read", roles=["clerk"], tenant="acme")).passed
    assert not _check(requirements, _token(scope="orders:read", roles=["clerk"])).passed
    # The scope requirement fails first, and names its scope.
    error = _error(_check(requirements, _token(roles=["admin"])))
    assert error.reason == "insufficient_scope"
    assert error.scope == "orders:read"
