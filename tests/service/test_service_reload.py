"""A reload applies every section of a whole file, or refuses it whole and says why.

The real server watches its file (polled by hand here, through ``poll_files``);
metrics go to an in-memory reader. Files are published as operators should
(an atomic rename) unless a test is about a file written in place. A file
renamed over the watched one is taken at the second poll that finds it
unchanged: with ``watch_interval_seconds: 0`` there is no settle time to wait.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

from authz.dev.keys import generate, public_jwk
from authz.dev.tokens import claims_for, mint
from authz.observability.audit import AuditWriter
from authz.observability.audit_sinks import FileSink
from authz.observability.metrics import Metrics
from authz.observability.observe import Observability
from authz.observability.tracing import Tracing
from authz.runtime import ConfigFile
from authz.server import AuthzServer
from tests.service.svc_helpers import (
    AUDIENCE,
    ISSUER,
    WAIT,
    CheckResponse,
    Client,
    LoopThread,
    Signing,
    check_request,
    config_data,
    metadata,
)
from tests.support.clock import FakeClock
from tests.support.redis_server import PASSWORD, start_redis

OTHER_ISSUER = "https://second.reload.example"


def publish(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(temporary, path)


@dataclass
class Watched:
    server: AuthzServer
    path: Path
    data: dict[str, Any]
    reader: InMemoryMetricReader
    client: Client
    loop: LoopThread

    def republish(self, **changes: Any) -> None:
        self.data = {**self.data, **changes}
        publish(self.path, self.data)

    def without(self, key: str, **changes: Any) -> None:
        """Publish the file without ``key`` (and with ``changes``)."""
        self.data = {name: value for name, value in self.data.items() if name != key}
        self.republish(**changes)

    def poll(self) -> None:
        """Two rounds of the watch: the first sees a new file, the second finds it
        unchanged and takes it."""
        self.loop.run(self.server.poll_files())
        self.loop.run(self.server.poll_files())

    def check(self, path: str, token: str) -> CheckResponse:
        request = check_request({"authorization": f"Bearer {token}"}, path=path)
        return self.client.check(request, timeout=WAIT)

    def series(self, name: str) -> dict[tuple[tuple[str, Any], ...], float]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return {
            tuple(sorted(dict(point.attributes or {}).items())): point.value
            for resource_metrics in data.resource_metrics
            for scope in resource_metrics.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
            if isinstance(point, NumberDataPoint)
        }

    def reloads(self) -> dict[str, float]:
        return {
            dict(labels)["result"]: value for labels, value in self.series("authz.reloads").items()
        }


@contextmanager
def _watching(
    loop_thread: LoopThread,
    directory: Path,
    signing: Signing,
    interval: float,
    clock: Callable[[], float],
) -> Iterator[Watched]:
    path = directory / "authz.yaml"
    data = config_data(
        signing.jwks_file,
        watch_interval_seconds=interval,
        audit={"stdout": False, "file": str(directory / "audit-1.jsonl")},
    )
    publish(path, data)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)

    async def start() -> AuthzServer:
        config_file = ConfigFile(path, clock)
        config = config_file.config
        metrics = Metrics(provider, [issuer.issuer for issuer in config.issuers])
        observability = Observability(
            tracing=Tracing(None),
            metrics=metrics,
            audit=AuditWriter([FileSink(directory / "audit-1.jsonl")], metrics),
        )
        server = AuthzServer(config, config_file=config_file, observability=observability)
        await server.start()
        return server

    server = loop_thread.run(start())
    client = Client.connect(server.address)
    yield Watched(server, path, data, reader, client, loop_thread)
    client.close()
    loop_thread.run(server.stop(0))
    provider.shutdown()


@pytest.fixture
def watched(loop_thread: LoopThread, tmp_path: Path, signing: Signing) -> Iterator[Watched]:
    # Interval 0: polled by the test, and no settle time to wait for.
    with _watching(loop_thread, tmp_path, signing, 0, time.time) as watched:
        yield watched


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_an_applied_reload_is_counted(watched: Watched) -> None:
    assert watched.reloads() == {
        "applied": 0,
        "failed": 0,
        "restart_required": 0,
        "refused_widening": 0,
    }
    watched.republish(realm="renamed")
    watched.poll()
    assert watched.server.config.realm == "renamed"
    assert watched.reloads()["applied"] == 1
    watched.path.write_text("issuers: [")  # broken, in place: reported once it settles
    watched.loop.run(watched.server.poll_files())
    assert watched.reloads()["failed"] == 0
    watched.poll()
    assert watched.reloads()["failed"] == 1
    assert watched.server.config.realm == "renamed"


def test_a_reload_moves_the_audit_trail(watched: Watched, tmp_path: Path, signing: Signing) -> None:
    token = signing.token()
    first, second = tmp_path / "audit-1.jsonl", tmp_path / "audit-2.jsonl"
    watched.client.check(check_request({"authorization": f"Bearer {token}"}), timeout=WAIT)
    watched.republish(audit={"stdout": False, "file": str(second), "on_sink_failure": "deny"})
    watched.poll()
    assert watched.reloads()["applied"] == 1
    watched.client.check(check_request({"authorization": f"Bearer {token}"}), timeout=WAIT)
    assert len(_records(first)) == 1
    (moved,) = _records(second)
    assert moved["config_version"] == watched.server.config.version


@pytest.mark.parametrize(
    ("change", "setting"),
    [
        ({"listen": "127.0.0.1:1"}, "listen"),
        ({"telemetry": {"metrics": {"listen": "127.0.0.1:0"}}}, "telemetry"),
    ],
)
def test_a_setting_only_a_restart_applies_refuses_the_whole_file(
    watched: Watched, caplog: pytest.LogCaptureFixture, change: dict[str, Any], setting: str
) -> None:
    running, original = watched.server.config, watched.data
    with caplog.at_level(logging.ERROR, logger="authz.server"):
        watched.republish(realm="renamed", **change)  # and a change a reload could apply
        watched.poll()
    assert watched.server.config is running  # nothing of the file applied
    assert f"{setting} change(s) only on restart" in caplog.text
    assert watched.reloads()["restart_required"] == 1
    assert watched.series("authz.config.restart_required") == {(("setting", setting),): 1}
    assert watched.server.reload_status.last_error == f"{setting} change(s) only on restart"
    # The restart-only setting as it runs, the rest changed: applied, nothing pending.
    watched.data = original
    watched.republish(realm="renamed")
    watched.poll()
    assert watched.server.config.realm == "renamed"
    assert watched.series("authz.config.restart_required") == {(("setting", setting),): 0}


def test_metric_labels_follow_an_issuer_a_reload_adds(watched: Watched, signing: Signing) -> None:
    other = generate("RS256")
    jwks = signing.directory / "second-jwks.json"
    jwks.write_text(json.dumps({"keys": [public_jwk(other, "o1", "RS256")]}))
    issuers = [
        *watched.data["issuers"],
        {
            "issuer": OTHER_ISSUER,
            "audiences": [AUDIENCE],
            "algorithms": ["RS256"],
            "keys": [{"jwks_file": str(jwks)}],
        },
    ]
    watched.republish(issuers=issuers)
    watched.poll()
    token = mint(other, "RS256", claims_for("bob", OTHER_ISSUER, AUDIENCE, ttl=300), "o1")
    reply = watched.client.check(check_request({"authorization": f"Bearer {token}"}), timeout=WAIT)
    assert reply.status.code == 0
    series = watched.series("authz.decisions")
    counted = {dict(labels)["issuer"] for labels, value in series.items() if value}
    assert counted == {OTHER_ISSUER}  # not "unknown": the labels know the new issuer
    # The paging 503s start at zero for the issuer the reload added, too.
    zeroed = {dict(labels)["issuer"] for labels, value in series.items() if not value}
    assert OTHER_ISSUER in zeroed
    token = signing.token()
    watched.client.check(check_request({"authorization": f"Bearer {token}"}), timeout=WAIT)
    series = watched.series("authz.decisions")
    counted = {dict(labels)["issuer"] for labels, value in series.items() if value}
    assert counted == {OTHER_ISSUER, ISSUER}


# Public health checks, admin-only orders; nothing else is allowed (no_route).
ROUTES = [
    {"name": "health", "match": {"prefix": "/healthz"}, "mode": "public"},
    {
        "name": "orders",
        "match": {"prefix": "/orders"},
        "mode": "protected",
        "requirements": {"scopes": ["orders:admin"]},
    },
]


def _with_routes(watched: Watched, signing: Signing) -> str:
    """Routes applied by a reload; a token that they deny (no orders:admin)."""
    watched.republish(routes=ROUTES)
    watched.poll()
    assert watched.server.config.routes is not None
    reader = signing.token(scopes="orders:read")
    assert metadata(watched.check("/orders/1", reader))["reason"] == "insufficient_scope"
    assert metadata(watched.check("/admin", reader))["reason"] == "no_route"
    return reader


def test_a_file_without_its_routes_is_refused_and_the_routes_still_decide(
    watched: Watched, signing: Signing, caplog: pytest.LogCaptureFixture
) -> None:
    reader = _with_routes(watched, signing)
    running = watched.server.config
    with caplog.at_level(logging.ERROR, logger="authz.reloader"):
        # Deleted by mistake (or cut off before routes:), with a change that is fine.
        watched.without("routes", realm="renamed")
        watched.poll()
    assert watched.server.config is running  # nothing of the file applied
    assert metadata(watched.check("/orders/1", reader))["reason"] == "insufficient_scope"
    assert metadata(watched.check("/admin", reader))["reason"] == "no_route"
    (line,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    message = line.getMessage()
    assert f"configuration not reloaded from {watched.path}: it has no routes" in message
    assert "any valid token would be allowed everywhere" in message
    assert "allow_no_routes: true" in message
    assert watched.reloads() == {
        "applied": 1,
        "failed": 0,
        "restart_required": 0,
        "refused_widening": 1,
    }
    status = watched.server.reload_status
    assert (status.reloads, status.failures) == (1, 1)
    assert status.last_error is not None
    assert status.last_error.startswith("it has no routes, and the running configuration has 2")
    watched.poll()  # the refused file is not taken later, nor refused again
    assert watched.server.config is running
    assert watched.reloads()["refused_widening"] == 1


def test_no_routes_said_explicitly_is_applied(
    watched: Watched, signing: Signing, caplog: pytest.LogCaptureFixture
) -> None:
    reader = _with_routes(watched, signing)
    with caplog.at_level(logging.WARNING, logger="authz.reloader"):
        watched.without("routes", allow_no_routes=True)
        watched.poll()
    assert watched.server.config.routes is None
    assert watched.reloads()["applied"] == 2
    assert watched.reloads()["refused_widening"] == 0
    assert watched.server.reload_status.last_error is None
    assert "routes removed from" in caplog.text
    # Every request needs a valid token, and nothing more.
    assert watched.check("/admin", reader).status.code == 0
    assert metadata(watched.check("/orders/1", "not-a-token"))["reason"] == "token_malformed"


def test_a_file_written_at_its_path_is_taken_once_it_stood_still_for_the_interval(
    loop_thread: LoopThread, tmp_path: Path, signing: Signing
) -> None:
    # The watch loop sleeps an hour first: the test polls, and moves the clock
    # the files' ages are measured with.
    clock = FakeClock()
    with _watching(loop_thread, tmp_path, signing, 3600, clock.now) as watched:
        watched.path.write_text(yaml.safe_dump({**watched.data, "realm": "renamed"}))
        clock.value = watched.path.stat().st_mtime + 1
        watched.poll()  # unchanged at two polls, but written a second ago
        assert watched.server.config.realm != "renamed"
        clock.value = watched.path.stat().st_mtime + 3600.5
        watched.loop.run(watched.server.poll_files())
        assert watched.server.config.realm == "renamed"
        assert watched.reloads()["applied"] == 1


def test_a_reload_that_changes_the_replay_store_closes_the_old_one_after_the_grace(
    loop_thread: LoopThread,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    signing: Signing,
) -> None:
    try:
        # A short folder: the server's unix socket path has a length limit.
        redis_server = start_redis(tmp_path_factory.mktemp("redis"))
    except RuntimeError as exc:
        pytest.fail(str(exc))
    password = tmp_path / "redis.password"
    password.write_text(PASSWORD)
    admin = redis_server.client()

    def dpop(prefix: str) -> dict[str, Any]:
        replay = {"store": "redis", "url": redis_server.url, "key_prefix": prefix}
        return {"algorithms": ["ES256"], "replay": {**replay, "password_file": str(password)}}

    def store_connections() -> int:
        return sum(1 for client in admin.client_list() if client["name"] != "test-admin")

    try:
        admin.client_setname("test-admin")
        with _watching(loop_thread, tmp_path, signing, 0, time.time) as watched:
            watched.republish(dpop=dpop("first:"), grace_period_seconds=0.2)
            watched.poll()
            first = watched.server.runtime.replay
            assert first is not None
            assert first.first_use(b"proof-1", 60)  # the store connects on first use
            assert store_connections() == 1
            watched.republish(dpop=dpop("second:"))
            watched.poll()
            assert watched.server.runtime.replay is not first
            # Closed once a Check that took the old runtime is past the grace.
            deadline = time.monotonic() + WAIT
            while store_connections() and time.monotonic() < deadline:
                time.sleep(0.05)  # poll interval
            assert store_connections() == 0
            # The same settings again keep the running store: nothing is closed.
            second = watched.server.runtime.replay
            assert second is not None
            assert second.first_use(b"proof-2", 60)
            watched.republish(realm="renamed")
            watched.poll()
            assert watched.server.runtime.replay is second
            assert store_connections() == 1
    finally:
        admin.close()
        redis_server.stop()
