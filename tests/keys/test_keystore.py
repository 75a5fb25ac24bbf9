"""KeyStore against a real JWKS/discovery server over HTTPS with a test CA."""

from __future__ import annotations

import asyncio
import logging
import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from authz.check.decision import Decider
from authz.check.request import RequestView
from authz.check.verify import Verifier
from authz.config.models import Config, FetchConfig
from authz.dev.keys import PrivateKey
from authz.dev.tokens import claims_for, mint
from authz.errors import KeysUnavailable, UnknownKey
from authz.keys.store import KeyStore, next_delay
from authz.keys.waiting import LoopBridge
from tests.keys.conftest import issuer_config, jwks, until
from tests.support.clock import FakeClock
from tests.support.forge import b64url_json
from tests.support.harness import LoopThread
from tests.support.idp import DISCOVERY_PATH, JWKS_PATH, KUBERNETES_JWKS_PATH, FakeIdP, LoopbackCA


def _kids(store: KeyStore, issuer: str) -> set[str]:
    keys = store.keys_for(issuer)
    return set(keys.by_kid) if keys else set()


def _request(key: PrivateKey, issuer: str, kid: str) -> RequestView:
    token = mint(key, "RS256", claims_for("alice", issuer, "api"), kid)
    return RequestView(headers={"authorization": (f"Bearer {token}",)})


def _with_kid(token: str, kid: str) -> RequestView:
    # The kid is looked up before the signature is checked: a valid token's
    # payload under a made-up header is what an attacker sends.
    _, payload, signature = token.split(".")
    header = b64url_json({"alg": "RS256", "kid": kid})
    return RequestView(headers={"authorization": (f"Bearer {header}.{payload}.{signature}",)})


def _jwks_uri(idp: FakeIdP, test_ca: LoopbackCA, fetch: str = "") -> Config:
    return issuer_config(
        idp.issuer, f"{{jwks_uri: {idp.url}{JWKS_PATH}}}", ca_file=test_ca.ca_file, fetch=fetch
    )


def test_jwks_uri_over_https_is_fetched_in_the_background(
    idp: FakeIdP, test_ca: LoopbackCA
) -> None:
    async def scenario() -> None:
        store = KeyStore(_jwks_uri(idp, test_ca))
        assert not store.ready()  # nothing fetched yet: not ready to serve
        changes: list[int] = []
        store.add_listener(lambda: changes.append(1))
        await store.start()
        try:
            await until(lambda: _kids(store, idp.issuer) == {"k1"})
            assert store.ready()
            assert changes
            [status] = store.status()
            assert status.remote
            assert status.usable
            assert status.key_count == 1
            assert status.last_error is None
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_certificate_from_another_ca_is_refused(
    idp: FakeIdP, test_ca: LoopbackCA, other_ca: LoopbackCA
) -> None:
    async def scenario() -> None:
        store = KeyStore(_jwks_uri(idp, other_ca))
        try:
            assert await store.fetch_all() == {idp.issuer: False}
            [status] = store.status()
            assert "CERTIFICATE_VERIFY_FAILED" in (status.last_error or "")
            assert not store.ready()
        finally:
            await store.close()

    asyncio.run(scenario())


def test_oidc_discovery_leads_to_the_jwks(idp: FakeIdP, test_ca: LoopbackCA) -> None:
    async def scenario() -> None:
        store = KeyStore(issuer_config(idp.issuer, "{discovery: true}", ca_file=test_ca.ca_file))
        try:
            assert await store.fetch_all() == {idp.issuer: True}
            assert _kids(store, idp.issuer) == {"k1"}
            assert idp.count(DISCOVERY_PATH) == 1
            assert idp.count(JWKS_PATH) == 1
        finally:
            await store.close()

    asyncio.run(scenario())


