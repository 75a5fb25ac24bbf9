"""The service log's lines about decisions: structured, and bounded.

Every decision already has its audit record, the complete trail (stdout or a
file). The service log gets a line per deny, per would-be deny (a shadow
route's, a dry run's) and per late answer, so that whoever reads the log sees
what is being refused, with the fields that find the record: ``request_id``,
``route``, ``reason``, ``status``, ``token_fp`` (never the token). Allows are
logged at DEBUG only.

The lines are rate-limited by one token bucket (``RATE`` a second, bursts of
``BURST``): a flood of bad tokens must not become a flood of log lines, when
the audit trail holds each one already. What the bucket suppresses is counted
and reported in a line of its own (``suppressed``: how many, and since when)
at most every ``SUMMARY_EVERY`` seconds while lines keep coming, and by
``flush`` at shutdown. A level that hides a line does not spend the bucket.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from authz.check.decision import Decision, Unenforced
from authz.check.request import RequestView
from authz.observability.audit_record import redact

__all__ = ["BURST", "RATE", "SUMMARY_EVERY", "DecisionLog", "TokenBucket"]

RATE = 10.0
BURST = 50
SUMMARY_EVERY = 10.0


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class DecisionLog:
    """Writes the decision lines of one server to ``logger`` (``authz.check.decision``)."""

    def __init__(
        self,
        logger: logging.Logger | None = None,
        *,
        rate: float = RATE,
        burst: int = BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger or logging.getLogger("authz.check.decision")
        self._bucket = TokenBucket(rate, burst, clock)
        self._clock = clock
        # Checks on many threads log at once: the bucket and the count of
        # suppressed lines change under this lock; lines are written outside it.
        self._lock = threading.Lock()
        self._suppressed = 0
        self._since = 0.0

    def close(
        self, decision: Decision | None, late: str | None, request: RequestView | None
    ) -> None:
        """The lines of one Check: ``late`` if the client got Envoy's answer."""
        if late is not None:
            self.late(late, decision, request)
        elif decision is not None:
            self.decision(decision, request)

    def decision(self, decision: Decision, request: RequestView | None) -> None:
        """The lines of an answered decision: a deny, would-be denies; an allow at DEBUG."""
        denied_shadows = [shadow for shadow in decision.shadows if not shadow.allowed]
        quiet_allow = decision.allowed and not self._log.isEnabledFor(logging.DEBUG)
        if quiet_allow and not denied_shadows and decision.dry_run is None:
            return  # the common case: nothing to write, so nothing to prepare
        fields = _request_fields(request)
        token_fp = decision.token_fingerprint or None
        if decision.allowed:
            if not quiet_allow:
                token = decision.token
                self._emit(
                    logging.DEBUG,
                    "allow",
                    fields,
                    route=decision.route or None,
                    sub=token.subject if token else None,
                    iss=token.issuer if token else None,
                    token_fp=token_fp,
                )
        else:
            self._deny_line(
                "deny", decision, fields, route=decision.route or None, token_fp=token_fp
            )
        for shadow in denied_shadows:
            self._deny_line(
                f"shadow route {shadow.route} would deny",
                shadow,
                fields,
                shadow_route=shadow.route,
                route=decision.route or None,
                token_fp=token_fp,
            )
        if decision.dry_run is not None:
            would = decision.dry_run
            self._deny_line(
                "dry run: would deny", would, fields, route=would.route or None, token_fp=token_fp
            )

    def _deny_line(
        self, what: str, deny: Decision | Unenforced, fields: dict[str, Any], **more: Any
    ) -> None:
        """One line for a deny, enforced or only reported (shadow route, dry run)."""
        self._emit(
            logging.INFO,
            f"{what} {deny.status} {deny.reason}",
            fields,
            status=deny.status,
            reason=deny.reason,
            detail=deny.detail,
            **more,
        )

    def late(self, reason: str, decision: Decision | None, request: RequestView | None) -> None:
        """A Check answered after Envoy stopped waiting (its client got Envoy's error)."""
        undelivered = None if decision is None else ("allow" if decision.allowed else "deny")
        what = (
            "answered at Envoy's deadline: the client got authz's "
            f"{undelivered or 'answer'} or Envoy's error status, which is unknown"
            if reason == "deadline_uncertain"
            else "Envoy had stopped waiting; the client got Envoy's error status, not "
            f"authz's {undelivered or 'answer'}"
        )
        self._emit(
            logging.WARNING,
            f"late ({reason}): {what}",
            _request_fields(request),
            late=reason,
            undelivered=None if decision is None else decision.reason,
            route=(decision.route or None) if decision is not None else None,
        )

    def flush(self) -> None:
        """Report what was suppressed and not reported yet (at shutdown)."""
        with self._lock:
            summary = self._take_summary(self._clock()) if self._suppressed else None
        if summary is not None:
            self._summarize(*summary)

    def _emit(self, level: int, message: str, fields: dict[str, Any], **more: Any) -> None:
        if not self._log.isEnabledFor(level):
            return
        with self._lock:
            now = self._clock()
            summary = None
            if self._suppressed and now - self._since >= SUMMARY_EVERY:
                summary = self._take_summary(now)
            taken = self._bucket.take()
            if not taken:
                if not self._suppressed:
                    self._since = now
                self._suppressed += 1
        if summary is not None:
            self._summarize(*summary)
        if taken:
            self._log.log(level, message, extra={**fields, **more})

    def _take_summary(self, now: float) -> tuple[int, float]:
        count, seconds = self._suppressed, now - self._since
        self._suppressed = 0
        return count, seconds

    def _summarize(self, count: int, seconds: float) -> None:
        self._log.warning(
            "%d decision log lines suppressed in the last %.0f s (more than %.0f a second); "
            "the audit trail has every decision",
            count,
            seconds,
            self._bucket.rate,
            extra={"suppressed": count, "seconds": round(seconds, 3)},
        )


def _request_fields(request: RequestView | None) -> dict[str, Any]:
    # Client-controlled: capped as in the audit record (logs.py also redacts
    # anything token-shaped in every field).
    request_id = redact(request.request_id, 256) if request is not None else ""
    return {"request_id": request_id or None}
