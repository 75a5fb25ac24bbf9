"""A deny-list of token ids (``jti``) and subjects (``sub``), read from a file.

The file holds one entry per line, ``jti:VALUE`` or ``sub:VALUE`` (the value is
everything after the first colon, trailing whitespace removed); blank lines
and lines starting with ``#`` are ignored. A listed ``sub`` is revoked for
every issuer. A verified token whose ``jti`` or ``sub`` is listed is denied
with 401 ``invalid_token``, reason ``token_revoked``.

The file is read at start-up (unreadable or malformed: a configuration error)
and re-read when it changes, off the request path (``refresh`` is called from
the server's watch task), once the new file is whole (``watch.WholeFile``: a
swapped link at once, a file written at its path once it stood still for a
poll interval): a list read half-way through its writing would un-revoke
what its missing half lists. A change that cannot be read or parsed keeps the
last good list, is logged, and is counted in ``failures`` / ``last_error``: a
typo must not empty the list, nor deny everyone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from authz.check.verify import VerifiedToken
from authz.errors import ConfigError, TokenRevoked
from authz.watch import WholeFile

__all__ = ["DenyList", "RevocationList", "parse_deny_list"]

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class DenyList:
    jti: frozenset[str] = frozenset()
    sub: frozenset[str] = frozenset()

    def __len__(self) -> int:
        return len(self.jti) + len(self.sub)


def parse_deny_list(text: str, source: str) -> DenyList:
    """The entries of a deny-list file, or ConfigError naming the bad line."""
    jti: set[str] = set()
    sub: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.rstrip()
        if not entry or entry.lstrip().startswith("#"):
            continue
        kind, sep, value = entry.partition(":")
        if not sep or kind not in ("jti", "sub") or not value:
            raise ConfigError(f"{source}:{number}: expected jti:VALUE or sub:VALUE")
        (jti if kind == "jti" else sub).add(value)
    return DenyList(frozenset(jti), frozenset(sub))


class RevocationList:
    """The current deny-list of one file; the list is replaced whole on change."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.failures = 0
        self.last_error: str | None = None
        self._file = WholeFile(path, MAX_FILE_BYTES, clock)
        self._entries = parse_deny_list(self._file.text, str(path))

    @property
    def entries(self) -> DenyList:
        return self._entries

    def check(self, token: VerifiedToken) -> None:
        """TokenRevoked if the token's ``jti`` or ``sub`` is listed."""
        entries = self._entries  # one snapshot for both look-ups
        jti = token.claims.get("jti")
        if isinstance(jti, str) and jti in entries.jti:
            raise TokenRevoked("jti is on the revocation list")
        if token.subject is not None and token.subject in entries.sub:
            raise TokenRevoked("sub is on the revocation list")

    def refresh(self, settle_seconds: float) -> bool:
        """Re-read the file if it changed; True when a new list was taken (written
        at its path, once it stood still for ``settle_seconds``).

        Blocking file I/O: call it from a worker thread, not the event loop.
        """
        try:
            text = self._file.changed(settle_seconds)
            if text is None:
                return False
            entries = parse_deny_list(text, str(self.path))
        except ConfigError as exc:
            self.failures += 1
            self.last_error = str(exc)
            log.error("revocation list not reloaded, keeping %d entries: %s", len(self), exc)
            return False
        self._entries = entries
        self.last_error = None
        log.info("revocation list reloaded: %d entries from %s", len(entries), self.path)
        return True

    def __len__(self) -> int:
        return len(self._entries)
