"""logs: one JSON object per line, trace ids when traced, no token ever."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from authz.observability.logs import JsonFormatter, configure_logging

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("authz.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_has_time_level_logger_message_and_extras(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.info("listening on %s", "127.0.0.1:9001", extra={"address": "127.0.0.1:9001"})
    (line,) = lines(stream)
    assert line["level"] == "INFO"
    assert line["logger"] == "authz.test-logs"
    assert line["msg"] == "listening on 127.0.0.1:9001"
    assert line["address"] == "127.0.0.1:9001"
    assert line["time"].endswith("Z")
    assert "trace_id" not in line


def test_a_token_that_slips_into_a_message_or_field_is_redacted(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.warning("odd header %r", f"Bearer {TOKEN}", extra={"header": TOKEN})
    text = stream.getvalue()
    assert TOKEN not in text
    assert "c2lnbmF0dXJl" not in text  # not even the signature
    (line,) = lines(stream)
    assert line["msg"] == "odd header 'Bearer [redacted]'"
    assert line["header"] == "[redacted]"


def test_an_exception_adds_its_type_and_traceback(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    try:
        raise ValueError(f"cannot parse {TOKEN}")
    except ValueError:
        logger.exception("internal error while deciding")
    (line,) = lines(stream)
    assert line["exc_type"] == "ValueError"
    assert "Traceback" in line["traceback"]
    assert TOKEN not in json.dumps(line)


def test_a_line_logged_inside_a_span_carries_its_ids(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    provider = TracerProvider(shutdown_on_exit=False)
    with provider.get_tracer("test").start_as_current_span("check") as span:
        logger.error("keys unavailable")
        context = span.get_span_context()
    (line,) = lines(stream)
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"


def test_configure_logging_replaces_the_root_handlers() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        stream = io.StringIO()
        configure_logging("warning", "json", stream)
        logging.getLogger("authz.x").info("dropped: below the level")
        logging.getLogger("authz.x").warning("kept")
        assert [line["msg"] for line in lines(stream)] == ["kept"]
        text = io.StringIO()
        configure_logging("info", "text", text)
        logging.getLogger("authz.x").info("plain")
        assert text.getvalue().rstrip().endswith("INFO authz.x: plain")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
