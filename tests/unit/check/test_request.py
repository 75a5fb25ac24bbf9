"""request.view: a CheckRequest reduced to an immutable view, from either header form."""

from __future__ import annotations

import dataclasses

import pytest

from authz._proto.envoy.config.core.v3 import base_pb2
from authz._proto.envoy.service.auth.v3 import external_auth_pb2
from authz.check.request import RequestView, view


def _check_request(
    headers: dict[str, str] | None = None,
    raw_headers: list[tuple[str, bytes | str]] | None = None,
) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method = "POST"
    http.path = "/orders/7?expand=items&x=1"
    http.host = "api.example:8443"
    http.scheme = "https"
    http.protocol = "HTTP/2"
    for name, value in (headers or {}).items():
        http.headers[name] = value
    for name, raw in raw_headers or []:
        if isinstance(raw, bytes):
            http.header_map.headers.append(base_pb2.HeaderValue(key=name, raw_value=raw))
        else:
            http.header_map.headers.append(base_pb2.HeaderValue(key=name, value=raw))
    return request


def test_request_line_fields() -> None:
    result = view(_check_request())
    assert result.method == "POST"
    assert result.path == "/orders/7?expand=items&x=1"
    assert result.path_without_query == "/orders/7"
    assert result.host == "api.example:8443"
    assert result.scheme == "https"
    assert result.protocol == "HTTP/2"


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/a", "/a"), ("/a?", "/a"), ("/a?b?c", "/a"), ("", ""), ("?x=1", "")],
)
def test_path_without_query(path: str, expected: str) -> None:
    assert RequestView(path=path).path_without_query == expected


def test_headers_map_form() -> None:
    request = _check_request(
        {"authorization": "Bearer abc", "X-Request-Id": "r-1", "accept": "*/*"}
    )
    result = view(request)
    assert result.headers == {
        "authorization": ("Bearer abc",),
        "x-request-id": ("r-1",),
        "accept": ("*/*",),
    }
    assert result.header("authorization") == ("Bearer abc",)
    assert result.header("missing") == ()


def test_headers_map_form_keeps_envoy_joined_duplicates_as_one_value() -> None:
    result = view(_check_request({"authorization": "Bearer a,Bearer b"}))
    assert result.header("authorization") == ("Bearer a,Bearer b",)


def test_header_map_form_keeps_duplicates_in_order() -> None:
    request = _check_request(
        raw_headers=[
            ("authorization", b"Bearer first"),
            ("x-auth-subject", b"mallory"),
            ("Authorization", b"Bearer second"),
        ]
    )
    result = view(request)
    assert result.header("authorization") == ("Bearer first", "Bearer second")
    assert result.header("x-auth-subject") == ("mallory",)
    assert set(result.headers) == {"authorization", "x-auth-subject"}


def test_header_map_form_replaces_invalid_utf8() -> None:
    result = view(_check_request(raw_headers=[("authorization", b"Bearer a\xffb\xc3")]))
    assert result.header("authorization") == ("Bearer a\ufffdb\ufffd",)


def test_header_map_form_decodes_utf8() -> None:
    result = view(_check_request(raw_headers=[("x-name", "Zoë".encode())]))
    assert result.header("x-name") == ("Zoë",)


def test_header_map_form_falls_back_to_value() -> None:
    result = view(_check_request(raw_headers=[("x-plain", "text"), ("x-raw", b"bytes")]))
    assert result.header("x-plain") == ("text",)
    assert result.header("x-raw") == ("bytes",)


def test_header_map_form_wins_over_headers_map() -> None:
    request = _check_request(
        {"authorization": "Bearer from-map"}, raw_headers=[("authorization", b"Bearer raw")]
    )
    assert view(request).header("authorization") == ("Bearer raw",)


def test_no_headers() -> None:
    assert view(_check_request()).headers == {}


def _with_socket(address: str, port: int) -> external_auth_pb2.CheckRequest:
    request = _check_request()
    socket = request.attributes.source.address.socket_address
    socket.address = address
    socket.port_value = port
    return request


@pytest.mark.parametrize(
    ("address", "port", "expected"),
    [
        ("10.1.2.3", 51234, "10.1.2.3:51234"),
        ("::1", 443, "[::1]:443"),
        ("2001:db8::7", 8080, "[2001:db8::7]:8080"),
        ("::ffff:10.0.0.1", 1, "[::ffff:10.0.0.1]:1"),
        ("127.0.0.1", 0, "127.0.0.1:0"),
    ],
)
def test_socket_source_address(address: str, port: int, expected: str) -> None:
    assert view(_with_socket(address, port)).source_address == expected


def test_pipe_source_address() -> None:
    request = _check_request()
    request.attributes.source.address.pipe.path = "/run/envoy/front.sock"
    assert view(request).source_address == "unix:/run/envoy/front.sock"


def test_no_source_address() -> None:
    assert view(_check_request()).source_address == ""


def test_source_principal() -> None:
    request = _check_request()
    request.attributes.source.principal = "spiffe://cluster.local/ns/shop/sa/web"
    assert view(request).source_principal == "spiffe://cluster.local/ns/shop/sa/web"


def test_context_extensions() -> None:
    request = _check_request()
    request.attributes.context_extensions["route"] = "orders"
    request.attributes.context_extensions["tier"] = "gold"
    result = view(request)
    assert result.context_extensions == {"route": "orders", "tier": "gold"}
    assert isinstance(result.context_extensions, dict)


def test_request_id_from_a_single_header() -> None:
    assert view(_check_request({"x-request-id": "abc-123"})).request_id == "abc-123"


def test_request_id_is_empty_when_ambiguous_or_absent() -> None:
    two = _check_request(raw_headers=[("x-request-id", b"one"), ("x-request-id", b"two")])
    assert view(two).request_id == ""
    assert view(_check_request()).request_id == ""


def test_empty_check_request() -> None:
    result = view(external_auth_pb2.CheckRequest())
    assert result == RequestView()
    assert result.method == ""
    assert result.path_without_query == ""


def test_view_is_immutable() -> None:
    result = view(_check_request({"authorization": "Bearer abc"}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.path = "/admin"  # type: ignore[misc]
    assert isinstance(result.header("authorization"), tuple)


def test_raw_headers_are_read_as_envoy_sent_them() -> None:
    # Names lower-cased, values decoded as UTF-8, counted as Envoy counts them.
    headers: list[tuple[str, bytes | str]] = [
        ("Host", b"api"),
        ("authorization", b"Bearer x"),
        ("x-b", "café".encode()),
    ]
    request = _check_request(raw_headers=headers)
    result = view(request)
    assert result.headers == {
        "host": ("api",),
        "authorization": ("Bearer x",),
        "x-b": ("café",),
    }
    assert result.header_count == 3
    assert result.header_bytes == len("HostapiauthorizationBearer x") + len("x-bcafé".encode())
