"""Fixtures for the service tests: keys, configs, and real servers on a loop thread."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from authz.dev.keys import generate, load_private, write_keypair

# pytest imports this folder's modules by file name (no __init__.py, "prepend"
# import mode); mypy names them by path from the project root.
if TYPE_CHECKING:
    from tests.service.svc_helpers import (
        KID,
        Client,
        ConfigFactory,
        LoopThread,
        RunningServer,
        ServerFactory,
        Signing,
    )
else:
    from svc_helpers import (
        KID,
        Client,
        ConfigFactory,
        LoopThread,
        RunningServer,
        ServerFactory,
        Signing,
    )


@pytest.fixture(scope="session")
def signing(tmp_path_factory: pytest.TempPathFactory) -> Signing:
    directory = tmp_path_factory.mktemp("keys")
    private_pem, jwks_file = write_keypair(directory, "RS256", KID)
    return Signing(
        directory=directory,
        private_pem=private_pem,
        jwks_file=jwks_file,
        key=load_private(private_pem),
        other_key=generate("RS256"),
    )


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory under /tmp, for unix socket paths (limited to ~107 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="authz-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def make_config(tmp_path: Path, signing: Signing) -> ConfigFactory:
    return ConfigFactory(tmp_path, signing.jwks_file)


@pytest.fixture
def start_server(loop_thread: LoopThread) -> Iterator[ServerFactory]:
    factory = ServerFactory(loop_thread)
    yield factory
    factory.close()


@pytest.fixture
def server(start_server: ServerFactory, make_config: ConfigFactory) -> RunningServer:
    """A server with the session's keys, on 127.0.0.1 and an OS-assigned port."""
    return start_server(make_config())


@pytest.fixture
def client(server: RunningServer) -> Client:
    return server.client
