"""run: a Check's phases as span events and as the lines of its trace."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

from authz.check.run import Phase, Run, Step
from authz.errors import InternalError, TokenExpired


@dataclass
class Recorder:
    tracer: Tracer
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
