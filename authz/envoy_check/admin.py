"""Routes to Envoy's own admin interface: read-only pages only.

A listener that serves Prometheus Envoy's statistics routes ``/stats/prometheus``
to a cluster whose endpoint is the admin address. Such a connection manager
reaches no upstream service, so authz's checks (ext_authz, path normal form,
client addresses) do not apply to it; what matters there is that nothing but a
read-only page of admin is reachable: admin also answers ``/quitquitquit``,
``/drain_listeners``, ``/logging`` and ``/config_dump``. A route to admin in
any connection manager is held to that.
"""

from __future__ import annotations

from authz.envoy_check.base import CheckerBase
from authz.envoy_check.resources import Resources
from authz.envoy_check.yaml_nodes import At, value_of

__all__ = ["AdminChecks"]

# Admin pages that change nothing and reveal no configuration.
READ_ONLY_PAGES = frozenset({"/stats/prometheus", "/stats", "/ready"})
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
_WILDCARD = frozenset({"0.0.0.0", "::"})  # noqa: S104 (addresses compared, not bound)


class AdminChecks(CheckerBase):
    """Finds the routes of a connection manager that lead to the admin interface."""

    def admin_only(self, resources: Resources, table: At | None) -> bool:
        """Whether every route of a connection manager's route table leads to
        admin (or is answered by Envoy itself); each admin route that is not an
        exact read-only page is reported whatever the answer."""
        admin_clusters = _admin_clusters(resources)
        hosts = table.get("virtual_hosts") if table is not None else None
        to_admin = 0
        elsewhere = table is None  # routes this source does not show
        for host in hosts.items() if hosts else ():
            routes = host.get("routes")
            for route in routes.items() if routes else ():
                if route.get("direct_response") or route.get("redirect"):
                    continue
                cluster = value_of(route.path("route", "cluster"))
                if cluster not in admin_clusters:
                    elsewhere = True
                    continue
                to_admin += 1
                self._read_only(route)
        return to_admin > 0 and not elsewhere

    def _read_only(self, route: At) -> None:
        match = route.get("match")
        path = value_of(match.get("path")) if match is not None else None
        if path in READ_ONLY_PAGES:
            return
        shown = f"path {path}" if isinstance(path, str) else "a match other than an exact path"
        self.add(
            (match or route).line,
            f"Envoy's admin interface reachable by {shown}",
            "admin also answers /quitquitquit, /drain_listeners, /logging and "
            "/config_dump; route only exact read-only pages to it ("
            + ", ".join(sorted(READ_ONLY_PAGES))
            + ")",
        )


def _admin_clusters(resources: Resources) -> set[str]:
    """Names of the clusters whose every endpoint (as the cluster states them:
    ``load_assignment``) is this Envoy's admin."""
    admin = _socket(resources.admin)
    if admin is None:
        return set()
    found: set[str] = set()
    for cluster in resources.clusters:
        localities = cluster.path("load_assignment", "endpoints")
        addresses = []
        for locality in localities.items() if localities else ():
            endpoints = locality.get("lb_endpoints")
            for endpoint in endpoints.items() if endpoints else ():
                addresses.append(_socket(endpoint.path("endpoint", "address")))
        name = value_of(cluster.get("name"))
        if isinstance(name, str) and addresses and all(_is_admin(a, admin) for a in addresses):
            found.add(name)
    return found


def _socket(address: At | None) -> tuple[str, int] | None:
    socket = address.get("socket_address") if address is not None else None
    host = value_of(socket.get("address")) if socket is not None else None
    port = value_of(socket.get("port_value")) if socket is not None else None
    if isinstance(host, str) and isinstance(port, int):
        return host, port
    return None


def _is_admin(address: tuple[str, int] | None, admin: tuple[str, int]) -> bool:
    if address is None or address[1] != admin[1]:
        return False
    # Admin bound to every address or to loopback answers on loopback too.
    local = admin[0] in _WILDCARD | _LOOPBACK and address[0] in _LOOPBACK
    return address[0] == admin[0] or local
