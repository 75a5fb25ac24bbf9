"""unchecked: what an allow takes off the request because authz did not check it."""

from __future__ import annotations

import pytest

from authz.check.request import RequestView
from authz.check.unchecked import METHOD_OVERRIDE_HEADERS, unchecked
from authz.errors import InvalidRequest


def _request(path: str = "/docs", **headers: str) -> RequestView:
    return RequestView(
        method="GET", path=path, headers={k.replace("_", "-"): (v,) for k, v in headers.items()}
    )


def _removed(
    request: RequestView, verified: bool = False, **settings: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return unchecked(
        request,
        credential_verified=verified,
        credentials=settings.get("credentials", "remove"),  # type: ignore[arg-type]
        method_overrides=settings.get("overrides", "remove"),  # type: ignore[arg-type]
    )


def test_an_unverified_authorization_header_is_removed() -> None:
    request = _request(authorization="Bearer forged")
    assert _removed(request) == (("authorization",), ())
    assert _removed(request, verified=True) == ((), ())
    assert _removed(request, credentials="forward") == ((), ())


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("access_token=x", ("access_token",)),
        ("a=1&Access_Token=x", ("Access_Token",)),
        ("ACCESS_TOKEN=x&b=2", ("ACCESS_TOKEN",)),
        ("access%5Ftoken=x", ("access%5Ftoken",)),
        ("%61ccess_token=x&access_token=y", ("%61ccess_token", "access_token")),
        ("access_token", ("access_token",)),
        ("_method=DELETE", ("_method",)),
        ("_METHOD=delete&access_token=t", ("_METHOD", "access_token")),
        ("page=2&sort=asc", ()),
        ("access_tokens=x&my_access_token=y", ()),
    ],
)
def test_query_tokens_and_method_overrides_are_removed_however_spelled(
    query: str, names: tuple[str, ...]
) -> None:
    assert _removed(_request(f"/docs?{query}")) == ((), names)


@pytest.mark.parametrize("query", ["a=1;access_token=x", "access_token;a=1", "q=1;_method=PUT"])
def test_a_name_envoy_cannot_remove_is_refused(query: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        _removed(_request(f"/docs?{query}"))
    assert "is not accepted" in info.value.detail
    assert _removed(_request(f"/docs?{query}"), credentials="forward", overrides="forward") == (
        (),
        (),
    )


@pytest.mark.parametrize("header", METHOD_OVERRIDE_HEADERS)
def test_method_override_headers_are_removed_or_refused(header: str) -> None:
    request = RequestView(method="GET", path="/orders/1", headers={header: ("DELETE",)})
    assert _removed(request) == ((header,), ())
    with pytest.raises(InvalidRequest) as info:
        _removed(request, overrides="refuse")
    assert header in info.value.detail
    assert _removed(request, overrides="forward") == ((), ())


def test_a_method_override_query_parameter_is_refused_when_refusing() -> None:
    with pytest.raises(InvalidRequest):
        _removed(_request("/orders/1?_method=DELETE"), overrides="refuse")


def test_a_dry_run_refuses_nothing_and_removes_what_it_can() -> None:
    request = _request("/docs?a=1;access_token=x&_method=PUT", x_http_method="DELETE")
    removal = unchecked(
        request,
        credential_verified=False,
        credentials="remove",
        method_overrides="refuse",
        refuse=False,
    )
    assert removal == (("x-http-method",), ("_method",))
