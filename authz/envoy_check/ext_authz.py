"""The ext_authz filter's settings: fail closed, every header shown, time enough for keys."""

from __future__ import annotations

import re
from collections.abc import Sequence

from authz.envoy_check.base import ENVOY_TIMEOUT_SECONDS, TIMEOUT_MARGIN_SECONDS, CheckerBase
from authz.envoy_check.yaml_nodes import At, shown, value_of

__all__ = ["ExtAuthzChecks"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")
# envoy.type.v3.StatusCode: the names status_on_error.code may be given by.
_STATUS_CODES = {
    "Continue": 100, "OK": 200, "Created": 201, "Accepted": 202,
    "NonAuthoritativeInformation": 203, "NoContent": 204, "ResetContent": 205,
    "PartialContent": 206, "MultiStatus": 207, "AlreadyReported": 208, "IMUsed": 226,
    "MultipleChoices": 300, "MovedPermanently": 301, "Found": 302, "SeeOther": 303,
    "NotModified": 304, "UseProxy": 305, "TemporaryRedirect": 307, "PermanentRedirect": 308,
    "BadRequest": 400, "Unauthorized": 401, "PaymentRequired": 402, "Forbidden": 403,
    "NotFound": 404, "MethodNotAllowed": 405, "NotAcceptable": 406,
    "ProxyAuthenticationRequired": 407, "RequestTimeout": 408, "Conflict": 409, "Gone": 410,
    "LengthRequired": 411, "PreconditionFailed": 412, "PayloadTooLarge": 413,
    "URITooLong": 414, "UnsupportedMediaType": 415, "RangeNotSatisfiable": 416,
    "ExpectationFailed": 417, "MisdirectedRequest": 421, "UnprocessableEntity": 422,
    "Locked": 423, "FailedDependency": 424, "UpgradeRequired": 426,
    "PreconditionRequired": 428, "TooManyRequests": 429, "RequestHeaderFieldsTooLarge": 431,
    "InternalServerError": 500, "NotImplemented": 501, "BadGateway": 502,
    "ServiceUnavailable": 503, "GatewayTimeout": 504, "HTTPVersionNotSupported": 505,
    "VariantAlsoNegotiates": 506, "InsufficientStorage": 507, "LoopDetected": 508,
    "NotExtended": 510, "NetworkAuthenticationRequired": 511,
}  # fmt: skip


def _duration(node: At) -> float | None:
    match = _DURATION.match(str(value_of(node)))
    return float(match[1]) if match else None


def _status_code(node: At | None) -> int | None:
    value = value_of(node)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return _STATUS_CODES.get(value) if isinstance(value, str) else None


def _matches(matcher: At, name: str) -> bool:
    """Whether an Envoy StringMatcher takes the lower-case header ``name``."""
    ignore_case = value_of(matcher.get("ignore_case")) is True
    subject = name.lower() if ignore_case else name
    for kind in ("exact", "prefix", "suffix", "contains"):
        wanted = value_of(matcher.get(kind))
        if isinstance(wanted, str):
            wanted = wanted.lower() if ignore_case else wanted
            if kind == "exact":
                return subject == wanted
            if kind == "prefix":
                return subject.startswith(wanted)
            if kind == "suffix":
                return subject.endswith(wanted)
            return wanted in subject
    regex = value_of(matcher.path("safe_regex", "regex"))
    if isinstance(regex, str):
        try:
            return re.fullmatch(regex, subject, re.IGNORECASE if ignore_case else 0) is not None
        except re.error:
            return False
    return False


def _takes_all(patterns: list[At], names: Sequence[str]) -> bool:
    return all(any(_matches(pattern, name) for pattern in patterns) for name in names)


def _takes_any(patterns: list[At], names: Sequence[str]) -> bool:
    return any(any(_matches(pattern, name) for pattern in patterns) for name in names)


class ExtAuthzChecks(CheckerBase):
    """One ext_authz filter of an HTTP connection manager."""

    def ext_authz(self, item: At) -> None:
        config = item.get("typed_config")
        assert config is not None
        self.filter_disabled(item)
        node = config.get("failure_mode_allow")
        if value_of(node) is True:
            assert node is not None
            self.add(
                node.line,
                "ext_authz failure_mode_allow is true",
                "when authz is unreachable, failing or too slow, every request goes through "
                "unchecked; set false (fail closed)",
            )
        self.status_on_error(config)
        self.timeout(config)
        for key, wanted in (("allowed_headers", True), ("disallowed_headers", False)):
            node = config.get(key)
            if node is not None:
                self.headers_sent(node, key, wanted)
                self.add(
                    node.line,
                    f"ext_authz {key} set",
                    "authz is not shown every request header, so it cannot keep its identity "
                    "headers within Envoy's header limits: an allow that does not fit is "
                    "Envoy's 500 instead of authz's 431; leave it out (of the other headers "
                    "authz records none but x-request-id)",
                )
        self.raw_headers(config)

    def filter_disabled(self, item: At) -> None:
        """The filter entry's own ``disabled``, whatever delivers its settings."""
        disabled = item.get("disabled")
        if disabled is not None and value_of(disabled) is True:
            self.add(
                disabled.line,
                "ext_authz filter is disabled",
                "it then runs only on routes that enable it: every other route reaches its "
                "upstream without asking authz",
            )

    def raw_headers(self, config: At) -> None:
        node = config.get("encode_raw_headers")
        if value_of(node) is True or config.get("grpc_service") is None:
            return
        self.add(
            config.line if node is None else node.line,
            "ext_authz encode_raw_headers absent (Envoy's default is false)"
            if node is None
            else f"ext_authz encode_raw_headers is {shown(node)}",
            "Envoy then joins repeated headers into one before authz sees them, and authz "
            "counts fewer headers than Envoy does against its header limits: an allow that "
            "does not fit is Envoy's 500 instead of authz's 431; set true",
        )

    def status_on_error(self, config: At) -> None:
        node = config.get("status_on_error")
        code_node = node.get("code") if node else None
        code = _status_code(code_node)
        if code is None:
            self.add(
                config.line if node is None else node.line,
                "ext_authz status_on_error absent (Envoy's default is 403)"
                if node is None
                else f"ext_authz status_on_error is {value_of(code_node)!r}",
                "when authz cannot be asked, clients and dashboards see authz's own deny; "
                "set status_on_error: {code: ServiceUnavailable} (503)",
            )
            return
        if code >= 500:
            return
        if code in (401, 403):
            why = "authz's own deny status: an outage would look like a policy decision"
        elif code < 400:
            why = "a success or redirect status: an outage would look like an answer"
        else:
            why = "a client error: an outage would look like the client's fault, not retried"
        assert code_node is not None
        self.add(code_node.line, f"ext_authz status_on_error is {code}", why + "; use 503")

    def timeout(self, config: At) -> None:
        service = config.get("grpc_service")
        if service is None:
            if config.get("http_service") is not None:
                self.add(
                    config.line,
                    "ext_authz uses http_service",
                    "authz serves the gRPC ext_authz API only; use grpc_service",
                )
            return
        need = self.kid_wait + TIMEOUT_MARGIN_SECONDS
        source = "" if self.config else " by default; pass -c for yours"
        node = service.get("timeout")
        seconds = ENVOY_TIMEOUT_SECONDS if node is None else _duration(node)
        wait = (
            f"authz may wait {self.kid_wait:g} s for new keys after an unknown kid "
            f"(fetch.unknown_kid_wait_seconds{source}), plus {TIMEOUT_MARGIN_SECONDS:g} s"
        )
        if node is None:
            self.add(
                service.line,
                f"ext_authz grpc_service.timeout absent (Envoy's default is {seconds:g}s)",
                f"state it, at least {need:g}s: {wait}",
            )
        elif seconds is None or seconds < need - 1e-9:
            self.add(
                node.line,
                f"ext_authz grpc_service.timeout is {shown(node)}",
                f"shorter than {need:g}s: {wait}; past the timeout Envoy answers "
                "status_on_error instead of authz",
            )

    def headers_sent(self, node: At, key: str, wanted: bool) -> None:
        patterns = node.get("patterns")
        listed = patterns.items() if patterns else []
        ns = self.namespace
        members = [ns, f"{ns}subject", f"{ns}email", f"{ns}zz-forged"]
        if wanted:
            missing_token = not _takes_all(listed, ["authorization"])
            missing_ns = not _takes_all(listed, members)
        else:
            missing_token = _takes_any(listed, ["authorization"])
            missing_ns = _takes_any(listed, members)
        verb = "leaves out" if wanted else "holds back"
        if missing_token:
            self.add(
                node.line,
                f"ext_authz {key} {verb} authorization",
                "authz never sees the token: every request that needs one is denied",
            )
        if missing_ns:
            self.add(
                node.line,
                f"ext_authz {key} {verb} the {ns}* headers",
                f"authz removes a client's {ns}* headers only if it sees them: a forged one "
                f"it does not set (e.g. {ns}email) reaches the upstream; send authz "
                f"prefix: {ns}",
            )
