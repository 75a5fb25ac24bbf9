"""header_budget: an allow that Envoy would refuse for its header limits is a 431 instead.

The counting rules are Envoy 1.40's, measured through the real binary (see the
module docstring and tests/e2e/test_edge_identity.py): every header entry,
pseudo-headers included, each repeat once per line; bytes as names plus
values; the headers authz sets are applied before those it removes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from authz.check.decision import Decider
from authz.check.header_budget import check_header_budget
from authz.check.request import RequestView
from authz.check.verify import Verifier
from authz.config.loader import parse_config
from authz.config.models import EnvoyConfig
from authz.dev.tokens import claims_for, mint
from authz.errors import RequestTooLarge
from tests.support.doubles import StaticKeySource

LIMITS = EnvoyConfig(max_request_headers_count=10, max_request_headers_kb=1)
# What Envoy shows authz of a bare HTTP/1.1 GET: 8 entries, 168 bytes.
ENVOY_ADDS = {
    ":authority": ("shop",),
    ":path": ("/x",),
    ":method": ("GET",),
    ":scheme": ("http",),
    "x-forwarded-for": ("192.0.2.2",),
    "x-forwarded-proto": ("http",),
    "x-envoy-external-address": ("127.0.0.1",),
    "x-request-id": ("661c69bb-1694-4260-8739-693d245b31bc",),
}


def _request(**headers: tuple[str, ...]) -> RequestView:
    return RequestView(method="GET", path="/x", headers={**ENVOY_ADDS, **headers})


def _size(request: RequestView) -> int:
    return sum(len(k) + len(v) for k, values in request.headers.items() for v in values)


def test_envoy_adds_are_what_the_docstring_says() -> None:
    assert (len(ENVOY_ADDS), _size(_request())) == (8, 168)


def test_count_up_to_the_limit_passes_and_one_more_is_refused() -> None:
    check_header_budget(_request(), [("x-auth-a", "1"), ("x-auth-b", "2")], LIMITS)
    with pytest.raises(RequestTooLarge) as info:
        check_header_budget(
            _request(), [("x-auth-a", "1"), ("x-auth-b", "2"), ("x-auth-c", "3")], LIMITS
        )
    error = info.value
    assert (error.status, error.reason) == (431, "request_too_large")
    assert error.detail == (
        "8 request headers and 3 identity headers are 11 in Envoy; its limit is 10 "
        "(envoy.max_request_headers_count)"
    )


def test_the_request_alone_past_the_count_is_refused() -> None:
    check_header_budget(_request(a=("1",), b=("2",)), [], LIMITS)
    with pytest.raises(RequestTooLarge, match="11 request headers and 0 identity headers"):
        check_header_budget(_request(a=("1",), b=("2",), c=("3",)), [], LIMITS)


def test_each_repeated_header_counts() -> None:
    # header_map (encode_raw_headers) keeps every line; Envoy counts each.
    with pytest.raises(RequestTooLarge, match="11 request headers"):
        check_header_budget(_request(x=("1", "2", "3")), [], LIMITS)


def test_a_header_authz_removes_makes_no_room() -> None:
    # Envoy sets first and checks after each change: the forged header is still
    # there when x-auth-b is added, although authz removes it afterwards.
    forged = _request(**{"x-auth-forged": ("x",)})
    check_header_budget(forged, [("x-auth-a", "1")], LIMITS)
    with pytest.raises(RequestTooLarge, match="9 request headers and 2 identity headers"):
        check_header_budget(forged, [("x-auth-a", "1"), ("x-auth-b", "2")], LIMITS)


def test_an_overwritten_header_adds_no_count_and_only_its_growth() -> None:
    request = _request(**{"x-auth-a": ("forged",), "x-auth-b": ("x",)})
    check_header_budget(request, [("x-auth-a", "a-longer-value")], LIMITS)
    free = 1024 - _size(request)
    check_header_budget(request, [("x-auth-a", "f" * (len("forged") + free))], LIMITS)
    with pytest.raises(RequestTooLarge) as info:
        check_header_budget(request, [("x-auth-a", "f" * (len("forged") + free + 1))], LIMITS)
    assert info.value.detail == (
        f"{_size(request)} bytes of request headers and {free + 1} of identity headers are "
        "1025 in Envoy; its limit is 1024 (envoy.max_request_headers_kb: 1)"
    )


def test_bytes_are_names_and_values_up_to_the_limit() -> None:
    request = _request()
    free = 1024 - _size(request)
    name = "x-auth-a"
    check_header_budget(request, [(name, "v" * (free - len(name)))], LIMITS)
    with pytest.raises(RequestTooLarge, match="1025 in Envoy"):
        check_header_budget(request, [(name, "v" * (free - len(name) + 1))], LIMITS)


def test_bytes_are_utf8_bytes() -> None:
    # "é" is two bytes in UTF-8: 168 + 1 + 2 * 427 = 1023, but 428 of them are 1025
    # bytes in 597 characters.
    check_header_budget(_request(x=("é" * 427,)), [], LIMITS)
    with pytest.raises(RequestTooLarge, match="1025 in Envoy"):
        check_header_budget(_request(x=("é" * 428,)), [], LIMITS)
    # A replacement character (for a raw byte that was not UTF-8) counts three:
    # more than the one byte Envoy holds, never less.
    with pytest.raises(RequestTooLarge, match="1027 in Envoy"):
        check_header_budget(_request(x=("\ufffd" * 286,)), [], LIMITS)


def test_the_defaults_are_envoys() -> None:
    request = _request(**{f"x-h{i}": ("v",) for i in range(89)})  # 97 entries
    check_header_budget(
        request, [("x-auth-a", "1"), ("x-auth-b", "2"), ("x-auth-c", "3")], EnvoyConfig()
    )
    with pytest.raises(RequestTooLarge, match="are 101 in Envoy; its limit is 100"):
        check_header_budget(
            request,
            [("x-auth-a", "1"), ("x-auth-b", "2"), ("x-auth-c", "3"), ("x-auth-d", "4")],
            EnvoyConfig(),
        )


# --- in a decision -----------------------------------------------------------------------

ISS = "https://idp.example"


@pytest.fixture(scope="module")
def decider(tmp_path_factory: pytest.TempPathFactory, rsa_key: rsa.RSAPrivateKey) -> Decider:
    tmp = tmp_path_factory.mktemp("budget")
    (tmp / "idp.pem").write_bytes(
        rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    text = f"""\
