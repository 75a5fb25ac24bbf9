"""audit: the record, its schema, and a writer that writes before the answer, never raises
and never loses silently."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from authz.check.request import RequestView
from authz.check.result import Decision, Unenforced
from authz.check.verify import VerifiedToken
from authz.errors import MissingCredentials
from authz.observability.answer import Answer
from authz.observability.audit import AuditWriter
from authz.observability.audit_record import (
    MAX_FIELD,
    SCHEMA_PATH,
    decision_record,
    redact,
    timestamp,
)
from authz.observability.audit_sinks import FdSink, FileSink, StreamSink, stdout_sink

TOKEN = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0"
    ".eyJzdWIiOiJhbGljZSIsImlzcyI6Imh0dHBzOi8vaWRwIn0"
    ".c2lnbmF0dXJlLWJ5dGVzLWhlcmUtYW5kLW1vcmU"
)
WAIT = 10.0


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    value: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(value)
    return value


TRACE_IDS = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
VERIFIED = VerifiedToken(
    issuer="https://idp.example",
    subject="alice",
    claims={"sub": "alice", "jti": "id-1"},
    kid="k1",
    algorithm="RS256",
    fingerprint="0123456789abcdef",
)
ALLOWED = Answer("allow", 200, "allowed")


def record(
    *,
    decision: Decision | None = None,
    answer: Answer = ALLOWED,
    ids: tuple[str | None, str | None] = TRACE_IDS,
    request_id: str = "req-1",
    **request: Any,
) -> dict[str, Any]:
    """The record of one Check: by default an allow of GET /orders/7 for alice."""
    fields: dict[str, Any] = {
        "method": "GET",
        "path": "/orders/7?page=2",
        "host": "api.example",
        "source_address": "10.0.0.7:51234",
        "headers": {"x-request-id": (request_id,)} if request_id else {},
    }
    fields.update(request)
    if decision is None:
        decision = Decision.allow(token=VERIFIED, token_fingerprint=VERIFIED.fingerprint)
    return decision_record(
        1_767_225_600.5,
        ids=ids,
        request=RequestView(**fields),
        decision=decision,
        answer=answer,
        seconds=0.0012345,
        config_version="abcdef012345",
    )


# The record.


def test_a_record_has_every_field_and_no_query_string(schema: dict[str, Any]) -> None:
    built = record()
    jsonschema.validate(built, schema)
    assert built == {
        "type": "decision",
        "time": "2026-01-01T00:00:00.500Z",
        "decision": "allow",
        "status": 200,
        "reason": "allowed",
        "issuer": "https://idp.example",
        "subject": "alice",
        "jti": "id-1",
        "token_fp": "0123456789abcdef",
        "route": None,
        "method": "GET",
        "path": "/orders/7",
        "host": "api.example",
        "source": "10.0.0.7:51234",
        "request_id": "req-1",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
        "latency_ms": 1.234,
        "config_version": "abcdef012345",
        "shadow": None,
        "dry_run": None,
        "undelivered": None,
        "binding": None,
        "binding_thumbprint": None,
    }


def test_a_late_record_says_what_authz_would_have_answered(schema: dict[str, Any]) -> None:
    built = record(answer=Answer("late", 503, "deadline_exceeded"))
    jsonschema.validate(built, schema)
    assert (built["decision"], built["status"], built["reason"]) == (
        "late",
        503,
        "deadline_exceeded",
    )
    assert built["undelivered"] == {"decision": "allow", "status": 200, "reason": "allowed"}


def test_unenforced_outcomes_are_recorded(schema: dict[str, Any]) -> None:
    # A shadow route would have denied; a dry run allowed what orders denied.
    dry_run = Decision.allow(
        route="orders",
        shadows=(
            Unenforced("admin", False, 403, "role_missing", "missing role auditor"),
            Unenforced("orders-v2", True, 200, "allowed"),
        ),
        dry_run=Unenforced("orders", False, 401, "token_expired", f"path /x/{TOKEN}"),
    )
    built = record(decision=dry_run, answer=Answer("allow", 200, dry_run.reason))
    assert built["reason"] == "dry_run"
    assert built["route"] == "orders"
    jsonschema.validate(built, schema)
    assert built["shadow"] == [
        {
            "route": "admin",
            "would": "deny",
            "status": 403,
            "reason": "role_missing",
            "detail": "missing role auditor",
        },
        {"route": "orders-v2", "would": "allow", "status": 200, "reason": "allowed", "detail": ""},
    ]
    assert built["dry_run"] == {
        "route": "orders",
        "would": "deny",
        "status": 401,
        "reason": "token_expired",
        "detail": "path /x/[redacted]",
    }


def test_a_deny_without_token_or_trace_is_valid(schema: dict[str, Any]) -> None:
    built = record(
        decision=Decision.deny(MissingCredentials()),
        answer=Answer("deny", 401, "missing_token"),
        request_id="",
        ids=(None, None),
    )
    jsonschema.validate(built, schema)
    assert (built["issuer"], built["subject"], built["jti"]) == (None, None, None)
    assert built["token_fp"] is None
    assert built["request_id"] is None


def test_a_check_that_ended_before_it_was_read_is_valid(schema: dict[str, Any]) -> None:
    built = decision_record(
        1_767_225_600.5,
        ids=(None, None),
        request=None,
        decision=None,
        answer=Answer("late", 503, "overloaded"),
        seconds=0.5,
        config_version="abcdef012345",
    )
    jsonschema.validate(built, schema)
    assert (built["decision"], built["reason"], built["undelivered"]) == (
        "late",
        "overloaded",
        None,
    )
    assert (built["method"], built["path"], built["route"]) == ("", "", None)


def test_a_token_in_the_path_or_request_id_is_redacted() -> None:
    built = record(path=f"/callback/{TOKEN}/next?code={TOKEN}", request_id=f"id-{TOKEN}")
    assert built["path"] == "/callback/[redacted]/next"
    assert built["request_id"] == "id-[redacted]"
    assert TOKEN.split(".")[2] not in json.dumps(built)


def test_request_controlled_fields_are_capped() -> None:
    built = record(path="/" + "a" * 5000, host="h" * 5000, request_id="r" * 5000)
    assert len(built["path"]) == MAX_FIELD + 1  # the cap and an ellipsis
    assert len(built["host"]) <= 257
    assert len(built["request_id"]) <= 257


def test_redact_leaves_ordinary_text_alone() -> None:
    assert redact("/orders/eyJ-not-a-token") == "/orders/eyJ-not-a-token"
    assert redact("x" * 10, limit=4) == "xxxx…"


def test_timestamps_are_rfc3339_utc_with_milliseconds() -> None:
    assert timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert timestamp(1_700_000_000.9999) == "2023-11-14T22:13:20.999Z"


# The schema: strict enough that a secret cannot ride along.


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("token", TOKEN),  # unknown fields are refused
        ("token_fp", TOKEN),  # a fingerprint is 16 hex digits, nothing else
        ("path", "/a?access_token=x"),
        ("decision", "maybe"),
        ("trace_id", "not-hex"),
        ("time", "yesterday"),
    ],
)
def test_the_schema_refuses(schema: dict[str, Any], field: str, value: str) -> None:
    built = {**record(), field: value}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(built, schema)


def test_the_schema_accepts_a_dropped_record(schema: dict[str, Any]) -> None:
    dropped = {
        "type": "dropped",
        "time": "2026-01-01T00:00:01.000Z",
        "count": 3,
        "first": "2026-01-01T00:00:00.000Z",
        "last": "2026-01-01T00:00:00.900Z",
    }
    jsonschema.validate(dropped, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**dropped, "count": 0}, schema)


# The writer.


class Counters:
    def __init__(self) -> None:
        self.written = 0
        self.dropped: dict[str, int] = {}
        self.failed: dict[str, int] = {}

    def audit_written(self, count: int) -> None:
        self.written += count

    def audit_dropped(self, reason: str, count: int) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + count

    def audit_write_failed(self, sink: str, count: int) -> None:
        self.failed[sink] = self.failed.get(sink, 0) + count


class ListSink:
    def __init__(self, name: str = "list") -> None:
        self.name = name
        self.text = ""
        self.closed = False
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.text += data.decode("ascii")

    def close(self) -> None:
        self.closed = True

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines()]


class FailingSink(ListSink):
    """Fails while ``failing`` is set (a full disk), then recovers."""

    def __init__(self, name: str = "failing") -> None:
        super().__init__(name)
        self.failing = True

    def write(self, data: bytes) -> None:
        if self.failing:
            raise OSError(28, "No space left on device")
        super().write(data)


def test_each_record_is_written_before_record_returns_one_line_each() -> None:
    sink, counters = ListSink(), Counters()
    writer = AuditWriter([sink], counters)
    writer.start()
    for index in range(50):
        assert writer.record({"n": index, "text": "line\nbreak"})
        assert sink.writes == index + 1  # in the sink already: nothing queued
    writer.close()
    assert [line["n"] for line in sink.lines()] == list(range(50))
    assert sink.text.count("\n") == 50  # a newline in a value stays escaped
    assert sink.closed
    assert counters.written == 50
    assert counters.dropped == {}


def test_a_failing_sink_is_counted_and_the_other_sink_still_gets_every_record() -> None:
    good, bad, counters = ListSink("good"), FailingSink("bad"), Counters()
    writer = AuditWriter([bad, good], counters)
    writer.start()
    assert writer.record({"n": 1}) is False  # not every sink took it
    assert writer.record({"n": 2}) is False
    writer.close()
    assert [line["n"] for line in good.lines()] == [1, 2]
    assert counters.failed == {"bad": 2}
    assert counters.written == 2
    assert counters.dropped == {}


def test_records_no_sink_took_are_counted_and_the_gap_is_written_once_it_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink, counters = FailingSink("only"), Counters()
    clock = [1_767_225_600.0]
    writer = AuditWriter([sink], counters, clock=lambda: clock[0])
    writer.start()
    with caplog.at_level(logging.ERROR, logger="authz.observability.audit"):
        for index in range(3):
            clock[0] += 1
            assert writer.record({"n": index}) is False
    assert counters.dropped == {"write_error": 3}
    assert counters.written == 0
    # One line per sink per 10 s, not one per record.
    assert len([r for r in caplog.records if "audit sink only failed" in r.message]) == 1
    sink.failing = False
    clock[0] += 1
    assert writer.record({"n": 3}) is True
    assert writer.record({"n": 4}) is True
    gap, *rest = sink.lines()
    assert gap == {
        "type": "dropped",
        "time": "2026-01-01T00:00:04.000Z",
        "count": 3,
        "first": "2026-01-01T00:00:01.000Z",
        "last": "2026-01-01T00:00:03.000Z",
    }
    assert [line["n"] for line in rest] == [3, 4]  # the gap is written once


def test_record_never_raises() -> None:
    class BrokenCounters(Counters):
        def audit_dropped(self, reason: str, count: int) -> None:
            raise RuntimeError("metrics are down")

    sink = ListSink()
    writer = AuditWriter([sink], BrokenCounters())
    writer.start()
    assert writer.record({"n": 1})
    assert writer.record({"not json": object()}) is False  # and the counter raises
    writer.close()
    assert writer.record({"n": 2}) is False  # closed, and the counter raises
    assert [line.get("n") for line in sink.lines() if "n" in line] == [1]


def test_an_unserialisable_record_is_counted_and_the_rest_are_written() -> None:
    sink, counters = ListSink(), Counters()
    writer = AuditWriter([sink], counters)
    writer.start()
    writer.record({"n": 1})
    writer.record({"bad": object()})
    writer.record({"n": 3})
    writer.close()
    assert [line.get("n") for line in sink.lines() if "n" in line] == [1, 3]
    assert counters.dropped == {"error": 1}


def test_a_record_after_close_is_counted_not_raised() -> None:
    counters = Counters()
    writer = AuditWriter([ListSink()], counters)
    writer.start()
    writer.close()
    assert writer.record({"n": 1}) is False
    assert counters.dropped == {"shutdown": 1}
    writer.close()  # idempotent


def test_close_without_start_closes_the_sinks() -> None:
    sink = ListSink()
    AuditWriter([sink]).close()
    assert sink.closed


# Sinks.


def test_the_file_sink_appends_and_reopens_a_rotated_file_within_a_second(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit" / "audit.jsonl"
    clock = [100.0]
    sink = FileSink(path, clock=lambda: clock[0])
    writer = AuditWriter([sink])
    writer.start()
    assert path.exists()  # opened at start: an unwritable path fails early
    writer.record({"n": 1})
    assert path.read_text() == '{"n":1}\n'  # in the file when record() returns
    rotated = tmp_path / "audit" / "audit.jsonl.1"
    path.rename(rotated)  # what logrotate does
    clock[0] += 0.5
    writer.record({"n": 2})  # not looked for yet: still the moved file
    clock[0] += 0.6
    writer.record({"n": 3})
    writer.close()
    assert [json.loads(line)["n"] for line in rotated.read_text().splitlines()] == [1, 2]
    assert [json.loads(line)["n"] for line in path.read_text().splitlines()] == [3]


def test_the_file_sink_appends_to_an_existing_trail(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text('{"n":0}\n')
    writer = AuditWriter([FileSink(path)])
    writer.start()
    writer.record({"n": 1})
    writer.close()
    assert [json.loads(line)["n"] for line in path.read_text().splitlines()] == [0, 1]


def test_an_unwritable_file_fails_at_start(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError):  # noqa: PT011 - the OS decides which
        AuditWriter([FileSink(blocker / "audit.jsonl")]).start()


def test_the_fd_sink_writes_whole_records_to_the_descriptor() -> None:
    read, write = os.pipe()
    try:
        sink = FdSink(write, "pipe")
        record = b'{"n":1,"pad":"' + b"x" * 200_000 + b'"}\n'  # more than a pipe holds
        received = bytearray()

        def drain() -> None:
            while len(received) < len(record):
                received.extend(os.read(read, 65536))

        reader = threading.Thread(target=drain)
        reader.start()
        sink.write(record)
        reader.join(WAIT)
        assert bytes(received) == record
    finally:
        os.close(read)
        os.close(write)


def test_a_closed_descriptor_is_a_sink_failure_not_an_exception() -> None:
    read, write = os.pipe()
    os.close(read)  # nobody reads: EPIPE
    counters = Counters()
    try:
        writer = AuditWriter([FdSink(write, "stdout")], counters)
        assert writer.record({"n": 1}) is False
        assert counters.failed == {"stdout": 1}
    finally:
        os.close(write)


def test_stdout_sink_uses_the_descriptor_when_there_is_one(
    capfd: pytest.CaptureFixture[str],
) -> None:
    sink = stdout_sink()
    assert isinstance(sink, FdSink)
    sink.write(b'{"n":1}\n')
    assert capfd.readouterr().out == '{"n":1}\n'


def test_the_stream_sink_follows_a_replaced_stream() -> None:
    first, second = io.StringIO(), io.StringIO()
    current = [first]
    sink = StreamSink(lambda: current[0])
    sink.write(b"a\n")
    current[0] = second
    sink.write(b"b\n")
    sink.close()
    assert (first.getvalue(), second.getvalue()) == ("a\n", "b\n")
