"""Helpers for the service tests: an event loop thread, clients, requests, fakes.

The server under test is the real ``authz.server.AuthzServer``, started from an
asyncio loop in a background thread (its waiting work runs there; Checks run on
gRPC's threads); tests talk to it over real sockets with the synchronous grpc
client, exactly as Envoy would.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import yaml
from google.protobuf import json_format
from grpc_health.v1 import health_pb2

from authz._proto.envoy.config.core.v3 import base_pb2
from authz._proto.envoy.service.auth.v3 import (
    attribute_context_pb2,
    external_auth_pb2,
)
from authz.check.verify import Clock
from authz.config.loader import load_config
from authz.config.models import Config
from authz.dev.keys import PrivateKey
from authz.dev.tokens import claims_for, mint
from authz.keys.sources import KeySource
from authz.server import SERVICE_NAME, AuthzServer
from tests.support.harness import WAIT, Client, HealthWatch, LoopThread

__all__ = [
    "AUDIENCE",
    "ISSUER",
    "KID",
    "NOT_SERVING",
    "REALM",
    "SERVICE_NAME",
    "SERVING",
    "WAIT",
    "Client",
    "ConfigFactory",
    "GatedClock",
    "HealthWatch",
    "LoopThread",
    "NoKeys",
    "RunningServer",
    "ServerFactory",
    "Signing",
    "body",
    "check_request",
    "config_data",
    "deny_headers",
    "fingerprint",
    "metadata",
    "ok_headers",
    "serve_alone",
    "wait_until_serving",
    "write_config",
]

ISSUER = "https://issuer.service-test.example"
AUDIENCE = "orders-api"
KID = "svc-key-1"
REALM = "service-test"

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

T = TypeVar("T")

CheckRequest = external_auth_pb2.CheckRequest
CheckResponse = external_auth_pb2.CheckResponse


@dataclass
class RunningServer:
    server: AuthzServer
    target: str
    client: Client


class NoKeys:
    """A KeySource that has no keys yet (e.g. a JWKS URL not fetched)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def keys_for(self, issuer: str) -> None:
        self.asked.append(issuer)

    def ready(self) -> bool:
        return False


class GatedClock:
    """A Clock whose first ``now()`` blocks (with a bound) until released.

    ``now()`` runs on the worker thread deciding a Check, so while it waits that
    thread is held: that is the point, it pins one Check in the middle of its
    decision. It never waits longer than ``limit`` seconds, so a broken test
    cannot hang the suite.
    """

    def __init__(self, limit: float = WAIT) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.released_in_time: bool | None = None
        self._limit = limit
        self._armed = True
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            armed, self._armed = self._armed, False
        if armed:
            self.entered.set()
            self.released_in_time = self.release.wait(self._limit)
        return time.time()


def config_data(
    jwks_file: Path,
    listen: str = "127.0.0.1:0",
    **overrides: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "listen": listen,
        "realm": REALM,
        "grace_period_seconds": 5,
        "issuers": [
            {
                "issuer": ISSUER,
                "audiences": [AUDIENCE],
                "algorithms": ["RS256"],
                "keys": [{"jwks_file": str(jwks_file)}],
            }
        ],
    }
    data.update(overrides)
    return data


def write_config(path: Path, data: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(data), sort_keys=False), encoding="utf-8")
    return path


def check_request(
    headers: Mapping[str, str] | None = None,
    header_map: Iterable[tuple[str, bytes]] | None = None,
    path: str = "/orders/42",
) -> CheckRequest:
    """A CheckRequest as Envoy builds it: the ``headers`` map or the raw ``header_map``."""
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        id="1234567890",
        method="GET",
        path=path,
        host="api.example",
        scheme="https",
        protocol="HTTP/1.1",
    )
    if headers is not None:
        http.headers.update(headers)
    if header_map is not None:
        http.header_map.CopyFrom(
            base_pb2.HeaderMap(
                headers=[base_pb2.HeaderValue(key=key, raw_value=raw) for key, raw in header_map]
            )
        )
    return CheckRequest(
        attributes=attribute_context_pb2.AttributeContext(
            request=attribute_context_pb2.AttributeContext.Request(http=http)
        )
    )


def ok_headers(response: CheckResponse) -> dict[str, str]:
    """ok_response headers as a dict; fails on a repeated name."""
    result: dict[str, str] = {}
    for option in response.ok_response.headers:
        assert option.header.key not in result, f"header {option.header.key} set twice"
        result[option.header.key] = option.header.value
    return result


