"""Minting signed tokens for development and tests."""

from __future__ import annotations

import time
from typing import Any

import jwt

from authz.dev.keys import PrivateKey

__all__ = ["claims_for", "mint"]


def claims_for(
    subject: str,
    issuer: str,
    audience: str | list[str],
    *,
    scopes: str = "",
    ttl: int = 300,
    not_before_in: int | None = None,
    now: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "iat": issued,
        "exp": issued + ttl,
    }
    if scopes:
        claims["scope"] = scopes
    if not_before_in is not None:
        claims["nbf"] = issued + not_before_in
    claims.update(extra)
    return claims


def mint(
    key: PrivateKey | bytes, algorithm: str, claims: dict[str, Any], kid: str | None = None
) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)
