"""What one Check's answer leaves on its span, and the 503 that replaces an
unrecorded decision.

``observe.Observability.finish`` decides what the client got (an ``Answer``,
answer.py); ``end_span`` turns that answer, the request and the decision into
the span's attributes, as ``audit_record.decision_record`` does into the
record, so that both say the same thing.
"""

from __future__ import annotations

from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from authz.check.decision import Decision
from authz.check.request import RequestView
from authz.errors import AuditUnavailable
from authz.observability.answer import Answer
from authz.observability.audit_record import redact
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

__all__ = ["audit_unavailable", "end_span"]


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
