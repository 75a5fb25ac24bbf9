"""Attacks on route matching: each a named case, with the answer it must get.

The rules: ``/public`` is public; everything else, ``/admin`` included, needs
a token with ``admin`` scope. Every attack sends no token and tries to be
taken for a ``/public`` request while an upstream (Tomcat, Spring, nginx,
IIS, a naive router) would serve ``/admin``. Each must end as either the
protected route (401) or a refused path or host (400), never as an allow.
Paths are sent as a client would write them, as if Envoy did not normalize:
what is not in Envoy's normal form is refused.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.check.decision import Decider, Decision
from authz.check.request import RequestView
from authz.check.verify import VerifiedToken
from authz.config.loader import parse_config

CONFIG = """\
issuers:
  - issuer: https://idp.example
    audiences: [api]
    algorithms: [RS256]
    keys: [{pem_file: unused.pem}]
routes:
  - name: public
    match: {prefix: /public, methods: [GET], hosts: [api.example.com]}
    mode: public
  - name: admin
    match: {prefix: /}
    mode: protected
    requirements: {scopes: [admin]}
"""


class NoVerifier:
    """No attack here carries a token; a verification attempt is a test failure."""

    def verify(self, token: str) -> VerifiedToken:
        raise AssertionError("no token was sent")


@pytest.fixture(scope="module")
def decider() -> Decider:
    return Decider(parse_config(CONFIG, source="t.yaml", base_dir=Path()), NoVerifier())


def _decide(
    decider: Decider, path: str, method: str = "GET", host: str = "api.example.com"
) -> Decision:
    return decider.decide(RequestView(method=method, path=path, host=host))


PROTECTED = (401, "missing_token")
REFUSED = (400, "invalid_path")
REFUSED_HOST = (400, "invalid_host")

ATTACKS = [
    # (name, path, method, host, expected)
    ("dot-dot-segment", "/public/../admin", "GET", "api.example.com", REFUSED),
    ("dot-dot-deep", "/public/a/b/../../../admin", "GET", "api.example.com", REFUSED),
    ("encoded-dot-dot", "/public/%2e%2e/admin", "GET", "api.example.com", REFUSED),
    ("mixed-case-encoded-dot-dot", "/public/%2E%2e/admin", "GET", "api.example.com", REFUSED),
    ("half-encoded-dot-dot", "/public/.%2e/admin", "GET", "api.example.com", REFUSED),
    (
        "double-encoded-dot-dot",
        "/public/%252e%252e/admin",
        "GET",
        "api.example.com",
        REFUSED,
    ),
    ("encoded-slash", "/public%2f..%2fadmin", "GET", "api.example.com", REFUSED),
    ("encoded-slash-lower", "/public/..%2fadmin", "GET", "api.example.com", REFUSED),
    ("encoded-backslash", "/public/..%5cadmin", "GET", "api.example.com", REFUSED),
    ("raw-backslash-iis", "/public\\..\\admin", "GET", "api.example.com", REFUSED),
    ("tomcat-path-parameter", "/public/..;/admin", "GET", "api.example.com", REFUSED),
    ("path-parameter-on-prefix", "/public;x=1", "GET", "api.example.com", REFUSED),
    ("null-byte", "/public%00/../admin", "GET", "api.example.com", REFUSED),
    ("overlong-utf8-dot", "/public/%c0%ae%c0%ae/admin", "GET", "api.example.com", REFUSED),
    ("iis-unicode-escape", "/public/%u002e%u002e/admin", "GET", "api.example.com", REFUSED),
    ("escape-above-root", "/../public", "GET", "api.example.com", REFUSED),
    ("prefix-lookalike", "/publicadmin", "GET", "api.example.com", PROTECTED),
    ("prefix-lookalike-dash", "/public-admin", "GET", "api.example.com", PROTECTED),
    ("case-variation", "/PUBLIC", "GET", "api.example.com", PROTECTED),
    ("method-case", "/public", "get", "api.example.com", PROTECTED),
    ("method-override", "/public", "POST", "api.example.com", PROTECTED),
    ("host-with-other-domain", "/public", "GET", "api.example.com.evil.test", PROTECTED),
    ("host-suffix", "/public", "GET", "evilapi.example.com", PROTECTED),
    ("absolute-form", "http://api.example.com/public/../admin", "GET", "api.example.com", REFUSED),
    ("fragment", "/public#/../admin", "GET", "api.example.com", REFUSED),
    ("query-holding-a-path", "/admin?/public", "GET", "api.example.com", PROTECTED),
    ("space-in-path", "/public /../admin", "GET", "api.example.com", REFUSED),
    ("normalized-tomcat-parameter", "/public/x;/../admin", "GET", "api.example.com", REFUSED),
    ("merged-slash-traversal", "/public//../admin", "GET", "api.example.com", REFUSED),
    # hosts an upstream reads as api.example.com, spelled to slip past the rule
    ("host-empty-port", "/public", "GET", "api.example.com:", REFUSED_HOST),
    ("host-userinfo", "/public", "GET", "evil@api.example.com", REFUSED_HOST),
    ("host-bad-port", "/public", "GET", "api.example.com:abc", REFUSED_HOST),
    ("host-double-dot", "/public", "GET", "api.example.com..", REFUSED_HOST),
]


@pytest.mark.parametrize(
    ("path", "method", "host", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in ATTACKS],
)
def test_route_bypass(
    decider: Decider, path: str, method: str, host: str, expected: tuple[int, str]
) -> None:
    decision = _decide(decider, path, method, host)
    assert (decision.status, decision.reason) == expected
    assert not decision.allowed


@pytest.mark.parametrize(
    ("path", "host"),
    [
        ("/public", "API.EXAMPLE.COM"),
        ("/public/", "api.example.com:443"),
        ("/public/x/", "api.example.com."),
        ("/public/caf%C3%A9", "api.example.com"),
    ],
)
def test_harmless_variants_still_reach_the_public_route(
    decider: Decider, path: str, host: str
) -> None:
    decision = _decide(decider, path, host=host)
    assert (decision.allowed, decision.route) == (True, "public")
