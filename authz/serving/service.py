"""Authorization/Check on a gRPC worker thread: admitted, decided, recorded, answered.

One Check, in order:

1. its ``Ticket`` (serving/admission.py): when it arrived, and whether it was
   admitted. A shed Check is refused with RESOURCE_EXHAUSTED, a Check whose
   deadline passed while it was queued is dropped with DEADLINE_EXCEEDED; both
   without deciding, both recorded (``late``: the client gets Envoy's
   ``status_on_error``) and counted;
2. the runtime snapshot, taken once: the decision and how it is recorded come
   from the same configuration, whatever a reload does meanwhile;
3. the decision, synchronously on this thread, within Envoy's deadline less a
   margin (a key refetch waits at most that long, keys/waiting.py);
4. ``Observability.finish``: the audit record (written before the answer
   leaves), the span, the metrics and the log line; ``late`` when Envoy
   stopped waiting meanwhile;
5. the serialized ``CheckResponse`` (response.Encoded), sent as it is.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import grpc

from authz._proto.envoy.service.auth.v3 import external_auth_pb2
from authz.check import response
from authz.check.decision import Decision
from authz.check.request import RequestView, view
from authz.errors import InternalError, InvalidRequest
from authz.keys.waiting import LoopBridge
from authz.observability.answer import DEADLINE_UNCERTAIN
from authz.observability.observe import Observability
from authz.observability.tracing import CheckObservation
from authz.runtime import Runtime
from authz.serving.admission import Admission, Ticket

__all__ = ["AuthorizationService"]

log = logging.getLogger(__name__)

# Time kept back from Envoy's deadline to record, build and send the answer.
_REPLY_MARGIN = 0.02
# An answer sent this close to the deadline (as counted here) may or may not
# beat Envoy's timer, which started a transit time earlier: its outcome is
# unknown. Envoy's grpc-timeout has millisecond resolution; on one host or one
# cluster network the transit is well under this.
_UNCERTAIN = 0.005
# A call that stopped this close to its deadline was Envoy's timeout: the
# deadline here counts from when gRPC read the call, a transit time after
# Envoy's clock started, so Envoy's reset can arrive just before it.
_DEADLINE_SLACK = 0.1

CheckRequest = external_auth_pb2.CheckRequest
Context = grpc.ServicerContext


class AuthorizationService:
    """Authorization/Check; ``Check`` answers with the serialized CheckResponse."""

    def __init__(
        self,
        runtime: Callable[[], Runtime],
        observability: Observability,
        admission: Admission | None = None,
        waits: LoopBridge | None = None,
    ) -> None:
        self._runtime = runtime
        # Where a Check's key refetch waits; told which RPC this thread decides for.
        self._waits = waits
        self._observe = observability
        self._serving = observability.serving
        self._admission = admission
        if admission is not None:
            admission.when_unserved(self._unserved)
        self._encode = response.Encoded()

    def handlers(self) -> dict[str, grpc.RpcMethodHandler[CheckRequest, bytes]]:
        """The service's method handlers, for ``add_registered_method_handlers``."""
        return {
            "Check": grpc.unary_unary_rpc_method_handler(
                _Behavior(self.Check, self._admission),
                request_deserializer=CheckRequest.FromString,
                response_serializer=_as_is,
            )
        }

    def Check(self, request: CheckRequest, context: Context) -> bytes:
        ticket = self._admission.ticket() if self._admission is not None else None
        if ticket is not None:
            ticket.taken = True
        started = ticket.arrived if ticket is not None else time.perf_counter()
        # One runtime for the whole Check, even if a reload swaps it meanwhile.
        runtime = self._runtime()
        # The span continues Envoy's trace from the call's metadata.
        observation = self._observe.begin(context.invocation_metadata(), started)
        if ticket is not None and not ticket.admitted:
            self._serving.shed()
            self._drop(observation, runtime, request, "overloaded")
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "authz: too many pending Checks")
        self._serving.queued(time.perf_counter() - started)
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            self._serving.expired()
            self._drop(observation, runtime, request, "expired")
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "authz: deadline passed in queue")
        request_view: RequestView | None = None
        waits = self._waits
        if waits is not None:
            waits.attach(context)  # a wait ends when Envoy resets the call
        try:
            with observation:
                request_view = view(request)
                budget = math.inf if remaining is None else max(0.0, remaining - _REPLY_MARGIN)
                decision = runtime.decider.decide(request_view, budget=budget)
        except Exception as exc:
            # decide() catches its own errors; this guards the request view.
            log.exception("cannot read CheckRequest")
            decision = _unreadable(exc)
        finally:
            if waits is not None:
                waits.attach(None)
        # Decided, but Envoy has stopped waiting (its ext_authz timeout, or the
        # client went away): the client got Envoy's answer, not this one.
        late = _late(context)
        # The audit record is written here, before the answer is built and sent;
        # with audit.on_sink_failure: deny, an unrecorded decision becomes a 503.
        answered = self._observe.finish(
            observation, request_view, decision, late=late, recording=runtime.recording
        )
        self._serving.handled("OK")
        try:
            return self._encode(answered, runtime.config.realm)
        except Exception:
            # A bug, never a traceback to Envoy: fail closed with a plain 503.
            log.exception("cannot build the answer to a Check; answering 503")
            return self._encode(Decision.deny(InternalError("answer")), runtime.config.realm)

    def _unserved(self, ticket: Ticket) -> None:
        """A Check gRPC read but ended before a worker reached it: the client got
        Envoy's error. Recorded (without its request, which gRPC did not read)
        and counted as expired, or as shed when it was shed."""
        try:
            if ticket.admitted:
                self._serving.expired()
            else:
                self._serving.shed()
            runtime = self._runtime()
            observation = self._observe.begin(None, ticket.arrived)
            reason = "expired" if ticket.admitted else "overloaded"
            self._observe.unanswered(observation, None, reason=reason, recording=runtime.recording)
        except Exception:
            log.exception("recording a Check that ended in the queue failed")

    def _drop(
        self,
        observation: CheckObservation,
        runtime: Runtime,
        request: CheckRequest,
        reason: str,
    ) -> None:
        """Record a Check refused without deciding; the client gets Envoy's error."""
        try:
            request_view: RequestView | None = view(request)
        except Exception:
            request_view = None
        self._observe.unanswered(
            observation, request_view, reason=reason, recording=runtime.recording
        )


