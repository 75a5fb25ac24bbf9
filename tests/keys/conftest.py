"""Fixtures for key handling: a test CA, signing keys, a controllable IdP, a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.config.loader import parse_config
from authz.config.models import Config
from authz.dev.keys import PrivateKey, generate, public_jwk
from tests.support.idp import FakeIdP, LoopbackCA


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> LoopbackCA:
    return LoopbackCA.create(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> LoopbackCA:
    return LoopbackCA.create(tmp_path_factory.mktemp("other-ca"), name="someone else's CA")


@pytest.fixture(scope="session")
def signing_keys() -> dict[str, PrivateKey]:
    return {kid: generate("RS256") for kid in ("k1", "k2", "k3")}


def jwks(keys: dict[str, PrivateKey], *kids: str) -> dict[str, Any]:
    return {"keys": [public_jwk(keys[kid], kid, "RS256") for kid in kids]}


@pytest.fixture
def idp(test_ca: LoopbackCA, signing_keys: dict[str, PrivateKey]) -> Iterator[FakeIdP]:
    server = FakeIdP(tls=test_ca).start()
    server.jwks = jwks(signing_keys, "k1")
    yield server
    server.stop()


def issuer_config(
    issuer: str,
    source: str,
    *,
    ca_file: Path | None = None,
    fetch: str = "",
    base_dir: Path | None = None,
) -> Config:
    """A config with one issuer; ``source`` is the YAML of its single key source and
    ``fetch`` YAML flow-mapping items overriding the (fast) test fetch settings."""
    settings: dict[str, Any] = {
        "refresh_seconds": 0.2,
        "refresh_min_seconds": 0.1,
        "retry_initial_seconds": 0.05,
        "connect_timeout_seconds": 1,
        "read_timeout_seconds": 1,
    }
    if ca_file is not None:
        settings["ca_file"] = str(ca_file)
    settings.update(yaml.safe_load("{" + fetch + "}"))
    document = {
        "listen": "127.0.0.1:0",
        "issuers": [
            {
                "issuer": issuer,
                "audiences": ["api"],
                "algorithms": ["RS256"],
                "keys": [yaml.safe_load(source)],
                "fetch": settings,
            }
        ],
    }
    return parse_config(yaml.safe_dump(document), source="test.yaml", base_dir=base_dir)


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` on the event loop until true; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
