"""A CheckRequest reduced to what a decision needs, as an immutable view.

Envoy sends headers either as ``headers`` (a map: lower-case keys, duplicate
headers joined with ",") or, with ``encode_raw_headers``, as ``header_map``
(raw bytes, duplicates kept). Both become ``headers``: name -> tuple of values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from authz._proto.envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2

__all__ = ["RequestView", "view"]


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
    context_extensions: Mapping[str, str] = field(default_factory=dict)

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
    return RequestView(
        method=http.method,
        path=http.path,
        host=http.host,
        scheme=http.scheme,
        protocol=http.protocol,
        headers=_headers(http),
        source_address=_address(attributes.source),
        source_principal=attributes.source.principal,
        context_extensions=dict(attributes.context_extensions),
    )


def _headers(
    http: attribute_context_pb2.AttributeContext.HttpRequest,
) -> dict[str, tuple[str, ...]]:
    raw = http.header_map.headers
    if raw:
        collected: dict[str, list[str]] = {}
        for header in raw:
            # raw_value carries bytes; anything not UTF-8 is replaced and so can
            # never look like a valid token or identity value.
            value = (
                header.raw_value.decode("utf-8", "replace") if header.raw_value else header.value
            )
            collected.setdefault(header.key.lower(), []).append(value)
        return {name: tuple(values) for name, values in collected.items()}
    return {name.lower(): (value,) for name, value in http.headers.items()}


def _address(peer: attribute_context_pb2.AttributeContext.Peer) -> str:
    address = peer.address
    if address.HasField("socket_address"):
        socket = address.socket_address
        host = f"[{socket.address}]" if ":" in socket.address else socket.address
        return f"{host}:{socket.port_value}"
    if address.HasField("pipe"):
        return f"unix:{address.pipe.path}"
    return ""
