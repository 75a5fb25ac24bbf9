"""serving.service: what a Check's answer is recorded as, by where it lands against the deadline."""

from __future__ import annotations

import pytest

from authz.serving.service import _late


class Call:
    """The two things the handler reads of its RPC at the end: open? time left?"""

    def __init__(self, remaining: float | None, active: bool = True) -> None:
        self._remaining = remaining
        self._active = active

    def time_remaining(self) -> float | None:
        return self._remaining

    def is_active(self) -> bool:
        return self._active


@pytest.mark.parametrize(
    ("remaining", "active", "late"),
    [
        (None, True, None),  # no deadline: answered
        (0.2, True, None),  # well in time
        (0.006, True, None),
        (0.004, True, "deadline_uncertain"),  # Envoy's timer started a transit earlier
        (0.0, True, "deadline_uncertain"),  # past it by this clock, the call still open
        (0.0, False, "deadline_exceeded"),  # Envoy reset it at its deadline
        (0.05, False, "deadline_exceeded"),  # ... which runs out a transit time early
        (0.2, False, "cancelled"),  # reset long before the deadline: the client left
        (None, False, "cancelled"),
    ],
)
def test_an_answer_is_recorded_by_where_it_lands(
    remaining: float | None, active: bool, late: str | None
) -> None:
    assert _late(Call(remaining, active)) == late  # type: ignore[arg-type]
