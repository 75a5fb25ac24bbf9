"""Real Envoy in front of the real authz service and a real upstream, on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from authz.dev.keys import PrivateKey, load_private, write_keypair
from authz.dev.stack import Stack
from authz.dev.tokens import claims_for, mint

ISSUER = "https://idp.e2e.test"
AUDIENCE = "orders-api"
KID = "e2e-1"

CONFIG = f"""\
listen: 127.0.0.1:0
issuers:
  - issuer: {ISSUER}
    audiences: [{AUDIENCE}]
    algorithms: [RS256]
    leeway_seconds: 5
    keys:
      - jwks_file: keys/jwks.json
"""


@dataclass(frozen=True)
class Keys:
    private: PrivateKey
    config: Path

    def claims(self, **overrides: Any) -> dict[str, Any]:
        claims = claims_for("alice", ISSUER, AUDIENCE, scopes="orders:read", ttl=300)
        claims.update(overrides)
        return claims

    def token(self, kid: str | None = KID, **overrides: Any) -> str:
        return mint(self.private, "RS256", self.claims(**overrides), kid)


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    workdir = tmp_path_factory.mktemp("e2e-keys")
    private_path, _ = write_keypair(workdir / "keys", "RS256", KID)
    config = workdir / "authz.yaml"
    config.write_text(CONFIG)
    return Keys(private=load_private(private_path), config=config)


@pytest.fixture(scope="session")
def stack(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("e2e-stack"), keys.config) as running:
        yield running


@pytest.fixture
def bearer(keys: Keys) -> Callable[..., dict[str, str]]:
    def headers(token: str | None = None, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or keys.token()}", **extra}

    return headers
