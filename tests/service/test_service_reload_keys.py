"""A reload keeps the running key store, or brings a new one only once it holds keys."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from authz.dev.keys import generate, public_jwk
from authz.runtime import ConfigFile
from authz.server import AuthzServer
from tests.support.harness import LoopThread


def _config(path: Path, jwks: Path, extra_issuers: list[dict[str, object]]) -> None:
    issuers: list[dict[str, object]] = [
        {
            "issuer": "https://idp.reload.test",
            "audiences": ["api"],
            "algorithms": ["RS256"],
            "keys": [{"jwks_file": str(jwks)}],
        },
        *extra_issuers,
    ]
    # Polled by the test, with no settle time: a file is taken at the second poll.
    data = {"listen": "127.0.0.1:0", "watch_interval_seconds": 0, "issuers": issuers}
    _publish(path, yaml.safe_dump(data))


def _publish(path: Path, text: str) -> None:
    """Replace the file whole, by an atomic rename: a reload takes it at the second
    poll that finds it unchanged (interval 0: no settle time)."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(text)
    os.replace(temporary, path)


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture
def jwks(tmp_path: Path) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [public_jwk(generate("RS256"), "k1", "RS256")]}))
    return path


def _server(loop: LoopThread, path: Path) -> AuthzServer:
    async def start() -> AuthzServer:
        config_file = ConfigFile(path)
        server = AuthzServer(config_file.config, config_file=config_file)
        await server.start()
        return server

    return loop.run(start())


def test_a_reload_with_the_same_issuers_keeps_the_key_store(
    loop: LoopThread, tmp_path: Path, jwks: Path
) -> None:
    path = tmp_path / "authz.yaml"
    _config(path, jwks, [])
    server = _server(loop, path)
    try:
        keys = server.runtime.keys
        text = path.read_text().replace("listen:", "token_cache_entries: 5\nlisten:")
        _publish(path, text)
        loop.run(server.poll_files())
        loop.run(server.poll_files())
        assert server.reload_status.reloads == 1
        assert server.config.token_cache_entries == 5
        assert server.runtime.keys is keys
    finally:
        loop.run(server.stop(0))


def test_a_new_issuer_without_keys_keeps_the_running_configuration(
    loop: LoopThread, tmp_path: Path, jwks: Path
) -> None:
    path = tmp_path / "authz.yaml"
    _config(path, jwks, [])
    server = _server(loop, path)
    try:
        running = server.runtime
        unreachable: dict[str, object] = {
            "issuer": "https://nowhere.reload.test",
            "audiences": ["api"],
            "algorithms": ["RS256"],
            # A closed loopback port: the fetch fails at once.
            "keys": [{"jwks_uri": "https://127.0.0.1:9/jwks.json"}],
            "fetch": {"connect_timeout_seconds": 0.5, "read_timeout_seconds": 0.5},
        }
        _config(path, jwks, [unreachable])
        loop.run(server.poll_files())
        loop.run(server.poll_files())
        assert server.runtime is running
        assert server.reload_status.failures == 1
        assert "https://nowhere.reload.test" in (server.reload_status.last_error or "")
    finally:
        loop.run(server.stop(0))