def test_discovery_naming_another_issuer_is_refused(idp: FakeIdP, test_ca: LoopbackCA) -> None:
    idp.discovery_issuer = "https://evil.example"

    async def scenario() -> None:
        config = issuer_config(
            "https://evil.example.test",
            f"{{discovery: '{idp.url}{DISCOVERY_PATH}'}}",
            ca_file=test_ca.ca_file,
        )
        store = KeyStore(config)
        try:
            assert await store.fetch_all() == {"https://evil.example.test": False}
            assert "names another issuer" in (store.status()[0].last_error or "")
            assert idp.count(JWKS_PATH) == 0
        finally:
            await store.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("seconds_since_fetch", "reason", "fetches"),
    [
        (31, "allowed", 2),  # past the cooldown: one refetch finds the new key
        (10, "unknown_key", 1),  # still cooling down: denied without a fetch
    ],
    ids=["rotated-key-accepted-on-first-use", "within-cooldown-denied-without-fetch"],
)
def test_an_unknown_kid_refetches_once_per_cooldown(
    idp: FakeIdP,
    test_ca: LoopbackCA,
    signing_keys: dict[str, PrivateKey],
    *,
    seconds_since_fetch: float,
    reason: str,
    fetches: int,
) -> None:
    clock = FakeClock()
    config = _jwks_uri(idp, test_ca, fetch="unknown_kid_cooldown_seconds: 30")
    # The store lives on its loop; the Check decides on this thread and waits on it.
    loop = LoopThread()
    bridge = LoopBridge()
    bridge.bind(loop.loop)
    store = KeyStore(config, clock=clock)
    decider = Decider(config, Verifier(config, store), refetch=bridge.refetcher(store))
    try:
        loop.run(store.fetch_all())
        idp.jwks = jwks(signing_keys, "k1", "k2")  # the IdP publishes k2
        clock.advance(seconds_since_fetch)
        decision = decider.decide(_request(signing_keys["k2"], idp.issuer, "k2"))
        assert decision.reason == reason, decision.detail
        assert decision.allowed == (reason == "allowed")
        assert idp.count(JWKS_PATH) == fetches
    finally:
        loop.run(store.close())
        loop.close()


def test_a_flood_of_random_kids_costs_one_fetch_per_cooldown(
    idp: FakeIdP, test_ca: LoopbackCA, signing_keys: dict[str, PrivateKey]
) -> None:
    clock = FakeClock()
    key = signing_keys["k1"]
    config = _jwks_uri(
        idp, test_ca, fetch="unknown_kid_cooldown_seconds: 30, unknown_kid_wait_seconds: 5"
    )
    loop = LoopThread()
    bridge = LoopBridge()
    bridge.bind(loop.loop)
    store = KeyStore(config, clock=clock)
    decider = Decider(config, Verifier(config, store), refetch=bridge.refetcher(store))
    try:
        loop.run(store.fetch_all())
        base = mint(key, "RS256", claims_for("alice", idp.issuer, "api"), "k1")
        # Checks on eight threads at once, as gRPC's pool runs them.
        with ThreadPoolExecutor(8) as pool:
            for window in range(2):
                clock.advance(31)
                requests = [_with_kid(base, secrets.token_hex(8)) for _ in range(2_000)]
                decisions = list(pool.map(decider.decide, requests))
                assert {d.reason for d in decisions} == {"unknown_key"}
                assert idp.count(JWKS_PATH) == 2 + window  # the initial fetch + one per window
    finally:
        loop.run(store.close())
        loop.close()


