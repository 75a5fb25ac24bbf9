"""The audit record's format: one JSON object per decision, never a secret in it.

``decision_record`` builds a Check's record, ``audit_record.schema.json``
beside this module describes it, and ``redact`` is what keeps request-controlled
strings (a path, a request id) bounded and free of anything shaped like a token;
the service log and the span use it for the same reason.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from authz.check.decision import Unenforced

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
    *,
    at: float,
    decision: str,
    status: int | None,
    reason: str,
    issuer: str | None,
    subject: str | None,
    jti: str | None,
    token_fp: str,
    route: str,
    method: str,
    path: str,
    host: str,
    source: str,
    request_id: str,
    trace_id: str | None,
    span_id: str | None,
    latency_seconds: float,
    config_version: str,
    shadow: Sequence[Unenforced] = (),
    dry_run: Unenforced | None = None,
    undelivered: Mapping[str, Any] | None = None,
    binding: str = "",
    binding_thumbprint: str = "",
) -> dict[str, Any]:
    """One audit record (see the schema). Request-controlled strings are redacted.

    ``decision`` is what the client got: allow, deny, or late (authz answered
    after Envoy stopped waiting; ``undelivered`` is then the answer authz made,
    None if it was cancelled before deciding).
    """
    return {
        "type": "decision",
        "time": timestamp(at),
        "decision": decision,
        "status": status,
        "reason": reason,
        "issuer": issuer,
        "subject": None if subject is None else redact(subject, 256),
        "jti": None if jti is None else redact(jti, 256),
        "token_fp": token_fp or None,
        "route": route or None,
        "method": redact(method, 32),
        "path": redact(path.split("?", 1)[0]),
        "host": redact(host, 256),
        "source": source,
        "request_id": redact(request_id, 256) or None,
        "trace_id": trace_id,
        "span_id": span_id,
        "latency_ms": round(latency_seconds * 1000, 3),
        "config_version": config_version,
        "shadow": [_unenforced(outcome) for outcome in shadow] or None,
        "dry_run": None if dry_run is None else _unenforced(dry_run),
        "undelivered": None if undelivered is None else dict(undelivered),
        # How the sender was proven; a thumbprint of a public key, never the proof.
        "binding": binding or None,
        "binding_thumbprint": binding_thumbprint or None,
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
