"""Noticing that a file changed, by polling, without extra dependencies.

A Kubernetes ConfigMap or Secret volume publishes a file as a chain of
symbolic links (``config.yaml -> ..data/config.yaml``, ``..data ->
..2025_01_01_00_00_00.123``) and updates it by replacing the ``..data`` link
atomically. Watching the path with inotify misses that (the watched inode
never changes); comparing the *resolved* path and the stat of its target does
not. The signature also covers an in-place rewrite (mtime, size) and an
atomic rename over the file (inode).

``WatchedFile`` is that comparison, for every watched file: the
configuration, the revocation list and the issuers' key files.

A file that changed is not necessarily whole: a writer that rewrites it in
place may be read half-way, and a truncated YAML file can still be valid.
``read_file`` therefore reports which file (resolved path, device, inode) the
bytes came from, so that a reader can tell a file published by an atomic
rename or a ConfigMap swap (a new inode: whole by construction) from one
being written in place (same inode: wait until it stops changing).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import NamedTuple

from authz.errors import ConfigError

__all__ = [
    "FileIdentity",
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


class FileIdentity(NamedTuple):
    real_path: str
    device: int
    inode: int


class WatchedRead(NamedTuple):
    text: str
    data: bytes
    identity: FileIdentity


def read_file(path: Path, limit: int) -> WatchedRead:
    """A watched file's UTF-8 text, its bytes (at most ``limit``) and the identity
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
    return WatchedRead(text, data, FileIdentity(real, stat.st_dev, stat.st_ino))


class WholeFile:
    """A watched file whose new content is taken only when it is whole.

    ``changed`` returns the new text when the file changed and is whole: it
    arrived as another file (a new inode, or the path now resolves elsewhere:
    an atomic rename, a ConfigMap swap), or, written in place, a poll read the
    same bytes the poll before it read. Content already returned (or reported
    as unreadable or broken) is not returned again until it changes.
    """

    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self._limit = limit
        self._watched = WatchedFile(path)
        read = read_file(path, limit)
        self.text = read.text  # the content taken at start
        digest = _digest(read.data)
        self._handled = digest
        # What the last poll read, None after a failed read.
        self._last: tuple[FileIdentity, str] | None = (read.identity, digest)

    def changed(self) -> str | None:
        """The new, whole text; None if unchanged or not whole yet; ConfigError
        if unreadable (raised once, until the file changes again).

        Blocking file I/O: call it from a worker thread, not the event loop.
        """
        moved = self._watched.changed()  # records the new signature before the read
        pending = self._last is not None and self._last[1] != self._handled
        if not moved and not pending:
            return None
        last, self._last = self._last, None
        read = read_file(self.path, self._limit)
        digest = _digest(read.data)
        self._last = (read.identity, digest)
        if digest == self._handled:
            return None  # touched, or the same content published again
        renamed = last is None or read.identity != last[0]
        if not renamed and (last is None or digest != last[1]):
            return None  # written in place: taken once a poll reads the same bytes
        # Returned once: a broken file is reported once, and fixing it changes it.
        self._handled = digest
        return read.text


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
