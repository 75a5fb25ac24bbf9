"""One Check, start to finish: the only module that calls the others.

Phases run in a fixed order, and the phase that fails decides the answer:
route (400 invalid_path, 403 no_route) -> credentials (400/401; skipped on a
public route, optional on an optional one) -> verification (401, or 503
without keys) -> revocation (401 token_revoked) -> requirements (403) ->
identity. Anything unexpected becomes a 503 deny with reason
``internal_error``; nothing here ever allows by default.

A route in shadow mode (``shadow: true``) that takes a request is evaluated
completely and reported (``Decision.shadows``: would it allow or deny, and
why), then the request goes on to the routes after it, as if the shadow route
were absent: the routes after it decide, and a request none of them takes is
``no_route``. A rule being rolled out can therefore neither open nor close
anything, and identity headers come only from the route that decides.

A dry run (``dry_run: true`` in the configuration) enforces nothing: a deny
becomes an allow that records the deny it would have been
(``Decision.dry_run``). Identity headers then go upstream only from a token
that verified and is not revoked. An answer of 503 (authz could not decide)
is never turned into an allow, in a dry run or by a shadow route.

``decide`` can record every phase into a trace for ``authz explain``: the
same code decides for the service and explains for the operator.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from authz.check.credentials import bearer
from authz.check.header_budget import check_header_budget
from authz.check.policy import OPTIONAL, PUBLIC, Check, Match, Policy, Route
from authz.check.request import RequestView
from authz.check.revocation import RevocationList
from authz.check.steps import step
from authz.check.verify import VerifiedToken, fingerprint
from authz.config.models import Config
from authz.errors import (
    AuthzError,
    Forbidden,
    InternalError,
    MissingCredentials,
    RequestTooLarge,
    UnknownKey,
)

__all__ = ["DRY_RUN", "Decider", "Decision", "Refetch", "Step", "TokenVerifier", "Unenforced"]

log = logging.getLogger(__name__)

# The reason of a dry run's allow in place of a deny.
DRY_RUN = "dry_run"


@dataclass(frozen=True, slots=True)
class Unenforced:
    """An outcome that was evaluated and reported but did not decide the answer:
    a shadow route's (allow or deny), or the deny a dry run let through."""

    route: str
    allowed: bool
    status: int
    reason: str
    detail: str = ""

    @property
    def would(self) -> str:
        return "allow" if self.allowed else "deny"


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    status: int
    reason: str
    detail: str = ""
    error: AuthzError | None = None
    # The token, once verified; a deny after verification (revoked, 403) keeps it.
    token: VerifiedToken | None = None
    token_fingerprint: str = ""
    headers_to_set: tuple[tuple[str, str], ...] = ()
    headers_to_remove: tuple[str, ...] = ()
    # The route that decided ("" when the configuration has no routes, or none matched).
    route: str = ""
    mode: str = ""
    # What each shadow route that took the request would have decided, in order.
    shadows: tuple[Unenforced, ...] = ()
    # A dry run's allow in place of a deny: the deny it would have been.
    dry_run: Unenforced | None = None
    # The configured issuer the token named, also when it failed to verify
    # ("" when no configured issuer was named): a bounded label.
    issuer: str = ""

    def __post_init__(self) -> None:
        if not self.issuer and self.token is not None:
            object.__setattr__(self, "issuer", self.token.issuer)

    @classmethod
    def deny(cls, error: AuthzError, **context: Any) -> Decision:
        """A deny whose status, reason and detail are ``error``'s; ``context`` sets
        the rest (token, token_fingerprint, route, mode, shadows, issuer)."""
        return cls(
            allowed=False,
            status=error.status,
            reason=error.reason,
            detail=error.detail,
            error=error,
            **context,
        )


@dataclass(frozen=True, slots=True)
class Step:
    """One phase of a decision, as ``authz explain`` prints it."""

    phase: str
    outcome: str  # "ok", "fail", "skip" or "info"
    text: str
    check: Check | None = None


class TokenVerifier(Protocol):
    """What a decision needs from verification (``verify.Verifier``, or a fake)."""

    def verify(self, token: str) -> VerifiedToken: ...


# (issuer, seconds the Check can wait) -> True if keys were fetched anew.
Refetch = Callable[[str, float], Awaitable[bool]]


