"""Property tests: whatever arrives, Check answers with a well-formed response, and
nothing but a validly signed, valid token is ever allowed."""

from __future__ import annotations

import json
import string
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from authz._proto.envoy.config.core.v3 import base_pb2
from authz._proto.envoy.service.auth.v3 import external_auth_pb2
from authz.check import response
from authz.check.decision import Decider, Decision
from authz.check.request import view
from authz.check.verify import Verifier
from authz.config.loader import load_config
from tests.security.corpus import AUDIENCE, HMAC_ISSUER, ISSUER, SECRET, Material, hs, rs
from tests.support.doubles import StaticKeySource

B64URL = string.ascii_letters + string.digits + "-_"
NOW = time.time()


@pytest.fixture(scope="module")
def decider(config_file: Path) -> Decider:
    config = load_config(config_file)
    return Decider(config, Verifier(config, StaticKeySource.from_config(config)))


def _decide(decider: Decider, check: external_auth_pb2.CheckRequest) -> Decision:
    decision = decider.decide(view(check))
    # Every decision becomes a response that survives the wire.
    built = response.build(decision, "authz")
    parsed = external_auth_pb2.CheckResponse.FromString(built.SerializeToString())
    assert parsed.WhichOneof("http_response") == (
        "ok_response" if decision.allowed else "denied_response"
    )
    assert (parsed.status.code == 0) == decision.allowed
    return decision


def _with_authorization(value: str, path: str = "/") -> external_auth_pb2.CheckRequest:
    check = external_auth_pb2.CheckRequest()
    check.attributes.request.http.path = path
    check.attributes.request.http.headers["authorization"] = value
    return check


@given(value=st.text(max_size=600))
def test_any_authorization_text_is_denied_cleanly(decider: Decider, value: str) -> None:
    decision = _decide(decider, _with_authorization(value))
    assert not decision.allowed
    assert decision.status in (400, 401)


@given(
    headers=st.lists(
        st.tuples(st.text(min_size=1, max_size=20), st.binary(max_size=300)), max_size=8
    ),
    method=st.text(max_size=10),
    path=st.text(max_size=200),
    host=st.text(max_size=50),
)
def test_any_raw_request_is_answered(
    decider: Decider, headers: list[tuple[str, bytes]], method: str, path: str, host: str
) -> None:
    check = external_auth_pb2.CheckRequest()
    http = check.attributes.request.http
    http.method, http.path, http.host = method, path, host
    for key, value in headers:
        http.header_map.headers.append(base_pb2.HeaderValue(key=key, raw_value=value))
    decision = _decide(decider, check)
    assert not decision.allowed


_mutation = st.one_of(
    st.tuples(st.just("replace"), st.integers(0, 10_000), st.sampled_from(B64URL + ".=")),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.sampled_from(B64URL + ".=")),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.just("")),
    st.tuples(st.just("swap"), st.integers(0, 2), st.integers(0, 2)),
)


def _mutate(token: str, mutation: tuple[str, Any, Any]) -> str:
    kind, a, b = mutation
    if kind == "swap":
        parts = token.split(".")
        if max(a, b) >= len(parts):  # an earlier mutation removed a dot
            return token
        parts[a], parts[b] = parts[b], parts[a]
        return ".".join(parts)
    index = a % (len(token) + 1)
    character = str(b)
    if kind == "replace":
        return token[:index] + character + token[index + 1 :]
    if kind == "insert":
        return token[:index] + character + token[index:]
    return token[:index] + token[index + 1 :]


@given(mutations=st.lists(_mutation, min_size=1, max_size=4))
def test_a_mutated_token_is_never_allowed(
    decider: Decider, material: Material, mutations: list[tuple[str, Any, Any]]
) -> None:
    original = rs(material)
    token = original
    for mutation in mutations:
        token = _mutate(token, mutation)
    decision = _decide(decider, _with_authorization(f"Bearer {token}"))
    assert decision.allowed == (token == original)


_json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
_time = st.one_of(
    st.just(None),
    _json_value,
    st.integers(-10, 10).map(lambda d: NOW + d * 1000),
    st.integers(10**9, 10**10),
)
_audience = st.one_of(
    st.just(AUDIENCE), st.just([AUDIENCE, "x"]), st.just("API"), st.just([]), _json_value
)
_issuer = st.one_of(st.just(HMAC_ISSUER), st.just(HMAC_ISSUER + "/"), _json_value)


def _is_time(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and 0 <= value <= 253_402_300_799
    )


def _should_allow(claims: dict[str, Any], now: float) -> bool:
    """The rules, stated independently of the code under test (leeway: 30 s)."""
    exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
    aud, iss, sub = claims.get("aud"), claims.get("iss"), claims.get("sub")
    if iss != HMAC_ISSUER or not isinstance(exp, int | float) or not _is_time(exp):
        return False
    if now >= exp + 30:
        return False
    for optional in (nbf, iat):
        if optional is not None and (not _is_time(optional) or now + 30 < optional):
            return False
    audiences = [aud] if isinstance(aud, str) else aud
    if (
        not isinstance(audiences, list)
        or not audiences
        or not all(isinstance(a, str) for a in audiences)
    ):
        return False
    if AUDIENCE not in audiences:
        return False
    if sub is not None and not isinstance(sub, str):
        return False
    scope = claims.get("scope")
    return scope is None or (
        isinstance(scope, str) and "\x7f" not in scope and not any(ord(c) < 32 for c in scope)
    )


_claims = st.fixed_dictionaries(
    {},
    optional={
        "exp": _time,
        "nbf": _time,
        "iat": _time,
        "aud": _audience,
        "iss": _issuer,
        "sub": st.one_of(st.just("alice"), _json_value),
        "scope": st.just("read write"),
    },
)


@given(claims=_claims)
def test_signed_claims_are_allowed_exactly_when_valid(
    decider: Decider, claims: dict[str, Any]
) -> None:
    claims = {name: value for name, value in claims.items() if value is not None}
    sub = claims.get("sub")
    assume(not (isinstance(sub, str) and any(ord(c) < 32 or c == "\x7f" for c in sub)))
    token = hs({"alg": "HS256", "kid": "hs-1"}, json.dumps(claims).encode(), SECRET)
    now = time.time()
    decision = _decide(decider, _with_authorization(f"Bearer {token}"))
    if abs(time.time() - now) < 1:  # a decision straddling a second can't be judged exactly
        assert decision.allowed == _should_allow(claims, now), (claims, decision.reason)


def test_corpus_issuer_is_not_the_fuzzed_one() -> None:
    assert ISSUER != HMAC_ISSUER
