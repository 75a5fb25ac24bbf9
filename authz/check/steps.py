"""The phases of one Check, as events on the Check's span.

``decision.py`` wraps the phases in ``Phase.REQUEST.step()``,
``Phase.TOKEN.step()`` … (phases.py names each phase's event: ``extract``,
``verify`` …); each becomes one span event named ``authz.<event>`` with its
outcome, its duration, and for a deny or a failure the reason. Events rather
than child spans: a trace still shows where the time went and why, at a
fraction of the cost of a span.

This module needs only the OpenTelemetry *API*: when the current span is not
recording (tracing off, or the trace not sampled) a step costs one context
lookup (under 1 µs) and nothing is measured.

A failure that is not a deny records the exception's *type* only: exception
messages from parsing libraries may quote their input, and the input here is
a credential.
"""

from __future__ import annotations

import time
from types import TracebackType

from opentelemetry import trace
from opentelemetry.trace import Span

from authz.errors import AuthzError

__all__ = ["STEP_PREFIX", "step"]

STEP_PREFIX = "authz."


class step:  # lower case: it reads like a function, ``with step("verify"):``
    """Record the enclosed phase as an event on the current span."""

    __slots__ = ("_name", "_span", "_start")

    def __init__(self, name: str) -> None:
        self._name = name
        self._span: Span | None = None
        self._start = 0

    def __enter__(self) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            self._span = span
            self._start = time.perf_counter_ns()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        span = self._span
        if span is None:
            return
        duration_ms = (time.perf_counter_ns() - self._start) / 1e6
        attributes: dict[str, str | float] = {"authz.step.duration_ms": round(duration_ms, 3)}
        if exc is None:
            attributes["authz.step.outcome"] = "ok"
        elif isinstance(exc, AuthzError) and exc.status < 500:
            attributes["authz.step.outcome"] = "deny"
            attributes["authz.reason"] = exc.reason
        else:
            # Failing to decide (503): name what failed, e.g. the library
            # exception behind an InternalError.
            attributes["authz.step.outcome"] = "error"
            if isinstance(exc, AuthzError):
                attributes["authz.reason"] = exc.reason
            attributes["exception.type"] = type(exc.__cause__ or exc).__name__
        span.add_event(STEP_PREFIX + self._name, attributes)
