"""The example services of k8s/examples run the image's echo server: run their command."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from authz.dev.stack import http_request
from tests.deploy.conftest import poll
from tests.deploy.manifests import K8S, containers, find, render


@pytest.mark.parametrize("name", ["orders", "payments"])
def test_the_example_command_serves_and_stops_on_sigterm(name: str, tmp_path: Path) -> None:
    (entry,) = containers(find(render(K8S / "examples"), "Deployment", name))
    command: list[str] = entry["command"]
    assert command[:3] == ["python", "-m", "authz.dev.upstream"]
    assert command[command.index("--host") + 1] == "0.0.0.0"  # noqa: S104 - reachable from other pods
    assert command[command.index("--port") + 1] == str(entry["ports"][0]["containerPort"])
    # Here: this Python, loopback, any free port; the rest as in the manifest.
    local = [sys.executable, *command[1:]]
    local[local.index("--host") + 1] = "127.0.0.1"
    local[local.index("--port") + 1] = "0"
    out = tmp_path / "out"
    with out.open("wb") as sink:
        process = subprocess.Popen(local, stdout=sink, stderr=subprocess.STDOUT)
    try:
        poll("the listening line", lambda: "listening on" in out.read_text())
        port = int(out.read_text().split("listening on ", 1)[1].split()[0].rsplit(":", 1)[1])
        reply = http_request(f"http://127.0.0.1:{port}/{name}/1", {"x-auth-subject": "alice"})
        assert reply.status == 200
        assert json.loads(reply.body)["headers"]["x-auth-subject"] == "alice"
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
