"""What the client got for one Check: authz's answer, or Envoy's own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from authz.check.result import Decision

__all__ = ["DEADLINE_UNCERTAIN", "Answer", "AnswerKind"]

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
