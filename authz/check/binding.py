"""The binding phase: a sender-constrained token is sent by its holder.

Runs after the token verified, on routes whose ``sender_constraint`` is not
``none`` (config/sender.py). What it accepts, by the scheme the token came
with (credentials.py) and the token's ``cnf``:

- ``Authorization: DPoP`` with a ``cnf.jkt`` token: the request's DPoP proof
  must verify for this request and the token (dpop.py); the proof is checked
  on every request, whether the token's verification came from the cache or
  not, since a proof is for one request only.
- ``Authorization: Bearer`` with a ``cnf["x5t#S256"]`` token: the client
  certificate must be the bound one (certbound.py).
- ``Bearer`` with a ``cnf.jkt`` token: refused (RFC 9449 §7.2), whatever the
  route: presented so, a stolen DPoP-bound token would be a bearer token.
- ``Bearer`` without ``cnf``: only on an ``optional`` route.

The token's issuer must issue that kind of token (``issuers[].issues``). A
route with ``sender_constraint: none`` never reaches this phase: tokens there
are bearer tokens, as they always were.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from authz.check.certbound import CertificateBinding, bound_x5t
from authz.check.credentials import BEARER, DPOP
from authz.check.dpop import DpopProof, DpopVerifier, bound_jkt
from authz.check.replay import ReplayStore, replay_store
from authz.check.request import RequestView
from authz.check.verify import Clock, VerifiedToken
from authz.config.models import Config
from authz.errors import AuthzError, BindingRequired, DpopNonceRequired, InvalidDpopProof
from authz.forms.htu import request_uri

__all__ = ["NO_BINDING", "Binding", "BindingMethod", "Challenge", "SenderChecks"]

# How a request proved it is sent by the token's holder; "none": it did not need to.
BindingMethod = Literal["none", "dpop", "mtls"]
NONE: Final[BindingMethod] = "none"
MTLS: Final[BindingMethod] = "mtls"
_XFCC = "x-forwarded-client-cert"


@dataclass(frozen=True, slots=True)
class Binding:
    """How the request proved it is sent by the token's holder."""

    method: BindingMethod
    # The proof key's RFC 7638 thumbprint (dpop) or the certificate's (mtls).
    thumbprint: str = ""
    # A fresh nonce for a DPoP-Nonce response header, when the proof's expires soon.
    next_nonce: str | None = None


NO_BINDING = Binding(NONE)


@dataclass(frozen=True, slots=True)
class Challenge:
    """Which ``WWW-Authenticate`` challenges a deny carries (response.py).

    ``bearer``: "error" (the Bearer challenge with the deny's error), "bare"
    (realm only: the error is the DPoP challenge's) or "" (the route takes no
    Bearer token). ``dpop``: the DPoP challenge, "" when the route takes none.
    """

    bearer: str = "error"
    dpop: str = ""


