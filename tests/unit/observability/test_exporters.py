"""otel_exporters: the SDK's standard variables choose the exporters; the unsupported is said."""

from __future__ import annotations

import http.server
import logging
import threading
from typing import ClassVar

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from authz.observability.exporters import (
    GRPC,
    HTTP,
    MetricsChoice,
    TracesChoice,
    metrics_choice,
    traces_choice,
)

FILE = "http://collector:4317"


@pytest.mark.parametrize(
    ("environ", "config_endpoint", "expected"),
    [
        ({}, None, TracesChoice()),
        ({}, FILE, TracesChoice(GRPC, FILE)),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, None, TracesChoice(GRPC)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4317"}, None, TracesChoice(GRPC)),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, None, TracesChoice(GRPC)),
        ({"OTEL_TRACES_EXPORTER": "console, otlp"}, None, TracesChoice(GRPC, console=True)),
        ({"OTEL_TRACES_EXPORTER": "console"}, None, TracesChoice(console=True)),
        ({"OTEL_TRACES_EXPORTER": "console"}, FILE, TracesChoice(console=True)),  # the list wins
        ({"OTEL_TRACES_EXPORTER": "none"}, FILE, TracesChoice()),
        ({"OTEL_TRACES_EXPORTER": "none,console"}, FILE, TracesChoice()),
        ({"OTEL_SDK_DISABLED": "true"}, FILE, TracesChoice()),
        ({"OTEL_SDK_DISABLED": "false"}, FILE, TracesChoice(GRPC, FILE)),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, FILE, TracesChoice(HTTP, FILE)),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "HTTP/protobuf"}, FILE, TracesChoice(HTTP, FILE)),
        (
            {
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
            },
            FILE,
            TracesChoice(GRPC, FILE),
        ),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, FILE, TracesChoice(GRPC, FILE)),
    ],
)
def test_which_trace_exporters(
    environ: dict[str, str], config_endpoint: str | None, expected: TracesChoice
) -> None:
    assert traces_choice(config_endpoint, environ) == expected


def test_the_exporters_built_for_each_choice() -> None:
    assert [type(e) for e in TracesChoice(GRPC, FILE, console=True).exporters()] == [
        GrpcSpanExporter,
        ConsoleSpanExporter,
    ]
    (http,) = TracesChoice(HTTP, "http://collector:4318").exporters()
    assert isinstance(http, HttpSpanExporter)
    assert isinstance(MetricsChoice(HTTP, "http://collector:4318").exporter(), HttpMetricExporter)


class _Collector(http.server.BaseHTTPRequestHandler):
    paths: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        type(self).paths.append(self.path)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("given", "posted"),
    [("", "/v1/traces"), ("/", "/v1/traces"), ("/custom/traces", "/custom/traces")],
)
def test_a_base_url_gets_the_signal_path_and_a_full_one_is_used_as_given(
    given: str, posted: str
) -> None:
    _Collector.paths = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}{given}"
        (exporter,) = TracesChoice(HTTP, endpoint).exporters()
        provider = TracerProvider(shutdown_on_exit=False)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        provider.get_tracer("test").start_span("check").end()  # exported before it returns
        provider.shutdown()
    finally:
        server.shutdown()
        server.server_close()
    assert _Collector.paths == [posted]


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "'zipkin' is not supported"),
        ({"OTEL_TRACES_EXPORTER": "otlp,jaeger"}, "'jaeger' is not supported"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "http/json is not supported"),
    ],
)
def test_what_is_not_supported_is_logged(
    environ: dict[str, str], message: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="authz.observability.exporters"):
        choice = traces_choice(FILE, environ)
    assert message in caplog.text
    if "PROTOCOL" in next(iter(environ)):
        # Never the other protocol to a port that speaks this one.
        assert choice == TracesChoice()


@pytest.mark.parametrize(
    ("environ", "config_endpoint", "expected"),
    [
        ({}, None, MetricsChoice()),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, None, MetricsChoice()),
        ({"OTEL_METRICS_EXPORTER": "otlp"}, None, MetricsChoice(GRPC)),
        ({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "x"}, None, MetricsChoice(GRPC)),
        ({}, FILE, MetricsChoice(GRPC, FILE)),
        ({"OTEL_METRICS_EXPORTER": "prometheus"}, FILE, MetricsChoice()),
        ({"OTEL_METRICS_EXPORTER": "none"}, FILE, MetricsChoice()),
        ({"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf"}, FILE, MetricsChoice(HTTP, FILE)),
    ],
)
def test_which_metrics_exporter(
    environ: dict[str, str], config_endpoint: str | None, expected: MetricsChoice
) -> None:
    assert metrics_choice(config_endpoint, environ) == expected
