"""Every way a Check can end other than "allow", as data.

::

    class                             status  rfc6750_error        reason
    AuthzError                        403     (none)               denied
    ├── InvalidRequest                400     invalid_request      invalid_request
    │   ├── MultipleCredentials       400     invalid_request      multiple_credentials
    │   ├── InvalidPath               400     invalid_request      invalid_path
    │   ├── InvalidHost               400     invalid_request      invalid_host
    │   └── RequestTooLarge           431     invalid_request      request_too_large
    ├── Unauthenticated               401     (none)               unauthenticated
    │   ├── MissingCredentials        401     (none, RFC 6750 §3.1) missing_token
    │   ├── InvalidToken              401     invalid_token        invalid_token
    │   │   ├── TokenMalformed                                     token_malformed
    │   │   ├── TokenTooLarge                                      token_too_large
    │   │   ├── UnknownIssuer                                      unknown_issuer
    │   │   ├── UnknownKey                                         unknown_key
    │   │   ├── AlgorithmNotAllowed                                algorithm_not_allowed
    │   │   ├── SignatureInvalid                                   signature_invalid
    │   │   ├── TokenExpired                                       token_expired
    │   │   ├── TokenNotYetValid                                   token_not_yet_valid
    │   │   ├── IssuedInFuture                                     issued_in_future
    │   │   ├── AudienceMismatch                                   audience_mismatch
    │   │   ├── MissingClaim                                       missing_claim
    │   │   ├── ClaimInvalid                                       claim_invalid
    │   │   ├── TokenRevoked                                       token_revoked
    │   │   ├── MtlsCertificateMissing                             mtls_certificate_missing
    │   │   ├── MtlsBindingMismatch                                mtls_binding_mismatch
    │   │   └── BindingRequired                                    binding_required
    │   ├── InvalidDpopProof          401     invalid_dpop_proof   dpop_invalid
    │   │   ├── DpopProofMissing                                   dpop_missing
    │   │   ├── DpopProofRepeated                                  dpop_multiple
    │   │   ├── DpopAlgorithmNotAllowed                            dpop_algorithm_not_allowed
    │   │   ├── DpopKeyInvalid                                     dpop_key_invalid
    │   │   ├── DpopSignatureInvalid                               dpop_signature_invalid
    │   │   ├── DpopMethodMismatch                                 dpop_method_mismatch
    │   │   ├── DpopUriMismatch                                    dpop_uri_mismatch
    │   │   ├── DpopStale                                          dpop_stale
    │   │   ├── DpopTokenHashMismatch                              dpop_ath_mismatch
    │   │   ├── DpopBindingMismatch                                dpop_binding_mismatch
    │   │   └── DpopReplayed                                       dpop_replayed
    │   └── DpopNonceRequired         401     use_dpop_nonce       dpop_nonce_required
    ├── Forbidden                     403     insufficient_scope   insufficient_scope
    │   ├── IssuerNotAllowed                                       issuer_not_allowed
    │   ├── RoleMissing                                            role_missing
    │   └── ClaimMismatch                                          claim_mismatch
    ├── NoRoute                       403     (none, no challenge) no_route
    └── Unavailable                   503     (none)               unavailable
        ├── KeysUnavailable                                        keys_unavailable
        ├── AuditUnavailable                                       audit_unavailable
        ├── ReplayStoreUnavailable                                 replay_store_unavailable
        └── InternalError                                          internal_error

The client sees only ``status``, the RFC 6750 code and a generic description;
``reason`` and ``detail`` go to logs, metrics, spans and dynamic metadata.

A request that no route matches is denied 403 without ``insufficient_scope``
and without a challenge: no token could make it acceptable, so inviting a retry
with one would mislead the client.

Sender-constrained tokens (docs/sender-constrained.md): a failed DPoP proof is
answered with a ``DPoP`` challenge (RFC 9449 §7.1), a missing nonce with a
fresh ``DPoP-Nonce`` (§9); a ``detail`` never carries proof, token, key or
certificate bytes.
"""

from __future__ import annotations

