"""The audit trail: exactly one JSON line per decision, never a secret in it.

A record answers "who accessed what, when, and was it allowed": the verified
issuer, subject and ``jti``, a token fingerprint (16 hex digits of its SHA-256:
enough to correlate, useless to replay), the route, method, path without the
query string (where tokens and other secrets like to hide), host, source
address, ``x-request-id``, trace and span id, latency and the configuration
version. The format is ``audit_record.schema.json`` beside this module.

Writing happens off the request path. A Check only puts the record on a
bounded queue (``put_nowait``: it never waits); a writer thread serialises and
writes batches to every sink. The overflow policy, when the queue is full
because the sinks cannot keep up: the *new* record is dropped, counted
(``authz_audit_records_total{outcome="dropped",reason="queue_full"}``), a
warning is logged (at most every 10 s), and once writing resumes a ``dropped``
record is written into the trail itself, saying how many records are missing
and between which times. Nothing is lost silently, and a Check is never slowed
by a slow disk or a stuck stdout reader.

``close`` (called by ``AuthzServer.stop`` after the last Check has finished)
drains the queue, flushes and fsyncs the file: every decision made before exit
is on disk. If a sink hangs past the shutdown timeout, what is still queued is
counted and logged as dropped (reason ``shutdown``) rather than hanging exit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO

from authz.decision import Unenforced

__all__ = [
    "MAX_FIELD",
    "SCHEMA_PATH",
    "AuditCounters",
    "AuditSink",
    "AuditWriter",
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
_BATCH = 512
# After the first record of a batch the writer waits this long for more: one
# wake-up and one write per batch instead of per record, which under load
# keeps the writer from competing with Checks for the interpreter.
_LINGER = 0.005
_WARN_EVERY = 10.0
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

    def write(self, text: str) -> None:
        """Write complete lines; raise OSError (or ValueError on a closed stream) on failure."""
        ...

    def close(self) -> None:
        """Flush durably and release the sink."""
        ...


class StreamSink:
    """A text stream, e.g. stdout (the Kubernetes way: the node ships it)."""

    def __init__(self, stream: TextIO | Callable[[], TextIO], name: str = "stdout") -> None:
        # A callable is resolved per write, so a replaced sys.stdout is honoured.
        self._stream = stream
        self.name = name

    def _target(self) -> TextIO:
        return self._stream() if callable(self._stream) else self._stream

    def write(self, text: str) -> None:
        target = self._target()
        target.write(text)
        target.flush()

    def close(self) -> None:
        self._target().flush()


class FileSink:
    """Appends to a file; reopens it when it was rotated away (moved or deleted)."""

    name = "file"

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file: TextIO | None = None
        self._identity: tuple[int, int] | None = None

    def open(self) -> None:
        """Open now, so an unwritable path is a start-up error and not a lost record."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self._path.open("a", encoding="utf-8")
        stat = os.fstat(self._file.fileno())
        self._identity = (stat.st_dev, stat.st_ino)

    def _rotated(self) -> bool:
        try:
            stat = self._path.stat()
        except FileNotFoundError:
            return True
        return (stat.st_dev, stat.st_ino) != self._identity

    def write(self, text: str) -> None:
        if self._file is None or self._rotated():
            self._close_file()
            self.open()
        assert self._file is not None
        self._file.write(text)
        self._file.flush()

    def close(self) -> None:
        self._close_file()

    def _close_file(self) -> None:
        if self._file is not None:
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            finally:
                self._file.close()
                self._file = None


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
    """Records dropped since the last ``dropped`` record was written."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.first = 0.0
        self.last = 0.0

    def add(self, at: float) -> None:
        with self._lock:
            if self.count == 0:
                self.first = at
            self.count += 1
            self.last = at

    def take(self) -> tuple[int, float, float]:
        with self._lock:
            taken = (self.count, self.first, self.last)
            self.count = 0
            return taken


_STOP = object()


class AuditWriter:
    """A bounded queue and one writer thread in front of the sinks."""

    def __init__(
        self,
        sinks: Sequence[AuditSink],
        queue_size: int = 10_000,
        counters: AuditCounters | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sinks = tuple(sinks)
        self._queue: queue.Queue[Mapping[str, Any] | object] = queue.Queue(queue_size)
        self._counters = counters or NullCounters()
        self._clock = clock
        self._drops = _Drops()
        self._last_warning = -_WARN_EVERY
        self._thread: threading.Thread | None = None
        self._closed = False
        self.written = 0

    def start(self) -> None:
        for sink in self._sinks:
            if isinstance(sink, FileSink):
                sink.open()
        self._thread = threading.Thread(target=self._run, name="authz-audit", daemon=True)
        self._thread.start()

    def record(self, record: Mapping[str, Any]) -> None:
        """Queue ``record`` for writing. Never blocks, never raises."""
        try:
            if self._closed:
                self._drop("shutdown")
                return
            self._queue.put_nowait(record)
        except queue.Full:
            self._drop("queue_full")
        except Exception:
            log.exception("audit record could not be queued")
            self._drop("error")

    def _drop(self, reason: str) -> None:
        try:
            now = self._clock()
            self._drops.add(now)
            self._counters.audit_dropped(reason, 1)
            monotonic = time.monotonic()
            if monotonic - self._last_warning >= _WARN_EVERY:
                self._last_warning = monotonic
                log.warning("audit record dropped (%s); see authz_audit_records_total", reason)
        except Exception:  # noqa: S110 - the hot path must survive a broken counter or log handler
            pass

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            if batch[0] is not _STOP:
                time.sleep(_LINGER)
            while len(batch) < _BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in batch)
            records = [item for item in batch if item is not _STOP]
            self._write(records)
            if stop:
                return

    def _write(self, records: list[Any]) -> None:
        lines = []
        count, first, last = self._drops.take()
        if count:
            lines.append(_dumps(_dropped_record(count, first, last, self._clock())))
        for record in records:
            try:
                lines.append(_dumps(record))
            except (TypeError, ValueError):
                log.exception("audit record is not serialisable; counted as dropped")
                self._counters.audit_dropped("error", 1)
        if not lines:
            return
        text = "".join(lines)
        delivered = 0
        for sink in self._sinks:
            try:
                sink.write(text)
                delivered += 1
            except Exception as exc:
                self._counters.audit_write_failed(sink.name, len(records))
                log.error("audit sink %s failed: %s: %s", sink.name, type(exc).__name__, exc)
        if delivered:
            self.written += len(records)
            self._counters.audit_written(len(records))
        else:
            self._counters.audit_dropped("write_error", len(records))

    def close(self, timeout: float = 5.0) -> bool:
        """Write everything queued, flush and close the sinks; True if nothing was lost.

        Called once the server takes no more Checks. Bounded by ``timeout``.
        """
        if self._closed:
            return True
        self._closed = True
        thread = self._thread
        if thread is None:
            self._close_sinks()
            return True
        deadline = time.monotonic() + timeout
        with contextlib.suppress(queue.Full):  # the writer is stuck: join() times out below
            self._queue.put(_STOP, timeout=max(0.0, deadline - time.monotonic()))
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            left = self._queue.qsize()
            self._counters.audit_dropped("shutdown", left)
            log.error(
                "audit writer did not finish within %.1fs: %d records not written", timeout, left
            )
            return False
        self._close_sinks()
        return True

    def _close_sinks(self) -> None:
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


def _dropped_record(count: int, first: float, last: float, now: float) -> dict[str, Any]:
    return {
        "type": "dropped",
        "time": timestamp(now),
        "count": count,
        "first": timestamp(first),
        "last": timestamp(last),
    }


def stdout_sink() -> StreamSink:
    return StreamSink(lambda: sys.stdout, "stdout")
