"""Tracing: one SERVER span per Check that continues Envoy's trace.

Envoy's OpenTelemetry tracer opens a CLIENT span for the ext_authz call
(``async envoy.service.auth.v3.Authorization.Check egress``) and sends its
context as ``traceparent``/``tracestate`` in the *gRPC metadata* of the Check.
``parent_context`` reads exactly those, so our span is that span's child. A
``traceparent`` inside the CheckRequest's HTTP headers is the end client's and
is deliberately ignored: trusting it would let any client graft our spans onto
a trace of its choosing and detach them from Envoy's.

Export is OTLP (gRPC or HTTP/protobuf) and/or the console, chosen by the file's
``telemetry.tracing.endpoint`` and the SDK's standard variables
(exporters.py). Without any, the tracer is OpenTelemetry's no-op and a
Check pays for reading two metadata entries.

Headers, TLS, compression, timeouts and the batch processor's delays are the
exporter's own ``OTEL_EXPORTER_OTLP_*`` and ``OTEL_BSP_*`` variables.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable, Mapping
from types import TracebackType

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from authz import AUTHORIZATION_SERVICE, __version__
from authz.config.observability import TelemetryConfig
from authz.observability.exporters import traces_choice

__all__ = [
    "ATTR_ALG",
    "ATTR_DECISION",
    "ATTR_DRY_RUN_REASON",
    "ATTR_DRY_RUN_STATUS",
    "ATTR_ISSUER",
    "ATTR_KID",
    "ATTR_METHOD",
    "ATTR_PATH",
    "ATTR_REASON",
    "ATTR_ROUTE",
    "ATTR_SHADOW_REASON",
    "ATTR_SHADOW_ROUTE",
    "ATTR_SHADOW_STATUS",
    "ATTR_SHADOW_WOULD",
    "ATTR_STATUS",
    "ATTR_UNDELIVERED_DECISION",
    "ATTR_UNDELIVERED_REASON",
    "ATTR_UNDELIVERED_STATUS",
    "CHECK_SPAN",
    "CheckObservation",
    "Tracing",
    "parent_context",
    "resource",
    "trace_id_from",
    "unsampled_parent",
]

log = logging.getLogger(__name__)

# OpenTelemetry's RPC conventions: span name "{rpc.service}/{rpc.method}".
CHECK_SPAN = f"{AUTHORIZATION_SERVICE}/Check"
_RPC_ATTRIBUTES = {
    "rpc.system": "grpc",
    "rpc.service": AUTHORIZATION_SERVICE,
    "rpc.method": "Check",
}

ATTR_DECISION = "authz.decision"
ATTR_REASON = "authz.reason"
ATTR_STATUS = "authz.status"
ATTR_ISSUER = "authz.issuer"
ATTR_ROUTE = "authz.route"
ATTR_KID = "authz.token.kid"
ATTR_ALG = "authz.token.alg"
ATTR_METHOD = "http.request.method"
# Outcomes reported, not enforced. Shadow attributes are arrays, one item per
# shadow route that took the request, in route order.
ATTR_SHADOW_ROUTE = "authz.shadow.route"
ATTR_SHADOW_WOULD = "authz.shadow.would"
ATTR_SHADOW_STATUS = "authz.shadow.status"
ATTR_SHADOW_REASON = "authz.shadow.reason"
ATTR_DRY_RUN_STATUS = "authz.dry_run.status"
ATTR_DRY_RUN_REASON = "authz.dry_run.reason"
# A late answer (authz.decision=late): the answer authz made, which Envoy no
# longer waited for.
ATTR_UNDELIVERED_DECISION = "authz.undelivered.decision"
ATTR_UNDELIVERED_STATUS = "authz.undelivered.status"
ATTR_UNDELIVERED_REASON = "authz.undelivered.reason"
ATTR_PATH = "url.path"

_TRACE_KEYS = frozenset({"traceparent", "tracestate"})
_PROPAGATOR = TraceContextTextMapPropagator()
_EMPTY = Context()


def parent_context(metadata: Iterable[tuple[str, str | bytes]] | None) -> Context:
    """Envoy's trace context from the Check call's gRPC metadata; empty when absent.

    The first value of each key counts. A malformed ``traceparent`` yields an
    empty context (a new trace), as the W3C specification asks.
    """
    if not metadata:
        return _EMPTY
    carrier: dict[str, str] = {}
    for key, value in metadata:
        if key in _TRACE_KEYS and key not in carrier and isinstance(value, str):
            carrier[key] = value
    if "traceparent" not in carrier:
        return _EMPTY
    return _PROPAGATOR.extract(carrier)


# W3C trace-context, as OpenTelemetry's propagator reads it: version, trace id,
# parent id, flags (lower-case hex), and for versions after 00 more fields.
_TRACEPARENT = re.compile(
    r"^[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:(-.*)|[ \t]*)$"
)
_TRACEPARENT_MAX = 512
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_SAMPLED = 0x01  # the sampled bit of trace-flags


def trace_id_from(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """Envoy's trace id from the metadata, without building a context.

    For the audit record when tracing is off: the same answer as
    ``parent_context`` (a test holds them to it) for a fraction of the cost.
    """
    parsed = _traceparent(metadata)
    return None if parsed is None else parsed[0]


def unsampled_parent(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """Envoy's trace id when its traceparent says the trace is not sampled; else None."""
    parsed = _traceparent(metadata)
    if parsed is None or int(parsed[1], 16) & _SAMPLED:
        return None
    return parsed[0]


