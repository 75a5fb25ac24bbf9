"""observe: one Check's span, metric and record; a broken output never breaks the Check."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jsonschema
import pytest
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import INVALID_SPAN, StatusCode

from authz.check.decision import Decision, Unenforced
from authz.check.request import RequestView
from authz.config.loader import parse_config
from authz.errors import InternalError, MissingCredentials
from authz.observability.audit import AuditWriter
from authz.observability.audit_record import SCHEMA_PATH
from authz.observability.metrics import Metrics
from authz.observability.observe import Observability
from authz.observability.recording import Recording
from authz.observability.tracing import Tracing

PARENT = (("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),)
REQUEST = RequestView(method="GET", path="/orders/1?x=1", host="api", source_address="1.2.3.4:5")


class ListSink:
    name = "list"

    def __init__(self) -> None:
        self.text = ""

    def write(self, data: bytes) -> None:
        self.text += data.decode("ascii")

    def close(self) -> None:
        pass


class BrokenMetrics(Metrics):
    def decision(self, **fields: Any) -> None:
        raise RuntimeError("meter is gone")


def deny(error: Exception) -> Decision:
    assert isinstance(error, MissingCredentials | InternalError)
    return Decision.deny(error)


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@dataclass
class Meter:
    """Metrics that tests read back: the instruments and the reader that collects them."""

    reader: InMemoryMetricReader
    metrics: Metrics


@pytest.fixture
def meter() -> Iterator[Meter]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    yield Meter(reader, Metrics(provider, ["https://idp"]))
    provider.shutdown()


def observability(
    spans: InMemorySpanExporter,
    sink: ListSink,
    metrics: Metrics | None = None,
    provider: TracerProvider | None = None,
) -> Observability:
    if provider is None:
        provider = TracerProvider(shutdown_on_exit=False)
        provider.add_span_processor(SimpleSpanProcessor(spans))
    metrics = metrics or Metrics(NoOpMeterProvider(), ["https://idp"])
    writer = AuditWriter([sink], metrics)
    writer.start()
    return Observability(
        tracing=Tracing(provider),
        metrics=metrics,
        audit=writer,
    )


# How the tests' Checks are recorded, unless a test's configuration says otherwise.
recording = Recording(config_version="v1")


def records(observed: Observability, sink: ListSink) -> list[dict[str, Any]]:
    asyncio.run(observed.stop())
    return [json.loads(line) for line in sink.text.splitlines()]


def test_a_check_makes_one_span_and_one_record(spans: InMemorySpanExporter) -> None:
    sink = ListSink()
    observed = observability(spans, sink)
    check = observed.begin(PARENT)
    with check:
        pass
    observed.finish(check, REQUEST, deny(MissingCredentials()), recording=recording)
    (span,) = spans.get_finished_spans()
    (record,) = records(observed, sink)
    assert record["span_id"] == f"{span.context.span_id:016x}"
    assert record["path"] == "/orders/1"
    assert record["config_version"] == "v1"
    assert span.status.status_code is StatusCode.UNSET


UNSAMPLED = (("traceparent", PARENT[0][1][:-2] + "00"),)


@pytest.mark.parametrize("sampler", [None, ParentBased(TraceIdRatioBased(0.5))])
def test_a_check_in_an_unsampled_trace_asks_no_span_of_the_sdk_and_records_its_trace(
    spans: InMemorySpanExporter, sampler: Sampler | None
) -> None:
    # The default sampler and root_sample_ratio's follow an unsampled parent: no
    # span either way, so none is started; the record still names Envoy's trace.
    provider = TracerProvider(shutdown_on_exit=False, sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(spans))
    sink = ListSink()
    observed = observability(spans, sink, provider=provider)
    assert observed.tracing.drops_unsampled_parents
    check = observed.begin(UNSAMPLED)
    assert check.span is INVALID_SPAN
    with check:
        pass
    observed.finish(check, REQUEST, deny(MissingCredentials()), recording=recording)
    (record,) = records(observed, sink)
    assert record["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert record["span_id"] is None
    assert spans.get_finished_spans() == ()


def test_a_sampler_that_overrides_an_unsampled_parent_is_still_asked(
    spans: InMemorySpanExporter,
) -> None:
    # OTEL_TRACES_SAMPLER=always_on records whatever Envoy decided.
    provider = TracerProvider(shutdown_on_exit=False, sampler=ALWAYS_ON)
    provider.add_span_processor(SimpleSpanProcessor(spans))
    sink = ListSink()
    observed = observability(spans, sink, provider=provider)
    assert not observed.tracing.drops_unsampled_parents
    check = observed.begin(UNSAMPLED)
    with check:
        pass
    observed.finish(check, REQUEST, deny(MissingCredentials()), recording=recording)
    (span,) = spans.get_finished_spans()
    (record,) = records(observed, sink)
    assert (
        record["trace_id"]
        == f"{span.context.trace_id:032x}"
        == ("4bf92f3577b34da6a3ce929d0e0e4736")
    )


DRY_RUN_CONFIG = """\
dry_run: true
issuers:
  - issuer: https://idp
    audiences: [api]
    algorithms: [RS256]
    keys: [{jwks_file: jwks.json}]
