"""``authz check-envoy``: the Envoy settings authz relies on, checked in a config file.

authz decides on what Envoy shows it, and the upstream acts on what Envoy
forwards. That is sound only if Envoy, in front of authz:

- fails closed: ``failure_mode_allow`` off, and an error status (503) that no
  one takes for success or for authz's own deny when authz cannot be asked;
- shows authz every request header, repeats kept (no ``allowed_headers``,
  ``encode_raw_headers: true``): the credential, the identity namespace, and
  all the others, which authz counts against Envoy's request header limits;
- has the header limits authz is told of (``envoy`` in authz's configuration),
  so that an allow whose identity headers do not fit is authz's 431, not
  Envoy's 500;
- normalizes the path (``normalize_path``, ``merge_slashes``) and refuses an
  encoded ``/`` or ``\\`` (``path_with_escaped_slashes_action``), so authz and
  the upstream read one path;
- refuses header names with ``_`` (``headers_with_underscores_action``), which
  CGI/WSGI servers fold into the dash spelling of authz's identity headers;
- at the edge, trusts no client's ``x-envoy-*`` headers, ``x-request-id`` or
  ``x-forwarded-for`` (``use_remote_address``, ``internal_address_config``);
- gives authz time to refetch keys after an unknown ``kid`` (the ext_authz
  timeout), and checks every route authz protects.

This module reads an Envoy bootstrap (YAML or JSON, ``static_resources``), or
a Kubernetes ConfigMap carrying one under ``data`` (also inside a multi-document
stream such as ``kubectl kustomize`` output), and reports each setting that
breaks one of these as ``FILE:LINE: what: why``. LINE is the offending key's
line, or the enclosing object's when a key is missing; for a config embedded
in a ConfigMap, lines are the ConfigMap file's (a block scalar, ``|``) or the
data key's (any other string style).

Which listeners are edges: every listener clients could reach, i.e. all but a
Unix socket (``pipe``), an Envoy internal listener, and one marked
``metadata: {filter_metadata: {authz: {edge: false}}}`` (e.g. one only your own
proxy connects to). A loopback address counts as an edge: port forwards and
local proxies bring outside traffic to it.

With authz's configuration (``-c``), the checks that need it run too: the
identity namespace in ``allowed_headers``, the ext_authz timeout against
``fetch.unknown_kid_wait_seconds``, Envoy's header limits against authz's
``envoy`` section (without ``-c``: against its defaults, Envoy's own) and
against what authz reads at most, and
routes where ext_authz is disabled although authz's rules would not make the
request public (a request for the route's path or prefix, and for authz's own
route paths under it, with each method and each host of the virtual host, put
through authz's route matching). A ``direct_response`` or ``redirect`` route
reaches no upstream and is not reported.

Not checked: resources Envoy loads at run time (LDS, RDS, ECDS), routes
matched by regex or URI template, ``:method`` or header matchers on routes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import yaml
from yaml.constructor import SafeConstructor

from authz.config.models import Config, EnvoyConfig, FetchConfig

if TYPE_CHECKING:
    from authz.check.policy import Policy

__all__ = [
    "EXIT_FINDINGS",
    "EXIT_OK",
    "EXIT_UNREADABLE",
    "TIMEOUT_MARGIN_SECONDS",
    "EnvoyCheckError",
    "Finding",
    "check_file",
    "check_text",
    "run",
]

EXIT_OK, EXIT_FINDINGS, EXIT_UNREADABLE = 0, 1, 2
# The ext_authz timeout must exceed authz's wait for keys by this much.
TIMEOUT_MARGIN_SECONDS = 0.05
# Envoy's defaults.
ENVOY_TIMEOUT_SECONDS = 0.2
ENVOY_MAX_REQUEST_HEADERS_KB = 60
ENVOY_MAX_HEADERS_COUNT = 100
DEFAULT_NAMESPACE = "x-auth-"

_TYPE = "type.googleapis.com/"
_HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_EXT_AUTHZ = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
_EXT_AUTHZ_PER_ROUTE = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
_FILTER_CONFIG = "envoy.config.route.v3.FilterConfig"
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")
# Enum values as Envoy accepts them: by name, or by number.
_ESCAPED_SLASHES = {
    0: "IMPLEMENTATION_SPECIFIC_DEFAULT",
    1: "KEEP_UNCHANGED",
    2: "REJECT_REQUEST",
    3: "UNESCAPE_AND_REDIRECT",
    4: "UNESCAPE_AND_FORWARD",
}
_UNDERSCORES = {0: "ALLOW", 1: "REJECT_REQUEST", 2: "DROP_HEADER"}
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


class EnvoyCheckError(Exception):
    """The file cannot be read, is not YAML/JSON, or holds no Envoy config to check."""


@dataclass(frozen=True, order=True)
class Finding:
    """One unsafe or inconsistent setting, at the line of its key.

    ``what`` never holds ": ", so ``FILE:LINE: what: why`` splits unambiguously.
    """

    line: int
    what: str
    why: str

    def format(self, source: str) -> str:
        return f"{source}:{self.line}: {self.what}: {self.why}"


@dataclass(frozen=True)
class _Report:
    findings: list[Finding]
    managers: int  # HTTP connection managers checked


# --- reading: composed YAML nodes with their lines -------------------------------------


@dataclass(frozen=True)
class _At:
    """A composed YAML node and the file line it is reported at (1-based).

    ``line`` is the line of the key holding the node (or of the sequence item);
    ``offset`` shifts every line of a document embedded in another file;
    ``pinned`` reports every line as ``line`` (an embedded string whose own
    lines cannot be mapped to the file's).
    """

    node: yaml.Node
    line: int
    offset: int = 0
    pinned: bool = False

    def line_of(self, node: yaml.Node) -> int:
        return self.line if self.pinned else node.start_mark.line + 1 + self.offset

    def get(self, key: str) -> _At | None:
        """The value of ``key`` (the last one, as YAML loaders read duplicates)."""
        found = None
        if isinstance(self.node, yaml.MappingNode):
            for key_node, value_node in self.node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                    found = _At(value_node, self.line_of(key_node), self.offset, self.pinned)
        return found

    def path(self, *keys: str) -> _At | None:
        node: _At | None = self
        for key in keys:
            node = node.get(key) if node is not None else None
        return node

    def items(self) -> list[_At]:
        if not isinstance(self.node, yaml.SequenceNode):
            return []
        return [_At(item, self.line_of(item), self.offset, self.pinned) for item in self.node.value]

    def names(self) -> list[str]:
        """A mapping's keys, in order."""
        if not isinstance(self.node, yaml.MappingNode):
            return []
        return [str(key.value) for key, _ in self.node.value if isinstance(key, yaml.ScalarNode)]

    def value(self) -> Any:
        """A scalar (or a small sequence/mapping of scalars) as Python reads it;
        None for what a safe loader cannot read (a custom tag), as if absent."""
        try:
            return SafeConstructor().construct_object(self.node, deep=True)
        except (yaml.YAMLError, TypeError):
            return None

    def text(self) -> str:
        value = self.value() if isinstance(self.node, yaml.ScalarNode) else None
        return value if isinstance(value, str) else ""


def _value(node: _At | None) -> Any:
    return None if node is None else node.value()


def _shown(node: _At) -> str:
    """A scalar as it would be written in the config."""
    value = node.value()
    return json.dumps(value) if isinstance(value, bool) or value is None else str(value)


def _compose_all(text: str, source: str) -> list[yaml.Node]:
    if "\t" in text:
        # JSON allows tabs between tokens, YAML does not; in valid JSON a raw tab
        # can be nothing else, so spaces change neither meaning nor line numbers.
        try:
            json.loads(text)
        except ValueError:
            pass
        else:
            text = text.replace("\t", " ")
    try:
        return [node for node in yaml.compose_all(text, Loader=yaml.SafeLoader) if node]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise EnvoyCheckError(f"{where}: not valid YAML or JSON: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise EnvoyCheckError(f"{source}: not valid YAML or JSON: {exc}") from None


def _envoy_documents(text: str, source: str) -> list[_At]:
    """Every Envoy config in ``text``: whole documents, or in a ConfigMap's data."""
    found: list[_At] = []
    for node in _compose_all(text, source):
        root = _At(node, node.start_mark.line + 1)
        if root.get("static_resources") is not None:
            found.append(root)
        elif _value(root.get("kind")) == "ConfigMap":
            found.extend(_embedded(root.get("data"), source))
    if not found:
        raise EnvoyCheckError(
            f"{source}: no Envoy configuration found (a document with static_resources, "
            "or a ConfigMap holding one under data)"
        )
    return found


def _embedded(data: _At | None, source: str) -> list[_At]:
    found: list[_At] = []
    if data is None or not isinstance(data.node, yaml.MappingNode):
        return found
    for key in data.names():
        value = data.get(key)
        if value is None or not isinstance(value.node, yaml.ScalarNode):
            continue
        try:
            nodes = _compose_all(value.text(), f"{source}:{value.line}: data.{key}")
        except EnvoyCheckError:
            continue  # not YAML: some other file in the same ConfigMap
        # A block scalar's text starts on the line after its "|"; any other style's
        # lines are not the file's, so its findings are reported at the data key.
        literal = value.node.style == "|"
        offset = value.node.start_mark.line + 1
        for node in nodes:
            embedded = _At(node, value.line, offset=offset, pinned=not literal)
            if embedded.get("static_resources") is not None:
                found.append(embedded)
    return found


# --- the checks --------------------------------------------------------------------------


def _type_of(typed_config: _At | None) -> str:
    name = _value(typed_config.get("@type")) if typed_config is not None else None
    return name.removeprefix(_TYPE) if isinstance(name, str) else ""


def _enum(node: _At | None, names: dict[int, str]) -> str | None:
    value = _value(node)
    if isinstance(value, int) and not isinstance(value, bool):
        return names.get(value, str(value))
    return value if isinstance(value, str) else None


def _duration(node: _At) -> float | None:
    match = _DURATION.match(str(_value(node)))
    return float(match[1]) if match else None


def _status_code(node: _At | None) -> int | None:
    value = _value(node)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return _STATUS_CODES.get(value) if isinstance(value, str) else None


def _matches(matcher: _At, name: str) -> bool:
    """Whether an Envoy StringMatcher takes the lower-case header ``name``."""
    ignore_case = _value(matcher.get("ignore_case")) is True
    subject = name.lower() if ignore_case else name
    for kind in ("exact", "prefix", "suffix", "contains"):
        wanted = _value(matcher.get(kind))
        if isinstance(wanted, str):
            wanted = wanted.lower() if ignore_case else wanted
            if kind == "exact":
                return subject == wanted
            if kind == "prefix":
                return subject.startswith(wanted)
            if kind == "suffix":
                return subject.endswith(wanted)
            return wanted in subject
    regex = _value(matcher.path("safe_regex", "regex"))
    if isinstance(regex, str):
        try:
            return re.fullmatch(regex, subject, re.IGNORECASE if ignore_case else 0) is not None
        except re.error:
            return False
    return False


def _takes_all(patterns: list[_At], names: Sequence[str]) -> bool:
    return all(any(_matches(pattern, name) for pattern in patterns) for name in names)


def _takes_any(patterns: list[_At], names: Sequence[str]) -> bool:
    return any(any(_matches(pattern, name) for pattern in patterns) for name in names)


class _Checker:
    def __init__(self, config: Config | None) -> None:
        self.config = config
        self.findings: list[Finding] = []
        self.managers = 0
        self.namespace = config.identity.namespace if config else DEFAULT_NAMESPACE
        waits = [
            issuer.fetch.unknown_kid_wait_seconds
            for issuer in (config.issuers if config else ())
            if any(source.remote for source in issuer.keys)
        ]
        default_wait = FetchConfig.model_fields["unknown_kid_wait_seconds"].default
        self.kid_wait: float = max(waits, default=0.0) if config else float(default_wait)
        self._policy: Policy | None = None

    def add(self, line: int, what: str, why: str) -> None:
        self.findings.append(Finding(line, what, why))

    @property
    def policy(self) -> Policy | None:
        if self.config is not None and self._policy is None:
            from authz.check.policy import Policy  # the rules, only when -c asks for them

            self._policy = Policy.from_config(self.config)
        return self._policy

    # --- listeners and HTTP connection managers ---------------------------------------

    def envoy(self, root: _At) -> None:
        self.duplicates(root, set())
        listeners = root.path("static_resources", "listeners")
        for listener in listeners.items() if listeners else ():
            edge = _is_edge(listener)
            chains = listener.get("filter_chains")
            default_chain = listener.get("default_filter_chain")
            for chain in [*(chains.items() if chains else ()), *filter(None, [default_chain])]:
                filters = chain.get("filters")
                for item in filters.items() if filters else ():
                    typed_config = item.get("typed_config")
                    if typed_config is not None and _type_of(typed_config) == _HCM:
                        self.managers += 1
                        self.manager(typed_config, edge)

    def duplicates(self, at: _At, seen: set[int]) -> None:
        """A key given twice: Envoy takes one silently, which may not be the one read."""
        if id(at.node) in seen:  # an alias to a node already walked
            return
        seen.add(id(at.node))
        names: set[str] = set()
        for key_node, _ in at.node.value if isinstance(at.node, yaml.MappingNode) else ():
            name = str(key_node.value)
            if name in names:
                why = "keep one: which one Envoy uses is unclear"
                self.add(at.line_of(key_node), f"duplicate key {name}", why)
            names.add(name)
        children = [at.get(name) for name in names] + at.items()
        for child in children:
            if child is not None:
                self.duplicates(child, seen)

    def manager(self, hcm: _At, edge: bool) -> None:
        self.paths(hcm)
        self.underscores(hcm)
        if edge:
            self.remote_address(hcm)
        self.header_limits(hcm)
        filters = hcm.get("http_filters")
        ext_authz = [
            item
            for item in (filters.items() if filters else ())
            if _type_of(item.get("typed_config")) == _EXT_AUTHZ
        ]
        if not ext_authz:
            self.add(
                (filters or hcm).line,
                "no ext_authz filter",
                "requests on this listener reach their upstreams without asking authz",
            )
        for item in ext_authz:
            self.ext_authz(item)
            self.routes(hcm, _value(item.get("name")))

    def paths(self, hcm: _At) -> None:
        for key, why in (
            (
                "normalize_path",
                "Envoy then passes the path as the client wrote it (. and .. unresolved, "
                "%2e undecoded), and the upstream may read it otherwise than authz did; "
                "set true",
            ),
            (
                "merge_slashes",
                "Envoy then passes repeated slashes on, and the upstream may read //a/b "
                "otherwise than authz did; set true",
            ),
        ):
            node = hcm.get(key)
            if node is None:
                self.add(hcm.line, f"{key} absent (Envoy's default is off)", why)
            elif _value(node) is not True:
                self.add(node.line, f"{key} is {_shown(node)}", why)
        node = hcm.get("path_with_escaped_slashes_action")
        action = _enum(node, _ESCAPED_SLASHES)
        if action in (None, "IMPLEMENTATION_SPECIFIC_DEFAULT", "KEEP_UNCHANGED"):
            what = (
                "path_with_escaped_slashes_action absent (Envoy's default is KEEP_UNCHANGED)"
                if node is None
                else f"path_with_escaped_slashes_action is {action}"
            )
            self.add(
                hcm.line if node is None else node.line,
                what,
                "Envoy forwards %2F and %5C as they are, and servers disagree on them; authz "
                "refuses such paths (400), but not on routes where ext_authz is off: set "
                "REJECT_REQUEST (recommended) to refuse them at the edge, on every route",
            )

    def underscores(self, hcm: _At) -> None:
        options = hcm.get("common_http_protocol_options")
        node = options.get("headers_with_underscores_action") if options else None
        action = _enum(node, _UNDERSCORES)
        if action in (None, "ALLOW"):
            what = (
                "headers_with_underscores_action absent (Envoy's default is ALLOW)"
                if node is None
                else f"headers_with_underscores_action is {action}"
            )
            self.add(
                (node or options or hcm).line,
                what,
                f"a client's {self.namespace.replace('-', '_')}roles reaches the upstream, "
                f"and CGI/WSGI servers read it as {self.namespace}roles: a forged identity; "
                "set common_http_protocol_options.headers_with_underscores_action: "
                "REJECT_REQUEST",
            )

    def remote_address(self, hcm: _At) -> None:
        node = hcm.get("use_remote_address")
        if node is None or _value(node) is not True:
            self.add(
                hcm.line if node is None else node.line,
                "use_remote_address absent (Envoy's default is false)"
                if node is None
                else f"use_remote_address is {_shown(node)}",
                "on an edge listener Envoy then trusts the client's x-forwarded-for, "
                "x-envoy-* headers (x-envoy-original-path rewrites the logged path) and "
                "x-request-id; set true (or mark an internal listener with "
                "metadata.filter_metadata.authz.edge: false)",
            )
        internal = hcm.get("internal_address_config")
        ranges = internal.get("cidr_ranges") if internal else None
        if internal is not None and not (ranges and ranges.items()):
            self.add(
                internal.line,
                "internal_address_config without cidr_ranges",
                "Envoy then treats every loopback and private (RFC 1918, RFC 4193) client "
                "as internal and keeps its x-envoy-* headers and x-request-id; list the "
                "trusted CIDRs (0.0.0.0/32 trusts none), or leave the key out (Envoy 1.40 "
                "then trusts none)",
            )

    def header_limits(self, hcm: _At) -> None:
        options = hcm.get("common_http_protocol_options")
        envoy = self.config.envoy if self.config else EnvoyConfig()
        source = "" if self.config else " by default; pass -c for yours"
        for node, default, unit, envoy_key, budget_key, budget, own_key in (
            (
                hcm.get("max_request_headers_kb"),
                ENVOY_MAX_REQUEST_HEADERS_KB,
                1024,
                "max_request_headers_kb",
                "max_request_headers_kb",
                envoy.max_request_headers_kb,
                "max_request_header_bytes",
            ),
            (
                options.get("max_headers_count") if options else None,
                ENVOY_MAX_HEADERS_COUNT,
                1,
                "common_http_protocol_options.max_headers_count",
                "max_request_headers_count",
                envoy.max_request_headers_count,
                "max_request_headers",
            ),
        ):
            value = _value(node)
            limit = value if isinstance(value, int) and not isinstance(value, bool) else default
            line = hcm.line if node is None else node.line
            what = f"{envoy_key} is {limit}" + (" (Envoy's default)" if node is None else "")
            if limit != budget:
                effect = (
                    "authz lets through identity headers that take a request past Envoy's "
                    "limit, and Envoy answers 500 instead of authz's 431"
                    if limit < budget
                    else "authz refuses (431) requests whose identity headers Envoy could carry"
                )
                self.add(
                    line,
                    what,
                    f"authz's envoy.{budget_key} is {budget}{source}: {effect}; set "
                    f"envoy.{budget_key}: {limit} in authz's configuration",
                )
            own = getattr(self.config, own_key) if self.config else None
            if own is not None and limit * unit > own:
                self.add(
                    line,
                    what,
                    f"more than authz's {own_key} ({own}): authz refuses (431) "
                    "requests Envoy accepted; keep Envoy's limit within authz's",
                )

    # --- the ext_authz filter -----------------------------------------------------------

    def ext_authz(self, item: _At) -> None:
        config = item.get("typed_config")
        assert config is not None
        if _value(item.get("disabled")) is True:
            disabled = item.get("disabled")
            assert disabled is not None
            self.add(
                disabled.line,
                "ext_authz filter is disabled",
                "it then runs only on routes that enable it: every other route reaches its "
                "upstream without asking authz",
            )
        node = config.get("failure_mode_allow")
        if _value(node) is True:
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

    def raw_headers(self, config: _At) -> None:
        node = config.get("encode_raw_headers")
        if _value(node) is True or config.get("grpc_service") is None:
            return
        self.add(
            config.line if node is None else node.line,
            "ext_authz encode_raw_headers absent (Envoy's default is false)"
            if node is None
            else f"ext_authz encode_raw_headers is {_shown(node)}",
            "Envoy then joins repeated headers into one before authz sees them, and authz "
            "counts fewer headers than Envoy does against its header limits: an allow that "
            "does not fit is Envoy's 500 instead of authz's 431; set true",
        )

    def status_on_error(self, config: _At) -> None:
        node = config.get("status_on_error")
        code_node = node.get("code") if node else None
        code = _status_code(code_node)
        if code is None:
            self.add(
                config.line if node is None else node.line,
                "ext_authz status_on_error absent (Envoy's default is 403)"
                if node is None
                else f"ext_authz status_on_error is {_value(code_node)!r}",
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

    def timeout(self, config: _At) -> None:
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
                f"ext_authz grpc_service.timeout is {_shown(node)}",
                f"shorter than {need:g}s: {wait}; past the timeout Envoy answers "
                "status_on_error instead of authz",
            )

    def headers_sent(self, node: _At, key: str, wanted: bool) -> None:
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

    # --- routes where ext_authz is off --------------------------------------------------

    def routes(self, hcm: _At, filter_name: Any) -> None:
        policy = self.policy
        table = hcm.get("route_config")
        if policy is None or table is None or not isinstance(filter_name, str):
            return
        table_config = _per_route(table, filter_name)
        hosts = table.get("virtual_hosts")
        for host in hosts.items() if hosts else ():
            host_config = _per_route(host, filter_name)
            routes = host.get("routes")
            for route in routes.items() if routes else ():
                route_config = _per_route(route, filter_name)
                # The most specific config decides whether the filter runs.
                decisive = route_config or host_config or table_config
                if decisive is None or decisive.disabled is None:
                    continue
                if route.get("direct_response") or route.get("redirect"):
                    continue  # answered by Envoy itself: no upstream behind it
                extensions: dict[str, str] = {}
                for level in (table_config, host_config, route_config):
                    if level is not None:
                        extensions.update(level.extensions)
                self.disabled_route(policy, route, host, decisive.disabled, extensions)

    def disabled_route(
        self, policy: Policy, route: _At, host: _At, disabled: _At, extensions: dict[str, str]
    ) -> None:
        from authz.check.request import RequestView
        from authz.errors import InvalidPath, NoRoute

        match = route.get("match")
        kind, envoy_path = _route_path(match)
        if not envoy_path:
            return
        paths = [envoy_path, *_paths_under(policy, kind, envoy_path)]
        for path in dict.fromkeys(paths):
            for name in _hosts(host, policy):
                for method in _METHODS:
                    request = RequestView(
                        method=method, path=path, host=name, context_extensions=extensions
                    )
                    try:
                        taken = policy.match(request).route
                    except InvalidPath:
                        continue
                    except NoRoute:
                        outcome = "authz has no route for it (it would deny it)"
                    else:
                        if taken.mode == "public":
                            continue
                        outcome = f"authz's route {taken.name or '(implicit)'!r} is {taken.mode}"
                    on = f"{method} {path}" + (f" on {name}" if name else "")
                    self.add(
                        disabled.line,
                        f"ext_authz disabled on the route for {kind} {envoy_path}",
                        f"{outcome} for {on}, but Envoy sends such requests to the upstream "
                        "without asking authz",
                    )
                    return  # one finding per route


@dataclass(frozen=True)
class _PerRoute:
    disabled: _At | None  # the "disabled: true" key, when the filter is off here
    extensions: dict[str, str]


def _per_route(owner: _At, filter_name: str) -> _PerRoute | None:
    """The ext_authz per-route config of a route, virtual host or route table."""
    config = owner.path("typed_per_filter_config", filter_name)
    if config is None:
        return None
    if _type_of(config) == _FILTER_CONFIG:  # the generic wrapper: disabled, or config
        wrapper_off = config.get("disabled")
        inner = config.get("config")
        if _value(wrapper_off) is True:
            return _PerRoute(wrapper_off, {})
        if inner is None:
            return None
        config = inner
    if _type_of(config) != _EXT_AUTHZ_PER_ROUTE:
        return None
    disabled = config.get("disabled")
    raw = _value(config.path("check_settings", "context_extensions"))
    extensions = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
    return _PerRoute(disabled if _value(disabled) is True else None, extensions)


def _route_path(match: _At | None) -> tuple[str, str]:
    for kind in ("path", "prefix", "path_separated_prefix"):
        value = _value(match.get(kind)) if match is not None else None
        if isinstance(value, str):
            return kind, value or "/"
    return "", ""


def _paths_under(policy: Policy, kind: str, envoy_path: str) -> Iterable[str]:
    """authz's own route paths that the Envoy route's prefix also takes."""
    if kind == "path":
        return
    for route in policy.routes:
        if not route.path_kind:
            continue
        path = "/".join("x" if segment is None else segment for segment in route.segments)
        path = ("/" + path) if route.path_kind == "pattern" else route.path
        if kind == "path_separated_prefix":
            taken = path == envoy_path or path.startswith(envoy_path.rstrip("/") + "/")
        else:
            taken = path.startswith(envoy_path)  # a plain prefix: /docs takes /docsx too
        if taken:
            yield path


def _hosts(host: _At, policy: Policy) -> list[str]:
    """Host names a virtual host takes, including those authz's routes name."""
    domains = _value(host.get("domains"))
    named = [pattern.replace("*.", "any.", 1) for route in policy.routes for pattern in route.hosts]
    found: list[str] = []
    for item in domains if isinstance(domains, list) else ["*"]:
        domain = str(item)
        if domain == "*":
            found += ["", *named]
        elif domain.startswith("*"):
            found += [f"any{domain[1:]}", *(name for name in named if name.endswith(domain[1:]))]
        elif domain.endswith("*"):
            found += [f"{domain[:-1]}invalid", *(n for n in named if n.startswith(domain[:-1]))]
        else:
            found.append(domain)
    return list(dict.fromkeys(found))


def _is_edge(listener: _At) -> bool:
    address = listener.get("address")
    if address is not None and (
        address.get("pipe") is not None or address.get("envoy_internal_address") is not None
    ):
        return False
    if listener.get("internal_listener") is not None:
        return False
    return _value(listener.path("metadata", "filter_metadata", "authz", "edge")) is not False


# --- entry points --------------------------------------------------------------------------


def check_text(text: str, source: str, config: Config | None = None) -> list[Finding]:
    """The findings for one file's text, in line order; EnvoyCheckError if unusable."""
    return _check(text, source, config).findings


def _check(text: str, source: str, config: Config | None) -> _Report:
    checker = _Checker(config)
    for document in _envoy_documents(text, source):
        checker.envoy(document)
    if checker.managers == 0:
        raise EnvoyCheckError(
            f"{source}: no HTTP connection manager in static_resources.listeners: nothing "
            "to check (listeners from LDS are not read)"
        )
    return _Report(sorted(set(checker.findings)), checker.managers)


def check_file(path: Path, config: Config | None = None) -> list[Finding]:
    return check_text(_read(path), str(path), config)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EnvoyCheckError(f"{path}: cannot read: {exc}") from None


def run(
    files: Sequence[Path],
    config: Config | None,
    out: TextIO,
    err: TextIO,
    stdin: TextIO | None = None,
) -> int:
    """Check every file and print the findings; the exit status (0, 1 or 2).

    ``-`` reads ``stdin`` (e.g. ``kubectl kustomize k8s/gateway | authz check-envoy -``).
    """
    status = EXIT_OK
    for path in files:
        from_stdin = str(path) == "-" and stdin is not None
        source = "<stdin>" if from_stdin else str(path)
        try:
            text = stdin.read() if from_stdin and stdin is not None else _read(path)
            report = _check(text, source, config)
        except EnvoyCheckError as exc:
            print(f"authz check-envoy: {exc}", file=err)
            status = EXIT_UNREADABLE
            continue
        for finding in report.findings:
            print(finding.format(source), file=out)
        if report.findings:
            status = max(status, EXIT_FINDINGS)
        else:
            managers = f"{report.managers} HTTP connection manager"
            managers += "s" if report.managers != 1 else ""
            print(f"{source}: OK ({managers} checked)", file=out)
    return status
