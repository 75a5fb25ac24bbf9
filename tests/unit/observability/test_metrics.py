"""metrics: bounded labels, the key-events hook, and the Prometheus endpoint."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import authz.errors
from authz.errors import AuthzError, ConfigError
from authz.keys.events import Guarded, KeyEvents
from authz.observability.metrics import (
    FETCH_RESULTS,
    Labels,
    Metrics,
    known_reasons,
)
from authz.observability.metrics_export import MetricsEndpoint

ISSUER = "https://idp.example"
NOW = 1_800_000_000.0


def test_known_reasons_are_every_error_class_reason_and_allowed() -> None:
    reasons = known_reasons()
    for name in authz.errors.__all__:
        cls = getattr(authz.errors, name)
        if isinstance(cls, type) and issubclass(cls, AuthzError):
            assert cls.reason in reasons
    assert {"allowed", "dry_run"} <= reasons


def test_labels_are_bounded() -> None:
    labels = Labels([ISSUER])
    assert labels.issuer(ISSUER) == ISSUER
    assert labels.issuer("https://attacker.example/anything") == "unknown"
    assert labels.issuer(None) == "unknown"
    assert labels.reason("token_expired") == "token_expired"
    assert labels.reason("made-up by a bug") == "other"
    assert labels.route("") == "none"
    assert labels.route("orders") == "orders"
    assert len(labels.route("r" * 500)) == 64
    assert {labels.fetch_result(result) for result in FETCH_RESULTS} == FETCH_RESULTS
    assert labels.fetch_result("exploded") == "other"


@dataclass
class Measured:
    metrics: Metrics
    reader: InMemoryMetricReader
    clock: list[float]

    def points(self) -> dict[str, list[Any]]:
        data = self.reader.get_metrics_data()
        assert data is not None
        found: dict[str, list[Any]] = {}
        for resource_metrics in data.resource_metrics:
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    found[metric.name] = list(metric.data.data_points)
        return found

    def series(self, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        return {
            tuple(sorted(dict(point.attributes).items())): getattr(point, "value", None)
            for point in self.points().get(name, [])
        }


@pytest.fixture
def measured() -> Iterator[Measured]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    clock = [NOW]
    yield Measured(Metrics(provider, [ISSUER], clock=lambda: clock[0]), reader, clock)
    provider.shutdown()


def test_a_flood_of_forged_issuers_and_odd_reasons_stays_a_handful_of_series(
    measured: Measured,
) -> None:
    for index in range(500):
        measured.metrics.decision(
            decision="deny",
            reason=f"reason-{index}" if index % 2 else "unknown_issuer",
            issuer=f"https://evil.example/{index}",
            route="",
            seconds=0.001,
        )
    series = measured.series("authz.decisions")
    assert series == {
        (("decision", "deny"), ("issuer", "unknown"), ("reason", "other"), ("route", "none")): 250,
        (
            ("decision", "deny"),
            ("issuer", "unknown"),
            ("reason", "unknown_issuer"),
            ("route", "none"),
        ): 250,
    }
    (duration,) = measured.points()["authz.check.duration"]
    assert duration.count == 500
    assert dict(duration.attributes) == {"decision": "deny"}


def test_shadow_decisions_count_would_be_outcomes_apart_from_decisions(
    measured: Measured,
) -> None:
    measured.metrics.shadow_decision(
        source="route", route="admin", allowed=False, reason="missing_token"
    )
    measured.metrics.shadow_decision(
        source="dry_run", route="", allowed=False, reason="made-up by a bug"
    )
    assert measured.series("authz.shadow.decisions") == {
        (
            ("reason", "missing_token"),
            ("route", "admin"),
            ("source", "route"),
            ("would", "deny"),
        ): 1,
        (("reason", "other"), ("route", "none"), ("source", "dry_run"), ("would", "deny")): 1,
    }
    assert measured.series("authz.decisions") == {}


def test_audit_counters_start_at_zero_and_count(measured: Measured) -> None:
    series = measured.series("authz.audit.records")
    assert set(series.values()) == {0}
    measured.metrics.audit_written(3)
    measured.metrics.audit_dropped("write_error", 2)
    measured.metrics.audit_write_failed("file", 1)
    series = measured.series("authz.audit.records")
    assert series[(("outcome", "written"), ("reason", "none"))] == 3
    assert series[(("outcome", "dropped"), ("reason", "write_error"))] == 2
    assert series[(("outcome", "dropped"), ("reason", "shutdown"))] == 0
    assert measured.series("authz.audit.write_errors") == {(("sink", "file"),): 1}


def test_key_events_are_counted_by_the_metrics_they_were_given(measured: Measured) -> None:
    events: KeyEvents = measured.metrics
    events.key_fetch(ISSUER, "ok")
    events.key_fetch(ISSUER, "timeout")
    events.key_fetch("https://not-configured.example", "ok")
    events.keys_loaded(ISSUER, NOW - 90)
    events.token_cache(ISSUER, True)
    events.token_cache(ISSUER, False)
    fetches = measured.series("authz.key.fetches")
    assert fetches == {
        (("issuer", ISSUER), ("result", "ok")): 1,
        (("issuer", ISSUER), ("result", "timeout")): 1,
        (("issuer", "unknown"), ("result", "ok")): 1,
    }
    assert measured.series("authz.key.age") == {(("issuer", ISSUER),): 90.0}
    measured.clock[0] += 30  # the same key set, half a minute older
    assert measured.series("authz.key.age") == {(("issuer", ISSUER),): 120.0}
    lookups = {
        (("issuer", ISSUER), ("result", "hit")): 1,
        (("issuer", ISSUER), ("result", "miss")): 1,
    }
    assert measured.series("authz.token.cache.lookups") == lookups
    # The former name, served the same for one release.
    assert measured.series("authz.key.cache.lookups") == lookups


class Exploding:
    def key_fetch(self, issuer: str, result: str) -> None:
        raise RuntimeError("listener bug")

    def keys_loaded(self, issuer: str, loaded_at: float) -> None:
        raise RuntimeError("listener bug")

    def token_cache(self, issuer: str, hit: bool) -> None:
        raise RuntimeError("listener bug")


def test_a_failing_listener_never_raises_into_key_code() -> None:
    guarded = Guarded(Exploding())
    guarded.key_fetch(ISSUER, "error")
    guarded.keys_loaded(ISSUER, NOW)
    guarded.token_cache(ISSUER, True)


# The Prometheus endpoint.


@pytest.fixture
def endpoint() -> Iterator[tuple[Metrics, MetricsEndpoint]]:
    registry = CollectorRegistry(auto_describe=False)
    reader = PrometheusMetricReader(
        disable_target_info=True, scope_info_enabled=False, registry=registry
    )
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    served = MetricsEndpoint(registry, "127.0.0.1:0")
    yield Metrics(provider, [ISSUER]), served
    served.stop()
    provider.shutdown()


def test_the_endpoint_serves_prometheus_text(endpoint: tuple[Metrics, MetricsEndpoint]) -> None:
    metrics, served = endpoint
    address = served.start()
    metrics.decision(decision="allow", reason="allowed", issuer=ISSUER, route="", seconds=0.0003)
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as reply:
        assert reply.headers["content-type"].startswith("text/plain")
        text = reply.read().decode()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    (total,) = [s for s in families["authz_decisions"].samples if s.name.endswith("_total")]
    assert total.labels == {
        "decision": "allow",
        "reason": "allowed",
        "issuer": ISSUER,
        "route": "none",
    }
    assert total.value == 1.0
    buckets = {
        s.labels["le"]: s.value
        for s in families["authz_check_duration_seconds"].samples
        if s.name.endswith("_bucket")
    }
    assert buckets["0.00025"] == 0.0
    assert buckets["0.0005"] == 1.0
    assert "authz_audit_records" in families


def test_a_taken_port_is_a_configuration_error(endpoint: tuple[Metrics, MetricsEndpoint]) -> None:
    _, served = endpoint
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        clash = MetricsEndpoint(served.registry, f"127.0.0.1:{port}")
        with pytest.raises(ConfigError, match=r"telemetry\.metrics\.listen .* cannot bind"):
            clash.start()


def test_stop_releases_the_port(endpoint: tuple[Metrics, MetricsEndpoint]) -> None:
    _, served = endpoint
    port = int(served.start().rsplit(":", 1)[1])
    served.stop()
    # Nothing listens there any more, and the port can be bound again.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))


def test_the_answers_that_page_start_at_zero(measured: Measured) -> None:
    # A first 503 must be an increase, not the birth of a series rate() cannot see.
    measured.metrics.zero_failures(["orders"], ["stdout", "file"])
    decisions = measured.series("authz.decisions")
    for reason in ("keys_unavailable", "internal_error", "audit_unavailable"):
        for issuer in (ISSUER, "unknown"):
            for route in ("orders", "none"):
                key = (
                    ("decision", "deny"),
                    ("issuer", issuer),
                    ("reason", reason),
                    ("route", route),
                )
                assert decisions[key] == 0
    assert measured.series("authz.audit.write_errors") == {
        (("sink", "stdout"),): 0,
        (("sink", "file"),): 0,
    }


def test_a_refused_file_stays_reported_until_a_reload_applies(measured: Measured) -> None:
    metrics = measured.metrics
    metrics.running("abc123")
    assert measured.series("authz.config.info") == {(("version", "abc123"),): 1}
    metrics.reloaded("failed")
    refused = measured.series("authz.config.refused")
    assert refused[(("result", "failed"),)] == 1
    assert refused[(("result", "refused_widening"),)] == 0
    metrics.reloaded("applied")
    metrics.running("def456")
    assert set(measured.series("authz.config.refused").values()) == {0}
    assert measured.series("authz.config.info") == {(("version", "def456"),): 1}
