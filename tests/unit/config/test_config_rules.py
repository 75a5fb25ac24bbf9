"""config: the routes, requirements, identity and revocation sections, and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.config.loader import parse_config
from authz.config.models import Config
from authz.config.rules import claim_path
from authz.errors import ConfigError

# Line numbers below refer to these texts.
BASE = """\
issuers:
  - issuer: https://idp.example
    audiences: [api]
    algorithms: [RS256]
    keys:
      - pem_file: keys/idp.pem
"""  # 6 lines; what follows starts on line 7


def _parse(text: str) -> Config:
    return parse_config(BASE + text, source="test.yaml", base_dir=Path("/etc/authz"))


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        _parse(text)
    return str(info.value)


def test_without_routes_nothing_changes() -> None:
    config = _parse("")
    assert config.routes is None
    assert config.roles_claim == "roles"
    assert config.revocation is None
    assert config.watch_interval_seconds == 2.0
    assert config.identity.payload_header is None
    assert config.identity.strip_authorization is False
    assert config.identity.max_header_bytes == 4096
    assert config.identity.max_total_bytes == 16384


def test_a_complete_rules_section() -> None:
    config = _parse(
        """\
roles_claim: realm_access.roles
watch_interval_seconds: 0.5
revocation: {file: revoked.txt}
identity:
  headers:
    x-auth-subject: sub
    x-auth-roles: realm_access.roles
    x-auth-tier: ["https://example.com/tier"]
  payload_header: x-auth-payload
  strip_authorization: true
  max_header_bytes: 1024
  max_total_bytes: 8192
