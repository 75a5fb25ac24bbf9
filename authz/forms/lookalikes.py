"""Paths that an upstream may read as another path, though they are in normal form.

paths.py accepts a path only in Envoy's normal form and without what servers
split or decode differently. Some readers go further, and a route matched on
the path as written would then be skipped for a path the upstream serves as
the protected one:

- Unicode normalization: an upstream (or a framework before it) that applies
  NFKC reads ``/docs/%EF%BC%8E%EF%BC%8E/orders/admin`` (two FULLWIDTH FULL
  STOPs) as ``/docs/../orders/admin``, and ``/orders/%EF%BD%81dmin`` (a
  fullwidth ``a``) as ``/orders/admin``. Refused: a path whose decoded text
  NFKC changes. With it, an invisible format character (zero-width space,
  soft hyphen, bidirectional controls: readers that drop them see another
  name) and a code point this Unicode version does not assign (a reader with a
  newer version may normalize it to something else).
- Trailing dots and spaces: IIS, Windows file systems and some Java stacks
  drop them from a segment, so ``/orders/admin./x`` and ``/orders/admin%20/x``
  are ``/orders/admin/x`` there. Refused: a segment ending in ``.`` or a space
  (``.`` and ``..`` segments never reach this: normalization resolved them).
- Case: a case-insensitive router serves ``/orders/ADMIN/x`` as
  ``/orders/admin/x``. Not refused (most upstreams are case-sensitive); a route
  in front of such an upstream says ``ignore_case: true`` and is matched with
  ``fold_case``.

Raw non-ASCII never gets here: Envoy refuses it, and paths.py refuses a path
that is not in normal form. The reasons name a code point or a segment's
position, never the path.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from authz.errors import InvalidPath

__all__ = ["PathReading", "fold_case", "lookalike", "trailing_dot_or_space"]

# A segment that ends in "." or a space, in a path's match form (escapes decoded).
_TRAILING = re.compile(r"[. ](?=/|$)")
# What NFKC may turn a character into is short (18 code points at most).
_SHOWN = 24
# Java's equalsIgnoreCase and .NET's invariant upper-casing take the dotted
# capital and the dotless small i for "i"; Unicode case folding does not.
_SIMPLE_FOLDS = str.maketrans({"\u0130": "i", "\u0131": "i"})


def lookalike(decoded: str) -> str | None:
    """Why ``decoded`` (a path's match form) may read as another path, or None."""
    if decoded.isascii():
        return None  # ASCII is its own NFKC, and holds no format or unassigned character
    for char in decoded:
        category = unicodedata.category(char)
        if category == "Cf":
            return f"{_name(char)}, an invisible format character some readers drop"
        if category == "Cn":
            version = unicodedata.unidata_version
            return f"{_name(char)}, a code point Unicode {version} leaves unassigned"
        if not unicodedata.is_normalized("NFKC", char):
            reads = unicodedata.normalize("NFKC", char)[:_SHOWN]
            return f"{_name(char)}, which Unicode normalization (NFKC) reads as {reads!r}"
    if not unicodedata.is_normalized("NFKC", decoded):
        return "characters that Unicode normalization (NFKC) combines into another"
    return None


def trailing_dot_or_space(decoded: str) -> str | None:
    """Which segment of ``decoded`` (a path's match form) ends in "." or a space, or None."""
    found = _TRAILING.search(decoded)
    if found is None:
        return None
    ending = "'.'" if found.group() == "." else "a space"
    return f"segment {decoded.count('/', 0, found.start())} of the path ends in {ending}"


def fold_case(text: str) -> str:
    """``text`` as case-insensitive readers compare it: Unicode case folding,
    with the Turkish i's folded to "i" as Java and .NET match them."""
    return text.translate(_SIMPLE_FOLDS).casefold()


def _name(char: str) -> str:
    return f"U+{ord(char):04X} {unicodedata.name(char, '')}".rstrip()


@dataclass(frozen=True, slots=True)
class PathReading:
    """Which of these paths are refused (the configuration's ``paths`` section:
    ``config.rules.PathsConfig.reading``)."""

    refuse_lookalikes: bool = True
    refuse_trailing_dot_or_space: bool = True

    def check(self, decoded: str) -> None:
        """InvalidPath if ``decoded`` (a path's match form) is one refused here."""
        if self.refuse_lookalikes:
            why = lookalike(decoded)
            if why is not None:
                raise InvalidPath(
                    f"a percent-escape in path decodes to {why}: an upstream may read "
                    "another path (paths.lookalikes)"
                )
        if self.refuse_trailing_dot_or_space:
            where = trailing_dot_or_space(decoded)
            if where is not None:
                raise InvalidPath(
                    f"{where}, which some servers drop: an upstream may read another path "
                    "(paths.trailing_dot_or_space)"
                )
