"""Each listener's HTTP connection manager: paths, header names, client addresses,
header limits; then its ext_authz filter and routes (``ext_authz``, ``routes``)."""

from __future__ import annotations

import re

import yaml

from authz.config.models import EnvoyConfig
from authz.envoy_check.admin import AdminChecks
from authz.envoy_check.base import ENVOY_MAX_HEADERS_COUNT, ENVOY_MAX_REQUEST_HEADERS_KB
from authz.envoy_check.ext_authz import ExtAuthzChecks
from authz.envoy_check.resources import Resources, from_bootstrap, from_config_dump
from authz.envoy_check.routes import RouteChecks
from authz.envoy_check.yaml_nodes import (
    TYPE_PREFIX,
    At,
    enum_of,
    is_config_dump,
    shown,
    type_of,
    value_of,
)

__all__ = ["Checker"]

_HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_EXT_AUTHZ = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
# Enum values as Envoy accepts them: by name, or by number.
_ESCAPED_SLASHES = {
    0: "IMPLEMENTATION_SPECIFIC_DEFAULT",
    1: "KEEP_UNCHANGED",
    2: "REJECT_REQUEST",
    3: "UNESCAPE_AND_REDIRECT",
    4: "UNESCAPE_AND_FORWARD",
}
_UNDERSCORES = {0: "ALLOW", 1: "REJECT_REQUEST", 2: "DROP_HEADER"}


class Checker(AdminChecks, ExtAuthzChecks, RouteChecks):
    """Every check, over every HTTP connection manager of the documents given to ``envoy``."""

    def envoy(self, root: At) -> None:
        """A bootstrap document, or an admin ``/config_dump``."""
        if is_config_dump(root):
            # A dump is Envoy's own rendering of what it holds: no duplicate keys,
            # and the listeners it loaded at run time are in it.
            resources = from_config_dump(root)
        else:
            self.duplicates(root, set())
            dynamic = root.get("dynamic_resources")
            for source, what in (("lds_config", "listeners"), ("ads_config", "resources")):
                node = dynamic.get(source) if dynamic is not None else None
                if node is not None:
                    self.not_checked(node.line, f"{what} from {source} (loaded at run time)")
            resources = from_bootstrap(root)
        self.unchecked.extend(resources.unchecked)
        for listener in resources.listeners:
            self.listener(listener, resources)

    def listener(self, listener: At, resources: Resources) -> None:
        edge = _is_edge(listener)
        chains = listener.get("filter_chains")
        default_chain = listener.get("default_filter_chain")
        for chain in [*(chains.items() if chains else ()), *filter(None, [default_chain])]:
            filters = chain.get("filters")
            for item in filters.items() if filters else ():
                typed_config = item.get("typed_config")
                if typed_config is None or type_of(typed_config) != _HCM:
                    continue
                table = self.route_table(typed_config, resources)
                # A window on admin's statistics reaches no upstream service.
                if self.admin_only(resources, table):
                    continue
                self.managers += 1
                self.manager(typed_config, edge, table)

    def duplicates(self, at: At, seen: set[int]) -> None:
        """A key given twice: Envoy takes one silently, which may not be the one read."""
        if id(at.node) in seen:  # an alias to a node already walked
            return
        seen.add(id(at.node))
        names: set[str] = set()
        for key_node, _ in at.node.value if isinstance(at.node, yaml.MappingNode) else ():
            # A field spelled twice (also once in each spelling Envoy reads) is one field.
            name = _snake(str(key_node.value))
            if name in names:
                why = "keep one: which one Envoy uses is unclear"
                self.add(at.line_of(key_node), f"duplicate key {name}", why)
            names.add(name)
        children = [at.get(name) for name in names] + at.items()
        for child in children:
            if child is not None:
                self.duplicates(child, seen)

    def manager(self, hcm: At, edge: bool, table: At | None) -> None:
        self.paths(hcm)
        self.underscores(hcm)
        if edge:
            self.remote_address(hcm)
        self.header_limits(hcm)
        filters = hcm.get("http_filters")
        items = filters.items() if filters else []
        ext_authz = [item for item in items if type_of(item.get("typed_config")) == _EXT_AUTHZ]
        discovered = [item for item in items if _discovers_ext_authz(item)]
        for item in discovered:
            # Its settings come from ECDS, which are not read (in a dump, its
            # EcdsConfigDump is said not checked); the filter entry's own
            # "disabled" and the routes are checked all the same.
            self.filter_disabled(item)
            source = item.get("config_discovery")
            self.not_checked(
                (source or item).line,
                f"ext_authz settings of filter {value_of(item.get('name'))} from "
                "config_discovery (ECDS)",
            )
        if not ext_authz and not discovered:
            self.add(
                (filters or hcm).line,
                "no ext_authz filter",
                "requests on this listener reach their upstreams without asking authz",
            )
        for item in ext_authz:
            self.ext_authz(item)
        for item in ext_authz + discovered:
            self.routes(table, value_of(item.get("name")))

    def paths(self, hcm: At) -> None:
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
            elif value_of(node) is not True:
                self.add(node.line, f"{key} is {shown(node)}", why)
        node = hcm.get("path_with_escaped_slashes_action")
        action = enum_of(node, _ESCAPED_SLASHES)
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

    def underscores(self, hcm: At) -> None:
        options = hcm.get("common_http_protocol_options")
        node = options.get("headers_with_underscores_action") if options else None
        action = enum_of(node, _UNDERSCORES)
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

    def remote_address(self, hcm: At) -> None:
        node = hcm.get("use_remote_address")
        if node is None or value_of(node) is not True:
            self.add(
                hcm.line if node is None else node.line,
                "use_remote_address absent (Envoy's default is false)"
                if node is None
                else f"use_remote_address is {shown(node)}",
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

    def header_limits(self, hcm: At) -> None:
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
            value = value_of(node)
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


def _discovers_ext_authz(item: At) -> bool:
    """An HTTP filter whose config ECDS delivers, and may be ext_authz's."""
    type_urls = value_of(item.path("config_discovery", "type_urls"))
    return isinstance(type_urls, list) and any(
        str(url).removeprefix(TYPE_PREFIX) == _EXT_AUTHZ for url in type_urls
    )


def _is_edge(listener: At) -> bool:
    address = listener.get("address")
    if address is not None and (
        address.get("pipe") is not None or address.get("envoy_internal_address") is not None
    ):
        return False
    if listener.get("internal_listener") is not None:
        return False
    return value_of(listener.path("metadata", "filter_metadata", "authz", "edge")) is not False


def _snake(name: str) -> str:
    """A field's proto name from either spelling (``failureModeAllow``: ``failure_mode_allow``)."""
    return _UPPER.sub(lambda match: "_" + match[0].lower(), name) if name[:1].islower() else name


_UPPER = re.compile(r"[A-Z]")
