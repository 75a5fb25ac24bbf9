"""`authz serve --workers N`: processes sharing one port, supervised as one server."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from authz._proto.envoy.service.auth.v3 import external_auth_pb2_grpc
from tests.service.svc_helpers import (
    Signing,
    check_request,
    config_data,
    metadata,
    wait_until_serving,
    write_config,
)

WAIT = 20.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def _until(what: str, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # poll interval


def _listeners(port: int) -> int:
    """How many sockets listen on ``port``, IPv4 or IPv6 (grpc listens on
    [::ffff:127.0.0.1]), from the kernel's own tables: one per worker."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def _listening(port: int) -> bool:
    return _listeners(port) > 0


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def metrics_port() -> int:
    return _free_port()


@pytest.fixture
def served(
    tmp_path: Path, signing: Signing, metrics_port: int
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = _free_port()
    telemetry = {"metrics": {"listen": f"127.0.0.1:{metrics_port}"}}
    config = write_config(
        tmp_path / "authz.yaml",
        config_data(signing.jwks_file, f"127.0.0.1:{port}", telemetry=telemetry),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "authz.cli", "serve", "-c", str(config), "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    target = f"127.0.0.1:{port}"
    try:
        wait_until_serving(target, time.monotonic() + WAIT)
        _until("two workers", lambda: len(_children(process.pid)) == 2)
        _until("both workers listening", lambda: _listeners(port) == 2)
        yield process, target
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(WAIT)


def _check(target: str, token: str) -> str:
    with grpc.insecure_channel(target) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)  # type: ignore[no-untyped-call]
        reply = stub.Check(check_request({"authorization": f"Bearer {token}"}), timeout=WAIT)
        return str(metadata(reply)["reason"])


def test_workers_share_the_port_and_stop_together(
    served: tuple[subprocess.Popen[bytes], str], signing: Signing
) -> None:
    process, target = served
    workers = _children(process.pid)
    # A new connection per Check: the kernel spreads them over the workers.
    reasons = {_check(target, signing.token()) for _ in range(20)}
    assert reasons == {"allowed"}
    assert _check(target, signing.token(audience="other")) == "audience_mismatch"
    process.send_signal(signal.SIGTERM)
    assert process.wait(WAIT) == 0
    assert not any(_alive(pid) for pid in workers)


def _decisions(metrics_port: int) -> tuple[dict[str, float], dict[str, float]]:
    """authz_decisions_total per worker, and authz_worker_up per worker, scraped once."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=WAIT) as reply:
        text = reply.read().decode()
    per_worker: dict[str, float] = {}
    up: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "authz_decisions_total":
                worker = sample.labels["worker"]
                per_worker[worker] = per_worker.get(worker, 0.0) + sample.value
            elif sample.name == "authz_worker_up":
                up[sample.labels["worker"]] = sample.value
    return per_worker, up


def test_one_scrape_sees_the_decisions_of_every_worker(
    served: tuple[subprocess.Popen[bytes], str], signing: Signing, metrics_port: int
) -> None:
    _, target = served
    _until("both workers' metrics", lambda: _decisions(metrics_port)[1] == {"0": 1.0, "1": 1.0})
    checks = 40
    for _ in range(checks):  # a new connection each: the kernel spreads them
        assert _check(target, signing.token()) == "allowed"
    _until("every decision counted", lambda: sum(_decisions(metrics_port)[0].values()) >= checks)
    per_worker, up = _decisions(metrics_port)
    assert up == {"0": 1.0, "1": 1.0}
    assert sum(per_worker.values()) == checks
    assert set(per_worker) == {"0", "1"}, per_worker  # both served some


def test_a_crashed_worker_is_started_again(
    served: tuple[subprocess.Popen[bytes], str], signing: Signing
) -> None:
    process, target = served
    first, second = _children(process.pid)
    subprocess.run(["kill", "-9", str(first)], check=True)

    def replaced() -> bool:
        workers = _children(process.pid)
        return len(workers) == 2 and first not in workers

    _until("a replacement worker", replaced)
    assert second in _children(process.pid)
    port = int(target.rsplit(":", 1)[1])
    _until("the replacement listening", lambda: _listeners(port) == 2)
    assert _check(target, signing.token()) == "allowed"


def test_workers_die_with_their_supervisor(served: tuple[subprocess.Popen[bytes], str]) -> None:
    process, target = served
    workers = _children(process.pid)
    assert _listening(int(target.rsplit(":", 1)[1]))
    process.kill()  # no chance to forward anything
    process.wait(WAIT)
    _until("the workers to die", lambda: not any(_alive(pid) for pid in workers))
    port = target.rsplit(":", 1)[1]
    # ...and the port is free: no listener is left (a killed process's threads
    # and sockets may outlive its main thread for a moment, hence the poll).
    _until("the port to be free", lambda: not _listening(int(port)))


def test_workers_need_a_fixed_tcp_port(tmp_path: Path, signing: Signing) -> None:
    config = write_config(tmp_path / "authz.yaml", config_data(signing.jwks_file, "127.0.0.1:0"))
    result = subprocess.run(
        [sys.executable, "-m", "authz.cli", "serve", "-c", str(config), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert result.returncode == 2
    assert "needs a fixed TCP port" in result.stderr


def test_a_stop_while_workers_start_is_clean(tmp_path: Path, signing: Signing) -> None:
    """SIGTERM as soon as the workers exist, while they are still importing:
    each stops cleanly once it can, and the supervisor exits 0."""
    config = write_config(
        tmp_path / "authz.yaml", config_data(signing.jwks_file, f"127.0.0.1:{_free_port()}")
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "authz.cli", "serve", "-c", str(config), "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # The supervisor installs its handlers before it starts any worker.
        _until("two workers", lambda: len(_children(process.pid)) == 2)
        workers = _children(process.pid)
        process.send_signal(signal.SIGTERM)
        assert process.wait(WAIT) == 0
        assert not any(_alive(pid) for pid in workers)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(WAIT)
