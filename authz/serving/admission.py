"""Which Checks are taken, and when each arrived: the Check handler's thread pool.

``grpc.server`` hands every call of a method to a thread pool; the Check
method's pool is an ``Admission`` (the handler's ``experimental_thread_pool``;
health has gRPC's default pool, so probes never queue behind Checks). When a
call is submitted — the moment gRPC has read it — the pool stamps its arrival
and decides whether it is admitted:

- at most ``limit`` Checks are pending (queued or being decided); a Check past
  that is shed: it runs at once on a small pool of its own, whose handler
  answers RESOURCE_EXHAUSTED without deciding (Envoy turns that into its
  ``status_on_error``) and records that it did;
- an admitted Check waits for one of ``threads`` workers.

The handler reads its ``Ticket`` (arrival time, admitted or not) from the
thread it runs on: the pool sets it just before the call and clears it after,
and the handler marks it taken. gRPC skips the handler of a call that ended
before a worker reached it (Envoy's timeout or reset while it was queued); the
pool then hands the untaken ticket to ``when_unserved``'s callback, so that
such a Check is still recorded and counted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol, TypeVar

__all__ = ["Admission", "AdmissionCounters", "Ticket"]

P = ParamSpec("P")
T = TypeVar("T")

# Shed answers are cheap (no decision); two threads keep up with a flood.
_SHED_THREADS = 2


@dataclass(slots=True)
class Ticket:
    arrived: float  # time.perf_counter() when gRPC submitted the call
    admitted: bool
    taken: bool = False  # set by the handler when it starts; the worker's thread only


class AdmissionCounters(Protocol):
    """Where arrivals and the pending count go (``serving_metrics.ServingMetrics``)."""

    def started(self) -> None: ...

    def pending(self, delta: int) -> None: ...


class _NoCounters:
    def started(self) -> None:
        pass

    def pending(self, delta: int) -> None:
        pass


class Admission(ThreadPoolExecutor):
    def __init__(
        self,
        threads: int,
        limit: int,
        counters: AdmissionCounters | None = None,
    ) -> None:
        super().__init__(max_workers=threads, thread_name_prefix="authz-check")
        self.threads = threads
        self.limit = limit
        self._counters = counters or _NoCounters()
        self._shed = ThreadPoolExecutor(_SHED_THREADS, thread_name_prefix="authz-shed")
        self._lock = threading.Lock()
        self._pending = 0  # admitted and not finished; under _lock
        self._local = threading.local()
        self._unserved: Callable[[Ticket], None] | None = None

    def when_unserved(self, callback: Callable[[Ticket], None]) -> None:
        """Call ``callback`` (on the worker) for a call whose handler gRPC skipped."""
        self._unserved = callback

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        arrived = time.perf_counter()
        self._counters.started()
        with self._lock:
            admitted = self._pending < self.limit
            if admitted:
                self._pending += 1
        if admitted:
            self._counters.pending(1)
            return super().submit(self._run, Ticket(arrived, True), fn, args, kwargs)
        return self._shed.submit(self._run, Ticket(arrived, False), fn, args, kwargs)

    def _run(
        self, ticket: Ticket, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        local = self._local
        local.ticket = ticket
        try:
            return fn(*args, **kwargs)
        finally:
            local.ticket = None
            if not ticket.taken and self._unserved is not None:
                self._unserved(ticket)
            if ticket.admitted:
                with self._lock:
                    self._pending -= 1
                self._counters.pending(-1)

    def ticket(self) -> Ticket | None:
        """The running call's ticket; None outside a call this pool runs."""
        ticket: Ticket | None = getattr(self._local, "ticket", None)
        return ticket

    @property
    def pending(self) -> int:
        return self._pending

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait, cancel_futures=cancel_futures)
        self._shed.shutdown(wait, cancel_futures=cancel_futures)
