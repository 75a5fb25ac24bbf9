"""The server: Checks on gRPC's own threads, health, graceful shutdown, the runtime swap.

``grpc.server`` reads calls on gRPC's C threads and runs each Check on the
admission pool (serving/admission.py: a bounded number of threads, a bound on
pending Checks), where it is decided synchronously (serving/service.py). The
work that waits — key refreshes and refetches, file watches, reloads, health
changes — runs on the asyncio loop that started the server (``authz serve``:
the main thread's), never on a Check's thread; a Check that needs a refetch
hands it to that loop and waits for it within its budget (keys/waiting.py).

The server owns the running ``Runtime`` and replaces it in one assignment;
the ``Reloader`` (reloader.py) decides when.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from authz import AUTHORIZATION_SERVICE
from authz.check.verify import Clock
from authz.config.models import Config
from authz.errors import ConfigError
from authz.keys.lifecycle import close_keys, same_issuers, start_keys
from authz.keys.readiness import issuers_ready, ready
from authz.keys.sources import KeySource
from authz.keys.waiting import LoopBridge
from authz.observability.observe import Observability
from authz.reloader import Reloader, warn_dry_run
from authz.runtime import (
    ConfigFile,
    ReloadStatus,
    Runtime,
    build_runtime,
    close_replay,
    same_replay,
)
from authz.serving.admission import Admission
from authz.serving.service import AuthorizationService
from authz.serving.tls import ServerCertificates
from authz.workers import WORKER_INDEX_ENV, unblock_stop_signals

__all__ = ["SERVICE_NAME", "AuthorizationService", "AuthzServer", "run"]

log = logging.getLogger(__name__)

# The health service (besides "") that Envoy and the probes ask about.
SERVICE_NAME = AUTHORIZATION_SERVICE
# Health and reflection-free housekeeping RPCs: a couple of threads of gRPC's own pool.
_HEALTH_THREADS = 2


class AuthzServer:
    """One listening server. ``start`` binds; ``stop`` drains.

    With ``config_file``, the file is watched and a valid change is swapped in
    (reloader.py); ``reload_status`` counts reloads and failures.
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
        self._bridge = LoopBridge()
        self._runtime = self.build(config, None)
        # Where the server listens and how it serves are fixed at start.
        self._listen = config.listen
        self._reloader = Reloader(
            self, self.observability, config_file, self._keys_changed, self._update_health
        )
        self._watcher: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.health = health.HealthServicer()
        self.admission = Admission(
            config.serving.threads, config.serving.max_pending_checks, self.observability.serving
        )
        self._housekeeping = ThreadPoolExecutor(_HEALTH_THREADS, thread_name_prefix="authz-grpc")
        # so_reuseport off: a second server on a taken port must fail, not share
        # it; except among the workers of one `authz serve --workers N`.
        reuse_port = 1 if WORKER_INDEX_ENV in os.environ else 0
        self._server = grpc.server(self._housekeeping, options=[("grpc.so_reuseport", reuse_port)])
        self._service = AuthorizationService(
            lambda: self._runtime, self.observability, self.admission, self._bridge
        )
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

    # --- the runtime: built, read, swapped -------------------------------------------

    def build(self, config: Config, previous: Runtime | None) -> Runtime:
        keys = self._injected_keys
        if keys is None and previous is not None and same_issuers(previous.config, config):
            # Unchanged issuers keep their key source: its fetched keys, its state.
            keys = previous.keys
        tracer = self.observability.tracing.tracer
        revocations = previous.revocations if previous is not None else None
        # Unchanged replay settings keep the store: a reload must not forget
        # the proofs seen, or each could be replayed once more.
        replay = None
        if previous is not None and same_replay(previous.config, config):
            replay = previous.replay
        return build_runtime(
            config,
            keys,
            self._clock,
            tracer,
            self._bridge,
            revocations=revocations,
            replay=replay,
            events=self.observability.metrics,  # this server's key events, no one else's
        )

    @property
    def runtime(self) -> Runtime:
        return self._runtime

    def swap(self, runtime: Runtime) -> Runtime:
        """Serve ``runtime`` from now on; the previous one. One reference
        assignment: a Check holds the old or the new runtime, whole."""
        previous, self._runtime = self._runtime, runtime
        return previous

    @property
    def config(self) -> Config:
        return self._runtime.config

    @property
    def keys(self) -> KeySource:
        return self._runtime.keys

    @property
    def reload_status(self) -> ReloadStatus:
        return self._reloader.status

    async def poll_files(self) -> None:
        """One round of the file watch (reloader.Reloader.poll)."""
        await self._reloader.poll()

    # --- life ----------------------------------------------------------------------------

    async def start(self) -> None:
        address = self._listen
        if address.startswith("unix:"):
            _remove_stale_socket(Path(address.removeprefix("unix:")))
        tls = self.config.tls
        try:
            if tls is None:
                self.port = self._server.add_insecure_port(address)
            else:
                credentials = ServerCertificates(tls, self.config).credentials()
                self.port = self._server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise ConfigError(f"listen {address}: cannot bind: {exc}") from None
        self._loop = asyncio.get_running_loop()
        self._bridge.bind(self._loop)
        self.observability.start()
        self.observability.serving.follow_readiness(self.readiness)
        await start_keys(self.keys, self._keys_changed)
        await self._update_health()
        self._server.start()
        self._watcher = asyncio.create_task(self._reloader.watch(), name="authz-watch")
        log.info(
            "listening on %s (%d threads, at most %d pending Checks)",
            self.address,
            self.admission.threads,
            self.admission.limit,
            extra={"address": self.address},
        )
        warn_dry_run(self.config)
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

    def readiness(self) -> dict[str, bool]:
        """issuer -> whether it has usable keys now (keys/readiness.py)."""
        runtime = self._runtime
        return issuers_ready(runtime.keys, [issuer.issuer for issuer in runtime.config.issuers])

    async def _update_health(self) -> None:
        if self._draining:
            return  # NOT_SERVING for good: a key change must not undo the drain
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready(self.config.readiness, self.readiness())
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", SERVICE_NAME):
            self.health.set(service, status)

    async def stop(self, grace: float | None = None, delay: float | None = None) -> None:
        """Report NOT_SERVING, keep answering for ``delay``, then stop accepting and
        let in-flight Checks finish within ``grace`` (defaults: the configuration's
        ``shutdown_delay_seconds`` and ``grace_period_seconds``).

        The order matters for rolling updates: whoever balances over the replicas
        sees NOT_SERVING first and stops sending, and only then does the listener
        close, so no Check is sent to a socket that is gone. Every Check gRPC
        read is recorded before the audit trail closes: one still queued or
        deciding when the grace period ends is cancelled, decided, and recorded
        as ``cancelled``.
        """
        self.health.enter_graceful_shutdown()
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
        stopped = self._server.stop(self.config.grace_period_seconds if grace is None else grace)
        await asyncio.to_thread(stopped.wait)
        # The pools finish what they hold (each Check is bounded by its budget);
        # a refetch they wait on needs this loop, so wait off it.
        await asyncio.to_thread(self.admission.shutdown, True)
        await asyncio.to_thread(self._housekeeping.shutdown, True)
        await close_keys(self.keys)
        await self._reloader.close()
        await asyncio.to_thread(close_replay, self._runtime.replay)
        self._bridge.bind(None)
        # Every Check has been answered and recorded: now the trail can be completed.
        await self.observability.stop()

    async def wait(self) -> None:
        await asyncio.to_thread(self._server.wait_for_termination)


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
