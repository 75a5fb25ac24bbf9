"""Tokens that verified, so that a repeated token skips parsing and the signature.

Only the verification is cached: revocation, route requirements and identity
still run on every request (what a route derives from the token alone is kept
on the token itself, see ``verify.VerifiedToken.derived``). An entry is used
only while

- the token is unexpired (``exp`` plus the issuer's leeway, by the verifier's
  clock), and
- the exact key object that verified it is still the issuer's key for that
  ``kid`` (for a token without one: still the only key for its algorithm) —
  a refresh that drops or replaces the key, or keys going stale, ends the
  entry (a configuration reload builds a new verifier and cache).

Entries are keyed by a SHA-256 digest of the whole token, never the token. The
cache is a ``BoundedMemo``: bounded, least recently used out first, one lock
for the Checks of every thread.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Generic, TypeVar

from authz.keys.sources import VerificationKey
from authz.memo import BoundedMemo

T = TypeVar("T")

__all__ = ["CachedToken", "VerifiedCache", "digest"]


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


@dataclass(frozen=True, slots=True)
class CachedToken(Generic[T]):
    token: T  # what verification returned (verify.VerifiedToken)
    valid_until: float
    key: VerificationKey


class VerifiedCache(BoundedMemo[bytes, CachedToken[T]]):
    """Digest of a token -> its verification."""

    __slots__ = ()
