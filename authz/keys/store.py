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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.trace import Tracer

from authz.config.models import Config, FetchConfig, IssuerConfig, KeySourceConfig
from authz.errors import ConfigError
from authz.keys.fetch import FetchError, HttpFetcher
from authz.keys.sources import (
    IssuerKeys,
    VerificationKey,
    combine,
    keys_from_jwks,
    load_local_source,
)
from authz.observability.metrics import key_events

__all__ = ["FetcherFactory", "IssuerStatus", "KeyStore", "MonotonicClock", "next_delay"]

log = logging.getLogger(__name__)

FetcherFactory = Callable[[IssuerConfig, Path | None], HttpFetcher]
_KUBERNETES_JWKS_PATH = "/openid/v1/jwks"
_DISCOVERY_PATH = "/.well-known/openid-configuration"


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()


@dataclass(frozen=True, slots=True)
class IssuerStatus:
    """What an operator needs to know about one issuer's keys, right now."""

    issuer: str
    key_count: int
    usable: bool
    remote: bool
    seconds_since_success: float | None  # None: never fetched (or no remote source)
    last_error: str | None
    consecutive_failures: int


@dataclass
class _IssuerState:
    config: IssuerConfig
    allowed: frozenset[str]
    local: dict[int, list[VerificationKey]]
    stamps: dict[int, tuple[int, int, int] | None]
    remote_source: KeySourceConfig | None
    fetcher: HttpFetcher | None
    remote: list[VerificationKey] = field(default_factory=list)
    remote_at: float | None = None
    remote_max_age: float | None = None
    last_attempt: float = -math.inf
    last_error: str | None = None
    failures: int = 0
    inflight: asyncio.Task[bool] | None = None
    local_loaded_at: float = field(default_factory=time.time)  # wall clock, for key age
    current: IssuerKeys = field(default_factory=lambda: IssuerKeys({}, ()))

    @property
    def name(self) -> str:
        return self.config.issuer


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is rewritten or a symlink is swapped."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino)


