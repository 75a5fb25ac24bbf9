"""Verification keys per issuer, each bound to the algorithms it may verify.

A key is usable only for algorithms that both the issuer's configuration allows
and the key's type supports (RSA: RS*/PS*, EC by curve: ES256/384/512,
Ed25519/Ed448: EdDSA, a secret: HS*). A JWK ``alg`` narrows that further. This
binding is what defeats algorithm confusion (e.g. HS256 keyed with an RSA
public key): the token's ``alg`` picks nothing, it is only checked against it.

A bad key inside a JWKS is skipped with a logged reason; an issuer left with no
usable key is a configuration error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from authz.config.models import Config, KeySourceConfig
from authz.errors import ConfigError

__all__ = [
    "FetchingKeySource",
    "IssuerKeys",
    "IssuerStatus",
    "KeySource",
    "ManagedKeySource",
    "VerificationKey",
    "combine",
    "compatible_algorithms",
    "keys_from_jwks",
    "load_local_source",
]

log = logging.getLogger(__name__)

MIN_RSA_BITS = 2048
MIN_HMAC_BYTES = 32
_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALGS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_HMAC_ALGS = frozenset({"HS256", "HS384", "HS512"})
# JWK members that only a private key has; a verifier must never hold one.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth"})

PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)


@dataclass(frozen=True)
class VerificationKey:
    kid: str | None
    kind: str  # "RSA-2048", "EC-secp256r1", "Ed25519", "oct": for messages
    algorithms: frozenset[str]
    key: PublicKey | bytes = field(repr=False)


@dataclass(frozen=True)
class IssuerKeys:
    by_kid: Mapping[str, VerificationKey]
    without_kid: tuple[VerificationKey, ...]

    @property
    def usable(self) -> bool:
        return bool(self.by_kid or self.without_kid)

    def all(self) -> tuple[VerificationKey, ...]:
        return (*self.by_kid.values(), *self.without_kid)


class KeySource(Protocol):
    """Where the verifier gets an issuer's current keys (static, refreshed, fake)."""

    def keys_for(self, issuer: str) -> IssuerKeys | None: ...

    def ready(self) -> bool:
        """True once every configured issuer has at least one usable key."""
        ...


@runtime_checkable
class ManagedKeySource(KeySource, Protocol):
    """A key source with background work (refresh, file watching) and refetch."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def add_listener(self, listener: Callable[[], None]) -> None: ...

    async def refetch(self, issuer: str, budget: float) -> bool: ...


@dataclass(frozen=True, slots=True)
class IssuerStatus:
    """What an operator needs to know about one issuer's keys, right now."""

    issuer: str
    key_count: int
    usable: bool
    remote: bool
    seconds_since_success: float | None  # None: never fetched (or no remote source)
    last_error: str | None
    consecutive_failures: int


@runtime_checkable
class FetchingKeySource(ManagedKeySource, Protocol):
    """A managed key source that fetches every issuer's remote keys on demand and
    reports on each issuer: what a reload waits for before it swaps a new source
    in, and what ``check-config`` and ``explain`` run."""

    async def fetch_all(self) -> dict[str, bool]:
        """Fetch every remote source once, now; issuer -> whether it succeeded."""
        ...

    def status(self) -> list[IssuerStatus]: ...


def compatible_algorithms(key: PublicKey | bytes) -> tuple[str, frozenset[str]]:
    """The key's kind and every algorithm its type can verify; ValueError if too weak."""
    if isinstance(key, bytes):
        if len(key) < MIN_HMAC_BYTES:
            raise ValueError(f"HMAC secret is {len(key)} bytes; at least {MIN_HMAC_BYTES} needed")
        return "oct", _HMAC_ALGS
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA key is {key.key_size} bits; at least {MIN_RSA_BITS} needed")
        return f"RSA-{key.key_size}", _RSA_ALGS
    if isinstance(key, ec.EllipticCurvePublicKey):
        alg = _EC_ALGS.get(key.curve.name)
        if alg is None:
            raise ValueError(f"EC curve {key.curve.name} is not supported")
        return f"EC-{key.curve.name}", frozenset({alg})
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", frozenset({"EdDSA"})
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", frozenset({"EdDSA"})
    raise ValueError(f"unsupported key type {type(key).__name__}")


