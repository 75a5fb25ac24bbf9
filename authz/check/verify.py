"""The only place a JWT is decoded and checked.

The compact JWS is parsed strictly (jose.py: canonical unpadded base64url, UTF-8
JSON objects without duplicate members or NaN), the issuer is chosen from the
unverified ``iss``, and only that issuer's keys and settings apply. PyJWT's
algorithm objects check the signature; the claims are checked here, because
PyJWT's own claim checks accept inputs we must refuse (numeric strings as
times, ``exp`` of 10^20, UTF-16 JSON, padded signatures).

Every exception raised while verifying, from any library, is converted to our
error tree in ``verify`` and nowhere else.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from jwt.algorithms import Algorithm, get_default_algorithms

from authz.check.cache import CachedToken, VerifiedCache, digest
from authz.check.derived import Derived
from authz.check.jose import FailClosed, b64url_decode, json_object
from authz.config.models import Config, IssuerConfig
from authz.errors import (
    AlgorithmNotAllowed,
    AudienceMismatch,
    AuthzError,
    ClaimInvalid,
    IssuedInFuture,
    KeysUnavailable,
    MissingClaim,
    SignatureInvalid,
    TokenExpired,
    TokenMalformed,
    TokenNotYetValid,
    TokenTooLarge,
    UnknownIssuer,
    UnknownKey,
)
from authz.keys.events import NO_EVENTS, KeyEvents
from authz.keys.sources import KeySource, VerificationKey

__all__ = ["Clock", "SystemClock", "VerifiedToken", "Verifier", "fingerprint"]

# Largest time claim accepted: 9999-12-31T23:59:59Z. Larger values are
# nonsense at best and an overflow lever at worst.
MAX_TIMESTAMP = 253_402_300_799
# Header parameters whose semantics this verifier does not implement; RFC 7515
# §4.1.11 requires rejecting a token that marks any of them critical.
_UNSUPPORTED_HEADER = ("crit", "b64", "zip", "enc")
_ALGORITHMS: Mapping[str, Algorithm] = get_default_algorithms()
_PKCS1V15 = padding.PKCS1v15()
_RSA_PKCS1_HASHES: Mapping[str, hashes.HashAlgorithm] = {
    "RS256": hashes.SHA256(),
    "RS384": hashes.SHA384(),
    "RS512": hashes.SHA512(),
}


class Clock(Protocol):
    def now(self) -> float: ...


class SystemClock:
    def now(self) -> float:
        return time.time()


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    issuer: str
    subject: str | None
    claims: Mapping[str, Any]
    kid: str | None
    algorithm: str
    # What routes derived from this token, kept as long as the token is cached.
    derived: Derived = field(default_factory=Derived, compare=False, repr=False)
    # fingerprint() of the token text, from the one digest verification takes.
    fingerprint: str = field(default="", compare=False)


def fingerprint(token: str) -> str:
    """A stable, non-reversible token identifier for logs (truncated SHA-256)."""
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class _Issuer:
    issuer: str
    audiences: frozenset[str]
    algorithms: frozenset[str]
    leeway: int
    max_lifetime: int | None
    required: tuple[str, ...]

    @classmethod
    def from_config(cls, config: IssuerConfig) -> _Issuer:
        return cls(
            issuer=config.issuer,
            audiences=frozenset(config.audiences),
            algorithms=frozenset(config.algorithms),
            leeway=config.leeway_seconds,
            max_lifetime=config.max_lifetime_seconds,
            required=tuple(config.required_claims),
        )


class Verifier:
    def __init__(
        self,
        config: Config,
        keys: KeySource,
        clock: Clock | None = None,
        events: KeyEvents = NO_EVENTS,
    ) -> None:
        self._events = events
        self._issuers = {issuer.issuer: _Issuer.from_config(issuer) for issuer in config.issuers}
        self._keys = keys
        self._clock = clock or SystemClock()
        self._max_bytes = config.max_token_bytes
        size = config.token_cache_entries
        self._cache: VerifiedCache[VerifiedToken] | None = VerifiedCache(size) if size else None

    def verify(self, token: str) -> VerifiedToken:
        """Verify ``token`` or raise an AuthzError; nothing else ever escapes."""
        with FailClosed("verification", TokenMalformed):
            # The one hash of the token per Check: the cache key and the fingerprint.
            key = digest(token)
            cache = self._cache
            if cache is None:
                return self._verify(token, key)[0]
            cached = cache.get(key)
            if cached is not None:
                if self._still_valid(cached):
                    self._events.token_cache(cached.token.issuer, True)
                    cached.token.derived.keep()  # repeated: worth keeping what routes derive
                    return cached.token
                cache.discard(key)
            verified, used_key, valid_until = self._verify(token, key)
            cache.put(key, CachedToken(verified, valid_until, used_key))
            self._events.token_cache(verified.issuer, False)
            return verified

    def _still_valid(self, cached: CachedToken[VerifiedToken]) -> bool:
        """Unexpired, and verified by a key the issuer still has (same object)."""
        if self._clock.now() >= cached.valid_until:
            return False
        token = cached.token
        keys = self._keys.keys_for(token.issuer)
        if keys is None:
            return False
        if token.kid is not None:
            return keys.by_kid.get(token.kid) is cached.key
        # As _key chose it: the one key (with a kid or without) for the algorithm.
        candidates = [key for key in keys.all() if token.algorithm in key.algorithms]
        return len(candidates) == 1 and candidates[0] is cached.key

    def _verify(
        self, token: str, token_digest: bytes
    ) -> tuple[VerifiedToken, VerificationKey, float]:
        if len(token) > self._max_bytes:
            raise TokenTooLarge(f"token is {len(token)} bytes; the limit is {self._max_bytes}")
        parts = token.split(".")
        if len(parts) != 3:
            kind = "a JWE or nested token" if len(parts) == 5 else "not a compact JWS"
            raise TokenMalformed(f"token has {len(parts)} segments: {kind}")
        header = json_object(b64url_decode(parts[0], "header"), "header")
        payload = json_object(b64url_decode(parts[1], "payload"), "payload")
        signature = b64url_decode(parts[2], "signature")

        for name in _UNSUPPORTED_HEADER:
            if name in header:
                raise TokenMalformed(f"header parameter {name!r} is not supported")
        algorithm = header.get("alg")
        if not isinstance(algorithm, str):
            raise TokenMalformed("header alg is missing or not a string")
        kid = header.get("kid")
        # A kid that is present must be a string: null is not "no kid".
        if "kid" in header and not isinstance(kid, str):
            raise TokenMalformed("header kid is not a string")

        issuer_name = payload.get("iss")
        if issuer_name is None:
            raise MissingClaim("iss claim is missing")
        if not isinstance(issuer_name, str):
            raise ClaimInvalid("iss claim is not a string")
        issuer = self._issuers.get(issuer_name)
        if issuer is None:
            raise UnknownIssuer("iss is not a configured issuer")
        try:
            return self._verify_for(
                issuer,
                token,
                parts,
                header=header,
                payload=payload,
                signature=signature,
                token_digest=token_digest,
            )
        except AuthzError as error:
            error.issuer = issuer.issuer
            raise

    def _verify_for(
        self,
        issuer: _Issuer,
        token: str,
        parts: list[str],
        *,
        header: dict[str, Any],
        payload: dict[str, Any],
        signature: bytes,
        token_digest: bytes,
    ) -> tuple[VerifiedToken, VerificationKey, float]:
        algorithm = header["alg"]
        kid = header.get("kid")
        if algorithm not in issuer.algorithms:
            raise AlgorithmNotAllowed(f"alg {algorithm[:16]!r} is not allowed for this issuer")

        key = self._key(issuer.issuer, kid, algorithm)
        signing_input = token[: len(parts[0]) + 1 + len(parts[1])].encode("ascii")
        if not _signature_ok(algorithm, key.key, signing_input, signature):
            raise SignatureInvalid("signature does not verify")

        expires = self._check_claims(payload, issuer)
        subject = payload.get("sub")
        if subject is not None and not isinstance(subject, str):
            raise ClaimInvalid("sub claim is not a string")
        # RFC 7519 §4.1.7: a string. The revocation list holds strings, so a
        # number would never match "jti:123" and a revoked token would pass.
        if payload.get("jti") is not None and not isinstance(payload["jti"], str):
            raise ClaimInvalid("jti claim is not a string")
        verified = VerifiedToken(
            issuer=issuer.issuer,
            subject=subject,
            claims=payload,
            kid=kid,
            algorithm=algorithm,
            fingerprint=token_digest.hex()[:16],
        )
        return verified, key, expires + issuer.leeway

    def _key(self, issuer: str, kid: str | None, algorithm: str) -> VerificationKey:
        keys = self._keys.keys_for(issuer)
        if keys is None or not keys.usable:
            raise KeysUnavailable("no usable keys for this issuer")
        if kid is not None:
            key = keys.by_kid.get(kid)
            if key is None:
                raise UnknownKey("kid is not among the issuer's keys", issuer=issuer)
        else:
            # Without a kid, only an unambiguous key will do: trying several
            # would multiply the work an attacker can cause per token.
            candidates = [k for k in keys.all() if algorithm in k.algorithms]
            if len(candidates) != 1:
                raise UnknownKey(
                    f"token has no kid and {len(candidates)} keys could verify it", issuer=issuer
                )
            key = candidates[0]
        if algorithm not in key.algorithms:
            raise AlgorithmNotAllowed(f"alg {algorithm} does not fit key {kid!r} ({key.kind})")
        return key

    def _check_claims(self, payload: Mapping[str, Any], issuer: _Issuer) -> float:
        """Check the time and audience claims; return ``exp``."""
        now = self._clock.now()
        leeway = issuer.leeway
        expires = _time_claim(payload, "exp", required=True)
        assert expires is not None
        if now >= expires + leeway:
            raise TokenExpired("token has expired")
        not_before = _time_claim(payload, "nbf", required=False)
        if not_before is not None and now + leeway < not_before:
            raise TokenNotYetValid("token is not valid yet (nbf)")
        issued_at = _time_claim(payload, "iat", required=issuer.max_lifetime is not None)
        if issued_at is not None and now + leeway < issued_at:
            raise IssuedInFuture("token was issued in the future (iat)")
        limit = issuer.max_lifetime
        lifetime = expires - issued_at if issued_at is not None else 0.0
        if limit is not None and lifetime > limit:
            raise ClaimInvalid(f"token lifetime exceeds {limit}s")
        _check_audience(payload, issuer.audiences)
        for name in issuer.required:
            if payload.get(name) is None:
                raise MissingClaim(f"required claim {name!r} is missing")
        return expires


def _signature_ok(algorithm: str, key: Any, signing_input: bytes, signature: bytes) -> bool:
    """The signature check. RS256/384/512, the common case, call cryptography
    directly with padding and hash made once; the key type was bound at load
    time. Every other algorithm goes through PyJWT's algorithm object."""
    hash_algorithm = _RSA_PKCS1_HASHES.get(algorithm)
    if hash_algorithm is None:
        return bool(_ALGORITHMS[algorithm].verify(signing_input, key, signature))
    try:
        key.verify(signature, signing_input, _PKCS1V15, hash_algorithm)
    except InvalidSignature:
        return False
    return True


def _time_claim(payload: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    value = payload.get(name)
    if value is None:
        if required:
            raise MissingClaim(f"{name} claim is missing")
        return None
    # bool is an int subclass; "123" is a string. Neither is a NumericDate.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ClaimInvalid(f"{name} claim is not a number")
    # NaN and infinities (Python's json accepts them) fail this range check too.
    if not 0 <= value <= MAX_TIMESTAMP:
        raise ClaimInvalid(f"{name} claim is out of range")
    return float(value)


def _check_audience(payload: Mapping[str, Any], accepted: frozenset[str]) -> None:
    audience = payload.get("aud")
    if audience is None:
        raise MissingClaim("aud claim is missing")
    if isinstance(audience, str):
        audiences = [audience]
    elif isinstance(audience, list) and audience and all(isinstance(a, str) for a in audience):
        audiences = audience
    else:
        raise ClaimInvalid("aud claim is not a string or a non-empty array of strings")
    if accepted.isdisjoint(audiences):
        raise AudienceMismatch("aud does not name this service")
