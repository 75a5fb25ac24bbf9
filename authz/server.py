"""The grpc.aio server: Authorization/Check, gRPC health, graceful shutdown, live reload."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz import AUTHORIZATION_SERVICE
from authz._proto.envoy.service.auth.v3 import external_auth_pb2
from authz.check import response
from authz.check.decision import Deny
from authz.check.request import RequestView, view
from authz.check.verify import Clock
from authz.config.models import Config
from authz.errors import ConfigError, InternalError, InvalidRequest
from authz.keys.lifecycle import close_keys, same_issuers, start_keys, warm_keys
from authz.keys.sources import KeySource
from authz.observability.audit import AuditWriter
from authz.observability.decision_log import DecisionLog
from authz.observability.observe import Observability
from authz.runtime import ConfigFile, ReloadStatus, Runtime, build_runtime
from authz.workers import WORKER_INDEX_ENV, unblock_stop_signals

__all__ = ["SERVICE_NAME", "AuthorizationService", "AuthzServer", "run"]

log = logging.getLogger(__name__)

# The health service (besides "") that Envoy and the probes ask about.
SERVICE_NAME = AUTHORIZATION_SERVICE
# Sections built once at start (the listener; the span exporter and the
# metrics endpoint): a reload that changes them is refused, not half-applied.
_RESTART_ONLY = ("listen", "telemetry")
# Time kept back from Envoy's deadline to build and send the answer.
_REPLY_MARGIN = 0.02
# A cancellation this close to the deadline is Envoy's timeout: the deadline
# here counts from when the call arrived, a transit time after Envoy's clock
# started, so Envoy's reset can arrive just before it.
_DEADLINE_SLACK = 0.1


class AuthorizationService:
    """Authorization/Check. ``Check`` answers with the serialized CheckResponse
    (``response.Encoded``): registered through ``handlers``, gRPC sends the
    bytes as they are."""

    def __init__(
        self,
        runtime: Callable[[], Runtime],
        observability: Observability,
        decision_log: DecisionLog | None = None,
    ) -> None:
        self._runtime = runtime
        self._observe = observability
        self.decision_log = decision_log if decision_log is not None else DecisionLog()
        self._encode = response.Encoded()

    def handlers(self) -> dict[str, grpc.RpcMethodHandler[external_auth_pb2.CheckRequest, bytes]]:
        """The service's method handlers, for ``add_registered_method_handlers``."""
        return {
            "Check": grpc.unary_unary_rpc_method_handler(
                self.Check,
                request_deserializer=external_auth_pb2.CheckRequest.FromString,
                response_serializer=_as_is,
            )
        }

    async def Check(
        self,
        request: external_auth_pb2.CheckRequest,
        context: grpc.aio.ServicerContext[external_auth_pb2.CheckRequest, bytes],
    ) -> bytes:
        # One runtime for the whole Check, even if a reload swaps it meanwhile.
        runtime = self._runtime()
        # The span continues Envoy's trace from the call's metadata (telemetry.py).
        observation = self._observe.begin(context.invocation_metadata())
        request_view: RequestView | None = None
        try:
            with observation:
                request_view = view(request)
                remaining = context.time_remaining()
                budget = math.inf if remaining is None else max(0.0, remaining - _REPLY_MARGIN)
                decision = await runtime.decider.decide(request_view, budget=budget)
        except asyncio.CancelledError:
            # Cancelled while deciding: Envoy stopped waiting (its timeout, which
            # gRPC turns into this cancellation) or the server stopped. Nobody
            # gets authz's answer; the record says what the client got instead.
            reason = _late(context, slack=_DEADLINE_SLACK) or "cancelled"
            self._observe.finish(observation, request_view, None, late=reason)
            self.decision_log.late(reason, None, request_view)
            raise
        except Exception as exc:
            # decide() catches its own errors; this guards the request view.
            log.exception("cannot read CheckRequest")
            error = (
                InvalidRequest("unreadable CheckRequest")
                if isinstance(exc, UnicodeError | ValueError)
                else InternalError(type(exc).__name__)
            )
            decision = Deny(error)
        # Decided, but past the deadline Envoy sent (its ext_authz timeout):
        # Envoy has already answered the client with its status_on_error. Not
        # seen here: a cancellation gRPC has not delivered yet (the loop was
        # busy), and an answer sent within the network's delay of the deadline.
        late = _late(context)
        # The audit record is written here, before the answer is built and sent;
        # with audit.on_sink_failure: deny, an unrecorded decision becomes a 503.
        answered = self._observe.finish(observation, request_view, decision, late=late) or decision
        if late is None:
            self.decision_log.decision(answered, request_view)
        else:
            self.decision_log.late(late, answered, request_view)
        return self._encode(answered, runtime.config.realm)


