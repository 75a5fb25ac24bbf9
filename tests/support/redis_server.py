"""A real redis-server for tests: started on a free loopback port and a unix
socket in a temporary folder, with a password, stopped afterwards."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

__all__ = ["PASSWORD", "RedisServer", "start_redis"]

PASSWORD = "test-password-for-a-throwaway-server"
READY_WITHIN_SECONDS = 20.0
_ATTEMPTS = 3


@dataclass
class RedisServer:
    process: subprocess.Popen[bytes]
    port: int
    socket_path: Path
    log: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket_path}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=PASSWORD)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_redis(directory: Path) -> RedisServer:
    """A running server, or pytest.fail's message as RuntimeError if none could start."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed; `make tools` installs it")
    failures = []
    # The free port is only free when probed; another process may take it
    # before redis binds it, so a failed bind is retried on a new port.
    for attempt in range(_ATTEMPTS):
        server = _launch(binary, directory, attempt)
        problem = _wait_ready(server)
        if problem is None:
            return server
        server.stop()
        failures.append(problem)
    raise RuntimeError("redis-server did not start: " + "; ".join(failures))


def _launch(binary: str, directory: Path, attempt: int) -> RedisServer:
    port = _free_port()
    socket_path = directory / f"redis-{attempt}.sock"
    log = directory / f"redis-{attempt}.log"
    command = [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--unixsocket", str(socket_path),
        "--unixsocketperm", "700",
        "--requirepass", PASSWORD,
        "--save", "",
        "--appendonly", "no",
        "--dir", str(directory),
        "--logfile", str(log),
        "--daemonize", "no",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return RedisServer(process=process, port=port, socket_path=socket_path, log=log)


def _wait_ready(server: RedisServer) -> str | None:
    """None once the server answers PING on both listeners, else why not."""
    deadline = time.monotonic() + READY_WITHIN_SECONDS
    tcp = server.client()
    unix = redis.Redis(unix_socket_path=str(server.socket_path), password=PASSWORD)
    try:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                log = server.log.read_text() if server.log.exists() else ""
                return f"exited with {server.process.returncode}: {log[-500:]}"
            try:
                if tcp.ping() and unix.ping():
                    return None
            except redis.ConnectionError:
                time.sleep(0.02)  # polled, with the deadline as the bound
        return f"no answer within {READY_WITHIN_SECONDS:g}s"
    finally:
        tcp.close()
        unix.close()