class _Behavior:
    """The Check method as gRPC calls it, run on the admission pool.

    grpc.server runs a method on ``experimental_thread_pool`` when its behavior
    has one: Checks get the admission pool, health keeps gRPC's default pool.
    """

    __slots__ = ("_check", "experimental_thread_pool")

    def __init__(
        self,
        check: Callable[[CheckRequest, Context], bytes],
        pool: Admission | None,
    ) -> None:
        self._check = check
        self.experimental_thread_pool = pool

    def __call__(self, request: CheckRequest, context: Context) -> bytes:
        return self._check(request, context)


def _as_is(answer: bytes) -> bytes:
    return answer


def _unreadable(exc: Exception) -> Decision:
    error = (
        InvalidRequest("unreadable CheckRequest")
        if isinstance(exc, UnicodeError | ValueError)
        else InternalError(type(exc).__name__)
    )
    return Decision.deny(error)


def _late(context: Context) -> str | None:
    """Why authz's answer may not reach the client, or None when it will.

    "deadline_exceeded" or "cancelled" when gRPC has seen Envoy end the call;
    "deadline_uncertain" when the call is still open but the answer goes out
    within ``_UNCERTAIN`` of the deadline (or past it, by this clock): the
    deadline here counts from when gRPC read the call, so Envoy's runs out a
    transit time earlier, and whether the answer beats Envoy's timer cannot be
    known. The record then says unknown rather than assert either.
    """
    remaining = context.time_remaining()
    if not context.is_active():
        # Envoy reset the call: at its deadline (as counted here, a transit
        # time late) that was its timeout; earlier, its client went away.
        at_deadline = remaining is not None and remaining <= _DEADLINE_SLACK
        return "deadline_exceeded" if at_deadline else "cancelled"
    if remaining is not None and remaining <= _UNCERTAIN:
        return DEADLINE_UNCERTAIN
    return None
