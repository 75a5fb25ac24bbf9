"""Faults under load: authz killed and restarted, authz stopped, a stalled IdP.

Whatever happens, a client gets an answer from Envoy, an invalid token is never
allowed, and a valid one is allowed again once authz is back.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from authz.dev.stack import Stack, wait_for
from tests.e2e.conftest import AUDIENCE, ISSUER, Keys

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _config(keys: Keys, tmp_path: Path, listen: str) -> Path:
    config = {
        "listen": listen,
        "grace_period_seconds": 5,
        "issuers": [
            {
                "issuer": ISSUER,
                "audiences": [AUDIENCE],
                "algorithms": ["RS256"],
                "keys": [{"jwks_file": str(keys.config.parent / "keys" / "jwks.json")}],
            }
        ],
    }
    path = tmp_path / "authz.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Load:
    """Clients sending valid and invalid tokens in a loop; every answer is recorded."""

    def __init__(self, stack: Stack, keys: Keys, clients: int = 4) -> None:
        self.results: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        valid = {"Authorization": f"Bearer {keys.token()}"}
        invalid = {"Authorization": f"Bearer {keys.token(aud='someone-else')}"}
        self._requests = [("valid", valid), ("invalid", invalid), ("missing", {})]
        self._stack = stack
        self._threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def _run(self) -> None:
        deadline = time.monotonic() + 60  # bounded even if the test forgets to stop it
        while not self._stop.is_set() and time.monotonic() < deadline:
            for kind, headers in self._requests:
                status = self._stack.get("/", headers).status
                with self._lock:
                    self.results.append((kind, status))

    def count(self, predicate: Callable[[tuple[str, int]], bool] = lambda _: True) -> int:
        with self._lock:
            return sum(1 for result in self.results if predicate(result))

    @contextmanager
    def running(self) -> Iterator[Load]:
        for thread in self._threads:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            for thread in self._threads:
                thread.join(30)


def test_authz_killed_under_load_fails_closed_then_recovers(keys: Keys, tmp_path: Path) -> None:
    config = _config(keys, tmp_path, f"127.0.0.1:{_free_port()}")
    with Stack(tmp_path, config) as stack, Load(stack, keys).running() as load:
        wait_for("traffic", lambda: load.count() > 60 or None, 20, None)
        assert stack.authz.kill() != 0
        wait_for(
            "Envoy to fail closed", lambda: load.count(lambda r: r[1] == 503) > 0 or None, 20, None
        )
        restart_mark = load.count()
        stack.authz.start()  # same port: Envoy's cluster finds it again

        def allowed_after_restart() -> bool | None:
            with load._lock:
                recent = load.results[restart_mark:]
            return True if ("valid", 200) in recent else None

        wait_for("a valid token allowed again", allowed_after_restart, 20, None)
    outcomes = set(load.results)
    assert ("invalid", 200) not in outcomes
    assert ("missing", 200) not in outcomes
    assert {status for kind, status in outcomes if kind == "valid"} <= {200, 503}
    assert {status for kind, status in outcomes if kind != "valid"} <= {401, 503}


def test_sigterm_under_load_answers_every_request(keys: Keys, tmp_path: Path) -> None:
    with Stack(tmp_path, keys.config) as stack, Load(stack, keys).running() as load:
        wait_for("traffic", lambda: load.count() > 60 or None, 20, None)
        assert stack.authz.stop() == 0
        stopped = load.count()
        wait_for("requests after the stop", lambda: load.count() > stopped + 30 or None, 20, None)
    outcomes = set(load.results)
    # Before the stop: the right answers; after it: Envoy's 503. Nothing else, ever.
    assert ("invalid", 200) not in outcomes
    assert {status for kind, status in outcomes if kind == "valid"} <= {200, 503}
    assert {status for kind, status in outcomes if kind != "valid"} <= {401, 503}
    assert ("valid", 200) in outcomes
    assert ("valid", 503) in outcomes
