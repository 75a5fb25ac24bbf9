"""Request paths and hosts in the one form that routes are matched against.

Envoy hands authz the path exactly as the client sent it (query string
included, nothing decoded), and different upstream frameworks read odd paths
differently. A route can only be trusted if authz reads a path the way the
upstream will, or refuses it. ``normalize_path`` therefore:

1. drops the query string (everything from the first ``?``);
2. refuses (400 ``invalid_path``) anything an upstream could read in more than
   one way: a path not starting with ``/``; a character outside RFC 3986's
   path characters (space, ``\\``, ``"``, ``<``, ``>``, ``^``, a backquote, ``{``,
   ``|``, ``}``, ``#``, control characters, raw non-ASCII); a ``;`` (Tomcat and
   Spring strip ``;params`` from segments, so ``/public/..;/admin`` reaches
   ``/admin`` there); a malformed percent-escape; an encoded ``/`` (``%2F``),
   ``\\`` (``%5C``) or control character, which some servers decode and others
   do not; a double-encoded escape (``%252e``: a server that decodes twice
   sees ``.``); percent-encoded bytes that are not UTF-8 (the overlong
   ``%c0%ae`` is ``.`` to a lax decoder); and a ``..`` that climbs above the
   root;
3. decodes percent-escapes of unreserved characters (``A-Z a-z 0-9 - . _ ~``,
   RFC 3986 §6.2.2.2) so ``%2e`` is ``.`` and ``%41`` is ``A``; every other escape
   stays encoded, in upper case (``%3f`` becomes ``%3F``);
4. removes ``.`` segments and resolves ``..`` segments (RFC 3986 §5.2.4);
5. collapses repeated slashes and drops a trailing slash, so ``//orders//7/``
   is ``/orders/7`` (the root stays ``/``).

Matching is case-sensitive. The normal form of a path is a fixed point:
``normalize_path(normalize_path(p)) == normalize_path(p)``.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from authz.errors import InvalidPath

__all__ = ["normalize_host", "normalize_path"]

MAX_PATH_BYTES = 8192
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# RFC 3986 pchar and "/" and "%", less ";" (see the module docstring).
_PATH_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,=:@/%]*")
_HEX = frozenset("0123456789abcdefABCDEF")
_DOUBLE_ENCODED = re.compile(r"%25[0-9A-Fa-f]{2}")
# Escapes refused outright: "/" and "\" change the segment structure for some
# servers; control characters have no business in a path.
_REFUSED_BYTES = frozenset({0x2F, 0x5C, 0x7F, *range(0x20)})


def normalize_path(raw: str) -> str:
    """The normal form of ``raw`` (see the module docstring), or InvalidPath."""
    path = raw.split("?", 1)[0]
    if len(path) > MAX_PATH_BYTES:
        raise InvalidPath(f"path is longer than {MAX_PATH_BYTES} bytes")
    if not path.startswith("/"):
        raise InvalidPath("path does not start with '/'")
    if not _PATH_CHARS.fullmatch(path):
        raise InvalidPath("path has a character outside RFC 3986 path characters, or ';'")
    if "%" in path:
        _check_escapes(path)
    segments: list[str] = []
    for segment in path.split("/"):
        decoded = _decode_unreserved(segment) if "%" in segment else segment
        if decoded in ("", "."):
            continue
        if decoded == "..":
            if not segments:
                raise InvalidPath("'..' climbs above the root")
            segments.pop()
            continue
        segments.append(decoded)
    return "/" + "/".join(segments)


def normalize_host(raw: str) -> str:
    """``Host``/``:authority`` without port and trailing dot, in lower case."""
    host = raw.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        host = name
    return host.rstrip(".")


def _check_escapes(path: str) -> None:
    if _DOUBLE_ENCODED.search(path):
        raise InvalidPath("double-encoded percent-escape in path")
    try:
        unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPath("percent-encoded bytes in path are not UTF-8") from None


def _decode_unreserved(segment: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(segment):
        char = segment[index]
        if char != "%":
            out.append(char)
            index += 1
            continue
        digits = segment[index + 1 : index + 3]
        if len(digits) != 2 or not _HEX.issuperset(digits):
            raise InvalidPath("malformed percent-escape in path")
        value = int(digits, 16)
        if value in _REFUSED_BYTES:
            raise InvalidPath("encoded '/', '\\' or control character in path")
        decoded = chr(value)
        out.append(decoded if decoded in _UNRESERVED else "%" + digits.upper())
        index += 3
    return "".join(out)
