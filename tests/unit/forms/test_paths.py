"""paths: Envoy's normal form modelled exactly; anything else, or ambiguous, is refused;
lookalikes: paths in normal form an upstream may still read as another path.

The expected values of ``test_envoy_normal_form`` were measured with the real
Envoy 1.40 (normalize_path and merge_slashes on); tests/e2e/test_edge_paths.py
checks the model against the running Envoy on generated paths.
"""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.errors import InvalidHost, InvalidPath, InvalidRequest
from authz.forms.hosts import normalize_host
from authz.forms.lookalikes import PathReading, fold_case
from authz.forms.paths import (
    _PLAIN,
    _refuse_ambiguous,
    config_path,
    envoy_normal_form,
    match_form,
    normalize_path,
)


@pytest.mark.parametrize(
    ("raw", "forwarded"),
    [
        ("/", "/"),
        ("/orders/7?x=/../y", "/orders/7?x=/../y"),  # the query is never touched
        # dot segments, resolved before slashes are merged (RFC 3986 order)
        ("/orders/1//../../docs", "/orders/docs"),
        ("/orders/1/..//../docs", "/orders/docs"),
        ("/a/./b", "/a/b"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/../x", "/x"),  # never above the root
        ("/a/.../../b", "/a/b"),
        ("/a/x%2e/..", "/a/"),
        ("/a/%2e%2E/b", "/b"),
        ("/a/b/.%2e?x=/../y", "/a/?x=/../y"),
        ("/a/..?/b", "/?/b"),
        # ";params" after a plain dot segment belong to it; escaped dots do not
        ("/a/..;/b", "/b"),
        ("/a/..;x/b", "/b"),
        ("/a/.;/b", "/a/b"),
        ("/a/b/..;x", "/a/"),
        ("/a/%2e%2e;/b", "/a/..;/b"),
        ("/a/...;/b", "/a/...;/b"),
        ("/a/;/b", "/a/;/b"),
        # slashes: backslash is a slash, runs merge, leading and trailing kept
        ("/a\\b", "/a/b"),
        ("//orders//7//", "/orders/7/"),
        ("//", "//"),
        ("///", "//"),
        # escapes: unreserved decoded, the rest kept as written
        ("/%41%42", "/AB"),
        ("/%7e/x", "/~/x"),
        ("/a/%2e%2e%2fb", "/a/..%2fb"),
        ("/%7B%5B%7f%20%25%252e%c3%a9", "/%7B%5B%7f%20%25%252e%c3%a9"),
        ("/a/%2", "/a/%2"),
        ("/a/%zz/b", "/a/%zz/b"),
        ("/a/%%300", "/a/%2500"),  # no new escape appears on a second pass
        # characters escaped in upper-case hex, others passed
        ("/a/{b}|^`", "/a/%7Bb%7D%7C%5E%60"),
        ('/"<>', "/%22%3C%3E"),
        ("/'[]!$&()*+,=:@", "/'[]!$&()*+,=:@"),
        ("/é", "/%C3%A9"),
    ],
)
def test_envoy_normal_form(raw: str, forwarded: str) -> None:
    assert envoy_normal_form(raw) == forwarded


@pytest.mark.parametrize("raw", ["/a/%00/b", "/a\x00"])
def test_envoy_refuses_a_nul(raw: str) -> None:
    assert envoy_normal_form(raw) is None


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/orders",
        "/orders/7/",
        "/orders/7?x=1&y=/../admin",
        "//",
        "/a:b@c!$&'()*+,=[]",
        "/a%20b",
        "/100%25",
        "/%C3%A9t%c3%a9",
        "/a%3Fb",
        "/a.b/..c/.../d.",
    ],
)
def test_a_path_in_normal_form_is_accepted_as_it_is(path: str) -> None:
    assert normalize_path(path) == path.partition("?")[0]


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "start with '/'"),
        ("orders", "start with '/'"),
        ("*", "start with '/'"),
        ("http://evil.example/admin", "start with '/'"),
        ("?x=1", "start with '/'"),
        # not what Envoy forwards: normalization is off, or a second pass differs
        ("/orders/1//../../docs", "normal form"),
        ("/a/./b", "normal form"),
        ("/../admin", "normal form"),
        ("//orders", "normal form"),
        ("/a/%2e%2e/b", "normal form"),
        ("/%61dmin", "normal form"),
        ("/a\\..\\admin", "normal form"),
        ("/a b", "normal form"),
        ("/a#frag", "normal form"),
        ("/a{b}", "normal form"),
        ("/été", "normal form"),
        ("/a/..;/b", "normal form"),
        ("/a/%00", "NUL"),
        # in normal form, but read differently by different servers
        ("/a/x;/b", "';'"),
        ("/admin;jsessionid=x", "';'"),
        ("/a%2fb", "encoded"),
        ("/a%2Fb", "encoded"),
        ("/a%5cb", "encoded"),
        ("/a%01b", "encoded"),
        ("/a%0ab", "encoded"),
        ("/a%7fb", "encoded"),
        ("/a%", "starts no percent-escape"),
        ("/a%4", "starts no percent-escape"),
        ("/a%zz", "starts no percent-escape"),
        ("/a%u002e", "starts no percent-escape"),
        ("/a%252e%252e/b", "double-encoded"),
        ("/a%252F", "double-encoded"),
        ("/a/%2500", "double-encoded"),
        ("/a%c0%ae%c0%ae/b", "not UTF-8"),
        ("/a%ff", "not UTF-8"),
        ("/a%C3", "not UTF-8"),
        ("/" + "a" * 9000, "longer than"),
    ],
)
def test_other_paths_are_refused(raw: str, why: str) -> None:
    with pytest.raises(InvalidPath) as info:
        normalize_path(raw)
    assert why in info.value.detail
    assert (info.value.status, info.value.reason) == (400, "invalid_path")
    assert isinstance(info.value, InvalidRequest)


