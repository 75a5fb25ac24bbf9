"""A key source's life in a server: kept across reloads, started, warmed, closed.

A reload that leaves the issuers unchanged keeps the running key source (its
fetched keys, its refresh state); one that changes them builds a new source,
which may serve only once every issuer has keys: otherwise a reload during an
identity provider's outage would turn valid tokens into 503s. Key sources
without background work (a fixed set of keys, a test's fake) need none of this.
"""

from __future__ import annotations

from collections.abc import Callable

from authz.config.models import Config
from authz.errors import ConfigError
from authz.keys.sources import FetchingKeySource, KeySource, ManagedKeySource

__all__ = ["close_keys", "same_issuers", "start_keys", "warm_keys"]


def same_issuers(old: Config, new: Config) -> bool:
    """Whether a new configuration may keep the running key source: the same
    issuers, and relative key paths resolving against the same directory."""
    return old.issuers == new.issuers and old.base_dir == new.base_dir


async def start_keys(keys: KeySource, listener: Callable[[], None]) -> None:
    """Start the source's background work; ``listener`` is called (on the event
    loop) whenever its keys change."""
    if isinstance(keys, ManagedKeySource):
        keys.add_listener(listener)
        await keys.start()


async def warm_keys(keys: KeySource, listener: Callable[[], None]) -> None:
    """Start a new key source and fetch its remote keys now; if it is not ready
    then, close it and raise ConfigError naming the issuers without keys."""
    if not isinstance(keys, ManagedKeySource):
        return
    await start_keys(keys, listener)
    if isinstance(keys, FetchingKeySource):
        await keys.fetch_all()
    if not keys.ready():
        await keys.close()
        missing = (
            [s.issuer for s in keys.status() if not s.usable]
            if isinstance(keys, FetchingKeySource)
            else []
        )
        raise ConfigError(f"keys could not be loaded for issuers {missing}")


async def close_keys(keys: KeySource) -> None:
    """Stop the source's background work, if it has any."""
    if isinstance(keys, ManagedKeySource):
        await keys.close()