def test_last_good_keys_serve_through_an_outage_until_max_stale(
    idp: FakeIdP, test_ca: LoopbackCA, signing_keys: dict[str, PrivateKey]
) -> None:
    clock = FakeClock()

    async def scenario() -> None:
        config = _jwks_uri(idp, test_ca, fetch="max_stale_seconds: 600")
        store = KeyStore(config, clock=clock)
        verifier = Verifier(config, store)
        token = mint(signing_keys["k1"], "RS256", claims_for("alice", idp.issuer, "api"), "k1")
        await store.start()
        try:
            await until(store.ready)
            idp.mode = "fail"
            fetches = idp.count(JWKS_PATH)
            await until(lambda: idp.count(JWKS_PATH) >= fetches + 3)  # failed refreshes
            clock.advance(599)
            assert verifier.verify(token).subject == "alice"
            assert store.status()[0].consecutive_failures >= 1
            clock.advance(2)  # now past max_stale
            with pytest.raises(KeysUnavailable):
                verifier.verify(token)
            assert not store.ready()
            idp.mode = "ok"  # the IdP comes back: keys return on the next retry
            await until(store.ready)
            assert verifier.verify(token).subject == "alice"
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_removed_key_stops_verifying_after_the_next_refresh(
    idp: FakeIdP, test_ca: LoopbackCA, signing_keys: dict[str, PrivateKey]
) -> None:
    idp.jwks = jwks(signing_keys, "k1", "k2")

    async def scenario() -> None:
        config = _jwks_uri(idp, test_ca)
        store = KeyStore(config)
        verifier = Verifier(config, store)
        token = mint(signing_keys["k2"], "RS256", claims_for("alice", idp.issuer, "api"), "k2")
        try:
            await store.fetch_all()
            assert verifier.verify(token).kid == "k2"
            idp.jwks = jwks(signing_keys, "k1")
            await store.fetch_all()
            with pytest.raises(UnknownKey):
                verifier.verify(token)
        finally:
            await store.close()

    asyncio.run(scenario())


