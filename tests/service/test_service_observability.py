"""Spans, metrics and audit records of real Checks against the real grpc.aio server.

Observability is injected at its seam (``AuthzServer(observability=...)``):
an in-memory span exporter, an in-memory metric reader and a list sink stand
in for the collector and the disk; everything else is the production code.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import jsonschema
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from authz.config.models import Config
from authz.errors import ConfigError
from authz.keys.sources import IssuerKeys
from authz.observability.audit import AuditWriter
from authz.observability.audit_record import SCHEMA_PATH
from authz.observability.metrics import Metrics
from authz.observability.observe import Observability
from authz.observability.tracing import Tracing
from authz.server import AuthzServer
from tests.service.svc_helpers import (
    ISSUER,
    WAIT,
    Client,
    ConfigFactory,
    GatedClock,
    LoopThread,
    Signing,
    check_request,
    fingerprint,
)
from tests.support.doubles import StaticKeySource
from tests.support.otlp import OtlpHttpReceiver, OtlpReceiver

ENVOY_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
ENVOY_SPAN = "00f067aa0ba902b7"
CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
CHECK = "envoy.service.auth.v3.Authorization/Check"


def traceparent(trace_id: str, span_id: str, sampled: bool = True) -> str:
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


class ListSink:
    """An audit sink in memory; ``delay`` makes it a slow disk."""

    name = "list"

    def __init__(self, delay: float = 0.0) -> None:
        self.lines: list[str] = []
        self.closed = False
        self._delay = delay

    def write(self, data: bytes) -> None:
        if self._delay:
            time.sleep(self._delay)  # a slow sink, not a wait for readiness
        self.lines.extend(data.decode("ascii").splitlines())

    def close(self) -> None:
        self.closed = True

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]


@dataclass
class Observed:
    server: AuthzServer
    client: Client
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    sink: ListSink
    loop: LoopThread
    stopped: bool = field(default=False)

    def finished_spans(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def records(self) -> list[dict[str, Any]]:
        """Every record written so far (waits for one: a late Check's record is
        written after its caller gave up)."""
        return OtlpReceiver.poll("audit records", lambda: self.sink.records() or None, WAIT)

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.client.close()
            self.loop.run(self.server.stop(0))


class ObservedFactory:
    def __init__(self, loop: LoopThread) -> None:
        self._loop = loop
        self._running: list[Observed] = []

    def __call__(
        self,
        config: Config,
        *,
        keys: Any = None,
        clock: Any = None,
        sink: ListSink | None = None,
    ) -> Observed:
        spans = InMemorySpanExporter()
        provider = TracerProvider(shutdown_on_exit=False)
        provider.add_span_processor(SimpleSpanProcessor(spans))
        reader = InMemoryMetricReader()
        metrics = Metrics(MeterProvider(metric_readers=[reader], shutdown_on_exit=False), [ISSUER])
        sink = sink or ListSink()
        observability = Observability(
            tracing=Tracing(provider),
            metrics=metrics,
            audit=AuditWriter([sink], metrics),
        )

        async def create() -> AuthzServer:
            return AuthzServer(config, keys, clock, observability=observability)

        server = self._loop.run(create())
        self._loop.run(server.start())
        observed = Observed(server, Client.connect(server.address), spans, reader, sink, self._loop)
        self._running.append(observed)
        return observed

    def close(self) -> None:
        for observed in self._running:
            observed.stop()


@pytest.fixture
def observe(loop_thread: LoopThread) -> Iterator[ObservedFactory]:
    factory = ObservedFactory(loop_thread)
    yield factory
    factory.close()


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _only(spans: list[ReadableSpan]) -> ReadableSpan:
    assert len(spans) == 1, [span.name for span in spans]
    return spans[0]


def test_span_continues_envoys_trace_from_the_call_metadata(
    observe: ObservedFactory, make_config: ConfigFactory, signing: Signing
) -> None:
    observed = observe(make_config())
    # The end client's own traceparent rides in the HTTP headers: not our parent.
    headers = {**_bearer(signing.token()), "traceparent": traceparent(CLIENT_TRACE, CLIENT_SPAN)}
    metadata = (
        ("traceparent", traceparent(ENVOY_TRACE, ENVOY_SPAN)),
        ("tracestate", "envoy=1"),
    )
    observed.client.check(check_request(headers), metadata=metadata, timeout=WAIT)
    span = _only(observed.finished_spans())
    assert span.name == CHECK
    assert span.kind is SpanKind.SERVER
    assert f"{span.context.trace_id:032x}" == ENVOY_TRACE
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == ENVOY_SPAN
    assert span.parent.is_remote
    assert span.context.trace_state.get("envoy") == "1"
    record = _only_record(observed)
    assert record["trace_id"] == ENVOY_TRACE
    assert record["span_id"] == f"{span.context.span_id:016x}"


def _only_record(observed: Observed) -> dict[str, Any]:
    records = observed.records()
    assert len(records) == 1, records
    return records[0]


def test_a_traceparent_only_in_the_client_headers_starts_a_new_trace(
    observe: ObservedFactory, make_config: ConfigFactory, signing: Signing
) -> None:
    observed = observe(make_config())
    headers = {**_bearer(signing.token()), "traceparent": traceparent(CLIENT_TRACE, CLIENT_SPAN)}
    observed.client.check(check_request(headers), timeout=WAIT)
    span = _only(observed.finished_spans())
    assert span.parent is None
    assert f"{span.context.trace_id:032x}" != CLIENT_TRACE


def test_an_unsampled_parent_records_no_span_and_the_audit_keeps_envoys_trace_id(
    observe: ObservedFactory, make_config: ConfigFactory, signing: Signing
) -> None:
    observed = observe(make_config())
    metadata = (("traceparent", traceparent(ENVOY_TRACE, ENVOY_SPAN, sampled=False)),)
    observed.client.check(check_request(_bearer(signing.token())), metadata=metadata, timeout=WAIT)
    record = _only_record(observed)
    assert observed.finished_spans() == []  # parent-based sampling
    assert record["trace_id"] == ENVOY_TRACE
    assert record["span_id"] is None


def test_a_deny_is_not_a_span_error(
    observe: ObservedFactory, make_config: ConfigFactory, signing: Signing
) -> None:
    observed = observe(make_config())
    expired = signing.token(ttl=-600)
    observed.client.check(check_request(_bearer(expired)), timeout=WAIT)
    span = _only(observed.finished_spans())
    assert span.status.status_code is StatusCode.UNSET
    attributes = dict(span.attributes or {})
    assert attributes["authz.decision"] == "deny"
    assert attributes["authz.reason"] == "token_expired"
    assert attributes["url.path"] == "/orders/42"
    events = {event.name: dict(event.attributes or {}) for event in span.events}
    assert events["authz.extract"]["authz.step.outcome"] == "ok"
    assert events["authz.verify"]["authz.step.outcome"] == "deny"
    assert events["authz.verify"]["authz.reason"] == "token_expired"
    assert "authz.identity" not in events


class BrokenKeys:
    """A key source that fails in a way nobody planned for."""

    def keys_for(self, issuer: str) -> IssuerKeys | None:
        raise RuntimeError(f"key store exploded for {issuer}")

    def ready(self) -> bool:
        return True


def test_an_internal_failure_is_a_span_error_with_the_exception_type_only(
    observe: ObservedFactory, make_config: ConfigFactory, signing: Signing
) -> None:
    observed = observe(make_config(), keys=BrokenKeys())
    token = signing.token()
    response = observed.client.check(check_request(_bearer(token)), timeout=WAIT)
    assert response.denied_response.status.code == 503
    span = _only(observed.finished_spans())
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "internal_error"
    events = {event.name: dict(event.attributes or {}) for event in span.events}
    assert events["authz.verify"]["authz.step.outcome"] == "error"
    assert events["authz.verify"]["authz.reason"] == "internal_error"
    assert events["authz.verify"]["exception.type"] == "RuntimeError"  # what really failed
    assert "exploded" not in repr(span.to_json())  # no exception message exported
    assert _only_record(observed)["reason"] == "internal_error"


def test_every_check_is_one_audit_record_that_matches_the_schema(
    observe: ObservedFactory, make_config: ConfigFactory, signing: Signing
) -> None:
    observed = observe(make_config())
    token = signing.token(subject="carol", jti="jti-42")
    requests = [
        check_request({**_bearer(token), "x-request-id": "r-1"}, path="/a/1?token=secret"),
        check_request({"x-request-id": "r-2"}, path="/a/2"),
        check_request({**_bearer("not.a.jwt"), "x-request-id": "r-3"}, path="/a/3"),
    ]
    for request in requests:
        observed.client.check(request, timeout=WAIT)
    records = OtlpReceiver.poll(
        "3 records", lambda: observed.sink.records() if len(observed.sink.lines) >= 3 else None
    )
    assert len(records) == 3
    schema = json.loads(SCHEMA_PATH.read_text())
    for record in records:
        jsonschema.validate(record, schema)
    allowed, missing, malformed = records
    assert allowed["decision"] == "allow"
    assert allowed["subject"] == "carol"
    assert allowed["issuer"] == ISSUER
    assert allowed["jti"] == "jti-42"
    assert allowed["token_fp"] == fingerprint(token)
    assert allowed["path"] == "/a/1"
    assert allowed["host"] == "api.example"
    assert allowed["request_id"] == "r-1"
    assert missing["reason"] == "missing_token"
    assert missing["token_fp"] is None
    assert malformed["status"] == 401
    assert malformed["token_fp"] == fingerprint("not.a.jwt")
    for record in records:
        assert record["config_version"] == observed.server.config.version != ""


def test_a_check_in_flight_at_stop_is_on_the_sink_when_stop_returns(
    observe: ObservedFactory, make_config: ConfigFactory, signing: Signing
) -> None:
    clock = GatedClock()
    sink = ListSink(delay=0.3)  # a slow disk: stop must wait for it
    observed = observe(make_config(), clock=clock, sink=sink)
    token = signing.token()
    answers: list[int] = []

    def call() -> None:
        response = observed.client.check(check_request(_bearer(token)), timeout=WAIT)
        answers.append(response.status.code)

    caller = threading.Thread(target=call)
    caller.start()
    assert clock.entered.wait(WAIT)  # the Check is inside verification now
    stopping = observed.loop.submit(observed.server.stop(5))
    observed.stopped = True
    clock.release.set()
    stopping.result(WAIT)
    caller.join(WAIT)
    assert answers == [0]
    assert len(sink.records()) == 1  # written before stop() returned
    assert sink.closed
    observed.client.close()


def test_metrics_are_recorded_per_decision_with_bounded_labels(
    observe: ObservedFactory, make_config: ConfigFactory, signing: Signing
) -> None:
    observed = observe(make_config())
    observed.client.check(check_request(_bearer(signing.token())), timeout=WAIT)
    observed.client.check(check_request({}), timeout=WAIT)
    unknown = signing.token(issuer="https://attacker.example/" + "z" * 40)
    observed.client.check(check_request(_bearer(unknown)), timeout=WAIT)
    expired = signing.token(ttl=-3600)
    observed.client.check(check_request(_bearer(expired)), timeout=WAIT)
    data = observed.reader.get_metrics_data()
    assert data is not None
    points: dict[str, list[Any]] = {}
    for resource_metrics in data.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                points[metric.name] = list(metric.data.data_points)
    decisions = {
        (p.attributes["decision"], p.attributes["reason"], p.attributes["issuer"]): p.value
        for p in points["authz.decisions"]
    }
    assert decisions == {
        ("allow", "allowed", ISSUER): 1,
        ("deny", "missing_token", "unknown"): 1,
        ("deny", "unknown_issuer", "unknown"): 1,
        # A token that failed to verify still counts against the issuer it named.
        ("deny", "token_expired", ISSUER): 1,
    }
    assert sum(p.count for p in points["authz.check.duration"]) == 4
    ages = {p.attributes["issuer"]: p.value for p in points["authz.key.age"]}
    assert set(ages) == {ISSUER}
    assert ages[ISSUER] >= 0


def _scrape(address: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=WAIT) as reply:
        text = reply.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def _start(loop: LoopThread, config: Config, environ: dict[str, str]) -> AuthzServer:
    async def create() -> AuthzServer:
        return AuthzServer(config, observability=Observability.from_config(config, environ))

    server = loop.run(create())
    loop.run(server.start())
    return server


def test_each_server_serves_its_own_prometheus_metrics(
    loop_thread: LoopThread, make_config: ConfigFactory, signing: Signing, tmp_path: Path
) -> None:
    configs = [
        make_config(
            telemetry={"metrics": {"listen": "127.0.0.1:0"}},
            audit={"stdout": False, "file": str(tmp_path / f"audit-{n}.jsonl")},
        )
        for n in (1, 2)
    ]
    servers = [_start(loop_thread, config, {}) for config in configs]
    try:
        with grpc.insecure_channel(servers[0].address) as channel:
            Client(channel).check(check_request(_bearer(signing.token())), timeout=WAIT)
        first, second = (_scrape(server.observability.metrics_address or "") for server in servers)
    finally:
        for server in servers:
            loop_thread.run(server.stop(0))
    samples = [s for s in first["authz_decisions"].samples if s.name == "authz_decisions_total"]
    # Beside the zeros every server starts with (the 503s that page).
    counted = [(s.labels["issuer"], s.labels["decision"], s.value) for s in samples if s.value]
    assert counted == [(ISSUER, "allow", 1.0)]
    theirs = [s for s in second["authz_decisions"].samples if s.name == "authz_decisions_total"]
    assert not [s for s in theirs if s.value]  # no decisions there, and no leak from the first
    audit = [json.loads(line) for line in (tmp_path / "audit-1.jsonl").read_text().splitlines()]
    assert [record["decision"] for record in audit] == ["allow"]


def test_spans_and_metrics_reach_an_otlp_receiver_and_are_flushed_at_stop(
    loop_thread: LoopThread, make_config: ConfigFactory, signing: Signing, tmp_path: Path
) -> None:
    with OtlpReceiver() as receiver:
        config = make_config(
            telemetry={
                "service_name": "authz-under-test",
                "tracing": {"endpoint": receiver.endpoint},
                "metrics": {"otlp_endpoint": receiver.endpoint, "otlp_interval_seconds": 60},
            },
            audit={"stdout": False, "file": str(tmp_path / "audit.jsonl")},
        )
        server = _start(loop_thread, config, {})
        metadata = (("traceparent", traceparent(ENVOY_TRACE, ENVOY_SPAN)),)
        with grpc.insecure_channel(server.address) as channel:
            Client(channel).check(
                check_request(_bearer(signing.token())), metadata=metadata, timeout=WAIT
            )
        # The batch delay (5 s) and the push interval (60 s) have not passed:
        # only the flush at stop can deliver these.
        loop_thread.run(server.stop(0))
        spans = OtlpReceiver.poll("the Check span", lambda: receiver.spans() or None)
        assert [(s.service, s.name, s.trace_id) for s in spans] == [
            ("authz-under-test", CHECK, ENVOY_TRACE)
        ]
        names = {metric.name for metric in receiver.metrics()}
        assert {"authz.decisions", "authz.check.duration"} <= names


def test_spans_and_metrics_go_over_otlp_http_when_the_protocol_says_so(
    loop_thread: LoopThread, make_config: ConfigFactory, signing: Signing, tmp_path: Path
) -> None:
    with OtlpHttpReceiver() as receiver:
        config = make_config(
            telemetry={
                "tracing": {"endpoint": receiver.endpoint},
                "metrics": {"otlp_endpoint": receiver.endpoint, "otlp_interval_seconds": 60},
            },
            audit={"stdout": False, "file": str(tmp_path / "audit.jsonl")},
        )
        server = _start(loop_thread, config, {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
        metadata = (("traceparent", traceparent(ENVOY_TRACE, ENVOY_SPAN)),)
        with grpc.insecure_channel(server.address) as channel:
            Client(channel).check(
                check_request(_bearer(signing.token())), metadata=metadata, timeout=WAIT
            )
        loop_thread.run(server.stop(0))
        spans = OtlpReceiver.poll("the Check span over HTTP", lambda: receiver.spans() or None)
        assert [(s.name, s.trace_id) for s in spans] == [(CHECK, ENVOY_TRACE)]
        assert "authz.decisions" in {metric.name for metric in receiver.metrics()}


def test_without_an_exporter_tracing_is_off_and_the_audit_keeps_envoys_trace_id(
    loop_thread: LoopThread, make_config: ConfigFactory, signing: Signing, tmp_path: Path
) -> None:
    config = make_config(audit={"stdout": False, "file": str(tmp_path / "audit.jsonl")})
    server = _start(loop_thread, config, {})
    assert not server.observability.tracing.enabled
    metadata = (("traceparent", traceparent(ENVOY_TRACE, ENVOY_SPAN)),)
    try:
        with grpc.insecure_channel(server.address) as channel:
            Client(channel).check(
                check_request(_bearer(signing.token())), metadata=metadata, timeout=WAIT
            )
    finally:
        loop_thread.run(server.stop(0))
    (record,) = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert record["trace_id"] == ENVOY_TRACE
    assert record["span_id"] is None


def test_a_taken_metrics_port_stops_start_up_with_a_clear_error(
    loop_thread: LoopThread, make_config: ConfigFactory, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = make_config(
            telemetry={"metrics": {"listen": f"127.0.0.1:{port}"}},
            audit={"stdout": False, "file": str(tmp_path / "audit.jsonl")},
        )

        async def create() -> AuthzServer:
            return AuthzServer(config, observability=Observability.from_config(config, {}))

        server = loop_thread.run(create())
        try:
            with pytest.raises(
                ConfigError, match=rf"telemetry\.metrics\.listen 127\.0\.0\.1:{port}"
            ):
                loop_thread.run(server.start())
        finally:
            loop_thread.run(server.stop(0))


# --- late answers: Envoy stopped waiting -----------------------------------------------


class StalledRefetch:
    """Keys that need a refetch which never ends (an IdP that stopped answering,
    ignoring the Check's budget): a Check with an unknown kid waits in it
    until it is cancelled."""

    def __init__(self, keys: StaticKeySource) -> None:
        self._keys = keys
        self.waiting = threading.Event()

    def keys_for(self, issuer: str) -> IssuerKeys | None:
        return self._keys.keys_for(issuer)

    def ready(self) -> bool:
        return True

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def add_listener(self, listener: Callable[[], None]) -> None:
        pass

    async def refetch(self, issuer: str, budget: float) -> bool:
        self.waiting.set()
        await asyncio.sleep(WAIT)  # bounded: a broken test cannot hang the suite
        return False


# Longer than a call takes to reach the server's loop, on a busy machine too.
_ARRIVAL_BOUND = 0.5


def _late_records(observed: Observed) -> list[dict[str, Any]]:
    schema = json.loads(SCHEMA_PATH.read_text())
    records = observed.records()
    for record in records:
        jsonschema.validate(record, schema)
    return records


def test_a_decision_made_after_the_deadline_is_audited_as_late(
    observe: ObservedFactory, make_config: ConfigFactory, signing: Signing
) -> None:
    clock = GatedClock()  # holds the event loop inside verification until released
    observed = observe(make_config(), clock=clock)
    sent = time.monotonic()
    with pytest.raises(grpc.RpcError) as raised:
        observed.client.check(check_request(_bearer(signing.token())), timeout=1.0)
    assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert clock.entered.is_set()
    # The server's deadline counts from when the call arrived, a moment after
    # the client's: the condition to wait for is that it has passed too.
    while time.monotonic() < sent + 1.0 + _ARRIVAL_BOUND:
        time.sleep(0.01)  # a poll interval, not a readiness guess
    clock.release.set()  # the decision completes now, after the deadline
    (record,) = _late_records(observed)
    assert (record["decision"], record["status"], record["reason"]) == (
        "late",
        503,
        "deadline_exceeded",
    )
    assert record["undelivered"] == {"decision": "allow", "status": 200, "reason": "allowed"}
    assert record["subject"] == "alice"
    span = _only(observed.finished_spans())
    assert span.attributes is not None
    assert (span.attributes["authz.decision"], span.attributes["authz.reason"]) == (
        "late",
        "deadline_exceeded",
    )
    assert span.attributes["authz.undelivered.decision"] == "allow"
    assert span.status.status_code is StatusCode.ERROR
    assert _decisions(observed) == {("late", "deadline_exceeded"): 1}


def test_a_check_cancelled_by_the_deadline_while_waiting_is_audited_as_late(
    observe: ObservedFactory, make_config: ConfigFactory, signing: Signing
) -> None:
    config = make_config(audit={"late_status": 504})
    keys = StalledRefetch(StaticKeySource.from_config(config))
    observed = observe(config, keys=keys)
    token = signing.token(kid="rotated-in")  # unknown kid: a refetch
    with pytest.raises(grpc.RpcError) as raised:
        observed.client.check(check_request(_bearer(token)), timeout=1.0)
    assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert keys.waiting.is_set()
    (record,) = _late_records(observed)
    assert (record["decision"], record["status"], record["reason"]) == (
        "late",
        504,
        "deadline_exceeded",
    )
    # The refetch waited the Check's budget, no longer: decided, but too late.
    assert record["undelivered"] == {"decision": "deny", "status": 401, "reason": "unknown_key"}
    span = _only(observed.finished_spans())
    assert span.attributes is not None
    assert span.attributes["authz.decision"] == "late"
    assert _decisions(observed) == {("late", "deadline_exceeded"): 1}


def test_a_check_the_caller_cancels_is_audited_as_late_cancelled(
    observe: ObservedFactory, make_config: ConfigFactory, signing: Signing
) -> None:
    config = make_config()
    keys = StalledRefetch(StaticKeySource.from_config(config))
    observed = observe(config, keys=keys)
    call = observed.client.check.future(
        check_request(_bearer(signing.token(kid="rotated-in"))), timeout=WAIT
    )
    assert keys.waiting.wait(WAIT)
    call.cancel()  # type: ignore[no-untyped-call]
    (record,) = _late_records(observed)
    # The reset ended the refetch's wait at once: decided without the new keys.
    assert (record["decision"], record["reason"], record["undelivered"]) == (
        "late",
        "cancelled",
        {"decision": "deny", "status": 401, "reason": "unknown_key"},
    )


def test_an_answer_in_time_is_not_late_and_its_record_came_first(
    observe: ObservedFactory, make_config: ConfigFactory, signing: Signing
) -> None:
    observed = observe(make_config())
    for count in range(1, 4):
        observed.client.check(check_request(_bearer(signing.token())), timeout=WAIT)
        # No waiting: the record was written before the answer was sent.
        assert len(observed.sink.records()) == count
    record = observed.sink.records()[-1]
    assert (record["decision"], record["undelivered"]) == ("allow", None)


def _decisions(observed: Observed) -> dict[tuple[str, str], int]:
    data = observed.reader.get_metrics_data()
    assert data is not None
    return {
        (str(point.attributes["decision"]), str(point.attributes["reason"])): int(point.value)
        for resource_metrics in data.resource_metrics
        for scope in resource_metrics.scope_metrics
        for metric in scope.metrics
        if metric.name == "authz.decisions"
        for point in metric.data.data_points
        if point.attributes is not None and isinstance(point, NumberDataPoint)
    }
