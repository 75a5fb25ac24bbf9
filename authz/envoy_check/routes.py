"""Routes where ext_authz is off although authz's rules would not make the request public.

Without authz's rules (no ``-c``), every route where ext_authz is off and an
upstream answers is reported: nothing says those requests are public."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from authz.envoy_check.base import CheckerBase
from authz.envoy_check.resources import Resources
from authz.envoy_check.yaml_nodes import At, type_of, value_of

if TYPE_CHECKING:
    from authz.check.policy import Policy, Route

__all__ = ["RouteChecks"]

_EXT_AUTHZ_PER_ROUTE = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
_FILTER_CONFIG = "envoy.config.route.v3.FilterConfig"
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class RouteChecks(CheckerBase):
    """A route that skips ext_authz must lead only where authz would allow anyone
    (with authz's rules, ``-c``; without them, every such route is reported)."""

    def route_table(self, hcm: At, resources: Resources) -> At | None:
        """The route configuration a connection manager uses: its own
        ``route_config``, or the one ``rds`` names when the source holds it (a
        config dump); None, and said not checked, when the source cannot show it."""
        table = hcm.get("route_config")
        rds = hcm.get("rds")
        if rds is not None:
            name = value_of(rds.get("route_config_name"))
            delivered = resources.route_configs.get(name) if isinstance(name, str) else None
            if delivered is None:
                self.not_checked(
                    rds.line,
                    f"routes from rds: route config {name!r} is not in the dump"
                    if resources.dump
                    else "routes from rds (loaded at run time)",
                )
            table = table if table is not None else delivered
        scoped = hcm.get("scoped_routes")
        if scoped is not None:
            self.not_checked(scoped.line, "routes from scoped_routes (loaded at run time)")
        return table

    def routes(self, table: At | None, filter_name: Any) -> None:
        policy = self.policy
        if table is None or not isinstance(filter_name, str):
            return
        table_config = _per_route(table, filter_name)
        hosts = table.get("virtual_hosts")
        # Envoy's prefixes and the context_extensions it sends with each.
        sent: list[tuple[str, dict[str, str], int]] = []
        for host in hosts.items() if hosts else ():
            host_config = _per_route(host, filter_name)
            routes = host.get("routes")
            for route in routes.items() if routes else ():
                route_config = _per_route(route, filter_name)
                extensions: dict[str, str] = {}
                for level in (table_config, host_config, route_config):
                    if level is not None:
                        extensions.update(level.extensions)
                kind, envoy_path = _route_path(route.get("match"))
                if kind in ("prefix", "path_separated_prefix") and extensions:
                    sent.append((envoy_path, extensions, route.line))
                # The most specific config decides whether the filter runs.
                decisive = route_config or host_config or table_config
                if decisive is None or decisive.disabled is None:
                    continue
                if route.get("direct_response") or route.get("redirect"):
                    continue  # answered by Envoy itself: no upstream behind it
                if policy is None:
                    self.unchecked_route(route, decisive.disabled)
                    continue
                self.disabled_route(policy, route, host, decisive.disabled, extensions)
        if policy is not None:
            self.partial_rules(policy, sent)

    def partial_rules(self, policy: Policy, sent: list[tuple[str, dict[str, str], int]]) -> None:
        """A rule whose path sits under one of several prefixes Envoy sends to the
        same service (the same context_extensions) covers only that prefix: a
        request for the same path under another prefix falls through to broader
        routes. Reported unless a route with the same rule covers each prefix."""
        for route in policy.routes:
            if route.path_kind not in ("path", "prefix", "pattern") or not route.context_extensions:
                continue
            wanted = dict(route.context_extensions)
            prefixes = sorted(
                {
                    prefix
                    for prefix, extensions, _ in sent
                    if all(extensions.get(k) == v for k, v in wanted.items())
                }
            )
            own = next((p for p in prefixes if _under(route.path, p)), None)
            if own is None or len(prefixes) < 2:
                continue
            rest = route.path[len(own.rstrip("/")) :]
            missing = [
                prefix
                for prefix in prefixes
                if prefix != own and not _twin(policy, route, prefix.rstrip("/") + rest)
            ]
            if missing:
                line = next(line for prefix, _, line in sent if prefix == own)
                service = ", ".join(f"{k}={v}" for k, v in route.context_extensions)
                self.add(
                    line,
                    f"authz's route {route.name!r} covers only {own} of the prefixes Envoy "
                    f"sends with {service}",
                    f"{route.path} is ruled, but the same path under {', '.join(missing)} "
                    "falls through to broader routes; add a route with the same rule for "
                    "each prefix",
                )

    def unchecked_route(self, route: At, disabled: At) -> None:
        kind, envoy_path = _route_path(route.get("match"))
        where = f"{kind} {envoy_path}" if envoy_path else "a route matched otherwise"
        self.add(
            disabled.line,
            f"ext_authz disabled on the route for {where}",
            "Envoy sends these requests to the upstream without asking authz; pass -c "
            "with authz's configuration to check that its rules make them public",
        )

    def disabled_route(
        self, policy: Policy, route: At, host: At, disabled: At, extensions: dict[str, str]
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
    disabled: At | None  # the "disabled: true" key, when the filter is off here
    extensions: dict[str, str]


def _per_route(owner: At, filter_name: str) -> _PerRoute | None:
    """The ext_authz per-route config of a route, virtual host or route table."""
    config = owner.path("typed_per_filter_config", filter_name)
    if config is None:
        return None
    if type_of(config) == _FILTER_CONFIG:  # the generic wrapper: disabled, or config
        wrapper_off = config.get("disabled")
        inner = config.get("config")
        if value_of(wrapper_off) is True:
            return _PerRoute(wrapper_off, {})
        if inner is None:
            return None
        config = inner
    if type_of(config) != _EXT_AUTHZ_PER_ROUTE:
        return None
    disabled = config.get("disabled")
    raw = value_of(config.path("check_settings", "context_extensions"))
    extensions = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
    return _PerRoute(disabled if value_of(disabled) is True else None, extensions)


def _route_path(match: At | None) -> tuple[str, str]:
    for kind in ("path", "prefix", "path_separated_prefix"):
        value = value_of(match.get(kind)) if match is not None else None
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


def _hosts(host: At, policy: Policy) -> list[str]:
    """Host names a virtual host takes, including those authz's routes name."""
    domains = value_of(host.get("domains"))
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


def _under(path: str, prefix: str) -> bool:
    base = prefix.rstrip("/")
    return path == prefix or path.startswith(base + "/")


def _twin(policy: Policy, route: Route, path: str) -> bool:
    """Whether another route holds ``route``'s rule for ``path``."""
    return any(
        other.path == path
        and other.path_kind == route.path_kind
        and other.mode == route.mode
        and other.methods == route.methods
        and other.requirement == route.requirement
        and other.context_extensions == route.context_extensions
        for other in policy.routes
        if other is not route
    )