def combine(keys: Iterable[VerificationKey], where: str) -> IssuerKeys:
    """Index keys by kid; the first of two keys with the same kid wins."""
    by_kid: dict[str, VerificationKey] = {}
    without_kid: list[VerificationKey] = []
    for key in keys:
        if key.kid is None:
            without_kid.append(key)
        elif key.kid in by_kid:
            log.warning("%s: duplicate kid %r skipped", where, key.kid)
        else:
            by_kid[key.kid] = key
    return IssuerKeys(by_kid=by_kid, without_kid=tuple(without_kid))


def load_local_source(
    source: KeySourceConfig, config: Config, where: str, allowed: frozenset[str]
) -> list[VerificationKey]:
    if source.jwks is not None:
        return keys_from_jwks(source.jwks, where, allowed)
    if source.jwks_file is not None:
        return keys_from_jwks(_read_json(config.resolve(source.jwks_file)), where, allowed)
    if source.pem_file is not None:
        path = config.resolve(source.pem_file)
        return [_bind(_read_pem(path), source.kid, None, allowed, f"{where}: {path}")]
    if source.secret_file is None:
        raise ConfigError(f"{where}: not a local key source")
    path = config.resolve(source.secret_file)
    return [_bind(_read_secret(path), source.kid, None, allowed, f"{where}: {path}")]


def _bind(
    key: PublicKey | bytes,
    kid: str | None,
    jwk_alg: str | None,
    allowed: frozenset[str],
    where: str,
) -> VerificationKey:
    try:
        kind, supported = compatible_algorithms(key)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    algorithms = supported & allowed
    if jwk_alg is not None:
        algorithms &= {jwk_alg}
    if not algorithms:
        limit = f" and its alg {jwk_alg!r}" if jwk_alg else ""
        raise ConfigError(
            f"{where}: a {kind} key{limit} cannot verify any of the issuer's algorithms "
            f"{sorted(allowed)}"
        )
    return VerificationKey(kid=kid, kind=kind, algorithms=frozenset(algorithms), key=key)


def keys_from_jwks(document: Any, where: str, allowed: frozenset[str]) -> list[VerificationKey]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ConfigError(f"{where}: a JWKS must be an object with a 'keys' array")
    keys = []
    for index, jwk in enumerate(document["keys"]):
        try:
            keys.append(_key_from_jwk(jwk, f"{where} keys[{index}]", allowed))
        except ConfigError as exc:
            # One bad key must not take the rest of the set down with it.
            log.warning("skipping key: %s", exc)
    return keys


def _key_from_jwk(jwk: Any, where: str, allowed: frozenset[str]) -> VerificationKey:
    if not isinstance(jwk, dict):
        raise ConfigError(f"{where}: a JWK must be an object")
    private = sorted(_PRIVATE_MEMBERS & jwk.keys())
    if private or (jwk.get("kty") != "oct" and "k" in jwk):
        raise ConfigError(
            f"{where}: holds private key members {private or ['k']}; publish public keys only"
        )
    if jwk.get("kty") == "oct":
        raise ConfigError(f"{where}: symmetric keys are accepted only from a secret_file")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise ConfigError(f"{where}: use is {use!r}, not 'sig'")
    kid = jwk.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid):
        raise ConfigError(f"{where}: kid must be a non-empty string")
    alg = jwk.get("alg")
    if alg is not None and not isinstance(alg, str):
        raise ConfigError(f"{where}: alg must be a string")
    try:
        key = PyJWK(jwk).key
    except (PyJWTError, ValueError, TypeError, KeyError, NotImplementedError) as exc:
        # NotImplementedError: PyJWK's answer to e.g. "alg": "none".
        raise ConfigError(f"{where}: not a valid JWK: {type(exc).__name__}: {exc}") from None
    return _bind(key, kid, alg, allowed, where)


def _read_json(path: Any) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None


def _read_pem(path: Any) -> PublicKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if b"PRIVATE KEY" in data:
        raise ConfigError(f"{path}: holds a private key; give the public key only")
    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not a PEM public key: {exc}") from None
    if not isinstance(
        key,
        rsa.RSAPublicKey
        | ec.EllipticCurvePublicKey
        | ed25519.Ed25519PublicKey
        | ed448.Ed448PublicKey,
    ):
        raise ConfigError(f"{path}: unsupported key type {type(key).__name__}")
    return key


def _read_secret(path: Any) -> bytes:
    try:
        data: bytes = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    # A trailing newline from an editor or `echo` is not part of the secret.
    return data.rstrip(b"\r\n")
