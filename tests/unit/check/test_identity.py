"""identity: verified claims become header values that are safe to hand upstream."""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import unquote

import pytest

from authz.check.identity import IdentityPlan, scopes
from authz.config.models import IdentityConfig
from authz.config.rules import RouteIdentityConfig
from authz.errors import ClaimInvalid
from tests.support.doubles import MAX_HEADER_VALUE, identity_headers

DEFAULT = IdentityConfig()
# identity.encoding: refuse — what cannot be carried as it is denies the request.
STRICT = IdentityConfig(encoding="refuse")
WIDE = IdentityConfig(
    headers={
        "x-auth-subject": "sub",
        "x-auth-scopes": "scope",
        "x-auth-groups": "groups",
        "x-auth-level": "level",
        "x-auth-admin": "admin",
    }
)


def _one(
    claims: dict[str, Any], claim: str, encoding: Literal["percent", "refuse"] = "refuse"
) -> dict[str, str]:
    config = IdentityConfig(headers={"x-auth-value": claim}, encoding=encoding)
    return dict(identity_headers(claims, config))


# --- scopes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"scope": "orders:read orders:write"}, ["orders:read", "orders:write"]),
        ({"scope": "  a   b  "}, ["a", "b"]),
        ({"scope": ""}, []),
        ({"scp": ["a", "b"]}, ["a", "b"]),
        ({"scp": "a b"}, ["a", "b"]),
        ({"scp": []}, []),
        ({}, []),
        ({"scope": "a", "scp": ["b"]}, ["a"]),
    ],
)
def test_scopes(claims: dict[str, Any], expected: list[str]) -> None:
    assert scopes(claims) == expected


@pytest.mark.parametrize(
    "claims",
    [
        {"scope": 5, "scp": ["b"]},
        {"scope": ["a"]},
        {"scp": ["a", 5, None, "b"]},
        {"scp": ["a", ""]},
        {"scp": {"a": 1}},
        {"scp": 7},
    ],
)
def test_malformed_scopes_are_refused(claims: dict[str, Any]) -> None:
    with pytest.raises(ClaimInvalid):
        scopes(claims)


# --- identity headers -----------------------------------------------------------------


def test_default_headers() -> None:
    claims = {"sub": "alice", "iss": "https://idp.example", "scope": "orders:read"}
    assert identity_headers(claims, DEFAULT) == [
        ("x-auth-subject", "alice"),
        ("x-auth-issuer", "https://idp.example"),
        ("x-auth-scopes", "orders:read"),
    ]


def test_scope_string_and_scp_array_read_the_same() -> None:
    from_string = identity_headers({"scope": "a b"}, DEFAULT)
    from_array = identity_headers({"scp": ["a", "b"]}, DEFAULT)
    assert from_string == from_array == [("x-auth-scopes", "a b")]


def test_missing_claim_sets_no_header() -> None:
    assert identity_headers({"sub": "alice"}, DEFAULT) == [("x-auth-subject", "alice")]
    assert identity_headers({}, DEFAULT) == []


@pytest.mark.parametrize("value", [None, "", []])
def test_empty_claim_sets_no_header(value: Any) -> None:
    assert _one({"groups": value}, "groups") == {}


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        ("alice", "alice"),
        (42, "42"),
        (0, "0"),
        (-7, "-7"),
        (1.5, "1.5"),
        (True, "true"),
        (False, "false"),
        (["admins", "ops"], "admins,ops"),
        ([1, 2, 3], "1,2,3"),
        (["solo"], "solo"),
        ("a b", "a b"),
        ("Zoe Angstrom", "Zoe Angstrom"),
        ("a  b", "a  b"),
        (["a b", "c"], "a b,c"),
        ("~!@#$%^&*()", "~!@#$%^&*()"),
    ],
)
def test_rendering(value: Any, rendered: str) -> None:
    assert _one({"c": value}, "c") == {"x-auth-value": rendered}