def next_delay(fetch: FetchConfig, ok: bool, failures: int, max_age: float | None) -> float:
    """Seconds until the next fetch: the provider's max-age within bounds after a
    success, exponential backoff (capped at the refresh interval) after a failure."""
    if ok:
        wanted = fetch.refresh_seconds if max_age is None else max_age
        return min(max(wanted, fetch.refresh_min_seconds), fetch.refresh_max_seconds)
    backoff = fetch.retry_initial_seconds * 2 ** min(max(failures, 1) - 1, 30)
    return float(min(backoff, fetch.refresh_seconds))


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
    ) -> None:
        self._config = config
        self._clock = clock or MonotonicClock()
        self._issuers: dict[str, _IssuerState] = {}
        self._listeners: list[Callable[[], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._warmed = False
        for issuer in config.issuers:
            self._issuers[issuer.issuer] = self._initial_state(issuer, fetcher_factory)

    def _initial_state(self, issuer: IssuerConfig, factory: FetcherFactory) -> _IssuerState:
        allowed = frozenset(issuer.algorithms)
        local: dict[int, list[VerificationKey]] = {}
        stamps: dict[int, tuple[int, int, int] | None] = {}
        remote_source = None
        for index, source in enumerate(issuer.keys):
            if source.remote:
                remote_source = source
                continue
            path = self._file_of(source)
            stamps[index] = _stamp(path) if path else None
            local[index] = load_local_source(
                source, self._config, self._where(issuer, index), allowed
            )
        fetcher = None
        if remote_source is not None:
            ca_file = (
                remote_source.kubernetes.ca_file
                if remote_source.kubernetes is not None
                else issuer.fetch.ca_file
            )
            try:
                fetcher = factory(issuer, self._config.resolve(ca_file) if ca_file else None)
            except FetchError as exc:
                raise ConfigError(f"issuer {issuer.issuer!r}: {exc}") from None
        state = _IssuerState(
            config=issuer,
            allowed=allowed,
            local=local,
            stamps=stamps,
            remote_source=remote_source,
            fetcher=fetcher,
        )
        self._rebuild(state, notify=False)
        if not state.current.usable and remote_source is None:
            raise ConfigError(
                f"issuer {issuer.issuer!r}: no usable key for algorithms {sorted(allowed)}"
            )
        return state

    def _file_of(self, source: KeySourceConfig) -> Path | None:
        path = source.jwks_file or source.pem_file or source.secret_file
        return self._config.resolve(path) if path is not None else None

    @staticmethod
    def _where(issuer: IssuerConfig, index: int) -> str:
        return f"issuer {issuer.issuer!r} keys[{index}] ({issuer.keys[index].describe()})"

    # --- the KeySource protocol (request path) -------------------------------

    def keys_for(self, issuer: str) -> IssuerKeys | None:
        state = self._issuers.get(issuer)
        if state is None:
            return None
        if state.remote_at is not None and self._is_stale(state):
            self._expire(state)
        return state.current

    def ready(self) -> bool:
        """All issuers usable once (start-up), then: at least one still usable.

        One identity provider's outage must not take the whole service out of
        rotation, but a fresh replica should not serve before its keys arrive.
        """
        if not self._warmed:
            self._warmed = all(state.current.usable for state in self._issuers.values())
            return self._warmed
        return any(state.current.usable for state in self._issuers.values())

    async def refetch(self, issuer: str, budget: float = math.inf) -> bool:
        """After an unknown kid: refetch (single-flight, rate-limited); True if keys were
        fetched within ``budget`` seconds, so that verifying again is worth it."""
        state = self._issuers.get(issuer)
        if state is None or state.fetcher is None:
            return False
        inflight = state.inflight
        if inflight is None or inflight.done():
            cooldown = state.config.fetch.unknown_kid_cooldown_seconds
            if self._clock.now() - state.last_attempt < cooldown:
                key_events.key_fetch(issuer, "rate_limited")
                return False
            inflight = self._fetch_once(state)
        wait = max(0.0, min(state.config.fetch.unknown_kid_wait_seconds, budget))
        try:
            # shield: a Check that stops waiting must not cancel the shared fetch.
            return await asyncio.wait_for(asyncio.shield(inflight), wait)
        except TimeoutError:
            return False

    # --- lifecycle ------------------------------------------------------------

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Called (on the event loop) whenever an issuer's keys change."""
        self._listeners.append(listener)

    async def start(self) -> None:
        for state in self._issuers.values():
            if state.local:
                key_events.keys_loaded(state.name, state.local_loaded_at)
            if state.fetcher is not None:
                self._tasks.append(asyncio.create_task(self._refresh_loop(state)))
            if any(stamp is not None for stamp in state.stamps.values()):
                self._tasks.append(asyncio.create_task(self._watch_files(state)))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for state in self._issuers.values():
            if state.inflight is not None:
                state.inflight.cancel()
        await asyncio.gather(
            *self._tasks,
            *(s.inflight for s in self._issuers.values() if s.inflight is not None),
            return_exceptions=True,
        )
        self._tasks.clear()
        for state in self._issuers.values():
            if state.fetcher is not None:
                await state.fetcher.aclose()

    async def fetch_all(self) -> dict[str, bool]:
        """Fetch every remote source once, now (start-up checks, `check-config`)."""
        states = [s for s in self._issuers.values() if s.fetcher is not None]
        results = await asyncio.gather(*(self._fetch_once(s) for s in states))
        return {state.name: ok for state, ok in zip(states, results, strict=True)}

    def status(self) -> list[IssuerStatus]:
        now = self._clock.now()
        return [
            IssuerStatus(
                issuer=state.name,
                key_count=len(state.current.all()),
                usable=state.current.usable,
                remote=state.fetcher is not None,
                seconds_since_success=None if state.remote_at is None else now - state.remote_at,
                last_error=state.last_error,
                consecutive_failures=state.failures,
            )
            for state in self._issuers.values()
        ]

    # --- remote keys ------------------------------------------------------------

    def _fetch_once(self, state: _IssuerState) -> asyncio.Task[bool]:
        """The issuer's fetch in progress, or a new one: never two at once."""
        if state.inflight is None or state.inflight.done():
            state.last_attempt = self._clock.now()
            state.inflight = asyncio.create_task(self._fetch(state))
        return state.inflight

    async def _fetch(self, state: _IssuerState) -> bool:
        try:
            keys, max_age = await self._fetch_remote(state)
        except asyncio.CancelledError:
            raise
        except FetchError as exc:
            self._failed(state, str(exc), "timeout" if "timed out" in str(exc) else "error")
            return False
        except ConfigError as exc:  # the document arrived but holds no usable key set
            self._failed(state, str(exc), "invalid")
            return False
        except Exception as exc:  # never let a refresh task die
            log.exception("issuer %r: unexpected error fetching keys", state.name)
            self._failed(state, f"{type(exc).__name__}: {exc}", "error")
            return False
        key_events.key_fetch(state.name, "ok")
        key_events.keys_loaded(state.name, time.time())
        kids_before = set(state.current.by_kid)
        state.remote = keys
        state.remote_at = self._clock.now()
        state.remote_max_age = max_age
        state.failures = 0
        state.last_error = None
        self._rebuild(state)
        kids_after = set(state.current.by_kid)
        if kids_after != kids_before:
            log.info(
                "issuer %r: %d keys; added %s, removed %s",
                state.name,
                len(state.current.all()),
                sorted(kids_after - kids_before),
                sorted(kids_before - kids_after),
            )
        return True

    def _failed(self, state: _IssuerState, error: str, result: str) -> None:
        key_events.key_fetch(state.name, result)
        state.failures += 1
        state.last_error = error
        age = (
            "never fetched"
            if state.remote_at is None
            else (f"last good keys {self._clock.now() - state.remote_at:.0f}s old")
        )
        log.warning("issuer %r: key fetch failed (%s; %s)", state.name, error, age)
        if state.remote_at is not None and self._is_stale(state):
            self._expire(state)

    async def _fetch_remote(
        self, state: _IssuerState
    ) -> tuple[list[VerificationKey], float | None]:
        source, fetcher = state.remote_source, state.fetcher
        if source is None or fetcher is None:
            raise FetchError(f"issuer {state.name!r} has no remote key source")
        headers: dict[str, str] = {}
        if source.jwks_uri is not None:
            jwks_url = source.jwks_uri
        elif source.kubernetes is not None:
            token_path = self._config.resolve(source.kubernetes.token_file)
            try:
                # Projected tokens rotate: read it for every fetch.
                token = token_path.read_text().strip()
            except OSError as exc:
                raise FetchError(f"service account token {token_path}: {exc.strerror}") from None
            headers["authorization"] = f"Bearer {token}"
            api_server = source.kubernetes.api_server.rstrip("/")
            await self._discover(state, api_server + _DISCOVERY_PATH, headers)
            jwks_url = api_server + _KUBERNETES_JWKS_PATH
        else:
            jwks_url = await self._discover(state, state.config.discovery_url(source), headers)
        fetched = await fetcher.get_json(jwks_url, headers)
        where = f"issuer {state.name!r} ({jwks_url})"
        keys = keys_from_jwks(fetched.document, where, state.allowed)
        if not keys:
            # Keep the last good keys: an empty or all-invalid set is far more
            # likely a provider glitch than a deliberate lock-out.
            raise ConfigError(f"{jwks_url}: no usable key in the JWKS")
        return keys, fetched.max_age

    async def _discover(self, state: _IssuerState, url: str, headers: dict[str, str]) -> str:
        assert state.fetcher is not None
        document = (await state.fetcher.get_json(url, headers)).document
        if not isinstance(document, dict):
            raise FetchError(f"{url}: discovery document is not a JSON object")
        if document.get("issuer") != state.name:
            # OpenID Connect Discovery §4.3: the issuers must be identical.
            raise FetchError(f"{url}: discovery document names another issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise FetchError(f"{url}: discovery document has no jwks_uri")
        scheme = jwks_uri.split("://", 1)[0].lower()
        if scheme != "https" and not (scheme == "http" and state.config.fetch.allow_http):
            raise FetchError(f"{url}: jwks_uri is not https")
        return jwks_uri

    async def _refresh_loop(self, state: _IssuerState) -> None:
        while True:
            ok = await self._fetch_once(state)
            delay = next_delay(state.config.fetch, ok, state.failures, state.remote_max_age)
            # Jitter keeps many replicas from fetching in lockstep (not security-relevant).
            await asyncio.sleep(delay * random.uniform(0.9, 1.1))  # noqa: S311

    def _is_stale(self, state: _IssuerState) -> bool:
        assert state.remote_at is not None
        return self._clock.now() - state.remote_at > state.config.fetch.max_stale_seconds

    def _expire(self, state: _IssuerState) -> None:
        log.error(
            "issuer %r: keys older than max_stale_seconds=%s dropped (last error: %s)",
            state.name,
            state.config.fetch.max_stale_seconds,
            state.last_error,
        )
        state.remote = []
        state.remote_at = None
        self._rebuild(state)

    # --- local files ----------------------------------------------------------

    async def _watch_files(self, state: _IssuerState) -> None:
        while True:
            await asyncio.sleep(state.config.fetch.file_poll_seconds)
            self.reload_files(state.name)

    def reload_files(self, issuer: str) -> None:
        """Re-read the issuer's key files that changed; a broken file keeps its old keys."""
        state = self._issuers[issuer]
        changed = False
        for index, old_stamp in state.stamps.items():
            source = state.config.keys[index]
            path = self._file_of(source)
            stamp = _stamp(path) if path else None
            if stamp == old_stamp:
                continue
            state.stamps[index] = stamp  # retried only when the file changes again
            try:
                keys = load_local_source(
                    source, self._config, self._where(state.config, index), state.allowed
                )
            except ConfigError as exc:
                log.error("keeping the previous keys: %s", exc)
                continue
            state.local[index] = keys
            changed = True
            log.info("issuer %r: reloaded %s", state.name, source.describe())
        if changed:
            state.local_loaded_at = time.time()
            key_events.keys_loaded(state.name, state.local_loaded_at)
            self._rebuild(state)

    def _rebuild(self, state: _IssuerState, notify: bool = True) -> None:
        keys = [key for index in sorted(state.local) for key in state.local[index]]
        keys.extend(state.remote)
        state.current = combine(keys, f"issuer {state.name!r}")
        if notify:
            for listener in self._listeners:
                with contextlib.suppress(Exception):
                    listener()
