"""Verified claims -> identity headers for the upstream service.

A claim is read by its path (``sub``, ``realm_access.roles``) and may be a
string, a number, a boolean or a list of those; ``scope`` reads the OAuth
``scope`` string or ``scp`` array alike. The rules compare the claim's exact
value; the upstream reads the header after HTTP has trimmed it and its
framework has decoded it. Every value is therefore carried in one form that
both read the same, chosen by ``identity.encoding``:

- ``percent`` (the default): each value is percent-encoded, its UTF-8 bytes
  outside visible ASCII (``!`` to ``~``) and the bytes ``%`` and ``,`` written
  as ``%XX``. A list is its items, each encoded, joined with ``,``; scopes are
  joined with a space. So a header holds visible ASCII only, no value can read
  as another value or as a list (``"clerk,orders-admin"`` is ``clerk%2Corders-admin``,
  a two-item array ``clerk,orders-admin``), and the upstream gets every
  verified value exactly back with a standard function: split a list at
  ``,``, then ``urllib.parse.unquote`` (Python), ``decodeURIComponent`` (JS),
  ``url.PathUnescape`` (Go) each item. ``Zoë`` is ``Zo%C3%AB``.
- ``refuse``: a value is carried only as it is, and only if both read it the
  same: visible ASCII and interior spaces, no leading or trailing whitespace
  (RFC 9110 §5.5 trims it), no control character, nothing outside ASCII, and no
  ``,`` (in a list item or a single value: ``"a,b"`` would read as a list).
  Anything else denies the request (401 ``claim_invalid``).

Either way, a list item that is empty, a number that is not finite
(``1e400`` reads as infinity), a string that is not valid Unicode (a lone
surrogate), a value larger than ``max_header_bytes`` (encoded) or a set larger
than ``max_total_bytes`` is refused, never passed on, changed or cut short:
the allow becomes a 401 ``claim_invalid`` whose detail names the claim and the
problem, never the value. An absent claim (or an empty string) sets no header;
the client's copy of every header in the namespace is removed all the same
(``headers_to_remove``).

``payload_header`` carries the whole verified payload: the token's payload
segment exactly as signed (base64url of the JSON), like Envoy's
``forward_payload_header``, so the upstream can decode it without re-encoding
doubts.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from authz.check.claims import claim_value
from authz.config.models import IdentityConfig
from authz.config.rules import RouteIdentityConfig, claim_path
from authz.errors import ClaimInvalid

__all__ = ["PERCENT", "REFUSE", "IdentityPlan", "headers_to_remove", "percent_encode", "scopes"]

# What a header value may hold so that the upstream reads exactly what the
# rules checked: visible ASCII and spaces (and no space at either end).
_CARRIED = re.compile(r"[\x20-\x7e]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SCOPE = ("scope",)
PERCENT = "percent"
REFUSE = "refuse"
# Bytes a percent-encoded value keeps as they are: visible ASCII but % and ",".
_KEPT = frozenset(range(0x21, 0x7F)) - {ord("%"), ord(",")}
_ENCODED = tuple(chr(byte) if byte in _KEPT else f"%{byte:02X}" for byte in range(256))
_PLAIN = re.compile(r"[!-$&-+\--~]*")  # visible ASCII without % and ",": nothing to encode


def percent_encode(text: str) -> str:
    """``text`` with every UTF-8 byte outside visible ASCII, and % and ",", as %XX."""
    if _PLAIN.fullmatch(text):
        return text
    return "".join(_ENCODED[byte] for byte in text.encode("utf-8"))


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


@dataclass(frozen=True, slots=True)
class IdentityPlan:
    """The identity headers of one route: which claims go where, and the limits."""

    headers: tuple[tuple[str, tuple[str, ...]], ...]
    payload_header: str | None
    strip_authorization: bool
    max_header_bytes: int
    max_total_bytes: int
    encoding: str = PERCENT  # PERCENT or REFUSE

    @classmethod
    def from_config(
        cls, identity: IdentityConfig, route: RouteIdentityConfig | None = None
    ) -> IdentityPlan:
        """The global ``identity`` section, with a route's changes applied."""
        headers = identity.headers
        payload_header = identity.payload_header
        strip = identity.strip_authorization
        if route is not None:
            headers = route.headers if route.headers is not None else headers
            if route.payload_header is not None:
                payload_header = route.payload_header or None  # false: none here
            if route.strip_authorization is not None:
                strip = route.strip_authorization
        return cls(
            headers=tuple((header, claim_path(claim)) for header, claim in headers.items()),
            payload_header=payload_header,
            strip_authorization=strip,
            max_header_bytes=identity.max_header_bytes,
            max_total_bytes=identity.max_total_bytes,
            encoding=identity.encoding,
        )

    @property
    def names(self) -> tuple[str, ...]:
        """Every header this plan may set."""
        names = tuple(header for header, _ in self.headers)
        return (*names, self.payload_header) if self.payload_header else names

    def render(
        self, claims: Mapping[str, Any], token_text: str | None = None
    ) -> list[tuple[str, str]]:
        """The headers for ``claims``; ClaimInvalid if any cannot be carried.

        No partial identity: an allow carries every header that applies or none.
        """
        result: list[tuple[str, str]] = []
        total = 0
        percent = self.encoding == PERCENT
        for header, path in self.headers:
            label = ".".join(path)
            if path == _SCOPE:
                value = _scope_value(claims, percent)
            else:
                value = _render(claim_value(claims, path), label, percent)
            if not value:
                continue
            if not percent:
                problem = _problem(value)
                if problem:
                    raise ClaimInvalid(f"claim {label!r} (header {header!r}) {problem}")
                if "," in value and not isinstance(claim_value(claims, path), list):
                    raise ClaimInvalid(
                        f"claim {label!r} (header {header!r}) contains ',' and would read as a list"
                    )
            size = len(value)  # ASCII only, by now
            if size > self.max_header_bytes:
                raise ClaimInvalid(
                    f"claim {label!r} (header {header!r}) is {size} bytes; "
                    f"the limit is {self.max_header_bytes}"
                )
            total += len(header) + size
            result.append((header, value))
        if self.payload_header and token_text:
            payload = _payload_segment(token_text)
            total += len(self.payload_header) + len(payload)
            result.append((self.payload_header, payload))
        if total > self.max_total_bytes:
            raise ClaimInvalid(
                f"identity headers total {total} bytes; the limit is {self.max_total_bytes}"
            )
        return result