def test_several_claims_in_configured_order() -> None:
    claims = {"sub": "alice", "groups": ["a", "b"], "level": 3, "admin": False, "scp": ["x"]}
    assert identity_headers(claims, WIDE) == [
        ("x-auth-subject", "alice"),
        ("x-auth-scopes", "x"),
        ("x-auth-groups", "a,b"),
        ("x-auth-level", "3"),
        ("x-auth-admin", "false"),
    ]


def test_list_item_with_a_comma_is_refused() -> None:
    with pytest.raises(ClaimInvalid) as info:
        _one({"groups": ["a", "b,c"]}, "groups")
    assert info.value.reason == "claim_invalid"
    assert "','" in info.value.detail


@pytest.mark.parametrize(
    "value",
    [{"role": "admin"}, [{"a": 1}], [["a"]], [True], ["a", None], [1, False]],
)
def test_structured_values_are_refused(value: Any) -> None:
    with pytest.raises(ClaimInvalid) as info:
        _one({"c": value}, "c")
    assert "'c'" in info.value.detail


@pytest.mark.parametrize(
    "value", ["alice\nx-auth-role: admin", "a\rb", "a\x00b", "a\tb", "a\x7fb", "\x1b[31m"]
)
def test_control_characters_are_refused(value: Any) -> None:
    with pytest.raises(ClaimInvalid) as info:
        _one({"sub": value}, "sub")
    assert "'sub'" in info.value.detail
    assert "x-auth-value" in info.value.detail
    assert value not in info.value.detail
    assert "control character" in info.value.detail


# The rules compare exact values; the upstream reads the header after HTTP has
# trimmed it and its framework has decoded its bytes. Whatever the two could
# read differently is refused, and the detail names the claim and the problem,
# never the value.
@pytest.mark.parametrize("value", [" alice", "alice ", " alice ", "  ", " "])
def test_leading_or_trailing_whitespace_is_refused(value: str) -> None:
    with pytest.raises(ClaimInvalid) as info:
        _one({"sub": value}, "sub")
    assert info.value.reason == "claim_invalid"
    assert (
        info.value.detail
        == "claim 'sub' (header 'x-auth-value') has leading or trailing whitespace"
    )


@pytest.mark.parametrize(
    "value",
    [
        "Zoë",  # UTF-8 bytes upstream, read as Latin-1 by most frameworks
        "alice\u00a0",  # a no-break space: trimmed by some readers, not by others
        "\u2028alice",  # a Unicode line separator
        "\ufeffalice",  # a byte order mark: invisible
        "\uff41\uff44\uff4d\uff49\uff4e",  # fullwidth: NFKC-normalizes to "admin"
        "\udc80",  # a lone surrogate
    ],
)
def test_characters_outside_visible_ascii_are_refused(value: str) -> None:
    with pytest.raises(ClaimInvalid) as info:
        _one({"tenant": value}, "tenant")
    assert info.value.detail == (
        "claim 'tenant' (header 'x-auth-value') has a character outside visible ASCII"
    )


@pytest.mark.parametrize(
    ("items", "problem"),
    [
        (["a,b"], "has a list item containing ','"),
        (["reader", "admin,ops"], "has a list item containing ','"),
        ([""], "has an empty list item"),
        (["a", ""], "has an empty list item"),
        (["", "a"], "has an empty list item"),
        ([" admin"], "has a list item that has leading or trailing whitespace"),
        (["admin", "ops "], "has a list item that has leading or trailing whitespace"),
        (["admin\t"], "has a list item that has a control character"),
        (["adm\u00efn"], "has a list item that has a character outside visible ASCII"),
    ],
)
def test_list_items_the_upstream_would_split_differently_are_refused(
    items: list[str], problem: str
) -> None:
    with pytest.raises(ClaimInvalid) as info:
        _one({"roles": items}, "roles")
    assert info.value.detail == f"claim 'roles' {problem}"