def test_what_envoy_forwards_is_a_fixed_point() -> None:
    # Everything Envoy forwards (the model's output) normalizes to itself, bar the
    # one construction that differs on a second pass, which authz refuses.
    for raw in ["/a/%2e%2e/b//c/", "/x/./%7e/y", "/%41%42/../c", "/a/%%300", "//a///b/"]:
        once = envoy_normal_form(raw)
        assert once is not None
        assert envoy_normal_form(once) == once
    assert envoy_normal_form("/a/..;/b") != "/a/..;/b"


@pytest.mark.parametrize(
    ("path", "matched"),
    [
        ("/", "/"),
        ("//", "/"),
        ("/orders/7/", "/orders/7"),
        ("/caf%C3%A9", "/café"),
        ("/caf%c3%a9", "/café"),
        ("/a%3Fb%20c", "/a?b c"),
        ("/100%25", "/100%"),
    ],
)
def test_routes_match_on_escapes_decoded_and_no_trailing_slash(path: str, matched: str) -> None:
    assert match_form(normalize_path(path)) == matched


@pytest.mark.parametrize(
    ("value", "matched"),
    [("/orders", "/orders"), ("/café", "/café"), ("/caf%C3%A9", "/café"), ("/", "/")],
)
def test_configured_paths_are_kept_in_match_form(value: str, matched: str) -> None:
    assert config_path(value) == matched


@pytest.mark.parametrize(
    "value",
    [
        "orders",
        "/orders/",
        "//orders",
        "/a/./b",
        "/a/../b",
        "/a?x",
        "/a#x",
        "/a;b",
        "/a%2Fb",
        "/a b",
        "/%2e%2e/x",
        "/a%zz",
    ],
)
def test_configured_paths_that_no_request_could_match_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        config_path(value)


