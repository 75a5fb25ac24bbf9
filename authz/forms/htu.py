"""One normal form for the URI a DPoP proof names (``htu``) and the request's own.

RFC 9449 §4.3 compares ``htu`` with the request's URI "ignoring any query and
fragment parts" after RFC 3986 §6.2.2 (syntax-based) and §6.2.3 (scheme-based)
normalization. ``normalize_uri`` is that comparison's normal form:

- only ``http`` and ``https`` URIs with a host; scheme and host lower-case;
- the port as a number, left out when it is the scheme's default (80, 443) or
  empty (``host:``);
- percent-escapes of unreserved characters decoded, every other escape in
  upper-case hex; a ``%`` that starts no escape makes the URI unusable;
- ``.`` and ``..`` segments removed (§5.2.4), after the escapes (``%2E`` is ``.``);
- an empty path is ``/``; query and fragment dropped.

Anything a normal form could disagree about is refused rather than guessed at:
userinfo, a ``%`` in the host, characters outside RFC 3986's set (Envoy escapes
those in the request path before authz sees it). A refused URI never equals
another, so the proof is refused too.
"""

from __future__ import annotations

import re

from authz.errors import DpopUriMismatch

__all__ = [
    "MAX_URI_LENGTH",
    "normalize_origin",
    "normalize_uri",
    "remove_dot_segments",
    "request_uri",
]

# Longer than any request line Envoy forwards with its default header limits.
MAX_URI_LENGTH = 8192
_DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 3986 §2: unreserved, reserved and "%" (escapes are checked separately).
_URI_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_URI = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)([^?#]*)(?:\?[^#]*)?(?:#.*)?")
_REG_NAME = re.compile(r"[a-z0-9\-._~!$&'()*+,;=]+")
_IP_LITERAL = re.compile(r"\[[0-9a-f:.]+\]|\[v[0-9a-f]+\.[a-z0-9\-._~!$&'()*+,;=:]+\]")
_ESCAPE = re.compile(r"%(..)?", re.DOTALL)
_HEX = frozenset("0123456789abcdefABCDEF")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def normalize_uri(uri: str) -> str:
    """``uri`` without query and fragment, in normal form; ValueError if it has none."""
    scheme, authority, path = _split(uri)
    return f"{scheme}://{authority}{remove_dot_segments(_normal_escapes(path)) or '/'}"


def normalize_origin(origin: str) -> str:
    """``scheme://host[:port]`` in normal form, for a configured public origin."""
    scheme, authority, path = _split(origin)
    if path not in ("", "/") or "?" in origin or "#" in origin:
        raise ValueError("an origin is scheme://host[:port], without path, query or fragment")
    return f"{scheme}://{authority}"


def _split(uri: str) -> tuple[str, str, str]:
    """Scheme and authority in normal form, and the raw path."""
    if len(uri) > MAX_URI_LENGTH:
        raise ValueError(f"URI is longer than {MAX_URI_LENGTH} characters")
    if not _URI_CHARACTERS.fullmatch(uri):
        raise ValueError("URI holds characters outside RFC 3986's set")
    match = _URI.fullmatch(uri)
    if match is None:
        raise ValueError("not an absolute URI with an authority")
    scheme = match[1].lower()
    default_port = _DEFAULT_PORTS.get(scheme)
    if default_port is None:
        raise ValueError("scheme is not http or https")
    return scheme, _authority(match[2], default_port), match[3]


def _authority(authority: str, default_port: int) -> str:
    if "@" in authority:
        # A request URI never has userinfo; in htu it could only disguise the host.
        raise ValueError("URI has userinfo")
    authority = authority.lower()
    if authority.startswith("["):
        end = authority.find("]") + 1
        host, port = authority[:end], authority[end:]
        if not _IP_LITERAL.fullmatch(host):
            raise ValueError("URI has a malformed IP literal")
    else:
        host, colon, port = authority.rpartition(":")
        if not colon:
            host, port = authority, ""
        if not _REG_NAME.fullmatch(host):
            raise ValueError("URI has an empty or escaped host")
        port = colon + port
    if port in ("", ":"):
        return host
    digits = port[1:]
    if not port.startswith(":") or not digits.isdigit() or not digits.isascii() or len(digits) > 5:
        raise ValueError("URI has a malformed port")
    number = int(digits)
    if number > 65535:
        raise ValueError("URI port is out of range")
    return host if number == default_port else f"{host}:{number}"


def _normal_escapes(path: str) -> str:
    def one(match: re.Match[str]) -> str:
        pair = match[1]
        if pair is None or not set(pair) <= _HEX:
            raise ValueError("URI has a % that starts no escape")
        character = chr(int(pair, 16))
        return character if character in _UNRESERVED else "%" + pair.upper()

    return _ESCAPE.sub(one, path) if "%" in path else path


def remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 for an absolute path (or an empty one), segment by segment."""
    if not path:
        return path
    segments = path.split("/")[1:]
    kept: list[str] = []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment == "..":
            if kept:
                kept.pop()
        elif segment != ".":
            kept.append(segment)
            continue
        if index == last:
            # "/a/b/.." is "/a/": a final dot segment leaves its directory's slash.
            kept.append("")
    return "/" + "/".join(kept)


def request_uri(scheme: str, authority: str, path: str, public_origin: str | None = None) -> str:
    """The request's URI for comparing with ``htu``: ``public_origin`` (when TLS
    ends before Envoy or the Host is rewritten) or scheme and authority as
    Envoy forwards them, then the path (its query is dropped when compared)."""
    if not path.startswith("/"):
        # "*" (OPTIONS *) and authority-form (CONNECT) name no resource.
        raise DpopUriMismatch("request path is not absolute")
    origin = public_origin if public_origin is not None else f"{scheme}://{authority}"
    return origin + path
