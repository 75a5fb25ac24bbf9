"""Where the instruments go: a Prometheus scrape endpoint, an OTLP push, both, or nowhere.

``build_meter_provider`` turns ``telemetry.metrics`` into the SDK provider the
instruments (``metrics.Metrics``) are created from. The scrape endpoint serves
the instruments together with ``authz_build_info{version}`` (always 1) and
prometheus-client's ``process_*``, ``python_info`` and ``python_gc_*`` metrics
(``scrape_registry``); an OTLP push carries the instruments only.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from opentelemetry.metrics import MeterProvider, NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    make_wsgi_app,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from authz import __version__
from authz.config.observability import MetricsConfig
from authz.errors import ConfigError
from authz.observability.exporters import metrics_choice
from authz.observability.metrics import BUILD_INFO
from authz.observability.worker_metrics import worker_listen

__all__ = ["MetricsEndpoint", "build_meter_provider", "noop_provider", "scrape_registry"]


def build_meter_provider(
    config: MetricsConfig, the_resource: Resource, environ: Mapping[str, str]
) -> tuple[MeterProvider, MetricsEndpoint | None]:
    """The SDK provider with a Prometheus reader and/or an OTLP push reader, or a no-op."""
    from opentelemetry.sdk.metrics.export import MetricReader

    readers: list[MetricReader] = []
    endpoint: MetricsEndpoint | None = None
    if config.listen is not None:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        # A registry of our own, not prometheus_client's global one: several
        # servers in one process (tests) must not see each other's numbers.
        registry = CollectorRegistry(auto_describe=False)
        readers.append(
            PrometheusMetricReader(
                disable_target_info=True, scope_info_enabled=False, registry=registry
            )
        )
        endpoint = MetricsEndpoint(registry, worker_listen(config.listen, environ))
    pushed = metrics_choice(config.otlp_endpoint, environ).exporter()
    if pushed is not None:
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        readers.append(
            PeriodicExportingMetricReader(
                pushed,
                export_interval_millis=config.otlp_interval_seconds * 1000,
            )
        )
    if not readers:
        return noop_provider(), None
    provider = SdkMeterProvider(
        metric_readers=readers, resource=the_resource, shutdown_on_exit=False
    )
    return provider, endpoint


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Scrapes are not worth a log line each."""


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


@dataclass
class MetricsEndpoint:
    """The Prometheus scrape endpoint (any path answers): an HTTP server in its own thread.

    prometheus-client renders the registry; the server is wsgiref's, run here
    rather than by ``prometheus_client.start_http_server`` so that ``stop``
    returns promptly (a short poll interval) instead of after up to 0.5 s.
    """

    registry: CollectorRegistry
    listen: str
    _server: WSGIServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> str:
        """Bind and serve; the bound HOST:PORT (the real port when 0 was asked for)."""
        host, _, port = self.listen.rpartition(":")
        bare_host = host.strip("[]")
        server_class = _Server6 if ":" in bare_host else _Server
        try:
            server = make_server(
                bare_host,
                int(port),
                make_wsgi_app(scrape_registry(self.registry)),
                server_class=server_class,
                handler_class=_QuietHandler,
            )
        except OSError as exc:
            raise ConfigError(
                f"telemetry.metrics.listen {self.listen}: cannot bind: {exc}"
            ) from None
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="authz-metrics", daemon=True
        )
        self._thread.start()
        return f"{host}:{server.server_port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None


class _Collected:
    """Another registry's metrics, served as one collector among others.

    No ``describe``: the registry then skips its duplicate-name check, which
    would ask the OpenTelemetry reader to collect at registration.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        return self._registry.collect()


class _BuildInfo:
    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            BUILD_INFO, "The running authz version (always 1)", labels=["version"]
        )
        family.add_metric([__version__], 1)
        yield family


def scrape_registry(instruments: CollectorRegistry) -> CollectorRegistry:
    """What the scrape endpoint serves: the instruments, the build, the process and its GC.

    prometheus-client's process, platform and GC collectors are module
    singletons registered in its global registry; ``instruments`` is a registry
    of its own (servers in one process must not see each other's numbers), so
    they are added here. They describe the whole process, which is what every
    server in it shares.
    """
    served = CollectorRegistry(auto_describe=False)
    served.register(_Collected(instruments))
    served.register(_BuildInfo())
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        served.register(collector)
    return served


def noop_provider() -> MeterProvider:
    """Instruments that record nothing: metrics are configured off."""
    return NoOpMeterProvider()
