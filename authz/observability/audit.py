"""The audit trail: exactly one JSON line per decision, never a secret in it.

A record answers "who accessed what, when, and was it allowed": the verified
issuer, subject and ``jti``, a token fingerprint (16 hex digits of its SHA-256:
enough to correlate, useless to replay), the route, method, path without the
query string (where tokens and other secrets like to hide), host, source
address, ``x-request-id``, trace and span id, latency and the configuration
version. The format is ``audit_record.schema.json`` beside this module.

Writing comes first: ``AuditWriter.record`` hands the record's line to the
kernel (``os.write`` on stdout's descriptor, or on the file opened for
appending) before the Check's answer is built and sent. A process killed right
after answering (SIGKILL, an OOM kill) has lost no record of an answered
Check: what the kernel holds outlives the process. (A power cut is another
matter: fsync per record would cost a disk flush per Check; the file is
fsynced when the server stops.) No writer thread: handing each record to a
thread and waiting for it costs a thread wake-up per Check, more than the
write itself (see docs/observability.md, "Audit trail"). The price: a write blocks the event
loop for as long as the kernel makes it wait, so a stdout pipe that nobody
reads stalls Checks until Envoy answers them 503 at its timeout. That fails
closed; an answer without its record would not.

A sink that fails (EPIPE, ENOSPC, EIO, a file that cannot be reopened) is
counted (``authz_audit_write_errors_total{sink}``; a record no sink took is
``authz_audit_records_total{outcome="dropped",reason="write_error"}``) and
logged at most every 10 s per sink; the other sink still gets the record. Once
a write succeeds again, a ``dropped`` record says how many records are missing
and between which times: nothing is lost silently. What the Check answers then
is ``audit.on_sink_failure`` (observe.py): ``count`` (the default) answers as
decided; ``deny`` answers 503 ``audit_unavailable`` instead, for deployments
where no request may pass or be refused without a record.

``close`` (called by ``AuthzServer.stop`` after the last Check has finished)
fsyncs and closes the file.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO

from authz.check.decision import Unenforced

__all__ = [
    "MAX_FIELD",
    "SCHEMA_PATH",
    "AuditCounters",
    "AuditSink",
    "AuditWriter",
    "FdSink",
    "FileSink",
    "NullCounters",
    "StreamSink",
    "decision_record",
    "redact",
    "stdout_sink",
    "timestamp",
]

log = logging.getLogger(__name__)

SCHEMA_PATH = Path(__file__).with_name("audit_record.schema.json")

# Longest value kept for a request-controlled field; the record stays bounded.
MAX_FIELD = 1024
_WARN_EVERY = 10.0
_ROTATION_CHECK_EVERY = 1.0
# Anything shaped like a JWS/JWE (base64url JSON header "eyJ…" and a dot):
# a token in a path segment or a request id must not reach the trail.
_JWT_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]{2,}(?:\.[A-Za-z0-9_-]*)+")
_REDACTED = "[redacted]"


def redact(value: str, limit: int = MAX_FIELD) -> str:
    """``value`` capped at ``limit`` characters, with token-like runs replaced."""
    if "eyJ" in value:
        value = _JWT_LIKE.sub(_REDACTED, value)
    return value if len(value) <= limit else value[:limit] + "…"


_second: tuple[int, str] = (-1, "")


def timestamp(seconds: float) -> str:
    """RFC 3339 UTC with milliseconds: 2026-01-31T12:00:00.123Z."""
    global _second  # noqa: PLW0603 - a one-entry cache: formatting is per Check
    whole = int(seconds)
    cached = _second  # one read: another thread may replace it
    if cached[0] != whole:
        cached = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
        _second = cached
    return f"{cached[1]}.{int((seconds - whole) * 1000):03d}Z"


def decision_record(
    *,
    at: float,
    decision: str,
    status: int,
    reason: str,
    issuer: str | None,
    subject: str | None,
    jti: str | None,
    token_fp: str,
    route: str,
    method: str,
    path: str,
    host: str,
    source: str,
    request_id: str,
    trace_id: str | None,
    span_id: str | None,
    latency_seconds: float,
    config_version: str,
    shadow: Sequence[Unenforced] = (),
    dry_run: Unenforced | None = None,
    undelivered: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One audit record (see the schema). Request-controlled strings are redacted.

    ``decision`` is what the client got: allow, deny, or late (authz answered
    after Envoy stopped waiting; ``undelivered`` is then the answer authz made,
    None if it was cancelled before deciding).
    """
    return {
        "type": "decision",
        "time": timestamp(at),
        "decision": decision,
        "status": status,
        "reason": reason,
        "issuer": issuer,
        "subject": None if subject is None else redact(subject, 256),
        "jti": None if jti is None else redact(jti, 256),
        "token_fp": token_fp or None,
        "route": route or None,
        "method": redact(method, 32),
        "path": redact(path.split("?", 1)[0]),
        "host": redact(host, 256),
        "source": source,
        "request_id": redact(request_id, 256) or None,
        "trace_id": trace_id,
        "span_id": span_id,
        "latency_ms": round(latency_seconds * 1000, 3),
        "config_version": config_version,
        "shadow": [_unenforced(outcome) for outcome in shadow] or None,
        "dry_run": None if dry_run is None else _unenforced(dry_run),
        "undelivered": None if undelivered is None else dict(undelivered),
    }


