"""The grpc.aio server: Authorization/Check, gRPC health, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
import stat
from pathlib import Path

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz import response
from authz._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from authz.config import Config
from authz.decision import Decider, Decision
from authz.errors import ConfigError, InternalError, InvalidRequest
from authz.keys import KeySource, ManagedKeySource
from authz.keystore import KeyStore
from authz.request import view
from authz.verify import Clock, Verifier

__all__ = ["SERVICE_NAME", "AuthorizationService", "AuthzServer", "run"]

log = logging.getLogger(__name__)
decisions_log = logging.getLogger("authz.decision")

SERVICE_NAME = "envoy.service.auth.v3.Authorization"
# Time kept back from Envoy's deadline to build and send the answer.
_REPLY_MARGIN = 0.02


class AuthorizationService(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, config: Config, decider: Decider) -> None:
        self._realm = config.realm
        self._decider = decider

    async def Check(
        self,
        request: external_auth_pb2.CheckRequest,
        context: grpc.aio.ServicerContext[
            external_auth_pb2.CheckRequest, external_auth_pb2.CheckResponse
        ],
    ) -> external_auth_pb2.CheckResponse:
        try:
            remaining = context.time_remaining()
            budget = math.inf if remaining is None else max(0.0, remaining - _REPLY_MARGIN)
            decision = await self._decider.decide(view(request), budget)
        except Exception as exc:
            # decide() catches its own errors; this guards the request view.
            log.exception("cannot read CheckRequest")
            error = (
                InvalidRequest("unreadable CheckRequest")
                if isinstance(exc, UnicodeError | ValueError)
                else InternalError(type(exc).__name__)
            )
            decision = Decision(
                allowed=False, status=error.status, reason=error.reason, error=error
            )
        _log_decision(decision)
        return response.build(decision, self._realm)


def _log_decision(decision: Decision) -> None:
    if decision.allowed:
        if decisions_log.isEnabledFor(logging.DEBUG):
            token = decision.token
            decisions_log.debug(
                "allow sub=%r iss=%r token_fp=%s",
                token.subject if token else None,
                token.issuer if token else None,
                decision.token_fingerprint,
            )
    else:
        decisions_log.info(
            "deny status=%d reason=%s detail=%r token_fp=%s",
            decision.status,
            decision.reason,
            decision.detail,
            decision.token_fingerprint or "-",
        )


class AuthzServer:
    """One listening grpc.aio server. ``start`` binds; ``stop`` drains."""

    def __init__(
        self, config: Config, keys: KeySource | None = None, clock: Clock | None = None
    ) -> None:
        self.config = config
        self.keys = keys if keys is not None else KeyStore(config)
        verifier = Verifier(config, self.keys, clock)
        refetch = self.keys.refetch if isinstance(self.keys, ManagedKeySource) else None
        self.health = health_aio.HealthServicer()
        # so_reuseport off: a second server on a taken port must fail, not share it.
        self._server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        # The generated *_pb2_grpc module carries no type hints.
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(  # type: ignore[no-untyped-call]
            AuthorizationService(config, Decider(config, verifier, refetch)), self._server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        self.port = 0
        self._health_tasks: set[asyncio.Task[None]] = set()
        self._draining = False
        self._stop_now = asyncio.Event()

    async def start(self) -> None:
        address = self.config.listen
        if address.startswith("unix:"):
            _remove_stale_socket(Path(address.removeprefix("unix:")))
        try:
            self.port = self._server.add_insecure_port(address)
        except RuntimeError as exc:
            raise ConfigError(f"listen {address}: cannot bind: {exc}") from None
        await self._server.start()
        if isinstance(self.keys, ManagedKeySource):
            self.keys.add_listener(self._keys_changed)
            await self.keys.start()
        await self._update_health()
        log.info("listening on %s", self.address)

    def _keys_changed(self) -> None:
        # Called on the event loop by the key source; health follows readiness.
        task = asyncio.get_running_loop().create_task(self._update_health())
        self._health_tasks.add(task)
        task.add_done_callback(self._health_tasks.discard)

    @property
    def address(self) -> str:
        """The bound address, with the real port when the config asked for port 0."""
        listen = self.config.listen
        if listen.startswith("unix:"):
            return listen
        return f"{listen.rsplit(':', 1)[0]}:{self.port}"

    async def _update_health(self) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self.keys.ready()
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)

    async def stop(self, grace: float | None = None, delay: float | None = None) -> None:
        """Report NOT_SERVING, keep answering for ``delay``, then stop accepting and
        let in-flight Checks finish within ``grace`` (defaults: the configuration's
        ``shutdown_delay_seconds`` and ``grace_period_seconds``).

        The order matters for rolling updates: whoever balances over the replicas
        sees NOT_SERVING first and stops sending, and only then does the listener
        close, so no Check is sent to a socket that is gone.
        """
        await self.health.enter_graceful_shutdown()
        delay = self.config.shutdown_delay_seconds if delay is None else delay
        if self._draining:
            self._stop_now.set()  # a second stop() ends the first one's delay
        elif delay > 0:
            self._draining = True
            log.info("NOT_SERVING; still answering Checks for %.1fs before closing", delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_now.wait(), delay)
        self._draining = True
        await self._server.stop(self.config.grace_period_seconds if grace is None else grace)
        if isinstance(self.keys, ManagedKeySource):
            await self.keys.close()

    async def wait(self) -> None:
        await self._server.wait_for_termination()


def _remove_stale_socket(path: Path) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"listen unix:{path}: exists and is not a socket")
    # Only a socket nobody answers on is stale; a live one belongs to another server.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            os.unlink(path)
            return
    raise ConfigError(f"listen unix:{path}: another process is listening on this socket")


async def run(config: Config) -> int:
    """Serve until SIGTERM or SIGINT, then drain gracefully; the exit status."""
    server = AuthzServer(config)
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info(
        "shutting down: NOT_SERVING, answering for %.1fs more, then draining for up to %.1fs",
        config.shutdown_delay_seconds,
        config.grace_period_seconds,
    )
    await server.stop()
    log.info("stopped")
    return 0