class SenderChecks:
    """The DPoP and certificate checks of one configuration; shared by every
    Check thread (the replay store locks for itself; the rest is immutable)."""

    def __init__(
        self,
        *,
        dpop: DpopVerifier | None = None,
        mtls: CertificateBinding | None = None,
        public_origin: str | None = None,
        issues: Mapping[str, frozenset[str]] | None = None,
        remove_dpop_header: bool = True,
    ) -> None:
        self.dpop = dpop
        self.mtls = mtls
        self._origin = public_origin
        self._issues = dict(issues or {})
        self.remove_dpop_header = dpop is not None and remove_dpop_header

    @classmethod
    def from_config(
        cls, config: Config, replay: ReplayStore | None = None, clock: Clock | None = None
    ) -> SenderChecks | None:
        """The checks ``config`` asks for (None without ``dpop`` and ``mtls``);
        ``replay`` is the running store, kept across reloads (runtime.py)."""
        if config.dpop is None and config.mtls is None:
            return None
        dpop = None
        if config.dpop is not None:
            store = replay or replay_store(config.dpop.replay, _base(config))
            dpop = DpopVerifier.from_config(config.dpop, store, base_dir=_base(config), clock=clock)
        return cls(
            dpop=dpop,
            mtls=CertificateBinding.from_config(config.mtls) if config.mtls is not None else None,
            public_origin=config.dpop.public_origin if config.dpop is not None else None,
            issues={issuer.issuer: frozenset(issuer.issues) for issuer in config.issuers},
            remove_dpop_header=config.dpop.remove_header if config.dpop is not None else True,
        )

    def schemes(self, constraint: str) -> tuple[str, ...]:
        """The Authorization schemes a route with ``constraint`` takes."""
        if constraint in (NONE, MTLS) or self.dpop is None:
            return (BEARER,)
        if constraint == DPOP or (constraint == "any" and self.mtls is None):
            return (DPOP,)
        return (BEARER, DPOP)

    def challenge(self, constraint: str, error: AuthzError, scheme: str) -> Challenge | None:
        """The challenges of a deny on a route that takes DPoP; None elsewhere
        (the Bearer challenge alone, as on any route)."""
        schemes = self.schemes(constraint)
        if self.dpop is None or DPOP not in schemes:
            return None
        # A 403 without an RFC 6750 error (no route allows it) has no challenge at all.
        if error.status not in (400, 401) and not (error.status == 403 and error.rfc6750_error):
            return None
        # The error goes in the challenge of the scheme it is about.
        in_dpop = (
            isinstance(error, InvalidDpopProof | DpopNonceRequired)
            or scheme == DPOP
            or BEARER not in schemes
        )
        bearer = "" if BEARER not in schemes else "bare" if in_dpop else "error"
        return Challenge(bearer, self.dpop.challenge(error if in_dpop else None))

    def check(
        self,
        request: RequestView,
        constraint: str,
        scheme: str,
        token_text: str,
        token: VerifiedToken,
        *,
        proofs: dict[str, DpopProof | AuthzError],
    ) -> Binding:
        """How ``token``, sent with ``scheme``, is bound to this request's
        sender; an AuthzError if it is not as ``constraint`` requires.
        ``proofs`` memoizes the proof's check for the Check's other routes:
        a second check would find the proof's jti used, by this very Check."""
        issues = self._issues.get(token.issuer, frozenset((BEARER,)))
        if scheme == DPOP:
            jkt = bound_jkt(token.claims)
            if jkt is None or self.dpop is None:
                raise BindingRequired("token presented with DPoP is not DPoP-bound (no cnf.jkt)")
            if DPOP not in issues:
                raise BindingRequired("the token's issuer does not issue DPoP-bound tokens")
            proof = proofs.get(jkt)
            if proof is None:
                try:
                    proof = self._verify(request, token_text, jkt)
                except AuthzError as error:
                    proof = error
                proofs[jkt] = proof
            if isinstance(proof, AuthzError):
                raise proof
            return Binding("dpop", proof.thumbprint, proof.next_nonce)
        if bound_x5t(token.claims) is not None and constraint != DPOP:
            if self.mtls is None:
                raise BindingRequired("certificate-bound token, and mtls is not configured")
            if MTLS not in issues:
                raise BindingRequired("the token's issuer does not issue certificate-bound tokens")
            thumbprint = self.mtls.check(
                token.claims,
                peer_certificate=request.peer_certificate,
                xfcc=request.header(_XFCC),
            )
            return Binding(MTLS, thumbprint)
        if bound_jkt(token.claims) is not None:
            raise BindingRequired("DPoP-bound token presented as a bearer token")
        if constraint != "optional":
            raise BindingRequired(f"the route requires a {constraint}-bound token")
        if BEARER not in issues:
            raise BindingRequired("the token's issuer does not issue bearer tokens")
        return NO_BINDING

    def _verify(self, request: RequestView, token_text: str, jkt: str) -> DpopProof:
        assert self.dpop is not None  # the caller checked
        uri = request_uri(request.scheme, request.host, request.path_without_query, self._origin)
        return self.dpop.verify(
            request.header("dpop"),
            method=request.method,
            uri=uri,
            access_token=token_text,
            expected_jkt=jkt,
        )


def _base(config: Config) -> Path:
    return config.base_dir
