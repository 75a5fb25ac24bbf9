"""Noticing that a file changed, by polling, without extra dependencies.

A Kubernetes ConfigMap or Secret volume publishes a file as a chain of
symbolic links (``config.yaml -> ..data/config.yaml``, ``..data ->
..2025_01_01_00_00_00.123``) and updates it by replacing the ``..data`` link
atomically. Watching the path with inotify misses that (the watched inode
never changes); comparing the *resolved* path and the stat of its target does
not. The signature also covers an in-place rewrite (mtime, size) and an
atomic rename over the file (inode).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from authz.errors import ConfigError

__all__ = ["FileSignature", "file_signature", "read_text"]


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


def read_text(path: Path, limit: int) -> tuple[str, bytes]:
    """A watched file's UTF-8 text and its bytes, at most ``limit`` bytes; ConfigError
    naming the file otherwise (a reload must report, not crash)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise ConfigError(f"{path}: larger than {limit} bytes")
    try:
        return data.decode("utf-8"), data
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8: {exc}") from None