def _traceparent(metadata: Iterable[tuple[str, str | bytes]] | None) -> tuple[str, str] | None:
    """(trace id, flags) of the first traceparent, read as the propagator reads it;
    None when there is none or it is not valid."""
    if not metadata:
        return None
    for key, value in metadata:
        if key == "traceparent":
            usable = isinstance(value, str) and len(value) <= _TRACEPARENT_MAX
            match = _TRACEPARENT.match(value) if usable and isinstance(value, str) else None
            if (
                match is None
                or match[1] == "ff"
                or (match[1] == "00" and match[5])
                or match[2] == _ZERO_TRACE
                or match[3] == _ZERO_SPAN
            ):
                return None
            return match[2], match[4]
    return None


def resource(config: TelemetryConfig) -> Resource:
    """service.name: the file's, else OTEL_SERVICE_NAME/OTEL_RESOURCE_ATTRIBUTES, else "authz"."""
    detected = Resource.create({SERVICE_VERSION: _version()})
    name = detected.attributes.get(SERVICE_NAME)
    if config.service_name:
        return detected.merge(Resource({SERVICE_NAME: config.service_name}))
    if not isinstance(name, str) or name.startswith("unknown_service"):
        return detected.merge(Resource({SERVICE_NAME: "authz"}))
    return detected


def _version() -> str:
    return __version__


class Tracing:
    """The tracer for Checks: an SDK provider exporting spans, or the no-op tracer."""

    def __init__(self, provider: TracerProvider | None) -> None:
        self._provider = provider
        self._tracer: Tracer = (
            provider.get_tracer("authz") if provider is not None else trace.NoOpTracer()
        )
        # The sampler follows a remote parent that is not sampled (parent-based,
        # as both the file's root_sample_ratio and the SDK's default are): such
        # a Check is never recorded, so it need not ask the SDK for a span.
        self.drops_unsampled_parents = provider is not None and _drops_unsampled_parents(
            provider.sampler
        )

    @property
    def enabled(self) -> bool:
        return self._provider is not None

    @property
    def tracer(self) -> Tracer:
        """For other spans of this server (key fetches); the no-op one when off."""
        return self._tracer

    @classmethod
    def from_config(
        cls,
        config: TelemetryConfig,
        the_resource: Resource | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Tracing:
        env = os.environ if environ is None else environ
        choice = traces_choice(config.tracing.endpoint, env)
        if not choice.enabled:
            return cls(None)
        ratio = config.tracing.root_sample_ratio
        provider = TracerProvider(
            # Stopped by Observability.stop, within a bound; an exit hook
            # could hang on an unreachable collector.
            shutdown_on_exit=False,
            resource=the_resource or resource(config),
            # None: the SDK reads OTEL_TRACES_SAMPLER (default parentbased_always_on).
            sampler=ParentBased(TraceIdRatioBased(ratio)) if ratio is not None else None,
        )
        for exporter in choice.exporters():
            provider.add_span_processor(BatchSpanProcessor(exporter))
        where = choice.describe(env)
        log.info("tracing: exporting spans to %s", where, extra={"exporters": where})
        return cls(provider)

    def start_check(self, parent: Context, start_time: int | None = None) -> Span:
        """The SERVER span of one Check, child of ``parent`` (Envoy's egress span);
        ``start_time`` (ns since the epoch): when the Check arrived, if earlier."""
        return self._tracer.start_span(
            CHECK_SPAN,
            context=parent,
            kind=SpanKind.SERVER,
            attributes=_RPC_ATTRIBUTES,
            start_time=start_time,
        )

    def shutdown(self) -> None:
        """Export what is buffered, then stop. Bounded by the exporter's timeout."""
        if self._provider is not None:
            self._provider.shutdown()


def _drops_unsampled_parents(sampler: Sampler) -> bool:
    # ParentBased keeps its decision for a remote unsampled parent in a private
    # attribute; if a release renames it, every Check simply asks the SDK.
    return (
        isinstance(sampler, ParentBased)
        and getattr(sampler, "_remote_parent_not_sampled", None) is ALWAYS_OFF
    )


class CheckObservation:
    """One Check in flight: its span, the trace it belongs to and its start time.

    As a context manager it makes the span current, so the phases' events
    (authz.check.run) and log lines find it. An Exception leaves the span to ``finish``;
    anything else (an interpreter exit) ends it as an error.
    """

    __slots__ = ("_token", "ended", "parent_trace_id", "span", "started")

    def __init__(
        self, span: Span, parent_trace_id: str | None = None, started: float | None = None
    ) -> None:
        self.span = span
        # Only without tracing: Envoy's trace id, read cheaply for the audit record.
        self.parent_trace_id = parent_trace_id
        # When the Check arrived (admission's stamp): its duration includes the queue.
        self.started = time.perf_counter() if started is None else started
        self.ended = False
        self._token: object | None = None

    def __enter__(self) -> CheckObservation:
        if self.span.is_recording():
            self._token = otel_context.attach(trace.set_span_in_context(self.span))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            self._token = None
        if exc is not None and not isinstance(exc, Exception) and not self.ended:
            self.ended = True
            self.span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            self.span.end()

    def ids(self) -> tuple[str | None, str | None]:
        """(trace id, our span id) as hex. Without tracing the trace id is still
        Envoy's (from the metadata); the span id is ours only if it is recorded."""
        context = self.span.get_span_context()
        if not context.is_valid:
            return self.parent_trace_id, None
        span_id = f"{context.span_id:016x}" if self.span.is_recording() else None
        return f"{context.trace_id:032x}", span_id
