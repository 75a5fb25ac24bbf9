"""A real OTLP receiver on loopback: the collector's side, for the demo and the tests.

It serves opentelemetry-proto's TraceService and MetricsService on
127.0.0.1 with an OS-assigned port, keeps every span and metric it is sent,
and lets a test poll for them with a deadline.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from authz.dev.loopback import LoopbackServer, QuietHandler
from authz.dev.stack import StackError, wait_for

__all__ = ["OtlpHttpReceiver", "OtlpReceiver", "ReceivedSpan", "attributes"]

T = TypeVar("T")


def attributes(items: Any) -> dict[str, Any]:
    """OTLP KeyValues as a dict of plain values."""
    result: dict[str, Any] = {}
    item: KeyValue
    for item in items:
        value = item.value
        kind = value.WhichOneof("value")
        result[item.key] = getattr(value, kind) if kind else None
    return result


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    span: Span

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_span_id(self) -> str:
        return self.span.parent_span_id.hex()

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def attributes(self) -> dict[str, Any]:
        return attributes(self.span.attributes)


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._receiver.add_traces(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: Any
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        self._receiver.add_metrics(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class OtlpReceiver:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self._metrics: list[Metric] = []
        self.requests: list[bytes] = []  # every raw request, for secret searches
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _Traces(self), self._server
        )
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _Metrics(self), self._server
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OtlpReceiver:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(0).wait(5)

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_traces(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        received: list[ReceivedSpan] = []
        for resource_spans in request.resource_spans:
            service = attributes(resource_spans.resource.attributes).get("service.name", "")
            for scope_spans in resource_spans.scope_spans:
                received.extend(ReceivedSpan(service, span) for span in scope_spans.spans)
        with self._lock:
            self._spans.extend(received)
            self.requests.append(request.SerializeToString())

    def add_metrics(self, request: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        with self._lock:
            self.requests.append(request.SerializeToString())
            for resource_metrics in request.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    self._metrics.extend(scope_metrics.metrics)

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def metrics(self) -> list[Metric]:
        with self._lock:
            return list(self._metrics)

    def raw(self) -> Iterator[bytes]:
        with self._lock:
            yield from list(self.requests)

    @staticmethod
    def poll(what: str, probe: Callable[[], T | None], timeout: float = 10.0) -> T:
        """``probe()``'s first non-None value, polled until ``timeout``; AssertionError after."""
        try:
            return wait_for(what, probe, timeout, None)
        except StackError as exc:
            raise AssertionError(str(exc)) from None


class OtlpHttpReceiver(OtlpReceiver):
    """The same receiver speaking OTLP/HTTP with protobuf bodies (port 4318's protocol):
    POST /v1/traces and /v1/metrics. A gRPC client's request to it fails."""

    def __init__(self) -> None:
        super().__init__()
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-type") != "application/x-protobuf":
                    self.send_error(415)
                    return
                if self.path == "/v1/traces":
                    request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                    receiver.add_traces(request)
                    reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                elif self.path == "/v1/metrics":
                    metrics = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
                    receiver.add_metrics(metrics)
                    reply = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
                else:
                    self.send_error(404)
                    return
                self.reply(200, "application/x-protobuf", reply)

        self._http = LoopbackServer(Handler)

    @property
    def endpoint(self) -> str:
        return self._http.url

    def start(self) -> OtlpHttpReceiver:
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()
