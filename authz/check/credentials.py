"""Exactly one bearer credential from the request (RFC 6750 §2.1).

- No ``Authorization`` header, or one with another scheme: MissingCredentials
  (401 with a bare challenge, RFC 6750 §3.1).
- More than one ``Authorization`` header (Envoy joins duplicates with ","), or
  several credentials in one: MultipleCredentials (400 invalid_request).
- ``Bearer`` with no token, or with spaces inside it: InvalidRequest.
- A token outside the b64token syntax: TokenMalformed (401 invalid_token).
- A header credential plus an ``access_token`` query parameter: more than one
  method (RFC 6750 §3.1), MultipleCredentials. A query token alone is never
  read: tokens in URLs end up in logs and caches.
The scheme name is case-insensitive. ``authorization`` also accepts the
``DPoP`` scheme (RFC 9449 §7.1), where the route asks for sender-constrained
tokens; its token has the same syntax, and the scheme is returned with it.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

from authz.check.request import RequestView
from authz.errors import (
    InvalidRequest,
    MissingCredentials,
    MultipleCredentials,
    TokenMalformed,
    TokenTooLarge,
)

__all__ = ["BEARER", "DPOP", "authorization", "bearer"]


def _has_query_token(path: str) -> bool:
    _, _, query = path.partition("?")
    if not query or ("access_token" not in query and "%" not in query):
        # Without an escape, unquoting cannot make a name "access_token".
        return False
    names = (item.split("=", 1)[0] for item in query.split("#", 1)[0].split("&"))
    return any(unquote_plus(name) == "access_token" for name in names)


# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
BEARER, DPOP = "bearer", "dpop"
_NAMES = {BEARER: "Bearer", DPOP: "DPoP"}


def bearer(request: RequestView, max_token_bytes: int) -> str:
    return authorization(request, max_token_bytes, (BEARER,))[1]


def authorization(
    request: RequestView, max_token_bytes: int, schemes: tuple[str, ...]
) -> tuple[str, str]:
    """The one credential, as (scheme, token): ``schemes`` are the lower-case
    schemes accepted; any other scheme is no credential at all."""
    values = request.header("authorization")
    if not values:
        raise MissingCredentials("no Authorization header")
    if _has_query_token(request.path):
        raise MultipleCredentials("a token in the Authorization header and in the query")
    if len(values) > 1 or "," in values[0]:
        raise MultipleCredentials("more than one Authorization credential")
    # Only SP and HTAB are whitespace around a credential (RFC 9110 §5.6.3).
    credential = values[0].strip(" \t")
    scheme, _, token = credential.partition(" ")
    scheme = scheme.lower()
    if scheme not in schemes:
        # The scheme is not echoed: a client that forgot "Bearer " put its token there.
        names = " or ".join(_NAMES[accepted] for accepted in schemes)
        raise MissingCredentials(f"Authorization scheme is not {names}")
    token = token.strip(" \t")
    if not token:
        raise InvalidRequest(f"{_NAMES[scheme]} scheme without a token")
    if len(token) > max_token_bytes:
        raise TokenTooLarge(f"token is {len(token)} bytes; the limit is {max_token_bytes}")
    if " " in token or "\t" in token:
        raise InvalidRequest("whitespace inside the bearer token")
    if not _B64TOKEN.fullmatch(token):
        raise TokenMalformed("token has characters outside the b64token syntax")
    return scheme, token
