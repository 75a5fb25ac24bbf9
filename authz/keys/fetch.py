"""Fetching JSON documents (JWKS, OIDC discovery) from an identity provider.

Everything about the exchange is bounded: connect and read timeouts, a total
deadline (a server dripping bytes cannot hold a fetch open), a response size
cap, no redirects, TLS verified against the system CAs or a configured bundle.
httpx is used for its asyncio client with per-phase timeouts and streaming.

No proxy is taken from the environment (a fetch of keys must not change route
because a variable was set for something else); ``fetch.proxy`` opts in to
one, for clusters whose egress goes through an HTTP(S) proxy.

Every fetch is a CLIENT span (OpenTelemetry's HTTP client conventions) on the
server's tracer, so slow or failing identity providers show in the traces.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from authz.config.models import FetchConfig

__all__ = ["FetchError", "FetchErrorKind", "Fetched", "HttpFetcher", "max_age"]

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d{1,10})\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-cache|no-store)\s*(?:,|$)", re.IGNORECASE)


FetchErrorKind = Literal[
    "timeout",  # a connect, read or total deadline passed
    "connect",  # no connection, or it broke before a whole reply arrived
    "tls",  # the handshake or the CA bundle failed
    "http_status",  # a reply other than 200
    "too_large",  # more than max_response_bytes
    "not_json",  # the body is not UTF-8 JSON
    "token",  # the service account token to send could not be read
    "discovery",  # the discovery document cannot lead to a JWKS
    "no_source",  # the issuer has nothing to fetch
]


class FetchError(Exception):
    """A fetch failed; the message names the URL and the problem (never a body).

    ``kind`` says what failed, so that callers (metrics, status) decide on it
    rather than on the wording of the message.
    """

    def __init__(self, message: str, kind: FetchErrorKind) -> None:
        super().__init__(message)
        self.kind: FetchErrorKind = kind


@dataclass(frozen=True, slots=True)
class Fetched:
    document: Any
    max_age: float | None  # seconds from Cache-Control, None when absent


def max_age(cache_control: str | None) -> float | None:
    """Seconds of freshness from a Cache-Control header; 0 for no-cache/no-store."""
    if not cache_control:
        return None
    if _NO_CACHE.search(cache_control):
        return 0.0
    match = _MAX_AGE.search(cache_control)
    return float(match.group(1)) if match else None


class HttpFetcher:
    def __init__(
        self, fetch: FetchConfig, ca_file: Path | None = None, tracer: Tracer | None = None
    ) -> None:
        self._fetch = fetch
        self._tracer = tracer if tracer is not None else trace.NoOpTracer()
        if ca_file is not None:
            try:
                context = ssl.create_default_context(cafile=str(ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise FetchError(f"CA bundle {ca_file}: {exc}", "tls") from None
        else:
            context = ssl.create_default_context()
        self._client = httpx.AsyncClient(
            verify=context,
            timeout=httpx.Timeout(
                connect=fetch.connect_timeout_seconds,
                read=fetch.read_timeout_seconds,
                write=fetch.read_timeout_seconds,
                pool=fetch.connect_timeout_seconds,
            ),
            follow_redirects=False,
            # Deterministic: no proxy or CA settings picked up from the environment.
            trust_env=False,
            proxy=fetch.proxy,
            headers={"accept": "application/json", "user-agent": "authz"},
        )
        self._deadline = fetch.connect_timeout_seconds + 2 * fetch.read_timeout_seconds

    async def get_json(self, url: str, headers: Mapping[str, str] | None = None) -> Fetched:
        with self._tracer.start_as_current_span(
            "GET",
            kind=SpanKind.CLIENT,
            attributes={"http.request.method": "GET", "url.full": url},
            record_exception=False,  # the FetchError's message is the status description
            set_status_on_exception=False,
        ) as span:
            try:
                fetched = await self._get_json(url, headers, span)
            except FetchError as exc:
                span.set_attribute("error.type", type(exc.__cause__ or exc).__name__)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                raise
            return fetched

    async def _get_json(
        self, url: str, headers: Mapping[str, str] | None, span: trace.Span
    ) -> Fetched:
        try:
            async with asyncio.timeout(self._deadline):
                return await self._get(url, headers, span)
        except TimeoutError:
            raise FetchError(f"{url}: timed out after {self._deadline:.1f}s", "timeout") from None
        except httpx.TimeoutException as exc:
            raise FetchError(f"{url}: timed out ({type(exc).__name__})", "timeout") from None
        except httpx.HTTPError as exc:
            kind = _transport_kind(exc)
            raise FetchError(f"{url}: {type(exc).__name__}: {exc}", kind) from None
        except ssl.SSLError as exc:
            raise FetchError(f"{url}: TLS: {exc}", "tls") from None
        except OSError as exc:
            raise FetchError(f"{url}: {exc}", _transport_kind(exc)) from None

    async def _get(self, url: str, headers: Mapping[str, str] | None, span: trace.Span) -> Fetched:
        cap = self._fetch.max_response_bytes
        async with self._client.stream("GET", url, headers=dict(headers or {})) as reply:
            span.set_attribute("http.response.status_code", reply.status_code)
            if reply.status_code != 200:
                raise FetchError(f"{url}: HTTP {reply.status_code}", "http_status")
            declared = reply.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > cap:
                raise FetchError(f"{url}: response of {declared} bytes exceeds {cap}", "too_large")
            body = bytearray()
            async for chunk in reply.aiter_bytes():
                body += chunk
                if len(body) > cap:
                    raise FetchError(f"{url}: response exceeds {cap} bytes", "too_large")
            freshness = max_age(reply.headers.get("cache-control"))
        try:
            document = json.loads(bytes(body).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise FetchError(f"{url}: response is not UTF-8 JSON", "not_json") from None
        return Fetched(document=document, max_age=freshness)

    async def aclose(self) -> None:
        await self._client.aclose()


def _transport_kind(exc: BaseException) -> FetchErrorKind:
    """``timeout`` when the transport error came from a timeout (a socket's
    ETIMEDOUT wrapped by httpx, say), ``tls`` from a failed handshake,
    ``connect`` otherwise."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, TimeoutError | httpx.TimeoutException):
            return "timeout"
        if isinstance(cause, ssl.SSLError):
            return "tls"
        cause = cause.__cause__ or cause.__context__
    return "connect"
