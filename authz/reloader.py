"""Live reload: watching the configuration and revocation files, and what a change may do.

The ``Reloader`` owns the watch and the reload bookkeeping (``ReloadStatus``);
the server owns the running runtime and swaps it in one assignment when the
reloader hands it a new one. A changed file is applied whole or not at all:

- ``listen``, ``telemetry``, ``serving`` and ``tls`` (the listener and its
  credentials, the span exporter, the metrics endpoint and the thread pool are
  set up at start; the certificate files themselves are re-read when they
  change) change only on restart: a file that changes them is refused whole, with a log line and
  ``authz_config_restart_required{setting}``;
- a file that does not parse or validate, or whose keys, audit sinks or
  revocation list cannot be loaded, keeps the running configuration;
- a file without routes, when the running configuration has them, is refused
  unless it says ``allow_no_routes: true``: without routes any valid token is
  allowed everywhere, and a file cut before ``routes:`` (or a section deleted
  by mistake) must not make it so silently;
- a new key source must hold every issuer's keys before it may serve:
  otherwise a reload during an IdP outage would turn valid tokens into 503s.

All of this runs on the server's asyncio loop, never on a Check's thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from authz.check.replay import ReplayStore
from authz.config.models import Config
from authz.errors import ConfigError
from authz.keys.lifecycle import close_keys, warm_keys
from authz.observability.audit import AuditWriter
from authz.observability.observe import Observability
from authz.runtime import ConfigFile, ReloadStatus, Runtime, close_replay

__all__ = ["RESTART_ONLY", "Reloader", "Swap", "widened"]

log = logging.getLogger(__name__)

# Sections built once at start: a reload that changes them is refused, not half-applied.
RESTART_ONLY = ("listen", "telemetry", "serving", "tls")


class Swap(Protocol):
    """What the reloader needs of the server: its runtime, and the means to replace it."""

    @property
    def runtime(self) -> Runtime: ...

    def build(self, config: Config, previous: Runtime) -> Runtime: ...

    def swap(self, runtime: Runtime) -> Runtime: ...


class Reloader:
    def __init__(
        self,
        server: Swap,
        observability: Observability,
        config_file: ConfigFile | None,
        keys_changed: Callable[[], None],
        after: Callable[[], Awaitable[None]],
    ) -> None:
        self._server = server
        self._observe = observability
        self._config_file = config_file
        self._keys_changed = keys_changed
        self._after = after  # e.g. health follows the new keys
        self.status = ReloadStatus()
        # Replay stores a reload replaced, each closed once no Check can hold it.
        self._retiring: set[asyncio.Task[None]] = set()

    async def watch(self) -> None:
        """Poll the config and revocation files until cancelled (interval 0: never)."""
        while (interval := self._server.runtime.config.watch_interval_seconds) > 0:
            await asyncio.sleep(interval)  # a poll interval, not a readiness guess
            try:
                await self.poll()
            except Exception:
                # The watch must outlive any surprise; the running config stays.
                log.exception("watching the configuration failed; will retry")

    async def poll(self) -> None:
        """One round of the watch: reload a changed config, refresh the revocation list."""
        # A file written at its path is taken once it stood still this long
        # (watch.WholeFile): the interval that spaces these rounds.
        settle = self._server.runtime.config.watch_interval_seconds
        if self._config_file is not None:
            await self._reload(self._config_file, settle)
        revocations = self._server.runtime.revocations
        if revocations is not None:
            await asyncio.to_thread(revocations.refresh, settle)

    async def _reload(self, config_file: ConfigFile, settle: float) -> None:
        running = self._server.runtime
        audit: AuditWriter | None = None
        try:
            config = await asyncio.to_thread(config_file.poll, settle)
            if config is None:
                return
            restart = [
                name
                for name in RESTART_ONLY
                if getattr(config, name) != getattr(running.config, name)
            ]
            if restart:
                self._refuse(config_file, restart)
                return
            widening = widened(config, running.config)
            if widening is not None:
                self._refuse_widening(config_file, widening)
                return
            runtime = self._server.build(config, running)
            audit = self._observe.audit_for(config, running.config)
            if runtime.keys is not running.keys:
                await warm_keys(runtime.keys, self._keys_changed)
        except Exception as exc:
            if audit is not None:
                audit.close()
            # ConfigError names file, line and key; anything else is still a
            # failed reload, never a reason to drop the running configuration.
            message = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
            self._failed(message, "failed")
            log.error("configuration not reloaded, the running one stays in force:\n%s", message)
            return
        self._observe.apply(config)
        previous = self._server.swap(runtime)
        if audit is not None:
            await self._observe.replace_audit(audit)
        if previous.keys is not runtime.keys:
            await close_keys(previous.keys)
        if previous.replay is not None and previous.replay is not runtime.replay:
            # A Check that took the previous runtime may still use its store:
            # closed once such Checks are past the grace period, the same bound
            # a shutdown gives them.
            retire = self._retire(previous.replay, running.config.grace_period_seconds)
            task = asyncio.create_task(retire, name="authz-retire-replay-store")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        self.status.reloads += 1
        self.status.last_error = None
        self._observe.metrics.reloaded("applied")
        log.info(
            "configuration reloaded from %s (version %s, %d routes)",
            config_file.path,
            config.version,
            len(runtime.decider.policy.routes) if config.routes else 0,
            extra={"config_version": config.version},
        )
        if running.config.routes is not None and config.routes is None:
            log.warning(
                "routes removed from %s on purpose (allow_no_routes: true): every request "
                "with a valid token is now allowed, whatever its path",
                config_file.path,
            )
        warn_dry_run(config)
        await self._after()

    @staticmethod
    async def _retire(store: ReplayStore, after: float) -> None:
        try:
            await asyncio.sleep(after)  # the bound on a Check's life, not a guess
        finally:  # also when the server stops first: then nothing uses it either
            await asyncio.to_thread(close_replay, store)

    async def close(self) -> None:
        """Close the replaced replay stores now (the server is stopping)."""
        for task in tuple(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)

    def _failed(self, message: str, result: str, restart: list[str] | None = None) -> None:
        self.status.failures += 1
        self.status.last_error = message
        self._observe.metrics.reloaded(result, restart or ())

    def _refuse(self, config_file: ConfigFile, restart: list[str]) -> None:
        message = f"{', '.join(restart)} change(s) only on restart"
        self._failed(message, "restart_required", restart)
        log.error(
            "configuration not reloaded from %s: %s; the running configuration stays in "
            "force, restart to apply the file",
            config_file.path,
            message,
            extra={"restart_required": restart},
        )

    def _refuse_widening(self, config_file: ConfigFile, widening: str) -> None:
        self._failed(widening, "refused_widening")
        log.error(
            "configuration not reloaded from %s: %s; the running configuration stays in force",
            config_file.path,
            widening,
            extra={"refused_widening": True},
        )


def widened(config: Config, running: Config) -> str | None:
    """What ``config`` would allow that ``running`` denies without saying so; None
    if nothing. Only the loss of every route: any other rule change is one its
    author wrote, while no routes is what a cut or emptied file says too."""
    if running.routes is None or config.routes is not None or config.allow_no_routes:
        return None
    return (
        f"it has no routes, and the running configuration has {len(running.routes)}: "
        "their modes and requirements would no longer apply, and any valid token would "
        "be allowed everywhere; if that is meant, say so with allow_no_routes: true"
    )


def warn_dry_run(config: Config) -> None:
    if config.dry_run:
        log.warning(
            "DRY RUN: nothing is enforced; every deny is answered as an allow and "
            "recorded as a would-be deny (dry_run: true in the configuration)",
            extra={"dry_run": True},
        )
