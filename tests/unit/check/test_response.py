"""response.build: a Decision as Envoy's CheckResponse; the one status table."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.protobuf import json_format

from authz._proto.envoy.config.core.v3 import base_pb2
from authz._proto.envoy.service.auth.v3 import external_auth_pb2
from authz.check.decision import Decider, Decision, Unenforced
from authz.check.request import RequestView
from authz.check.response import AllowParts, DenyParts, Encoded, build, parts, www_authenticate
from authz.check.verify import VerifiedToken, Verifier
from authz.config.loader import parse_config
from authz.dev.tokens import claims_for, mint
from authz.errors import (
    AuthzError,
    ClaimMismatch,
    Forbidden,
    InternalError,
    InvalidRequest,
    IssuerNotAllowed,
    KeysUnavailable,
    MissingCredentials,
    MultipleCredentials,
    NoRoute,
    RoleMissing,
    SignatureInvalid,
    TokenExpired,
    TokenRevoked,
)
from tests.support.doubles import StaticKeySource

ISS = "https://idp.example"
INVALID_TOKEN_CHALLENGE = (
    'Bearer realm="authz", error="invalid_token", error_description="The access token is invalid"'
)
# google.rpc.Code values
OK, INVALID_ARGUMENT, PERMISSION_DENIED, UNAVAILABLE, UNAUTHENTICATED = 0, 3, 7, 14, 16


def _allow(
    headers_to_set: tuple[tuple[str, str], ...] = (("x-auth-subject", "alice"),),
    headers_to_remove: tuple[str, ...] = ("x-auth-scopes",),
    subject: str | None = "alice",
) -> Decision:
    token = VerifiedToken(
        issuer=ISS, subject=subject, claims={"sub": subject}, kid="k1", algorithm="RS256"
    )
    return Decision.allow(
        token=token,
        token_fingerprint="0123456789abcdef",
        headers_to_set=headers_to_set,
        headers_to_remove=headers_to_remove,
    )


def _deny(error: AuthzError, fingerprint: str = "") -> Decision:
    return Decision.deny(error, token_fingerprint=fingerprint)


def _headers(options: Any) -> dict[str, str]:
    result: dict[str, str] = {}
    for option in options:
        assert option.header.key not in result, f"duplicate header {option.header.key}"
        result[option.header.key] = option.header.value
    return result


def _metadata(response: external_auth_pb2.CheckResponse) -> dict[str, Any]:
    return json_format.MessageToDict(response.dynamic_metadata)


# --- allow -----------------------------------------------------------------------------


def test_allow_is_ok_with_identity_headers() -> None:
    response = build(
        _allow(
            headers_to_set=(("x-auth-subject", "alice"), ("x-auth-issuer", ISS)),
            headers_to_remove=("x-auth-email", "x-auth-scopes"),
        ),
        "authz",
    )
    assert response.status.code == OK
    assert response.WhichOneof("http_response") == "ok_response"
    ok = response.ok_response
    assert [(h.header.key, h.header.value) for h in ok.headers] == [
        ("x-auth-subject", "alice"),
        ("x-auth-issuer", ISS),
    ]
    assert list(ok.headers_to_remove) == ["x-auth-email", "x-auth-scopes"]
    assert list(ok.response_headers_to_add) == []


def test_allow_headers_overwrite_rather_than_append() -> None:
    # Never append=true (Envoy would comma-append to a forged value); overwrite
    # stated explicitly for Envoy releases that honour append_action here.
    response = build(_allow(), "authz")
    [option] = response.ok_response.headers
    assert not option.HasField("append")
    assert option.append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    assert not option.keep_empty_value


def test_allow_without_identity() -> None:
    response = build(_allow(headers_to_set=(), headers_to_remove=()), "authz")
    assert response.status.code == OK
    assert response.HasField("ok_response")
    assert list(response.ok_response.headers) == []


def test_allow_metadata() -> None:
    response = build(_allow(), "authz")
    assert _metadata(response) == {
        "decision": "allow",
        "status": 200.0,
        "reason": "allowed",
        "iss": ISS,
        "sub": "alice",
        "token_fp": "0123456789abcdef",
    }


def test_allow_metadata_without_subject() -> None:
    metadata = _metadata(build(_allow(subject=None), "authz"))
    assert "sub" not in metadata
    assert metadata["iss"] == ISS


# --- deny ------------------------------------------------------------------------------


def test_invalid_token_deny() -> None:
    response = build(_deny(SignatureInvalid("bad signature")), "authz")
    assert response.status.code == UNAUTHENTICATED
    assert response.WhichOneof("http_response") == "denied_response"
    denied = response.denied_response
    assert denied.status.code == 401
    assert _headers(denied.headers) == {
        "content-type": "application/json",
        "cache-control": "no-store",
        "www-authenticate": INVALID_TOKEN_CHALLENGE,
    }
    assert json.loads(denied.body) == {
        "error": "invalid_token",
        "error_description": "The access token is invalid",
    }


def test_expired_token_has_its_own_description() -> None:
    denied = build(_deny(TokenExpired()), "authz").denied_response
    assert _headers(denied.headers)["www-authenticate"] == (
        'Bearer realm="authz", error="invalid_token", error_description="The access token expired"'
    )
    assert json.loads(denied.body)["error"] == "invalid_token"


def test_missing_token_gets_a_bare_challenge() -> None:
    response = build(_deny(MissingCredentials("no Authorization header")), "authz")
    assert response.status.code == UNAUTHENTICATED
    denied = response.denied_response
    assert denied.status.code == 401
    challenge = _headers(denied.headers)["www-authenticate"]
    assert challenge == 'Bearer realm="authz"'
    assert "error" not in challenge
    assert json.loads(denied.body) == {
        "error": "unauthorized",
        "error_description": "A bearer token is required",
    }


@pytest.mark.parametrize(
    ("error", "description"),
    [
        (InvalidRequest(), "The request is malformed"),
        (MultipleCredentials(), "The request carries more than one credential"),
    ],
)
def test_invalid_request_deny(error: AuthzError, description: str) -> None:
    response = build(_deny(error), "authz")
    assert response.status.code == INVALID_ARGUMENT
    denied = response.denied_response
    assert denied.status.code == 400
    assert _headers(denied.headers)["www-authenticate"] == (
        f'Bearer realm="authz", error="invalid_request", error_description="{description}"'
    )
    assert json.loads(denied.body) == {"error": "invalid_request", "error_description": description}


@pytest.mark.parametrize("error", [KeysUnavailable(), InternalError()])
def test_unavailable_deny_has_no_challenge(error: AuthzError) -> None:
    response = build(_deny(error), "authz")
    assert response.status.code == UNAVAILABLE
    denied = response.denied_response
    assert denied.status.code == 503
    assert _headers(denied.headers) == {
        "content-type": "application/json",
        "cache-control": "no-store",
    }
    assert json.loads(denied.body) == {
        "error": "unavailable",
        "error_description": "Authorization is temporarily unavailable",
    }


def test_forbidden_with_scope() -> None:
    response = build(_deny(Forbidden("needs orders:write", scope="orders:write")), "authz")
    assert response.status.code == PERMISSION_DENIED
    denied = response.denied_response
    assert denied.status.code == 403
    assert _headers(denied.headers)["www-authenticate"] == (
        'Bearer realm="authz", error="insufficient_scope", '
        'error_description="The access token does not grant access to this resource", '
        'scope="orders:write"'
    )
    assert json.loads(denied.body)["error"] == "insufficient_scope"


def test_forbidden_without_scope() -> None:
    challenge = www_authenticate(Forbidden(), "authz")
    assert challenge.startswith('Bearer realm="authz", error="insufficient_scope"')
    assert "scope=" not in challenge.replace("insufficient_scope", "")


def test_realm_comes_from_the_caller() -> None:
    denied = build(_deny(MissingCredentials()), "api.example").denied_response
    assert _headers(denied.headers)["www-authenticate"] == 'Bearer realm="api.example"'


def test_deny_metadata() -> None:
    response = build(_deny(TokenExpired("exp passed"), fingerprint="fedcba9876543210"), "authz")
    assert _metadata(response) == {
        "decision": "deny",
        "status": 401.0,
        "reason": "token_expired",
        "token_fp": "fedcba9876543210",
    }


def test_deny_metadata_without_a_token() -> None:
    metadata = _metadata(build(_deny(MissingCredentials()), "authz"))
    assert metadata == {"decision": "deny", "status": 401.0, "reason": "missing_token"}


def test_detail_is_never_sent_to_the_client() -> None:
    detail = "kid 'internal-key-7' expired at 12:00 on host db-3"
    response = build(_deny(TokenExpired(detail), fingerprint="f" * 16), "authz")
    wire = response.SerializeToString()
    assert detail.encode() not in wire
    assert b"internal-key-7" not in wire


def test_unknown_status_falls_back_to_permission_denied() -> None:
    class Teapot(AuthzError):
        status = 418
        reason = "teapot"

    response = build(_deny(Teapot()), "authz")
    assert response.status.code == PERMISSION_DENIED
    assert response.denied_response.status.code == 418
    assert "www-authenticate" not in _headers(response.denied_response.headers)


# --- the token never leaves -------------------------------------------------------------


def test_token_text_never_appears_in_a_response(
    tmp_path_factory: pytest.TempPathFactory, rsa_key: rsa.RSAPrivateKey
) -> None:
    tmp = tmp_path_factory.mktemp("response")
    (tmp / "idp.pem").write_bytes(
        rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    config = parse_config(
        f"issuers:\n  - issuer: {ISS}\n    audiences: [api]\n    algorithms: [RS256]\n"
        "    keys: [{pem_file: idp.pem}]\n",
        source="test.yaml",
        base_dir=tmp,
    )

    class Clock:
        def __init__(self, now: float) -> None:
            self.value = now

        def now(self) -> float:
            return self.value

    clock = Clock(1_700_000_000)
    decider = Decider(config, Verifier(config, StaticKeySource.from_config(config), clock))
    token = mint(rsa_key, "RS256", claims_for("alice", ISS, "api", now=1_700_000_000))
    request = RequestView(headers={"authorization": (f"Bearer {token}",)})

    allowed = build(decider.decide(request), config.realm)
    assert allowed.status.code == OK
    clock.value += 100_000
    denied = build(decider.decide(request), config.realm)
    assert denied.denied_response.status.code == 401
    for response in (allowed, denied):
        wire = response.SerializeToString()
        text = json_format.MessageToJson(response)
        for part in token.split("."):
            assert part.encode() not in wire
            assert part not in text
    assert token not in denied.denied_response.body
    assert _metadata(denied)["token_fp"] == _metadata(allowed)["token_fp"]


# --- rules: no route, requirement denies, route and shadow metadata --------------------


def test_no_route_is_403_without_a_challenge() -> None:
    response = build(_deny(NoRoute("no route takes GET /admin")), "authz")
    assert response.status.code == PERMISSION_DENIED
    denied = response.denied_response
    assert denied.status.code == 403
    # No token could make the request acceptable: a challenge would mislead.
    assert "www-authenticate" not in _headers(denied.headers)
    assert json.loads(denied.body) == {
        "error": "forbidden",
        "error_description": "No rule allows this request",
    }
    # The detail (method and path) is for the logs only.
    assert b"/admin" not in denied.SerializeToString()


@pytest.mark.parametrize(
    "error",
    [
        RoleMissing("missing role admin"),
        ClaimMismatch("claim 'tenant' is absent"),
        IssuerNotAllowed("issuer x"),
    ],
)
def test_every_requirement_deny_is_insufficient_scope(error: AuthzError) -> None:
    denied = build(_deny(error), "authz").denied_response
    assert denied.status.code == 403
    assert _headers(denied.headers)["www-authenticate"] == (
        'Bearer realm="authz", error="insufficient_scope", '
        'error_description="The access token does not grant access to this resource"'
    )
    assert json.loads(denied.body)["error"] == "insufficient_scope"


def test_revoked_token_is_invalid_token() -> None:
    denied = build(_deny(TokenRevoked()), "authz").denied_response
    assert denied.status.code == 401
    assert _headers(denied.headers)["www-authenticate"] == (
        'Bearer realm="authz", error="invalid_token", '
        'error_description="The access token has been revoked"'
    )


def test_route_and_shadow_metadata() -> None:
    decision = Decision.allow(
        route="reports",
        mode="protected",
        shadows=(
            Unenforced("reports-v1", True, 200, "allowed"),
            Unenforced("reports-v2", False, 403, "role_missing", "missing role auditor"),
        ),
    )
    assert _metadata(build(decision, "authz")) == {
        "decision": "allow",
        "status": 200.0,
        "reason": "allowed",
        "route": "reports",
        "mode": "protected",
        "shadow_route": "reports-v2",
        "shadow_denied": "role_missing",
    }


def test_dry_run_metadata() -> None:
    decision = Decision.allow(
        route="orders",
        mode="protected",
        dry_run=Unenforced("orders", False, 401, "missing_token"),
    )
    metadata = _metadata(build(decision, "authz"))
    assert (metadata["decision"], metadata["reason"], metadata["dry_run_denied"]) == (
        "allow",
        "dry_run",
        "missing_token",
    )


def test_deny_after_verification_names_the_subject() -> None:
    token = VerifiedToken(issuer=ISS, subject="alice", claims={}, kid="k1", algorithm="RS256")
    decision = Decision.deny(
        Forbidden("missing scope x", scope="x"),
        token=token,
        route="orders",
        mode="protected",
    )
    metadata = _metadata(build(decision, "authz"))
    assert metadata["sub"] == "alice"
    assert metadata["route"] == "orders"
    assert "shadow_denied" not in metadata


# --- answers built once ------------------------------------------------------------------


def test_encoded_answers_are_build_serialized_and_built_once() -> None:
    encode = Encoded()
    decisions = [
        _allow(),
        _allow(headers_to_remove=("x-auth-email",)),
        _allow(subject="bob"),
        _deny(TokenExpired("exp in the past"), fingerprint="0123456789abcdef"),
        _deny(Forbidden("needs orders:write", scope="orders:write")),
    ]
    first = [encode(decision, "authz") for decision in decisions]
    for decision, answer in zip(decisions, first, strict=True):
        assert answer == build(decision, "authz").SerializeToString()
        assert encode(decision, "authz") == answer  # again: the same bytes
    assert len(set(first)) == len(decisions), "distinct responses share an answer"
    # The realm is part of a deny's challenge, so part of its key.
    assert encode(decisions[3], "other") != first[3]


def test_encoded_answers_stay_bounded() -> None:
    encode = Encoded(limit=2)
    answers = [encode(_allow(subject=f"user-{n}"), "authz") for n in range(5)]
    assert all(
        a == build(_allow(subject=f"user-{n}"), "authz").SerializeToString()
        for n, a in enumerate(answers)
    )
    assert len(encode) <= 2


def test_parts_of_an_allow_never_equal_a_deny() -> None:
    allow = parts(_allow(headers_to_set=(), headers_to_remove=()), "authz")
    deny = parts(_deny(NoRoute("no route takes GET /")), "authz")
    assert isinstance(allow, AllowParts)
    assert isinstance(deny, DenyParts)
    assert tuple(allow) != tuple(deny)
