"""tracing: trace context from gRPC metadata, and when spans are exported."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.trace import TraceFlags

from authz.config.observability import TelemetryConfig, TracingConfig
from authz.observability.tracing import (
    Tracing,
    parent_context,
    resource,
    trace_id_from,
    unsampled_parent,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
PARENT = f"00-{TRACE}-{SPAN}-01"


def remote(metadata: list[tuple[str, str | bytes]] | None) -> trace.SpanContext:
    return trace.get_current_span(parent_context(metadata)).get_span_context()


def test_the_parent_comes_from_traceparent_and_tracestate_in_the_metadata() -> None:
    context = remote(
        [
            ("user-agent", "envoy"),
            ("traceparent", PARENT),
            ("tracestate", "vendor=abc,envoy=1"),
            ("x-envoy-expected-rq-timeout-ms", "250"),
        ]
    )
    assert f"{context.trace_id:032x}" == TRACE
    assert f"{context.span_id:016x}" == SPAN
    assert context.is_remote
    assert context.trace_flags == TraceFlags.SAMPLED
    assert context.trace_state.get("vendor") == "abc"


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        [],
        [("tracestate", "vendor=abc")],  # tracestate without traceparent means nothing
        [("traceparent", "00-not-a-trace-01")],
        [("traceparent", f"00-{'0' * 32}-{SPAN}-01")],  # all-zero trace id is invalid
        [("traceparent-bin", b"\x00\x01")],
        [("traceparent", PARENT.encode())],  # a binary value is not a W3C header
        [("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN)],  # not W3C: ignored
    ],
)
def test_without_a_valid_traceparent_there_is_no_parent(
    metadata: list[tuple[str, str | bytes]] | None,
) -> None:
    assert not remote(metadata).is_valid


def test_the_first_traceparent_counts() -> None:
    other = f"00-{'1' * 32}-{'2' * 16}-01"
    assert f"{remote([('traceparent', PARENT), ('traceparent', other)]).trace_id:032x}" == TRACE


@pytest.mark.parametrize(
    ("flags", "unsampled"),
    [("00", True), ("02", True), ("01", False), ("03", False)],
)
def test_an_unsampled_parent_is_read_from_the_sampled_bit(flags: str, unsampled: bool) -> None:
    metadata: list[tuple[str, str | bytes]] = [("traceparent", f"00-{TRACE}-{SPAN}-{flags}")]
    assert unsampled_parent(metadata) == (TRACE if unsampled else None)
    # The same reading as the propagator's.
    assert remote(metadata).trace_flags.sampled is not unsampled


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        [],
        [("traceparent", "00-not-a-trace-00")],
        [("traceparent", f"00-{'0' * 32}-{SPAN}-00")],
    ],
)
def test_no_unsampled_parent_without_a_valid_traceparent(
    metadata: list[tuple[str, str | bytes]] | None,
) -> None:
    assert unsampled_parent(metadata) is None


def test_service_name_from_the_file_then_the_environment_then_authz(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert resource(TelemetryConfig()).attributes[SERVICE_NAME] == "authz"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "edge-authz")
    assert resource(TelemetryConfig()).attributes[SERVICE_NAME] == "edge-authz"
    named = TelemetryConfig(service_name="from-file")
    assert resource(named).attributes[SERVICE_NAME] == "from-file"


def test_without_an_exporter_the_tracer_is_a_no_op() -> None:
    tracing = Tracing.from_config(TelemetryConfig(), environ={})
    assert not tracing.enabled
    span = tracing.start_check(parent_context([("traceparent", PARENT)]))
    assert not span.is_recording()
    tracing.shutdown()


def test_an_endpoint_in_the_file_turns_tracing_on() -> None:
    config = TelemetryConfig(tracing=TracingConfig(endpoint="http://127.0.0.1:1"))
    tracing = Tracing.from_config(config, environ={})
    assert tracing.enabled
    span = tracing.start_check(parent_context(None))
    assert span.is_recording()  # a root: sampled by the default parent-based sampler
    tracing.shutdown()  # nothing was ended, so nothing is sent to the dead port


def test_root_sample_ratio_applies_to_roots_only() -> None:
    config = TelemetryConfig(
        tracing=TracingConfig(endpoint="http://127.0.0.1:1", root_sample_ratio=0.0)
    )
    tracing = Tracing.from_config(config, environ={})
    assert not tracing.start_check(parent_context(None)).is_recording()
    assert tracing.start_check(parent_context([("traceparent", PARENT)])).is_recording()
    unsampled = [("traceparent", PARENT[:-2] + "00")]
    assert not tracing.start_check(parent_context(unsampled)).is_recording()
    tracing.shutdown()


# steps


@pytest.mark.parametrize(
    "value",
    [
        PARENT,
        PARENT[:-2] + "00",
        f"  {PARENT}\t",
        f"01-{TRACE}-{SPAN}-01-future-field",
        f"00-{TRACE}-{SPAN}-01-extra",  # version 00 has no extra fields
        f"ff-{TRACE}-{SPAN}-01",
        f"00-{TRACE.upper()}-{SPAN}-01",
        f"00-{'0' * 32}-{SPAN}-01",
        f"00-{TRACE}-{'0' * 16}-01",
        f"00-{TRACE}-{SPAN}",
        PARENT + " " * 600,
        "",
    ],
)
def test_the_cheap_trace_id_agrees_with_the_propagator(value: str) -> None:
    """Without tracing, the audit's trace id comes from trace_id_from; it must
    be exactly what parent_context would have produced."""
    metadata: list[tuple[str, str | bytes]] = [("traceparent", value)]
    context = remote(metadata)
    expected = f"{context.trace_id:032x}" if context.is_valid else None
    assert trace_id_from(metadata) == expected
