"""The phases of one Check, and the one vocabulary every view of them uses.

A ``Phase`` names a phase in the code, labels its lines in ``authz explain``
(the member's value: "route", "token", …) and names the span event it is
recorded in (``Phase.event``; ``with Phase.TOKEN.step():`` emits ``authz.verify``).
Span events are coarser than explain's lines, and their names are the ones
traces and dashboards already read:

    request, route           -> extract
    credentials              -> credentials
    token                    -> verify   (a key refetch inside it -> keys)
    binding                  -> binding  (routes with a sender_constraint only)
    revocation, requirements -> policy
    identity                 -> identity

Phases that share an event run inside one ``step``: ``decision.py`` opens it
with the first of them. ``shadow`` and ``dry run`` are notes, not phases: what
was evaluated and not enforced; they have no event of their own.

Each phase is a function that runs it, marks it as the phase under way (so a
deny is reported under the phase that raised it) and notes its own lines in
the trace when there is one; a deny is the AuthzError it raises.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from authz.check import steps
from authz.check.binding import NO_BINDING, Binding, SenderChecks
from authz.check.credentials import BEARER, DPOP, authorization
from authz.check.derived import MISSING
from authz.check.dpop import DpopProof
from authz.check.policy import OPTIONAL, PUBLIC, Check, Match, Policy, Route
from authz.check.request import RequestView
from authz.check.revocation import RevocationList
from authz.check.verify import VerifiedToken, fingerprint
from authz.config.models import Config
from authz.errors import AuthzError, Forbidden, MissingCredentials, RequestTooLarge

__all__ = [
    "Memo",
    "Outcome",
    "Phase",
    "Run",
    "Step",
    "binding",
    "check_size",
    "credential",
    "identity",
    "match_route",
    "requirements",
    "revocation",
]


class Phase(StrEnum):
    REQUEST = "request"  # the request's headers against the configured limits
    ROUTE = "route"  # which route takes the request
    CREDENTIALS = "credentials"  # exactly one bearer token, or none where allowed
    TOKEN = "token"  # noqa: S105 - a phase label, not a secret: the token verified
    BINDING = "binding"  # the token's sender: a DPoP proof or the bound certificate
    KEYS = "keys"  # a refetch of an issuer's keys during verification (span only)
    REVOCATION = "revocation"  # neither jti nor sub on the deny-list
    REQUIREMENTS = "requirements"  # the route's requirements
    IDENTITY = "identity"  # the identity headers for the upstream
    SHADOW = "shadow"  # note: what a shadow route would have decided
    DRY_RUN = "dry run"  # note: the deny a dry run let through

    @property
    def event(self) -> str | None:
        """The span event the phase is recorded in; None for a note."""
        return _EVENTS.get(self)

    def step(self) -> AbstractContextManager[None]:
        """Record the enclosed code as this phase's event on the Check's span."""
        event = _EVENTS.get(self)
        if event is None:
            raise ValueError(f"{self.value!r} is a note, not recorded on the span")
        return steps.step(event)


_EVENTS: dict[Phase, str] = {
    Phase.REQUEST: "extract",
    Phase.ROUTE: "extract",
    Phase.CREDENTIALS: "credentials",
    Phase.TOKEN: "verify",
    Phase.KEYS: "keys",
    Phase.BINDING: "binding",
    Phase.REVOCATION: "policy",
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
    """How far the evaluation of one route got: the phase under way, and the
    token so far (what a deny reports); the trace, if one is kept."""

    __slots__ = ("binding", "phase", "scheme", "token", "token_text", "trace")

    def __init__(self, trace: list[Step] | None) -> None:
        self.trace = trace
        self.phase = Phase.REQUEST
        self.token_text = ""
        self.scheme = BEARER  # the Authorization scheme the token came with
        self.token: VerifiedToken | None = None
        self.binding: Binding | None = None  # None: no token, or not checked

    def note(self, phase: Phase, outcome: Outcome, text: str) -> None:
        if self.trace is not None:
            self.trace.append(Step(phase, outcome, text))

    def denied(self, error: AuthzError) -> None:
        """Note the deny under the phase that raised it."""
        if self.phase is not Phase.REQUIREMENTS:  # that phase already shows its checks
            self.note(self.phase, "fail", f"{error.reason}: {error.detail}")

    def failed(self, exc: Exception) -> None:
        """Note a failure that is not a deny (a bug, or a library's surprise)."""
        self.note(self.phase, "fail", f"internal error: {type(exc).__name__}")

    @property
    def token_fingerprint(self) -> str:
        if self.token is not None and self.token.fingerprint:
            return self.token.fingerprint  # from verification's digest: no second hash
        return fingerprint(self.token_text) if self.token_text else ""


class Memo:
    """What one Check learns once, for every route it evaluates: the bearer
    credential (per set of schemes a route takes), the token's verification
    (an outcome or the error) and the DPoP proof's check (by cnf.jkt)."""

    __slots__ = ("credential", "proofs", "verified")

    def __init__(self) -> None:
        self.credential: dict[tuple[str, ...], tuple[str, str] | AuthzError] = {}
        self.verified: VerifiedToken | AuthzError | None = None
        self.proofs: dict[str, DpopProof | AuthzError] = {}


def check_size(request: RequestView, config: Config, run: Run) -> None:
    run.phase = Phase.REQUEST
    count = request.header_count
    if count > config.max_request_headers:
        raise RequestTooLarge(f"{count} headers; the limit is {config.max_request_headers}")
    size = request.header_bytes
    if size > config.max_request_header_bytes:
        raise RequestTooLarge(
            f"{size} bytes of headers; the limit is {config.max_request_header_bytes}"
        )


def match_route(policy: Policy, request: RequestView, run: Run) -> Match:
    run.phase = Phase.ROUTE
    skipped: list[tuple[Route, str]] | None = [] if run.trace is not None else None
    try:
        match = policy.match(request, skipped)
    finally:
        if run.trace is not None:
            for passed, condition in skipped or ():
                text = f"{passed.name}: {condition} does not match"
                run.trace.append(
                    Step(Phase.ROUTE, "skip", text, skipped=passed, condition=condition)
                )
    if run.trace is not None:
        name = match.route.name or "(no routes configured: every request is protected)"
        shadow = ", shadow" if match.route.shadow else ""
        params = "".join(f", {k}={v}" for k, v in match.params.items())
        run.note(Phase.ROUTE, "ok", f"{name}: {match.route.mode}{shadow}{params}")
    return match


def credential(
    request: RequestView,
    route: Route,
    memo: Memo,
    run: Run,
    max_token_bytes: int,
    *,
    sender: SenderChecks | None = None,
) -> str:
    """The token, or "" where the route lets the request in without one; its
    scheme (Bearer, or DPoP where the route takes it) in ``run.scheme``."""
    run.phase = Phase.CREDENTIALS
    if route.mode == PUBLIC:
        run.note(Phase.CREDENTIALS, "skip", "public route: no token examined")
        return ""
    schemes = (BEARER,) if sender is None else sender.schemes(route.sender_constraint)
    found = memo.credential.get(schemes)
    if found is None:
        try:
            found = authorization(request, max_token_bytes, schemes)
        except AuthzError as error:
            found = error
        memo.credential[schemes] = found
    if isinstance(found, MissingCredentials) and route.mode == OPTIONAL:
        run.note(Phase.CREDENTIALS, "skip", f"optional route, no token: {found.detail}")
        return ""
    if isinstance(found, AuthzError):
        raise found
    run.scheme, token = found
    if run.trace is not None:  # not worth a hash on the hot path
        kind = "DPoP" if run.scheme == DPOP else "bearer"
        run.note(Phase.CREDENTIALS, "ok", f"{kind} token, fingerprint {fingerprint(token)}")
    return token


def binding(
    sender: SenderChecks | None,
    request: RequestView,
    route: Route,
    token: VerifiedToken,
    *,
    memo: Memo,
    run: Run,
) -> Binding:
    """How the token is bound to this request's sender, as the route requires."""
    run.phase = Phase.BINDING
    if sender is None or route.sender_constraint == "none":
        return NO_BINDING
    found = run.binding = sender.check(
        request,
        route.sender_constraint,
        run.scheme,
        run.token_text,
        token,
        proofs=memo.proofs,
    )
    if run.trace is not None:
        how = {"dpop": "DPoP proof, key", "mtls": "client certificate"}.get(found.method)
        text = f"{how} {found.thumbprint}" if how else "unbound token, accepted as a bearer token"
        run.note(Phase.BINDING, "ok", f"{route.sender_constraint}: {text}")
    return found


def revocation(revocations: RevocationList | None, token: VerifiedToken, run: Run) -> None:
    run.phase = Phase.REVOCATION
    if revocations is None:
        return
    revocations.check(token)
    run.note(Phase.REVOCATION, "ok", "neither jti nor sub is revoked")


def requirements(
    policy: Policy,
    route: Route,
    token: VerifiedToken,
    run: Run,
) -> None:
    run.phase = Phase.REQUIREMENTS
    check = token.derived.get(route.index, Phase.REQUIREMENTS)
    if check is MISSING:
        check = policy.authorize(route, token)
        if check is None or check.passed:
            token.derived.put(route.index, Phase.REQUIREMENTS, check)
    if check is None:
        return
    if run.trace is not None:
        run.trace.append(Step(Phase.REQUIREMENTS, "ok" if check.passed else "fail", "", check))
    if not check.passed:
        raise check.error or Forbidden(check.detail)


def identity(
    route: Route,
    token: VerifiedToken | None,
    token_text: str,
    run: Run | None = None,
) -> tuple[tuple[str, str], ...]:
    """The route's identity headers for ``token`` (none without one)."""
    if run is not None:
        run.phase = Phase.IDENTITY
    if token is None:
        return ()
    headers = token.derived.get(route.index, Phase.IDENTITY)
    if headers is MISSING:
        headers = tuple(route.identity.render(token.claims, token_text))
        token.derived.put(route.index, Phase.IDENTITY, headers)
    return headers  # type: ignore[no-any-return]
