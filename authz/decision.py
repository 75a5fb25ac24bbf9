"""One Check, start to finish: the only module that calls the others.

Phases run in a fixed order, and the phase that fails decides the answer:
credentials (400/401) -> verification (401, or 503 without keys) -> identity.
Anything unexpected becomes a 503 deny with reason ``internal_error``;
nothing here ever allows by default.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from authz.config import Config
from authz.credentials import bearer
from authz.errors import AuthzError, InternalError, RequestTooLarge, UnknownKey
from authz.identity import identity_headers
from authz.request import RequestView
from authz.verify import VerifiedToken, fingerprint

__all__ = ["Decider", "Decision", "Refetch", "TokenVerifier"]

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


class TokenVerifier(Protocol):
    """What a decision needs from verification (``verify.Verifier``, or a fake)."""

    def verify(self, token: str) -> VerifiedToken: ...


# (issuer, seconds the Check can wait) -> True if keys were fetched anew.
Refetch = Callable[[str, float], Awaitable[bool]]


class Decider:
    def __init__(
        self, config: Config, verifier: TokenVerifier, refetch: Refetch | None = None
    ) -> None:
        self._config = config
        self._verifier = verifier
        self._refetch = refetch
        self._namespace = config.identity.namespace
        self._identity_names = tuple(config.identity.headers)

    async def decide(self, request: RequestView, budget: float = math.inf) -> Decision:
        """Decide one request; ``budget`` is how long it may wait (Envoy's deadline)."""
        token_text = ""
        try:
            self._check_size(request)
            token_text = bearer(request, self._config.max_token_bytes)
            token = await self._verify(token_text, budget)
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

    def _check_size(self, request: RequestView) -> None:
        count = sum(len(values) for values in request.headers.values())
        if count > self._config.max_request_headers:
            raise RequestTooLarge(
                f"{count} headers; the limit is {self._config.max_request_headers}"
            )
        size = sum(
            len(name) + sum(len(value) for value in values)
            for name, values in request.headers.items()
        )
        if size > self._config.max_request_header_bytes:
            raise RequestTooLarge(
                f"{size} bytes of headers; the limit is {self._config.max_request_header_bytes}"
            )

    async def _verify(self, token_text: str, budget: float) -> VerifiedToken:
        try:
            return self._verifier.verify(token_text)
        except UnknownKey as error:
            # A key rotated in since the last refresh: one shared, rate-limited
            # refetch, then one more try. Anything else is final.
            if self._refetch is None or not error.issuer:
                raise
            if not await self._refetch(error.issuer, budget):
                raise
            return self._verifier.verify(token_text)

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
