"""Identity values and Envoy's header limits, through the real Envoy.

envoy/gateway-routes.yaml as shipped (only the ports rewritten) in front of
authz with the README's rules (subject, scopes, roles and tenant go upstream
on the orders routes) and a revocation list holding ``jti:123``:

- every verified claim value reaches the upstream exactly, percent-encoded
  (non-ASCII names, spaces, a "," that would otherwise forge a list item),
  and a number too large to carry is refused with 401 ``claim_invalid``;
- a ``jti`` that is not a string is refused the same way, so the number 123
  cannot slip past the listed ``jti:123``;
- a request whose headers, with the identity headers authz sets, would be past
  Envoy's limits (100 headers, 60 KiB, as Envoy counts them) gets authz's 431
  ``request_too_large``, and the audit record says so; without it Envoy would
  answer 500 with an empty body to what authz's record calls an allow. Right
  up to the limit, requests go through.

Every wait polls for a condition; nothing sleeps.
"""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import unquote

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from authz.dev.stack import HttpResponse, Stack, wait_for
from tests.e2e.conftest import KID, Keys
from tests.e2e.test_edge_envoy import Edge
from tests.e2e.test_gateway_rules import GATEWAY_ROUTES, readme_config, readme_stack
from tests.support.forge import rs256_signed_text

pytestmark = pytest.mark.e2e

CLAIM_INVALID = (
    'Bearer realm="shop", error="invalid_token", error_description="The access token is invalid"'
)
TOO_LARGE = (
    'Bearer realm="shop", error="invalid_request", '
    'error_description="The request headers are too large"'
)
# The shipped gateway's limits (max_headers_count, max_request_headers_kb).
MAX_COUNT, MAX_BYTES = 100, 60 * 1024


