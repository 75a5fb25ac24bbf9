"""The grpc.aio server: Authorization/Check, gRPC health, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import stat
import time
from pathlib import Path

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz import response
from authz._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from authz.config import Config
from authz.decision import Decider, Decision
from authz.errors import ConfigError, InternalError, InvalidRequest
from authz.keys import KeySource, StaticKeySource
from authz.metrics import Metrics
from authz.observe import Observability
from authz.request import RequestView, view
from authz.verify import Clock, Verifier

__all__ = ["SERVICE_NAME", "AuthorizationService", "AuthzServer", "run"]

log = logging.getLogger(__name__)
decisions_log = logging.getLogger("authz.decision")

SERVICE_NAME = "envoy.service.auth.v3.Authorization"


class AuthorizationService(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, config: Config, decider: Decider, observability: Observability) -> None:
        self._realm = config.realm
        self._decider = decider
        self._observe = observability

    async def Check(
        self,
        request: external_auth_pb2.CheckRequest,
        context: grpc.aio.ServicerContext[
            external_auth_pb2.CheckRequest, external_auth_pb2.CheckResponse
        ],
    ) -> external_auth_pb2.CheckResponse:
        # The span continues Envoy's trace from the call's metadata (telemetry.py).
        observation = self._observe.begin(context.invocation_metadata())
        request_view: RequestView | None = None
        try:
            with observation:
                request_view = view(request)
                decision = await self._decider.decide(request_view)
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
        self._observe.finish(observation, request_view, decision)
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
        self,
        config: Config,
        keys: KeySource | None = None,
        clock: Clock | None = None,
        observability: Observability | None = None,
    ) -> None:
        self.config = config
        self._static_keys_loaded_at = time.time() if keys is None else None
        self.keys = keys if keys is not None else StaticKeySource.from_config(config)
        self.observability = (
            observability if observability is not None else Observability.from_config(config)
        )
        verifier = Verifier(config, self.keys, clock)
        self.health = health_aio.HealthServicer()
        # so_reuseport off: a second server on a taken port must fail, not share it.
        self._server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        # The generated *_pb2_grpc module carries no type hints.
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(  # type: ignore[no-untyped-call]
            AuthorizationService(config, Decider(config, verifier), self.observability),
            self._server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        self.port = 0

    async def start(self) -> None:
        address = self.config.listen
        if address.startswith("unix:"):
            _remove_stale_socket(Path(address.removeprefix("unix:")))
        try:
            self.port = self._server.add_insecure_port(address)
        except RuntimeError as exc:
            raise ConfigError(f"listen {address}: cannot bind: {exc}") from None
        self.observability.start()
        _report_static_keys(self.config, self._static_keys_loaded_at, self.observability.metrics)
        await self._server.start()
        await self._update_health()
        log.info("listening on %s", self.address, extra={"address": self.address})
        if self.observability.metrics_address is not None:
            address = self.observability.metrics_address
            log.info("metrics on http://%s/metrics", address, extra={"metrics_address": address})

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

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, stop accepting, let in-flight Checks finish within ``grace``."""
        await self.health.enter_graceful_shutdown()
        await self._server.stop(self.config.grace_period_seconds if grace is None else grace)
        # Every Check has been answered: now the audit trail can be completed.
        await self.observability.stop()

    async def wait(self) -> None:
        await self._server.wait_for_termination()


def _report_static_keys(config: Config, loaded_at: float | None, metrics: Metrics) -> None:
    """Keys read from files at start-up: logged, and their age starts counting.
    (A refreshing key source reports through ``metrics.key_events`` instead.)"""
    if loaded_at is None:
        return
    for issuer in config.issuers:
        metrics.keys_loaded(issuer.issuer, loaded_at)
        log.info(
            "keys loaded for issuer %s from %d source(s)",
            issuer.issuer,
            len(issuer.keys),
            extra={"issuer": issuer.issuer},
        )


def _remove_stale_socket(path: Path) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"listen unix:{path}: exists and is not a socket")
    os.unlink(path)


async def run(config: Config) -> int:
    """Serve until SIGTERM or SIGINT, then drain gracefully; the exit status."""
    server = AuthzServer(config)
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("shutting down: draining for up to %.1fs", config.grace_period_seconds)
    await server.stop()
    log.info("stopped")
    return 0
