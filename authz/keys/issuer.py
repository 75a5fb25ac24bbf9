"""One issuer's keys, kept right: its local sources, its remote source, and when
keys are too old to keep.

An ``IssuerKeyState`` owns everything about one issuer's keys: the keys read
from its local sources (re-read when their file changes), the keys from its
remote source (fetched, refetched, dropped after ``max_stale_seconds``), the
set the verifier uses (the two combined), and the fetch in progress.
``KeyStore`` (store.py) holds one per issuer and runs their background tasks.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from authz.config.models import Config, FetchConfig, IssuerConfig, KeySourceConfig
from authz.errors import ConfigError
from authz.keys.events import NO_EVENTS, KeyEvents
from authz.keys.fetch import FetchError, HttpFetcher
from authz.keys.sources import (
    IssuerKeys,
    IssuerStatus,
    VerificationKey,
    combine,
    keys_from_jwks,
    load_local_source,
)
from authz.watch import WatchedFile

__all__ = ["FetcherFactory", "IssuerKeyState", "MonotonicClock", "next_delay"]

# The key store's logger: its lines keep the name they are filtered and searched by.
log = logging.getLogger("authz.keys.store")

FetcherFactory = Callable[[IssuerConfig, Path | None], HttpFetcher]
_KUBERNETES_JWKS_PATH = "/openid/v1/jwks"
_DISCOVERY_PATH = "/.well-known/openid-configuration"


class _Clock(Protocol):
    def now(self) -> float: ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()


def next_delay(fetch: FetchConfig, ok: bool, failures: int, max_age: float | None) -> float:
    """Seconds until the next fetch: the provider's max-age within bounds after a
    success, exponential backoff (capped at the refresh interval) after a failure."""
    if ok:
        wanted = fetch.refresh_seconds if max_age is None else max_age
        return min(max(wanted, fetch.refresh_min_seconds), fetch.refresh_max_seconds)
    backoff = fetch.retry_initial_seconds * 2 ** min(max(failures, 1) - 1, 30)
    return float(min(backoff, fetch.refresh_seconds))


class IssuerKeyState:
    """One issuer's keys: local and remote, combined, and their fetch state.

    ``on_change`` is called (on the event loop) whenever the combined keys are
    rebuilt after start-up.
    """

    def __init__(
        self,
        issuer: IssuerConfig,
        config: Config,
        clock: _Clock,
        fetcher_factory: FetcherFactory,
        on_change: Callable[[], None],
        *,
        events: KeyEvents = NO_EVENTS,
    ) -> None:
        self.config = issuer
        self._events = events
        self._root = config
        self._clock = clock
        self._on_change = on_change
        self._allowed = frozenset(issuer.algorithms)
        self._local: dict[int, list[VerificationKey]] = {}
        self._files: dict[int, WatchedFile] = {}
        self._remote_source: KeySourceConfig | None = None
        for index, source in enumerate(issuer.keys):
            if source.remote:
                self._remote_source = source
                continue
            path = self._file_of(source)
            if path is not None:
                # Watched from before the read: a change during it is seen later.
                self._files[index] = WatchedFile(path)
            self._local[index] = load_local_source(
                source, config, self._where(index), self._allowed
            )
        self.fetcher = self._make_fetcher(fetcher_factory)
        self._remote: list[VerificationKey] = []
        self._remote_at: float | None = None
        self._remote_max_age: float | None = None
        self._last_attempt = -math.inf
        self._last_error: str | None = None
        self._failures = 0
        self._inflight: asyncio.Task[bool] | None = None
        self.local_loaded_at = time.time()  # wall clock, for key age
        self._keys = IssuerKeys({}, ())
        self._rebuild(notify=False)
        if not self._keys.usable and self._remote_source is None:
            raise ConfigError(
                f"issuer {self.name!r}: no usable key for algorithms {sorted(self._allowed)}"
            )

    def _make_fetcher(self, factory: FetcherFactory) -> HttpFetcher | None:
        source = self._remote_source
        if source is None:
            return None
        ca_file = (
            source.kubernetes.ca_file
            if source.kubernetes is not None
            else self.config.fetch.ca_file
        )
        try:
            return factory(self.config, self._root.resolve(ca_file) if ca_file else None)
        except FetchError as exc:
            raise ConfigError(f"issuer {self.name!r}: {exc}") from None

    def _file_of(self, source: KeySourceConfig) -> Path | None:
        path = source.jwks_file or source.pem_file or source.secret_file
        return self._root.resolve(path) if path is not None else None

    def _where(self, index: int) -> str:
        return f"issuer {self.name!r} keys[{index}] ({self.config.keys[index].describe()})"

    @property
    def name(self) -> str:
        return self.config.issuer

    @property
    def has_local(self) -> bool:
        return bool(self._local)

    @property
    def has_files(self) -> bool:
        return bool(self._files)

    @property
    def usable(self) -> bool:
        """Whether the keys held now can verify anything (no expiry check: a
        readiness probe must not be what drops keys)."""
        return self._keys.usable

    # --- the request path -----------------------------------------------------

    def current(self) -> IssuerKeys:
        """The keys to verify with now; remote keys past ``max_stale_seconds`` are
        dropped first."""
        if self._remote_at is not None and self._is_stale():
            self._expire()
        return self._keys

    async def refetch(self, budget: float = math.inf) -> bool:
        """After an unknown kid: refetch (single-flight, rate-limited); True if keys were
        fetched within ``budget`` seconds, so that verifying again is worth it."""
        if self.fetcher is None:
            return False
        inflight = self._inflight
        if inflight is None or inflight.done():
            cooldown = self.config.fetch.unknown_kid_cooldown_seconds
            if self._clock.now() - self._last_attempt < cooldown:
                self._events.key_fetch(self.name, "rate_limited")
                return False
            inflight = self.fetch_once()
        wait = max(0.0, min(self.config.fetch.unknown_kid_wait_seconds, budget))
        try:
            # shield: a Check that stops waiting must not cancel the shared fetch.
            return await asyncio.wait_for(asyncio.shield(inflight), wait)
        except TimeoutError:
            return False

    def status(self) -> IssuerStatus:
        now = self._clock.now()
        return IssuerStatus(
            issuer=self.name,
            key_count=len(self._keys.all()),
            usable=self._keys.usable,
            remote=self.fetcher is not None,
            seconds_since_success=None if self._remote_at is None else now - self._remote_at,
            last_error=self._last_error,
            consecutive_failures=self._failures,
        )

    # --- remote keys ------------------------------------------------------------

    def fetch_once(self) -> asyncio.Task[bool]:
        """The issuer's fetch in progress, or a new one: never two at once."""
        if self._inflight is None or self._inflight.done():
            self._last_attempt = self._clock.now()
            self._inflight = asyncio.create_task(self._fetch())
        return self._inflight

    async def refresh_loop(self) -> None:
        """Fetch for ever: as the provider's max-age allows, backing off after failures."""
        while True:
            ok = await self.fetch_once()
            delay = next_delay(self.config.fetch, ok, self._failures, self._remote_max_age)
            # Jitter keeps many replicas from fetching in lockstep (not security-relevant).
            await asyncio.sleep(delay * random.uniform(0.9, 1.1))  # noqa: S311

    async def close(self) -> None:
        """Stop the fetch in progress, then the HTTP client."""
        inflight = self._inflight
        if inflight is not None:
            inflight.cancel()
            await asyncio.gather(inflight, return_exceptions=True)
        if self.fetcher is not None:
            await self.fetcher.aclose()

    async def _fetch(self) -> bool:
        try:
            keys, max_age = await self._fetch_remote()
        except asyncio.CancelledError:
            raise
        except FetchError as exc:
            self._failed(str(exc), "timeout" if exc.kind == "timeout" else "error")
            return False
        except ConfigError as exc:  # the document arrived but holds no usable key set
            self._failed(str(exc), "invalid")
            return False
        except Exception as exc:  # never let a refresh task die
            log.exception("issuer %r: unexpected error fetching keys", self.name)
            self._failed(f"{type(exc).__name__}: {exc}", "error")
            return False
        self._events.key_fetch(self.name, "ok")
        self._events.keys_loaded(self.name, time.time())
        kids_before = set(self._keys.by_kid)
        self._remote = keys
        self._remote_at = self._clock.now()
        self._remote_max_age = max_age
        self._failures = 0
        self._last_error = None
        self._rebuild()
        kids_after = set(self._keys.by_kid)
        if kids_after != kids_before:
            log.info(
                "issuer %r: %d keys; added %s, removed %s",
                self.name,
                len(self._keys.all()),
                sorted(kids_after - kids_before),
                sorted(kids_before - kids_after),
            )
        return True

    def _failed(self, error: str, result: str) -> None:
        self._events.key_fetch(self.name, result)
        self._failures += 1
        self._last_error = error
        age = (
            "never fetched"
            if self._remote_at is None
            else (f"last good keys {self._clock.now() - self._remote_at:.0f}s old")
        )
        log.warning("issuer %r: key fetch failed (%s; %s)", self.name, error, age)
        if self._remote_at is not None and self._is_stale():
            self._expire()

    async def _fetch_remote(self) -> tuple[list[VerificationKey], float | None]:
        source, fetcher = self._remote_source, self.fetcher
        if source is None or fetcher is None:
            raise FetchError(f"issuer {self.name!r} has no remote key source", "no_source")
        headers: dict[str, str] = {}
        if source.jwks_uri is not None:
            jwks_url = source.jwks_uri
        elif source.kubernetes is not None:
            token_path = self._root.resolve(source.kubernetes.token_file)
            try:
                # Projected tokens rotate: read it for every fetch.
                token = token_path.read_text().strip()
            except OSError as exc:
                message = f"service account token {token_path}: {exc.strerror}"
                raise FetchError(message, "token") from None
            headers["authorization"] = f"Bearer {token}"
            api_server = source.kubernetes.api_server.rstrip("/")
            await self._discover(fetcher, api_server + _DISCOVERY_PATH, headers)
            jwks_url = api_server + _KUBERNETES_JWKS_PATH
        else:
            jwks_url = await self._discover(fetcher, self.config.discovery_url(source), headers)
        fetched = await fetcher.get_json(jwks_url, headers)
        where = f"issuer {self.name!r} ({jwks_url})"
        keys = keys_from_jwks(fetched.document, where, self._allowed)
        if not keys:
            # Keep the last good keys: an empty or all-invalid set is far more
            # likely a provider glitch than a deliberate lock-out.
            raise ConfigError(f"{jwks_url}: no usable key in the JWKS")
        return keys, fetched.max_age

    async def _discover(self, fetcher: HttpFetcher, url: str, headers: dict[str, str]) -> str:
        document = (await fetcher.get_json(url, headers)).document
        if not isinstance(document, dict):
            raise FetchError(f"{url}: discovery document is not a JSON object", "discovery")
        if document.get("issuer") != self.name:
            # OpenID Connect Discovery §4.3: the issuers must be identical.
            raise FetchError(f"{url}: discovery document names another issuer", "discovery")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise FetchError(f"{url}: discovery document has no jwks_uri", "discovery")
        scheme = jwks_uri.split("://", 1)[0].lower()
        if scheme != "https" and not (scheme == "http" and self.config.fetch.allow_http):
            raise FetchError(f"{url}: jwks_uri is not https", "discovery")
        return jwks_uri

    def _is_stale(self) -> bool:
        assert self._remote_at is not None
        return self._clock.now() - self._remote_at > self.config.fetch.max_stale_seconds

    def _expire(self) -> None:
        log.error(
            "issuer %r: keys older than max_stale_seconds=%s dropped (last error: %s)",
            self.name,
            self.config.fetch.max_stale_seconds,
            self._last_error,
        )
        self._remote = []
        self._remote_at = None
        self._rebuild()

    # --- local files ----------------------------------------------------------

    async def watch_files(self) -> None:
        while True:
            await asyncio.sleep(self.config.fetch.file_poll_seconds)
            self.reload_files()

    def reload_files(self) -> None:
        """Re-read the key files that changed; a broken file keeps its old keys."""
        changed = False
        for index, watched in self._files.items():
            if not watched.changed():
                continue  # a broken file is retried only when it changes again
            source = self.config.keys[index]
            try:
                keys = load_local_source(source, self._root, self._where(index), self._allowed)
            except ConfigError as exc:
                log.error("keeping the previous keys: %s", exc)
                continue
            self._local[index] = keys
            changed = True
            log.info("issuer %r: reloaded %s", self.name, source.describe())
        if changed:
            self.local_loaded_at = time.time()
            self._events.keys_loaded(self.name, self.local_loaded_at)
            self._rebuild()

    def _rebuild(self, notify: bool = True) -> None:
        keys = [key for index in sorted(self._local) for key in self._local[index]]
        keys.extend(self._remote)
        self._keys = combine(keys, f"issuer {self.name!r}")
        if notify:
            self._on_change()
