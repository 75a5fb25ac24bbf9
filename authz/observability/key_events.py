"""Key events: how key-handling code reports to metrics without knowing a server.

The key store and the verifier call the module's ``key_events`` (a
``KeyEventHub``); each running server's ``Metrics`` subscribes while it runs
and counts what it hears (``authz_key_fetches_total``, ``authz_key_age_seconds``,
``authz_key_cache_lookups_total``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol, TypeVar

__all__ = ["KeyEventHub", "KeyEvents", "key_events"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class KeyEvents(Protocol):
    """What key-handling code reports, per configured issuer.

    - ``key_fetch(issuer, result)``: a fetch of the issuer's keys over the
      network (JWKS URL or OIDC discovery) ended, or was refused as
      ``rate_limited``; ``result`` is one of ``metrics.FETCH_RESULTS``. Key
      files are not fetched: re-reading one reports ``keys_loaded`` only.
    - ``keys_loaded(issuer, loaded_at)``: the key set in use now was obtained
      at ``loaded_at`` (Unix time); the age gauge counts from there, so a key
      set kept through an IdP outage visibly ages.
    - ``key_cache(issuer, hit)``: a token was answered from the verifier's
      cache of verified tokens (``hit``), or verified afresh after missing it;
      despite the name, not a lookup of a key.
    """

    def key_fetch(self, issuer: str, result: str) -> None: ...

    def keys_loaded(self, issuer: str, loaded_at: float) -> None: ...

    def key_cache(self, issuer: str, hit: bool) -> None: ...


class KeyEventHub:
    """Hands key events to every subscriber; a failing subscriber is logged, never raised.

    Key-handling code needs no reference to a server: it calls the module's
    ``key_events``, and each running server's ``Metrics`` subscribes while it runs.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: tuple[KeyEvents, ...] = ()

    def subscribe(self, listener: KeyEvents) -> Callable[[], None]:
        """Start delivering to ``listener``; the returned function stops it."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = tuple(item for item in self._listeners if item is not listener)

        return unsubscribe

    def key_fetch(self, issuer: str, result: str) -> None:
        for listener in self._listeners:
            self._deliver(listener.key_fetch, issuer, result)

    def keys_loaded(self, issuer: str, loaded_at: float) -> None:
        for listener in self._listeners:
            self._deliver(listener.keys_loaded, issuer, loaded_at)

    def key_cache(self, issuer: str, hit: bool) -> None:
        for listener in self._listeners:
            self._deliver(listener.key_cache, issuer, hit)

    @staticmethod
    def _deliver(method: Callable[[str, T], None], issuer: str, value: T) -> None:
        try:
            method(issuer, value)
        except Exception:
            # Metrics must never break key handling.
            log.exception("key metrics listener failed")


key_events = KeyEventHub()
