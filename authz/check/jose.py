"""Strict decoding of compact JWS parts, shared by every JWS authz reads.

One token must have exactly one spelling, so only canonical unpadded base64url
(RFC 7515 §2) is accepted, and JSON only as UTF-8 objects without duplicate
members, NaN/Infinity or lone surrogates. A caller names the error class to
raise, so an access token's problem and a DPoP proof's problem stay apart.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from types import TracebackType
from typing import Any

from authz.errors import AuthzError, InternalError, TokenMalformed

__all__ = ["FailClosed", "b64url_decode", "b64url_encode", "json_object"]

_B64URL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_B64URL_VALUE = {character: value for value, character in enumerate(_B64URL)}
_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_UNUSED_BITS = {0: 0, 2: 0b1111, 3: 0b11}
_PADDING = {0: b"", 2: b"==", 3: b"="}


class _NotStrictJson(ValueError):
    """Raised inside the decoder's hooks; json_object turns it into the caller's error."""


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: str, what: str, error: type[AuthzError] = TokenMalformed) -> bytes:
    raw = segment.encode("ascii", "replace")
    size = len(raw)
    # translate() deleting every alphabet byte leaves only the strangers (in C).
    if not raw or raw.translate(None, _B64URL) or size % 4 == 1:
        raise error(f"{what} is not unpadded base64url")
    # The last character of a segment whose length is not a multiple of 4 has
    # unused low bits; canonical means they are zero (4 bits, or 2).
    unused = _UNUSED_BITS[size % 4]
    if unused and _B64URL_VALUE[raw[-1]] & unused:
        raise error(f"{what} is not canonical base64url")
    try:
        return binascii.a2b_base64(raw.translate(_URLSAFE_TO_STANDARD) + _PADDING[size % 4])
    except (binascii.Error, ValueError):
        raise error(f"{what} is not base64url") from None


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # dict() in C, then one comparison: a shorter dict means a repeated member.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _NotStrictJson("JSON object has a duplicate member")
    return result


def _reject_constant(name: str) -> Any:
    raise _NotStrictJson(f"JSON has the non-standard constant {name}")


# One decoder, made once: json.loads would build a new one per call.
_DECODER = json.JSONDecoder(object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def json_object(data: bytes, what: str, error: type[AuthzError] = TokenMalformed) -> dict[str, Any]:
    try:
        # Strict UTF-8 (RFC 8259 §8.1): json.loads on bytes would also accept UTF-16/32.
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{what} is not UTF-8") from None
    try:
        value = _DECODER.decode(text)
    except _NotStrictJson as exc:
        raise error(f"{what}: {exc}") from None
    except ValueError:
        # JSONDecodeError, and ValueError for integers past Python's digit limit.
        raise error(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise error(f"{what} is not a JSON object")
    # A \uD800-\uDFFF escape may leave a lone surrogate: a string that is not
    # Unicode, which no header, record or log line can carry (RFC 8259 §8.2).
    if _SURROGATE_ESCAPE.search(text) and not _unicode_throughout(value):
        raise error(f"{what} holds a string that is not valid Unicode")
    return value


def _unicode_throughout(value: Any) -> bool:
    """Whether every string in a decoded JSON value (keys too) encodes as UTF-8."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True


class FailClosed:
    """``with FailClosed("verification", TokenMalformed):`` around library code
    that parses hostile bytes: a deny passes through, JSON nested past
    Python's recursion limit is ``too_deep`` (the input's fault), and anything
    else a library raised that was not foreseen is an InternalError (a 503,
    never an allow), naming the exception's type only."""

    __slots__ = ("_too_deep", "_what")

    def __init__(self, what: str, too_deep: type[AuthzError]) -> None:
        self._what = what
        self._too_deep = too_deep

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, AuthzError) or not isinstance(exc, Exception):
            return
        if isinstance(exc, RecursionError):
            raise self._too_deep(f"{self._what}: JSON nests too deeply") from None
        raise InternalError(f"{self._what} failed: {type(exc).__name__}") from exc
