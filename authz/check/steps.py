"""The phases of one Check, as events on the Check's span.

Each phase that runs (``with run.phase(Phase.TOKEN):``, run.py, which names
each phase's event: ``extract``, ``verify`` …) becomes one span event named
``authz.<event>`` with its outcome, its duration, and for a deny or a
failure the reason. Events rather
than child spans: a trace still shows where the time went and why, at a
fraction of the cost of a span.

This module needs only the OpenTelemetry *API*: when the current span is not
recording (tracing off, or the trace not sampled) nothing is measured: the
Check looks the span up once (run.py), not per phase.

A failure that is not a deny records the exception's *type* only: exception
messages from parsing libraries may quote their input, and the input here is
a credential.
"""

from __future__ import annotations

import time

from opentelemetry.trace import Span

from authz.errors import AuthzError

__all__ = ["STEP_PREFIX", "record"]

STEP_PREFIX = "authz."


def record(span: Span, name: str, start_ns: int, exc: BaseException | None) -> None:
    """Add the event of a step that began at ``start_ns`` and ended with ``exc`` (or not)."""
    duration_ms = (time.perf_counter_ns() - start_ns) / 1e6
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
    span.add_event(STEP_PREFIX + name, attributes)
