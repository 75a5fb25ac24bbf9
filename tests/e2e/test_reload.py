"""Live reload through the real Envoy, under continuous traffic, with a ConfigMap-style swap.

The config is published the way a Kubernetes ConfigMap volume does it:
``config.yaml -> ..data/config.yaml`` and ``..data -> ..vN``, updated by
replacing the ``..data`` link atomically. Requests run back to back from a
thread the whole time; not one may fail, and the answers switch from the old
rule to the new one exactly once.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from authz.dev.stack import Stack, http_request, wait_for
from tests.e2e.conftest import ISSUER, Keys

pytestmark = pytest.mark.e2e


def _config(keys: Keys, scope: str, mode: str = "protected") -> str:
    jwks = keys.config.parent / "keys" / "jwks.json"
    return f"""\
listen: 127.0.0.1:0
watch_interval_seconds: 0.1
issuers:
  - issuer: {ISSUER}
    audiences: [orders-api]
    algorithms: [RS256]
    keys: [{{jwks_file: {jwks}}}]
routes:
  - name: orders
    match: {{prefix: /orders}}
    mode: {mode}
    requirements: {{scopes: [{scope}]}}
"""


def _publish(directory: Path, version: str, text: str) -> None:
    """Write a new snapshot directory, then swap ``..data`` to it atomically."""
    snapshot = directory / version
    snapshot.mkdir()
    (snapshot / "config.yaml").write_text(text)
    link = directory / "..data_tmp"
    link.symlink_to(version)
    os.replace(link, directory / "..data")


class Traffic(threading.Thread):
    """GET through Envoy back to back; every status (or exception) in order."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.outcomes: list[int | str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.outcomes.append(http_request(self.url, self.headers, timeout=5).status)
            except OSError as exc:
                self.outcomes.append(f"{type(exc).__name__}: {exc}")

    def more_than(self, count: int) -> bool | None:
        return True if len(self.outcomes) > count else None


def test_reload_under_traffic(keys: Keys, tmp_path: Path) -> None:
    directory = tmp_path / "configmap"
    directory.mkdir()
    _publish(directory, "..v1", _config(keys, "orders:read"))
    (directory / "config.yaml").symlink_to("..data/config.yaml")

    with Stack(tmp_path / "stack", directory / "config.yaml") as stack:
        log = stack.authz.log
        traffic = Traffic(stack.url("/orders/1"), keys.token(scope="orders:read"))
        traffic.start()
        try:
            wait_for("traffic", lambda: traffic.more_than(20), 15, log)

            # A valid change: the rule now needs orders:admin.
            _publish(directory, "..v2", _config(keys, "orders:admin"))
            wait_for("the new rule", lambda: True if 403 in traffic.outcomes else None, 15, log)
            seen = len(traffic.outcomes)
            wait_for("traffic after the reload", lambda: traffic.more_than(seen + 20), 15, log)

            # An invalid change: a typo in a mode. The running rule stays.
            _publish(directory, "..v3", _config(keys, "orders:read", mode="protectd"))

            def reported() -> bool | None:
                return True if "configuration not reloaded" in log.read_text() else None

            wait_for("the reload error in the log", reported, 15, log)
            seen = len(traffic.outcomes)
            wait_for("traffic after the failure", lambda: traffic.more_than(seen + 20), 15, log)
        finally:
            traffic.stopping.set()
            traffic.join(10)

    outcomes = traffic.outcomes
    assert set(outcomes) <= {200, 403}, [o for o in outcomes if o not in (200, 403)][:5]
    switch = outcomes.index(403)
    assert set(outcomes[:switch]) == {200}
    assert set(outcomes[switch:]) == {403}, "an answer went back to the old rule"
    text = log.read_text()
    assert f"configuration reloaded from {directory / 'config.yaml'}" in text
    assert f"{directory / 'config.yaml'}:11: routes[0].mode: Input should be" in text