def test_every_header_from_a_claim_is_checked() -> None:
    # Not only sub: a nested claim, the issuer and the scopes are checked alike.
    plan = _plan(
        headers={
            "x-auth-subject": "sub",
            "x-auth-issuer": "iss",
            "x-auth-tenant": "org.tenant",
            "x-auth-roles": "realm_access.roles",
            "x-auth-scopes": "scope",
        }
    )
    good: dict[str, Any] = {
        "sub": "alice",
        "iss": "https://idp.example",
        "org": {"tenant": "acme"},
        "realm_access": {"roles": ["a", "b"]},
        "scope": "x y",
    }
    assert len(plan.render(good)) == 5
    bad_values: list[tuple[str, dict[str, Any]]] = [
        ("sub", {"sub": "alice "}),
        ("iss", {"iss": " https://idp.example"}),
        ("org.tenant", {"org": {"tenant": " acme"}}),
        ("realm_access.roles", {"realm_access": {"roles": ["a,b"]}}),
        ("scope", {"scope": "x\ty"}),
    ]
    for path, bad in bad_values:
        with pytest.raises(ClaimInvalid) as info:
            plan.render({**good, **bad})
        assert f"claim {path!r}" in info.value.detail


@pytest.mark.parametrize(
    "scope", ["read\twrite", "read\nwrite", "read\u00a0write", "read\x1fwrite"]
)
def test_a_scope_separator_other_than_space_is_refused(scope: str) -> None:
    # Python's split() (and the rules) would read two scopes; an upstream that
    # splits at spaces would read one.
    with pytest.raises(ClaimInvalid) as info:
        identity_headers({"scope": scope}, STRICT)
    assert info.value.detail.startswith("claim 'scope' has a")


def test_spaces_around_and_between_scopes_are_rejoined() -> None:
    # Scopes are tokens: extra spaces change nothing, for the rules or upstream.
    assert identity_headers({"scope": "  a   b "}, DEFAULT) == [("x-auth-scopes", "a b")]


def test_control_character_in_a_list_item_is_refused() -> None:
    with pytest.raises(ClaimInvalid):
        _one({"groups": ["ok", "bad\n"]}, "groups")


def test_control_character_inside_one_scope_is_refused() -> None:
    with pytest.raises(ClaimInvalid):
        identity_headers({"scope": "read\x00write"}, STRICT)


def test_value_at_the_size_limit_is_accepted() -> None:
    value = "v" * MAX_HEADER_VALUE
    assert _one({"c": value}, "c") == {"x-auth-value": value}


def test_value_over_the_size_limit_is_refused() -> None:
    assert MAX_HEADER_VALUE == 4096
    with pytest.raises(ClaimInvalid):
        _one({"c": "v" * (MAX_HEADER_VALUE + 1)}, "c")


def test_joined_list_over_the_size_limit_is_refused() -> None:
    with pytest.raises(ClaimInvalid):
        _one({"groups": ["g" * 100] * 41}, "groups")


def test_scopes_over_the_size_limit_are_refused() -> None:
    with pytest.raises(ClaimInvalid):
        identity_headers({"scp": ["s" * 100] * 41}, DEFAULT)


def test_one_bad_claim_refuses_the_whole_set() -> None:
    # No partial identity: an allow either carries every header or none.
    with pytest.raises(ClaimInvalid):
        identity_headers({"sub": "alice", "iss": "bad\nissuer"}, STRICT)


def test_scope_item_with_whitespace_is_refused() -> None:
    # The ',' rule for lists, applied to the ' ' that joins scopes: one item must
    # stay one item for the upstream service that splits the header again.
    with pytest.raises(ClaimInvalid):
        identity_headers({"scp": ["orders:read admin"]}, STRICT)


# --- claim paths, payload header, limits, per-route changes ----------------------------


def _plan(**identity: Any) -> IdentityPlan:
    identity.setdefault("encoding", "refuse")
    return IdentityPlan.from_config(IdentityConfig(**identity))


