"""One Check, start to finish: the only module that calls the others.

Phases run in a fixed order, and the phase that fails decides the answer:
route (400 invalid_path, 403 no_route) -> credentials (400/401; skipped on a
public route, optional on an optional one) -> verification (401, or 503
without keys) -> revocation (401 token_revoked) -> requirements (403) ->
identity. Anything unexpected becomes a 503 deny with reason
``internal_error``; nothing here ever allows by default.

A route in shadow mode turns a deny from its own phases into an allow that
records the deny it would have been (``Decision.shadow_denied``): the rule is
evaluated and reported but not enforced. Identity headers then go upstream
only from a token that verified and is not revoked. An internal error is
never shadowed.

``decide`` can record every phase into a trace for ``authz explain``: the
same code decides for the service and explains for the operator.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from authz.config import Config
from authz.credentials import bearer
from authz.errors import (
    AuthzError,
    Forbidden,
    InternalError,
    MissingCredentials,
    RequestTooLarge,
    UnknownKey,
)
from authz.policy import OPTIONAL, PUBLIC, Check, Match, Policy, Route
from authz.request import RequestView
from authz.revocation import RevocationList
from authz.steps import step
from authz.verify import VerifiedToken, fingerprint

__all__ = ["Decider", "Decision", "Refetch", "Step", "TokenVerifier"]

log = logging.getLogger(__name__)


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
    # Shadow mode: the reason of the deny this allow would have been, else None.
    # ``detail`` then carries that deny's detail.
    shadow_denied: str | None = None
    # The configured issuer the token named, also when it failed to verify
    # ("" when no configured issuer was named): a bounded label.
    issuer: str = ""

    def __post_init__(self) -> None:
        if not self.issuer and self.token is not None:
            object.__setattr__(self, "issuer", self.token.issuer)


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

    async def decide(
        self, request: RequestView, trace: list[Step] | None = None, *, budget: float = math.inf
    ) -> Decision:
        """Decide one request; ``budget`` is how long it may wait (Envoy's deadline)."""
        match: Match | None = None
        token: VerifiedToken | None = None
        token_text = ""
        stage = "request"
        try:
            # Each phase is an event on the Check's span (authz.steps).
            with step("extract"):
                self._check_size(request)
                stage = "route"
                match = self._match(request, trace)
                route = match.route
                stage = "credentials"
                token_text = self._credential(request, route, trace)
            if token_text:
                stage = "token"
                with step("verify"):
                    token = await self._verify(token_text, budget)
                _note(trace, "token", "ok", f"verified: issuer {token.issuer}")
                stage = "revocation"
                with step("policy"):
                    self._check_revocation(token, trace)
                    stage = "requirements"
                    self._authorize(route, token, trace)
            stage = "identity"
            with step("identity"):
                headers = self._identity(route, token, token_text)
        except AuthzError as error:
            if stage != "requirements":  # the requirements step already shows its checks
                _note(trace, stage, "fail", f"{error.reason}: {error.detail}")
            if match is not None and match.route.shadow:
                return self._shadow_allow(
                    request, match.route, token, token_text, error=error, trace=trace
                )
            return self._deny(error, token_text, match, token)
        except Exception as exc:
            log.exception("internal error while deciding")
            _note(trace, stage, "fail", f"internal error: {type(exc).__name__}")
            return self._deny(InternalError(f"{type(exc).__name__}"), token_text, match, token)
        _note(trace, "identity", "ok", f"{len(headers)} header(s) to set")
        return self._allow(request, route, token, token_text, headers=headers)

    # --- phases ------------------------------------------------------------------------

    def _match(self, request: RequestView, trace: list[Step] | None) -> Match:
        skipped: list[tuple[Route, str]] | None = [] if trace is not None else None
        try:
            match = self.policy.match(request, skipped)
        finally:
            for route, condition in skipped or ():
                _note(trace, "route", "skip", f"{route.name}: {condition} does not match")
        if trace is not None:
            name = match.route.name or "(no routes configured: every request is protected)"
            shadow = ", shadow" if match.route.shadow else ""
            params = "".join(f", {k}={v}" for k, v in match.params.items())
            _note(trace, "route", "ok", f"{name}: {match.route.mode}{shadow}{params}")
        return match

    def _credential(self, request: RequestView, route: Route, trace: list[Step] | None) -> str:
        """The bearer token, or "" where the route lets the request in without one."""
        if route.mode == PUBLIC:
            _note(trace, "credentials", "skip", "public route: no token examined")
            return ""
        try:
            token_text = bearer(request, self._config.max_token_bytes)
        except MissingCredentials as missing:
            if route.mode != OPTIONAL:
                raise
            _note(trace, "credentials", "skip", f"optional route, no token: {missing.detail}")
            return ""
        if trace is not None:  # not worth a hash on the hot path
            _note(
                trace, "credentials", "ok", f"bearer token, fingerprint {fingerprint(token_text)}"
            )
        return token_text

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

    # --- outcomes ----------------------------------------------------------------------

    def _allow(
        self,
        request: RequestView,
        route: Route,
        token: VerifiedToken | None,
        token_text: str,
        *,
        headers: tuple[tuple[str, str], ...],
        shadow: AuthzError | None = None,
    ) -> Decision:
        return Decision(
            allowed=True,
            status=200,
            reason="allowed",
            detail=shadow.detail if shadow is not None else "",
            token=token,
            token_fingerprint=fingerprint(token_text) if token_text else "",
            headers_to_set=headers,
            headers_to_remove=self._headers_to_remove(request, route, headers),
            route=route.name,
            mode=route.mode,
            shadow_denied=shadow.reason if shadow is not None else None,
        )

    def _check_size(self, request: RequestView) -> None:
        count = sum(len(values) for values in request.headers.values())
        if count > self._config.max_request_headers:
            raise RequestTooLarge(
                f"{count} headers; the limit is {self._config.max_request_headers}"
            )
        size = sum(
            len(name) + sum(len(value) for value in values)
            for name, values in request.headers.items()
        )
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

    def _shadow_allow(
        self,
        request: RequestView,
        route: Route,
        token: VerifiedToken | None,
        token_text: str,
        *,
        error: AuthzError,
        trace: list[Step] | None,
    ) -> Decision:
        headers: tuple[tuple[str, str], ...] = ()
        # Identity only from a token that verified and is not revoked: a failed
        # requirement does not make the identity less true; anything else does.
        if isinstance(error, Forbidden) and token is not None:
            try:
                headers = self._identity(route, token, token_text)
            except AuthzError:
                headers = ()
        log.info(
            "shadow route=%s would deny status=%d reason=%s detail=%r token_fp=%s",
            route.name,
            error.status,
            error.reason,
            error.detail,
            fingerprint(token_text) if token_text else "-",
        )
        _note(trace, "shadow", "info", f"would deny {error.status} {error.reason}; allowed")
        return self._allow(request, route, token, token_text, headers=headers, shadow=error)

    def _headers_to_remove(
        self, request: RequestView, route: Route, headers: tuple[tuple[str, str], ...]
    ) -> tuple[str, ...]:
        # Remove every client-sent header in the identity namespace, and every
        # configured identity header (in case Envoy's allowed_headers hid the
        # client's copy from us), except those we set: a set header overwrites.
        setting = {name for name, _ in headers}
        names = {name for name in request.headers if name.startswith(self._namespace)}
        names.update(self._identity_names)
        if route.identity.strip_authorization:
            names.add("authorization")
        return tuple(sorted(names - setting))

    @staticmethod
    def _deny(
        error: AuthzError, token_text: str, match: Match | None, token: VerifiedToken | None
    ) -> Decision:
        return Decision(
            allowed=False,
            status=error.status,
            reason=error.reason,
            detail=error.detail,
            error=error,
            # A token that verified (then was revoked or lacked a requirement)
            # names who was denied, for logs and access logs.
            token=token,
            token_fingerprint=fingerprint(token_text) if token_text else "",
            route=match.route.name if match is not None else "",
            mode=match.route.mode if match is not None else "",
            issuer=error.issuer,
        )


def _note(trace: list[Step] | None, phase: str, outcome: str, text: str) -> None:
    if trace is not None:
        trace.append(Step(phase, outcome, text))
