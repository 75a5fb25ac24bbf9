"""waterfall: a trace's spans as bars on one time axis, authz's steps under its Check."""

from __future__ import annotations

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from authz.dev.otlp import ReceivedSpan
from authz.dev.waterfall import WIDTH, waterfall

TRACE = bytes.fromhex("ab" * 16)
MS = 1_000_000


def _span(
    service: str, name: str, span_id: int, parent: int, *, start: int, end: int
) -> ReceivedSpan:
    span = Span(
        trace_id=TRACE,
        span_id=span_id.to_bytes(8, "big"),
        parent_span_id=parent.to_bytes(8, "big") if parent else b"",
        name=name,
        start_time_unix_nano=start * MS,
        end_time_unix_nano=end * MS,
    )
    return ReceivedSpan(service, span)


def _bar(line: str) -> str:
    return line.split("|")[1]


def test_spans_are_a_tree_on_one_time_axis_with_the_steps_under_the_check() -> None:
    root = _span("gateway", "ingress", 1, 0, start=0, end=10)
    call = _span("gateway", "ext_authz egress", 2, 1, start=1, end=6)
    check = _span("authz", "Check", 3, 2, start=2, end=5)
    check.span.events.add(
        time_unix_nano=4 * MS,
        name="authz.verify",
        attributes=[
            KeyValue(key="authz.step.duration_ms", value=AnyValue(double_value=1.0)),
            KeyValue(key="authz.step.outcome", value=AnyValue(string_value="deny")),
            KeyValue(key="authz.reason", value=AnyValue(string_value="token_expired")),
        ],
    )
    upstream = _span("gateway", "router upstream egress", 4, 1, start=6, end=10)
    other = _span("gateway", "another trace", 5, 0, start=0, end=1)
    other.span.trace_id = bytes(16)
    lines = waterfall([upstream, check, root, other, call], TRACE.hex())
    assert lines[0] == f"trace {TRACE.hex()}  (10.000 ms end to end)"
    names = [line.split("|")[0].strip() for line in lines[1:]]
    assert names == [
        "gateway  ingress",
        "gateway    ext_authz egress",
        "authz        Check",
        "· verify deny (token_expired)",
        "gateway    router upstream egress",
    ]
    bars = [_bar(line) for line in lines[1:]]
    assert all(len(bar) == WIDTH for bar in bars)
    assert bars[0] == "█" * WIDTH  # the root spans the trace
    assert bars[2] == " " * 8 + "█" * 12 + " " * 20  # 2..5 ms of 10
    assert bars[3] == " " * 12 + "▒" * 4 + " " * 24  # the step: 3..4 ms
    assert bars[4] == " " * 24 + "█" * 16  # 6..10 ms
    assert lines[3].endswith("   3.000 ms")


def test_an_unknown_trace_draws_nothing() -> None:
    assert waterfall([_span("gateway", "ingress", 1, 0, start=0, end=1)], "00" * 16) == []
