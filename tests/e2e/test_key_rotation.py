"""Key rotation and IdP outages, end to end: Envoy -> authz -> a real HTTPS JWKS server."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz.dev.keys import PrivateKey, generate, public_jwk
from authz.dev.stack import Stack, wait_for
from authz.dev.tokens import claims_for, mint
from tests.support.forge import b64url_json
from tests.support.idp import JWKS_PATH, FakeIdP, LoopbackCA

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LoopbackCA:
    return LoopbackCA.create(tmp_path_factory.mktemp("e2e-ca"))


@pytest.fixture(scope="module")
def keys() -> dict[str, PrivateKey]:
    return {kid: generate("RS256") for kid in ("k1", "k2")}


@pytest.fixture
def idp(ca: LoopbackCA, keys: dict[str, PrivateKey]) -> Iterator[FakeIdP]:
    server = FakeIdP(tls=ca).start()
    server.jwks = _jwks(keys, "k1")
    yield server
    server.stop()


def _jwks(keys: dict[str, PrivateKey], *kids: str) -> dict[str, Any]:
    return {"keys": [public_jwk(keys[kid], kid, "RS256") for kid in kids]}


def _stack(tmp_path: Path, idp: FakeIdP, ca: LoopbackCA, **fetch: Any) -> Stack:
    settings = {"ca_file": str(ca.ca_file), "retry_initial_seconds": 0.05, **fetch}
    config = {
        "listen": "127.0.0.1:0",
        "issuers": [
            {
                "issuer": idp.issuer,
                "audiences": ["api"],
                "algorithms": ["RS256"],
                "keys": [{"jwks_uri": idp.url + JWKS_PATH}],
                "fetch": settings,
            }
        ],
    }
    path = tmp_path / "authz.yaml"
    path.write_text(yaml.safe_dump(config))
    return Stack(tmp_path, path)


def _bearer(keys: dict[str, PrivateKey], idp: FakeIdP, kid: str) -> dict[str, str]:
    token = mint(keys[kid], "RS256", claims_for("alice", idp.issuer, "api"), kid)
    return {"Authorization": f"Bearer {token}"}


def _health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return int(reply.status)


def test_a_rotated_key_is_accepted_on_its_first_request(
    tmp_path: Path, idp: FakeIdP, ca: LoopbackCA, keys: dict[str, PrivateKey]
) -> None:
    # Periodic refresh far away: only the unknown-kid refetch can find k2.
    fetch = {"refresh_seconds": 600, "refresh_min_seconds": 600, "unknown_kid_cooldown_seconds": 0}
    with _stack(tmp_path, idp, ca, **fetch) as stack:
        wait_for(
            "keys", lambda: stack.get("/", _bearer(keys, idp, "k1")).status == 200 or None, 10, None
        )
        idp.jwks = _jwks(keys, "k1", "k2")
        reply = stack.get("/", _bearer(keys, idp, "k2"))
        assert reply.status == 200
        assert reply.json()["headers"]["x-auth-subject"] == "alice"


def test_an_idp_outage_longer_than_the_refresh_interval_denies_nobody(
    tmp_path: Path, idp: FakeIdP, ca: LoopbackCA, keys: dict[str, PrivateKey]
) -> None:
    fetch = {"refresh_seconds": 0.1, "refresh_min_seconds": 0.05, "max_stale_seconds": 120}
    with _stack(tmp_path, idp, ca, **fetch) as stack:
        headers = _bearer(keys, idp, "k1")
        wait_for("keys", lambda: stack.get("/", headers).status == 200 or None, 10, None)
        idp.mode = "fail"
        failed_before = idp.count(JWKS_PATH)
        statuses = []
        deadline = time.monotonic() + 20
        # Keep sending until at least five refreshes have failed meanwhile.
        while idp.count(JWKS_PATH) < failed_before + 5:
            statuses.append(stack.get("/", headers).status)
            assert time.monotonic() < deadline, "the refreshes did not happen"
        assert len(statuses) > 5
        assert set(statuses) == {200}


def test_a_flood_of_unknown_kids_is_one_fetch_per_cooldown(
    tmp_path: Path, idp: FakeIdP, ca: LoopbackCA, keys: dict[str, PrivateKey]
) -> None:
    fetch = {"refresh_seconds": 600, "refresh_min_seconds": 600, "unknown_kid_cooldown_seconds": 60}
    with _stack(tmp_path, idp, ca, **fetch) as stack:
        valid = _bearer(keys, idp, "k1")["Authorization"].removeprefix("Bearer ")
        wait_for(
            "keys", lambda: stack.get("/", _bearer(keys, idp, "k1")).status == 200 or None, 10, None
        )
        before = idp.count(JWKS_PATH)
        _, payload, signature = valid.split(".")
        for _ in range(300):
            header = b64url_json({"alg": "RS256", "kid": secrets.token_hex(8)})
            reply = stack.get("/", {"Authorization": f"Bearer {header}.{payload}.{signature}"})
            assert reply.status == 401
        assert idp.count(JWKS_PATH) - before <= 1


def test_a_key_removed_by_the_idp_is_rejected_after_the_next_refresh(
    tmp_path: Path, idp: FakeIdP, ca: LoopbackCA, keys: dict[str, PrivateKey]
) -> None:
    idp.jwks = _jwks(keys, "k1", "k2")
    fetch = {
        "refresh_seconds": 0.1,
        "refresh_min_seconds": 0.05,
        "unknown_kid_cooldown_seconds": 60,
    }
    with _stack(tmp_path, idp, ca, **fetch) as stack:
        old = _bearer(keys, idp, "k2")
        wait_for("keys", lambda: stack.get("/", old).status == 200 or None, 10, None)
        idp.jwks = _jwks(keys, "k1")
        seen = idp.count(JWKS_PATH)
        wait_for("two refreshes", lambda: idp.count(JWKS_PATH) >= seen + 2 or None, 10, None)
        assert stack.get("/", old).status == 401
        assert stack.get("/", _bearer(keys, idp, "k1")).status == 200


def test_cold_start_without_the_idp(
    tmp_path: Path, idp: FakeIdP, ca: LoopbackCA, keys: dict[str, PrivateKey]
) -> None:
    idp.mode = "fail"
    fetch = {"refresh_seconds": 0.2, "refresh_min_seconds": 0.1}
    with _stack(tmp_path, idp, ca, **fetch) as stack:
        headers = _bearer(keys, idp, "k1")
        assert _health(stack.authz.address) == health_pb2.HealthCheckResponse.NOT_SERVING
        reply = stack.get("/", headers)
        assert reply.status == 503
        assert reply.json()["error"] == "unavailable"
        idp.mode = "ok"
        wait_for("keys to arrive", lambda: stack.get("/", headers).status == 200 or None, 10, None)
        assert _health(stack.authz.address) == health_pb2.HealthCheckResponse.SERVING


def test_a_stalled_idp_delays_no_request(
    tmp_path: Path, idp: FakeIdP, ca: LoopbackCA, keys: dict[str, PrivateKey]
) -> None:
    # Envoy's 250 ms timeout is the stopwatch: an answer that waited on the IdP
    # would arrive as Envoy's 503, not as ours.
    fetch = {
        "refresh_seconds": 0.1,
        "refresh_min_seconds": 0.05,
        "read_timeout_seconds": 30,
        "unknown_kid_cooldown_seconds": 0,
    }
    with _stack(tmp_path, idp, ca, **fetch) as stack:
        headers = _bearer(keys, idp, "k1")
        wait_for("keys", lambda: stack.get("/", headers).status == 200 or None, 10, None)
        idp.mode = "stall"
        stalled = idp.count(JWKS_PATH)
        wait_for("a stalled refresh", lambda: idp.count(JWKS_PATH) > stalled or None, 10, None)
        assert [stack.get("/", headers).status for _ in range(20)] == [200] * 20
        # An unknown kid's refetch joins the stalled fetch, waits its bounded time, denies.
        reply = stack.get("/", _bearer(keys, idp, "k2"))
        assert reply.status == 401
        idp.release()