class Decider:
    def __init__(
        self,
        config: Config,
        verifier: TokenVerifier,
        revocations: RevocationList | None = None,
        refetch: Refetch | None = None,
    ) -> None:
        self._config = config
        self._verifier = verifier
        self._refetch = refetch
        self.policy = Policy.from_config(config)
        if revocations is None and config.revocation is not None:
            # Never silently without the deny-list the configuration asks for.
            revocations = RevocationList(config.resolve(config.revocation.file))
        self._revocations = revocations
        self._namespace = config.identity.namespace
        self._identity_names = self.policy.identity_names
        self._dry_run = config.dry_run
        # Where a request a shadow route takes goes on: the routes after it.
        routes = self.policy.routes
        self._after = {
            route.index: Policy(routes[route.index + 1 :], explicit=True)
            for route in routes
            if route.shadow
        }

    async def decide(
        self, request: RequestView, trace: list[Step] | None = None, *, budget: float = math.inf
    ) -> Decision:
        """Decide one request; ``budget`` is how long it may wait (Envoy's deadline)."""
        match: Match | None = None
        memo = _Memo()
        progress = _Progress()
        shadows: list[Unenforced] = []
        try:
            # Each phase is an event on the Check's span (authz.check.steps).
            with step("extract"):
                self._check_size(request)
                progress.stage = "route"
                match = self._match(self.policy, request, trace)
            while match.route.shadow:
                shadows.append(await self._shadow(request, match.route, memo, trace, budget=budget))
                after, match = self._after[match.route.index], None
                match = self._match(after, request, trace)
            route = match.route
            headers = await self._evaluate(request, route, memo, progress, trace, budget=budget)
            # Past Envoy's header limits, Envoy would answer this allow with a 500.
            check_header_budget(request, headers, self._config.envoy)
        except AuthzError as error:
            if progress.stage != "requirements":  # the requirements step already shows its checks
                _note(trace, progress.stage, "fail", f"{error.reason}: {error.detail}")
            # A dry run lifts denies, never a 503: authz could not decide, and an
            # allow then would be failing open on an outage or a bug, which no
            # rehearsal of the rules is meant to do.
            if self._dry_run and error.status < 500:
                return self._dry_run_allow(
                    request, match, error, progress, shadows=shadows, trace=trace
                )
            return self._deny(error, progress, match, shadows)
        except Exception as exc:
            log.exception("internal error while deciding")
            _note(trace, progress.stage, "fail", f"internal error: {type(exc).__name__}")
            return self._deny(InternalError(f"{type(exc).__name__}"), progress, match, shadows)
        _note(trace, "identity", "ok", f"{len(headers)} header(s) to set")
        return self._allow(request, route, progress, headers, shadows)

    # --- phases ------------------------------------------------------------------------

    def _match(self, policy: Policy, request: RequestView, trace: list[Step] | None) -> Match:
        skipped: list[tuple[Route, str]] | None = [] if trace is not None else None
        try:
            match = policy.match(request, skipped)
        finally:
            for route, condition in skipped or ():
                _note(trace, "route", "skip", f"{route.name}: {condition} does not match")
        if trace is not None:
            name = match.route.name or "(no routes configured: every request is protected)"
            shadow = ", shadow" if match.route.shadow else ""
            params = "".join(f", {k}={v}" for k, v in match.params.items())
            _note(trace, "route", "ok", f"{name}: {match.route.mode}{shadow}{params}")
        return match

    async def _evaluate(
        self,
        request: RequestView,
        route: Route,
        memo: _Memo,
        progress: _Progress,
        trace: list[Step] | None,
        *,
        budget: float,
    ) -> tuple[tuple[str, str], ...]:
        """The phases of ``route`` for ``request``: the identity headers to set, or the
        AuthzError that denies. ``progress`` keeps what a deny reports."""
        progress.stage = "credentials"
        with step("credentials"):
            token_text = progress.token_text = self._credential(request, route, memo, trace)
        token: VerifiedToken | None = None
        if token_text:
            progress.stage = "token"
            with step("verify"):
                token = progress.token = await self._verified(token_text, memo, budget)
            _note(trace, "token", "ok", f"verified: issuer {token.issuer}")
            progress.stage = "revocation"
            with step("policy"):
                self._check_revocation(token, trace)
                progress.stage = "requirements"
                self._authorize(route, token, trace)
        progress.stage = "identity"
        with step("identity"):
            return self._identity(route, token, token_text)

    def _credential(
        self, request: RequestView, route: Route, memo: _Memo, trace: list[Step] | None
    ) -> str:
        """The bearer token, or "" where the route lets the request in without one."""
        if route.mode == PUBLIC:
            _note(trace, "credentials", "skip", "public route: no token examined")
            return ""
        if memo.credential is None:
            try:
                memo.credential = bearer(request, self._config.max_token_bytes)
            except AuthzError as error:
                memo.credential = error
        credential = memo.credential
        if isinstance(credential, MissingCredentials) and route.mode == OPTIONAL:
            _note(trace, "credentials", "skip", f"optional route, no token: {credential.detail}")
            return ""
        if isinstance(credential, AuthzError):
            raise credential
        if trace is not None:  # not worth a hash on the hot path
            _note(
                trace, "credentials", "ok", f"bearer token, fingerprint {fingerprint(credential)}"
            )
        return credential

    async def _verified(self, token_text: str, memo: _Memo, budget: float) -> VerifiedToken:
        # Verification does not depend on the route: a shadow route and the
        # route after it share one, so a shadow rule costs no second signature
        # check and no second key refetch.
        if memo.verified is None:
            try:
                memo.verified = await self._verify(token_text, budget)
            except AuthzError as error:
                memo.verified = error
        if isinstance(memo.verified, AuthzError):
            raise memo.verified
        return memo.verified

    def _check_revocation(self, token: VerifiedToken, trace: list[Step] | None) -> None:
        if self._revocations is None:
            return
        self._revocations.check(token)
        _note(trace, "revocation", "ok", "neither jti nor sub is revoked")

    def _authorize(self, route: Route, token: VerifiedToken, trace: list[Step] | None) -> None:
        check = self.policy.authorize(route, token)
        if check is None:
            return
        if trace is not None:
            trace.append(Step("requirements", "ok" if check.passed else "fail", "", check))
        if not check.passed:
            raise check.error or Forbidden(check.detail)

    def _identity(
        self, route: Route, token: VerifiedToken | None, token_text: str
    ) -> tuple[tuple[str, str], ...]:
        if token is None:
            return ()
        return tuple(route.identity.render(token.claims, token_text))

    async def _shadow(
        self,
        request: RequestView,
        route: Route,
        memo: _Memo,
        trace: list[Step] | None,
        *,
        budget: float,
    ) -> Unenforced:
        """What ``route`` would decide; it decides nothing, whatever happens here."""
        progress = _Progress()
        try:
            await self._evaluate(request, route, memo, progress, trace, budget=budget)
            outcome = Unenforced(route.name, True, 200, "allowed")
        except AuthzError as error:
            if progress.stage != "requirements":
                _note(trace, progress.stage, "fail", f"{error.reason}: {error.detail}")
            outcome = _would_deny(route.name, error)
        except Exception as exc:
            # Reported like any would-be deny; the routes after it still decide
            # (and fail the same way if the fault is theirs too).
            log.exception("internal error while evaluating shadow route %s", route.name)
            _note(trace, progress.stage, "fail", f"internal error: {type(exc).__name__}")
            outcome = _would_deny(route.name, InternalError(type(exc).__name__))
        verdict = "allow" if outcome.allowed else f"deny {outcome.status} {outcome.reason}"
        _note(
            trace,
            "shadow",
            "info",
            f"{route.name} would {verdict}; not enforced: the routes after it decide",
        )
        return outcome

    # --- outcomes ----------------------------------------------------------------------

    def _allow(
        self,
        request: RequestView,
        route: Route,
        progress: _Progress,
        headers: tuple[tuple[str, str], ...],
        shadows: list[Unenforced],
    ) -> Decision:
        return Decision(
            allowed=True,
            status=200,
            reason="allowed",
            token=progress.token,
            token_fingerprint=fingerprint(progress.token_text) if progress.token_text else "",
            headers_to_set=headers,
            headers_to_remove=self._headers_to_remove(request, route, headers),
            route=route.name,
            mode=route.mode,
            shadows=tuple(shadows),
        )

    def _dry_run_allow(
        self,
        request: RequestView,
        match: Match | None,
        error: AuthzError,
        progress: _Progress,
        *,
        shadows: list[Unenforced],
        trace: list[Step] | None,
    ) -> Decision:
        route = match.route if match is not None else None
        token = progress.token
        headers: tuple[tuple[str, str], ...] = ()
        # Identity only from a token that verified and is not revoked: a failed
        # requirement does not make the identity less true; anything else does.
        if isinstance(error, Forbidden) and token is not None and route is not None:
            try:
                headers = self._identity(route, token, progress.token_text)
                # Past Envoy's header limits this allow would be Envoy's 500.
                check_header_budget(request, headers, self._config.envoy)
            except AuthzError:
                headers = ()
        _note(trace, "dry run", "info", f"would deny {error.status} {error.reason}; allowed")
        name = route.name if route is not None else ""
        return Decision(
            allowed=True,
            status=200,
            reason=DRY_RUN,
            token=token,
            token_fingerprint=fingerprint(progress.token_text) if progress.token_text else "",
            headers_to_set=headers,
            headers_to_remove=self._headers_to_remove(request, route, headers),
            route=name,
            mode=route.mode if route is not None else "",
            shadows=tuple(shadows),
            dry_run=_would_deny(name, error),
            issuer=error.issuer,
        )

    def _check_size(self, request: RequestView) -> None:
        count = request.header_count
        if count > self._config.max_request_headers:
            raise RequestTooLarge(
                f"{count} headers; the limit is {self._config.max_request_headers}"
            )
        size = request.header_bytes
        if size > self._config.max_request_header_bytes:
            raise RequestTooLarge(
                f"{size} bytes of headers; the limit is {self._config.max_request_header_bytes}"
            )

    async def _verify(self, token_text: str, budget: float) -> VerifiedToken:
        try:
            return self._verifier.verify(token_text)
        except UnknownKey as error:
            # A key rotated in since the last refresh: one shared, rate-limited
            # refetch, then one more try. Anything else is final.
            if self._refetch is None or not error.issuer:
                raise
            with step("keys"):  # only a refetch is worth an event: lookups are a dict get
                fetched = await self._refetch(error.issuer, budget)
            if not fetched:
                raise
            return self._verifier.verify(token_text)

    def _headers_to_remove(
        self, request: RequestView, route: Route | None, headers: tuple[tuple[str, str], ...]
    ) -> tuple[str, ...]:
        # Remove every client-sent header in the identity namespace, and every
        # configured identity header (in case Envoy's allowed_headers hid the
        # client's copy from us), except those we set: a set header overwrites.
        setting = {name for name, _ in headers}
        names = {name for name in request.headers if name.startswith(self._namespace)}
        names.update(self._identity_names)
        if route is not None and route.identity.strip_authorization:
            names.add("authorization")
        return tuple(sorted(names - setting))

    @staticmethod
    def _deny(
        error: AuthzError, progress: _Progress, match: Match | None, shadows: list[Unenforced]
    ) -> Decision:
        return Decision.deny(
            error,
            # A token that verified (then was revoked or lacked a requirement)
            # names who was denied, for logs and access logs.
            token=progress.token,
            token_fingerprint=fingerprint(progress.token_text) if progress.token_text else "",
            route=match.route.name if match is not None else "",
            mode=match.route.mode if match is not None else "",
            issuer=error.issuer,
            shadows=tuple(shadows),
        )


class _Progress:
    """How far the evaluation of one route got: what its deny reports."""

    __slots__ = ("stage", "token", "token_text")

    def __init__(self) -> None:
        self.stage = "request"
        self.token_text = ""
        self.token: VerifiedToken | None = None


class _Memo:
    """What one Check learns once, for every route it evaluates: the bearer
    credential and the token's verification (an outcome or the error)."""

    __slots__ = ("credential", "verified")

    def __init__(self) -> None:
        self.credential: str | AuthzError | None = None
        self.verified: VerifiedToken | AuthzError | None = None


def _would_deny(route: str, error: AuthzError) -> Unenforced:
    return Unenforced(route, False, error.status, error.reason, error.detail)


def _note(trace: list[Step] | None, phase: str, outcome: str, text: str) -> None:
    if trace is not None:
        trace.append(Step(phase, outcome, text))
