"""One Check, start to finish: the only module that calls the others.

Phases run in a fixed order, and the phase that fails decides the answer:
route (400 invalid_path, 403 no_route) -> credentials (400/401; skipped on a
public route, optional on an optional one) -> verification (401, or 503
without keys) -> binding (401; only on a route with a ``sender_constraint``:
the DPoP proof or the bound client certificate, binding.py) -> revocation
(401 token_revoked) -> requirements (403) -> identity. Anything unexpected
becomes a 503 deny with reason ``internal_error``; nothing here ever allows by
default.

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
is never turned into an allow, in a dry run or by a shadow route, and neither
is a 431 ``request_too_large`` (Envoy would refuse that allow itself).

A decision is one ``Decision`` (result.py): an allow, or a deny whose status,
reason and detail are its error's. The phases themselves are in phases.py; here they run
in order. ``decide`` can record every phase into a trace for ``authz
explain``: the same code decides for the service and explains for the operator.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from authz.check.binding import Challenge, SenderChecks
from authz.check.header_budget import check_header_budget
from authz.check.identity import headers_to_remove
from authz.check.phases import (
    Refetch,
    TokenVerifier,
    binding,
    check_size,
    credential,
    identity,
    match_route,
    requirements,
    revocation,
    verification,
)
from authz.check.policy import Match, Policy, Route
from authz.check.request import RequestView
from authz.check.result import DRY_RUN, Decision, Unenforced
from authz.check.revocation import RevocationList
from authz.check.run import Memo, Phase, Run, Step
from authz.check.unchecked import Removal, unchecked
from authz.check.verify import VerifiedToken
from authz.config.models import Config
from authz.errors import AuthzError, Forbidden, InternalError, RequestTooLarge

__all__ = [
    "DRY_RUN",
    "Decider",
    "Decision",
    "Refetch",
    "Step",
    "TokenVerifier",
    "Unenforced",
]

log = logging.getLogger(__name__)


class Decider:
    def __init__(
        self,
        config: Config,
        verifier: TokenVerifier,
        revocations: RevocationList | None = None,
        refetch: Refetch | None = None,
        sender: SenderChecks | None = None,
    ) -> None:
        self._config = config
        # The runtime passes its checks (their replay store outlives a reload);
        # built here otherwise, so that no configuration goes without them.
        self._sender = sender if sender is not None else SenderChecks.from_config(config)
        self._binding_header = config.identity.binding_header
        self._verifier = verifier
        self._refetch = refetch
        self.policy = Policy.from_config(config)
        if revocations is None and config.revocation is not None:
            # Never silently without the deny-list the configuration asks for;
            # reading files is the runtime's part (runtime.build_runtime).
            raise ValueError("the configuration names a revocation list: pass it as revocations")
        self._revocations = revocations
        self._namespace = config.identity.namespace
        self._identity_names = self.policy.identity_names
        self._dry_run = config.dry_run
        # Where a request a shadow route takes goes on: the routes after it.
        self._after = {
            route.index: self.policy.after(route) for route in self.policy.routes if route.shadow
        }

    def decide(
        self, request: RequestView, trace: list[Step] | None = None, *, budget: float = math.inf
    ) -> Decision:
        """Decide one request; ``budget`` is how long it may wait (Envoy's deadline)."""
        match: Match | None = None
        memo = Memo()
        run = Run(trace)
        shadows: list[Unenforced] = []
        try:
            with run.phase(Phase.REQUEST):
                check_size(request, self._config)
            with run.phase(Phase.ROUTE) as scope:
                match = match_route(self.policy, request, scope)
            while match.route.shadow:
                shadows.append(self._shadow(request, match.route, memo, trace, budget=budget))
                after = self._after[match.route.index]
                match = None  # a no_route deny from here names no route: a shadow never decides
                with run.phase(Phase.ROUTE) as scope:
                    match = match_route(after, request, scope)
            taken = match.route
            headers = self._evaluate(request, taken, memo, run, budget=budget)
            removal = self._unchecked(request, taken, run)
            # Past Envoy's header limits, Envoy would answer this allow with a 500.
            check_header_budget(request, headers, self._config.envoy)
        except AuthzError as error:
            run.fail(error)  # noted by its phase already, unless raised after them
            # A dry run lifts denies, never a 503: authz could not decide, and an
            # allow then would be failing open on an outage or a bug, which no
            # rehearsal of the rules is meant to do. Nor request_too_large: Envoy
            # would refuse that allow itself (an empty 500), and the record
            # would claim an allow the client never got.
            if self._dry_run and error.status < 500 and not isinstance(error, RequestTooLarge):
                return self._dry_run_allow(request, match, error, run, shadows)
            return self._deny(error, run, match, shadows, self._challenge(match, error, run))
        except Exception as exc:
            log.exception("internal error while deciding")
            run.fail(exc)
            return self._deny(InternalError(f"{type(exc).__name__}"), run, match, shadows)
        run.note(Phase.IDENTITY, "ok", f"{len(headers)} header(s) to set")
        return Decision.allow(
            token=run.token,
            token_fingerprint=run.token_fingerprint,
            headers_to_set=headers,
            headers_to_remove=self._headers_to_remove(request, taken, headers, removal[0]),
            query_to_remove=removal[1],
            route=taken.name,
            mode=taken.mode,
            shadows=tuple(shadows),
            **_proven(run),
        )

    def _evaluate(
        self, request: RequestView, route: Route, memo: Memo, run: Run, *, budget: float
    ) -> tuple[tuple[str, str], ...]:
        """The phases of ``route`` for ``request``, each an event on the Check's span
        (authz.check.steps): the identity headers to set, or the AuthzError that
        denies. ``run`` keeps what a deny reports."""
        with run.phase(Phase.CREDENTIALS) as scope:
            max_bytes = self._config.max_token_bytes
            scheme, token_text = credential(
                request, route, memo, scope, max_bytes, sender=self._sender
            )
        token: VerifiedToken | None = None
        if token_text:
            run.scheme, run.token_text = scheme, token_text
            with run.phase(Phase.TOKEN) as scope:
                token = run.token = verification(
                    self._verifier, self._refetch, token_text, memo=memo, scope=scope, budget=budget
                )
            if route.sender_constraint != "none":
                with run.phase(Phase.BINDING) as scope:  # every request: a proof is for one
                    run.binding = binding(
                        self._sender,
                        request,
                        route,
                        token,
                        scheme=scheme,
                        token_text=token_text,
                        memo=memo,
                        scope=scope,
                    )
            if self._revocations is not None:  # no list configured: no phase, no event
                with run.phase(Phase.REVOCATION) as scope:
                    revocation(self._revocations, token, scope)
            with run.phase(Phase.REQUIREMENTS) as scope:
                requirements(self.policy, route, token, scope)
        with run.phase(Phase.IDENTITY):
            headers = identity(route, token, token_text)
        if self._binding_header is not None and token is not None:
            method = run.binding.method if run.binding is not None else "none"
            headers = (*headers, (self._binding_header, method))
        return headers

    def _shadow(
        self,
        request: RequestView,
        route: Route,
        memo: Memo,
        trace: list[Step] | None,
        *,
        budget: float,
    ) -> Unenforced:
        """What ``route`` would decide; it decides nothing, whatever happens here."""
        run = Run(trace)
        try:
            self._evaluate(request, route, memo, run, budget=budget)
            outcome = Unenforced(route.name, True, 200, "allowed")
        except AuthzError as error:
            run.fail(error)
            outcome = _would_deny(route.name, error)
        except Exception as exc:
            # Reported like any would-be deny; the routes after it still decide
            # (and fail the same way if the fault is theirs too).
            log.exception("internal error while evaluating shadow route %s", route.name)
            run.fail(exc)
            outcome = _would_deny(route.name, InternalError(type(exc).__name__))
        verdict = "allow" if outcome.allowed else f"deny {outcome.status} {outcome.reason}"
        run.note(
            Phase.SHADOW,
            "info",
            f"{route.name} would {verdict}; not enforced: the routes after it decide",
        )
        return outcome

    # --- outcomes ----------------------------------------------------------------------

    def _dry_run_allow(
        self,
        request: RequestView,
        match: Match | None,
        error: AuthzError,
        run: Run,
        shadows: list[Unenforced],
    ) -> Decision:
        taken = match.route if match is not None else None
        token = run.token
        headers: tuple[tuple[str, str], ...] = ()
        # Identity only from a token that verified and is not revoked: a failed
        # requirement does not make the identity less true; anything else does.
        if isinstance(error, Forbidden) and token is not None and taken is not None:
            try:
                headers = identity(taken, token, run.token_text)
                # Past Envoy's header limits this allow would be Envoy's 500.
                check_header_budget(request, headers, self._config.envoy)
            except AuthzError:
                headers = ()
        run.note(Phase.DRY_RUN, "info", f"would deny {error.status} {error.reason}; allowed")
        name = taken.name if taken is not None else ""
        # As for any allow, except that nothing is refused: what can be removed is.
        removal = self._unchecked(request, taken, run, refuse=False)
        return Decision.allow(
            token=token,
            token_fingerprint=run.token_fingerprint,
            headers_to_set=headers,
            headers_to_remove=self._headers_to_remove(request, taken, headers, removal[0]),
            query_to_remove=removal[1],
            route=name,
            mode=taken.mode if taken is not None else "",
            shadows=tuple(shadows),
            dry_run=_would_deny(name, error),
            issuer=error.issuer,
            **_proven(run),
        )

    def _unchecked(
        self, request: RequestView, route: Route | None, run: Run, *, refuse: bool = True
    ) -> Removal:
        """What the allow removes because authz did not check it (unchecked.py)."""
        return unchecked(
            request,
            credential_verified=run.token is not None,
            credentials=route.unverified_credentials if route is not None else "remove",
            method_overrides=self._config.method_overrides,
            refuse=refuse,
        )

    def _headers_to_remove(
        self,
        request: RequestView,
        route: Route | None,
        headers: tuple[tuple[str, str], ...],
        unchecked_headers: tuple[str, ...] = (),
    ) -> tuple[str, ...]:
        plan = route.identity if route is not None else None
        removed = headers_to_remove(
            plan, request.headers, headers, namespace=self._namespace, names=self._identity_names
        )
        if (
            self._sender is not None
            and self._sender.remove_dpop_header
            and "dpop" in request.headers
        ):
            # The proof was for authz; an upstream that logs headers would log it.
            unchecked_headers = (*unchecked_headers, "dpop")
        if not unchecked_headers:
            return removed
        return tuple(sorted(set(removed).union(unchecked_headers)))

    def _challenge(self, match: Match | None, error: AuthzError, run: Run) -> Challenge | None:
        if self._sender is None or match is None:
            return None
        return self._sender.challenge(match.route.sender_constraint, error, run.scheme)

    @staticmethod
    def _deny(
        error: AuthzError,
        run: Run,
        match: Match | None,
        shadows: list[Unenforced],
        challenge: Challenge | None = None,
    ) -> Decision:
        return Decision.deny(
            error,
            # A token that verified (then was revoked or lacked a requirement)
            # names who was denied, for logs and access logs.
            token=run.token,
            token_fingerprint=run.token_fingerprint,
            route=match.route.name if match is not None else "",
            mode=match.route.mode if match is not None else "",
            issuer=error.issuer,
            shadows=tuple(shadows),
            challenge=challenge,
        )


def _would_deny(route: str, error: AuthzError) -> Unenforced:
    return Unenforced(route, False, error.status, error.reason, error.detail)


def _proven(run: Run) -> dict[str, Any]:
    """An allow's record of how its token's sender was proven ("none" for a
    token that needed no proof, or whose proof a dry run let fail; "" without
    a token), and the fresh DPoP-Nonce a proof earned."""
    bound = run.binding
    if run.token is None:
        return {}
    return {
        "binding": "none" if bound is None else bound.method,
        "binding_thumbprint": bound.thumbprint if bound is not None else "",
        "response_headers": (
            (("dpop-nonce", bound.next_nonce),) if bound is not None and bound.next_nonce else ()
        ),
    }
