"""decision_log: one structured line per deny, bounded by a token bucket, never the token."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from authz.check.decision import Decision, Unenforced
from authz.check.request import RequestView
from authz.check.verify import VerifiedToken
from authz.errors import MissingCredentials, NoRoute
from authz.observability.decision_log import BURST, SUMMARY_EVERY, DecisionLog, TokenBucket

TOKEN_FP = "0123456789abcdef"
REQUEST = RequestView(
    method="GET", path="/orders/1", headers={"x-request-id": ("req-7",)}, host="api"
)
DENY = Decision.deny(
    MissingCredentials("no Authorization header"),
    route="orders",
    token_fingerprint=TOKEN_FP,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _fields(record: logging.LogRecord, *names: str) -> dict[str, Any]:
    return {name: getattr(record, name, None) for name in names}


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_deny_is_one_line_with_its_fields(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="authz.check.decision"):
        DecisionLog(clock=clock).decision(DENY, REQUEST)
    (record,) = caplog.records
    assert record.getMessage() == "deny 401 missing_token"
    assert _fields(record, "request_id", "route", "reason", "status", "token_fp", "detail") == {
        "request_id": "req-7",
        "route": "orders",
        "reason": "missing_token",
        "status": 401,
        "token_fp": TOKEN_FP,
        "detail": "no Authorization header",
    }


def test_would_be_denies_have_lines_of_their_own(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    allow = Decision.allow(
        route="orders",
        shadows=(
            Unenforced("admin", False, 403, "role_missing", "missing role admin"),
            Unenforced("v2", True, 200, "allowed"),
        ),
        dry_run=Unenforced("orders", False, 403, "no_route", "no route takes GET /x"),
    )
    with caplog.at_level(logging.INFO, logger="authz.check.decision"):
        DecisionLog(clock=clock).decision(allow, REQUEST)
    shadow, dry_run = caplog.records  # an allow itself is DEBUG only
    assert shadow.getMessage() == "shadow route admin would deny 403 role_missing"
    assert _fields(shadow, "shadow_route", "route", "request_id") == {
        "shadow_route": "admin",
        "route": "orders",
        "request_id": "req-7",
    }
    assert dry_run.getMessage() == "dry run: would deny 403 no_route"


def test_an_allow_is_debug_only(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    token = VerifiedToken(
        issuer="https://idp", subject="alice", claims={}, kid=None, algorithm="RS256"
    )
    allow = Decision.allow(token=token, token_fingerprint=TOKEN_FP)
    log = DecisionLog(clock=clock)
    with caplog.at_level(logging.INFO, logger="authz.check.decision"):
        log.decision(allow, REQUEST)
    assert caplog.records == []
    with caplog.at_level(logging.DEBUG, logger="authz.check.decision"):
        log.decision(allow, REQUEST)
    (record,) = caplog.records
    assert _fields(record, "sub", "iss", "token_fp") == {
        "sub": "alice",
        "iss": "https://idp",
        "token_fp": TOKEN_FP,
    }


def test_a_flood_is_bounded_and_what_was_suppressed_is_counted(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    log = DecisionLog(clock=clock)
    with caplog.at_level(logging.INFO, logger="authz.check.decision"):
        for _ in range(1000):
            log.decision(DENY, REQUEST)  # all in the same instant
        assert len(caplog.records) == BURST
        clock.now += SUMMARY_EVERY
        log.decision(DENY, REQUEST)
    summary, line = caplog.records[BURST:]
    assert summary.levelno == logging.WARNING
    assert _fields(summary, "suppressed", "seconds") == {
        "suppressed": 1000 - BURST,
        "seconds": SUMMARY_EVERY,
    }
    assert "the audit trail has every decision" in summary.getMessage()
    assert line.getMessage() == "deny 401 missing_token"  # the bucket refilled


def test_flush_reports_what_is_left(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    log = DecisionLog(clock=clock, burst=1)
    with caplog.at_level(logging.INFO, logger="authz.check.decision"):
        for _ in range(3):
            log.decision(DENY, REQUEST)
        log.flush()
        log.flush()  # nothing more to say
    _line, summary = caplog.records
    assert getattr(summary, "suppressed", None) == 2


def test_lines_a_level_hides_spend_nothing(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    log = DecisionLog(clock=clock, burst=1)
    with caplog.at_level(logging.WARNING, logger="authz.check.decision"):
        for _ in range(10):
            log.decision(DENY, REQUEST)
        log.flush()
    assert caplog.records == []


def test_a_late_answer_is_a_warning(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    denied = Decision.deny(NoRoute("x"))
    with caplog.at_level(logging.INFO, logger="authz.check.decision"):
        DecisionLog(clock=clock).late("deadline_exceeded", denied, REQUEST)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert _fields(record, "late", "undelivered", "request_id") == {
        "late": "deadline_exceeded",
        "undelivered": "no_route",
        "request_id": "req-7",
    }


def test_the_bucket_refills_at_its_rate(clock: Clock) -> None:
    bucket = TokenBucket(rate=2.0, burst=2, clock=clock)
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    clock.now += 0.5
    assert [bucket.take() for _ in range(2)] == [True, False]
    clock.now += 100
    assert [bucket.take() for _ in range(3)] == [True, True, False]
