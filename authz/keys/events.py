"""What key handling reports, and to whom: injected, never a process-wide hub.

The key store and the verifier report to the ``KeyEvents`` they were built
with (``runtime.build_runtime`` passes the server's ``Metrics``); one built
without a listener reports to ``NO_EVENTS``. So two servers in one process
count only their own events.

- ``key_fetch(issuer, result)``: a fetch of the issuer's keys over the network
  (JWKS URL or OIDC discovery) ended, or was refused as ``rate_limited``;
  ``result`` is one of ``metrics.FETCH_RESULTS``. Key files are not fetched:
  re-reading one reports ``keys_loaded`` only.
- ``keys_loaded(issuer, loaded_at)``: the key set in use now was obtained at
  ``loaded_at`` (Unix time); the age gauge counts from there, so a key set
  kept through an IdP outage visibly ages.
- ``token_cache(issuer, hit)``: a token was answered from the verifier's cache
  of verified tokens (``hit``), or verified afresh after missing it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, TypeVar

__all__ = ["NO_EVENTS", "Guarded", "KeyEvents", "NoEvents"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class KeyEvents(Protocol):
    def key_fetch(self, issuer: str, result: str) -> None: ...

    def keys_loaded(self, issuer: str, loaded_at: float) -> None: ...

    def token_cache(self, issuer: str, hit: bool) -> None: ...


class NoEvents:
    """Reports to no one (key handling built without a server: tests, check-config)."""

    def key_fetch(self, issuer: str, result: str) -> None:
        pass

    def keys_loaded(self, issuer: str, loaded_at: float) -> None:
        pass

    def token_cache(self, issuer: str, hit: bool) -> None:
        pass


NO_EVENTS = NoEvents()


class Guarded:
    """``events``, except that a failing listener is logged, never raised into
    key handling: metrics must not break verification or a key refresh."""

    __slots__ = ("_events",)

    def __init__(self, events: KeyEvents) -> None:
        self._events = events

    def key_fetch(self, issuer: str, result: str) -> None:
        _deliver(self._events.key_fetch, issuer, result)

    def keys_loaded(self, issuer: str, loaded_at: float) -> None:
        _deliver(self._events.keys_loaded, issuer, loaded_at)

    def token_cache(self, issuer: str, hit: bool) -> None:
        _deliver(self._events.token_cache, issuer, hit)


def _deliver(method: Callable[[str, T], None], issuer: str, value: T) -> None:
    try:
        method(issuer, value)
    except Exception:
        log.exception("key events listener failed")