"""
SHADOW = Unenforced("admin", False, 401, "missing_token", "no Authorization header")


def test_a_shadow_would_be_deny_is_in_the_span_the_record_and_the_metric(
    spans: InMemorySpanExporter,
    meter: Meter,
) -> None:
    sink = ListSink()
    reader = meter.reader
    observed = observability(spans, sink, meter.metrics)
    check = observed.begin(PARENT)
    decision = Decision.deny(
        MissingCredentials(),
        route="orders",
        shadows=(SHADOW,),
    )
    observed.finish(check, REQUEST, decision, recording=recording)
    (span,) = spans.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert attributes["authz.decision"] == "deny"
    assert attributes["authz.shadow.route"] == ("admin",)
    assert attributes["authz.shadow.would"] == ("deny",)
    assert attributes["authz.shadow.reason"] == ("missing_token",)
    (record,) = records(observed, sink)
    assert (record["decision"], record["reason"], record["route"]) == (
        "deny",
        "missing_token",
        "orders",
    )
    assert record["shadow"] == [
        {
            "route": "admin",
            "would": "deny",
            "status": 401,
            "reason": "missing_token",
            "detail": "no Authorization header",
        }
    ]
    counted = _series(reader, "authz.shadow.decisions")
    assert counted == {
        (("reason", "missing_token"), ("route", "admin"), ("source", "route"), ("would", "deny")): 1
    }
    decided = _series(reader, "authz.decisions")
    assert list(decided) == [
        (
            ("decision", "deny"),
            ("issuer", "unknown"),
            ("reason", "missing_token"),
            ("route", "orders"),
        )
    ]


def test_a_dry_run_counts_every_decision_as_a_would_be_outcome(
    spans: InMemorySpanExporter,
    meter: Meter,
) -> None:
    sink = ListSink()
    reader = meter.reader
    observed = observability(spans, sink, meter.metrics)
    config = parse_config(DRY_RUN_CONFIG)
    recording = Recording.of(config)
    would = Unenforced("orders", False, 401, "token_expired", "expired")
    allowed = Decision.allow(route="orders")
    for decision in (
        Decision.allow(route="orders", dry_run=would),
        allowed,
    ):
        observed.finish(observed.begin(PARENT), REQUEST, decision, recording=recording)
    (span, _) = spans.get_finished_spans()
    assert dict(span.attributes or {})["authz.dry_run.reason"] == "token_expired"
    first, second = records(observed, sink)
    assert first["reason"] == "dry_run"
    assert first["dry_run"]["reason"] == "token_expired"
    assert second["dry_run"] is None
    assert _series(reader, "authz.shadow.decisions") == {
        (
            ("reason", "token_expired"),
            ("route", "orders"),
            ("source", "dry_run"),
            ("would", "deny"),
        ): 1,
        (("reason", "allowed"), ("route", "orders"), ("source", "dry_run"), ("would", "allow")): 1,
    }


def _series(reader: InMemoryMetricReader, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        tuple(sorted(dict(point.attributes or {}).items())): getattr(point, "value", None)
        for resource_metrics in data.resource_metrics
        for scope in resource_metrics.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    }


class BrokenSink(ListSink):
    name = "file"

    def write(self, data: bytes) -> None:
        raise OSError(28, "No space left on device")


@pytest.mark.parametrize(
    ("policy", "answered"),
    [("count", ("allow", 200, "allowed")), ("deny", ("deny", 503, "audit_unavailable"))],
)
def test_a_record_no_sink_took_is_answered_per_on_sink_failure(
    spans: InMemorySpanExporter, meter: Meter, policy: str, answered: tuple[str, int, str]
) -> None:
    reader = meter.reader
    observed = observability(spans, BrokenSink(), meter.metrics)
    recording = Recording.of(
        parse_config(
            DRY_RUN_CONFIG.replace("dry_run: true", f"audit: {{on_sink_failure: {policy}}}")
        )
    )
    allow = Decision.allow(route="orders")
    final = observed.finish(observed.begin(PARENT), REQUEST, allow, recording=recording)
    assert ("allow" if final.allowed else "deny", final.status, final.reason) == answered
    (span,) = spans.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert (attributes["authz.decision"], attributes["authz.reason"]) == (
        answered[0],
        answered[2],
    )
    decided = _series(reader, "authz.decisions")
    assert [dict(labels)["reason"] for labels in decided] == [answered[2]]
    assert _series(reader, "authz.audit.write_errors") == {
        (("sink", "file"),): 2 if policy == "deny" else 1
    }
    asyncio.run(observed.stop())


def test_an_internal_error_marks_the_span(spans: InMemorySpanExporter) -> None:
    observed = observability(spans, ListSink())
    check = observed.begin(PARENT)
    observed.finish(check, None, deny(InternalError("boom")), recording=recording)
    (span,) = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "internal_error"
    asyncio.run(observed.stop())


def test_a_broken_metric_still_leaves_the_span_and_the_record(
    spans: InMemorySpanExporter,
) -> None:
    sink = ListSink()
    observed = observability(spans, sink, BrokenMetrics(NoOpMeterProvider(), []))
    check = observed.begin(PARENT)
    observed.finish(
        check, REQUEST, deny(MissingCredentials()), recording=recording
    )  # does not raise
    assert len(spans.get_finished_spans()) == 1
    assert len(records(observed, sink)) == 1


def test_a_check_dropped_before_deciding_is_recorded_as_late(
    spans: InMemorySpanExporter,
    meter: Meter,
) -> None:
    sink = ListSink()
    reader = meter.reader
    observed = observability(spans, sink, meter.metrics)
    # Shed over the pending limit: refused without a decision (serving/service.py).
    check = observed.begin(PARENT)
    observed.unanswered(check, REQUEST, reason="overloaded", recording=recording)
    (span,) = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    attributes = dict(span.attributes or {})
    assert (attributes["authz.decision"], attributes["authz.reason"]) == ("late", "overloaded")
    assert attributes["authz.status"] == 503
    assert "authz.undelivered.decision" not in attributes
    (record,) = records(observed, sink)
    assert (record["decision"], record["status"], record["reason"]) == (
        "late",
        503,
        "overloaded",
    )
    assert record["undelivered"] is None
    assert record["path"] == "/orders/1"
    assert list(_series(reader, "authz.decisions")) == [
        (("decision", "late"), ("issuer", "unknown"), ("reason", "overloaded"), ("route", "none"))
    ]


def test_a_decision_made_too_late_is_recorded_as_late_with_the_undelivered_answer(
    spans: InMemorySpanExporter,
    meter: Meter,
) -> None:
    sink = ListSink()
    reader = meter.reader
    observed = observability(spans, sink, meter.metrics)
    recording = Recording.of(
        parse_config(DRY_RUN_CONFIG.replace("dry_run: true", "audit: {late_status: 504}"))
    )
    allow = Decision.allow(route="orders")
    observed.finish(
        observed.begin(PARENT), REQUEST, allow, late="deadline_exceeded", recording=recording
    )
    (span,) = spans.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert (attributes["authz.decision"], attributes["authz.status"]) == ("late", 504)
    assert (attributes["authz.undelivered.decision"], attributes["authz.undelivered.reason"]) == (
        "allow",
        "allowed",
    )
    (record,) = records(observed, sink)
    assert (record["decision"], record["status"], record["reason"], record["route"]) == (
        "late",
        504,
        "deadline_exceeded",
        "orders",
    )
    assert record["undelivered"] == {"decision": "allow", "status": 200, "reason": "allowed"}
    assert list(_series(reader, "authz.decisions")) == [
        (
            ("decision", "late"),
            ("issuer", "unknown"),
            ("reason", "deadline_exceeded"),
            ("route", "orders"),
        )
    ]
    (duration,) = [
        point
        for resource_metrics in (reader.get_metrics_data() or MetricsData([])).resource_metrics
        for scope in resource_metrics.scope_metrics
        for metric in scope.metrics
        if metric.name == "authz.check.duration"
        for point in metric.data.data_points
    ]
    assert dict(duration.attributes or {}) == {"decision": "late"}


def test_an_ordinary_exception_leaves_the_span_open_for_the_deny(
    spans: InMemorySpanExporter,
) -> None:
    observed = observability(spans, ListSink())
    check = observed.begin(PARENT)
    with pytest.raises(ValueError, match="unreadable"), check:
        raise ValueError("unreadable")
    assert spans.get_finished_spans() == ()  # server.Check turns it into a deny
    observed.finish(check, None, deny(InternalError("ValueError")), recording=recording)
    assert len(spans.get_finished_spans()) == 1
    asyncio.run(observed.stop())


@pytest.mark.parametrize(
    "module",
    [
        "authz.observability.audit",
        "authz.observability.audit_record",
        "authz.observability.audit_sinks",
        "authz.observability.logs",
        "authz.observability.metrics",
        "authz.config.observability",
        "authz.observability.observe",
        "authz.observability.outcome",
        "authz.keys.events",
        "authz.observability.serving_metrics",
        "authz.observability.recording",
        "authz.observability.metrics_export",
        "authz.check.steps",
        "authz.observability.tracing",
    ],
)
def test_the_public_surface_is_exactly_what_all_says(module: str) -> None:
    loaded = importlib.import_module(module)
    exported = set(loaded.__all__)
    assert all(hasattr(loaded, name) for name in exported)
    defined = {
        name
        for name, value in vars(loaded).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module
    }
    assert defined <= exported, defined - exported


def test_a_queue_size_left_in_the_configuration_is_said_to_be_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = parse_config(DRY_RUN_CONFIG.replace("dry_run: true", "audit: {queue_size: 100}"))
    with caplog.at_level(logging.WARNING, logger="authz.observability.observe"):
        Observability.from_config(config, environ={})
    assert "audit.queue_size has no effect" in caplog.text


def test_an_answer_at_the_deadline_is_recorded_as_unknown(
    spans: InMemorySpanExporter, meter: Meter
) -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    sink = ListSink()
    observed = observability(spans, sink, meter.metrics)
    allow = Decision.allow(route="orders")
    check = observed.begin(PARENT)
    observed.finish(check, REQUEST, allow, late="deadline_uncertain", recording=recording)
    (record,) = records(observed, sink)
    jsonschema.validate(record, schema)
    assert (record["decision"], record["status"], record["reason"]) == (
        "unknown",
        None,
        "deadline_uncertain",
    )
    assert record["undelivered"] == {"decision": "allow", "status": 200, "reason": "allowed"}
    (span,) = spans.get_finished_spans()
    assert "authz.status" not in dict(span.attributes or {})
    assert list(_series(meter.reader, "authz.decisions")) == [
        (
            ("decision", "unknown"),
            ("issuer", "unknown"),
            ("reason", "deadline_uncertain"),
            ("route", "orders"),
        )
    ]
