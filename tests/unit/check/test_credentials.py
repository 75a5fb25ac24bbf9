"""credentials.bearer: exactly one bearer token, or the precise reason why not."""

from __future__ import annotations

import pytest

from authz.check.credentials import bearer
from authz.check.request import RequestView
from authz.errors import (
    AuthzError,
    InvalidRequest,
    MissingCredentials,
    MultipleCredentials,
    TokenMalformed,
    TokenTooLarge,
)

MAX = 8192
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"


def _request(*values: str) -> RequestView:
    return RequestView(headers={"authorization": values} if values else {})


def _refused(request: RequestView, max_bytes: int = MAX) -> AuthzError:
    with pytest.raises(AuthzError) as info:
        bearer(request, max_bytes)
    return info.value


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_scheme_is_case_insensitive(scheme: str) -> None:
    assert bearer(_request(f"{scheme} {TOKEN}"), MAX) == TOKEN


@pytest.mark.parametrize(
    "value", [f"  Bearer {TOKEN}  ", f"\tBearer {TOKEN}\t", f"Bearer   {TOKEN}", f"Bearer {TOKEN} "]
)
def test_surrounding_whitespace_is_ignored(value: str) -> None:
    assert bearer(_request(value), MAX) == TOKEN


@pytest.mark.parametrize("token", ["abc", "a-b.c_d~e+f/g", "abc=", "abc==", "A1" * 10])
def test_b64token_syntax_is_accepted(token: str) -> None:
    assert bearer(_request(f"Bearer {token}"), MAX) == token


def test_missing_header() -> None:
    error = _refused(_request())
    assert type(error) is MissingCredentials
    assert error.status == 401
    assert error.reason == "missing_token"


def test_other_header_is_not_a_credential() -> None:
    request = RequestView(headers={"x-authorization": (f"Bearer {TOKEN}",)})
    assert type(_refused(request)) is MissingCredentials


@pytest.mark.parametrize(
    "value", ["Basic dXNlcjpzM2NyM3QtcGFzc3dvcmQ=", "Token dXNlcjpzM2NyM3QtcGFzc3dvcmQ=", ""]
)
def test_other_scheme_is_missing_credentials(value: str) -> None:
    error = _refused(_request(value))
    assert type(error) is MissingCredentials
    assert error.reason == "missing_token"


def test_other_scheme_is_not_echoed() -> None:
    credential = "dXNlcjpzM2NyM3QtcGFzc3dvcmQ="
    error = _refused(_request(f"Basic {credential}"))
    assert credential not in str(error)
    assert credential not in error.detail
    assert "Basic" not in error.detail


def test_token_without_scheme_is_not_echoed() -> None:
    # A client that forgot "Bearer " put its token where the scheme goes.
    error = _refused(_request(TOKEN))
    assert type(error) is MissingCredentials
    assert TOKEN not in error.detail
    assert "eyJ" not in str(error)


def test_two_authorization_headers() -> None:
    error = _refused(_request(f"Bearer {TOKEN}", f"Bearer {TOKEN}"))
    assert type(error) is MultipleCredentials
    assert error.status == 400
    assert error.reason == "multiple_credentials"
    assert error.rfc6750_error == "invalid_request"


@pytest.mark.parametrize(
    "value",
    [f"Bearer {TOKEN}, Bearer {TOKEN}", f"Bearer {TOKEN},Basic abc", f"Basic abc, Bearer {TOKEN}"],
)
def test_comma_joined_credentials(value: str) -> None:
    assert type(_refused(_request(value))) is MultipleCredentials


def test_two_headers_one_not_bearer_is_still_multiple() -> None:
    assert type(_refused(_request("Basic abc", f"Bearer {TOKEN}"))) is MultipleCredentials


@pytest.mark.parametrize("value", ["Bearer", "Bearer   ", "bearer\t", "  Bearer  "])
def test_bearer_without_token(value: str) -> None:
    error = _refused(_request(value))
    assert type(error) is InvalidRequest
    assert error.status == 400
    assert error.reason == "invalid_request"


@pytest.mark.parametrize("value", ["Bearer a b", "Bearer abc def", "Bearer a\tb", "Bearer a  b"])
def test_whitespace_inside_the_token(value: str) -> None:
    error = _refused(_request(value))
    assert type(error) is InvalidRequest
    assert error.reason == "invalid_request"


@pytest.mark.parametrize(
    "token",
    ["a$b", "a=b", "=abc", "abc%3D", 'a"b', "a;b", "a\u00e9b", "a\x00b", "a\nb", "<script>"],
)
def test_token_outside_b64token_syntax(token: str) -> None:
    error = _refused(_request(f"Bearer {token}"))
    assert type(error) is TokenMalformed
    assert error.status == 401
    assert error.reason == "token_malformed"


def test_token_at_the_size_limit_is_accepted() -> None:
    token = "a" * 256
    assert bearer(_request(f"Bearer {token}"), 256) == token


def test_token_over_the_size_limit() -> None:
    error = _refused(_request("Bearer " + "a" * 257), 256)
    assert type(error) is TokenTooLarge
    assert error.reason == "token_too_large"
    assert error.status == 401
    assert "a" * 257 not in str(error)


@pytest.mark.parametrize(
    "query",
    [
        "access_token=x",
        "page=1&access_token=x",
        "access%5Ftoken=x",  # an escape that unquotes to the name
        "%61ccess_token=x",
        "access_token",
        "a=1&access%5ftoken=",
    ],
)
def test_a_token_in_the_query_beside_the_header_is_two_credentials(query: str) -> None:
    request = RequestView(
        path=f"/orders?{query}", headers={"authorization": ("Bearer abc.def.ghi",)}
    )
    with pytest.raises(MultipleCredentials):
        bearer(request, 8192)


@pytest.mark.parametrize("query", ["page=1", "access=1&token=2", "x=access%20token", ""])
def test_other_query_names_are_not_credentials(query: str) -> None:
    request = RequestView(
        path=f"/orders?{query}", headers={"authorization": ("Bearer abc.def.ghi",)}
    )
    assert bearer(request, 8192) == "abc.def.ghi"