@pytest.fixture(scope="module")
def edge(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    with readme_stack(keys, tmp_path_factory.mktemp("e2e-identity"), "jti:123\n") as (stack, _):
        yield Edge(stack=stack, keys=keys)


def _path() -> str:
    return f"/orders/{uuid.uuid4().hex[:12]}"  # the orders-read route: every identity header


def _token(edge: Edge, **claims: Any) -> str:
    defaults: dict[str, Any] = {
        "scope": "orders:read",
        "tenant": "acme",
        "realm_access": {"roles": ["clerk", "support"]},
    }
    return edge.keys.token(**{**defaults, **claims})


def _send(edge: Edge, path: str, headers: Sequence[tuple[str, str]]) -> HttpResponse:
    """GET ``path`` with exactly ``headers`` (Host included), as written."""
    assert edge.stack.envoy is not None
    connection = http.client.HTTPConnection("127.0.0.1", edge.stack.envoy.listener_port, timeout=10)
    try:
        connection.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        reply = connection.getresponse()
        return HttpResponse(reply.status, reply.msg, reply.read())
    finally:
        connection.close()


def _request(
    token: str, padding: int = 0, more: Sequence[tuple[str, str]] = ()
) -> list[tuple[str, str]]:
    """Host, Authorization, ``padding`` filler headers and ``more``."""
    headers = [("host", "shop.example.com"), ("authorization", f"Bearer {token}")]
    headers += [(f"x-pad-{index}", "p") for index in range(padding)]
    return [*headers, *more]


def _assert_refused(edge: Edge, path: str, reply: HttpResponse, reason: str) -> dict[str, Any]:
    """authz's own deny (its challenge and JSON body), recorded as such; the upstream never
    saw the request. The audit record, for more checks."""
    assert reply.status == (431 if reason == "request_too_large" else 401), (
        reply.status,
        reply.body,
    )
    challenge = TOO_LARGE if reason == "request_too_large" else CLAIM_INVALID
    assert reply.headers["www-authenticate"] == challenge
    assert reply.json()["error"] in ("invalid_token", "invalid_request")
    record = edge.audit_record(path)
    assert (record["decision"], record["status"], record["reason"]) == (
        "deny",
        reply.status,
        reason,
    )
    entry = edge.access_log_entry("the request's log entry", path)
    assert (entry["status"], entry["authz_reason"]) == (reply.status, reason)
    assert path not in edge.upstream_paths()
    return record


def _logged(edge: Edge, text: str) -> str:
    """The first line of authz's log (where a deny's detail goes) holding ``text``."""
    log = edge.stack.authz.log

    def line() -> str | None:
        return next((x for x in log.read_text(errors="replace").splitlines() if text in x), None)

    return wait_for(f"authz to log {text!r}", line, 15, log)


# --- identity values ------------------------------------------------------------------------

IDENTITY: dict[str, dict[str, Any]] = {
    "sub-non-ascii-nfd-cjk-emoji": {"sub": "Zoe\u0308-e\u0301\u6771\u4eac-\U0001f680"},
    "sub-hebrew": {"sub": "\u05e9\u05dc\u05d5\u05dd"},
    "sub-padded": {"sub": " alice "},
    "sub-with-a-comma": {"sub": "alice,admin"},
    "tenant-leading-space": {"tenant": " acme"},
    "tenant-with-a-comma": {"tenant": "evilcorp,acme"},
    "tenant-percent": {"tenant": "100%25"},
    "role-holding-a-comma": {"realm_access": {"roles": ["a,b"]}},
    "role-padded": {"realm_access": {"roles": ["clerk", "support "]}},
    "role-non-ascii": {"realm_access": {"roles": ["\u00fcber-admins?no", "clerk"]}},
}


def _read_back(header: str, *, is_list: bool = False) -> Any:
    """What an upstream decodes with the standard function (split lists at ',')."""
    items = [unquote(item, errors="strict") for item in header.split(",")]
    return items if is_list else items[0]


@pytest.mark.parametrize("claims", IDENTITY.values(), ids=IDENTITY.keys())
def test_every_verified_identity_value_reaches_the_upstream_exactly(
    edge: Edge, claims: dict[str, Any]
) -> None:
    # Non-ASCII names, spaces, "," and "%" all go through, percent-encoded: the
    # header is visible ASCII, and decoding it gives back exactly the claim.
    token_claims = {
        "sub": "alice",
        "tenant": "acme",
        "realm_access": {"roles": ["clerk", "support"]},
        **claims,
    }
    reply = _send(edge, _path(), _request(_token(edge, **claims)))
    assert reply.status == 200, reply.body
    seen = reply.json()["headers"]
    for header in ("x-auth-subject", "x-auth-tenant", "x-auth-roles"):
        assert all(0x21 <= ord(c) <= 0x7E for c in seen[header]), seen[header]
    assert _read_back(seen["x-auth-subject"]) == token_claims["sub"]
    assert _read_back(seen["x-auth-tenant"]) == token_claims["tenant"]
    roles = token_claims["realm_access"]["roles"]
    assert _read_back(seen["x-auth-roles"], is_list=True) == roles


def test_a_string_claim_holding_a_comma_cannot_pass_for_a_list(edge: Edge) -> None:
    # The rules see one role, "clerk,orders-admin"; the upstream must not read a
    # real admin's two-item list.
    forged = _token(edge, realm_access={"roles": "clerk,orders-admin"})
    reply = _send(edge, _path(), _request(forged))
    assert reply.status == 200, reply.body
    assert reply.json()["headers"]["x-auth-roles"] == "clerk%2Corders-admin"
    real = _token(edge, realm_access={"roles": ["clerk", "orders-admin"]})
    reply = _send(edge, _path(), _request(real))
    assert reply.json()["headers"]["x-auth-roles"] == "clerk,orders-admin"


@pytest.mark.parametrize("tenant", ["1e400", "-1e400"])
def test_a_number_too_large_to_carry_is_refused(edge: Edge, tenant: str) -> None:
    # 1e400 parses as infinity: "inf" upstream would be a value the token never held.
    claims = json.dumps(edge.keys.claims(scope="orders:read"))
    payload = claims[:-1] + f', "tenant": {tenant}}}'
    assert isinstance(edge.keys.private, rsa.RSAPrivateKey)
    token = rs256_signed_text(payload, edge.keys.private, KID)
    path = _path()
    reply = _send(edge, path, _request(token))
    _assert_refused(edge, path, reply, "claim_invalid")


# --- jti ----------------------------------------------------------------------------------


@pytest.mark.parametrize("jti", [123, {"a": 1}], ids=["number", "object"])
def test_a_jti_that_is_not_a_string_is_refused(edge: Edge, jti: object) -> None:
    # The list holds jti:123; the number 123 would never match it.
    path = _path()
    reply = _send(edge, path, _request(_token(edge, jti=jti)))
    record = _assert_refused(edge, path, reply, "claim_invalid")
    assert record["jti"] is None  # nothing but a verified string is recorded as the jti
    # The listed id, as the string it is, is revoked.
    path = _path()
    reply = _send(edge, path, _request(_token(edge, jti="123")))
    assert reply.status == 401
    assert edge.audit_record(path)["reason"] == "token_revoked"


# --- Envoy's header limits ------------------------------------------------------------------


def test_95_request_headers_and_a_valid_token_are_a_431_not_envoys_500(edge: Edge) -> None:
    # Host, Authorization and 93 more: within Envoy's 100 as the client sent them,
    # but Envoy adds its own (:method, :path, :scheme, x-forwarded-for,
    # x-forwarded-proto, x-envoy-external-address, x-request-id) and then authz's.
    path = _path()
    reply = _send(edge, path, _request(_token(edge), padding=93))
    record = _assert_refused(edge, path, reply, "request_too_large")
    assert record["subject"] == "alice"  # the token was fine: the headers were not
    # The same request comfortably under the limit goes through, identity and all.
    path = _path()
    reply = _send(edge, path, _request(_token(edge), padding=20))
    assert reply.status == 200, reply.body
    assert reply.json()["headers"]["x-auth-subject"] == "alice"


def test_a_repeated_header_counts_once_per_line(edge: Edge) -> None:
    # Envoy holds and counts each line; it shows authz each one only with
    # encode_raw_headers (the map form would join them into one).
    path = _path()
    repeated = [("x-repeated", "r")] * 93
    reply = _send(edge, path, _request(_token(edge), more=repeated))
    _assert_refused(edge, path, reply, "request_too_large")
    _logged(edge, "102 request headers and 4 identity headers are 106 in Envoy")


def test_requests_go_through_up_to_envoys_header_count_and_one_more_is_a_431(
    edge: Edge,
) -> None:
    # authz counts as Envoy does: the last request that fits reaches the upstream
    # (an undercount would have been Envoy's 500), the next is authz's 431.
    token = _token(edge)
    statuses: dict[int, int] = {}
    for padding in range(80, 96):
        path = _path()
        statuses[padding] = _send(edge, path, _request(token, padding=padding)).status
    assert set(statuses.values()) == {200, 431}, statuses
    first = min(padding for padding, status in statuses.items() if status == 431)
    assert all(status == (200 if p < first else 431) for p, status in statuses.items()), statuses
    # Refused one header past the limit, not earlier.
    _logged(edge, f"are {MAX_COUNT + 1} in Envoy; its limit is {MAX_COUNT} ")


def test_requests_go_through_up_to_envoys_header_bytes_and_one_more_is_a_431(
    edge: Edge,
) -> None:
    # One large header: the largest that still reaches the upstream, and one byte more.
    token = _token(edge)

    def send(size: int) -> tuple[str, HttpResponse]:
        path = _path()
        return path, _send(edge, path, _request(token, more=[("x-large", "l" * size)]))

    fits, over = 50_000, MAX_BYTES
    assert send(fits)[1].status == 200
    while over - fits > 1:
        middle = (fits + over) // 2
        reply = send(middle)[1]
        assert reply.status in (200, 431), (middle, reply.status, reply.body)
        fits, over = (middle, over) if reply.status == 200 else (fits, middle)
    path, reply = send(over)
    _assert_refused(edge, path, reply, "request_too_large")
    _logged(edge, f"are {MAX_BYTES + 1} in Envoy; its limit is {MAX_BYTES} ")


def test_a_dry_run_does_not_turn_a_431_into_envoys_empty_500(
    keys: Keys, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Rehearsing the rules must not lift request_too_large: Envoy would refuse
    # that allow itself (an empty 500) while the record said allow.
    workdir = tmp_path_factory.mktemp("e2e-dry-run-431")
    revoked = workdir / "revoked.txt"
    revoked.write_text("")
    config = workdir / "authz.yaml"
    config.write_text(readme_config(keys, revoked) + "\ndry_run: true\n")
    with Stack(workdir, config, GATEWAY_ROUTES) as stack:
        edge = Edge(stack=stack, keys=keys)
        path = _path()
        reply = _send(edge, path, _request(_token(edge), padding=93))
        record = _assert_refused(edge, path, reply, "request_too_large")
        assert record["dry_run"] is None  # decided, not rehearsed
        # Any other deny is still lifted in a dry run: no token is allowed through.
        path = _path()
        reply = _send(edge, path, _request("not.a.token"))
        assert reply.status == 200, reply.body
        assert edge.audit_record(path)["dry_run"]["reason"] == "token_malformed"
