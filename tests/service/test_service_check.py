"""Authorization/Check against the real grpc.aio server, with real CheckRequests."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest
from google.rpc import code_pb2

from authz._proto.envoy.config.core.v3 import base_pb2
from authz._proto.envoy.service.auth.v3 import external_auth_pb2
from tests.service.svc_helpers import (
    AUDIENCE,
    ISSUER,
    KID,
    REALM,
    WAIT,
    Client,
    Signing,
    body,
    check_request,
    deny_headers,
    fingerprint,
    metadata,
    ok_headers,
)

CheckResponse = external_auth_pb2.CheckResponse

FORGED = {
    "x-auth-email": "mallory@example.com",
    "x-auth-subject": "mallory",
    "x-auth-scopes": "admin",
}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def assert_no_token_leak(response: CheckResponse, token: str) -> None:
    """Neither the token nor any sizeable segment of it appears anywhere in the response."""
    wire = response.SerializeToString()
    text = str(response)
    pieces = [token, *(segment for segment in token.split(".") if len(segment) >= 16)]
    for piece in pieces:
        assert piece.encode() not in wire
        assert piece not in text


def assert_denied(
    response: CheckResponse, *, http: int, grpc_code: int, reason: str, token: str = ""
) -> None:
    assert response.WhichOneof("http_response") == "denied_response"
    assert response.status.code == grpc_code
    assert response.denied_response.status.code == http
    meta = metadata(response)
    assert meta["decision"] == "deny"
    assert meta["reason"] == reason
    assert meta["status"] == http
    assert "sub" not in meta
    if token:
        assert meta["token_fp"] == fingerprint(token)
        assert_no_token_leak(response, token)
    else:
        assert "token_fp" not in meta
    headers = deny_headers(response)
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"


def invalid_token_challenge(description: str = "The access token is invalid") -> str:
    return f'Bearer realm="{REALM}", error="invalid_token", error_description="{description}"'


# --- allow -----------------------------------------------------------------


def test_valid_token_is_allowed_with_identity_headers(client: Client, signing: Signing) -> None:
    token = signing.token("alice", scopes="orders:read orders:write")
    response = client.check(check_request(bearer(token) | FORGED), timeout=WAIT)

    assert response.status.code == code_pb2.OK
    assert response.WhichOneof("http_response") == "ok_response"
    assert ok_headers(response) == {
        "x-auth-subject": "alice",
        "x-auth-issuer": ISSUER,
        "x-auth-scopes": "orders:read orders:write",
    }
    # Never the deprecated append=true (Envoy comma-appends to a forged value);
    # overwrite, stated explicitly.
    for option in response.ok_response.headers:
        assert not option.HasField("append")
        assert option.append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    # The forged header the server does not set must be removed; the ones it sets overwrite.
    assert list(response.ok_response.headers_to_remove) == ["x-auth-email"]
    assert metadata(response) == {
        "decision": "allow",
        "status": 200.0,
        "reason": "allowed",
        "iss": ISSUER,
        "sub": "alice",
        "token_fp": fingerprint(token),
    }
    assert_no_token_leak(response, token)


def test_valid_token_in_raw_header_map_is_allowed(client: Client, signing: Signing) -> None:
    token = signing.token("bob", scopes="orders:read")
    request = check_request(
        header_map=[
            (":path", b"/orders/42"),
            ("Authorization", f"Bearer {token}".encode()),
            ("X-Auth-Email", b"mallory@example.com"),
        ]
    )
    response = client.check(request, timeout=WAIT)

    assert response.status.code == code_pb2.OK
    assert ok_headers(response) == {
        "x-auth-subject": "bob",
        "x-auth-issuer": ISSUER,
        "x-auth-scopes": "orders:read",
    }
    assert list(response.ok_response.headers_to_remove) == ["x-auth-email"]
    assert metadata(response)["decision"] == "allow"
    assert metadata(response)["sub"] == "bob"
    assert_no_token_leak(response, token)


def test_identity_header_without_claim_is_removed_not_set(client: Client, signing: Signing) -> None:
    token = signing.token("carol", scopes="")
    response = client.check(check_request(bearer(token) | FORGED), timeout=WAIT)

    assert response.status.code == code_pb2.OK
    assert ok_headers(response) == {"x-auth-subject": "carol", "x-auth-issuer": ISSUER}
    # A forged x-auth-scopes must not survive just because the token has no scope.
    assert list(response.ok_response.headers_to_remove) == ["x-auth-email", "x-auth-scopes"]


def test_scheme_is_case_insensitive(client: Client, signing: Signing) -> None:
    token = signing.token("dave")
    response = client.check(check_request({"authorization": f"bEaReR {token}"}), timeout=WAIT)
    assert response.status.code == code_pb2.OK
    assert ok_headers(response)["x-auth-subject"] == "dave"


def test_audience_list_with_one_accepted_value_is_allowed(client: Client, signing: Signing) -> None:
    token = signing.token("erin", audience=["other-api", AUDIENCE])
    response = client.check(check_request(bearer(token)), timeout=WAIT)
    assert response.status.code == code_pb2.OK


# --- deny ------------------------------------------------------------------


def test_missing_token_is_401_with_bare_challenge(client: Client) -> None:
    response = client.check(check_request({"x-request-id": "r-1"}), timeout=WAIT)

    assert_denied(response, http=401, grpc_code=code_pb2.UNAUTHENTICATED, reason="missing_token")
    # RFC 6750 §3.1: no error attribute when the request has no credentials at all.
    assert deny_headers(response)["www-authenticate"] == f'Bearer realm="{REALM}"'
    assert body(response) == {
        "error": "unauthorized",
        "error_description": "A bearer token is required",
    }


def test_other_scheme_is_401_missing_token_and_not_echoed(client: Client, signing: Signing) -> None:
    token = signing.token()
    response = client.check(check_request({"authorization": f"Token {token}"}), timeout=WAIT)
    assert_denied(response, http=401, grpc_code=code_pb2.UNAUTHENTICATED, reason="missing_token")
    assert deny_headers(response)["www-authenticate"] == f'Bearer realm="{REALM}"'
    assert_no_token_leak(response, token)


def test_expired_token_is_401_token_expired(client: Client, signing: Signing) -> None:
    token = signing.token(ttl=-3600)
    response = client.check(check_request(bearer(token)), timeout=WAIT)
    assert_denied(
        response, http=401, grpc_code=code_pb2.UNAUTHENTICATED, reason="token_expired", token=token
    )
    assert deny_headers(response)["www-authenticate"] == invalid_token_challenge(
        "The access token expired"
    )
    assert body(response) == {
        "error": "invalid_token",
        "error_description": "The access token expired",
    }


def _flip_first_char(segment: str) -> str:
    # Changing the first character keeps the segment canonical base64url.
    return ("B" if segment[0] != "B" else "C") + segment[1:]


def _tampered_signature(signing: Signing) -> str:
    header, payload, signature = signing.token().split(".")
    return f"{header}.{payload}.{_flip_first_char(signature)}"


def _tampered_payload(signing: Signing) -> str:
    header, payload, signature = signing.token("alice").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


# Tokens that fail verification: each is a 401 invalid_token with its reason,
# fingerprinted in the metadata and never echoed.
BAD_TOKENS: dict[str, tuple[Callable[[Signing], str], str]] = {
    "wrong audience": (lambda s: s.token(audience="billing-api"), "audience_mismatch"),
    "unknown issuer": (lambda s: s.token(issuer="https://evil.example"), "unknown_issuer"),
    "unknown kid": (lambda s: s.token(kid="not-" + KID), "unknown_key"),
    "tampered signature": (_tampered_signature, "signature_invalid"),
    "tampered payload": (_tampered_payload, "signature_invalid"),
    "another key with our kid": (lambda s: s.token(key=s.other_key), "signature_invalid"),
}


@pytest.mark.parametrize("case", BAD_TOKENS)
def test_a_token_that_fails_verification_is_401_with_its_reason(
    client: Client, signing: Signing, case: str
) -> None:
    make, reason = BAD_TOKENS[case]
    token = make(signing)
    response = client.check(check_request(bearer(token)), timeout=WAIT)
    assert_denied(
        response, http=401, grpc_code=code_pb2.UNAUTHENTICATED, reason=reason, token=token
    )
    assert deny_headers(response)["www-authenticate"] == invalid_token_challenge()


def test_two_authorization_headers_in_header_map_is_400(client: Client, signing: Signing) -> None:
    first, second = signing.token("alice"), signing.token("bob")
    request = check_request(
        header_map=[
            ("authorization", f"Bearer {first}".encode()),
            ("Authorization", f"Bearer {second}".encode()),
        ]
    )
    response = client.check(request, timeout=WAIT)

    assert_denied(
        response,
        http=400,
        grpc_code=code_pb2.INVALID_ARGUMENT,
        reason="multiple_credentials",
    )
    assert deny_headers(response)["www-authenticate"] == (
        f'Bearer realm="{REALM}", error="invalid_request", '
        'error_description="The request carries more than one credential"'
    )
    assert body(response)["error"] == "invalid_request"
    assert_no_token_leak(response, first)
    assert_no_token_leak(response, second)


def test_duplicates_joined_by_envoy_in_headers_map_is_400(client: Client, signing: Signing) -> None:
    # Envoy's headers map joins duplicate headers with ",".
    first, second = signing.token("alice"), signing.token("bob")
    response = client.check(
        check_request({"authorization": f"Bearer {first},Bearer {second}"}), timeout=WAIT
    )
    assert_denied(
        response,
        http=400,
        grpc_code=code_pb2.INVALID_ARGUMENT,
        reason="multiple_credentials",
    )
    assert_no_token_leak(response, first)
    assert_no_token_leak(response, second)


def test_raw_value_that_is_not_utf8_is_denied(client: Client, signing: Signing) -> None:
    token = signing.token()
    raw = f"Bearer {token}".encode() + b"\xff"
    response = client.check(check_request(header_map=[("authorization", raw)]), timeout=WAIT)
    assert_denied(response, http=401, grpc_code=code_pb2.UNAUTHENTICATED, reason="token_malformed")
    assert_no_token_leak(response, token)


@pytest.mark.parametrize(
    ("value", "reason", "http"),
    [
        ("Bearer", "invalid_request", 400),
        ("Bearer    ", "invalid_request", 400),
        ("Bearer a b", "invalid_request", 400),
        ("Bearer not-a-jwt", "token_malformed", 401),
        ("Bearer a.b.c.d.e", "token_malformed", 401),
    ],
)
def test_malformed_credentials_are_denied(
    client: Client, value: str, reason: str, http: int
) -> None:
    response = client.check(check_request({"authorization": value}), timeout=WAIT)
    grpc_code = {400: code_pb2.INVALID_ARGUMENT, 401: code_pb2.UNAUTHENTICATED}[http]
    # A credential that reached verification is fingerprinted; one refused earlier is not.
    token = value.removeprefix("Bearer ").strip() if reason == "token_malformed" else ""
    assert_denied(response, http=http, grpc_code=grpc_code, reason=reason, token=token)


def test_oversized_token_is_401_token_too_large(client: Client) -> None:
    token = "a" * 9000 + ".b.c"
    response = client.check(check_request(bearer(token)), timeout=WAIT)
    assert_denied(response, http=401, grpc_code=code_pb2.UNAUTHENTICATED, reason="token_too_large")
    assert_no_token_leak(response, token)


def test_empty_request_is_denied_not_failed(client: Client) -> None:
    # A CheckRequest without attributes is still answered with a DENIED response,
    # never a failed RPC (which Envoy's failure_mode_allow could turn into an allow).
    response = client.check(external_auth_pb2.CheckRequest(), timeout=WAIT)
    assert_denied(response, http=401, grpc_code=code_pb2.UNAUTHENTICATED, reason="missing_token")
