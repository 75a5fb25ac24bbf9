"""The audit trail: exactly one JSON line per decision, never a secret in it.

A record answers "who accessed what, when, and was it allowed": the verified
issuer, subject and ``jti``, a token fingerprint (16 hex digits of its SHA-256:
enough to correlate, useless to replay), the route, method, path without the
query string (where tokens and other secrets like to hide), host, source
address, ``x-request-id``, trace and span id, latency and the configuration
version. The format is ``audit_record.schema.json`` beside this module; the
record is built in ``audit_record``, the sinks it goes to are ``audit_sinks``.

Writing comes first: ``AuditWriter.record`` hands the record's line to the
kernel (``os.write`` on stdout's descriptor, or on the file opened for
appending) before the Check's answer is built and sent. A process killed right
after answering (SIGKILL, an OOM kill) has lost no record of an answered
Check: what the kernel holds outlives the process. (A power cut is another
matter: fsync per record would cost a disk flush per Check; the file is
fsynced when the server stops.) No writer thread: handing each record to a
thread and waiting for it costs a thread wake-up per Check, more than the
write itself (see docs/observability.md, "Audit trail"). The price: a write
blocks the Check's thread for as long as the kernel makes it wait, so a stdout
pipe that nobody reads stalls Checks until Envoy answers them 503 at its timeout. That fails
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
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from authz.observability.audit_record import timestamp
from authz.observability.audit_sinks import AuditSink, FileSink

__all__ = ["AuditCounters", "AuditWriter", "NullCounters"]

log = logging.getLogger(__name__)

_WARN_EVERY = 10.0


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

    Checks on many threads record at once: a record is serialized on its own
    thread, then written under the writer's lock, so lines never interleave,
    the count of drops stays exact and no record follows ``close``.
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
        self._lock = threading.RLock()  # _write drops under it
        self.written = 0

    def start(self) -> None:
        for sink in self._sinks:
            if isinstance(sink, FileSink):
                sink.open()

    def record(self, record: Mapping[str, Any]) -> bool:
        """Write ``record`` to every sink now. True if every sink took it;
        never raises."""
        try:
            try:
                line = _dumps(record)
            except (TypeError, ValueError):
                log.exception("audit record is not serialisable; counted as dropped")
                self._drop("error")
                return False
            with self._lock:
                if self._closed:
                    self._drop("shutdown")
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
            with self._lock:
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
        with self._lock:
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


# One encoder for every record (json.dumps with options builds one per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _dumps(record: Mapping[str, Any]) -> str:
    # ASCII only: no raw U+2028 or control bytes that a line-based reader
    # could split on; json escapes newlines, so one record is one line.
    return _ENCODER.encode(record) + "\n"


def _dropped_record(drops: _Drops, now: float) -> dict[str, Any]:
    return {
        "type": "dropped",
        "time": timestamp(now),
        "count": drops.count,
        "first": timestamp(drops.first),
        "last": timestamp(drops.last),
    }
