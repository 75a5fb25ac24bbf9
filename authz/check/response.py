"""Decision -> CheckResponse (statuses and reasons are errors.py's table).

A deny is always a DENIED response (``denied_response`` with a non-OK status),
never a failed RPC or an ``error_response``: only a DENIED reaches the client
as our status, challenge and body, and Envoy's ``failure_mode_allow`` can never
turn it into an allow.

Where a route takes DPoP tokens, a deny's ``WWW-Authenticate`` holds the DPoP
challenge (RFC 9449 §7.1) and, where the route takes Bearer tokens too, the
Bearer one: both in one header value, comma-separated (RFC 9110 §11.6.1).
One value, not two headers: Envoy sets a denied response's headers, so a
second header of the same name would replace the first. A nonce a deny asks
for, or a fresh one an allow hands out, is a ``DPoP-Nonce`` header.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from google.protobuf import struct_pb2
from google.rpc import code_pb2, status_pb2

from authz._proto.envoy.config.core.v3 import base_pb2
from authz._proto.envoy.service.auth.v3 import external_auth_pb2
from authz._proto.envoy.type.v3 import http_status_pb2
from authz.check.decision import Decision
from authz.errors import AuthzError, DpopNonceRequired, Forbidden
from authz.memo import BoundedMemo

__all__ = ["AllowParts", "DenyParts", "Encoded", "Parts", "build", "parts", "www_authenticate"]

# HTTP status of a deny -> google.rpc code Envoy sees in CheckResponse.status.
_GRPC_CODE = {
    400: code_pb2.INVALID_ARGUMENT,
    431: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    403: code_pb2.PERMISSION_DENIED,
    503: code_pb2.UNAVAILABLE,
}
_OK = status_pb2.Status(code=code_pb2.OK)
# The body's "error" when there is no RFC 6750 code for the deny.
_BODY_ERROR = {401: "unauthorized", 403: "forbidden"}


_Metadata = tuple[tuple[str, str | float], ...]


class AllowParts(NamedTuple):
    headers_to_set: tuple[tuple[str, str], ...]
    headers_to_remove: tuple[str, ...]
    metadata: _Metadata
    query_to_remove: tuple[str, ...] = ()
    # Headers for the client's response (a fresh DPoP-Nonce).
    response_headers: tuple[tuple[str, str], ...] = ()


class DenyParts(NamedTuple):
    code: int  # google.rpc code
    status: int  # HTTP
    headers: tuple[tuple[str, str], ...]
    body: str
    metadata: _Metadata


# What a response holds, as plain values. Equal parts make equal bytes, so the
# parts are the key of the encoded answers (an allow's fields can never equal
# a deny's: an allow starts with a tuple, a deny with an int).
Parts = AllowParts | DenyParts


def build(decision: Decision, realm: str) -> external_auth_pb2.CheckResponse:
    return _message(parts(decision, realm))


def parts(decision: Decision, realm: str) -> Parts:
    """Everything the response for ``decision`` says, as a hashable tuple."""
    metadata = _metadata(decision)
    error = decision.error
    if error is None:
        return AllowParts(
            decision.headers_to_set,
            decision.headers_to_remove,
            metadata,
            decision.query_to_remove,
            decision.response_headers,
        )
    headers = [("content-type", "application/json"), ("cache-control", "no-store")]
    challenge = _challenges(decision, error, realm)
    if challenge:
        headers.append(("www-authenticate", challenge))
    if isinstance(error, DpopNonceRequired) and error.nonce:
        headers.append(("dpop-nonce", error.nonce))
    code = _GRPC_CODE.get(error.status, code_pb2.PERMISSION_DENIED)
    return DenyParts(code, error.status, tuple(headers), _body(error), metadata)


class Encoded:
    """Answers built once: the serialized ``CheckResponse`` for each distinct
    response (the same token, route and removed headers give the same bytes).

    A warm Check then skips building and serializing the protobuf; the service
    hands the bytes to gRPC as they are. The key is the response's parts, plain
    values: equal parts are the same response, whichever Check built them. At
    most ``limit`` answers are kept (an answer and its key hold about 1 KiB),
    least recently used out first; the memo has its own lock.
    """

    __slots__ = ("_answers",)

    def __init__(self, limit: int = 1024) -> None:
        self._answers: BoundedMemo[Parts, bytes] = BoundedMemo(limit)

    def __call__(self, decision: Decision, realm: str) -> bytes:
        key = parts(decision, realm)
        answer = self._answers.get(key)
        if answer is None:
            answer = _message(key).SerializeToString()
            self._answers.put(key, answer)
        return answer

    def __len__(self) -> int:
        return len(self._answers)


def _message(parts: Parts) -> external_auth_pb2.CheckResponse:
    metadata = struct_pb2.Struct()
    metadata.update(dict(parts.metadata))
    if isinstance(parts, AllowParts):
        return external_auth_pb2.CheckResponse(
            status=_OK,
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=[_identity_header(name, value) for name, value in parts.headers_to_set],
                headers_to_remove=parts.headers_to_remove,
                query_parameters_to_remove=parts.query_to_remove,
                response_headers_to_add=[
                    _identity_header(name, value) for name, value in parts.response_headers
                ],
            ),
            dynamic_metadata=metadata,
        )
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=parts.code),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=parts.status),  # type: ignore[arg-type]
            headers=[_header(name, value) for name, value in parts.headers],
            body=parts.body,
        ),
        dynamic_metadata=metadata,
    )


def _challenges(decision: Decision, error: AuthzError, realm: str) -> str:
    """The deny's WWW-Authenticate value: Bearer, DPoP, or both."""
    challenge = decision.challenge
    if challenge is None:
        return www_authenticate(error, realm)
    bearer = ""
    if challenge.bearer == "error":
        bearer = www_authenticate(error, realm)
    elif challenge.bearer == "bare":
        bearer = f'Bearer realm="{realm}"'
    return ", ".join(value for value in (challenge.dpop, bearer) if value)


