"""Which OpenTelemetry exporters to build, by the SDK's standard environment variables.

Traces:

- ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``: nothing, whatever
  the file says (an operator's kill switch).
- ``OTEL_TRACES_EXPORTER``: a comma-separated list of ``otlp`` and
  ``console`` (spans as JSON on stderr: stdout carries the audit trail).
  Any other name is warned about and ignored.
- OTLP is on when the file sets ``telemetry.tracing.endpoint``, an
  ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` is set, or the list names ``otlp``.
- ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``, else ``OTEL_EXPORTER_OTLP_PROTOCOL``:
  ``grpc`` (the default) or ``http/protobuf``. Another value (``http/json``)
  turns OTLP off with an error in the log, rather than sending one protocol
  to a port that speaks the other.

Metrics pushed with OTLP follow the same rules (``OTEL_METRICS_EXPORTER``,
``OTEL_EXPORTER_OTLP_METRICS_*``), except that the generic
``OTEL_EXPORTER_OTLP_ENDPOINT`` alone does not turn pushing on: metrics already
have the scrape endpoint. ``prometheus`` in ``OTEL_METRICS_EXPORTER`` is
accepted (the scrape endpoint is ``telemetry.metrics.listen``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricExporter
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = ["MetricsChoice", "TracesChoice", "metrics_choice", "traces_choice"]

log = logging.getLogger(__name__)

GRPC, HTTP = "grpc", "http/protobuf"
_TRACE_EXPORTERS = frozenset({"otlp", "console", "none"})
_METRIC_EXPORTERS = frozenset({"otlp", "prometheus", "none"})


def _names(value: str | None) -> set[str]:
    return {item.strip().lower() for item in (value or "").split(",") if item.strip()}


def _disabled(environ: Mapping[str, str]) -> bool:
    return environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _exporters(variable: str, supported: frozenset[str], environ: Mapping[str, str]) -> set[str]:
    names = _names(environ.get(variable))
    for unknown in sorted(names - supported):
        log.warning(
            "%s=%s: %r is not supported (%s); ignored",
            variable,
            environ.get(variable),
            unknown,
            ", ".join(sorted(supported)),
            extra={"variable": variable},
        )
    return names & supported


def _protocol(signal: str, environ: Mapping[str, str]) -> str | None:
    """The OTLP protocol for ``signal``, or None (unsupported: logged)."""
    for variable in (
        f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ):
        value = environ.get(variable, "").strip().lower()
        if not value:
            continue
        if value in (GRPC, HTTP):
            return value
        log.error(
            "%s=%s is not supported (grpc, http/protobuf): %s are not exported with OTLP",
            variable,
            value,
            signal,
            extra={"variable": variable},
        )
        return None
    return GRPC


def _http_endpoint(endpoint: str, signal: str) -> str:
    """A base URL from the file gets the signal's path, as the SDK does for the
    generic environment variable (an explicit endpoint is used as given)."""
    _, sep, rest = endpoint.partition("://")
    if sep and "/" not in rest.rstrip("/"):
        return f"{endpoint.rstrip('/')}/v1/{signal}"
    return endpoint


@dataclass(frozen=True)
class TracesChoice:
    otlp_protocol: str | None = None  # None: no OTLP
    endpoint: str | None = None  # None: the exporter reads the environment
    console: bool = False

    @property
    def enabled(self) -> bool:
        return self.otlp_protocol is not None or self.console

    def exporters(self) -> list[SpanExporter]:
        """The span exporters (imported only when used: they pull in clients)."""
        exporters: list[SpanExporter] = []
        if self.otlp_protocol == GRPC:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter(endpoint=self.endpoint))
        elif self.otlp_protocol == HTTP:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as HttpSpanExporter,
            )

            endpoint = None if self.endpoint is None else _http_endpoint(self.endpoint, "traces")
            exporters.append(HttpSpanExporter(endpoint=endpoint))
        if self.console:
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter(out=sys.stderr))
        return exporters

    def describe(self, environ: Mapping[str, str]) -> str:
        parts: list[str] = []
        if self.otlp_protocol is not None:
            default = "http://localhost:4318" if self.otlp_protocol == HTTP else "localhost:4317"
            where = (
                self.endpoint
                or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or default
            )
            parts.append(f"OTLP/{'gRPC' if self.otlp_protocol == GRPC else 'HTTP'} to {where}")
        if self.console:
            parts.append("the console (stderr)")
        return " and ".join(parts)


def traces_choice(config_endpoint: str | None, environ: Mapping[str, str]) -> TracesChoice:
    if _disabled(environ):
        return TracesChoice()
    listed = _exporters("OTEL_TRACES_EXPORTER", _TRACE_EXPORTERS, environ)
    if "none" in listed:
        return TracesChoice()
    explicit = "OTEL_TRACES_EXPORTER" in environ and environ["OTEL_TRACES_EXPORTER"].strip()
    otlp = "otlp" in listed or (
        not explicit
        and bool(
            config_endpoint
            or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        )
    )
    # A file endpoint with an exporter list that leaves otlp out: the list wins.
    protocol = _protocol("traces", environ) if otlp else None
    return TracesChoice(
        protocol, (config_endpoint or None) if protocol else None, "console" in listed
    )


@dataclass(frozen=True)
class MetricsChoice:
    otlp_protocol: str | None = None
    endpoint: str | None = None

    def exporter(self) -> MetricExporter | None:
        if self.otlp_protocol == GRPC:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

            return OTLPMetricExporter(endpoint=self.endpoint)
        if self.otlp_protocol == HTTP:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter as HttpMetricExporter,
            )

            endpoint = None if self.endpoint is None else _http_endpoint(self.endpoint, "metrics")
            return HttpMetricExporter(endpoint=endpoint)
        return None


def metrics_choice(config_endpoint: str | None, environ: Mapping[str, str]) -> MetricsChoice:
    if _disabled(environ):
        return MetricsChoice()
    listed = _exporters("OTEL_METRICS_EXPORTER", _METRIC_EXPORTERS, environ)
    explicit = bool(environ.get("OTEL_METRICS_EXPORTER", "").strip())
    if "none" in listed or (explicit and "otlp" not in listed):
        return MetricsChoice()
    otlp = bool(
        config_endpoint or "otlp" in listed or environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    )
    protocol = _protocol("metrics", environ) if otlp else None
    return MetricsChoice(protocol, (config_endpoint or None) if protocol else None)
