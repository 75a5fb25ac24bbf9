"""Verified claims -> identity headers for the upstream service.

A claim may be a string, a number or a list of those (joined with a space for
``scope``-like lists: an OAuth ``scp`` array and a ``scope`` string read the
same). A value with control characters is refused rather than passed on, since
a header value cannot carry it safely. An absent claim sets no header; the
client's copy of every header in the namespace is removed all the same.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from authz.config import IdentityConfig
from authz.errors import ClaimInvalid

__all__ = ["MAX_HEADER_VALUE", "identity_headers", "scopes"]

MAX_HEADER_VALUE = 4096
# Visible ASCII, space and any non-ASCII character; no CTLs (RFC 9110 §5.5).
_SAFE_VALUE = re.compile(r"[^\x00-\x1f\x7f]*")


def scopes(claims: Mapping[str, Any]) -> list[str]:
    """OAuth scopes from ``scope`` (space-separated string) or ``scp`` (array).

    A malformed claim is refused, not half-read: a scope array item holding a
    space would otherwise become two scopes downstream.
    """
    scope = claims.get("scope")
    if scope is not None:
        if not isinstance(scope, str):
            raise ClaimInvalid("scope claim is not a string")
        return scope.split()
    scp = claims.get("scp")
    if scp is None:
        return []
    if isinstance(scp, str):
        return scp.split()
    if isinstance(scp, list) and all(
        isinstance(item, str) and item and not any(c.isspace() for c in item) for item in scp
    ):
        return list(scp)
    raise ClaimInvalid("scp claim is not a string or an array of scope tokens")


def identity_headers(claims: Mapping[str, Any], config: IdentityConfig) -> list[tuple[str, str]]:
    headers = []
    for header, claim in config.headers.items():
        value = " ".join(scopes(claims)) if claim == "scope" else _render(claims.get(claim), claim)
        if not value:
            continue
        if len(value) > MAX_HEADER_VALUE or not _SAFE_VALUE.fullmatch(value):
            raise ClaimInvalid(f"claim {claim!r} cannot be carried in header {header!r}")
        headers.append((header, value))
    return headers


def _render(value: Any, claim: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, list) and all(
        isinstance(item, str | int | float) and not isinstance(item, bool) for item in value
    ):
        items = [str(item) for item in value]
        # A list is joined with "," so no item may contain one.
        if any("," in item for item in items):
            raise ClaimInvalid(f"claim {claim!r} has a list item containing ','")
        return ",".join(items)
    raise ClaimInvalid(f"claim {claim!r} is not a scalar or a list of scalars")