def test_nested_claims_and_arrays() -> None:
    plan = _plan(
        headers={
            "x-auth-roles": "realm_access.roles",
            "x-auth-client-roles": "resource_access.orders.roles",
            "x-auth-tier": ["https://example.com/tier"],
            "x-auth-missing": "realm_access.nothing",
        }
    )
    claims = {
        "realm_access": {"roles": ["admin", "clerk"]},
        "resource_access": {"orders": {"roles": ["viewer"]}},
        "https://example.com/tier": "gold",
    }
    assert plan.render(claims) == [
        ("x-auth-roles", "admin,clerk"),
        ("x-auth-client-roles", "viewer"),
        ("x-auth-tier", "gold"),
    ]


def test_a_path_through_a_non_object_is_absent() -> None:
    plan = _plan(headers={"x-auth-roles": "realm_access.roles"})
    assert plan.render({"realm_access": ["roles"]}) == []
    assert plan.render({"realm_access": "roles"}) == []


def test_a_nested_object_is_refused() -> None:
    plan = _plan(headers={"x-auth-access": "realm_access"})
    with pytest.raises(ClaimInvalid) as info:
        plan.render({"realm_access": {"roles": ["a"]}})
    assert "'realm_access'" in info.value.detail


def test_payload_header_is_the_signed_payload_segment() -> None:
    plan = _plan(headers={"x-auth-subject": "sub"}, payload_header="x-auth-payload")
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"
    assert plan.render({"sub": "alice"}, token) == [
        ("x-auth-subject", "alice"),
        ("x-auth-payload", "eyJzdWIiOiJhbGljZSJ9"),
    ]
    assert plan.names == ("x-auth-subject", "x-auth-payload")
    # Without a token (an anonymous request) there is nothing to carry.
    assert plan.render({"sub": "alice"}) == [("x-auth-subject", "alice")]


def test_per_header_limit_is_configurable() -> None:
    plan = _plan(headers={"x-auth-name": "name"}, max_header_bytes=64)
    assert plan.render({"name": "n" * 64}) == [("x-auth-name", "n" * 64)]
    with pytest.raises(ClaimInvalid) as info:
        plan.render({"name": "n" * 65})
    assert info.value.detail == "claim 'name' (header 'x-auth-name') is 65 bytes; the limit is 64"


def test_total_limit_covers_every_header_and_the_payload() -> None:
    plan = _plan(
        headers={"x-auth-a": "a", "x-auth-b": "b"},
        payload_header="x-auth-payload",
        max_total_bytes=300,
    )
    fits = plan.render({"a": "v" * 100, "b": "v" * 100}, "h.p.s")
    assert len(fits) == 3
    with pytest.raises(ClaimInvalid) as info:
        plan.render({"a": "v" * 100, "b": "v" * 100}, "h." + "p" * 100 + ".s")
    assert "the limit is 300" in info.value.detail


def test_route_changes_override_the_global_section() -> None:
    identity = IdentityConfig(
        headers={"x-auth-subject": "sub", "x-auth-scopes": "scope"},
        payload_header="x-auth-payload",
        strip_authorization=True,
        max_header_bytes=100,
    )
    inherited = IdentityPlan.from_config(identity, RouteIdentityConfig())
    assert inherited.names == ("x-auth-subject", "x-auth-scopes", "x-auth-payload")
    assert inherited.strip_authorization
    changed = IdentityPlan.from_config(
        identity,
        RouteIdentityConfig(headers={"x-auth-user": "sub"}, strip_authorization=False),
    )
    assert changed.headers == (("x-auth-user", ("sub",)),)
    assert changed.payload_header == "x-auth-payload"
    assert not changed.strip_authorization
    assert changed.max_header_bytes == 100
    without_payload = IdentityPlan.from_config(identity, RouteIdentityConfig(payload_header=False))
    assert without_payload.payload_header is None
    assert without_payload.names == ("x-auth-subject", "x-auth-scopes")