issuers:
  - issuer: {ISS}
    audiences: [api]
    algorithms: [RS256]
    keys:
      - pem_file: idp.pem
        kid: k1
envoy: {{max_request_headers_count: 12, max_request_headers_kb: 2}}
routes:
  - {{name: docs, match: {{prefix: /docs}}, mode: public}}
  - {{name: api, match: {{prefix: /}}, mode: protected}}
"""
    config = parse_config(text, source="test.yaml", base_dir=Path(tmp))
    return Decider(config, Verifier(config, StaticKeySource.from_config(config)))


def _with(request: RequestView, path: str, **headers: tuple[str, ...]) -> RequestView:
    return RequestView(method="GET", path=path, headers={**request.headers, **headers})


def test_an_allow_past_envoys_limits_is_a_431(decider: Decider, rsa_key: rsa.RSAPrivateKey) -> None:
    token = mint(rsa_key, "RS256", claims_for("alice", ISS, "api", scopes="a b"), kid="k1")
    bearer = {"authorization": (f"Bearer {token}",)}
    # 9 entries; authz sets subject, issuer and scopes: 12, Envoy's limit.
    fits = _with(_request(), "/orders", **bearer)
    decision = decider.decide(fits)
    assert (decision.allowed, len(decision.headers_to_set)) == (True, 3)
    decision = decider.decide(_with(fits, "/orders", extra=("1",)))
    assert (decision.allowed, decision.status, decision.reason) == (False, 431, "request_too_large")
    assert decision.detail.startswith("10 request headers and 3 identity headers are 13 in Envoy")
    assert decision.headers_to_set == ()


def test_a_public_allow_past_envoys_limits_is_a_431(decider: Decider) -> None:
    # No identity to set, but authz still removes the namespace: Envoy checks.
    many = _with(_request(), "/docs/a", **{f"x-h{i}": ("v",) for i in range(4)})
    assert decider.decide(many).allowed
    decision = decider.decide(_with(many, "/docs/a", more=("v",)))
    assert (decision.status, decision.reason) == (431, "request_too_large")


def test_a_dry_run_does_not_lift_request_too_large(
    decider: Decider, tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    # Envoy would refuse the allow itself (an empty 500): the 431 stands, and the
    # record says what the client got.
    (tmp_path / "idp.pem").write_bytes(
        rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    text = f"""\
dry_run: true
issuers:
  - {{issuer: {ISS}, audiences: [api], algorithms: [RS256], keys: [{{pem_file: idp.pem}}]}}
envoy: {{max_request_headers_count: 12, max_request_headers_kb: 2}}
routes:
  - {{name: docs, match: {{prefix: /docs}}, mode: public}}
"""
    config = parse_config(text, source="test.yaml", base_dir=tmp_path)
    dry = Decider(config, Verifier(config, StaticKeySource.from_config(config)))
    many = _with(_request(), "/docs/a", **{f"x-h{i}": ("v",) for i in range(5)})
    decision = dry.decide(many)
    assert (decision.allowed, decision.status, decision.reason) == (False, 431, "request_too_large")
    # Any other deny is lifted as before: no route takes /other.
    assert dry.decide(_with(_request(), "/other")).reason == "dry_run"