def _unenforced(outcome: Unenforced) -> dict[str, Any]:
    return {
        "route": outcome.route or None,
        "would": outcome.would,
        "status": outcome.status,
        "reason": outcome.reason,
        # A deny's detail may quote the request (a path): redacted like one.
        "detail": redact(outcome.detail, 512),
    }


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


class AuditCounters(Protocol):
    """Where the writer reports (``metrics.Metrics``, or ``NullCounters``)."""

    def audit_written(self, count: int) -> None: ...

    def audit_dropped(self, reason: str, count: int) -> None: ...

    def audit_write_failed(self, sink: str, count: int) -> None: ...


class NullCounters:
    def audit_written(self, count: int) -> None:
        pass

    def audit_dropped(self, reason: str, count: int) -> None:
        pass

    def audit_write_failed(self, sink: str, count: int) -> None:
        pass


class _Drops:
    """Records no sink took since the last ``dropped`` record was written."""

    def __init__(self) -> None:
        self.count = 0
        self.first = 0.0
        self.last = 0.0

    def add(self, at: float) -> None:
        if self.count == 0:
            self.first = at
        self.count += 1
        self.last = at


class AuditWriter:
    """Writes each record to every sink before ``record`` returns.

    Called on the event loop only (one Check at a time), so it needs no lock.
    """

    def __init__(
        self,
        sinks: Sequence[AuditSink],
        counters: AuditCounters | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sinks = tuple(sinks)
        self._counters = counters or NullCounters()
        self._clock = clock
        self._drops = _Drops()
        self._complained: dict[str, float] = {}
        self._closed = False
        self.written = 0

    def start(self) -> None:
        for sink in self._sinks:
            if isinstance(sink, FileSink):
                sink.open()

    def record(self, record: Mapping[str, Any]) -> bool:
        """Write ``record`` to every sink now. True if every sink took it;
        never raises."""
        try:
            if self._closed:
                self._drop("shutdown")
                return False
            try:
                line = _dumps(record)
            except (TypeError, ValueError):
                log.exception("audit record is not serialisable; counted as dropped")
                self._drop("error")
                return False
            return self._write(line)
        except Exception:
            log.exception("audit record could not be written")
            self._drop("error")
            return False

    def _write(self, line: str) -> bool:
        drops = self._drops
        if drops.count:
            # The gap goes into the trail itself, ahead of the first record after it.
            line = _dumps(_dropped_record(drops, self._clock())) + line
        data = line.encode("ascii")
        delivered = 0
        for sink in self._sinks:
            try:
                sink.write(data)
                delivered += 1
            except Exception as exc:
                self._counters.audit_write_failed(sink.name, 1)
                self._complain(sink.name, exc)
        if delivered:
            if drops.count:
                self._drops = _Drops()
            self.written += 1
            self._counters.audit_written(1)
        else:
            self._drop("write_error")
        return delivered == len(self._sinks)

    def _drop(self, reason: str) -> None:
        try:
            self._drops.add(self._clock())
            self._counters.audit_dropped(reason, 1)
        except Exception:  # noqa: S110 - the hot path must survive a broken counter or clock
            pass

    def _complain(self, sink: str, exc: Exception) -> None:
        # At most one line per sink every 10 s: a broken sink fails every Check.
        now = time.monotonic()
        if now - self._complained.get(sink, -_WARN_EVERY) >= _WARN_EVERY:
            self._complained[sink] = now
            log.error(
                "audit sink %s failed: %s: %s (logged at most every %.0f s; "
                "see authz_audit_write_errors_total)",
                sink,
                type(exc).__name__,
                exc,
                _WARN_EVERY,
            )

    def close(self) -> None:
        """Flush and close the sinks (the file is fsynced). Called once the
        server takes no more Checks; a record after it is dropped (shutdown)."""
        if self._closed:
            return
        self._closed = True
        for sink in self._sinks:
            try:
                sink.close()
            except Exception as exc:
                log.error(
                    "audit sink %s failed to close: %s: %s", sink.name, type(exc).__name__, exc
                )


def _dumps(record: Mapping[str, Any]) -> str:
    # ASCII only: no raw U+2028 or control bytes that a line-based reader
    # could split on; json escapes newlines, so one record is one line.
    return json.dumps(record, separators=(",", ":")) + "\n"


def _dropped_record(drops: _Drops, now: float) -> dict[str, Any]:
    return {
        "type": "dropped",
        "time": timestamp(now),
        "count": drops.count,
        "first": timestamp(drops.first),
        "last": timestamp(drops.last),
    }


def stdout_sink() -> AuditSink:
    """stdout by its descriptor; by the stream when it has none (a test's capture)."""
    try:
        return FdSink(sys.stdout.fileno(), "stdout")
    except (AttributeError, OSError, ValueError):
        return StreamSink(lambda: sys.stdout, "stdout")
