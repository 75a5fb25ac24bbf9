"""DPoP proofs (RFC 9449): the request is sent by the holder of the token's key.

``DpopVerifier.verify`` checks one request's proof in the order of RFC 9449
§4.3 (docs/sender-constrained.md maps each step to its test):

1. exactly one ``DPoP`` header value;
2. one well-formed compact JWS, within ``max_proof_bytes`` (jose.py's strict
   parsing);
3. the required header parameters (``typ``, ``alg``, ``jwk``) and claims
   (``jti``, ``htm``, ``htu``, ``iat``; ``ath`` with an access token) present
   and typed;
4. ``typ`` is ``dpop+jwt``;
5. ``alg`` is in the configured allow-list (asymmetric only, so never
   ``none`` or HS*); the algorithm object is picked from the allow-list by
   that name, and the key must be of its type (jwk.py);
6.-7. the ``jwk`` is a public key without private members, and the signature
   verifies with it;
8. ``htm`` is the request method; 9. ``htu`` is the request URI (htu.py);
10. with nonces required, ``nonce`` is a current server nonce (nonce.py),
    else ``DpopNonceRequired`` carries a fresh one;
11. ``iat`` is within the window (``iat_max_age``, ``iat_max_future``);
12. ``ath`` is the access token's hash, and the key's thumbprint is the
    token's ``cnf.jkt``;
and last, the proof is new: its ``jti`` (with ``htu``) is remembered for the
whole window in the replay store (replay.py), so it is accepted once.

Every failure is an AuthzError whose detail names the check, never the proof's
bytes; anything else a library raises becomes InternalError here.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jwt.algorithms import Algorithm, get_default_algorithms

from authz.check.jose import FailClosed, b64url_decode, b64url_encode, json_object
from authz.check.jwk import proof_key
from authz.check.nonce import NonceIssuer
from authz.check.replay import ReplayStore
from authz.check.verify import Clock, SystemClock
from authz.config.sender import DEFAULT_DPOP_ALGORITHMS, DPOP_ALGORITHMS, DpopConfig
from authz.errors import (
    AuthzError,
    ClaimInvalid,
    DpopAlgorithmNotAllowed,
    DpopBindingMismatch,
    DpopMethodMismatch,
    DpopNonceRequired,
    DpopProofMissing,
    DpopProofRepeated,
    DpopReplayed,
    DpopSignatureInvalid,
    DpopStale,
    DpopTokenHashMismatch,
    DpopUriMismatch,
    Forbidden,
    InvalidDpopProof,
)
from authz.forms.htu import normalize_uri

__all__ = [
    "DpopProof",
    "DpopVerifier",
    "access_token_hash",
    "bound_jkt",
    "www_authenticate_dpop",
]

TYP = "dpop+jwt"
MAX_JTI_LENGTH = 256
MAX_NONCE_LENGTH = 256
_MAX_METHOD_LENGTH = 64
# Parameters whose semantics we do not implement (RFC 7515 §4.1.11 says refuse
# a critical one), and key locators other than jwk: the proof's key is its jwk.
_REFUSED_HEADER = ("crit", "b64", "zip", "enc", "jku", "x5u", "x5c", "x5t", "x5t#S256")
_ALGORITHMS: Mapping[str, Algorithm] = get_default_algorithms()
# RFC 6749 §A.7/A.8 (error, error_description): what a quoted value may hold.
_QUOTABLE = frozenset(chr(c) for c in range(0x20, 0x7F)) - {'"', "\\"}


@dataclass(frozen=True, slots=True)
class DpopProof:
    """What a verified proof tells the caller."""

    thumbprint: str  # RFC 7638 SHA-256 of the proof's key, base64url
    jti: str
    algorithm: str
    # With nonces required: a fresh nonce for a DPoP-Nonce response header when
    # the proof's nonce is from the previous step (about to expire), else None.
    next_nonce: str | None = None


@dataclass(frozen=True, slots=True)
class _Parsed:
    """A proof's parts, each present and of its type (steps 1 to 3)."""

    typ: str
    algorithm: str
    jwk: object
    jti: str
    htm: str
    htu: str
    issued_at: float
    ath: str  # "" when no access token came with the proof
    nonce: object
    signing_input: bytes
    signature: bytes


