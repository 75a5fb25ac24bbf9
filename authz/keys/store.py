"""Every issuer's current keys, kept right in the background.

Per issuer:

- local sources (``jwks_file``, ``pem_file``, ``secret_file``, inline) are read
  at start-up (an error there is a configuration error) and re-read when a file
  changes, including the symlink swap of a Kubernetes ConfigMap; a broken new
  file keeps the previous keys;
- one remote source (``jwks_uri``, OIDC ``discovery``, ``kubernetes``) is
  fetched off the request path: periodically, honouring ``Cache-Control:
  max-age`` within bounds; after a failure, retried with exponential backoff;
- an unknown ``kid`` may trigger one refetch, single-flight, at most once per
  cooldown: a flood of made-up kids costs the identity provider one request;
- when fetches fail, the last good keys keep serving for ``max_stale_seconds``
  after the last success, and are then dropped (the issuer answers 503);
- keys the provider removed stop verifying after the next successful fetch.

Nothing here runs on the request path except a dictionary lookup and, for an
unknown kid, a bounded wait on the shared refetch.

Each issuer's keys and their state are an ``IssuerKeyState`` (issuer.py); the
store maps issuers to them and runs their background tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry.trace import Tracer

from authz.config.models import Config, IssuerConfig
from authz.keys.events import NO_EVENTS, KeyEvents
from authz.keys.fetch import HttpFetcher
from authz.keys.issuer import FetcherFactory, IssuerKeyState, MonotonicClock, next_delay
from authz.keys.sources import IssuerKeys, IssuerStatus

__all__ = [
    "FetcherFactory",
    "IssuerStatus",
    "KeyStore",
    "MonotonicClock",
    "next_delay",
    "traced_fetchers",
]


def _default_fetcher(issuer: IssuerConfig, ca_file: Path | None) -> HttpFetcher:
    return HttpFetcher(issuer.fetch, ca_file)


def traced_fetchers(tracer: Tracer) -> FetcherFactory:
    """HTTP fetchers whose fetches are spans on ``tracer``."""

    def factory(issuer: IssuerConfig, ca_file: Path | None) -> HttpFetcher:
        return HttpFetcher(issuer.fetch, ca_file, tracer)

    return factory


class KeyStore:
    """The production KeySource: local and remote keys per issuer, refreshed."""

    def __init__(
        self,
        config: Config,
        clock: Any = None,
        fetcher_factory: FetcherFactory = _default_fetcher,
        events: KeyEvents = NO_EVENTS,
    ) -> None:
        clock = clock or MonotonicClock()
        self._events = events
        self._listeners: list[Callable[[], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._warmed = False
        self._issuers = {
            issuer.issuer: IssuerKeyState(
                issuer, config, clock, fetcher_factory, self._changed, events=events
            )
            for issuer in config.issuers
        }

    # --- the KeySource protocol (request path) -------------------------------

    def keys_for(self, issuer: str) -> IssuerKeys | None:
        state = self._issuers.get(issuer)
        return None if state is None else state.current()

    def ready(self) -> bool:
        """All issuers usable once (start-up), then: at least one still usable.

        One identity provider's outage must not take the whole service out of
        rotation, but a fresh replica should not serve before its keys arrive.
        """
        if not self._warmed:
            self._warmed = all(state.usable for state in self._issuers.values())
            return self._warmed
        return any(state.usable for state in self._issuers.values())

    async def refetch(self, issuer: str, budget: float = math.inf) -> bool:
        """After an unknown kid: refetch (single-flight, rate-limited); True if keys were
        fetched within ``budget`` seconds, so that verifying again is worth it."""
        state = self._issuers.get(issuer)
        return False if state is None else await state.refetch(budget)

    # --- lifecycle ------------------------------------------------------------

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Called (on the event loop) whenever an issuer's keys change."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            with contextlib.suppress(Exception):
                listener()

    async def start(self) -> None:
        for state in self._issuers.values():
            if state.has_local:
                self._events.keys_loaded(state.name, state.local_loaded_at)
            if state.fetcher is not None:
                self._tasks.append(asyncio.create_task(state.refresh_loop()))
            if state.has_files:
                self._tasks.append(asyncio.create_task(state.watch_files()))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for state in self._issuers.values():
            await state.close()

    async def fetch_all(self) -> dict[str, bool]:
        """Fetch every remote source once, now (start-up checks, `check-config`)."""
        states = [s for s in self._issuers.values() if s.fetcher is not None]
        results = await asyncio.gather(*(s.fetch_once() for s in states))
        return {state.name: ok for state, ok in zip(states, results, strict=True)}

    def status(self) -> list[IssuerStatus]:
        return [state.status() for state in self._issuers.values()]