__all__ = [
    "AlgorithmNotAllowed",
    "AudienceMismatch",
    "AuditUnavailable",
    "AuthzError",
    "BindingRequired",
    "ClaimInvalid",
    "ClaimMismatch",
    "ConfigError",
    "DpopAlgorithmNotAllowed",
    "DpopBindingMismatch",
    "DpopKeyInvalid",
    "DpopMethodMismatch",
    "DpopNonceRequired",
    "DpopProofMissing",
    "DpopProofRepeated",
    "DpopReplayed",
    "DpopSignatureInvalid",
    "DpopStale",
    "DpopTokenHashMismatch",
    "DpopUriMismatch",
    "Forbidden",
    "InternalError",
    "InvalidDpopProof",
    "InvalidHost",
    "InvalidPath",
    "InvalidRequest",
    "InvalidToken",
    "IssuedInFuture",
    "IssuerNotAllowed",
    "KeysUnavailable",
    "MissingClaim",
    "MissingCredentials",
    "MtlsBindingMismatch",
    "MtlsCertificateMissing",
    "MultipleCredentials",
    "NoRoute",
    "ReplayStoreUnavailable",
    "RequestTooLarge",
    "RoleMissing",
    "SignatureInvalid",
    "TokenExpired",
    "TokenMalformed",
    "TokenNotYetValid",
    "TokenRevoked",
    "TokenTooLarge",
    "Unauthenticated",
    "Unavailable",
    "UnknownIssuer",
    "UnknownKey",
]


class ConfigError(Exception):
    """A configuration or key file is unusable; the message names file, key and problem."""


class AuthzError(Exception):
    """Base of every deny. ``detail`` is for operators only, never for the client."""

    status: int = 403
    rfc6750_error: str | None = None
    reason: str = "denied"
    description: str = "Access denied"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.reason)
        self.detail = detail or self.reason
        # The configured issuer the token named, once verification chose it:
        # a deny for a known issuer is attributed to it in metrics and audit.
        self.issuer = ""


class InvalidRequest(AuthzError):
    status = 400
    rfc6750_error = "invalid_request"
    reason = "invalid_request"
    description = "The request is malformed"


class MultipleCredentials(InvalidRequest):
    reason = "multiple_credentials"
    description = "The request carries more than one credential"


class RequestTooLarge(InvalidRequest):
    status = 431
    reason = "request_too_large"
    description = "The request headers are too large"


class InvalidPath(InvalidRequest):
    # A path authz cannot match safely: not in Envoy's normal form, an encoded
    # "/" or "\\", ";", bad percent-encoding. See paths.py.
    reason = "invalid_path"
    description = "The request path is not acceptable"


class InvalidHost(InvalidRequest):
    # A Host/:authority readers disagree on: userinfo, an empty or non-numeric
    # port, characters no host name has. See hosts.py.
    reason = "invalid_host"
    description = "The request host is not acceptable"


class Unauthenticated(AuthzError):
    status = 401
    reason = "unauthenticated"
    description = "Authentication is required"


class MissingCredentials(Unauthenticated):
    # RFC 6750 §3.1: no error code when the request lacks any authentication.
    reason = "missing_token"
    description = "A bearer token is required"


class InvalidToken(Unauthenticated):
    rfc6750_error = "invalid_token"
    reason = "invalid_token"
    description = "The access token is invalid"


class TokenMalformed(InvalidToken):
    reason = "token_malformed"


class TokenTooLarge(InvalidToken):
    reason = "token_too_large"


class UnknownIssuer(InvalidToken):
    reason = "unknown_issuer"


class UnknownKey(InvalidToken):
    reason = "unknown_key"

    def __init__(self, detail: str = "", issuer: str = "") -> None:
        super().__init__(detail)
        self.issuer = issuer  # also: whose keys may be refetched


class AlgorithmNotAllowed(InvalidToken):
    reason = "algorithm_not_allowed"


class SignatureInvalid(InvalidToken):
    reason = "signature_invalid"


class TokenExpired(InvalidToken):
    reason = "token_expired"
    description = "The access token expired"


class TokenNotYetValid(InvalidToken):
    reason = "token_not_yet_valid"


class IssuedInFuture(InvalidToken):
    reason = "issued_in_future"


class AudienceMismatch(InvalidToken):
    reason = "audience_mismatch"


class MissingClaim(InvalidToken):
    reason = "missing_claim"


class ClaimInvalid(InvalidToken):
    reason = "claim_invalid"


class TokenRevoked(InvalidToken):
    reason = "token_revoked"
    description = "The access token has been revoked"


