"""The exception tree: every deny carries a status, an RFC 6750 code and a stable reason."""

from __future__ import annotations

import inspect
import re

import pytest

from authz import errors
from authz.errors import (
    AuthzError,
    ConfigError,
    Forbidden,
    InvalidRequest,
    InvalidToken,
    MissingCredentials,
    MultipleCredentials,
    NoRoute,
    TokenExpired,
    Unauthenticated,
    Unavailable,
)

DENY_CLASSES: list[type[AuthzError]] = [
    getattr(errors, name) for name in errors.__all__ if name != "ConfigError"
]
DOC_LINES = (errors.__doc__ or "").splitlines()
DOC_CASES = [pytest.param(cls, id=cls.__name__) for cls in DENY_CLASSES]


def _doc_line(name: str) -> str:
    """The docstring tree line that names class ``name`` (exactly one)."""
    matches = [line for line in DOC_LINES if re.search(rf"\b{name}\b", line)]
    assert len(matches) == 1, f"{name} appears {len(matches)} times in the tree"
    return matches[0]


def test_all_lists_every_public_exception_class() -> None:
    defined = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value)
        and issubclass(value, Exception)
        and value.__module__ == errors.__name__
        and not name.startswith("_")
    }
    assert defined == set(errors.__all__)


@pytest.mark.parametrize("cls", DENY_CLASSES, ids=lambda cls: cls.__name__)
def test_every_deny_class_is_an_authz_error_with_a_known_status(cls: type[AuthzError]) -> None:
    assert issubclass(cls, AuthzError)
    assert cls.status in {400, 401, 403, 431, 503}
    assert cls.reason
    assert cls.description


def test_reasons_are_unique() -> None:
    reasons = [cls.reason for cls in DENY_CLASSES]
    assert len(reasons) == len(set(reasons)), reasons


def test_config_error_is_not_a_deny() -> None:
    # A configuration problem stops start-up; it must never become a per-request answer.
    assert not issubclass(ConfigError, AuthzError)
    assert issubclass(ConfigError, Exception)


@pytest.mark.parametrize("cls", DOC_CASES)
def test_docstring_tree_lists_the_class_with_its_reason(cls: type[AuthzError]) -> None:
    line = _doc_line(cls.__name__)
    assert re.search(rf"\b{re.escape(cls.reason)}\b", line), line


@pytest.mark.parametrize("cls", DENY_CLASSES, ids=lambda cls: cls.__name__)
def test_docstring_tree_status_matches_the_class(cls: type[AuthzError]) -> None:
    # Rows that state a status must state the class's own; subclasses inherit theirs.
    statuses = re.findall(r"\b(400|401|403|431|503)\b", _doc_line(cls.__name__))
    assert statuses in ([], [str(cls.status)])


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (InvalidRequest, "invalid_request"),
        (MultipleCredentials, "invalid_request"),
        (Unauthenticated, None),
        (MissingCredentials, None),
        (InvalidToken, "invalid_token"),
        (TokenExpired, "invalid_token"),
        (Forbidden, "insufficient_scope"),
        (Unavailable, None),
    ],
)
def test_rfc6750_error_codes(cls: type[AuthzError], expected: str | None) -> None:
    assert cls.rfc6750_error == expected


@pytest.mark.parametrize(
    "cls",
    [cls for cls in DENY_CLASSES if cls not in (AuthzError, NoRoute)],
    ids=lambda cls: cls.__name__,
)
def test_rfc6750_code_follows_the_status(cls: type[AuthzError]) -> None:
    by_status: dict[int, set[str | None]] = {
        400: {"invalid_request"},
        431: {"invalid_request"},
        403: {"insufficient_scope"},
        503: {None},
    }
    # 401: RFC 6750's invalid_token, or RFC 9449 §7.1/§9's DPoP codes.
    allowed = by_status.get(
        cls.status, {None, "invalid_token", "invalid_dpop_proof", "use_dpop_nonce"}
    )
    assert cls.rfc6750_error in allowed


@pytest.mark.parametrize("cls", DENY_CLASSES, ids=lambda cls: cls.__name__)
def test_dpop_codes_belong_to_dpop_classes_only(cls: type[AuthzError]) -> None:
    if cls.rfc6750_error in ("invalid_dpop_proof", "use_dpop_nonce"):
        assert cls.status == 401
        assert cls.__name__.startswith(("Dpop", "InvalidDpop"))
        assert issubclass(cls, Unauthenticated)
        assert not issubclass(cls, InvalidToken)


@pytest.mark.parametrize("cls", DENY_CLASSES, ids=lambda cls: cls.__name__)
def test_every_invalid_token_subclass_says_invalid_token(cls: type[AuthzError]) -> None:
    if issubclass(cls, InvalidToken):
        assert cls.status == 401
        assert cls.rfc6750_error == "invalid_token"


def test_no_route_is_a_403_that_no_token_can_fix() -> None:
    # Not insufficient_scope: that would tell the client a better token helps.
    assert NoRoute.status == 403
    assert NoRoute.rfc6750_error is None
    assert not issubclass(NoRoute, Forbidden)


def test_detail_defaults_to_the_reason() -> None:
    error = TokenExpired()
    assert error.detail == "token_expired"
    assert str(error) == "token_expired"


def test_detail_is_kept_for_operators() -> None:
    error = TokenExpired("exp was 12 seconds ago")
    assert error.detail == "exp was 12 seconds ago"
    assert str(error) == "exp was 12 seconds ago"
    # The client-facing description is fixed text, never the detail.
    assert error.description == "The access token expired"


def test_forbidden_carries_the_required_scope() -> None:
    error = Forbidden("needs orders:write", scope="orders:write")
    assert error.scope == "orders:write"
    assert error.status == 403
    assert error.reason == "insufficient_scope"
    assert Forbidden().scope == ""
