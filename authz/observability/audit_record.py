"""The audit record's format: one JSON object per decision, never a secret in it.

``decision_record`` builds a Check's record, ``audit_record.schema.json``
beside this module describes it, and ``redact`` is what keeps request-controlled
strings (a path, a request id) bounded and free of anything shaped like a token;
the service log and the span use it for the same reason.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from authz.check.request import RequestView
from authz.check.result import Decision, Unenforced
from authz.observability.answer import Answer

__all__ = ["MAX_FIELD", "SCHEMA_PATH", "decision_record", "redact", "timestamp"]

SCHEMA_PATH = Path(__file__).with_name("audit_record.schema.json")

# Longest value kept for a request-controlled field; the record stays bounded.
MAX_FIELD = 1024
# Anything shaped like a JWS/JWE (base64url JSON header "eyJ…" and a dot):
# a token in a path segment or a request id must not reach the trail.
_JWT_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]{2,}(?:\.[A-Za-z0-9_-]*)+")
_REDACTED = "[redacted]"


def redact(value: str, limit: int = MAX_FIELD) -> str:
    """``value`` capped at ``limit`` characters, with token-like runs replaced."""
    if "eyJ" in value:
        value = _JWT_LIKE.sub(_REDACTED, value)
    return value if len(value) <= limit else value[:limit] + "…"


_second: tuple[int, str] = (-1, "")


def timestamp(seconds: float) -> str:
    """RFC 3339 UTC with milliseconds: 2026-01-31T12:00:00.123Z."""
    global _second  # noqa: PLW0603 - a one-entry cache: formatting is per Check
    whole = int(seconds)
    cached = _second  # one read: another thread may replace it
    if cached[0] != whole:
        cached = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
        _second = cached
    return f"{cached[1]}.{int((seconds - whole) * 1000):03d}Z"


def decision_record(
    at: float,
    *,
    ids: tuple[str | None, str | None],
    request: RequestView | None,
    decision: Decision | None,
    answer: Answer,
    seconds: float,
    config_version: str,
) -> dict[str, Any]:
    """The audit record of one Check (see the schema): what the client got
    (``answer``), and what authz had decided when that was not delivered
    (``late``, ``unknown``; None if it ended before deciding). ``ids`` are the
    trace and span ids. Request-controlled strings are redacted."""
    token = decision.token if decision is not None else None
    jti = token.claims.get("jti") if token is not None else None
    subject = token.subject if token is not None else None
    undelivered = None
    if answer.decision in ("late", "unknown") and decision is not None:
        undelivered = {
            "decision": "allow" if decision.allowed else "deny",
            "status": decision.status,
            "reason": decision.reason,
        }
    return {
        "type": "decision",
        "time": timestamp(at),
        "decision": answer.decision,
        "status": answer.status,
        "reason": answer.reason,
        "issuer": (decision.issuer or None) if decision is not None else None,
        "subject": None if subject is None else redact(subject, 256),
        "jti": redact(jti, 256) if isinstance(jti, str) else None,
        "token_fp": (decision.token_fingerprint or None) if decision is not None else None,
        "route": (decision.route or None) if decision is not None else None,
        "method": redact(request.method, 32) if request is not None else "",
        "path": redact(request.path.split("?", 1)[0]) if request is not None else "",
        "host": redact(request.host, 256) if request is not None else "",
        "source": request.source_address if request is not None else "",
        "request_id": (redact(request.request_id, 256) or None) if request is not None else None,
        "trace_id": ids[0],
        "span_id": ids[1],
        "latency_ms": round(seconds * 1000, 3),
        "config_version": config_version,
        "shadow": [_unenforced(s) for s in decision.shadows] or None if decision else None,
        "dry_run": _unenforced(decision.dry_run) if decision and decision.dry_run else None,
        "undelivered": undelivered,
        # How the sender was proven; a thumbprint of a public key, never the proof.
        "binding": (decision.binding or None) if decision is not None else None,
        "binding_thumbprint": (decision.binding_thumbprint or None) if decision else None,
    }


def _unenforced(outcome: Unenforced) -> dict[str, Any]:
    return {
        "route": outcome.route or None,
        "would": outcome.would,
        "status": outcome.status,
        "reason": outcome.reason,
        # A deny's detail may quote the request (a path): redacted like one.
        "detail": redact(outcome.detail, 512),
    }
