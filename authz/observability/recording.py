"""How one configuration's decisions are recorded: the settings a record follows.

A ``Recording`` is part of the runtime snapshot a Check holds (runtime.py), so
a Check decided under one configuration is recorded under the same one, even
when a reload swaps the runtime while it is under way.
"""

from __future__ import annotations

from dataclasses import dataclass

from authz.config.models import Config

__all__ = ["Recording"]


@dataclass(frozen=True, slots=True)
class Recording:
    # Stamped on every record.
    config_version: str = ""
    # In a dry run every decision is also counted as a would-be outcome.
    dry_run: bool = False
    # What Envoy answered a Check it stopped waiting for (audit.late_status).
    late_status: int = 503
    # audit.on_sink_failure: deny — an unrecorded decision is answered 503.
    fail_closed: bool = False

    @classmethod
    def of(cls, config: Config) -> Recording:
        return cls(
            config_version=config.version,
            dry_run=config.dry_run,
            late_status=config.audit.late_status,
            fail_closed=config.audit.on_sink_failure == "deny",
        )
