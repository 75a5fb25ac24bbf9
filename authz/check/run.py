"""The bookkeeping of one Check: which phase is under way, and what it noted.

A ``Phase`` names a phase in the code, labels its lines in ``authz explain``
(the member's value: "route", "token", …) and names the span event it is
recorded in (``Phase.event``). Every phase has an event of its own; the names
are the ones traces and dashboards read:

    request      -> extract       token        -> verify
    route        -> route         keys         -> keys (a refetch inside verify)
    credentials  -> credentials   binding      -> binding
    revocation   -> revocation    requirements -> policy
    identity     -> identity

``shadow`` and ``dry run`` are notes, not phases: what was evaluated and not
enforced; they have no event.

``with run.phase(Phase.TOKEN) as scope:`` is the one way a phase runs: it
makes the phase the one under way, records its span event, and notes a deny
or a failure under the phase that raised it; the phase's own lines for
``authz explain`` go through ``scope.note``. Nothing else writes the phase or
the trace, so a phase cannot be half-recorded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Literal

from opentelemetry import trace
from opentelemetry.trace import Span

from authz.check import steps
from authz.check.binding import Binding
from authz.check.credentials import BEARER
from authz.check.dpop import DpopProof
from authz.check.policy import Check, Route
from authz.check.verify import VerifiedToken, fingerprint
from authz.errors import AuthzError

__all__ = ["Memo", "Outcome", "Phase", "PhaseScope", "Run", "Step"]


class Phase(StrEnum):
    REQUEST = "request"  # the request's headers against the configured limits
    ROUTE = "route"  # which route takes the request
    CREDENTIALS = "credentials"  # exactly one bearer token, or none where allowed
    TOKEN = "token"  # noqa: S105 - a phase label, not a secret: the token verified
    KEYS = "keys"  # a refetch of an issuer's keys during verification (span only)
    BINDING = "binding"  # the token's sender: a DPoP proof or the bound certificate
    REVOCATION = "revocation"  # neither jti nor sub on the deny-list
    REQUIREMENTS = "requirements"  # the route's requirements
    IDENTITY = "identity"  # the identity headers for the upstream
    SHADOW = "shadow"  # note: what a shadow route would have decided
    DRY_RUN = "dry run"  # note: the deny a dry run let through

    @property
    def event(self) -> str | None:
        """The span event the phase is recorded in; None for a note."""
        return _EVENTS.get(self)


_EVENTS: dict[Phase, str] = {
    Phase.REQUEST: "extract",
    Phase.ROUTE: "route",
    Phase.CREDENTIALS: "credentials",
    Phase.TOKEN: "verify",
    Phase.KEYS: "keys",
    Phase.BINDING: "binding",
    Phase.REVOCATION: "revocation",
    Phase.REQUIREMENTS: "policy",
    Phase.IDENTITY: "identity",
}


# How a phase (or a note) went, as ``authz explain`` marks its line.
Outcome = Literal["ok", "fail", "skip", "info"]


@dataclass(frozen=True, slots=True)
class Step:
    """One line of a decision's trace, as ``authz explain`` prints it."""

    phase: Phase
    outcome: Outcome
    text: str
    check: Check | None = None
    # A route the request skipped, and the condition it failed ("host", "path" …).
    skipped: Route | None = None
    condition: str = ""