class DpopVerifier:
    """One configuration's DPoP checks; shared by every Check thread (its state
    is the replay store, which locks for itself). ``nonces``: required server
    nonces, issued and checked by that issuer; None: no nonces."""

    def __init__(
        self,
        *,
        replay: ReplayStore,
        algorithms: Iterable[str] = DEFAULT_DPOP_ALGORITHMS,
        iat_max_age: float = 60.0,
        iat_max_future: float = 5.0,
        max_proof_bytes: int = 8192,
        nonces: NonceIssuer | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._algorithms = tuple(dict.fromkeys(algorithms))
        unsupported = [alg for alg in self._algorithms if alg not in DPOP_ALGORITHMS]
        if unsupported or not self._algorithms:
            # Never none, never HS*: the allow-list itself is checked, not trusted.
            raise ValueError(f"not asymmetric signature algorithms: {unsupported or 'none'}")
        self._replay = replay
        self._max_age = iat_max_age
        self._max_future = iat_max_future
        self._max_bytes = max_proof_bytes
        self._nonces = nonces
        self._clock = clock or SystemClock()

    @classmethod
    def from_config(
        cls,
        config: DpopConfig,
        replay: ReplayStore,
        *,
        base_dir: Path = Path(),
        clock: Clock | None = None,
    ) -> DpopVerifier:
        """The verifier a ``dpop`` section describes; ConfigError if the nonce key fails."""
        nonces = None
        if config.nonce.required and config.nonce.key_file is not None:
            path = config.nonce.key_file
            path = path if path.is_absolute() else base_dir / path
            nonces = NonceIssuer.from_file(path, config.nonce.step_seconds)
        return cls(
            replay=replay,
            algorithms=config.algorithms,
            iat_max_age=config.iat_max_age_seconds,
            iat_max_future=config.iat_max_future_seconds,
            max_proof_bytes=config.max_proof_bytes,
            nonces=nonces,
            clock=clock,
        )

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The accepted algorithms, in configured order (a challenge's ``algs``)."""
        return self._algorithms

    def challenge(self, error: AuthzError | None = None, *, realm: str | None = None) -> str:
        """The ``WWW-Authenticate: DPoP`` value for ``error`` (or a plain one)."""
        code = error.rfc6750_error if error is not None else None
        description = error.description if error is not None and code else None
        # RFC 9449 §7.1 takes RFC 6750's scope parameter for insufficient_scope.
        scope = error.scope or None if isinstance(error, Forbidden) else None
        return www_authenticate_dpop(self._algorithms, code, description, realm=realm, scope=scope)

    def verify(
        self,
        values: Sequence[str],
        *,
        method: str,
        uri: str,
        access_token: str | None = None,
        expected_jkt: str | None = None,
    ) -> DpopProof:
        """Check the proof in ``values`` (every DPoP header value of the request)
        for a request of ``method`` to ``uri``; raise an AuthzError if it fails.

        ``access_token``: the token presented with the proof (its ``ath`` is
        then required); ``expected_jkt``: the token's ``cnf.jkt``.
        """
        with FailClosed("DPoP proof check", InvalidDpopProof):
            return self._verify(values, method, uri, access_token, expected_jkt)

    def _verify(
        self,
        values: Sequence[str],
        method: str,
        uri: str,
        access_token: str | None,
        expected_jkt: str | None,
    ) -> DpopProof:
        proof = self._parse(values, with_token=access_token is not None)  # 1.-3.
        # 4. typ.
        if proof.typ != TYP:
            raise InvalidDpopProof(f"proof typ is not {TYP}")
        # 5. alg, from the allow-list only.
        algorithm = proof.algorithm
        if algorithm not in self._algorithms:
            raise DpopAlgorithmNotAllowed("proof alg is not an allowed algorithm")
        # 6.-7. A public key that fits alg, and the signature by it.
        key = proof_key(proof.jwk, algorithm)
        if not _ALGORITHMS[algorithm].verify(proof.signing_input, key.key, proof.signature):
            raise DpopSignatureInvalid("proof signature does not verify with its jwk")
        # 8.-9. htm and htu.
        if proof.htm != method:
            raise DpopMethodMismatch("proof htm is not the request method")
        target = _same_resource(proof.htu, uri)
        now = self._clock.now()
        # 10. The server's nonce.
        next_nonce = self._check_nonce(proof.nonce, now)
        # 11. iat within the window.
        if proof.issued_at < now - self._max_age:
            raise DpopStale(f"proof iat is more than {self._max_age:g}s old")
        if proof.issued_at > now + self._max_future:
            raise DpopStale(f"proof iat is more than {self._max_future:g}s ahead")
        # 12. Bound to the access token, and the token bound to the key.
        if access_token is not None and not _same(proof.ath, access_token_hash(access_token)):
            raise DpopTokenHashMismatch("proof ath is not the access token's hash")
        if expected_jkt is not None and not _same(key.thumbprint, expected_jkt):
            raise DpopBindingMismatch("proof key is not the key the token is bound to (cnf.jkt)")
        # Last, once every other check passed: a proof that failed one is not
        # remembered, so it cannot use up a jti for its rightful sender.
        replay_key = _replay_key(proof.jti, target)
        if not self._replay.first_use(replay_key, self._max_age + self._max_future):
            raise DpopReplayed("proof jti was already used for this URI")
        return DpopProof(key.thumbprint, proof.jti, algorithm, next_nonce)

    def _parse(self, values: Sequence[str], *, with_token: bool) -> _Parsed:
        # 1. One header field, one value: Envoy joins repeated fields with ",",
        # which no compact JWS contains.
        if not values:
            raise DpopProofMissing("no DPoP header")
        if len(values) > 1 or "," in values[0]:
            raise DpopProofRepeated("more than one DPoP header value")
        proof = values[0]
        # 2. One well-formed JWS.
        if len(proof) > self._max_bytes:
            raise InvalidDpopProof(f"proof is {len(proof)} bytes; the limit is {self._max_bytes}")
        parts = proof.split(".")
        if len(parts) != 3:
            raise InvalidDpopProof(f"proof has {len(parts)} segments, not a compact JWS")
        header, claims = _object(parts[0], "proof header"), _object(parts[1], "proof payload")
        signature = b64url_decode(parts[2], "proof signature", InvalidDpopProof)
        # 3. Required parameters and claims, typed.
        for name in _REFUSED_HEADER:
            if name in header:
                raise InvalidDpopProof(f"proof header parameter {name!r} is not accepted")
        if "jwk" not in header:
            raise InvalidDpopProof("proof header jwk is missing")
        issued_at = claims.get("iat")
        if isinstance(issued_at, bool) or not isinstance(issued_at, int | float):
            raise InvalidDpopProof("proof claim iat is missing or not a number")
        return _Parsed(
            typ=_string(header, "typ", 64),
            algorithm=_string(header, "alg", 32),
            jwk=header["jwk"],
            jti=_string(claims, "jti", MAX_JTI_LENGTH),
            htm=_string(claims, "htm", _MAX_METHOD_LENGTH),
            htu=_string(claims, "htu", None),
            issued_at=issued_at,
            ath=_string(claims, "ath", 128) if with_token else "",
            nonce=claims.get("nonce"),
            signing_input=proof[: len(parts[0]) + 1 + len(parts[1])].encode("ascii"),
            signature=signature,
        )

    def _check_nonce(self, nonce: object, now: float) -> str | None:
        nonces = self._nonces
        if nonces is None:
            return None
        if nonce is None:
            raise DpopNonceRequired("proof has no nonce", nonce=nonces.issue(now))
        if not isinstance(nonce, str) or len(nonce) > MAX_NONCE_LENGTH:
            raise InvalidDpopProof("proof claim nonce is not a string")
        if not nonces.valid(nonce, now):
            raise DpopNonceRequired("proof nonce is not a current nonce", nonce=nonces.issue(now))
        return None if nonces.is_current(nonce, now) else nonces.issue(now)


def access_token_hash(access_token: str) -> str:
    """``ath`` (RFC 9449 §4.2): base64url of the SHA-256 of the token's ASCII."""
    return b64url_encode(hashlib.sha256(access_token.encode("ascii", "replace")).digest())


def bound_jkt(claims: Mapping[str, Any]) -> str | None:
    """An access token's ``cnf.jkt`` (RFC 9449 §6.1), None if it has none."""
    confirmation = claims.get("cnf")
    if confirmation is None:
        return None
    if not isinstance(confirmation, dict):
        raise ClaimInvalid("cnf claim is not an object")
    jkt = confirmation.get("jkt")
    if jkt is None:
        return None
    # A SHA-256 thumbprint is 43 base64url characters; anything else binds no key.
    if not isinstance(jkt, str) or len(jkt) != 43:
        raise ClaimInvalid("cnf.jkt is not a SHA-256 JWK thumbprint")
    b64url_decode(jkt, "cnf.jkt", ClaimInvalid)
    return jkt


def www_authenticate_dpop(
    algs: Iterable[str],
    error: str | None = None,
    description: str | None = None,
    *,
    realm: str | None = None,
    scope: str | None = None,
) -> str:
    """A ``WWW-Authenticate`` challenge of the DPoP scheme (RFC 9449 §7.1)::

    DPoP algs="ES256 PS256", error="invalid_dpop_proof", error_description="..."
    """
    params = [] if realm is None else [("realm", realm)]
    params.append(("algs", " ".join(algs)))
    if error is not None:
        params.append(("error", error))
        if description is not None:
            params.append(("error_description", description))
    if scope is not None:
        params.append(("scope", scope))
    for name, value in params:
        if not set(value) <= _QUOTABLE:
            # Our own fixed texts go here; anything else is a bug, not input.
            raise ValueError(f"challenge {name} holds characters a quoted string cannot")
    return "DPoP " + ", ".join(f'{name}="{value}"' for name, value in params)


def _object(segment: str, what: str) -> dict[str, Any]:
    return json_object(b64url_decode(segment, what, InvalidDpopProof), what, InvalidDpopProof)


def _string(obj: Mapping[str, Any], name: str, limit: int | None) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidDpopProof(f"proof {name} is missing or not a non-empty string")
    if limit is not None and len(value) > limit:
        raise InvalidDpopProof(f"proof {name} is longer than {limit} characters")
    return value


def _same_resource(htu: str, uri: str) -> str:
    """The request's URI in normal form, if ``htu`` names it (step 9)."""
    try:
        target = normalize_uri(uri)
    except ValueError as exc:
        raise DpopUriMismatch(f"request URI has no normal form: {exc}") from None
    try:
        named = normalize_uri(htu)
    except ValueError as exc:
        raise DpopUriMismatch(f"proof htu has no normal form: {exc}") from None
    if named != target:
        raise DpopUriMismatch("proof htu is not the request URI")
    return target


def _same(presented: str, expected: str) -> bool:
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


def _replay_key(jti: str, target: str) -> bytes:
    # Length-prefixed: no (jti, URI) pair can spell another's bytes.
    raw = jti.encode("utf-8")
    material = len(raw).to_bytes(4, "big") + raw + target.encode("utf-8")
    return hashlib.sha256(b"authz dpop jti v1\x00" + material).digest()
