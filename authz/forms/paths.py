"""Request paths as the upstream will read them, or refused (hosts: hosts.py).

Paths
-----
authz decides on the path Envoy forwards, and Envoy (with ``normalize_path``
and ``merge_slashes`` on, as every shipped config has them) forwards the same
path it sends to authz. So authz does not make a normal form of its own: it
checks that the path it is given is already in Envoy's normal form and
refuses it otherwise (400 ``invalid_path``). ``envoy_normal_form`` is that
form, a model of Envoy 1.40's two steps:

1. ``normalize_path``: the URL library's path canonicalization, on the part
   before the first ``?`` (the query is never touched). ``\\`` becomes ``/``;
   ``.`` and ``..`` segments (also written ``%2e``) are resolved, and ``..``
   never climbs above the root; escapes of ``A-Z a-z 0-9 - . _ ~`` are
   decoded and every other escape is kept exactly as written (hex case
   included); control characters, space, ``"`` ``#`` ``<`` ``>`` ``^``
   backquote ``{`` ``|`` ``}`` and non-ASCII bytes are escaped in upper-case
   hex; a ``%`` that starts no valid escape is kept, unless decoding after it
   would make one (``%%30`` becomes ``%250``); a NUL, raw or encoded, makes
   Envoy refuse the request.
2. ``merge_slashes``: runs of ``/`` become one, keeping a leading and a
   trailing slash.

One part is modelled for its common cases only: ``;params`` after a plain
``.`` or ``..`` segment (``/a/..;/b`` is ``/b``). That cannot matter: a path
that still has a ``;`` is refused, and a path without one never reaches that
part of the model. On paths without ``;`` the model agrees with Envoy byte for
byte (tests/e2e/test_edge_paths.py checks it on generated paths).

A path Envoy has normalized is a fixed point of the two, so a path that is not one reached
authz without normalization, or was built to differ on a second pass
(``/a/%2e%2e;/b`` normalizes to ``/a/..;/b``): either way it is refused.

On top of that, ``normalize_path`` refuses what upstream frameworks read in
more than one way, even in normal form: a ``;`` (Tomcat and Spring drop
``;params`` from segments); an encoded ``/`` or ``\\`` (``%2F``, ``%5C``) or
control character, which some servers decode and others do not; a ``%``
that starts no valid escape; a double-encoded escape (``%252e`` is ``.`` to
a server that decodes twice); and escaped bytes that are not UTF-8 (the
overlong ``%c0%ae`` is ``.`` to a lax decoder).

Routes are matched on ``match_form`` of the accepted path: every escape
decoded (safe, since the ones that could change the segment structure were
refused) and one trailing slash dropped, so ``/orders/7/`` and
``/caf%c3%a9`` are the same resources as ``/orders/7`` and ``/caf%C3%A9``
to a rule, as they are to most upstream frameworks. What some upstreams
still read as another path (look-alikes under Unicode normalization, trailing
dots and spaces, case) is lookalikes.py's.
"""

from __future__ import annotations

import re

from authz.errors import InvalidPath

__all__ = [
    "MAX_PATH_BYTES",
    "config_path",
    "envoy_normal_form",
    "match_form",
    "normalize_path",
]

MAX_PATH_BYTES = 8192

# How the URL library treats each byte of a path (Envoy's normalize_path).
_PASS, _ESCAPE, _UNESCAPE, _INVALID, _DOT, _BACKSLASH, _PERCENT = range(7)
_PASS_CHARS = b"!$&'()*+,/:;=@[]"
_UNESCAPE_CHARS = (
    b"-_~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # RFC 3986 unreserved
)


def _byte_class(byte: int) -> int:
    if byte == 0:
        return _INVALID
    if byte == ord("."):
        return _DOT
    if byte == ord("\\"):
        return _BACKSLASH
    if byte == ord("%"):
        return _PERCENT
    if byte in _UNESCAPE_CHARS:
        return _UNESCAPE
    if byte in _PASS_CHARS:
        return _PASS
    return _ESCAPE  # controls, space, " # < > ? ^ ` { | } DEL and every byte >= 0x80


_CLASS = tuple(_byte_class(byte) for byte in range(256))
_HEX_DIGITS = b"0123456789abcdefABCDEF"

# Escapes an upstream may decode into something that changes the path's
# structure or meaning: "/", "\", controls and DEL.
_AMBIGUOUS_ESCAPE = re.compile(r"%(?:2[fF]|5[cC]|[01][0-9a-fA-F]|7[fF])")
_DOUBLE_ENCODED = re.compile(r"%25[0-9a-fA-F]{2}")
_MALFORMED_ESCAPE = re.compile(r"%(?![0-9a-fA-F]{2})")


def envoy_normal_form(raw: str) -> str | None:
    """``raw`` as Envoy forwards it with normalize_path and merge_slashes on.

    None where Envoy refuses the request (400) instead. The query string
    (from the first ``?``) is returned unchanged.
    """
    path, mark, query = raw.partition("?")
    canonical = _canonical_path(path.encode("utf-8", "surrogateescape"))
    if canonical is None:
        return None
    return _merge_slashes(canonical) + mark + query


