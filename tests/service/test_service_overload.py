"""Bounded and honest under overload: what is shed, what expires in the queue.

One worker thread, at most two pending Checks. A Check held inside its decision
(a gated clock) keeps the worker busy; the next one waits in the queue; any
more are shed at once with RESOURCE_EXHAUSTED. A queued Check whose deadline
passes before the worker is free is dropped without deciding. Each of them has
one audit record saying what the client got, and the serving metrics account
for every Check gRPC read.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from authz.config.models import Config
from authz.observability.audit import AuditWriter
from authz.observability.audit_sinks import FileSink
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
)


def _counts(reader: InMemoryMetricReader) -> dict[str, float]:
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, float] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name.startswith("authz.checks."):
                    for point in metric.data.data_points:
                        value = getattr(point, "value", 0)
                        found[metric.name] = found.get(metric.name, 0) + value
    return found


def _poll(what: str, probe: Any) -> None:
    deadline = time.monotonic() + WAIT
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)  # poll interval, not a readiness guess


def test_past_the_pending_limit_checks_are_shed_and_queued_ones_expire(
    tmp_path: Path, make_config: ConfigFactory, signing: Signing
) -> None:
    config: Config = make_config(serving={"threads": 1, "max_pending_checks": 2})
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    metrics = Metrics(provider, [ISSUER])
    audit = tmp_path / "audit.jsonl"
    observability = Observability(
        tracing=Tracing(None),
        metrics=metrics,
        audit=AuditWriter([FileSink(audit)], metrics),
        meter_provider=provider,
    )
    clock = GatedClock()
    loop = LoopThread()

    async def create() -> AuthzServer:
        return AuthzServer(config, clock=clock, observability=observability)

    server = loop.run(create())
    loop.run(server.start())
    client = Client.connect(server.address)
    token = signing.token()

    def request(name: str) -> Any:
        return check_request({"authorization": f"Bearer {token}", "x-request-id": name})

    try:
        held = client.check.future(request("held"), timeout=WAIT)
        assert clock.entered.wait(WAIT)  # the one worker is deciding it
        queued = client.check.future(request("queued"), timeout=1.0)
        _poll("the queued Check", lambda: server.admission.pending == 2)
        for n in range(3):
            with pytest.raises(grpc.RpcError) as shed:
                client.check(request(f"shed-{n}"), timeout=WAIT)
            assert shed.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as expired:
            queued.result(WAIT)
        assert expired.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        clock.release.set()  # the worker is free: it finds the queued Check expired
        assert held.result(WAIT).status.code == 0
        _poll("nothing pending", lambda: server.admission.pending == 0)
    finally:
        clock.release.set()
        loop.run(server.stop(0))
        client.close()
        loop.close()

    records = {
        record["request_id"]: record for record in map(json.loads, audit.read_text().splitlines())
    }
    # gRPC never read the expired Check's request (its call had ended): its record
    # says what the client got, with no request fields.
    assert set(records) == {"held", None, "shed-0", "shed-1", "shed-2"}
    assert records["held"]["decision"] == "allow"
    expired_record = records[None]
    assert (expired_record["decision"], expired_record["reason"]) == ("late", "expired")
    assert expired_record["status"] == config.audit.late_status
    for n in range(3):
        shed_record = records[f"shed-{n}"]
        assert (shed_record["decision"], shed_record["reason"]) == ("late", "overloaded")
        assert shed_record["undelivered"] is None
    counts = _counts(reader)
    assert counts["authz.checks.started"] == 5
    assert counts["authz.checks.handled"] == 1
    assert counts["authz.checks.shed"] == 3
    assert counts["authz.checks.expired"] == 1
    assert counts["authz.checks.pending"] == 0