def www_authenticate(error: AuthzError, realm: str) -> str:
    """The RFC 6750 §3 challenge for a deny, or "" where none applies (503)."""
    if error.status not in (400, 401, 403, 431):
        return ""
    if error.status == 403 and error.rfc6750_error is None:
        # No route allows the request: no token would help, so no challenge.
        return ""
    parts = [f'Bearer realm="{realm}"']
    if error.rfc6750_error:
        parts.append(f'error="{error.rfc6750_error}"')
        parts.append(f'error_description="{error.description}"')
    if isinstance(error, Forbidden) and error.scope:
        parts.append(f'scope="{error.scope}"')
    return ", ".join(parts)


def _body(error: AuthzError) -> str:
    code = error.rfc6750_error or _BODY_ERROR.get(error.status, "unavailable")
    return json.dumps({"error": code, "error_description": error.description})


def _identity_header(name: str, value: str) -> base_pb2.HeaderValueOption:
    # Never the deprecated `append` (it comma-appends to a forged value). Envoy
    # 1.40 overwrites without append_action; earlier releases needed it, so it
    # is stated explicitly.
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=name, value=value),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def _header(name: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=name, value=value))


def _metadata(decision: Decision) -> _Metadata:
    # Read by Envoy's access log as %DYNAMIC_METADATA(envoy.filters.http.ext_authz:KEY)%:
    # what it needs to say who and why, nothing more.
    fields: dict[str, str | float] = {
        "decision": "allow" if decision.allowed else "deny",
        "status": decision.status,
        "reason": decision.reason,
    }
    if decision.issuer:
        fields["iss"] = decision.issuer
    if decision.token is not None and decision.token.subject is not None:
        fields["sub"] = decision.token.subject
    if decision.token_fingerprint:
        fields["token_fp"] = decision.token_fingerprint
    fields.update(_rule_metadata(decision))
    return tuple(fields.items())


def _rule_metadata(decision: Decision) -> dict[str, str]:
    """The route that decided, the first shadow route that would have denied, and
    a dry run's would-be deny, for access logs."""
    fields: dict[str, str] = {}
    if decision.route:
        fields["route"] = decision.route
        fields["mode"] = decision.mode
    denied = next((shadow for shadow in decision.shadows if not shadow.allowed), None)
    if denied is not None:
        fields["shadow_route"] = denied.route
        fields["shadow_denied"] = denied.reason
    if decision.dry_run is not None:
        fields["dry_run_denied"] = decision.dry_run.reason
    return fields