routes:
  - name: orders-item
    match:
      hosts: [api.example.com, "*.api.example.com"]
      methods: [GET, HEAD]
      pattern: /orders/{id}
      context_extensions: {service: orders}
    mode: protected
    shadow: true
    roles_claim: resource_access.orders.roles
    requirements:
      issuers: [https://idp.example]
      scopes: [orders:read]
      roles: [clerk]
      claims:
        - {claim: tenant, equals: acme}
        - {claim: level, one_of: [1, 2]}
        - {claim: groups, contains: staff}
      any_of:
        - scopes: [orders:admin]
        - all_of: [{roles: [a]}, {roles: [b]}]
    identity:
      headers: {x-auth-user: sub}
      strip_authorization: false
  - name: public
    mode: public
"""
    )
    assert config.roles_claim == "realm_access.roles"
    assert config.watch_interval_seconds == 0.5
    assert config.revocation is not None
    assert config.resolve(config.revocation.file) == Path("/etc/authz/revoked.txt")
    assert config.identity.headers["x-auth-tier"] == ["https://example.com/tier"]
    assert config.routes is not None
    first, second = config.routes
    assert first.match.pattern == "/orders/{id}"
    assert first.match.context_extensions == {"service": "orders"}
    assert first.shadow
    assert first.requirements is not None
    assert first.requirements.claims is not None
    assert first.requirements.claims[1].one_of == [1, 2]
    assert second.match.path is None
    assert second.mode == "public"


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("sub", ("sub",)),
        ("realm_access.roles", ("realm_access", "roles")),
        (["https://example.com/roles"], ("https://example.com/roles",)),
        (["a.b", "c"], ("a.b", "c")),
    ],
)
def test_claim_paths(value: str | list[str], parts: tuple[str, ...]) -> None:
    assert claim_path(value) == parts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "routes:\n  - name: a\n    match: {prefix: /a}\n",
            "test.yaml:8: routes[0].mode: Field required",
        ),
        (
            "routes:\n  - name: a\n    mode: open\n",
            "test.yaml:9: routes[0].mode: Input should be 'public', 'optional' or 'protected'",
        ),
        (
            "routes:\n  - name: a\n    mode: public\n    requirements: {scopes: [x]}\n",
            "test.yaml:8: routes[0]: requirements need mode: protected (this route is public)",
        ),
        (
            "routes:\n  - name: a\n    mode: optional\n    requirements: {scopes: [x]}\n",
            "test.yaml:8: routes[0]: requirements need mode: protected (this route is optional)",
        ),
        (
            "routes:\n  - name: a\n    mode: public\n    match: {paht: /a}\n",
            "test.yaml:10: routes[0].match.paht: unknown key",
        ),
        (
            "routes:\n  - name: a\n    mode: public\n    match: {path: /a/}\n",
            "test.yaml:10: routes[0].match.path: write the path in its normal form '/a'",
        ),
        (
            "routes:\n  - name: a\n    mode: public\n    match: {prefix: /a//b}\n",
            "test.yaml:10: routes[0].match.prefix: write the path in its normal form '/a/b'",
        ),
        (
            "routes:\n  - name: a\n    mode: public\n    match: {path: /a/../b}\n",
            "test.yaml:10: routes[0].match.path: write the path in its normal form '/b'",
        ),
        (
            "routes:\n  - name: a\n    mode: public\n    match: {path: a}\n",
            "test.yaml:10: routes[0].match.path: not a valid path: path does not start with '/'",
        ),
        (
            "routes:\n  - name: a\n    mode: public\n    match: {path: '/a?x=1'}\n",
            "test.yaml:10: routes[0].match.path: write the path in its normal form '/a'",
        ),
        (
            "routes:\n  - name: a\n    mode: public\n    match: {path: /a, prefix: /b}\n",
            "test.yaml:10: routes[0].match: give at most one of path, prefix, pattern",
        ),
        (
            'routes:\n  - name: a\n    mode: public\n    match: {pattern: "/o/v{id}"}\n',
            "test.yaml:10: routes[0].match.pattern: a parameter is a whole segment",
        ),
        (
            'routes:\n  - name: a\n    mode: public\n    match: {pattern: "/o/{id}/{id}"}\n',
            "test.yaml:10: routes[0].match.pattern: a parameter name appears twice",
        ),
        (
            'routes:\n  - name: a\n    mode: public\n    match: {pattern: "/o/{1d}"}\n',
            "test.yaml:10: routes[0].match.pattern: a parameter is a whole segment",
        ),
        (
            "routes:\n  - name: a\n    mode: public\n    match: {hosts: [Api.Example]}\n",
            "test.yaml:10: routes[0].match: host 'Api.Example' is not a lower-case host name",
        ),
        (
            "routes:\n  - name: a\n    mode: public\n    match: {hosts: ['api:443']}\n",
            "test.yaml:10: routes[0].match: host 'api:443' is not",
        ),
        (
            "routes:\n  - name: a\n    mode: public\n    match: {methods: [get]}\n",
            "test.yaml:10: routes[0].match: method 'get' is not an upper-case HTTP method",
        ),
        (
            "routes:\n  - name: a\n    mode: public\n    match: {context_extensions: {a: 1}}\n",
            "test.yaml:10: routes[0].match.context_extensions.a: Input should be a valid string",
        ),
        (
            "routes:\n  - name: a b\n    mode: public\n",
            "test.yaml:8: routes[0]: route name 'a b'",
        ),
        (
            "routes: []\n",
            "test.yaml:7: routes: List should have at least 1 item",
        ),
        (
            "routes:\n  - name: a\n    mode: protected\n    requirements: {}\n",
            "test.yaml:10: routes[0].requirements: an empty requirement",
        ),
        (
            "routes:\n  - name: a\n    mode: protected\n    requirements: {scopes: ['a b']}\n",
            "test.yaml:10: routes[0].requirements: scope 'a b' is not an OAuth scope token",
        ),
        (
            "routes:\n  - name: a\n    mode: protected\n"
            "    requirements: {claims: [{claim: t, equals: x, one_of: [y]}]}\n",
            "test.yaml:10: routes[0].requirements.claims[0]: give exactly one of equals, "
            "one_of, contains (got equals, one_of)",
        ),
        (
            "routes:\n  - name: a\n    mode: protected\n    requirements: {claims: [{claim: t}]}\n",
            "test.yaml:10: routes[0].requirements.claims[0]: give exactly one of equals, "
            "one_of, contains",
        ),
        (
            "routes:\n  - name: a\n    mode: protected\n"
            "    requirements: {claims: [{claim: a..b, equals: x}]}\n",
            "test.yaml:10: routes[0].requirements.claims[0].claim: a claim path is NAME",
        ),
        (
            "routes:\n  - name: a\n    mode: protected\n"
            "    requirements: {any_of: [{roles: []}]}\n",
            "test.yaml:10: routes[0].requirements.any_of[0].roles: List should have at least 1",
        ),
        (
            "roles_claim: .roles\n",
            "test.yaml:7: roles_claim: a claim path is NAME",
        ),
        (
            "watch_interval_seconds: -1\n",
            "test.yaml:7: watch_interval_seconds: Input should be greater than or equal to 0",
        ),
        (
            "revocation: {path: x}\n",
            "test.yaml:7: revocation.file: Field required\n"
            "test.yaml:7: revocation.path: unknown key",
        ),
        (
            "identity:\n  payload_header: x-payload\n",
            "test.yaml:7: identity: header 'x-payload' must start with the namespace 'x-auth-'",
        ),
        (
            "identity:\n  headers: {x-auth-a: sub}\n  payload_header: x-auth-a\n",
            "test.yaml:7: identity: payload_header 'x-auth-a' is also in headers",
        ),
        (
            "identity:\n  headers: {x-auth-a: a.}\n",
            "test.yaml:7: identity: header 'x-auth-a': a claim path is NAME",
        ),
        (
            "identity:\n  max_header_bytes: 10\n",
            "test.yaml:8: identity.max_header_bytes: Input should be greater than or equal to 64",
        ),
    ],
)
def test_errors_name_line_key_and_problem(text: str, expected: str) -> None:
    assert _error(text).startswith(expected)


def test_no_routes_can_be_said_explicitly_but_not_beside_routes() -> None:
    assert _parse("").allow_no_routes is False
    config = _parse("allow_no_routes: true\n")
    assert (config.routes, config.allow_no_routes) == (None, True)
    message = _error("allow_no_routes: true\nroutes:\n  - name: a\n    mode: public\n")
    assert message == (
        "test.yaml:7: allow_no_routes: says this file has no routes on purpose, "
        "but it has routes: remove one or the other"
    )
    # Strict, as every key: 1 is not true.
    assert "allow_no_routes: Input should be a valid boolean" in _error("allow_no_routes: 1\n")


def test_route_names_are_unique() -> None:
    message = _error("routes:\n  - name: a\n    mode: public\n  - name: a\n    mode: protected\n")
    assert message == "test.yaml:10: routes[1].name: route name 'a' is used twice"


def test_required_issuers_must_be_configured_even_when_nested() -> None:
    message = _error(
        """\
routes:
  - name: a
    mode: protected
    requirements:
      any_of:
        - scopes: [x]
        - issuers: [https://idp.example, https://typo.example]
"""
    )
    assert message == (
        "test.yaml:13: routes[0].requirements.any_of[1].issuers[1]: "
        "issuer 'https://typo.example' is not one of the configured issuers"
    )


@pytest.mark.parametrize(
    ("identity", "problem"),
    [
        (
            "{headers: {x-user: sub}}",
            "header 'x-user' must start with the namespace 'x-auth-', or a client could forge it",
        ),
        ("{headers: {X-Auth-User: sub}}", "header 'X-Auth-User' is not a lower-case header name"),
        (
            "{payload_header: payload}",
            "header 'payload' must start with the namespace 'x-auth-', or a client could forge it",
        ),
    ],
)
def test_route_identity_headers_stay_in_the_namespace(identity: str, problem: str) -> None:
    message = _error(f"routes:\n  - name: a\n    mode: public\n    identity: {identity}\n")
    assert message == f"test.yaml:10: routes[0].identity: {problem}"


def test_unknown_key_in_a_requirement_is_an_error() -> None:
    # A typo must never turn a requirement off.
    message = _error("routes:\n  - name: a\n    mode: protected\n    requirements: {scope: [x]}\n")
    assert message.startswith("test.yaml:10: routes[0].requirements.scope: unknown key")


def test_a_route_can_turn_the_payload_header_off_but_not_on_by_true() -> None:
    config = _parse(
        "identity: {payload_header: x-auth-payload}\n"
        "routes:\n  - name: a\n    mode: public\n    identity: {payload_header: false}\n"
    )
    assert config.routes is not None
    identity = config.routes[0].identity
    assert identity is not None
    assert identity.payload_header is False
    message = _error(
        "routes:\n  - name: a\n    mode: public\n    identity: {payload_header: true}\n"
    )
    assert message.startswith("test.yaml:10: routes[0].identity.payload_header")
