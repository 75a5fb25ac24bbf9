"""Fetching from an identity provider: each fetch is a span; a proxy only when configured."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from authz.config.models import FetchConfig
from authz.dev.keys import PrivateKey
from authz.dev.loopback import LoopbackServer, QuietHandler
from authz.keys.fetch import FetchError, HttpFetcher
from tests.keys.conftest import jwks
from tests.support.idp import JWKS_PATH, FakeIdP, LoopbackCA


class ForwardProxy:
    """A plain HTTP forward proxy on loopback that records what it was asked for."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        proxy = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                proxy.seen.append(self.path)  # absolute-form: the whole URL
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                with opener.open(self.path, timeout=10) as reply:
                    self.reply(200, "application/json", reply.read())

        self._server = LoopbackServer(Handler)

    @property
    def url(self) -> str:
        return self._server.url

    def __enter__(self) -> ForwardProxy:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    with ForwardProxy() as running:
        yield running


@pytest.fixture
def plain_idp(signing_keys: dict[str, PrivateKey]) -> Iterator[FakeIdP]:
    """Over plain HTTP: what a forward proxy relays (HTTPS would be a CONNECT tunnel)."""
    server = FakeIdP().start()
    server.jwks = jwks(signing_keys, "k1")
    yield server
    server.stop()


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _fetch(fetcher: HttpFetcher, url: str) -> object:
    async def run() -> object:
        try:
            return (await fetcher.get_json(url)).document
        finally:
            await fetcher.aclose()

    return asyncio.run(run())


def test_a_fetch_is_a_client_span(
    idp: FakeIdP, test_ca: LoopbackCA, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    url = idp.url + JWKS_PATH
    _fetch(HttpFetcher(FetchConfig(), test_ca.ca_file, tracer=provider.get_tracer("t")), url)
    (span,) = exporter.get_finished_spans()
    assert (span.name, span.kind, span.status.status_code) == (
        "GET",
        SpanKind.CLIENT,
        StatusCode.UNSET,
    )
    assert span.attributes is not None
    assert span.attributes["url.full"] == url
    assert span.attributes["http.response.status_code"] == 200


def test_a_failed_fetch_is_an_error_span(
    idp: FakeIdP, test_ca: LoopbackCA, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    idp.mode = "fail"
    fetcher = HttpFetcher(FetchConfig(), test_ca.ca_file, tracer=provider.get_tracer("t"))
    with pytest.raises(FetchError):
        _fetch(fetcher, idp.url + JWKS_PATH)
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert "HTTP 500" in str(span.status.description)
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 500
    assert span.attributes["error.type"] == "FetchError"


@pytest.mark.parametrize(
    ("mode", "kind"),
    [
        ("fail", "http_status"),
        ("garbage", "not_json"),
        ("huge", "too_large"),
        ("stall", "timeout"),
    ],
)
def test_a_failed_fetch_says_what_kind_of_failure(
    idp: FakeIdP, test_ca: LoopbackCA, mode: str, kind: str
) -> None:
    idp.mode = mode
    fetch = FetchConfig(read_timeout_seconds=0.3, max_response_bytes=100_000)
    with pytest.raises(FetchError) as raised:
        _fetch(HttpFetcher(fetch, test_ca.ca_file), idp.url + JWKS_PATH)
    idp.release()
    assert raised.value.kind == kind


def test_an_unknown_ca_is_a_tls_failure(idp: FakeIdP, other_ca: LoopbackCA) -> None:
    with pytest.raises(FetchError) as raised:
        _fetch(HttpFetcher(FetchConfig(), other_ca.ca_file), idp.url + JWKS_PATH)
    assert raised.value.kind == "tls"


def test_a_closed_port_is_a_connect_failure(test_ca: LoopbackCA) -> None:
    with pytest.raises(FetchError) as raised:
        _fetch(HttpFetcher(FetchConfig(), test_ca.ca_file), "https://127.0.0.1:9/jwks.json")
    assert raised.value.kind == "connect"


def test_a_configured_proxy_carries_the_fetch(plain_idp: FakeIdP, proxy: ForwardProxy) -> None:
    url = plain_idp.url + JWKS_PATH
    document = _fetch(HttpFetcher(FetchConfig(proxy=proxy.url)), url)
    assert document == plain_idp.jwks
    assert proxy.seen == [url]


def test_the_environment_proxy_is_not_used(
    plain_idp: FakeIdP, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert _fetch(HttpFetcher(FetchConfig()), plain_idp.url + JWKS_PATH) == plain_idp.jwks
    assert proxy.seen == []


@pytest.mark.parametrize("proxy_url", ["socks5://p:1080", "proxy:3128", "http://u:p@proxy:3128"])
def test_a_proxy_is_an_http_or_https_url_without_credentials(proxy_url: str) -> None:
    with pytest.raises(ValueError, match="proxy"):
        FetchConfig(proxy=proxy_url)
