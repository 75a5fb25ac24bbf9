"""telemetry and steps: trace context from gRPC metadata, when to export, phase events."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import TraceFlags

from authz.check.run import Phase, Run, Step
from authz.config.observability import TelemetryConfig, TracingConfig
from authz.errors import InternalError, TokenExpired
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


@dataclass
class Recorder:
    tracer: trace.Tracer
    spans: InMemorySpanExporter

    def events(self) -> dict[str, dict[str, object]]:
        (span,) = self.spans.get_finished_spans()
        return {event.name: dict(event.attributes or {}) for event in span.events}


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    spans = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(spans))
    yield Recorder(provider.get_tracer("test"), spans)
    provider.shutdown()


def _fail_like_a_library() -> None:
    try:
        raise ValueError("b64: Incorrect padding in eyJsecret")
    except ValueError as exc:
        raise InternalError("ValueError") from exc


def test_phases_become_events_with_outcome_and_duration(recorder: Recorder) -> None:
    with recorder.tracer.start_as_current_span("check"):
        run = Run(None)
        with run.phase(Phase.REQUEST):
            pass
        with pytest.raises(TokenExpired), run.phase(Phase.TOKEN):
            raise TokenExpired("token has expired")
        with pytest.raises(InternalError), run.phase(Phase.KEYS):
            _fail_like_a_library()
    recorded = recorder.events()
    assert recorded["authz.extract"]["authz.step.outcome"] == "ok"
    duration = recorded["authz.extract"]["authz.step.duration_ms"]
    assert isinstance(duration, float)
    assert duration >= 0
    assert recorded["authz.verify"]["authz.step.outcome"] == "deny"
    assert recorded["authz.verify"]["authz.reason"] == "token_expired"
    assert recorded["authz.keys"]["authz.step.outcome"] == "error"
    assert recorded["authz.keys"]["exception.type"] == "ValueError"
    assert "eyJsecret" not in repr(recorded)  # never the exception's message


def test_a_phase_outside_a_recording_span_does_nothing_and_hides_nothing() -> None:
    run = Run(None)
    with run.phase(Phase.REQUEST):
        pass
    with pytest.raises(KeyError), run.phase(Phase.TOKEN):
        raise KeyError("still raised")


def test_a_deny_is_noted_once_under_the_innermost_phase() -> None:
    trace: list[Step] = []
    run = Run(trace)
    with pytest.raises(TokenExpired), run.phase(Phase.TOKEN) as scope, scope.inner(Phase.KEYS):
        raise TokenExpired("token has expired")
    run.fail(TokenExpired("again"))  # decide's fallback: already noted
    assert [(step.phase, step.outcome) for step in trace] == [(Phase.KEYS, "fail")]
    assert trace[0].text == "token_expired: token has expired"
    assert run.current is Phase.KEYS


def test_after_an_inner_phase_the_outer_one_is_under_way_again() -> None:
    trace: list[Step] = []
    run = Run(trace)
    with run.phase(Phase.TOKEN) as scope:
        with scope.inner(Phase.KEYS):
            pass
        assert run.current is Phase.TOKEN
    run.fail(ValueError("b64: eyJsecret"))  # raised after the phases: the last one's
    assert trace == [Step(Phase.TOKEN, "fail", "internal error: ValueError")]


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
