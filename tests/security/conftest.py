"""One deployment under attack: the real gRPC service, and the same behind real Envoy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from authz.config.loader import load_config
from authz.dev.keys import generate
from authz.dev.stack import Stack
from authz.server import AuthzServer
from tests.security.corpus import AUDIENCE, HMAC_ISSUER, ISSUER, SECRET, Material
from tests.support.harness import Client, LoopThread
from tests.support.idp import FakeIdP


@pytest.fixture(scope="session")
def jku_server() -> Iterator[FakeIdP]:
    """Where attackers point jku/x5u: it must never receive a request."""
    server = FakeIdP().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def material(jku_server: FakeIdP) -> Material:
    return Material(
        rsa=generate("RS256"),  # type: ignore[arg-type]
        ec=generate("ES256"),  # type: ignore[arg-type]
        ed=generate("EdDSA"),  # type: ignore[arg-type]
        attacker=generate("RS256"),  # type: ignore[arg-type]
        jku_url=jku_server.url,
    )


@pytest.fixture(scope="session")
def config_file(material: Material, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("security")
    (directory / "jwks.json").write_text(json.dumps(material.jwks()))
    (directory / "hmac.key").write_bytes(SECRET)
    config = {
        "listen": "127.0.0.1:0",
        "issuers": [
            {
                "issuer": ISSUER,
                "audiences": [AUDIENCE],
                "algorithms": ["RS256", "PS256", "ES256", "EdDSA"],
                "keys": [{"jwks_file": "jwks.json"}],
            },
            {
                "issuer": HMAC_ISSUER,
                "audiences": [AUDIENCE],
                "algorithms": ["HS256"],
                "keys": [{"secret_file": "hmac.key", "kid": "hs-1"}],
            },
        ],
    }
    path = directory / "authz.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def service(config_file: Path) -> Iterator[Client]:
    loop = LoopThread()

    async def start() -> AuthzServer:
        # grpc.aio binds a server to the loop it is created on.
        server = AuthzServer(load_config(config_file))
        await server.start()
        return server

    server = loop.run(start())
    client = Client.connect(server.address)
    yield client
    client.close()
    loop.run(server.stop(0))
    loop.close()


@pytest.fixture(scope="session")
def gateway(config_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("security-stack"), config_file) as stack:
        yield stack
