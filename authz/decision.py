"""One Check, start to finish: the only module that calls the others.

Phases run in a fixed order, and the phase that fails decides the answer:
credentials (400/401) -> verification (401, or 503 without keys) -> identity.
Anything unexpected becomes a 503 deny with reason ``internal_error``;
nothing here ever allows by default.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from authz.config import Config
from authz.credentials import bearer
from authz.errors import AuthzError, InternalError
from authz.identity import identity_headers
from authz.request import RequestView
from authz.steps import step
from authz.verify import VerifiedToken, fingerprint

__all__ = ["Decider", "Decision", "TokenVerifier"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    status: int
    reason: str
    detail: str = ""
    error: AuthzError | None = None
    token: VerifiedToken | None = None
    token_fingerprint: str = ""
    headers_to_set: tuple[tuple[str, str], ...] = ()
    headers_to_remove: tuple[str, ...] = ()
    # The configured route that matched ("" when none did or routes are not
    # configured); a name from the configuration, so a bounded metric label.
    route: str = ""


class TokenVerifier(Protocol):
    """What a decision needs from verification (``verify.Verifier``, or a fake)."""

    def verify(self, token: str) -> VerifiedToken: ...


class Decider:
    def __init__(self, config: Config, verifier: TokenVerifier) -> None:
        self._config = config
        self._verifier = verifier
        self._namespace = config.identity.namespace
        self._identity_names = tuple(config.identity.headers)

    async def decide(self, request: RequestView) -> Decision:
        token_text = ""
        try:
            # Each phase is an event on the Check's span (authz.steps).
            with step("extract"):
                token_text = bearer(request, self._config.max_token_bytes)
            with step("verify"):
                token = self._verifier.verify(token_text)
            with step("identity"):
                headers = tuple(identity_headers(token.claims, self._config.identity))
        except AuthzError as error:
            return self._deny(error, token_text)
        except Exception as exc:
            log.exception("internal error while deciding")
            return self._deny(InternalError(f"{type(exc).__name__}"), token_text)
        return Decision(
            allowed=True,
            status=200,
            reason="allowed",
            token=token,
            token_fingerprint=fingerprint(token_text),
            headers_to_set=headers,
            headers_to_remove=self._headers_to_remove(request, headers),
        )

    def _headers_to_remove(
        self, request: RequestView, headers: tuple[tuple[str, str], ...]
    ) -> tuple[str, ...]:
        # Remove every client-sent header in the identity namespace, and every
        # configured identity header (in case Envoy's allowed_headers hid the
        # client's copy from us), except those we set: a set header overwrites.
        setting = {name for name, _ in headers}
        names = {name for name in request.headers if name.startswith(self._namespace)}
        names.update(self._identity_names)
        return tuple(sorted(names - setting))

    @staticmethod
    def _deny(error: AuthzError, token_text: str) -> Decision:
        return Decision(
            allowed=False,
            status=error.status,
            reason=error.reason,
            detail=error.detail,
            error=error,
            token_fingerprint=fingerprint(token_text) if token_text else "",
        )