def deny_headers(response: CheckResponse) -> dict[str, str]:
    result: dict[str, str] = {}
    for option in response.denied_response.headers:
        assert option.header.key not in result, f"header {option.header.key} set twice"
        result[option.header.key] = option.header.value
    return result


def metadata(response: CheckResponse) -> dict[str, Any]:
    value: dict[str, Any] = json_format.MessageToDict(response.dynamic_metadata)
    return value


def fingerprint(token: str) -> str:
    """The documented token fingerprint: the first 16 hex digits of SHA-256."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()[:16]


def body(response: CheckResponse) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(response.denied_response.body)
    return value


def wait_until_serving(target: str, deadline: float) -> None:
    """Poll gRPC health at ``target`` until SERVING or ``deadline`` (monotonic) passes."""
    last: object = None
    while (remaining := deadline - time.monotonic()) > 0:
        with grpc.insecure_channel(target) as channel:
            try:
                if Client(channel).health(timeout=min(remaining, 1.0)) == SERVING:
                    return
                last = "NOT_SERVING"
            except grpc.RpcError as exc:
                last = exc
        time.sleep(0.05)  # poll interval, not a readiness guess
    raise AssertionError(f"{target} not SERVING before the deadline (last: {last!r})")


@dataclass(frozen=True)
class Signing:
    """The session's RS256 key pair (on disk) and an unrelated key for forgeries."""

    directory: Path
    private_pem: Path
    jwks_file: Path
    key: PrivateKey
    other_key: PrivateKey

    def token(
        self,
        subject: str = "alice",
        *,
        scopes: str = "orders:read orders:write",
        audience: str | list[str] = AUDIENCE,
        issuer: str = ISSUER,
        ttl: int = 300,
        kid: str | None = KID,
        key: PrivateKey | None = None,
        **extra: Any,
    ) -> str:
        claims = claims_for(subject, issuer, audience, scopes=scopes, ttl=ttl, **extra)
        return mint(key or self.key, "RS256", claims, kid)


class ConfigFactory:
    def __init__(self, directory: Path, jwks_file: Path) -> None:
        self._directory = directory
        self._jwks_file = jwks_file
        self._count = 0

    def __call__(self, listen: str = "127.0.0.1:0", **overrides: Any) -> Config:
        self._count += 1
        data = config_data(self._jwks_file, listen, **overrides)
        path = write_config(self._directory / f"authz-{self._count}.yaml", data)
        return load_config(path)


class ServerFactory:
    """Starts real AuthzServers on the loop thread; stops them all at teardown."""

    def __init__(self, loop_thread: LoopThread) -> None:
        self._loop = loop_thread
        self._running: list[RunningServer] = []

    def create(
        self, config: Config, keys: KeySource | None = None, clock: Clock | None = None
    ) -> AuthzServer:
        async def _create() -> AuthzServer:
            # Built on the loop: the server's waiting work (keys, watch) runs there.
            return AuthzServer(config, keys, clock)

        return self._loop.run(_create())

    def __call__(
        self, config: Config, keys: KeySource | None = None, clock: Clock | None = None
    ) -> RunningServer:
        server = self.create(config, keys, clock)
        self._loop.run(server.start())
        target = server.address
        try:
            client = Client.connect(target)
        except BaseException:
            self._loop.run(server.stop(0))
            raise
        running = RunningServer(server=server, target=target, client=client)
        self._running.append(running)
        return running

    def close(self) -> None:
        errors: list[BaseException] = []
        for running in reversed(self._running):
            try:
                self._loop.run(running.server.stop(0))
            except BaseException as exc:  # keep stopping the others
                errors.append(exc)
            # Closed after the server stopped: closing a channel with a live
            # connection first takes ~0.2 s.
            running.client.close()
        self._running.clear()
        if errors:
            raise errors[0]


def serve_alone(config: Config) -> Iterator[AuthzServer]:
    """A server on a loop thread of its own, started and yielded once, then
    stopped: for a test that starts several in turn, or expects a start to fail."""
    loop = LoopThread()

    async def create() -> AuthzServer:
        return AuthzServer(config)

    server = loop.run(create())
    try:
        loop.run(server.start())
        yield server
    finally:
        loop.run(server.stop(0))
        loop.close()
