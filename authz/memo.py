"""One bounded memo type for what Checks on many threads share.

Checks run on gRPC's worker threads at once, so every cache they share needs
one owner that holds its lock and its bound. ``BoundedMemo`` is that owner:
a mapping with at most ``limit`` entries, least recently used out first, every
operation under one lock. Keys are values (digests, tuples of strings), never
``id()`` of an object: an id can be reused once its object is gone.

Values must not be ``None`` (``get`` answers ``None`` for "not kept").
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

__all__ = ["BoundedMemo"]

K = TypeVar("K")
V = TypeVar("V")


class BoundedMemo(Generic[K, V]):
    __slots__ = ("_entries", "_limit", "_lock")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a memo holds at least one entry, not {limit}")
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            entries = self._entries
            entries[key] = value
            entries.move_to_end(key)
            if len(entries) > self._limit:
                entries.popitem(last=False)

    def discard(self, key: K) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def limit(self) -> int:
        return self._limit