class Run:
    """One route's evaluation: the phase under way and the trace (through
    ``phase`` only), and what a deny reports: the token so far, the scheme it
    came with, its binding. ``decide`` sets those from what the phases return."""

    __slots__ = (
        "_depth",
        "_failed",
        "_phase",
        "_span",
        "binding",
        "scheme",
        "token",
        "token_text",
        "trace",
    )

    def __init__(self, trace_: list[Step] | None) -> None:
        self.trace = trace_
        self._phase = Phase.REQUEST
        self._depth = 0  # phases open: a refetch (keys) runs inside verification
        self._failed = False  # a deny or failure was noted: once, by the innermost phase
        # Looked up once per Check, not per phase: the span does not change.
        span = trace.get_current_span()
        self._span: Span | None = span if span.is_recording() else None
        self.token_text = ""
        self.scheme = BEARER  # the Authorization scheme the token came with
        self.token: VerifiedToken | None = None
        self.binding: Binding | None = None  # None: no token, or not checked

    def phase(self, phase: Phase) -> PhaseScope:
        """Run the enclosed code as ``phase``: its span event, its trace lines."""
        return PhaseScope(self, phase)

    @property
    def current(self) -> Phase:
        """The phase under way, or the last one run."""
        return self._phase

    def note(self, phase: Phase, outcome: Outcome, text: str) -> None:
        """A line of the trace outside any phase: a note (shadow, dry run)."""
        if self.trace is not None:
            self.trace.append(Step(phase, outcome, text))

    def fail(self, exc: BaseException) -> None:
        """Note a deny or a failure under the phase under way, unless a phase did."""
        if self._failed:
            return
        self._failed = True
        if self.trace is None or self._phase is Phase.REQUIREMENTS:
            return  # requirements already show their checks
        if isinstance(exc, AuthzError):
            self.trace.append(Step(self._phase, "fail", f"{exc.reason}: {exc.detail}"))
        else:  # a bug, or a library's surprise: its type, never its message
            self.trace.append(Step(self._phase, "fail", f"internal error: {type(exc).__name__}"))

    @property
    def token_fingerprint(self) -> str:
        if self.token is not None and self.token.fingerprint:
            return self.token.fingerprint  # from verification's digest: no second hash
        return fingerprint(self.token_text) if self.token_text else ""


class PhaseScope:
    """One phase under way (``Run.phase``)."""

    __slots__ = ("_outer", "_phase", "_run", "_start")

    def __init__(self, run: Run, phase: Phase) -> None:
        self._run = run
        self._phase = phase
        self._outer = phase  # the phase this one interrupts: set on entry
        self._start = 0

    def __enter__(self) -> PhaseScope:
        run = self._run
        self._outer = run._phase
        run._phase = self._phase
        run._depth += 1
        if run._span is not None:
            self._start = time.perf_counter_ns()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        run = self._run
        run._depth -= 1
        event = _EVENTS.get(self._phase)
        if run._span is not None and event is not None:
            steps.record(run._span, event, self._start, exc)
        if exc is not None:
            run.fail(exc)
        elif run._depth:
            run._phase = self._outer  # back in the enclosing phase
        # Otherwise the phase stays the last one run: what fails after it (the
        # allow's header budget) is reported there.

    def inner(self, phase: Phase) -> PhaseScope:
        """A phase that runs inside this one (a key refetch inside verification)."""
        return PhaseScope(self._run, phase)

    @property
    def tracing(self) -> bool:
        """True when ``authz explain`` keeps a trace: lines are worth composing."""
        return self._run.trace is not None

    def note(self, outcome: Outcome, text: str, check: Check | None = None) -> None:
        """A line of ``authz explain`` under this phase."""
        trace_ = self._run.trace
        if trace_ is not None:
            trace_.append(Step(self._phase, outcome, text, check))

    def skipped(self, route: Route, condition: str) -> None:
        """A route the request skipped, and the condition it failed."""
        trace_ = self._run.trace
        if trace_ is not None:
            text = f"{route.name}: {condition} does not match"
            trace_.append(Step(self._phase, "skip", text, skipped=route, condition=condition))


class Memo:
    """What one Check learns once, for every route it evaluates: the bearer
    credential (per set of schemes a route takes), the token's verification
    (an outcome or the error) and the DPoP proof's check (by cnf.jkt)."""

    __slots__ = ("credential", "proofs", "verified")

    def __init__(self) -> None:
        self.credential: dict[tuple[str, ...], tuple[str, str] | AuthzError] = {}
        self.verified: VerifiedToken | AuthzError | None = None
        self.proofs: dict[str, DpopProof | AuthzError] = {}
