"""What happened to every Check from the moment gRPC read it: the serving metrics.

Counted at arrival (``serving.admission``), not in the handler, so the queue
before the handler is seen. Every Check that gRPC hands to authz is started;
each then ends one way:

====================================  =========  ==============================================
``authz_checks_started_total``        counter    every Check gRPC read
``authz_checks_handled_total``        counter    grpc_code: decided and answered (OK), or
                                                 failed inside the handler (UNKNOWN)
``authz_checks_shed_total``           counter    refused unread over the pending limit
                                                 (RESOURCE_EXHAUSTED)
``authz_checks_expired_total``        counter    Envoy's deadline passed while queued: dropped
                                                 without deciding (DEADLINE_EXCEEDED)
``authz_checks_pending``              gauge      admitted and not finished (queued + deciding)
``authz_check_queue_seconds``         histogram  arrival to the start of the handler
``authz_issuer_ready``                gauge      issuer: 1 while it has usable keys
====================================  =========  ==============================================

so that, between scrapes, ``started = handled + shed + expired`` (plus what is
pending). ``authz_check_duration_seconds`` (metrics.py) counts from the same
arrival, so queueing shows in the latency an alert reads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from authz.observability.metrics import DURATION_BUCKETS, Tally

__all__ = [
    "CHECKS_EXPIRED",
    "CHECKS_HANDLED",
    "CHECKS_PENDING",
    "CHECKS_SHED",
    "CHECKS_STARTED",
    "ISSUER_READY",
    "QUEUE_DURATION",
    "ServingMetrics",
]

CHECKS_STARTED = "authz.checks.started"
CHECKS_HANDLED = "authz.checks.handled"
CHECKS_SHED = "authz.checks.shed"
CHECKS_EXPIRED = "authz.checks.expired"
CHECKS_PENDING = "authz.checks.pending"
QUEUE_DURATION = "authz.check.queue"
ISSUER_READY = "authz.issuer.ready"

_NONE: tuple[tuple[str, str], ...] = ()
_GRPC_CODES = ("OK", "UNKNOWN")


class ServingMetrics:
    """The serving counters; every method is safe from any thread."""

    def __init__(self, provider: MeterProvider) -> None:
        meter = provider.get_meter("authz")
        self._started = Tally(meter, CHECKS_STARTED, "{check}", "Checks read by gRPC")
        self._handled = Tally(
            meter, CHECKS_HANDLED, "{check}", "Checks the handler answered, by gRPC code"
        )
        self._shed = Tally(meter, CHECKS_SHED, "{check}", "Checks refused over the pending limit")
        self._expired = Tally(
            meter, CHECKS_EXPIRED, "{check}", "Checks whose deadline passed while queued"
        )
        self._lock = threading.Lock()
        self._pending = 0
        self._readiness: Callable[[], Mapping[str, bool]] | None = None
        meter.create_observable_gauge(
            ISSUER_READY,
            callbacks=[self._observe_ready],
            unit="1",
            description="1 while the issuer has usable keys, else 0",
        )
        meter.create_observable_gauge(
            CHECKS_PENDING,
            callbacks=[self._observe_pending],
            unit="{check}",
            description="Checks admitted and not finished (queued or being decided)",
        )
        self._queue = meter.create_histogram(
            QUEUE_DURATION,
            unit="s",
            description="Time a Check waited from arrival to the start of its handler",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        # Zero series up front: the first shed or expiry is an increase, not a new series.
        for tally in (self._started, self._shed, self._expired):
            tally.add(0, _NONE)
        for code in _GRPC_CODES:
            self._handled.add(0, (("grpc_code", code),))

    # admission.AdmissionCounters
    def started(self) -> None:
        self._started.add(1, _NONE)

    def pending(self, delta: int) -> None:
        with self._lock:
            self._pending += delta

    # The handler's outcomes.
    def queued(self, seconds: float) -> None:
        self._queue.record(seconds)

    def handled(self, code: str) -> None:
        self._handled.add(1, (("grpc_code", code),))

    def shed(self) -> None:
        self._shed.add(1, _NONE)

    def expired(self) -> None:
        self._expired.add(1, _NONE)

    def follow_readiness(self, readiness: Callable[[], Mapping[str, bool]]) -> None:
        """Report each issuer's readiness (1/0) from ``readiness``, read at collection."""
        self._readiness = readiness

    def _observe_ready(self, options: CallbackOptions) -> Iterator[Observation]:
        readiness = self._readiness
        if readiness is None:
            return
        for issuer, usable in readiness().items():
            yield Observation(1 if usable else 0, {"issuer": issuer})

    def _observe_pending(self, options: CallbackOptions) -> Iterator[Observation]:
        yield Observation(self._pending)
