"""The ``telemetry:`` and ``audit:`` sections of the configuration file.

Kept apart from ``config/models.py`` so that the observability settings can
grow without touching the core file; ``models.Config`` holds one field for each.

::

    telemetry:
      service_name: authz                 # default: OTEL_SERVICE_NAME, else "authz"
      tracing:
        endpoint: http://collector:4317   # OTLP/gRPC; default: the OTEL_EXPORTER_OTLP_* variables
        root_sample_ratio: 1.0            # Checks without a trace parent; default: the SDK's
      metrics:
        listen: 0.0.0.0:9464              # Prometheus scrape endpoint; default: off
        otlp_endpoint: http://collector:4317  # push metrics too; default: off
        otlp_interval_seconds: 60
    audit:
      stdout: true                        # one JSON line per decision on stdout
      file: /var/log/authz/audit.jsonl    # and/or appended to a file
      on_sink_failure: count              # a record a sink did not take: count and answer,
                                          # or deny: answer 503 audit_unavailable
      shutdown_timeout_seconds: 5         # how long stop() may take to flush the file
      late_status: 503                    # Envoy's status_on_error: what a client got when
                                          # authz answered after Envoy's ext_authz timeout
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from authz.config.base import Model, PathModel, check_listen

__all__ = ["AuditConfig", "MetricsConfig", "TelemetryConfig", "TracingConfig"]

_ENDPOINT = re.compile(r"^https?://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?/?$")


def _check_endpoint(value: str | None) -> str | None:
    if value is not None and not _ENDPOINT.match(value):
        raise ValueError("expected an OTLP/gRPC endpoint: http://HOST:PORT or https://HOST:PORT")
    return value


class TracingConfig(Model):
    # None: the standard OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT
    # decide; with neither (nor OTEL_TRACES_EXPORTER=otlp), tracing is off.
    endpoint: str | None = None
    # Only for a Check that arrives without a trace parent: with one, the
    # parent's sampled flag decides (parent-based sampling). None: the SDK's
    # OTEL_TRACES_SAMPLER, whose default is parentbased_always_on.
    root_sample_ratio: float | None = Field(default=None, ge=0.0, le=1.0)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return _check_endpoint(value)


class MetricsConfig(Model):
    # Off unless set: an extra open port should be a decision, and several
    # instances on one host would otherwise fight over a default port.
    listen: str | None = None
    otlp_endpoint: str | None = None
    otlp_interval_seconds: float = Field(default=60.0, gt=0, le=3600)

    @field_validator("listen")
    @classmethod
    def _listen_address(cls, value: str | None) -> str | None:
        return value if value is None else check_listen(value, unix=False)

    @field_validator("otlp_endpoint")
    @classmethod
    def _otlp_endpoint(cls, value: str | None) -> str | None:
        return _check_endpoint(value)


class TelemetryConfig(Model):
    service_name: str | None = Field(default=None, min_length=1, max_length=200)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)


class AuditConfig(PathModel):
    PATH_KEYS = ("file",)

    """Where audit records go. Both sinks may be on; at least one must be."""

    stdout: bool = True
    file: Path | None = None
    # "count": a record a sink could not take is counted and logged, and the
    # Check answered as decided. "deny": the Check is answered 503 instead
    # (audit_unavailable): nothing passes or is refused without a record.
    on_sink_failure: Literal["count", "deny"] = "count"
    # No longer used: records are written before the answer, not queued.
    # Accepted so that existing files still load; start-up says it is ignored.
    queue_size: int = Field(default=10_000, ge=1, le=1_000_000)
    shutdown_timeout_seconds: float = Field(default=5.0, ge=0, le=300)
    # What the client got when authz answered after Envoy stopped waiting:
    # Envoy's status_on_error (503 in every Envoy config shipped here; Envoy's
    # own default is 403). authz cannot see it, so it is told.
    late_status: int = Field(default=503, ge=400, le=599)

    @model_validator(mode="after")
    def _some_sink(self) -> AuditConfig:
        if not self.stdout and self.file is None:
            raise ValueError(
                "audit needs a sink: stdout: true, or a file (an audit trail cannot be off)"
            )
        return self
