"""htu.py: the normal form in which a proof's htu and the request URI are compared."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz.forms.htu import normalize_origin, normalize_uri, remove_dot_segments


@pytest.mark.parametrize(
    ("uri", "normal"),
    [
        # Case: scheme and host lower-case; the path keeps its case.
        ("HTTPS://API.Example.COM/Orders", "https://api.example.com/Orders"),
        # Ports: the scheme's default is dropped, others kept, leading zeros read as numbers.
        ("https://api.example.com:443/a", "https://api.example.com/a"),
        ("http://api.example.com:80/a", "http://api.example.com/a"),
        ("https://api.example.com:80/a", "https://api.example.com:80/a"),
        ("http://api.example.com:443/a", "http://api.example.com:443/a"),
        ("https://api.example.com:8443/a", "https://api.example.com:8443/a"),
        ("https://api.example.com:0443/a", "https://api.example.com/a"),
        ("https://api.example.com:/a", "https://api.example.com/a"),
        # Empty path.
        ("https://api.example.com", "https://api.example.com/"),
        ("https://api.example.com?x=1", "https://api.example.com/"),
        # Query and fragment stripped.
        ("https://api.example.com/a?b=c&d", "https://api.example.com/a"),
        ("https://api.example.com/a#frag", "https://api.example.com/a"),
        ("https://api.example.com/a?b#c?d", "https://api.example.com/a"),
        # Percent-encoding: unreserved decoded, the rest upper-case hex.
        ("https://api.example.com/%7euser/%41%2d", "https://api.example.com/~user/A-"),
        ("https://api.example.com/a%2fb%3a", "https://api.example.com/a%2Fb%3A"),
        ("https://api.example.com/caf%c3%a9", "https://api.example.com/caf%C3%A9"),
        # Dot segments, also spelt with escapes (%2E is ".").
        ("https://api.example.com/a/b/../c", "https://api.example.com/a/c"),
        ("https://api.example.com/a/./b/.", "https://api.example.com/a/b/"),
        ("https://api.example.com/../../a", "https://api.example.com/a"),
        ("https://api.example.com/a/%2E%2e/b", "https://api.example.com/b"),
        ("https://api.example.com/a/..", "https://api.example.com/"),
        # What differs stays different: empty segments, trailing slash.
        ("https://api.example.com/a//b", "https://api.example.com/a//b"),
        ("https://api.example.com/a/", "https://api.example.com/a/"),
        # IP literals.
        ("http://[::1]:8080/x", "http://[::1]:8080/x"),
        ("https://[2001:DB8::1]:443/", "https://[2001:db8::1]/"),
        ("http://127.0.0.1/", "http://127.0.0.1/"),
    ],
)
def test_normal_forms(uri: str, normal: str) -> None:
    assert normalize_uri(uri) == normal
    # A normal form is a fixed point.
    assert normalize_uri(normal) == normal


@pytest.mark.parametrize(
    "uri",
    [
        "/orders",  # relative
        "api.example.com/orders",
        "ftp://api.example.com/x",  # not http(s)
        "urn:example:x",
        "https:///x",  # no host
        "https://user:pw@api.example.com/",  # userinfo
        "https://api.example.com:65536/",
        "https://api.example.com:8x/",
        "https://api.example.com:١٢/",  # non-ASCII digits
        "https://api.exa%6dple.com/",  # escaped host
        "https://api.example.com/%zz",
        "https://api.example.com/%4",
        "https://api.example.com/%",
        "https://api.example.com/a b",
        "https://api.example.com/caf\u00e9",
        "https://api.example.com/\x00",
        'https://api.example.com/"',
        "https://[::1/",
        "https://[zz]/",
        "https://a:1:2/",
        "https://api.example.com/" + "a" * 9000,
    ],
)
def test_uris_without_a_normal_form(uri: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each has its own message
        normalize_uri(uri)


def test_origins() -> None:
    assert normalize_origin("HTTPS://API.example.com:443") == "https://api.example.com"
    assert normalize_origin("https://api.example.com/") == "https://api.example.com"
    assert normalize_origin("http://localhost:8080") == "http://localhost:8080"
    for bad in ["https://api.example.com/v1", "https://a/?x", "https://a#f", "api.example.com"]:
        with pytest.raises(ValueError):  # noqa: PT011
            normalize_origin(bad)


def _rfc_remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, step by step as written: the oracle."""
    source, output = path, ""
    while source:
        if source.startswith("../"):
            source = source[3:]
        elif source.startswith(("./", "/./")):
            source = source[2:]
        elif source == "/.":
            source = "/"
        elif source.startswith("/../"):
            source = source[3:]
            output = output[: output.rfind("/")] if "/" in output else ""
        elif source == "/..":
            source = "/"
            output = output[: output.rfind("/")] if "/" in output else ""
        elif source in (".", ".."):
            source = ""
        else:
            end = source.find("/", 1)
            end = len(source) if end < 0 else end
            output += source[:end]
            source = source[end:]
    return output


def test_the_rfc_example() -> None:
    assert remove_dot_segments("/a/b/c/./../../g") == "/a/g"
    assert _rfc_remove_dot_segments("/a/b/c/./../../g") == "/a/g"


@given(
    segments=st.lists(st.sampled_from(["a", "b", ".", "..", "", ".a", "..b", "%2E"]), max_size=10)
)
def test_dot_segment_removal_is_the_rfcs(segments: list[str]) -> None:
    path = "/" + "/".join(segments)
    assert remove_dot_segments(path) == _rfc_remove_dot_segments(path)
