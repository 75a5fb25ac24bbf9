"""What one Check's answer leaves behind: its span attributes and its audit record.

``observe.Observability.finish`` decides what the client got (an ``Answer``);
this module turns that answer, the request and the decision into the span's
attributes and the audit record, so that both say the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from authz.check.decision import Decision
from authz.check.request import RequestView
from authz.errors import AuditUnavailable
from authz.observability.audit_record import decision_record, redact
from authz.observability.tracing import (
    ATTR_ALG,
    ATTR_DECISION,
    ATTR_DRY_RUN_REASON,
    ATTR_DRY_RUN_STATUS,
    ATTR_ISSUER,
    ATTR_KID,
    ATTR_METHOD,
    ATTR_PATH,
    ATTR_REASON,
    ATTR_ROUTE,
    ATTR_SHADOW_REASON,
    ATTR_SHADOW_ROUTE,
    ATTR_SHADOW_STATUS,
    ATTR_SHADOW_WOULD,
    ATTR_STATUS,
    ATTR_UNDELIVERED_DECISION,
    ATTR_UNDELIVERED_REASON,
    ATTR_UNDELIVERED_STATUS,
)

__all__ = [
    "DEADLINE_UNCERTAIN",
    "Answer",
    "AnswerKind",
    "audit_unavailable",
    "check_record",
    "end_span",
]


# allow | deny: authz's answer reached the client; late: Envoy's error did;
# unknown: authz answered at Envoy's deadline, and either may have.
AnswerKind = Literal["allow", "deny", "late", "unknown"]
# The late reason for an answer sent within the margin of Envoy's deadline.
DEADLINE_UNCERTAIN = "deadline_uncertain"


@dataclass(frozen=True, slots=True)
class Answer:
    """What the client got for one Check: authz's allow or deny, or ``late``:
    Envoy's own error status, because it had stopped waiting for authz."""

    decision: AnswerKind
    status: int | None  # None when unknown
    reason: str

    @classmethod
    def of(cls, decision: Decision | None, late: str | None, late_status: int) -> Answer:
        """``late`` (a reason) when Envoy had stopped waiting, else the decision's."""
        if late == DEADLINE_UNCERTAIN:
            return cls("unknown", None, late)
        if late is not None:
            return cls("late", late_status, late)
        assert decision is not None
        return cls("allow" if decision.allowed else "deny", decision.status, decision.reason)


def audit_unavailable(decision: Decision) -> Decision:
    """The 503 that stands in for ``decision`` when its record was not written."""
    error = AuditUnavailable("the decision's audit record could not be written")
    return Decision.deny(
        error,
        token=decision.token,
        token_fingerprint=decision.token_fingerprint,
        route=decision.route,
        mode=decision.mode,
        shadows=decision.shadows,
        issuer=decision.issuer,
    )


def end_span(
    span: Span, request: RequestView | None, decision: Decision | None, answer: Answer
) -> None:
    """Set the answer's attributes on the Check's span (if recorded) and end it."""
    if span.is_recording():
        attributes: dict[str, AttributeValue] = {
            ATTR_DECISION: answer.decision,
            ATTR_REASON: answer.reason,
        }
        if answer.status is not None:
            attributes[ATTR_STATUS] = answer.status
        if decision is not None:
            _decision_attributes(attributes, decision, answer)
        if request is not None:
            attributes[ATTR_METHOD] = redact(request.method, 32)
            attributes[ATTR_PATH] = redact(request.path_without_query)
        span.set_attributes(attributes)
        # A deny is the service working; failing to decide, or to decide in
        # time, is an error.
        if (answer.status or 0) >= 500 or answer.decision in ("late", "unknown"):
            span.set_status(Status(StatusCode.ERROR, answer.reason))
    span.end()


def check_record(
    *,
    at: float,
    ids: tuple[str | None, str | None],
    request: RequestView | None,
    decision: Decision | None,
    answer: Answer,
    seconds: float,
    config_version: str,
) -> dict[str, Any]:
    """The audit record of one Check: what the client got, and what authz had
    decided when that was not delivered (``late``)."""
    token = decision.token if decision is not None else None
    jti = token.claims.get("jti") if token is not None else None
    trace_id, span_id = ids
    undelivered = None
    if answer.decision in ("late", "unknown") and decision is not None:
        undelivered = {
            "decision": "allow" if decision.allowed else "deny",
            "status": decision.status,
            "reason": decision.reason,
        }
    return decision_record(
        at=at,
        decision=answer.decision,
        status=answer.status,
        reason=answer.reason,
        issuer=(decision.issuer or None) if decision is not None else None,
        subject=token.subject if token is not None else None,
        jti=jti if isinstance(jti, str) else None,
        token_fp=decision.token_fingerprint if decision is not None else "",
        route=decision.route if decision is not None else "",
        method=request.method if request else "",
        path=request.path if request else "",
        host=request.host if request else "",
        source=request.source_address if request else "",
        request_id=request.request_id if request else "",
        trace_id=trace_id,
        span_id=span_id,
        latency_seconds=seconds,
        config_version=config_version,
        shadow=decision.shadows if decision is not None else (),
        dry_run=decision.dry_run if decision is not None else None,
        undelivered=undelivered,
        binding=decision.binding if decision is not None else "",
        binding_thumbprint=decision.binding_thumbprint if decision is not None else "",
    )


def _decision_attributes(
    attributes: dict[str, AttributeValue], decision: Decision, answer: Answer
) -> None:
    if decision.issuer:
        attributes[ATTR_ISSUER] = decision.issuer
    token = decision.token
    if token is not None:
        attributes[ATTR_ALG] = token.algorithm
        if token.kid is not None:
            attributes[ATTR_KID] = redact(token.kid, 128)
    if decision.route:
        attributes[ATTR_ROUTE] = decision.route
    if answer.decision in ("late", "unknown"):
        attributes[ATTR_UNDELIVERED_DECISION] = "allow" if decision.allowed else "deny"
        attributes[ATTR_UNDELIVERED_STATUS] = decision.status
        attributes[ATTR_UNDELIVERED_REASON] = decision.reason
    _unenforced_attributes(attributes, decision)


def _unenforced_attributes(attributes: dict[str, AttributeValue], decision: Decision) -> None:
    shadows = decision.shadows
    if shadows:
        attributes[ATTR_SHADOW_ROUTE] = [shadow.route for shadow in shadows]
        attributes[ATTR_SHADOW_WOULD] = [shadow.would for shadow in shadows]
        attributes[ATTR_SHADOW_STATUS] = [shadow.status for shadow in shadows]
        attributes[ATTR_SHADOW_REASON] = [shadow.reason for shadow in shadows]
    if decision.dry_run is not None:
        attributes[ATTR_DRY_RUN_STATUS] = decision.dry_run.status
        attributes[ATTR_DRY_RUN_REASON] = decision.dry_run.reason
