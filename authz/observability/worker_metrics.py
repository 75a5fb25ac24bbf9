"""One scrape endpoint for every worker of ``authz serve --workers N``.

Each worker keeps its own metrics (its own process, its own counters). The
supervisor serves the configured metrics address itself; each worker serves
its metrics on a loopback port of its own and announces that port in a file
of a directory only the supervisor and its workers know
(``AUTHZ_WORKER_METRICS_DIR``). A scrape of the supervisor fetches every
worker's metrics and returns them as one exposition, each sample labelled
``worker="i"``: sums across workers are then ``sum without (worker)``, and a
restarted worker's counters reset on its own series, as Prometheus expects.
``authz_worker_up{worker}`` says which workers answered the scrape.
"""

from __future__ import annotations

import logging
import socket
import tempfile
import threading
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

__all__ = ["METRICS_DIR_ENV", "WORKER_INDEX_ENV", "WorkerMetrics", "announce", "worker_listen"]

log = logging.getLogger(__name__)

METRICS_DIR_ENV = "AUTHZ_WORKER_METRICS_DIR"
# Set by the supervisor (workers.py) in each worker: its index, which the
# worker's announced metrics port is labelled with.
WORKER_INDEX_ENV = "AUTHZ_WORKER_INDEX"
# A worker that does not answer within this long is reported down for this
# scrape; Prometheus's own scrape timeout is 10 s by default.
_FETCH_TIMEOUT = 2.0


def worker_listen(listen: str, environ: Mapping[str, str]) -> str:
    """Where this process serves its metrics: a worker, on a loopback port of
    its own (the supervisor serves ``listen``); anything else, ``listen``."""
    if environ.get(METRICS_DIR_ENV):
        return "127.0.0.1:0"
    return listen


def announce(address: str, environ: Mapping[str, str], worker: str) -> None:
    """A worker tells the supervisor where its metrics are (atomically)."""
    directory = environ.get(METRICS_DIR_ENV)
    if not directory or not worker.isdigit():
        return
    target = Path(directory) / f"worker-{worker}.address"
    partial = target.with_suffix(".partial")
    partial.write_text(address)
    partial.replace(target)


class _Collector:
    """Every worker's metrics, fetched at scrape time and labelled by worker."""

    def __init__(self, directory: Path, workers: int) -> None:
        self._directory = directory
        self._workers = workers

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        up = GaugeMetricFamily(
            "authz_worker_up", "1 if the worker answered this scrape", labels=["worker"]
        )
        for index in range(self._workers):
            text = self._fetch(index)
            up.add_metric([str(index)], 0.0 if text is None else 1.0)
            if text is None:
                continue
            for family in text_string_to_metric_families(text):
                merged = families.get(family.name)
                if merged is None:
                    merged = Metric(family.name, family.documentation, family.type, family.unit)
                    families[family.name] = merged
                merged.samples.extend(
                    Sample(s.name, {**s.labels, "worker": str(index)}, s.value, s.timestamp)
                    for s in family.samples
                )
        yield up
        yield from families.values()

    def _fetch(self, index: int) -> str | None:
        try:
            address = (self._directory / f"worker-{index}.address").read_text().strip()
            url = f"http://{address}/metrics"
            with urllib.request.urlopen(url, timeout=_FETCH_TIMEOUT) as reply:
                text: str = reply.read().decode("utf-8")
                return text
        except (OSError, ValueError) as exc:  # not started yet, restarting, or stuck
            log.debug("worker %d metrics unavailable: %s", index, exc)
            return None


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Scrapes are not worth a log line each."""


class _Server(WSGIServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[WSGIRequestHandler]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)


class WorkerMetrics:
    """The supervisor's side: the shared directory and the scrape endpoint."""

    def __init__(self, listen: str, workers: int) -> None:
        self.listen = listen
        self._tempdir = tempfile.TemporaryDirectory(prefix="authz-metrics-")
        self.directory = Path(self._tempdir.name)
        self._workers = workers
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def environ(self) -> dict[str, str]:
        """What a worker's environment needs to take part."""
        return {METRICS_DIR_ENV: str(self.directory)}

    def start(self) -> str:
        """Bind the configured address now (a bind error stops start-up); HOST:PORT."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self.directory, self._workers))
        host, _, port = self.listen.rpartition(":")
        host = host.strip("[]")
        self._server = make_server(
            host, int(port), make_wsgi_app(registry), server_class=_Server, handler_class=_Quiet
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="authz-worker-metrics", daemon=True
        )
        self._thread.start()
        bound = self._server.server_port
        shown = f"[{host}]" if ":" in host else host
        return f"{shown}:{bound}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._tempdir.cleanup()
