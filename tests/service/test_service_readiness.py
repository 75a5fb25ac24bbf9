"""Readiness follows the configured issuers: one IdP's outage need not shrink the fleet.

The real server with two issuers: one with a key file, one whose JWKS endpoint
refuses connections (never fetched). ``readiness`` decides what health says,
and ``authz_issuer_ready`` says per issuer what is true either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from authz.config.models import Config
from authz.observability.audit import AuditWriter
from authz.observability.audit_sinks import FileSink
from authz.observability.metrics import Metrics
from authz.observability.observe import Observability
from authz.observability.tracing import Tracing
from authz.server import AuthzServer
from tests.service.svc_helpers import (
    ISSUER,
    NOT_SERVING,
    SERVING,
    Client,
    ConfigFactory,
    LoopThread,
)

DOWN = "https://down.readiness.test"
UNREACHABLE: dict[str, Any] = {
    "issuer": DOWN,
    "audiences": ["api"],
    "algorithms": ["RS256"],
    # A closed loopback port: every fetch fails at once.
    "keys": [{"jwks_uri": "https://127.0.0.1:9/jwks.json"}],
    "fetch": {"connect_timeout_seconds": 0.5, "read_timeout_seconds": 0.5},
}


def _issuers(make_config: ConfigFactory, readiness: Any) -> Config:
    good = make_config().model_dump(mode="json")["issuers"][0]
    return make_config(issuers=[good, UNREACHABLE], readiness=readiness)


def _ready_gauge(reader: InMemoryMetricReader) -> dict[str, float]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        str(point.attributes["issuer"]): point.value  # type: ignore[index, union-attr]
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "authz.issuer.ready"
        for point in metric.data.data_points
    }


@pytest.mark.parametrize(
    ("readiness", "health"),
    [
        ("any", SERVING),
        ("all", NOT_SERVING),
        ([ISSUER], SERVING),
        ([DOWN], NOT_SERVING),
        ([ISSUER, DOWN], NOT_SERVING),
    ],
    ids=["any", "all", "the-good-one", "the-down-one", "both-listed"],
)
def test_health_follows_the_readiness_setting(
    tmp_path: Path, make_config: ConfigFactory, readiness: Any, health: int
) -> None:
    config = _issuers(make_config, readiness)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    metrics = Metrics(provider, [ISSUER, DOWN])
    observability = Observability(
        tracing=Tracing(None),
        metrics=metrics,
        audit=AuditWriter([FileSink(tmp_path / "audit.jsonl")], metrics),
        meter_provider=provider,
    )
    loop = LoopThread()

    async def create() -> AuthzServer:
        return AuthzServer(config, observability=observability)

    server = loop.run(create())
    try:
        loop.run(server.start())
        client = Client.connect(server.address)
        try:
            assert client.health() == health
        finally:
            client.close()
        assert _ready_gauge(reader) == {ISSUER: 1, DOWN: 0}
    finally:
        loop.run(server.stop(0))
        loop.close()


def test_a_listed_issuer_must_be_configured(make_config: ConfigFactory) -> None:
    from authz.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        make_config(readiness=["https://typo.example"])
    assert "readiness[0]" in str(info.value)
    assert "not one of the configured issuers" in str(info.value)
