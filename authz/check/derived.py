"""What a route derives from a verified token alone, kept for the token's next Check.

A route's requirements and its identity headers depend on nothing but the
route and the token's claims (and, for the payload header, the token's text,
which the token stands for). The verifier answers a repeated token with the
same ``VerifiedToken`` object from its cache, so the outcome can be kept per
(route, token) object and reused while both are the same objects:

- Entries are keyed by the objects' identities and hold the objects
  themselves, so a key cannot be taken over by another object while its entry
  lives, and a lookup checks both again. A reload compiles new routes and
  builds a new verifier: nothing derived before it matches after it.
- Only what passed is kept: a failed requirement or a claim that cannot be
  carried raises its own error on every Check (an exception object must not be
  shared between Checks).
- Bounded: at ``limit`` entries the memo starts over. Distinct tokens (the
  cold path) gain nothing from it and only ever fill it.
"""

from __future__ import annotations

from typing import Any

from authz.check.verify import VerifiedToken

__all__ = ["MISSING", "Derived"]

# What ``get`` returns when nothing was kept (None is a requirement's outcome).
MISSING: Any = object()


class Derived:
    __slots__ = ("_entries", "_limit")

    def __init__(self, limit: int = 1024) -> None:
        self._entries: dict[tuple[int, int, str], tuple[object, VerifiedToken, Any]] = {}
        self._limit = limit

    def get(self, route: object, token: VerifiedToken, kind: str) -> Any:
        """What ``route`` derived from ``token`` as ``kind``; MISSING if nothing."""
        entry = self._entries.get((id(route), id(token), kind))
        if entry is None or entry[0] is not route or entry[1] is not token:
            return MISSING
        return entry[2]

    def put(self, route: object, token: VerifiedToken, kind: str, value: Any) -> None:
        entries = self._entries
        if len(entries) >= self._limit:
            entries.clear()
        entries[(id(route), id(token), kind)] = (route, token, value)

    def __len__(self) -> int:
        return len(self._entries)
