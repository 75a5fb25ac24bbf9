"""Test doubles for seams of the service: a key source of fixed keys, identity
headers rendered outside a route. They live here, not in the product."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from authz.check.identity import IdentityPlan
from authz.check.revocation import RevocationList
from authz.config.models import Config, IdentityConfig, IssuerConfig
from authz.errors import ConfigError
from authz.keys.sources import IssuerKeys, VerificationKey, combine, load_local_source

__all__ = [
    "MAX_HEADER_VALUE",
    "StaticKeySource",
    "identity_headers",
    "load_issuer_keys",
    "revocations_for",
]

# The default of identity.max_header_bytes.
MAX_HEADER_VALUE = IdentityConfig().max_header_bytes


class StaticKeySource:
    """Keys loaded once from the configuration's files and inline JWKS."""

    def __init__(self, keys: Mapping[str, IssuerKeys]) -> None:
        self._keys = dict(keys)

    @classmethod
    def from_config(cls, config: Config) -> StaticKeySource:
        return cls({issuer.issuer: load_issuer_keys(issuer, config) for issuer in config.issuers})

    def keys_for(self, issuer: str) -> IssuerKeys | None:
        return self._keys.get(issuer)

    def ready(self) -> bool:
        return all(keys.usable for keys in self._keys.values())


def identity_headers(claims: Mapping[str, Any], config: IdentityConfig) -> list[tuple[str, str]]:
    """The global identity headers for ``claims`` (without the payload header)."""
    return IdentityPlan.from_config(config).render(claims)


def revocations_for(config: Config) -> RevocationList | None:
    """The deny-list the configuration names, read as the runtime reads it."""
    if config.revocation is None:
        return None
    return RevocationList(config.resolve(config.revocation.file))


def load_issuer_keys(issuer: IssuerConfig, config: Config) -> IssuerKeys:
    """Every key from the issuer's local sources (files, inline); remote ones are skipped."""
    allowed = frozenset(issuer.algorithms)
    loaded: list[VerificationKey] = []
    for index, source in enumerate(issuer.keys):
        if not source.remote:
            where = f"issuer {issuer.issuer!r} keys[{index}] ({source.describe()})"
            loaded.extend(load_local_source(source, config, where, allowed))
    keys = combine(loaded, f"issuer {issuer.issuer!r}")
    if not keys.usable and not any(source.remote for source in issuer.keys):
        raise ConfigError(
            f"issuer {issuer.issuer!r}: no usable key for algorithms {sorted(allowed)}"
        )
    return keys
