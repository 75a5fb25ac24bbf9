"""When a replica is ready to serve: which issuers must have usable keys.

``readiness`` in the configuration: ``any`` (the default) reports SERVING once
any issuer has usable keys, ``all`` once every issuer has, a list once each
issuer listed has. In a mesh ``any`` keeps capacity through one identity
provider's outage (or one mistyped discovery URL): new replicas still become
ready and serve the other issuers' tokens, while that issuer's tokens get 503
``keys_unavailable`` as they do on every replica without its keys. Per-issuer
readiness is a metric either way (``authz_issuer_ready``), so no outage hides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from authz.keys.sources import FetchingKeySource, KeySource

__all__ = ["Readiness", "issuers_ready", "ready"]

Readiness = Literal["any", "all"] | Sequence[str]


def issuers_ready(keys: KeySource, issuers: Sequence[str]) -> dict[str, bool]:
    """issuer -> whether it has usable keys now."""
    if isinstance(keys, FetchingKeySource):
        return {status.issuer: status.usable for status in keys.status()}
    # A source without per-issuer status (fixed keys, a test's fake) answers for all.
    usable = keys.ready()
    return dict.fromkeys(issuers, usable)


def ready(readiness: Readiness, per_issuer: Mapping[str, bool]) -> bool:
    if readiness == "any":
        return any(per_issuer.values())
    if readiness == "all":
        return bool(per_issuer) and all(per_issuer.values())
    return all(per_issuer.get(issuer, False) for issuer in readiness)
