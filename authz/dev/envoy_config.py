"""The Envoy configurations the demo and the tests run: shipped in the package, and
rendered onto loopback with each cluster pointed at a local endpoint."""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Endpoint", "envoy_config", "render_envoy_config"]

# Where a cluster's one endpoint is: (host, port), or "unix:/path" (an Envoy pipe).
Endpoint = tuple[str, int] | str


def envoy_config(name: str) -> Path:
    """One of the Envoy configurations shipped in the package (``authz/dev/envoy/``;
    the repository's ``envoy/`` links to them), so the stack runs from an install."""
    resource = importlib.resources.files("authz.dev").joinpath("envoy", name)
    # A wheel is installed unpacked, so the resource is a file Envoy can be given.
    return Path(str(resource))


def render_envoy_config(
    template: Path,
    authz: Endpoint,
    upstream: Endpoint,
    clusters: Mapping[str, Endpoint] | None = None,
    otel_collector: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """``template`` on loopback port 0, with the clusters pointed at local endpoints.

    ``authz`` and ``upstream`` name the endpoints of the clusters so named;
    ``clusters`` adds others by name (e.g. the example services of k8s/), and
    ``otel_collector`` the OTLP collector's for a template with tracing. Each
    becomes a STATIC cluster with that one endpoint; "unix:/path" is a pipe.
    """
    config: dict[str, Any] = yaml.safe_load(template.read_text())
    config["admin"]["address"]["socket_address"]["port_value"] = 0
    for listener in config["static_resources"]["listeners"]:
        # Loopback even when the template binds every address (k8s/ configs).
        listener["address"]["socket_address"].update(address="127.0.0.1", port_value=0)
    endpoints = {"authz": authz, "upstream": upstream, **(clusters or {})}
    if otel_collector is not None:
        endpoints["otel_collector"] = otel_collector
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] in endpoints:
            cluster["type"] = "STATIC"
            for dns_only in ("dns_lookup_family", "dns_refresh_rate", "respect_dns_ttl"):
                cluster.pop(dns_only, None)
            lb_endpoint = {"endpoint": {"address": _envoy_address(endpoints[cluster["name"]])}}
            cluster["load_assignment"] = {
                "cluster_name": cluster["name"],
                "endpoints": [{"lb_endpoints": [lb_endpoint]}],
            }
    return config


def _envoy_address(endpoint: Endpoint) -> dict[str, Any]:
    if isinstance(endpoint, str):
        if not endpoint.startswith("unix:"):
            raise ValueError(f"{endpoint!r}: expected (host, port) or unix:/path")
        return {"pipe": {"path": endpoint.removeprefix("unix:")}}
    host, port = endpoint
    return {"socket_address": {"address": host, "port_value": port}}
