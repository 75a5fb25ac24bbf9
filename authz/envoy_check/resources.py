"""What one Envoy holds, as the checks read it, from a bootstrap file or from
what a running Envoy reports on its admin ``/config_dump``.

The checks walk ``Resources`` alike whatever it came from (only the words for
what it cannot show differ), so a bootstrap and a dump of the same config are
held to the same checks. A bootstrap shows
only ``static_resources``; a dump shows what Envoy took at run time as well
(LDS listeners, RDS route configurations, CDS clusters).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from authz.envoy_check.yaml_nodes import At, type_of, value_of

__all__ = ["Resources", "from_bootstrap", "from_config_dump"]

_ADMIN = "envoy.admin.v3."


@dataclass(frozen=True)
class Resources:
    """Listeners to check, and what their checks look up.

    ``route_configs`` are the RDS-delivered route configurations by name: an
    ``rds`` reference is resolved here, and said not checked if absent.
    ``dump``: read from a running Envoy, where a missing route configuration is
    one Envoy lacks too, not one it loads later. ``unchecked``: (line, what) of
    what the source holds and the checks do not read.
    """

    listeners: list[At]
    clusters: list[At]
    admin: At | None  # the admin interface's address
    route_configs: dict[str, At] = field(default_factory=dict)
    dump: bool = False
    unchecked: list[tuple[int, str]] = field(default_factory=list)


def from_bootstrap(root: At) -> Resources:
    return Resources(
        listeners=_items(root.path("static_resources", "listeners")),
        clusters=_items(root.path("static_resources", "clusters")),
        admin=root.path("admin", "address"),
    )


def from_config_dump(root: At) -> Resources:
    """The listeners, clusters and RDS route configurations of an admin
    ``/config_dump`` (``envoy.admin.v3.*ConfigDump`` entries under ``configs``).

    Listeners: static ones, and dynamic ones in their active and warming states.
    A warming listener is one Envoy has taken and will serve with as soon as its
    routes and clusters arrive, so its settings are about to be in force. Not
    checked, and said: a draining listener (the one being replaced or removed;
    it finishes its open connections and takes no new ones, and what replaces it
    is checked), and an update Envoy rejected (``error_state``: not in force).
    The bootstrap's own copy of ``static_resources`` is not read: its listeners
    are the dump's static listeners.
    """
    found = Resources(listeners=[], clusters=[], admin=None, dump=True)
    admin: At | None = None
    for entry in _items(root.get("configs")):
        kind = type_of(entry).removeprefix(_ADMIN)
        if kind == "BootstrapConfigDump":
            admin = entry.path("bootstrap", "admin", "address")
        elif kind == "ListenersConfigDump":
            _listeners(entry, found)
        elif kind == "RoutesConfigDump":
            # Static route configs are the listeners' own (route_config): read there.
            for item in _items(entry.get("dynamic_route_configs")):
                _rejected(item, "route config", found)
                config = item.get("route_config")
                name = value_of(config.get("name")) if config is not None else None
                if config is not None and isinstance(name, str):
                    found.route_configs[name] = config
        elif kind == "ClustersConfigDump":
            for key in ("static_clusters", "dynamic_active_clusters", "dynamic_warming_clusters"):
                found.clusters.extend(
                    cluster
                    for item in _items(entry.get(key))
                    if (cluster := item.get("cluster")) is not None
                )
        elif [name for name in entry.names() if name != "@type"]:
            line = (entry.get("@type") or entry).line  # the line that names it
            found.unchecked.append((line, _OTHER.get(kind, kind or "an entry without @type")))
    return replace(found, admin=admin)


# Config dump entries the checks do not read, when they hold anything.
_OTHER = {
    "EcdsConfigDump": "filter configs from ECDS (EcdsConfigDump)",
    "ScopedRoutesConfigDump": "scoped route configs (ScopedRoutesConfigDump)",
    "SecretsConfigDump": "secrets (SecretsConfigDump)",
    "EndpointsConfigDump": "endpoints (EndpointsConfigDump)",
}


def _listeners(entry: At, found: Resources) -> None:
    for item in _items(entry.get("static_listeners")):
        listener = item.get("listener")
        if listener is not None:
            found.listeners.append(listener)
    for item in _items(entry.get("dynamic_listeners")):
        for state in ("active_state", "warming_state"):
            listener = item.path(state, "listener")
            if listener is not None:
                found.listeners.append(listener)
        draining = item.get("draining_state")
        if draining is not None:
            found.unchecked.append(
                (draining.line, f"listener {_name(item)} draining (being replaced or removed)")
            )
        _rejected(item, "listener", found)


def _rejected(item: At, what: str, found: Resources) -> None:
    error = item.get("error_state")
    if error is not None:
        found.unchecked.append(
            (error.line, f"{what} {_name(item)}: an update Envoy rejected (error_state)")
        )


def _name(item: At) -> str:
    name = value_of(item.get("name"))
    if not isinstance(name, str):
        name = value_of(item.path("route_config", "name"))
    return repr(name) if isinstance(name, str) else "(unnamed)"


def _items(node: At | None) -> list[At]:
    return node.items() if node is not None else []