def _is_dot(spec: bytes, index: int) -> int:
    """How many bytes a dot at ``index`` takes: 1 for ".", 3 for "%2e", else 0."""
    if spec[index] == 0x2E:
        return 1
    if (
        spec[index] == 0x25
        and index + 2 < len(spec)
        and spec[index + 1 : index + 3]
        in (
            b"2e",
            b"2E",
        )
    ):
        return 3
    return 0


def _is_slash(spec: bytes, index: int) -> bool:
    return index < len(spec) and spec[index] in b"/\\"


def _dot_segment(spec: bytes, after: int, first_dot_plain: bool) -> tuple[int, int]:
    """Whether the dot just read starts a dot segment: (0 no, 1 ".", 2 ".."), bytes taken.

    The bytes taken are those after the first dot, including the slash that
    ends the segment.
    """
    end = len(spec)
    if after == end:
        return 1, 0
    if _is_slash(spec, after):
        return 1, 1
    if first_dot_plain and spec[after] == 0x3B:  # ".;params" is "." to Envoy
        return 1, _through_params(spec, after) - after
    second = _is_dot(spec, after)
    if second:
        rest = after + second
        if rest == end:
            return 2, second
        if _is_slash(spec, rest):
            return 2, second + 1
        if first_dot_plain and second == 1 and spec[rest] == 0x3B:  # "..;params" is ".."
            return 2, _through_params(spec, rest) - after
    return 0, 0


def _through_params(spec: bytes, start: int) -> int:
    """The index just past ``;params`` and the slash ending them (or the end)."""
    index = start
    while index < len(spec) and spec[index] not in b"/\\":
        index += 1
    return min(index + 1, len(spec))


def _back_up(out: bytearray) -> None:
    """Drop the last segment of ``out`` (which ends in "/"), never the root."""
    index = len(out) - 1
    if index == 0:
        return
    index -= 1
    while out[index] != 0x2F and index > 0:
        index -= 1
    del out[index + 1 :]


def _unhex(pair: bytes) -> int | None:
    if len(pair) == 2 and pair[0] in _HEX_DIGITS and pair[1] in _HEX_DIGITS:
        return int(pair, 16)
    return None


def _nested_escape(spec: bytes, next_index: int, percent: int, out: bytearray) -> None:
    """A "%" that started no escape may start one once an escape after it is
    decoded ("%%30" would become "%0", then "%00" on a second pass): such a
    "%" is written "%25" instead, so normalizing twice changes nothing.
    """
    length = len(out)
    last = out[-1]
    append_next = percent == length - 2
    if append_next:
        if next_index == len(spec) or spec[next_index] >= 0x80:
            return
        out.append(spec[next_index])
    if _unhex(bytes(out[percent + 1 : percent + 3])) is not None:
        if not append_next:
            out.append(out[percent + 1])
        out[percent + 1] = ord("2")
        out[percent + 2] = ord("5")
        out.append(last)
    elif append_next:
        del out[length:]


def _canonical_path(spec: bytes) -> str | None:
    canon = _Canonicalizer(spec)
    index = 0
    while index < len(spec):
        index = canon.step(index)
    return canon.out.decode("ascii") if canon.ok else None


class _Canonicalizer:
    """The state of one path's canonicalization: output so far, and whether Envoy accepts it."""

    def __init__(self, spec: bytes) -> None:
        self.spec = spec
        self.out = bytearray() if spec[:1] in (b"/", b"\\") else bytearray(b"/")
        self.ok = True
        self.last_bad_percent = -10  # where in ``out`` a "%" that started no escape is

    def step(self, index: int) -> int:
        """Canonicalize what starts at ``index``; the index after it."""
        byte = self.spec[index]
        kind = _CLASS[byte]
        dot = _is_dot(self.spec, index) if kind in (_DOT, _PERCENT) else 0
        if dot:
            return self._dot(index, dot)
        if kind == _PERCENT:
            return self._percent(index)
        if kind == _BACKSLASH:
            self.out.append(0x2F)
        elif kind in (_ESCAPE, _INVALID):
            self.out += b"%%%02X" % byte
            self.ok = self.ok and kind != _INVALID
        else:
            self.out.append(byte)
        return index + 1

    def _dot(self, index: int, dot: int) -> int:
        out = self.out
        if not out or out[-1] != 0x2F:  # a dot inside a segment is just a dot
            out.append(0x2E)
            return index + dot
        segment, taken = _dot_segment(self.spec, index + dot, dot == 1)
        if segment == 2:
            _back_up(out)
        elif segment == 0:
            out.append(0x2E)
        return index + dot + taken

    def _percent(self, index: int) -> int:
        value = _unhex(self.spec[index + 1 : index + 3])
        if value is None:
            self.last_bad_percent = len(self.out)
            self.out.append(0x25)
            return index + 1
        if _CLASS[value] == _UNESCAPE:
            self.out.append(value)
            if self.last_bad_percent >= len(self.out) - 3:
                _nested_escape(self.spec, index + 3, self.last_bad_percent, self.out)
        else:  # kept exactly as written, hex case included
            self.out += self.spec[index : index + 3]
            self.ok = self.ok and _CLASS[value] != _INVALID
        return index + 3


