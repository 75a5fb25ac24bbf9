"""paths: the one normal form routes are matched on; ambiguous paths are refused."""

from __future__ import annotations

import pytest

from authz.errors import InvalidPath, InvalidRequest
from authz.paths import normalize_host, normalize_path


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("/", "/"),
        ("/orders", "/orders"),
        ("/orders?x=1&y=/../admin", "/orders"),
        ("/orders/?x=1", "/orders"),
        # trailing and duplicate slashes
        ("/orders/", "/orders"),
        ("/orders//", "/orders"),
        ("//orders", "/orders"),
        ("/orders//7///items", "/orders/7/items"),
        ("///", "/"),
        # dot segments, plain and percent-encoded
        ("/a/./b", "/a/b"),
        ("/a/../b", "/b"),
        ("/public/../admin", "/admin"),
        ("/a/b/../../c", "/c"),
        ("/a/%2e/b", "/a/b"),
        ("/a/%2E%2e/b", "/b"),
        ("/a/.%2e/b", "/b"),
        ("/a/%2e./b", "/b"),
        ("/a/..", "/"),
        ("/a/.", "/a"),
        ("/..a/b..", "/..a/b.."),
        ("/.../x", "/.../x"),
        # unreserved escapes are decoded, others kept in upper case, never twice
        ("/%61dmin", "/admin"),
        ("/a%7Eb", "/a~b"),
        ("/a%2db%5F", "/a-b_"),
        ("/a%20b", "/a%20b"),
        ("/a%3fb", "/a%3Fb"),
        ("/100%25", "/100%25"),
        ("/100%25off", "/100%25off"),
        ("/%C3%A9t%c3%a9", "/%C3%A9t%C3%A9"),
        # other RFC 3986 path characters pass as they are
        ("/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,="),
        ("/v1/projects:search", "/v1/projects:search"),
        # case is significant
        ("/Orders", "/Orders"),
    ],
)
def test_normal_form(raw: str, normal: str) -> None:
    assert normalize_path(raw) == normal


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "start with '/'"),
        ("orders", "start with '/'"),
        ("*", "start with '/'"),
        ("http://evil.example/admin", "start with '/'"),
        ("?x=1", "start with '/'"),
        # ".." above the root, plain or encoded
        ("/..", "above the root"),
        ("/../admin", "above the root"),
        ("/a/../../admin", "above the root"),
        ("/%2e%2e/admin", "above the root"),
        # encoded separators and control characters
        ("/a%2fb", "encoded"),
        ("/a%2Fb", "encoded"),
        ("/public%2f..%2fadmin", "encoded"),
        ("/a%5cb", "encoded"),
        ("/a%00b", "encoded"),
        ("/a%0ab", "encoded"),
        ("/a%7fb", "encoded"),
        # malformed escapes
        ("/a%", "malformed"),
        ("/a%4", "malformed"),
        ("/a%zz", "malformed"),
        ("/a%u002e", "malformed"),
        ("/a%%32%65", "malformed"),
        # double encoding, and escapes that are not UTF-8 (overlong forms included)
        ("/a%252e%252e/b", "double-encoded"),
        ("/a%252F", "double-encoded"),
        ("/a%c0%ae%c0%ae/b", "not UTF-8"),
        ("/a%ff", "not UTF-8"),
        ("/a%C3", "not UTF-8"),
        # characters outside RFC 3986 path characters, and ";"
        ("/a\\..\\admin", "RFC 3986"),
        ("/a b", "RFC 3986"),
        ("/a\tb", "RFC 3986"),
        ("/a\nb", "RFC 3986"),
        ("/a#frag", "RFC 3986"),
        ("/a<b>", "RFC 3986"),
        ('/a"b', "RFC 3986"),
        ("/a|b", "RFC 3986"),
        ("/a{b}", "RFC 3986"),
        ("/a^b", "RFC 3986"),
        ("/a`b", "RFC 3986"),
        ("/été", "RFC 3986"),
        ("/public/..;/admin", "';'"),
        ("/admin;jsessionid=x", "';'"),
        ("/" + "a" * 9000, "longer than"),
    ],
)
def test_ambiguous_paths_are_refused(raw: str, why: str) -> None:
    with pytest.raises(InvalidPath) as info:
        normalize_path(raw)
    assert why in info.value.detail
    assert info.value.status == 400
    assert info.value.reason == "invalid_path"
    assert isinstance(info.value, InvalidRequest)


@pytest.mark.parametrize(
    "raw",
    ["/a/%2e%2e/b//c/", "/x/./%7e/y?q", "/%41%42/../c", "/a%3fb/%C3%A9", "//a///b/", "/5%25"],
)
def test_normal_form_is_a_fixed_point(raw: str) -> None:
    once = normalize_path(raw)
    assert normalize_path(once) == once


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
        ("", ""),
        ("host:port", "host:port"),
    ],
)
def test_normalize_host(raw: str, host: str) -> None:
    assert normalize_host(raw) == host