def headers_to_remove(
    plan: IdentityPlan | None,
    sent: Iterable[str],
    setting: Iterable[tuple[str, str]],
    *,
    namespace: str,
    names: Iterable[str],
) -> tuple[str, ...]:
    """What an allow removes: every client-sent header in the identity
    ``namespace`` and every identity header any route may set (``names``; in
    case Envoy's allowed_headers hid the client's copy from us), and
    Authorization where ``plan`` strips it; never a header it sets, since a
    set header overwrites. ``plan`` is None when no route took the request."""
    removed = set(filter(_prefix(namespace).match, sent))  # the loop runs in C
    removed.update(names)
    if plan is not None and plan.strip_authorization:
        removed.add("authorization")
    return tuple(sorted(removed - {name for name, _ in setting}))


@functools.lru_cache(maxsize=16)
def _prefix(namespace: str) -> re.Pattern[str]:
    return re.compile(re.escape(namespace))


def _payload_segment(token_text: str) -> str:
    # The verifier has checked the signature over exactly this segment and that
    # it is canonical base64url, so it is safe to pass on as it is.
    return token_text.split(".")[1]


def _problem(text: str) -> str:
    """What keeps ``text`` from reaching the upstream as it is; "" if nothing."""
    if _CARRIED.fullmatch(text):
        if text != text.strip(" "):
            return "has leading or trailing whitespace"
        return ""
    if _CONTROL.search(text):
        return "has a control character"
    return "has a character outside visible ASCII"


def _scope_value(claims: Mapping[str, Any], percent: bool) -> str:
    # The scopes are re-joined with single spaces, so extra spaces between or
    # around them change nothing. Refusing: any other separator (a tab, a line
    # break, a Unicode space) would be read as one by the rules but not by every
    # upstream, and is refused like any control or non-ASCII character.
    # Percent-encoding: the rules' tokens are what the upstream splits at spaces.
    tokens = scopes(claims)
    if percent:
        return " ".join(_encode_text(token, "scope") for token in tokens)
    scope = claims.get("scope")
    if isinstance(scope, str) and not _CARRIED.fullmatch(scope):
        raise ClaimInvalid(f"claim 'scope' {_problem(scope)}")
    return " ".join(tokens)


def _encode_text(text: str, claim: str) -> str:
    try:
        return percent_encode(text)
    except UnicodeEncodeError:
        raise ClaimInvalid(f"claim {claim!r} is not valid Unicode") from None


def _scalar(value: str | int | float, claim: str, percent: bool) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        raise ClaimInvalid(f"claim {claim!r} is a number too large to carry")
    text = str(value)
    return _encode_text(text, claim) if percent and isinstance(value, str) else text


def _render(value: Any, claim: str, percent: bool) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return _scalar(value, claim, percent)
    if isinstance(value, list) and all(
        isinstance(item, str | int | float) and not isinstance(item, bool) for item in value
    ):
        items = [_scalar(item, claim, percent) for item in value]
        # The upstream splits the header at "," (and may trim each item): an
        # empty item would change the list; unencoded, so would a "," inside
        # one or spaces around one.
        for item in items:
            if not item:
                raise ClaimInvalid(f"claim {claim!r} has an empty list item")
            if percent:
                continue
            if "," in item:
                raise ClaimInvalid(f"claim {claim!r} has a list item containing ','")
            problem = _problem(item)
            if problem:
                raise ClaimInvalid(f"claim {claim!r} has a list item that {problem}")
        return ",".join(items)
    raise ClaimInvalid(f"claim {claim!r} is not a scalar or a list of scalars")