# --- percent-encoding (identity.encoding: percent, the default) --------------------------


def _decoded(header: str, *, is_list: bool = False) -> Any:
    """What an upstream reads back with the standard functions."""
    items = [unquote(item, errors="strict") for item in header.split(",")]
    return items if is_list else items[0]


@pytest.mark.parametrize(
    "value",
    [
        "Zoë-é東京-🚀",
        "Zoe\u0308",  # NFD: the combining mark survives as it was signed
        "שלום",
        "über-admins?no",
        " alice ",
        "alice,admin",
        "clerk,orders-admin",
        "100%",
        "%2C",
        "a\r\nx-auth-role: admin",
        "\x00\x7f\t",
        "\uff41\uff44\uff4d\uff49\uff4e",
        "~!@#$^&*()",
    ],
)
def test_every_verified_value_reaches_the_upstream_exactly(value: str) -> None:
    header = _one({"sub": value}, "sub", "percent")["x-auth-value"]
    assert re.fullmatch(r"[!-~]+", header), header  # visible ASCII only
    assert "," not in header
    assert _decoded(header) == value


@pytest.mark.parametrize(
    "items",
    [["clerk", "orders-admin"], ["a,b", "c"], ["über", "東京"], [" x ", "y%"], ["a", "b,"]],
)
def test_a_list_is_its_items_encoded_and_joined(items: list[str]) -> None:
    header = _one({"roles": items}, "roles", "percent")["x-auth-value"]
    assert _decoded(header, is_list=True) == items


def test_a_string_holding_a_comma_cannot_read_as_a_list() -> None:
    forged = _one({"roles": "clerk,orders-admin"}, "roles", "percent")["x-auth-value"]
    real = _one({"roles": ["clerk", "orders-admin"]}, "roles", "percent")["x-auth-value"]
    assert forged == "clerk%2Corders-admin"
    assert real == "clerk,orders-admin"


def test_refusing_refuses_a_single_value_holding_a_comma() -> None:
    with pytest.raises(ClaimInvalid) as info:
        _one({"tenant": "evilcorp,acme"}, "tenant")
    assert "would read as a list" in info.value.detail


@pytest.mark.parametrize("encoding", ["percent", "refuse"])
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), [1, float("inf")]])
def test_numbers_that_are_not_finite_are_refused(
    value: Any, encoding: Literal["percent", "refuse"]
) -> None:
    with pytest.raises(ClaimInvalid) as info:
        _one({"tenant": value}, "tenant", encoding)
    assert "too large" in info.value.detail


def test_a_lone_surrogate_is_refused_when_encoding() -> None:
    with pytest.raises(ClaimInvalid) as info:
        _one({"sub": "\udc80"}, "sub", "percent")
    assert info.value.detail == "claim 'sub' is not valid Unicode"


def test_scopes_are_encoded_one_by_one_and_joined_with_a_space() -> None:
    claims = {"scope": "orders:read  caf\u00e9\tx%y"}
    (header,) = identity_headers(claims, DEFAULT)
    assert header == ("x-auth-scopes", "orders:read caf%C3%A9 x%25y")
    assert [unquote(token) for token in header[1].split(" ")] == scopes(claims)


def test_plain_values_are_unchanged_by_encoding() -> None:
    claims = {"sub": "alice", "iss": "https://idp.example/realms/x", "scope": "a:b c"}
    assert identity_headers(claims, DEFAULT) == identity_headers(claims, STRICT)


def test_the_encoded_size_is_what_the_limit_counts() -> None:
    fits = "é" * (MAX_HEADER_VALUE // 6)  # 2 bytes, 6 characters encoded, each
    assert len(_one({"c": fits}, "c", "percent")["x-auth-value"]) <= MAX_HEADER_VALUE
    with pytest.raises(ClaimInvalid):
        _one({"c": fits + "é"}, "c", "percent")
