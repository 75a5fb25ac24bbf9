"""What an allow takes off the request because authz did not check it.

An upstream that reads more than authz judged can be led past the rules:

- **Credentials authz did not verify.** On a public route, or an optional one
  the request took without a Bearer token, an ``Authorization`` header reaches
  the upstream unverified: signed by any key, for anyone. So does an
  ``access_token`` query parameter, which authz never reads (tokens in URLs end
  up in logs). An upstream that decodes the token itself would trust a forged
  identity. By default (a route's ``unverified_credentials: remove``) an allow
  removes both: the header, and every query parameter whose name is
  ``access_token`` in any spelling (letter case, percent-escapes); ``forward``
  passes them on.
- **Method overrides.** ``X-HTTP-Method-Override``, ``X-HTTP-Method``,
  ``X-Method-Override`` and a ``_method`` query parameter make Express,
  Symfony, Laravel or Rails run another method than the one authz judged (a
  GET allowed for readers becoming a DELETE). ``method_overrides: remove`` (the
  default) takes them off an allowed request; ``refuse`` denies a request that
  carries one (400 ``invalid_request``); ``forward`` passes them on, for
  upstreams known to ignore them.

Envoy removes query parameters by name after splitting the query at ``&``,
comparing names as written (``access%5Ftoken`` is not ``access_token`` to it),
so the names given back are spelled as the client wrote them; which names are
a token or an override is judged on the decoded, case-folded name, as servers
read them. A name that only a ``;`` separates from the parameter before it
(``a=1;access_token=…``) is one Envoy cannot remove (it is part of another
value): such a request is refused unless ``forward``.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import unquote

from authz.check.request import RequestView
from authz.errors import InvalidRequest

__all__ = ["METHOD_OVERRIDE_HEADERS", "Removal", "unchecked"]

METHOD_OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")
_TOKEN = "access_token"  # noqa: S105 - a parameter name, not a secret
_METHOD = "_method"

Removal = tuple[tuple[str, ...], tuple[str, ...]]  # (headers, query parameter names as written)
_NOTHING: Removal = ((), ())


def unchecked(
    request: RequestView,
    *,
    credential_verified: bool,
    credentials: Literal["remove", "forward"],
    method_overrides: Literal["remove", "refuse", "forward"],
    refuse: bool = True,
) -> Removal:
    """(headers, query parameters) an allow of ``request`` removes; InvalidRequest
    for what cannot be removed and must not pass. ``refuse=False`` (a dry run's
    allow): never raise, remove what can be removed."""
    if not refuse and method_overrides == "refuse":
        method_overrides = "remove"
    headers: list[str] = []
    names: list[str] = []
    if credentials == "remove" and not credential_verified and request.header("authorization"):
        headers.append("authorization")
    if method_overrides != "forward":
        sent = [name for name in METHOD_OVERRIDE_HEADERS if request.header(name)]
        if sent and method_overrides == "refuse":
            raise InvalidRequest(f"method override header {sent[0]} is not accepted")
        headers.extend(sent)
    query = request.path.partition("?")[2]
    if query and ("_" in query or "%" in query):  # neither name without "_" or an escape
        names = _query_names(query, credentials, method_overrides, refuse)
    if not headers and not names:
        return _NOTHING
    return tuple(headers), tuple(names)


def _query_names(query: str, credentials: str, method_overrides: str, refuse: bool) -> list[str]:
    names: list[str] = []
    for part in query.split("&"):
        # Servers that also split at ";" read a name there; Envoy does not.
        pieces = part.split(";")
        for piece in pieces:
            written = piece.split("=", 1)[0]
            decoded = unquote(written, errors="replace")
            kind = _kind(decoded)
            if kind is None:
                continue
            policy = credentials if kind == _TOKEN else method_overrides
            if policy == "forward":
                continue
            if len(pieces) > 1 and not refuse:
                continue  # cannot be removed; only a dry run lets it through
            if policy == "refuse" or len(pieces) > 1:
                what = "a token in the URL" if kind == _TOKEN else "a method override"
                raise InvalidRequest(f"{what} (query parameter {decoded!r}) is not accepted")
            names.append(written)
    return list(dict.fromkeys(names))


def _kind(name: str) -> str | None:
    folded = name.strip().lower()
    if folded == _TOKEN:
        return _TOKEN
    if folded == _METHOD:
        return _METHOD
    return None