def _merge_slashes(path: str) -> str:
    if "//" not in path:
        return path
    inner = "/".join(part for part in path.split("/") if part)
    return ("/" if path.startswith("/") else "") + inner + ("/" if path.endswith("/") else "")


# The common case, decided without the model: segments of plain path characters,
# none empty, "." or "..", and no "%", "\\" or ";" anywhere. Such a path is its
# own normal form and holds nothing ambiguous (a test holds this to the model).
_PLAIN = re.compile(r"(?:/(?!\.\.?(?:/|$))[A-Za-z0-9\-._~!$&'()*+,=:@]+)+/?|/")


def normalize_path(raw: str) -> str:
    """The path of ``raw`` (no query) if it is in Envoy's normal form and unambiguous.

    InvalidPath otherwise; see the module docstring.
    """
    path = raw.partition("?")[0]
    if _PLAIN.fullmatch(path) and len(path) <= MAX_PATH_BYTES:
        return path
    if len(path) > MAX_PATH_BYTES:
        raise InvalidPath(f"path is longer than {MAX_PATH_BYTES} bytes")
    if not path.startswith("/"):
        raise InvalidPath("path does not start with '/'")
    normal = envoy_normal_form(path)
    if normal is None:
        raise InvalidPath("path has a NUL character, raw or encoded")
    if normal != path:
        raise InvalidPath(
            "path is not in the normal form Envoy's normalize_path and merge_slashes make "
            "(are both on in Envoy's HTTP connection manager?)"
        )
    _refuse_ambiguous(path)
    return path


def _refuse_ambiguous(path: str) -> None:
    if ";" in path:
        raise InvalidPath("';' in path: some servers drop ';params' from segments")
    if "%" not in path:
        return
    if _MALFORMED_ESCAPE.search(path):
        raise InvalidPath("a '%' in path starts no percent-escape")
    if _AMBIGUOUS_ESCAPE.search(path):
        raise InvalidPath("encoded '/', '\\' or control character in path")
    if _DOUBLE_ENCODED.search(path):
        raise InvalidPath("double-encoded percent-escape in path")
    try:
        _decode(path)
    except UnicodeDecodeError:
        raise InvalidPath("percent-encoded bytes in path are not UTF-8") from None


def _decode(path: str) -> str:
    """Every escape of an accepted path decoded (UnicodeDecodeError if not UTF-8)."""
    if "%" not in path:
        return path
    parts = path.split("%")
    out = bytearray(parts[0].encode("ascii"))
    for part in parts[1:]:
        out.append(int(part[:2], 16))
        out += part[2:].encode("ascii")
    return out.decode("utf-8")


def match_form(path: str) -> str:
    """What routes are matched on: escapes decoded, one trailing slash dropped.

    ``path`` is one ``normalize_path`` accepted (or a configured route path).
    """
    decoded = _decode(path)
    if decoded.endswith("/") and len(decoded) > 1:
        decoded = decoded[:-1]
    return decoded or "/"


def config_path(value: str) -> str:
    """The match form of a route's configured path, or ValueError saying what is wrong.

    A configured path is written without what normalization removes (query,
    ``.``/``..`` and empty segments, trailing slash); escapes are optional
    (``/café`` and ``/caf%C3%A9`` are the same path).
    """
    if not value.startswith("/"):
        raise ValueError("not a valid path: path does not start with '/'")
    path = value.split("?", 1)[0].split("#", 1)[0]
    if path != value or (
        value != "/" and any(segment in ("", ".", "..") for segment in value[1:].split("/"))
    ):
        normal = (envoy_normal_form(path) or "/").rstrip("/") or "/"
        raise ValueError(
            f"write the path in its normal form {normal!r}: no '//', '.' or '..' segment "
            "and no trailing slash, query or fragment (requests are matched after "
            "normalization)"
        )
    encoded = "".join(
        char if char.isascii() else "".join(f"%{b:02X}" for b in char.encode("utf-8"))
        for char in value
    )
    if any(_CLASS[ord(char)] in (_ESCAPE, _INVALID, _BACKSLASH) for char in encoded):
        raise ValueError(
            "not a valid path: a character outside RFC 3986's path characters "
            "(write it percent-encoded)"
        )
    try:
        _refuse_ambiguous(encoded)
    except InvalidPath as exc:
        raise ValueError(f"not a valid path: {exc.detail}") from None
    decoded = _decode(encoded)
    if any(segment in (".", "..") for segment in decoded.split("/")):
        raise ValueError("not a valid path: an encoded '.' or '..' segment")
    return match_form(encoded)