@pytest.mark.parametrize(
    ("raw", "host"),
    [
        ("api.example.com", "api.example.com"),
        ("API.Example.COM", "api.example.com"),
        ("api.example.com:8443", "api.example.com"),
        ("api.example.com.", "api.example.com"),
        ("api.example.com.:443", "api.example.com"),
        ("[::1]:8080", "[::1]"),
        ("[::1]", "[::1]"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("svc_internal.local", "svc_internal.local"),
        ("", ""),
    ],
)
def test_normalize_host(raw: str, host: str) -> None:
    assert normalize_host(raw) == host


@pytest.mark.parametrize(
    "raw",
    [
        "admin.shop.local:",  # empty port
        "admin.shop.local:abc",
        "admin.shop.local:8o",
        "admin.shop.local:65536",
        "admin.shop.local:80:80",
        "admin.shop.local:\u0661",  # a digit, but not an ASCII one
        "evil@admin.shop.local",
        "user:pw@admin.shop.local",
        "admin..shop.local",
        "admin.shop.local..",
        ".",
        "admin%2eshop.local",
        "admin shop.local",
        "admin.shop.local/x",
        "*.shop.local",
        "-admin.shop.local",
        "adm\u0131n.shop.local",  # a dotless i
        "[::1",
        "[::1]x",
        "[::1]:",
        "[fe80::1%eth0]",
    ],
)
def test_hosts_readers_disagree_on_are_refused(raw: str) -> None:
    with pytest.raises(InvalidHost) as info:
        normalize_host(raw)
    assert (info.value.status, info.value.reason) == (400, "invalid_host")


@given(st.text(alphabet="/.a-~_!;%\\2e", max_size=24))
@settings(max_examples=3000, deadline=None)
def test_the_fast_path_accepts_only_what_the_model_accepts(path: str) -> None:
    # normalize_path answers plain paths without the model of Envoy: the model
    # must agree with every one of them.
    path = "/" + path
    if not _PLAIN.fullmatch(path):
        return
    assert envoy_normal_form(path) == path
    assert normalize_path(path) == path
    _refuse_ambiguous(path)  # raises if the slow path would have refused it


# --- look-alikes, trailing dots and spaces, case -------------------------------------


def _read(path: str, reading: PathReading | None = None) -> str:
    """``path`` through both steps of Policy.match: normal form, then the readings."""
    matched = match_form(normalize_path(path))
    (reading or PathReading()).check(matched)
    return matched


@pytest.mark.parametrize(
    ("path", "named"),
    [
        # Each reads as "." or ".." or "/" to an upstream that applies NFKC:
        # /docs/../orders/admin/x, past the public /docs route.
        ("/docs/%EF%BC%8E%EF%BC%8E/orders/admin/x", "U+FF0E FULLWIDTH FULL STOP"),
        ("/docs/%EF%BC%8F/x", "U+FF0F FULLWIDTH SOLIDUS"),
        ("/docs/%E2%80%A4%E2%80%A4/x", "U+2024 ONE DOT LEADER"),
        ("/docs/%E2%80%A5/x", "U+2025 TWO DOT LEADER"),
        ("/docs/%EF%B9%92%EF%B9%92/x", "U+FE52 SMALL FULL STOP"),
        # ... or as a protected name
        ("/orders/%EF%BD%81dmin/x", "U+FF41 FULLWIDTH LATIN SMALL LETTER A"),
        ("/orders/admin%C5%BF", "U+017F LATIN SMALL LETTER LONG S"),
        ("/orders/%E2%84%AA", "U+212A KELVIN SIGN"),
        ("/orders/admin%C2%A0/x", "U+00A0 NO-BREAK SPACE"),
        ("/orders/%EF%AC%81le", "U+FB01 LATIN SMALL LIGATURE FI"),
        # invisible: readers that drop them see /orders/admin
        ("/orders/ad%E2%80%8Bmin", "U+200B ZERO WIDTH SPACE"),
        ("/orders/ad%C2%ADmin", "U+00AD SOFT HYPHEN"),
        ("/orders/%E2%80%AEnimda", "U+202E RIGHT-TO-LEFT OVERRIDE"),
        # not yet assigned: a reader with a newer Unicode may normalize it
        ("/orders/%CD%B8", "U+0378"),
        # each character stable, the sequence not: e + COMBINING ACUTE is é
        ("/cafe%CC%81", "combines"),
    ],
)
def test_escapes_that_decode_to_a_lookalike_are_refused(path: str, named: str) -> None:
    with pytest.raises(InvalidPath) as info:
        _read(path)
    assert (info.value.status, info.value.reason) == (400, "invalid_path")
    assert named in info.value.detail
    assert "paths.lookalikes" in info.value.detail
    # The reason names a code point, never the path.
    assert path not in info.value.detail
    assert match_form(path) not in info.value.detail
    assert len(info.value.detail) < 200


@pytest.mark.parametrize(
    ("path", "ending"),
    [
        ("/orders/admin./x", "segment 2 of the path ends in '.'"),
        ("/orders/admin%20/x", "segment 2 of the path ends in a space"),
        ("/payments/7/refunds.", "segment 3 of the path ends in '.'"),
        ("/payments/7/refunds%20", "segment 3 of the path ends in a space"),
        ("/payments/7/refunds./", "segment 3 of the path ends in '.'"),
        ("/orders/admin.%20./x", "segment 2 of the path ends in '.'"),
        ("/a/.../b", "segment 2 of the path ends in '.'"),  # "..." is ".." to some
        ("/%20/admin", "segment 1 of the path ends in a space"),
        ("/x.", "segment 1 of the path ends in '.'"),
    ],
)
def test_segments_ending_in_a_dot_or_a_space_are_refused(path: str, ending: str) -> None:
    with pytest.raises(InvalidPath) as info:
        _read(path)
    assert (info.value.status, info.value.reason) == (400, "invalid_path")
    assert info.value.detail.startswith(ending)
    assert "paths.trailing_dot_or_space" in info.value.detail
    assert "admin" not in info.value.detail
    assert "refunds" not in info.value.detail


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/orders/7/",
        "/caf%C3%A9",  # é is its own NFKC
        "/%C3%A9t%C3%A9/%E4%B8%AD%E6%96%87/%D0%BA%D0%B8%D1%80",
        "/%F0%9F%98%80",  # an emoji
        "/a%20b/.well-known/v1.2/x.json",
        "/a/..b/.c",
        "/orders/ADMIN/x",  # case is a route's choice (ignore_case), not refused
        "/orders/adm%C4%B1n",  # a dotless i is its own NFKC
    ],
)
def test_paths_no_reader_takes_for_another_are_accepted(path: str) -> None:
    assert _read(path) == match_form(path)


