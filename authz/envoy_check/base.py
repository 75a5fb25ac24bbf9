"""What every check shares: a finding, Envoy's defaults, and authz's settings
that Envoy's are held to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from authz.config.models import Config, FetchConfig

if TYPE_CHECKING:
    from authz.check.policy import Policy

__all__ = [
    "DEFAULT_NAMESPACE",
    "ENVOY_MAX_HEADERS_COUNT",
    "ENVOY_MAX_REQUEST_HEADERS_KB",
    "ENVOY_TIMEOUT_SECONDS",
    "TIMEOUT_MARGIN_SECONDS",
    "CheckerBase",
    "Finding",
]

# The ext_authz timeout must exceed authz's wait for keys by this much.
TIMEOUT_MARGIN_SECONDS = 0.05
# Envoy's defaults.
ENVOY_TIMEOUT_SECONDS = 0.2
ENVOY_MAX_REQUEST_HEADERS_KB = 60
ENVOY_MAX_HEADERS_COUNT = 100
DEFAULT_NAMESPACE = "x-auth-"


@dataclass(frozen=True, order=True)
class Finding:
    """One unsafe or inconsistent setting, at the line of its key.

    ``what`` never holds ": ", so ``FILE:LINE: what: why`` splits unambiguously.
    """

    line: int
    what: str
    why: str

    def format(self, source: str) -> str:
        return f"{source}:{self.line}: {self.what}: {self.why}"


class CheckerBase:
    """The findings so far, and what the checks need of authz's configuration."""

    def __init__(self, config: Config | None) -> None:
        self.config = config
        self.findings: list[Finding] = []
        # What the file cannot show (loaded at run time) or the checks do not read.
        self.unchecked: list[tuple[int, str]] = []
        self.managers = 0
        self.namespace = config.identity.namespace if config else DEFAULT_NAMESPACE
        waits = [
            issuer.fetch.unknown_kid_wait_seconds
            for issuer in (config.issuers if config else ())
            if any(source.remote for source in issuer.keys)
        ]
        default_wait = FetchConfig.model_fields["unknown_kid_wait_seconds"].default
        self.kid_wait: float = max(waits, default=0.0) if config else float(default_wait)
        self._policy: Policy | None = None

    def add(self, line: int, what: str, why: str) -> None:
        self.findings.append(Finding(line, what, why))

    def not_checked(self, line: int, what: str) -> None:
        self.unchecked.append((line, what))

    @property
    def policy(self) -> Policy | None:
        if self.config is not None and self._policy is None:
            from authz.check.policy import Policy  # the rules, only when -c asks for them

            self._policy = Policy.from_config(self.config)
        return self._policy
