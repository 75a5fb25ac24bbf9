"""paths: Envoy's normal form modelled exactly; anything else, or ambiguous, is refused.

The expected values of ``test_envoy_normal_form`` were measured with the real
Envoy 1.40 (normalize_path and merge_slashes on); tests/e2e/test_edge_paths.py
checks the model against the running Envoy on generated paths.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.check.hosts import normalize_host
from authz.check.paths import (
    _PLAIN,
    _refuse_ambiguous,
    config_path,
    envoy_normal_form,
    match_form,
    normalize_path,
)
from authz.errors import InvalidHost, InvalidPath, InvalidRequest


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
