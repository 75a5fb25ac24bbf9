"""replay.py: a proof is accepted once, in one replica's memory or in a Redis all share."""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from authz.check.dpop import DpopVerifier
from authz.check.replay import MemoryReplayStore, RedisReplayStore, replay_store
from authz.config.sender import MemoryReplayConfig, RedisReplayConfig
from authz.dev.dpop_client import Signer, proof
from authz.errors import DpopReplayed, ReplayStoreUnavailable
from tests.support.clock import FakeClock
from tests.support.redis_server import PASSWORD, RedisServer, start_redis

THREADS = 8
URI = "https://api.example.com/orders"


def _race(count: int, work: Callable[[int], None]) -> None:
    """Run ``work(i)`` on ``count`` threads released at once; re-raise the first failure."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            work(index)
        except BaseException as exc:  # handed to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive()
    if errors:
        raise errors[0]


# --- in memory --------------------------------------------------------------------------------


def test_memory_first_use_then_replay_until_expiry() -> None:
    clock = FakeClock(100.0)
    store = MemoryReplayStore(10, clock)
    assert store.first_use(b"a", 65)
    assert not store.first_use(b"a", 65)
    assert store.first_use(b"b", 65)
    clock.advance(64.9)
    assert not store.first_use(b"a", 65)
    clock.advance(0.1)
    assert store.first_use(b"a", 65)  # expired: a use again, remembered anew
    assert not store.first_use(b"a", 65)


def test_memory_is_bounded_and_refuses_rather_than_forgets() -> None:
    clock = FakeClock(0.0)
    store = MemoryReplayStore(3, clock)
    for key in (b"1", b"2", b"3"):
        assert store.first_use(key, 10)
    with pytest.raises(ReplayStoreUnavailable, match="full"):
        store.first_use(b"4", 10)
    assert len(store) == 3
    # Nothing was evicted: every remembered key is still a replay.
    assert not any(store.first_use(key, 10) for key in (b"1", b"2", b"3"))
    clock.advance(10)
    assert store.first_use(b"4", 10)
    assert len(store) == 1


def test_memory_expires_by_each_keys_own_ttl() -> None:
    clock = FakeClock(0.0)
    store = MemoryReplayStore(2, clock)
    assert store.first_use(b"long", 100)
    assert store.first_use(b"short", 1)
    clock.advance(1)
    # The short entry, behind the long one in arrival order, has left.
    assert store.first_use(b"new", 100)
    assert not store.first_use(b"long", 100)


def test_memory_under_threads_answers_first_exactly_once_per_key() -> None:
    store = MemoryReplayStore(100_000)
    keys = [uuid.uuid4().bytes for _ in range(2000)]
    firsts: list[list[bytes]] = [[] for _ in range(THREADS)]

    def work(index: int) -> None:
        # Every thread tries every key, each in its own order.
        for key in keys[index:] + keys[:index]:
            if store.first_use(key, 60):
                firsts[index].append(key)

    _race(THREADS, work)
    won = [key for found in firsts for key in found]
    assert sorted(won) == sorted(keys)
    assert len(store) == len(keys)


def test_memory_bound_holds_under_threads() -> None:
    store = MemoryReplayStore(100)
    outcomes: list[str] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        for n in range(50):
            try:
                outcome = "first" if store.first_use(b"%d-%d" % (index, n), 60) else "again"
            except ReplayStoreUnavailable:
                outcome = "full"
            with lock:
                outcomes.append(outcome)

    _race(THREADS, work)
    assert outcomes.count("first") == 100
    assert outcomes.count("full") == THREADS * 50 - 100
    assert len(store) == 100


def test_memory_needs_room_for_one() -> None:
    with pytest.raises(ValueError, match="at least one"):
        MemoryReplayStore(0)


# --- in Redis ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    try:
        server = start_redis(tmp_path_factory.mktemp("redis"))
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()


@pytest.fixture
def prefix() -> bytes:
    # Each test its own keys, on the one server.
    return b"test:" + uuid.uuid4().hex.encode() + b":"


def _store(url: str, prefix: bytes, **options: object) -> RedisReplayStore:
    settings: dict[str, object] = {"budget": 2.0, "password": PASSWORD, "prefix": prefix}
    settings.update(options)
    return RedisReplayStore.connect(url, **settings)  # type: ignore[arg-type]


def test_redis_first_use_then_replay(redis_server: RedisServer, prefix: bytes) -> None:
    store = _store(redis_server.url, prefix)
    try:
        assert store.first_use(b"k1", 65)
        assert not store.first_use(b"k1", 65)
        assert store.first_use(b"k2", 65)
        ttl = redis_server.client().pttl(prefix + b"k1")
        assert 0 < ttl <= 65_000
    finally:
        store.close()


def test_redis_over_a_unix_socket(redis_server: RedisServer, prefix: bytes) -> None:
    store = _store(redis_server.unix_url, prefix)
    try:
        assert store.first_use(b"k", 10)
        assert not store.first_use(b"k", 10)
    finally:
        store.close()


def test_redis_keys_expire_with_their_ttl(redis_server: RedisServer, prefix: bytes) -> None:
    store = _store(redis_server.url, prefix)
    client = redis_server.client()
    try:
        assert store.first_use(b"brief", 0.05)
        deadline = time.monotonic() + 10
        while client.exists(prefix + b"brief") and time.monotonic() < deadline:
            time.sleep(0.01)  # polled; Redis expires the key on its own clock
        assert store.first_use(b"brief", 0.05)
    finally:
        store.close()


def test_two_replicas_sharing_redis_accept_a_proof_once(
    redis_server: RedisServer, prefix: bytes, ec256_key: ec.EllipticCurvePrivateKey
) -> None:
    clock = FakeClock(1_800_000_000.0)
    one, two = _store(redis_server.url, prefix), _store(redis_server.url, prefix)
    replica_one = DpopVerifier(replay=one, clock=clock)
    replica_two = DpopVerifier(replay=two, clock=clock)
    value = proof(Signer(ec256_key, "ES256"), iat=clock.now(), htu=URI)
    try:
        replica_one.verify([value], method="GET", uri=URI)
        with pytest.raises(DpopReplayed):
            replica_two.verify([value], method="GET", uri=URI)
        with pytest.raises(DpopReplayed):
            replica_one.verify([value], method="GET", uri=URI)
    finally:
        one.close()
        two.close()


def test_replicas_racing_in_redis_answer_first_once(
    redis_server: RedisServer, prefix: bytes
) -> None:
    stores = [_store(redis_server.url, prefix) for _ in range(2)]
    keys = [uuid.uuid4().bytes for _ in range(200)]
    won: list[bytes] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        store = stores[index % 2]
        for key in keys:
            if store.first_use(key, 60):
                with lock:
                    won.append(key)

    try:
        _race(THREADS, work)
    finally:
        for store in stores:
            store.close()
    assert sorted(won) == sorted(keys)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers: a hung Redis."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield int(listener.getsockname()[1])


@pytest.fixture
def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_hung_redis_fails_closed_within_the_budget(silent_port: int, prefix: bytes) -> None:
    store = _store(f"redis://127.0.0.1:{silent_port}/0", prefix, budget=0.2)
    started = time.monotonic()
    with pytest.raises(ReplayStoreUnavailable) as info:
        store.first_use(b"k", 60)
    # redis-py's defaults (5 s timeouts, retries) would take many seconds.
    assert time.monotonic() - started < 3.0
    assert info.value.status == 503
    assert "Timeout" in info.value.detail
    store.close()


def test_an_unreachable_redis_fails_closed(closed_port: int, prefix: bytes) -> None:
    store = _store(f"redis://127.0.0.1:{closed_port}/0", prefix, budget=0.2)
    with pytest.raises(ReplayStoreUnavailable):
        store.first_use(b"k", 60)
    store.close()


def test_a_wrong_password_fails_closed(redis_server: RedisServer, prefix: bytes) -> None:
    store = _store(redis_server.url, prefix, password="wrong")
    with pytest.raises(ReplayStoreUnavailable):
        store.first_use(b"k", 60)
    store.close()


def test_fail_open_accepts_unremembered_and_logs_once_per_outage(
    closed_port: int, prefix: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(f"redis://127.0.0.1:{closed_port}/0", prefix, on_failure="fail_open")
    with caplog.at_level(logging.WARNING, logger="authz.check.replay"):
        assert store.first_use(b"k", 60)
        assert store.first_use(b"k", 60)  # a replay goes unnoticed: that is fail_open
    warnings = [record for record in caplog.records if record.name == "authz.check.replay"]
    assert len(warnings) == 1
    assert "accepting proofs unremembered" in warnings[0].getMessage()
    assert prefix.decode() not in caplog.text
    store.close()


def test_the_store_a_config_describes(
    redis_server: RedisServer, tmp_path: Path, prefix: bytes
) -> None:
    assert isinstance(replay_store(MemoryReplayConfig(max_entries=5)), MemoryReplayStore)
    (tmp_path / "redis.password").write_text(PASSWORD + "\n")
    config = RedisReplayConfig.model_validate(
        {
            "store": "redis",
            "url": redis_server.url,
            "password_file": "redis.password",
            "key_prefix": prefix.decode(),
        }
    )
    store = replay_store(config, tmp_path)
    assert isinstance(store, RedisReplayStore)
    try:
        assert store.first_use(b"k", 10)
        assert not store.first_use(b"k", 10)
        assert redis_server.client().exists(prefix + b"k")
    finally:
        store.close()
