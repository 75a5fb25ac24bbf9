"""Rolling updates without failed requests: NOT_SERVING first, the listener closes later.

On SIGTERM a replica must tell its balancers (Envoy's active health checks,
Kubernetes readiness) that it is going away *before* it stops answering:
``shutdown_delay_seconds`` is that window. These tests use the real server and
real sockets; every wait is a poll with a deadline.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from google.rpc import code_pb2

from authz.config.loader import parse_config
from authz.errors import ConfigError

if TYPE_CHECKING:
    from tests.service.svc_helpers import (
        NOT_SERVING,
        SERVICE_NAME,
        SERVING,
        WAIT,
        Client,
        ConfigFactory,
        LoopThread,
        ServerFactory,
        Signing,
        check_request,
        config_data,
        ok_headers,
        write_config,
    )
else:
    from svc_helpers import (
        NOT_SERVING,
        SERVICE_NAME,
        SERVING,
        WAIT,
        Client,
        ConfigFactory,
        LoopThread,
        ServerFactory,
        Signing,
        check_request,
        config_data,
        ok_headers,
        write_config,
    )

# Long enough for the checks made inside the window, short enough for the suite.
DELAY = 2.0


def poll(what: str, probe: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)  # poll interval, not a readiness guess


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def refuses_connections(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect((host, port))
        except ConnectionRefusedError:
            return True
    return False


def test_shutdown_delay_defaults_to_zero_and_is_bounded() -> None:
    base = "issuers: [{issuer: https://i.test, audiences: [a], algorithms: [RS256], "
    base += "keys: [{jwks: {keys: []}}]}]\n"
    assert parse_config(base).shutdown_delay_seconds == 0
    assert parse_config(base + "shutdown_delay_seconds: 5\n").shutdown_delay_seconds == 5
    with pytest.raises(ConfigError, match="shutdown_delay_seconds"):
        parse_config(base + "shutdown_delay_seconds: -1\n")
    with pytest.raises(ConfigError, match="shutdown_delay_seconds"):
        parse_config(base + "shutdown_delay_seconds: 301\n")


def test_during_the_delay_health_is_not_serving_but_checks_are_answered(
    start_server: ServerFactory,
    make_config: ConfigFactory,
    loop_thread: LoopThread,
    signing: Signing,
) -> None:
    running = start_server(make_config(shutdown_delay_seconds=DELAY, grace_period_seconds=1))
    client = running.client
    host, port = running.target.rsplit(":", 1)
    assert client.health(SERVICE_NAME) == SERVING

    started = time.monotonic()
    stopping = loop_thread.submit(running.server.stop())
    poll("NOT_SERVING", lambda: client.health(SERVICE_NAME) == NOT_SERVING)

    # Inside the window: the existing connection and a brand-new one both get
    # answers, as a balancer that has not yet noticed would need.
    response = client.check(check_request(bearer(signing.token("alice"))), timeout=WAIT)
    assert response.status.code == code_pb2.OK
    assert ok_headers(response)["x-auth-subject"] == "alice"
    late = Client.connect(running.target)
    try:
        assert late.health("") == NOT_SERVING
        response = late.check(check_request(bearer(signing.token("bob"))), timeout=WAIT)
        assert ok_headers(response)["x-auth-subject"] == "bob"
        assert not stopping.done(), "the listener closed before the shutdown delay ended"
    finally:
        late.close()

    stopping.result(timeout=WAIT)
    elapsed = time.monotonic() - started
    assert elapsed >= DELAY - 0.1, f"stop() returned after {elapsed:.2f}s, before the delay"
    # Afterwards the port is closed: new connections are refused, old ones fail.
    assert refuses_connections(host, int(port))
    with pytest.raises(grpc.RpcError) as caught:
        client.check(check_request(bearer(signing.token())), timeout=WAIT)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_an_explicit_delay_overrides_the_configured_one(
    start_server: ServerFactory, make_config: ConfigFactory, loop_thread: LoopThread
) -> None:
    # Tests and embedders can stop at once whatever the file says.
    running = start_server(make_config(shutdown_delay_seconds=60))
    started = time.monotonic()
    loop_thread.run(running.server.stop(grace=0, delay=0), timeout=WAIT)
    assert time.monotonic() - started < 5


def test_sigterm_turns_not_serving_then_exits_after_the_delay(
    tmp_path: Path, short_dir: Path, signing: Signing
) -> None:
    """`authz serve` as Kubernetes runs it: SIGTERM, then the same sequence."""
    socket_path = short_dir / "authz.sock"
    target = f"unix:{socket_path}"
    data = config_data(
        signing.jwks_file, target, shutdown_delay_seconds=DELAY, grace_period_seconds=1
    )
    config = write_config(tmp_path / "authz.yaml", data)
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "authz.cli", "serve", "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
        )
    try:
        poll("the socket", socket_path.exists)
        client = Client.connect(target)
        try:
            poll("SERVING", lambda: client.health(SERVICE_NAME) == SERVING)
            process.send_signal(signal.SIGTERM)
            poll("NOT_SERVING", lambda: client.health(SERVICE_NAME) == NOT_SERVING)
            response = client.check(check_request(bearer(signing.token("carol"))), timeout=WAIT)
            assert ok_headers(response)["x-auth-subject"] == "carol"
            assert process.poll() is None, "exited before the shutdown delay ended"
            assert process.wait(WAIT) == 0, log.read_text()
        finally:
            client.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(WAIT)
    text = log.read_text()
    assert "still answering Checks for 2.0s" in text
    assert "Traceback" not in text
    # The socket file is gone (or refused): either way, nobody answers any more.
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe,
        pytest.raises((FileNotFoundError, ConnectionRefusedError)),
    ):
        probe.connect(str(socket_path))
