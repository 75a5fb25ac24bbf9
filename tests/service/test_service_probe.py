"""``python -m authz.probe``: the exec probe of every topology, against a real server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from authz import probe
from authz.dev.stack import AuthzProcess
from tests.service.svc_helpers import Signing, config_data, write_config

if TYPE_CHECKING:
    from tests.service.svc_helpers import (
        ConfigFactory,
        LoopThread,
        NoKeys,
        ServerFactory,
    )
else:
    from svc_helpers import ConfigFactory, LoopThread, NoKeys, ServerFactory


def test_serving_is_exit_0(
    start_server: ServerFactory, make_config: ConfigFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    running = start_server(make_config())
    assert probe.main([running.target]) == 0
    assert capsys.readouterr().out == f"{running.target}: SERVING\n"


def test_not_serving_is_exit_1_but_alive(
    start_server: ServerFactory, make_config: ConfigFactory
) -> None:
    running = start_server(make_config(), keys=NoKeys())  # no keys: NOT_SERVING
    assert probe.main([running.target]) == 1
    assert probe.main(["--alive", running.target]) == 0


def test_shutting_down_is_not_serving(
    start_server: ServerFactory, make_config: ConfigFactory, loop_thread: LoopThread
) -> None:
    running = start_server(make_config(shutdown_delay_seconds=30))
    assert probe.main([running.target]) == 0
    stopping = loop_thread.submit(running.server.stop())
    try:
        deadline = time.monotonic() + 10
        while probe.main([running.target]) != 1:
            assert time.monotonic() < deadline, "never NOT_SERVING"
            time.sleep(0.02)  # poll interval
        # Still answering during the delay: alive, so no liveness restart.
        assert probe.main(["--alive", running.target]) == 0
    finally:
        # A second stop() ends the first one's 30 s delay.
        loop_thread.run(running.server.stop(grace=0, delay=0))
        stopping.result(timeout=10)


def test_no_answer_is_exit_2(short_dir: Path) -> None:
    target = f"unix:{short_dir / 'nobody.sock'}"
    assert probe.main(["--timeout", "0.5", target]) == 2
    assert probe.main(["--alive", "--timeout", "0.5", target]) == 2


def test_unknown_service_is_no_answer(
    start_server: ServerFactory, make_config: ConfigFactory
) -> None:
    running = start_server(make_config())
    assert probe.main(["--service", "no.such.Service", running.target]) == 2


def test_as_the_kubelet_runs_it_over_a_unix_socket(
    start_server: ServerFactory, make_config: ConfigFactory, short_dir: Path
) -> None:
    target = f"unix:{short_dir / 'authz.sock'}"
    start_server(make_config(listen=target))
    result = subprocess.run(
        [sys.executable, "-m", "authz.probe", target],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{target}: SERVING\n"


def run_probe(*args: str, env: Mapping[str, str] | None = None) -> int:
    """The probe as the kubelet runs it: a fresh interpreter; its exit status."""
    return subprocess.run(
        [sys.executable, "-m", "authz.probe", *args],
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    ).returncode


def process_state(pid: int) -> str:
    """The state letter of /proc/PID/stat: R, S, T (stopped), ..."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


def test_a_stopped_process_is_not_alive_though_its_port_accepts(
    tmp_path: Path, signing: Signing
) -> None:
    config = write_config(tmp_path / "authz.yaml", config_data(signing.jwks_file))
    authz = AuthzProcess(config, tmp_path / "authz.log").start()
    target = authz.address
    try:
        assert run_probe("--alive", target) == 0
        os.kill(authz.pid, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 10
            while process_state(authz.pid) != "T":
                assert time.monotonic() < deadline, "SIGSTOP did not stop authz"
                time.sleep(0.01)  # poll interval
            # What a tcpSocket probe sees: the kernel completes the handshake.
            with socket.create_connection(("127.0.0.1", authz.port), timeout=5):
                pass
            assert run_probe("--alive", "--timeout", "0.5", target) == probe.EXIT_NO_ANSWER
        finally:
            os.kill(authz.pid, signal.SIGCONT)
        deadline = time.monotonic() + 30
        while run_probe("--alive", "--timeout", "1", target) != 0:
            assert time.monotonic() < deadline, "alive again never answered after SIGCONT"
    finally:
        assert authz.stop() == 0


def test_a_proxy_in_the_environment_is_not_taken(
    start_server: ServerFactory, make_config: ConfigFactory
) -> None:
    # A pod may set these for its key fetches; the probe asks its own process.
    running = start_server(make_config())
    dead = "http://127.0.0.1:9"  # discard port: nothing proxies there
    proxies = {"grpc_proxy": dead, "https_proxy": dead, "http_proxy": dead}
    assert run_probe("--alive", running.target, env=proxies) == 0
