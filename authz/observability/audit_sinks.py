"""Where audit records go: stdout's descriptor, a stream, or a file that follows rotation.

Every sink hands a record to the kernel before ``write`` returns (see audit.py
for why): ``os.write``, no Python buffer in between.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TextIO

from authz.config.models import Config

__all__ = [
    "AuditSink",
    "FdSink",
    "FileSink",
    "StreamSink",
    "audit_destination",
    "audit_sinks",
    "sink_names",
    "stdout_sink",
]

_ROTATION_CHECK_EVERY = 1.0


class AuditSink(Protocol):
    name: str

    def write(self, data: bytes) -> None:
        """Hand complete lines to the kernel before returning; raise OSError (or
        ValueError on a closed stream) on failure."""
        ...

    def close(self) -> None:
        """Flush durably and release the sink."""
        ...


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written < len(data):  # a pipe may take part of a large write
        rest = memoryview(data)[written:]
        while rest:
            rest = rest[os.write(fd, rest) :]


class FdSink:
    """A file descriptor, e.g. stdout's (the Kubernetes way: the node ships it).

    ``os.write`` straight to the descriptor: no Python buffer to flush, and a
    record is in the kernel (the pipe, the file) when ``write`` returns.
    """

    def __init__(self, fd: int, name: str = "stdout") -> None:
        self._fd = fd
        self.name = name

    def write(self, data: bytes) -> None:
        _write_all(self._fd, data)

    def close(self) -> None:
        """Nothing buffered here; the descriptor is not ours to close."""


class StreamSink:
    """A text stream without a usable descriptor (e.g. a replaced sys.stdout):
    written and flushed per record."""

    def __init__(self, stream: TextIO | Callable[[], TextIO], name: str = "stdout") -> None:
        # A callable is resolved per write, so a replaced sys.stdout is honoured.
        self._stream = stream
        self.name = name

    def _target(self) -> TextIO:
        return self._stream() if callable(self._stream) else self._stream

    def write(self, data: bytes) -> None:
        target = self._target()
        target.write(data.decode("ascii"))
        target.flush()

    def close(self) -> None:
        self._target().flush()


class FileSink:
    """Appends to a file with ``os.write``; reopens it when it was rotated away
    (moved or deleted). fsync only at close: per record it would cost a disk
    flush per Check, and what the kernel holds already survives the process.

    Rotation is looked for at most once a second (a stat per record would cost
    as much as the write): for up to a second after logrotate moves the file,
    records still go to the moved file, which is where logrotate keeps them.
    """

    name = "file"

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self._path = path
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._clock = clock
        self._checked = 0.0

    def open(self) -> None:
        """Open now, so an unwritable path is a start-up error and not a lost record."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        stat = os.fstat(fd)
        self._fd = fd
        self._identity = (stat.st_dev, stat.st_ino)
        self._checked = self._clock()

    def _rotated(self) -> bool:
        now = self._clock()
        if now - self._checked < _ROTATION_CHECK_EVERY:
            return False
        self._checked = now
        try:
            stat = os.stat(self._path)
        except FileNotFoundError:
            return True
        return (stat.st_dev, stat.st_ino) != self._identity

    def write(self, data: bytes) -> None:
        if self._fd is None or self._rotated():
            self._close_file()
            self.open()
        assert self._fd is not None
        _write_all(self._fd, data)

    def close(self) -> None:
        self._close_file()

    def _close_file(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def stdout_sink() -> AuditSink:
    """stdout by its descriptor; by the stream when it has none (a test's capture)."""
    try:
        return FdSink(sys.stdout.fileno(), "stdout")
    except (AttributeError, OSError, ValueError):
        return StreamSink(lambda: sys.stdout, "stdout")


def sink_names(config: Config) -> list[str]:
    # As the sinks name themselves (audit_sinks.py), without opening them.
    sinks = (("stdout", config.audit.stdout), ("file", config.audit.file is not None))
    return [name for name, on in sinks if on]


def audit_sinks(config: Config) -> list[AuditSink]:
    sinks: list[AuditSink] = []
    if config.audit.stdout:
        sinks.append(stdout_sink())
    if config.audit.file is not None:
        sinks.append(FileSink(config.resolve(config.audit.file)))
    return sinks


def audit_destination(config: Config) -> tuple[bool, Path | None]:
    file = config.audit.file
    return config.audit.stdout, None if file is None else config.resolve(file)
