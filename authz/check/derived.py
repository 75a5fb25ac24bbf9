"""What routes derive from one verified token alone, kept with the token.

A route's requirements and its identity headers depend on nothing but the
route and the token's claims (and, for the payload header, the token's text,
which the token stands for). The verifier answers a repeated token with the
``VerifiedToken`` from its cache, and that token carries a ``Derived``: so
what was derived lives exactly as long as the token's cache entry, and is
bounded by the number of routes (times the two kinds).

Keys are the route's position in the policy and the kind. A reload compiles
new routes and builds a new verifier, whose tokens start with nothing derived.
Only what passed is kept: a failed requirement or a claim that cannot be
carried raises its own error on every Check (an exception object must not be
shared between Checks). Checks on several threads may derive the same value
at once; one lock for every token's map keeps each whole (a lock per cached
token would cost its memory ten thousand times over), and either value is
the same. Only a repeated token keeps anything: the verifier marks a token
``keep()`` when its cache answers it again, so a token seen once (the cold
path, distinct tokens) costs no map at all.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["MISSING", "Derived"]

# What ``get`` returns when nothing was kept (None is a requirement's outcome).
MISSING: Any = object()


_LOCK = threading.Lock()


class Derived:
    __slots__ = ("_entries", "_keep")

    def __init__(self) -> None:
        self._entries: dict[tuple[int, str], Any] | None = None
        self._keep = False

    def keep(self) -> None:
        """The token is repeated: what routes derive from it from now on is kept."""
        self._keep = True

    def get(self, route: int, kind: str) -> Any:
        """What the route at position ``route`` derived as ``kind``; MISSING if nothing."""
        with _LOCK:
            entries = self._entries
            return MISSING if entries is None else entries.get((route, kind), MISSING)

    def put(self, route: int, kind: str, value: Any) -> None:
        if not self._keep:
            return
        with _LOCK:
            if self._entries is None:
                self._entries = {}
            self._entries[(route, kind)] = value

    def __len__(self) -> int:
        return 0 if self._entries is None else len(self._entries)
