"""One trace drawn as a waterfall in the terminal: each span a bar on a shared time axis.

Spans are shown as a tree (children under their parent, in start order), each
with its service, name, a bar placed where it ran within the trace, and its
duration. authz's Check span also shows its steps (the ``authz.*`` span events:
extract, verify, policy, identity …), each with its outcome and duration, so
the auth step's cost is visible inside the request it belongs to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from authz.check.steps import STEP_PREFIX
from authz.dev.otlp import ReceivedSpan, attributes

__all__ = ["waterfall"]

WIDTH = 40
_LABEL = 58


def _bar(start: int, end: int, origin: int, total: int, fill: str) -> str:
    first = min(WIDTH - 1, (start - origin) * WIDTH // total)
    last = max(first + 1, min(WIDTH, -(-(end - origin) * WIDTH // total)))
    return " " * first + fill * (last - first) + " " * (WIDTH - last)


def _ms(nanoseconds: float) -> str:
    return f"{nanoseconds / 1e6:8.3f} ms"


def waterfall(spans: Sequence[ReceivedSpan], trace_id: str) -> list[str]:
    """The lines of the waterfall of ``trace_id`` among ``spans`` (empty if none)."""
    mine = [span for span in spans if span.trace_id == trace_id]
    if not mine:
        return []
    ids = {span.span_id for span in mine}
    children: dict[str, list[ReceivedSpan]] = {}
    roots: list[ReceivedSpan] = []
    for span in sorted(mine, key=lambda s: s.span.start_time_unix_nano):
        if span.parent_span_id and span.parent_span_id in ids:
            children.setdefault(span.parent_span_id, []).append(span)
        else:
            roots.append(span)
    origin = min(span.span.start_time_unix_nano for span in mine)
    end = max(span.span.end_time_unix_nano for span in mine)
    total = max(end - origin, 1)
    lines = [f"trace {trace_id}  ({_ms(total).strip()} end to end)"]

    def draw(span: ReceivedSpan, depth: int) -> None:
        label = f"{span.service:<8} {'  ' * depth}{span.name}"
        start, stop = span.span.start_time_unix_nano, span.span.end_time_unix_nano
        bar = _bar(start, stop, origin, total, "█")
        lines.append(f"{label[:_LABEL]:<{_LABEL}} |{bar}| {_ms(stop - start)}")
        for event in span.span.events:
            if event.name.startswith(STEP_PREFIX):
                lines.append(_step(event, depth + 1, origin, total))
        for child in children.get(span.span_id, []):
            draw(child, depth + 1)

    for root in roots:
        draw(root, 0)
    return lines


def _step(event: Any, depth: int, origin: int, total: int) -> str:
    details = attributes(event.attributes)
    duration_ns = float(details.get("authz.step.duration_ms", 0.0)) * 1e6
    stop = int(event.time_unix_nano)
    outcome = str(details.get("authz.step.outcome", ""))
    reason = details.get("authz.reason")
    name = event.name.removeprefix(STEP_PREFIX)
    label = f"{'':<8} {'  ' * depth}· {name} {outcome}{f' ({reason})' if reason else ''}"
    bar = _bar(stop - int(duration_ns), stop, origin, total, "▒")
    return f"{label[:_LABEL]:<{_LABEL}} |{bar}| {_ms(duration_ns)}"
