"""A CheckRequest reduced to what a decision needs, as an immutable view.

Envoy sends headers either as ``headers`` (a map: lower-case keys, duplicate
headers joined with ",") or, with ``encode_raw_headers``, as ``header_map``
(raw bytes, duplicates kept). Both become ``headers``: name -> tuple of values.

The view also counts them once, as Envoy does (header_budget.py):
``header_count`` lines and ``header_bytes``, the UTF-8 bytes of every name and
value; the size limits and the header budget read these instead of walking
the headers again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter

from authz._proto.envoy.config.core.v3 import base_pb2
from authz._proto.envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2

__all__ = ["RequestView", "each_header", "view"]

_KEY_AND_RAW_VALUE = attrgetter("key", "raw_value")


@dataclass(frozen=True, slots=True)
class RequestView:
    method: str = ""
    path: str = ""
    host: str = ""
    scheme: str = ""
    protocol: str = ""
    headers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    source_address: str = ""
    source_principal: str = ""
    # The client's TLS certificate as Envoy sends it (URL-encoded PEM; the
    # ext_authz filter's include_peer_certificate), "" without one.
    peer_certificate: str = ""
    context_extensions: Mapping[str, str] = field(default_factory=dict)
    # Counted from ``headers`` when not given: views built by hand (explain's from
    # the command line, check-envoy's probes of a route, tests).
    header_count: int = -1
    header_bytes: int = -1

    def __post_init__(self) -> None:
        if self.header_count < 0 or self.header_bytes < 0:
            count, size = _measure(self.headers)
            object.__setattr__(self, "header_count", count)
            object.__setattr__(self, "header_bytes", size)

    def header(self, name: str) -> tuple[str, ...]:
        """Every value of a header (lower-case ``name``); empty when absent."""
        return self.headers.get(name, ())

    @property
    def request_id(self) -> str:
        values = self.header("x-request-id")
        return values[0] if len(values) == 1 else ""

    @property
    def path_without_query(self) -> str:
        return self.path.split("?", 1)[0]


def view(request: external_auth_pb2.CheckRequest) -> RequestView:
    attributes = request.attributes
    http = attributes.request.http
    headers, count, size = _headers(http)
    return RequestView(
        method=http.method,
        path=http.path,
        host=http.host,
        scheme=http.scheme,
        protocol=http.protocol,
        headers=headers,
        source_address=_address(attributes.source),
        source_principal=attributes.source.principal,
        peer_certificate=attributes.source.certificate,
        context_extensions=dict(attributes.context_extensions),
        header_count=count,
        header_bytes=size,
    )


def _headers(
    http: attribute_context_pb2.AttributeContext.HttpRequest,
) -> tuple[dict[str, tuple[str, ...]], int, int]:
    """The headers, how many lines, and their bytes (names and values) as Envoy has them."""
    raw = http.header_map.headers
    if raw:
        return each_header(raw)
    headers: dict[str, tuple[str, ...]] = {}
    size = 0
    fields = http.headers
    for name in fields:  # not .items(): the protobuf map's items view iterates in Python
        value = fields[name]
        headers[name.lower()] = (value,)
        size += len(name) + len(value)
        if not (name.isascii() and value.isascii()):
            size += _utf8(name) - len(name) + _utf8(value) - len(value)
    return headers, len(headers), size


def each_header(
    raw: Iterable[base_pb2.HeaderValue],
) -> tuple[dict[str, tuple[str, ...]], int, int]:
    """``header_map`` header by header: any header, including repeats, empty
    values, values sent as ``value`` and names that are not ASCII."""
    collected: dict[str, tuple[str, ...]] = {}
    size = count = 0
    for header in raw:
        count += 1
        key = header.key
        raw_value = header.raw_value
        # raw_value carries bytes; anything not UTF-8 is replaced and so can
        # never look like a valid token or identity value.
        value = raw_value.decode("utf-8", "replace") if raw_value else header.value
        size += _utf8(key) + (len(raw_value) if raw_value else _utf8(value))
        name = key.lower()
        earlier = collected.get(name)
        collected[name] = (value,) if earlier is None else (*earlier, value)
    return collected, count, size


def _measure(headers: Mapping[str, tuple[str, ...]]) -> tuple[int, int]:
    count = size = 0
    for name, values in headers.items():
        count += len(values)
        size += _utf8(name) * len(values) + sum(_utf8(value) for value in values)
    return count, size


def _utf8(text: str) -> int:
    """Bytes of ``text`` in UTF-8; a replacement character counts as its 3 bytes."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _address(peer: attribute_context_pb2.AttributeContext.Peer) -> str:
    address = peer.address
    if address.HasField("socket_address"):
        socket = address.socket_address
        host = f"[{socket.address}]" if ":" in socket.address else socket.address
        return f"{host}:{socket.port_value}"
    if address.HasField("pipe"):
        return f"unix:{address.pipe.path}"
    return ""
