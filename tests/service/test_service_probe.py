"""``python -m authz.probe``: the exec probe of the sidecar topology, against a real server."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from authz import probe

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