def test_cold_start_without_the_idp_becomes_ready_when_it_answers(
    idp: FakeIdP, test_ca: LoopbackCA
) -> None:
    idp.mode = "fail"

    async def scenario() -> None:
        store = KeyStore(_jwks_uri(idp, test_ca))
        await store.start()
        try:
            await until(lambda: idp.count(JWKS_PATH) >= 2)
            assert not store.ready()
            idp.mode = "ok"
            await until(store.ready)
        finally:
            await store.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("fail", "HTTP 500"),
        ("garbage", "not UTF-8 JSON"),
        ("huge", "exceeds"),
        ("stall", "timed out"),
    ],
)
def test_a_misbehaving_idp_keeps_the_last_good_keys(
    idp: FakeIdP, test_ca: LoopbackCA, mode: str, error: str
) -> None:
    async def scenario() -> None:
        config = _jwks_uri(
            idp, test_ca, fetch="read_timeout_seconds: 0.3, max_response_bytes: 100000"
        )
        store = KeyStore(config)
        try:
            assert await store.fetch_all() == {idp.issuer: True}
            idp.mode = mode
            assert await store.fetch_all() == {idp.issuer: False}
            idp.release()
            [status] = store.status()
            assert error in (status.last_error or ""), status.last_error
            assert _kids(store, idp.issuer) == {"k1"}
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_jwks_without_usable_keys_keeps_the_last_good_keys(
    idp: FakeIdP, test_ca: LoopbackCA
) -> None:
    async def scenario() -> None:
        store = KeyStore(_jwks_uri(idp, test_ca))
        try:
            await store.fetch_all()
            idp.jwks = {"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "tiny"}]}
            assert await store.fetch_all() == {idp.issuer: False}
            assert "no usable key" in (store.status()[0].last_error or "")
            assert _kids(store, idp.issuer) == {"k1"}
        finally:
            await store.close()

    asyncio.run(scenario())


def test_kubernetes_preset_authenticates_with_the_pod_token(
    test_ca: LoopbackCA, signing_keys: dict[str, PrivateKey], tmp_path: Path
) -> None:
    idp = FakeIdP(tls=test_ca, issuer="https://kubernetes.default.svc.cluster.local").start()
    idp.jwks = jwks(signing_keys, "k1")
    idp.required_token = "projected-token-1"
    token_file = tmp_path / "token"
    token_file.write_text("projected-token-1\n")

    async def scenario() -> None:
        source = (
            f"{{kubernetes: {{api_server: '{idp.url}', token_file: {token_file}, "
            f"ca_file: {test_ca.ca_file}}}}}"
        )
        store = KeyStore(issuer_config(idp.issuer, source))
        try:
            assert await store.fetch_all() == {idp.issuer: True}
            assert idp.count(KUBERNETES_JWKS_PATH) == 1
            token_file.write_text("rotated-token-2\n")  # the kubelet rotated it; IdP did not
            assert await store.fetch_all() == {idp.issuer: False}
            assert "HTTP 401" in (store.status()[0].last_error or "")
            idp.required_token = "rotated-token-2"
            assert await store.fetch_all() == {idp.issuer: True}
        finally:
            await store.close()
            idp.stop()

    asyncio.run(scenario())


def test_a_changed_jwks_file_is_reloaded_and_a_broken_one_ignored(
    tmp_path: Path, signing_keys: dict[str, PrivateKey], caplog: pytest.LogCaptureFixture
) -> None:
    import json

    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(signing_keys, "k1")))
    config = issuer_config(
        "https://files.test",
        f"{{jwks_file: {path}}}",
        base_dir=tmp_path,
        fetch="file_poll_seconds: 0.05",
    )

    async def scenario() -> None:
        # The store's own file watch, as the server runs it.
        store = KeyStore(config)
        await store.start()
        try:
            assert _kids(store, "https://files.test") == {"k1"}
            path.write_text(json.dumps(jwks(signing_keys, "k1", "k2")) + " ")
            await until(lambda: _kids(store, "https://files.test") == {"k1", "k2"})
            with caplog.at_level(logging.ERROR, logger="authz.keys.issuer"):
                path.write_text("{ not json")
                # Seen and refused: the previous keys stay.
                await until(lambda: "keeping the previous keys" in caplog.text)
            assert _kids(store, "https://files.test") == {"k1", "k2"}
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_configmap_style_symlink_swap_is_seen(
    tmp_path: Path, signing_keys: dict[str, PrivateKey]
) -> None:
    import json

    # Kubernetes mounts ConfigMaps as DIR/key -> ..data/key, ..data -> ..TIMESTAMP.
    first, second = tmp_path / "..2026_01", tmp_path / "..2026_02"
    first.mkdir()
    second.mkdir()
    (first / "jwks.json").write_text(json.dumps(jwks(signing_keys, "k1")))
    (second / "jwks.json").write_text(json.dumps(jwks(signing_keys, "k3")))
    (tmp_path / "..data").symlink_to(first.name)
    (tmp_path / "jwks.json").symlink_to("..data/jwks.json")
    config = issuer_config("https://cm.test", "{jwks_file: jwks.json}", base_dir=tmp_path)

    async def scenario() -> None:
        store = KeyStore(config)
        await store.start()
        try:
            assert _kids(store, "https://cm.test") == {"k1"}
            swap = tmp_path / "..data_tmp"
            swap.symlink_to(second.name)
            swap.replace(tmp_path / "..data")  # the atomic rename the kubelet does
            await until(lambda: _kids(store, "https://cm.test") == {"k3"})
        finally:
            await store.close()

    config = issuer_config(
        "https://cm.test",
        "{jwks_file: jwks.json}",
        base_dir=tmp_path,
        fetch="file_poll_seconds: 0.05",
    )
    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("ok", "failures", "max_age", "expected"),
    [
        (True, 0, None, 300.0),  # no Cache-Control: the default interval
        (True, 0, 120.0, 120.0),  # max-age honoured
        (True, 0, 5.0, 60.0),  # ... but not below the minimum
        (True, 0, 0.0, 60.0),  # no-cache: the minimum
        (True, 0, 86_400.0, 3600.0),  # ... nor above the maximum
        (False, 1, None, 1.0),  # first retry
        (False, 4, None, 8.0),  # exponential
        (False, 20, None, 300.0),  # capped at the refresh interval
    ],
)
def test_next_delay(ok: bool, failures: int, max_age: float | None, expected: float) -> None:
    assert next_delay(FetchConfig(), ok, failures, max_age) == expected


def test_explain_fetches_remote_keys_as_the_service_would(
    idp: FakeIdP, test_ca: LoopbackCA, signing_keys: dict[str, PrivateKey]
) -> None:
    import io

    from authz.explain import explain

    config = _jwks_uri(idp, test_ca)
    token = mint(signing_keys["k1"], "RS256", claims_for("alice", idp.issuer, "api"), "k1")
    out = io.StringIO()
    decision = explain(config, RequestView(headers={"authorization": (f"Bearer {token}",)}), out)
    assert decision.allowed, out.getvalue()
    assert idp.count(JWKS_PATH) == 1
