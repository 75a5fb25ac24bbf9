"""Noticing that a file changed, by polling, and taking it only when it is whole.

A Kubernetes ConfigMap or Secret volume publishes a file as a chain of
symbolic links (``config.yaml -> ..data/config.yaml``, ``..data ->
..2025_01_01_00_00_00.123``) and updates it by replacing the ``..data`` link
atomically. Watching the path with inotify misses that (the watched inode
never changes); comparing the *resolved* path and the stat of its target does
not. The signature also covers an in-place rewrite (mtime, size) and an
atomic rename over the file (inode).

``WatchedFile`` is that comparison alone, for the issuers' key files.

A file that changed is not necessarily whole, and a truncated YAML file (or
deny-list) can still be valid: cut before ``routes:``, a configuration lets
any valid token through. ``WholeFile`` (the configuration and the revocation
list) therefore takes a change only when a poll can know it is whole, which
it can in two ways:

- **a swapped link**: the path is itself a symbolic link and now leads to
  another file than at the last poll (kubelet replaced ``..data``). Whoever
  swaps a link wrote the file it leads to in full before the swap. Taken at
  the first poll that sees it. (A path that is a regular file in a swapped
  directory link falls under the next rule.)
- **it stood still**: two consecutive polls found the same file (resolved
  path, device, inode), the same size and modification time and the same
  bytes, and that modification time is at least ``settle_seconds`` (the
  poll interval) before the second poll. Everything else is written at the
  path itself, and a new inode proves nothing: ``install``, ``cp
  --remove-destination`` and archive tools unlink the file, then write a new
  one in parts; an atomic rename is taken by this rule too, a poll later.

A writer that stops mid-file for longer than that cannot be told from one that
has finished; publish by a rename or a link swap. What cannot be read (a
missing file, too large, not UTF-8) waits for the same rule before it is
reported, once: a file being replaced is briefly missing.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from authz.errors import ConfigError

__all__ = [
    "FileSignature",
    "WatchedFile",
    "WatchedRead",
    "WholeFile",
    "file_signature",
    "read_file",
]


class FileSignature(NamedTuple):
    real_path: str
    device: int
    inode: int
    mtime_ns: int
    size: int


def file_signature(path: Path) -> FileSignature | None:
    """The identity and state of the file ``path`` resolves to; None if it is missing."""
    real = os.path.realpath(path)
    try:
        stat = os.stat(real)
    except OSError:
        return None
    return _signature(real, stat)


def _signature(real: str, stat: os.stat_result) -> FileSignature:
    return FileSignature(real, stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)


class WatchedFile:
    """A file polled for changes by its signature (``file_signature``).

    ``changed`` is True once per change: the new signature is recorded before
    the caller reads the file, so a change during that read is seen at the
    next poll, and a file that stays broken is not read again until it
    changes again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature = file_signature(path)

    def changed(self) -> bool:
        """True if the file changed since the last call (or since it was created).

        Blocking file I/O, though only a stat.
        """
        signature = file_signature(self.path)
        if signature == self._signature:
            return False
        self._signature = signature
        return True


class WatchedRead(NamedTuple):
    text: str
    data: bytes
    signature: FileSignature  # of the file the bytes came from, taken as it was opened


def read_file(path: Path, limit: int) -> WatchedRead:
    """A watched file's UTF-8 text, its bytes (at most ``limit``) and the signature
    of the file they were read from; ConfigError naming the file otherwise (a
    reload must report, not crash)."""
    real = os.path.realpath(path)
    try:
        with open(real, "rb") as handle:
            stat = os.fstat(handle.fileno())
            data = handle.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise ConfigError(f"{path}: larger than {limit} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8: {exc}") from None
    return WatchedRead(text, data, _signature(real, stat))


# File systems keep modification times to a tick of up to 2 s (FAT; 1 s on
# some), so two writes of the same size within one tick leave the same stat.
_MTIME_TICK_SECONDS = 2.0


class _Seen(NamedTuple):
    """What one poll found at the path."""

    signature: FileSignature | None  # None: nothing there
    outcome: str  # the digest of the bytes, or why they could not be read
    text: str | None  # None: unreadable
    linked: bool  # the path itself is a symbolic link
    read_at: float  # the clock when it was read

    def stat_tells_changes(self) -> bool:
        """Whether an unchanged stat means unchanged bytes: not for a file read
        within a tick of its last write, which a same-size write could follow."""
        if self.signature is None:
            return True
        return self.read_at - self.signature.mtime_ns / 1e9 >= _MTIME_TICK_SECONDS


class WholeFile:
    """A watched file whose new content is taken only when it is whole (see the
    module's docstring: a swapped link at once, anything else once it stood
    still). Content already returned, or reported as unreadable, is not
    returned again until it changes.

    ``clock`` is the wall clock the files' modification times are compared with.
    """

    def __init__(self, path: Path, limit: int, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._limit = limit
        self._clock = clock
        read = read_file(path, limit)  # at start, the file as it is; unreadable: no start
        self.text = read.text
        self._seen = _Seen(
            read.signature, _digest(read.data), read.text, path.is_symlink(), clock()
        )
        self._handled = self._seen.outcome  # what was last returned or reported

    def changed(self, settle_seconds: float) -> str | None:
        """The new, whole text; None if unchanged or not known to be whole yet;
        ConfigError if it is unreadable (raised once, until it changes again).
        ``settle_seconds``: how long a file written at its path must stand still.

        Blocking file I/O: call it from a worker thread, not the event loop.
        """
        previous = self._seen
        quiet = previous.outcome == self._handled and previous.stat_tells_changes()
        if quiet and file_signature(self.path) == previous.signature:
            return None  # as it was at the last poll: not even read
        seen = self._seen = self._observe()
        if seen.outcome == self._handled:
            return None  # touched, or the same content published again
        if not self._whole(seen, previous, settle_seconds):
            return None
        # Acted on once: a broken file is reported once, and fixing it changes it.
        self._handled = seen.outcome
        if seen.text is None:
            raise ConfigError(seen.outcome)
        return seen.text

    def _observe(self) -> _Seen:
        linked, now = self.path.is_symlink(), self._clock()
        try:
            read = read_file(self.path, self._limit)
        except ConfigError as exc:
            return _Seen(file_signature(self.path), str(exc), None, linked, now)
        return _Seen(read.signature, _digest(read.data), read.text, linked, now)

    def _whole(self, seen: _Seen, previous: _Seen, settle_seconds: float) -> bool:
        if _swapped_link(seen, previous):
            return True
        if (seen.signature, seen.outcome) != (previous.signature, previous.outcome):
            return False  # changed since the last poll: its writer may be at work
        if seen.signature is None:
            return True  # missing at two polls in a row
        # Unchanged between two polls proves little if they were close together
        # (polled by hand, a shortened interval): the file itself must be old.
        return seen.read_at - seen.signature.mtime_ns / 1e9 >= settle_seconds


def _swapped_link(seen: _Seen, previous: _Seen) -> bool:
    """The path is a link that now leads to another file: published whole.

    Only a link: a regular file that replaced a link (``cp --remove-destination``
    over it) also resolves elsewhere, and is being written at the path.
    """
    return (
        seen.linked
        and seen.signature is not None
        and previous.signature is not None
        and seen.signature.real_path != previous.signature.real_path
    )


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