@pytest.mark.parametrize(
    "path", ["/docs/%EF%BC%8E%EF%BC%8E/orders/admin/x", "/orders/admin./x", "/orders/admin%20/x"]
)
def test_the_refusals_can_be_turned_off(path: str) -> None:
    everything = PathReading(refuse_lookalikes=False, refuse_trailing_dot_or_space=False)
    assert _read(path, everything) == match_form(path)


def test_each_refusal_is_its_own_setting() -> None:
    lookalikes_only = PathReading(refuse_lookalikes=True, refuse_trailing_dot_or_space=False)
    assert _read("/orders/admin./x", lookalikes_only) == "/orders/admin./x"
    with pytest.raises(InvalidPath):
        _read("/orders/%EF%BD%81dmin", lookalikes_only)
    trailing_only = PathReading(refuse_lookalikes=False, refuse_trailing_dot_or_space=True)
    assert _read("/orders/%EF%BD%81dmin", trailing_only) == "/orders/\uff41dmin"
    with pytest.raises(InvalidPath):
        _read("/orders/admin%20", trailing_only)


def _loose_readings(decoded: str) -> set[str]:
    """How lax upstreams read a decoded path: as it is, after NFKC, with trailing
    dots and spaces dropped from segments (as IIS does), or both."""
    readings = set()
    for text in (decoded, unicodedata.normalize("NFKC", decoded)):
        readings.add(text)
        parts = text.split("/")
        readings.add("/".join(p if p in (".", "..") else p.rstrip(". ") for p in parts))
    return readings


@given(
    st.lists(
        st.text(
            st.characters(codec="utf-8", exclude_characters="/%?#;\\\x00"),
            min_size=1,
            max_size=6,
        ),
        min_size=1,
        max_size=4,
    )
)
@settings(max_examples=2000, deadline=None)
def test_what_is_accepted_reads_the_same_to_every_lax_reader(segments: list[str]) -> None:
    decoded = "/" + "/".join(segments)
    try:
        PathReading().check(decoded)
    except InvalidPath:
        return
    assert _loose_readings(decoded) == {decoded}


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("/Orders/ADMIN", "/orders/admin"),
        ("/orders/adm\u0131n", "/orders/admin"),  # dotless i: "I" to Java's toUpperCase
        ("/orders/ADM\u0130N", "/orders/admin"),  # dotted capital I: "i" to toLowerCase
        ("/Stra\u00dfe", "/strasse"),
        ("/caf\u00c9", "/caf\u00e9"),
    ],
)
def test_fold_case_folds_as_case_insensitive_readers_compare(text: str, folded: str) -> None:
    assert fold_case(text) == folded
    assert re.fullmatch(r"[^A-Z]*", fold_case(text))
