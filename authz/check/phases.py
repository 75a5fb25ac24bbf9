"""The phases of one Check, each a function: what it reads, what it returns.

A phase runs inside ``with run.phase(Phase.X) as scope:`` (run.py), which
records it; the function notes its own lines for ``authz explain`` through
``scope`` and returns what it found, or raises the AuthzError that denies.
No phase writes the Check's state: ``decision.py`` keeps what they return.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from authz.check.binding import NO_BINDING, Binding, SenderChecks
from authz.check.credentials import BEARER, DPOP, authorization
from authz.check.derived import MISSING
from authz.check.policy import OPTIONAL, PUBLIC, Match, Policy, Route
from authz.check.request import RequestView
from authz.check.revocation import RevocationList
from authz.check.run import Memo, Phase, PhaseScope
from authz.check.verify import VerifiedToken, fingerprint
from authz.config.models import Config
from authz.errors import AuthzError, Forbidden, MissingCredentials, RequestTooLarge, UnknownKey

__all__ = [
    "Refetch",
    "TokenVerifier",
    "binding",
    "check_size",
    "credential",
    "identity",
    "match_route",
    "requirements",
    "revocation",
    "verification",
]


class TokenVerifier(Protocol):
    """What a decision needs from verification (``verify.Verifier``, or a fake)."""

    def verify(self, token: str) -> VerifiedToken: ...


# (issuer, seconds the Check can wait) -> True if keys were fetched anew. It
# blocks the Check's thread for at most that long (keys.waiting.LoopBridge).
Refetch = Callable[[str, float], bool]


def check_size(request: RequestView, config: Config) -> None:
    count = request.header_count
    if count > config.max_request_headers:
        raise RequestTooLarge(f"{count} headers; the limit is {config.max_request_headers}")
    size = request.header_bytes
    if size > config.max_request_header_bytes:
        raise RequestTooLarge(
            f"{size} bytes of headers; the limit is {config.max_request_header_bytes}"
        )


def match_route(policy: Policy, request: RequestView, scope: PhaseScope) -> Match:
    skipped: list[tuple[Route, str]] | None = [] if scope.tracing else None
    try:
        match = policy.match(request, skipped)
    finally:
        for passed, condition in skipped or ():
            scope.skipped(passed, condition)
    if scope.tracing:
        name = match.route.name or "(no routes configured: every request is protected)"
        shadow = ", shadow" if match.route.shadow else ""
        params = "".join(f", {k}={v}" for k, v in match.params.items())
        scope.note("ok", f"{name}: {match.route.mode}{shadow}{params}")
    return match


def credential(
    request: RequestView,
    route: Route,
    memo: Memo,
    scope: PhaseScope,
    max_token_bytes: int,
    *,
    sender: SenderChecks | None = None,
) -> tuple[str, str]:
    """The token's scheme (Bearer, or DPoP where the route takes it) and the
    token, or ("", "") where the route lets the request in without one."""
    if route.mode == PUBLIC:
        scope.note("skip", "public route: no token examined")
        return "", ""
    schemes = (BEARER,) if sender is None else sender.schemes(route.sender_constraint)
    found = memo.credential.get(schemes)
    if found is None:
        try:
            found = authorization(request, max_token_bytes, schemes)
        except AuthzError as error:
            found = error
        memo.credential[schemes] = found
    if isinstance(found, MissingCredentials) and route.mode == OPTIONAL:
        scope.note("skip", f"optional route, no token: {found.detail}")
        return "", ""
    if isinstance(found, AuthzError):
        raise found
    if scope.tracing:  # not worth a hash on the hot path
        kind = "DPoP" if found[0] == DPOP else "bearer"
        scope.note("ok", f"{kind} token, fingerprint {fingerprint(found[1])}")
    return found


def verification(
    verifier: TokenVerifier,
    refetch: Refetch | None,
    token_text: str,
    *,
    memo: Memo,
    scope: PhaseScope,
    budget: float,
) -> VerifiedToken:
    """The token verified (memo.py: once per Check, whichever routes ask)."""
    # Verification does not depend on the route: a shadow route and the
    # route after it share one, so a shadow rule costs no second signature
    # check and no second key refetch.
    if memo.verified is None:
        try:
            memo.verified = _verify(verifier, refetch, token_text, scope, budget)
        except AuthzError as error:
            memo.verified = error
    if isinstance(memo.verified, AuthzError):
        raise memo.verified
    scope.note("ok", f"verified: issuer {memo.verified.issuer}")
    return memo.verified


def _verify(
    verifier: TokenVerifier,
    refetch: Refetch | None,
    token_text: str,
    scope: PhaseScope,
    budget: float,
) -> VerifiedToken:
    try:
        return verifier.verify(token_text)
    except UnknownKey as error:
        # A key rotated in since the last refresh: one shared, rate-limited
        # refetch, then one more try. Anything else is final.
        if refetch is None or not error.issuer:
            raise
        with scope.inner(Phase.KEYS):  # only a refetch is worth an event: lookups are a dict get
            fetched = refetch(error.issuer, budget)
        if not fetched:
            raise
        return verifier.verify(token_text)


def binding(
    sender: SenderChecks | None,
    request: RequestView,
    route: Route,
    token: VerifiedToken,
    *,
    scheme: str,
    token_text: str,
    memo: Memo,
    scope: PhaseScope,
) -> Binding:
    """How the token is bound to this request's sender, as the route requires."""
    if sender is None or route.sender_constraint == "none":
        return NO_BINDING
    found = sender.check(
        request, route.sender_constraint, scheme, token_text, token, proofs=memo.proofs
    )
    if scope.tracing:
        how = {"dpop": "DPoP proof, key", "mtls": "client certificate"}.get(found.method)
        text = f"{how} {found.thumbprint}" if how else "unbound token, accepted as a bearer token"
        scope.note("ok", f"{route.sender_constraint}: {text}")
    return found


def revocation(revocations: RevocationList, token: VerifiedToken, scope: PhaseScope) -> None:
    revocations.check(token)
    scope.note("ok", "neither jti nor sub is revoked")


def requirements(
    policy: Policy,
    route: Route,
    token: VerifiedToken,
    scope: PhaseScope,
) -> None:
    check = token.derived.get(route.index, Phase.REQUIREMENTS)
    if check is MISSING:
        check = policy.authorize(route, token)
        if check is None or check.passed:
            token.derived.put(route.index, Phase.REQUIREMENTS, check)
    if check is None:
        return
    scope.note("ok" if check.passed else "fail", "", check)
    if not check.passed:
        raise check.error or Forbidden(check.detail)


def identity(
    route: Route,
    token: VerifiedToken | None,
    token_text: str,
) -> tuple[tuple[str, str], ...]:
    """The route's identity headers for ``token`` (none without one)."""
    if token is None:
        return ()
    headers = token.derived.get(route.index, Phase.IDENTITY)
    if headers is MISSING:
        headers = tuple(route.identity.render(token.claims, token_text))
        token.derived.put(route.index, Phase.IDENTITY, headers)
    return headers  # type: ignore[no-any-return]