def _as_is(answer: bytes) -> bytes:
    return answer


def _late(
    context: grpc.aio.ServicerContext[external_auth_pb2.CheckRequest, bytes],
    slack: float = 0.0,
) -> str | None:
    """Why an answer now reaches no one ("deadline_exceeded", "cancelled"), or None."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= slack:
        return "deadline_exceeded"
    return "cancelled" if context.cancelled() else None


class AuthzServer:
    """One listening grpc.aio server. ``start`` binds; ``stop`` drains.

    With ``config_file``, the file is watched and a valid change is swapped in
    (see runtime.py); ``reload_status`` counts reloads and failures.
    """

    def __init__(
        self,
        config: Config,
        keys: KeySource | None = None,
        clock: Clock | None = None,
        *,
        config_file: ConfigFile | None = None,
        observability: Observability | None = None,
    ) -> None:
        self.observability = (
            observability if observability is not None else Observability.from_config(config)
        )
        self._injected_keys = keys
        self._clock = clock
        self.runtime = self._build(config, None)
        # Where the server listens is fixed at start; a reload cannot move it.
        self._listen = config.listen
        self._config_file = config_file
        self.reload_status = ReloadStatus()
        self._watcher: asyncio.Task[None] | None = None
        self.health = health_aio.HealthServicer()
        # so_reuseport off: a second server on a taken port must fail, not share
        # it; except among the workers of one `authz serve --workers N`.
        reuse_port = 1 if WORKER_INDEX_ENV in os.environ else 0
        self._server = grpc.aio.server(options=[("grpc.so_reuseport", reuse_port)])
        self._service = AuthorizationService(lambda: self.runtime, self.observability)
        handlers = self._service.handlers()
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(AUTHORIZATION_SERVICE, handlers),)
        )
        # Registered too: gRPC then finds the method without asking the generic handler.
        # (grpc's type stubs do not declare it yet; the generated *_pb2_grpc code calls it.)
        self._server.add_registered_method_handlers(AUTHORIZATION_SERVICE, handlers)  # type: ignore[attr-defined]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        self.port = 0
        self._health_tasks: set[asyncio.Task[None]] = set()
        self._draining = False
        self._stop_now = asyncio.Event()

    def _build(self, config: Config, previous: Runtime | None) -> Runtime:
        keys = self._injected_keys
        if keys is None and previous is not None and same_issuers(previous.config, config):
            # Unchanged issuers keep their key source: its fetched keys, its state.
            keys = previous.keys
        return build_runtime(config, keys, self._clock, self.observability.tracing.tracer)

    @property
    def config(self) -> Config:
        return self.runtime.config

    @property
    def keys(self) -> KeySource:
        return self.runtime.keys

    async def start(self) -> None:
        address = self._listen
        if address.startswith("unix:"):
            _remove_stale_socket(Path(address.removeprefix("unix:")))
        try:
            self.port = self._server.add_insecure_port(address)
        except RuntimeError as exc:
            raise ConfigError(f"listen {address}: cannot bind: {exc}") from None
        self.observability.start()
        await self._server.start()
        await start_keys(self.runtime.keys, self._keys_changed)
        await self._update_health()
        self._watcher = asyncio.create_task(self._watch(), name="authz-watch")
        log.info("listening on %s", self.address, extra={"address": self.address})
        _warn_dry_run(self.config)
        if self.observability.metrics_address is not None:
            address = self.observability.metrics_address
            log.info("metrics on http://%s/metrics", address, extra={"metrics_address": address})

    def _keys_changed(self) -> None:
        # Called on the event loop by the key source; health follows readiness.
        task = asyncio.get_running_loop().create_task(self._update_health())
        self._health_tasks.add(task)
        task.add_done_callback(self._health_tasks.discard)

    @property
    def address(self) -> str:
        """The bound address, with the real port when the config asked for port 0."""
        listen = self._listen
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
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
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
        await close_keys(self.runtime.keys)
        # Every Check has been answered: now the audit trail can be completed.
        self._service.decision_log.flush()
        await self.observability.stop()

    async def wait(self) -> None:
        await self._server.wait_for_termination()

    # --- live reload ---------------------------------------------------------------------

    async def _watch(self) -> None:
        """Poll the config and revocation files until stopped (interval 0: never)."""
        while (interval := self.config.watch_interval_seconds) > 0:
            await asyncio.sleep(interval)  # a poll interval, not a readiness guess
            try:
                await self.poll_files()
            except Exception:
                # The watch must outlive any surprise; the running config stays.
                log.exception("watching the configuration failed; will retry")

    async def poll_files(self) -> None:
        """One round of the watch: reload a changed config, refresh the revocation list."""
        if self._config_file is not None:
            await self._reload_config(self._config_file)
        revocations = self.runtime.revocations
        if revocations is not None:
            await asyncio.to_thread(revocations.refresh)

    async def _prepare_keys(self, runtime: Runtime) -> None:
        """A new key source must hold every issuer's keys before it may serve:
        otherwise a reload during an IdP outage would turn valid tokens into 503s."""
        if runtime.keys is not self.runtime.keys:
            await warm_keys(runtime.keys, self._keys_changed)

    async def _reload_config(self, config_file: ConfigFile) -> None:
        """Apply every section of a changed file, or none of it.

        ``listen`` and ``telemetry`` (the listener, the span exporter and the
        metrics endpoint are set up at start) change only on restart: a file
        that changes them is refused whole, with a log line and
        ``authz_config_restart_required{setting}``, rather than applied in part.
        """
        audit: AuditWriter | None = None
        try:
            config = await asyncio.to_thread(config_file.poll)
            if config is None:
                return
            restart = [
                name
                for name in _RESTART_ONLY
                if getattr(config, name) != getattr(self.config, name)
            ]
            if restart:
                self._refuse(config_file, restart)
                return
            runtime = self._build(config, self.runtime)
            audit = self.observability.audit_for(config, self.config)
            await self._prepare_keys(runtime)
        except Exception as exc:
            if audit is not None:
                audit.close()
            # ConfigError names file, line and key; anything else is still a
            # failed reload, never a reason to drop the running configuration.
            message = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
            self.reload_status.failures += 1
            self.reload_status.last_error = message
            self.observability.metrics.reloaded("failed")
            log.error("configuration not reloaded, the running one stays in force:\n%s", message)
            return
        self.observability.apply(config)  # audit records name its version
        previous, self.runtime = self.runtime, runtime  # one reference swap: a Check sees
        # the old or the new runtime whole; the old key source stops after the swap.
        if audit is not None:
            await self.observability.replace_audit(audit)
        if previous.keys is not runtime.keys:
            await close_keys(previous.keys)
        self.reload_status.reloads += 1
        self.reload_status.last_error = None
        self.observability.metrics.reloaded("applied")
        log.info(
            "configuration reloaded from %s (%d routes)",
            config_file.path,
            len(runtime.decider.policy.routes) if config.routes else 0,
        )
        _warn_dry_run(config)
        await self._update_health()

    def _refuse(self, config_file: ConfigFile, restart: list[str]) -> None:
        message = f"{', '.join(restart)} change(s) only on restart"
        self.reload_status.failures += 1
        self.reload_status.last_error = message
        self.observability.metrics.reloaded("restart_required", restart)
        log.error(
            "configuration not reloaded from %s: %s; the running configuration stays in "
            "force, restart to apply the file",
            config_file.path,
            message,
            extra={"restart_required": restart},
        )


def _warn_dry_run(config: Config) -> None:
    if config.dry_run:
        log.warning(
            "DRY RUN: nothing is enforced; every deny is answered as an allow and "
            "recorded as a would-be deny (dry_run: true in the configuration)",
            extra={"dry_run": True},
        )


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


async def run(config: Config, config_file: ConfigFile | None = None) -> int:
    """Serve until SIGTERM or SIGINT, then drain gracefully; the exit status."""
    # Handlers first: a stop requested while the server starts is a clean stop
    # once it has started, never the default action's death.
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    unblock_stop_signals()  # a worker starts with them blocked (workers.py)
    server = AuthzServer(config, config_file=config_file)
    await server.start()
    await stopping.wait()
    log.info(
        "shutting down: NOT_SERVING, answering for %.1fs more, then draining for up to %.1fs",
        config.shutdown_delay_seconds,
        config.grace_period_seconds,
    )
    await server.stop()
    log.info("stopped")
    return 0
