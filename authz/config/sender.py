"""Sender-constrained tokens in the configuration: the ``dpop`` and ``mtls``
sections, and what an issuer's tokens may be bound to. The checks that need
the whole file are the loader's (``loader.sender_problems``).

A route's ``sender_constraint`` (rules.py) says what a token must prove on it:

- ``none``: nothing; the token is used as a bearer token (as before).
- ``optional``: a token bound to a key or certificate (``cnf``) must come with
  proof of it; an unbound token is accepted as a bearer token.
- ``dpop`` / ``mtls``: the token must be bound by that scheme, and proven.
- ``any``: the token must be bound by a configured scheme, and proven.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, get_args
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from authz.config.base import Model, PathModel
from authz.forms.htu import normalize_origin

__all__ = [
    "DEFAULT_DPOP_ALGORITHMS",
    "DPOP_ALGORITHMS",
    "DpopConfig",
    "MemoryReplayConfig",
    "MtlsConfig",
    "NonceConfig",
    "RedisReplayConfig",
    "ReplayConfig",
    "SenderConstraint",
    "TokenKind",
]

# Asymmetric signature algorithms only (RFC 9449 §4.3 step 5): never "none",
# never HS*, whose key would have to be shared with every client.
DpopAlgorithm = Literal[
    "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512", "EdDSA"
]
DPOP_ALGORITHMS: tuple[str, ...] = get_args(DpopAlgorithm)
DEFAULT_DPOP_ALGORITHMS: tuple[DpopAlgorithm, ...] = ("ES256", "PS256", "RS256", "EdDSA", "ES384")
SenderConstraint = Literal["none", "optional", "dpop", "mtls", "any"]
# What an issuer's tokens may be: unbound, bound to a DPoP key (cnf.jkt), or
# bound to a client certificate (cnf["x5t#S256"]).
TokenKind = Literal["bearer", "dpop", "mtls"]


class MemoryReplayConfig(Model):
    """Each replica remembers the proofs it accepted: enough for one replica, or
    for replicas behind a load balancer that keeps a client on one of them."""

    store: Literal["memory"] = "memory"
    # Proofs remembered at once; at least the peak proofs per second times the
    # iat window. Full of live entries, the store refuses new proofs (503)
    # rather than forget one that could be replayed.
    max_entries: int = Field(default=100_000, ge=1, le=10_000_000)


class RedisReplayConfig(PathModel):
    """Every replica remembers in one Redis: a proof accepted by one replica is
    a replay to all of them."""

    PATH_KEYS = ("password_file",)

    store: Literal["redis"]
    # redis://HOST:PORT/DB, rediss:// (TLS) or unix:///PATH; a password only
    # from password_file, so that it never sits in this file or its errors.
    url: str = Field(min_length=1, max_length=2048)
    password_file: Path | None = None
    # The longest one Check waits on Redis: half for connecting, half for the answer.
    timeout_seconds: float = Field(default=0.1, gt=0, le=5)
    # Redis unreachable or too slow: deny with 503 (fail_closed), or accept the
    # proof unremembered (fail_open: replays go unnoticed meanwhile).
    on_failure: Literal["fail_closed", "fail_open"] = "fail_closed"
    key_prefix: str = Field(default="authz:dpop:", max_length=128)
    max_connections: int = Field(default=64, ge=1, le=10_000)

    # A model validator, not a field validator: its error is not echoed with
    # the URL as input, which could hold a password.
    @model_validator(mode="after")
    def _redis_url(self) -> RedisReplayConfig:
        parts = urlsplit(self.url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("url: expected a redis://, rediss:// or unix:// URL")
        if parts.password is not None:
            raise ValueError("url: put the password in password_file, not in the URL")
        if parts.scheme == "unix" and not parts.path:
            raise ValueError("url: unix:// needs a socket path, e.g. unix:///run/redis/redis.sock")
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("url: give a host, e.g. redis://redis:6379/0")
        return self


ReplayConfig = Annotated[MemoryReplayConfig | RedisReplayConfig, Field(discriminator="store")]


class NonceConfig(PathModel):
    """Server nonces (RFC 9449 §9): a proof must carry one the server issued
    lately, so a proof made in advance (by malware on the client) expires."""

    PATH_KEYS = ("key_file",)

    required: bool = False
    # At least 32 random bytes, the same file on every replica.
    key_file: Path | None = None
    # A nonce is accepted during the step it was issued in and the next one.
    step_seconds: int = Field(default=120, ge=10, le=3600)

    @model_validator(mode="after")
    def _key_when_required(self) -> NonceConfig:
        if self.required and self.key_file is None:
            raise ValueError("required nonces need a key_file (32+ random bytes, on every replica)")
        return self


class DpopConfig(Model):
    algorithms: Annotated[list[DpopAlgorithm], Field(min_length=1)] = Field(
        default_factory=lambda: list(DEFAULT_DPOP_ALGORITHMS)
    )
    # A proof's iat may be this far in the past, or in the future (clock skew).
    iat_max_age_seconds: int = Field(default=60, ge=1, le=600)
    iat_max_future_seconds: int = Field(default=5, ge=0, le=60)
    max_proof_bytes: int = Field(default=8192, ge=512, le=65_536)
    replay: ReplayConfig = Field(default_factory=MemoryReplayConfig)
    nonce: NonceConfig = Field(default_factory=NonceConfig)
    # The URI clients address (https://api.example.com), when it is not what
    # Envoy sees: TLS ended in front of Envoy, or a rewritten Host.
    public_origin: str | None = None
    # Remove the DPoP header before the upstream on an allow: the proof was
    # for authz, and an upstream that logs headers would log it.
    remove_header: bool = True

    @field_validator("algorithms")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(value) != len(set(value)):
            raise ValueError("an algorithm is listed twice")
        return value

    @field_validator("public_origin")
    @classmethod
    def _origin(cls, value: str | None) -> str | None:
        return None if value is None else normalize_origin(value)


class MtlsConfig(Model):
    """Where the client certificate of a certificate-bound token comes from.

    ``peer``: the TLS connection Envoy terminated (``include_peer_certificate``
    on in the ext_authz filter). ``xfcc``: the ``x-forwarded-client-cert``
    header set by a proxy in front that ended TLS; only when that proxy removes
    the header clients send (Envoy: ``forward_client_cert_details: SANITIZE_SET``),
    or any client could name any certificate.
    """

    certificate_source: Literal["peer", "xfcc"] = "peer"
