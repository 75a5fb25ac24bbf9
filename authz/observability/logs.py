"""The service's own logs: one JSON object per line on stderr.

Logs say what the service is doing (start, configuration, keys, errors);
decisions belong to the audit trail on stdout or in a file. Keeping the two
on different streams lets Kubernetes, or a shell, route them apart.

Each line has ``time``, ``level``, ``logger`` and ``msg``; values passed with
``extra={...}`` become fields of their own; a line logged while a traced
Check runs carries its ``trace_id`` and ``span_id``; an exception adds
``exc_type`` and ``traceback``. As a last fence, anything shaped like a JWT is
replaced by ``[redacted]`` before the line is written.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

from opentelemetry import trace

from authz.observability.audit_record import redact, timestamp

__all__ = ["JsonFormatter", "configure_logging"]

# Attributes every LogRecord has; anything else came from ``extra``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_MAX_MESSAGE = 8192


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage(), _MAX_MESSAGE),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = redact(value, _MAX_MESSAGE) if isinstance(value, str) else value
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            entry["trace_id"] = f"{context.trace_id:032x}"
            entry["span_id"] = f"{context.span_id:016x}"
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__
            entry["traceback"] = redact(self.formatException(record.exc_info), _MAX_MESSAGE)
        return json.dumps(entry, default=str)


def configure_logging(level: str, fmt: str = "json", stream: TextIO | None = None) -> None:
    """Replace the root logger's handlers with one writing ``fmt`` ("json" or "text")."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
