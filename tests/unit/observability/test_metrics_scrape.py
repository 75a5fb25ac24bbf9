"""What the scrape endpoint serves besides the instruments: the build and the process."""

from __future__ import annotations

import gc
import urllib.request
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from authz import __version__
from authz.observability.metrics import BUILD_INFO, Metrics
from authz.observability.metrics_export import MetricsEndpoint

ISSUER = "https://idp.example"


def scrape(address: str) -> dict[str, list[Sample]]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    samples: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


@pytest.fixture
def two_servers() -> Iterator[tuple[list[Metrics], list[str]]]:
    """Two servers' endpoints in one process, as the service tests run them."""
    providers: list[MeterProvider] = []
    endpoints: list[MetricsEndpoint] = []
    metrics: list[Metrics] = []
    for _ in range(2):
        registry = CollectorRegistry(auto_describe=False)
        reader = PrometheusMetricReader(
            disable_target_info=True, scope_info_enabled=False, registry=registry
        )
        providers.append(MeterProvider(metric_readers=[reader], shutdown_on_exit=False))
        endpoints.append(MetricsEndpoint(registry, "127.0.0.1:0"))
        metrics.append(Metrics(providers[-1], [ISSUER]))
    try:
        yield metrics, [endpoint.start() for endpoint in endpoints]
    finally:
        for endpoint in endpoints:
            endpoint.stop()
        for provider in providers:
            provider.shutdown()


def test_build_info_names_the_running_version(
    two_servers: tuple[list[Metrics], list[str]],
) -> None:
    _, addresses = two_servers
    (info,) = scrape(addresses[0])[BUILD_INFO]
    assert info.labels == {"version": __version__}
    assert info.value == 1.0


def test_process_and_gc_metrics_are_this_process(
    two_servers: tuple[list[Metrics], list[str]],
) -> None:
    _, addresses = two_servers
    gc.collect()
    samples = scrape(addresses[0])
    assert samples["process_cpu_seconds_total"][0].value > 0
    assert samples["process_resident_memory_bytes"][0].value > 1_000_000
    assert samples["process_open_fds"][0].value >= 3
    (python,) = samples["python_info"]
    assert python.labels["implementation"] == "CPython"
    full = {s.labels["generation"]: s.value for s in samples["python_gc_collections_total"]}
    assert full["2"] >= 1  # the gc.collect() above


def test_each_endpoint_serves_its_own_instruments_and_the_shared_process(
    two_servers: tuple[list[Metrics], list[str]],
) -> None:
    metrics, addresses = two_servers
    metrics[0].decision(decision="allow", reason="allowed", issuer=ISSUER, route="", seconds=0.001)
    first, second = scrape(addresses[0]), scrape(addresses[1])
    assert [s.value for s in first["authz_decisions_total"]] == [1.0]
    assert "authz_decisions_total" not in second
    for samples in (first, second):
        assert samples[BUILD_INFO][0].value == 1.0
        assert "process_start_time_seconds" in samples
