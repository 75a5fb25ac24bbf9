"""Where accepted DPoP proofs are remembered, so that each is accepted once.

A ``ReplayStore`` answers one question: is this the first use of ``key`` within
``ttl`` seconds? It records the use in the same step, so two Checks racing
with one proof (on two threads, or on two replicas sharing Redis) cannot both
be told "first". Keys are digests (dpop.py), never proof bytes.

- ``MemoryReplayStore``: one replica's memory; bounded, expiring, one lock.
- ``RedisReplayStore``: ``SET key 1 NX PX ttl`` on a Redis every replica
  shares; one Redis round trip per proof, bounded by a per-call budget.

A store that cannot answer raises ``ReplayStoreUnavailable`` (503), unless
configured to fail open: the proof is then accepted without being remembered.
"""

from __future__ import annotations

import heapq
import logging
import math
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from authz.config.sender import MemoryReplayConfig, RedisReplayConfig
from authz.errors import ConfigError, ReplayStoreUnavailable

if TYPE_CHECKING:
    import redis

__all__ = ["MemoryReplayStore", "RedisReplayStore", "ReplayStore", "replay_store"]

log = logging.getLogger(__name__)

FailurePolicy = Literal["fail_closed", "fail_open"]


class ReplayStore(Protocol):
    def first_use(self, key: bytes, ttl: float) -> bool:
        """True the first time ``key`` is seen within ``ttl`` seconds; records the use."""
        ...


class _Clock(Protocol):
    def now(self) -> float: ...


class _Monotonic:
    # Entries expire by elapsed time; a wall clock stepped back would keep
    # them too long, stepped forward would drop them early.
    def now(self) -> float:
        return time.monotonic()


class MemoryReplayStore:
    """At most ``max_entries`` live keys, each until its own expiry.

    Full of live keys, it refuses (ReplayStoreUnavailable) instead of evicting:
    a key evicted early is a proof that can be replayed.
    """

    __slots__ = ("_clock", "_expiry", "_limit", "_lock", "_queue")

    def __init__(self, max_entries: int, clock: _Clock | None = None) -> None:
        if max_entries < 1:
            raise ValueError(f"a replay store holds at least one entry, not {max_entries}")
        self._limit = max_entries
        self._clock = clock or _Monotonic()
        self._expiry: dict[bytes, float] = {}
        # (expiry, key) in expiry order, so expired keys leave oldest first.
        self._queue: list[tuple[float, bytes]] = []
        self._lock = threading.Lock()

    def first_use(self, key: bytes, ttl: float) -> bool:
        now = self._clock.now()
        with self._lock:
            self._purge(now)
            if key in self._expiry:
                return False
            if len(self._expiry) >= self._limit:
                raise ReplayStoreUnavailable(
                    f"in-memory replay store is full ({self._limit} live entries)"
                )
            expires = now + max(ttl, 0.0)
            self._expiry[key] = expires
            heapq.heappush(self._queue, (expires, key))
            return True

    def _purge(self, now: float) -> None:
        queue, expiry = self._queue, self._expiry
        while queue and queue[0][0] <= now:
            _, key = heapq.heappop(queue)
            expiry.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry)


class RedisReplayStore:
    """Replay memory shared by replicas, in Redis.

    ``budget`` bounds one call: half of it for connecting (when the pool has no
    idle connection), half for the answer. No retries: a retry would spend
    the Check's time, and the client can send a new proof.
    """

    __slots__ = ("_client", "_failing", "_lock", "_on_failure", "_prefix")

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: bytes = b"authz:dpop:",
        on_failure: FailurePolicy = "fail_closed",
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._on_failure = on_failure
        self._failing = False  # in an outage: logged once, under _lock
        self._lock = threading.Lock()

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        budget: float,
        password: str | None = None,
        prefix: bytes = b"authz:dpop:",
        on_failure: FailurePolicy = "fail_closed",
        max_connections: int = 64,
    ) -> RedisReplayStore:
        """A store on ``url``; connects lazily, so a Redis down at start-up is
        a per-Check failure (handled by ``on_failure``), not a failed start."""
        # Imported here: only a server configured with a Redis store pays for
        # the client library's memory.
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        half = budget / 2
        client = redis.Redis.from_url(
            url,
            password=password,
            socket_timeout=half,
            socket_connect_timeout=half,
            retry=Retry(NoBackoff(), 0),
            max_connections=max_connections,
            health_check_interval=0,
        )
        return cls(client, prefix=prefix, on_failure=on_failure)

    def first_use(self, key: bytes, ttl: float) -> bool:
        milliseconds = max(1, math.ceil(ttl * 1000))
        try:
            stored = self._client.set(self._prefix + key, b"1", nx=True, px=milliseconds)
        except Exception as exc:
            # Any failure (refused, timed out, a reply we did not expect) means
            # the store did not answer; which one is for the log.
            return self._failed(exc)
        if self._failing:  # unlocked read: the common case costs no lock
            with self._lock:
                recovered, self._failing = self._failing, False
            if recovered:
                log.warning("replay store answers again")
        # SET NX answers OK when it stored the key, nil when the key existed.
        return stored is True

    def _failed(self, exc: Exception) -> bool:
        with self._lock:  # Checks on many threads fail at once
            first, self._failing = not self._failing, True
        if first:
            # Once per outage: a log line per Check would flood the log.
            log.warning(
                "replay store failed (%s); %s until it answers",
                type(exc).__name__,
                "accepting proofs unremembered" if self._on_failure == "fail_open" else "denying",
            )
        if self._on_failure == "fail_open":
            return True
        raise ReplayStoreUnavailable(f"replay store failed: {type(exc).__name__}") from None

    def close(self) -> None:
        self._client.close()


def replay_store(
    config: MemoryReplayConfig | RedisReplayConfig, base_dir: Path = Path()
) -> MemoryReplayStore | RedisReplayStore:
    """The store a ``dpop.replay`` section describes; ConfigError if its password file fails."""
    if isinstance(config, MemoryReplayConfig):
        return MemoryReplayStore(config.max_entries)
    password = None
    if config.password_file is not None:
        path = config.password_file
        path = path if path.is_absolute() else base_dir / path
        try:
            password = path.read_text(encoding="utf-8").removesuffix("\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the Redis password: {exc}") from None
    return RedisReplayStore.connect(
        config.url,
        budget=config.timeout_seconds,
        password=password,
        prefix=config.key_prefix.encode("utf-8"),
        on_failure=config.on_failure,
        max_connections=config.max_connections,
    )
