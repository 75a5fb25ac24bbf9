"""What one Check decided: one frozen record, an allow or a deny.

A ``Decision`` is an allow when ``error`` is None, and a deny otherwise: a
deny's status, reason and detail are its error's. Code that logs, counts or
answers a decision reads the same fields whichever way it went; what only an
allow carries (headers to set and remove, query parameters to remove, a dry
run's would-be deny) is empty on a deny, and ``Decision.deny`` cannot be given
any of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from authz.check.binding import BindingMethod, Challenge
from authz.check.policy import Mode
from authz.check.verify import VerifiedToken
from authz.errors import AuthzError

__all__ = ["DRY_RUN", "Decision", "Unenforced"]

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


# Not slotted: on Python 3.11 a slotted frozen dataclass answers an assignment
# with a TypeError from super(), not FrozenInstanceError.
@dataclass(frozen=True, kw_only=True)
class Decision:
    # None: an allow. Otherwise the deny's status, reason and detail.
    error: AuthzError | None = None
    # The token, once verified; a deny after verification (revoked, 403) keeps it.
    token: VerifiedToken | None = None
    token_fingerprint: str = ""
    # The route that decided ("" when the configuration has no routes, or none matched).
    route: str = ""
    mode: Mode | Literal[""] = ""
    # What each shadow route that took the request would have decided, in order.
    shadows: tuple[Unenforced, ...] = ()
    # The configured issuer the token named, also when it failed to verify
    # ("" when no configured issuer was named): a bounded label.
    issuer: str = ""
    # An allow's changes to the request.
    headers_to_set: tuple[tuple[str, str], ...] = ()
    headers_to_remove: tuple[str, ...] = ()
    # Query parameters Envoy removes (by name as written): what authz did not check.
    query_to_remove: tuple[str, ...] = ()
    # A dry run's allow in place of a deny: the deny it would have been.
    dry_run: Unenforced | None = None
    # How the token was bound to its sender ("none", "dpop", "mtls"; "" when
    # no token was checked for it) and, for dpop and mtls, the key's or the
    # certificate's thumbprint (never the proof).
    binding: BindingMethod | Literal[""] = ""
    binding_thumbprint: str = ""
    # An allow's headers for the client's response (a fresh DPoP-Nonce).
    response_headers: tuple[tuple[str, str], ...] = ()
    # A deny's challenges where the route takes DPoP; None: Bearer alone.
    challenge: Challenge | None = None

    def __post_init__(self) -> None:
        if not self.issuer and self.token is not None:
            object.__setattr__(self, "issuer", self.token.issuer)

    @classmethod
    def allow(cls, **fields: Any) -> Decision:
        return cls(**fields)

    @classmethod
    def deny(
        cls,
        error: AuthzError,
        *,
        token: VerifiedToken | None = None,
        token_fingerprint: str = "",
        route: str = "",
        mode: Mode | Literal[""] = "",
        shadows: tuple[Unenforced, ...] = (),
        issuer: str = "",
        challenge: Challenge | None = None,
    ) -> Decision:
        return cls(
            challenge=challenge,
            error=error,
            token=token,
            token_fingerprint=token_fingerprint,
            route=route,
            mode=mode,
            shadows=shadows,
            issuer=issuer,
        )

    @property
    def allowed(self) -> bool:
        return self.error is None

    @property
    def status(self) -> int:
        return 200 if self.error is None else self.error.status

    @property
    def reason(self) -> str:
        if self.error is not None:
            return self.error.reason
        return "allowed" if self.dry_run is None else DRY_RUN

    @property
    def detail(self) -> str:
        return "" if self.error is None else self.error.detail