class MtlsCertificateMissing(InvalidToken):
    # RFC 8705 §3: a certificate-bound token, but no client certificate reached authz.
    reason = "mtls_certificate_missing"
    description = "The access token requires a client certificate"


class MtlsBindingMismatch(InvalidToken):
    # cnf["x5t#S256"] names another certificate than the one the client presented.
    reason = "mtls_binding_mismatch"
    description = "The access token is not bound to the client certificate"


class BindingRequired(InvalidToken):
    # The route needs proof of the sender the token is bound to, and the
    # request cannot give it: an unbound token where a bound one is required,
    # a bound token presented as a plain bearer token (RFC 9449 §7.2), or a
    # kind of token its issuer does not issue (issuers[].issues).
    reason = "binding_required"
    description = "The access token must be presented with proof of its binding"


class InvalidDpopProof(Unauthenticated):
    """A DPoP proof failed a check of RFC 9449 §4.3; subclasses name which."""

    rfc6750_error = "invalid_dpop_proof"
    reason = "dpop_invalid"
    description = "The DPoP proof is invalid"


class DpopProofMissing(InvalidDpopProof):
    reason = "dpop_missing"
    description = "A DPoP proof is required"


class DpopProofRepeated(InvalidDpopProof):
    # Several DPoP header fields (or one holding a list): which to check would
    # be a guess, and a guess is a bypass (RFC 9449 §4.3 step 1).
    reason = "dpop_multiple"


class DpopAlgorithmNotAllowed(InvalidDpopProof):
    reason = "dpop_algorithm_not_allowed"


class DpopKeyInvalid(InvalidDpopProof):
    reason = "dpop_key_invalid"


class DpopSignatureInvalid(InvalidDpopProof):
    reason = "dpop_signature_invalid"


class DpopMethodMismatch(InvalidDpopProof):
    reason = "dpop_method_mismatch"


class DpopUriMismatch(InvalidDpopProof):
    reason = "dpop_uri_mismatch"


class DpopStale(InvalidDpopProof):
    # iat outside the accepted window: too old, or from the future.
    reason = "dpop_stale"


class DpopTokenHashMismatch(InvalidDpopProof):
    # ath is not the hash of the access token presented with the proof.
    reason = "dpop_ath_mismatch"


class DpopBindingMismatch(InvalidDpopProof):
    # The proof's key is not the key the access token is bound to (cnf.jkt).
    reason = "dpop_binding_mismatch"


class DpopReplayed(InvalidDpopProof):
    reason = "dpop_replayed"


class DpopNonceRequired(Unauthenticated):
    """The proof lacks a current server nonce; the client retries with ``nonce``.

    Not an InvalidDpopProof: the answer is a different challenge (RFC 9449 §9),
    and ``nonce`` must reach the client in a ``DPoP-Nonce`` header.
    """

    rfc6750_error = "use_dpop_nonce"
    reason = "dpop_nonce_required"
    description = "Resource server requires nonce in DPoP proof"

    def __init__(self, detail: str = "", nonce: str = "") -> None:
        super().__init__(detail)
        self.nonce = nonce


class Forbidden(AuthzError):
    status = 403
    rfc6750_error = "insufficient_scope"
    reason = "insufficient_scope"
    description = "The access token does not grant access to this resource"

    def __init__(self, detail: str = "", scope: str = "") -> None:
        super().__init__(detail)
        self.scope = scope


class IssuerNotAllowed(Forbidden):
    reason = "issuer_not_allowed"


class RoleMissing(Forbidden):
    reason = "role_missing"


class ClaimMismatch(Forbidden):
    reason = "claim_mismatch"


class NoRoute(AuthzError):
    # Deny by default: the request matched no configured route.
    status = 403
    rfc6750_error = None
    reason = "no_route"
    description = "No rule allows this request"


class Unavailable(AuthzError):
    status = 503
    reason = "unavailable"
    description = "Authorization is temporarily unavailable"


class KeysUnavailable(Unavailable):
    reason = "keys_unavailable"


class AuditUnavailable(Unavailable):
    # audit.on_sink_failure: deny, and the decision's record reached no kernel.
    reason = "audit_unavailable"


class ReplayStoreUnavailable(Unavailable):
    # The store that remembers DPoP proofs could not answer: without it a
    # replayed proof cannot be told from a fresh one.
    reason = "replay_store_unavailable"


class InternalError(Unavailable):
    reason = "internal_error"
