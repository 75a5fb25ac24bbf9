"""Tokens that verified, so that a repeated token skips parsing and the signature.

Only the verification is cached: revocation, route requirements and identity
still run on every request. An entry is used only while

- the token is unexpired (``exp`` plus the issuer's leeway, by the verifier's
  clock), and
- the exact key object that verified it is still the issuer's key for that
  ``kid`` (for a token without one: still the only key for its algorithm) —
  a refresh that drops or replaces the key, or keys going stale, ends the
  entry (a configuration reload builds a new verifier and cache).

Entries are keyed by a SHA-256 digest of the whole token, never the token. The
cache is bounded: when full, the oldest entry goes first.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Generic, TypeVar

from authz.keys.sources import VerificationKey

T = TypeVar("T")

__all__ = ["CachedToken", "VerifiedCache", "digest"]


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


@dataclass(frozen=True, slots=True)
class CachedToken(Generic[T]):
    token: T  # what verification returned (verify.VerifiedToken)
    valid_until: float
    key: VerificationKey


class VerifiedCache(Generic[T]):
    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._entries: dict[bytes, CachedToken[T]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> CachedToken[T] | None:
        return self._entries.get(key)

    def put(self, key: bytes, entry: CachedToken[T]) -> None:
        entries = self._entries
        if key not in entries and len(entries) >= self._max:
            del entries[next(iter(entries))]  # dicts keep insertion order: the oldest
        entries[key] = entry

    def discard(self, key: bytes) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
