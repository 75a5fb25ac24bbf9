"""Envoy's request header limits, kept by every allow.

Envoy applies the header changes of an allowed Check to the request it holds
and then holds them against its own limits (``max_headers_count`` and
``max_request_headers_kb`` of the HTTP connection manager): past either, it
answers 500 with an empty body, although authz allowed the request and its
audit record says so. So authz refuses such a request itself, 431
``request_too_large``, and says why.

How Envoy 1.40 counts, measured through the real binary:

- every entry of its header map: the client's headers, the pseudo-headers
  (``:authority``, ``:method``, ``:path``, ``:scheme``) and those Envoy added
  before ext_authz (``x-forwarded-for``, ``x-forwarded-proto``,
  ``x-envoy-external-address``, ``x-request-id``) - exactly what ext_authz
  sends authz when no ``allowed_headers`` or ``disallowed_headers`` narrows
  it; each repeated header counts once per line, which only ``header_map``
  (``encode_raw_headers: true``) shows: the ``headers`` map joins repeats;
- size as the sum of each header's name and value in bytes, with no
  separators or per-header overhead, against ``max_request_headers_kb * 1024``;
- headers to set are applied before headers to remove, and the limits are
  checked after each change, so a header authz removes makes no room for one
  it sets: the peak is the request plus what authz sets.

Envoy checks nothing when an allow changes no header; authz checks every allow
all the same (it nearly always removes a header: its identity namespace),
refusing a request that is already past the limits.
"""

from __future__ import annotations

from collections.abc import Sequence

from authz.check.request import RequestView
from authz.config.models import EnvoyConfig
from authz.errors import RequestTooLarge

__all__ = ["check_header_budget"]


def check_header_budget(
    request: RequestView, headers: Sequence[tuple[str, str]], limits: EnvoyConfig
) -> None:
    """RequestTooLarge if Envoy would refuse ``request`` once ``headers`` are set."""
    # Envoy sends no count: so its configs must send every header, repeats kept (see
    # above); the view counted them once, lines and bytes (request.py).
    count, size = request.header_count, request.header_bytes
    added = grown = 0
    for name, value in headers:
        present = request.headers.get(name)
        if present:
            # Overwritten in place: the count stays; at most the value grows.
            grown += max(0, _bytes(value) - min(_bytes(old) for old in present))
        else:
            added += 1
            grown += _bytes(name) + _bytes(value)
    if count + added > limits.max_request_headers_count:
        raise RequestTooLarge(
            f"{count} request headers and {added} identity headers are {count + added} in "
            f"Envoy; its limit is {limits.max_request_headers_count} "
            "(envoy.max_request_headers_count)"
        )
    limit = limits.max_request_headers_kb * 1024
    if size + grown > limit:
        raise RequestTooLarge(
            f"{size} bytes of request headers and {grown} of identity headers are "
            f"{size + grown} in Envoy; its limit is {limit} (envoy.max_request_headers_kb: "
            f"{limits.max_request_headers_kb})"
        )


def _bytes(text: str) -> int:
    # A value Envoy sent as raw bytes that were not UTF-8 was decoded with
    # replacement characters, which re-encode longer: an overestimate, never less.
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
