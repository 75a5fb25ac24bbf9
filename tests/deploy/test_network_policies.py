"""Who may reach the gateway's pods: the NetworkPolicies against the ports the pods declare.

The gateway pods are the edge, so what each declared port is for is read from the
rendered objects, never restated here: a port a Service sends traffic to is the
entry point, open to any source; a port a PodMonitor of
k8s/observability/prometheus scrapes is a metrics port, open to Prometheus in
the monitoring namespace alone. The NetworkPolicies selecting the pods must
admit exactly that and nothing more, so a port added later without a decision
about who reaches it fails here, and so does a rule that admits more.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import kubernetes_validate
import pytest

from tests.deploy.manifests import (
    K8S,
    KUBERNETES_VERSIONS,
    Obj,
    container,
    containers,
    find,
    objects_of,
    render,
    scraped_ports,
    selects,
)

OVERLAYS = Path(__file__).parent / "overlays"
PROMETHEUS = K8S / "observability" / "prometheus"
# Every rendered variant that runs the gateway's Envoy pods.
GATEWAY_VARIANTS = [
    K8S / "gateway",
    K8S / "sidecar",
    K8S / "issuers" / "hs-secret",
    K8S / "issuers" / "private-ca",
    OVERLAYS / "observability",
    OVERLAYS / "observability-sidecar",
    OVERLAYS / "tls",
    OVERLAYS / "tls-observability",
]
ANY_SOURCE = "any source"
# k8s/base's scrape rule: any pod of the namespace named monitoring.
PROMETHEUS_PEERS = [
    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
]

Sources = str | list[Obj]


def variant_id(directory: Path) -> str:
    return str(directory.relative_to(directory.parents[1]))


def pod_labels(workload: Obj) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def protocol(entry: Obj) -> str:
    value: str = entry.get("protocol", "TCP")
    return value


def covers(rule_port: Obj, port: Obj) -> bool:
    """Whether a NetworkPolicyPort (number, range or name; TCP unless said) is ``port``."""
    if protocol(rule_port) != protocol(port):
        return False
    if "port" not in rule_port:
        return True  # every port of that protocol
    wanted = rule_port["port"]
    if isinstance(wanted, str):
        return bool(wanted == port["name"])
    return bool(wanted <= port["containerPort"] <= rule_port.get("endPort", wanted))


def admitted(policies: list[Obj], port: Obj) -> Sources:
    """Who the ingress rules of ``policies`` (which add up) let reach ``port``."""
    peers: list[Obj] = []
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            # No ports (or an empty list): the rule is about every port.
            if rule.get("ports") and not any(covers(entry, port) for entry in rule["ports"]):
                continue
            if not rule.get("from"):
                return ANY_SOURCE
            peers += rule["from"]
    return peers


def purposes(objects: tuple[Obj, ...], workload: Obj) -> dict[tuple[str, str], Sources]:
    """(container, port name) -> who should reach it, from the Services and PodMonitors."""
    intended: dict[tuple[str, str], Sources] = {}
    namespace = workload["metadata"]["namespace"]
    for service in objects_of(objects, "Service"):
        selector = service["spec"].get("selector")
        if service["metadata"]["namespace"] != namespace or not selector:
            continue
        if not selects({"matchLabels": selector}, pod_labels(workload)):
            continue
        for service_port in service["spec"]["ports"]:
            target = service_port.get("targetPort", service_port["port"])
            for entry in containers(workload):
                for port in entry.get("ports", []):
                    if target in (port["name"], port["containerPort"]):
                        intended[(entry["name"], port["name"])] = ANY_SOURCE
    for monitor in objects_of(render(PROMETHEUS), "PodMonitor"):
        for name, port in scraped_ports(monitor, workload):
            where = f"{name}:{port['name']}"
            assert intended.get((name, port["name"])) != ANY_SOURCE, f"{where}: public and scraped"
            intended[(name, port["name"])] = PROMETHEUS_PEERS
    return intended


def check_admission(objects: tuple[Obj, ...], workload_name: str) -> None:
    """Every declared port of the pods admitted exactly as intended; no other port."""
    workload = find(objects, "Deployment", workload_name)
    namespace = workload["metadata"]["namespace"]
    policies = [
        policy
        for policy in objects_of(objects, "NetworkPolicy")
        if policy["metadata"]["namespace"] == namespace
        and selects(policy["spec"]["podSelector"], pod_labels(workload))
        and "Ingress" in policy["spec"].get("policyTypes", ["Ingress"])
    ]
    # Without one, Kubernetes admits anyone to every port.
    assert policies, f"no NetworkPolicy selects the pods of {workload_name}"
    intended = purposes(objects, workload)
    declared = [
        (entry["name"], port) for entry in containers(workload) for port in entry.get("ports", [])
    ]
    for name, port in declared:
        where = f"{workload_name}/{name} port {port['name']} ({port['containerPort']})"
        assert (name, port["name"]) in intended, (
            f"{where}: neither behind a Service nor scraped; decide who may reach it"
        )
        assert admitted(policies, port) == intended[(name, port["name"])], where
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            where = f"NetworkPolicy {policy['metadata']['name']}"
            assert rule.get("ports"), f"{where}: a rule without ports admits every port"
            for entry in rule["ports"]:
                assert any(covers(entry, port) for _, port in declared), (
                    f"{where}: {entry} admits a port no container declares"
                )


# --- the policy as rendered -----------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("directory", GATEWAY_VARIANTS, ids=variant_id)
def test_every_variant_with_the_gateway_has_its_policy_valid(directory: Path, version: str) -> None:
    policy = find(render(directory), "NetworkPolicy", "gateway")
    assert policy["metadata"]["namespace"] == "authz"
    kubernetes_validate.validate(policy, version, strict=True)


@pytest.mark.parametrize("directory", GATEWAY_VARIANTS, ids=variant_id)
def test_every_port_of_the_gateway_pods_is_admitted_as_intended(directory: Path) -> None:
    check_admission(render(directory), "gateway")


@pytest.mark.parametrize("directory", GATEWAY_VARIANTS, ids=variant_id)
def test_the_entry_point_and_the_scrape_ports_are_what_the_pods_declare(directory: Path) -> None:
    # The check above, stated for the ports that matter now: it must not pass
    # by finding nothing to check.
    objects = render(directory)
    gateway = find(objects, "Deployment", "gateway")
    intended = purposes(objects, gateway)
    assert intended[("envoy", "http")] == ANY_SOURCE
    assert intended[("envoy", "envoy-metrics")] == PROMETHEUS_PEERS
    if any(entry["name"] == "authz" for entry in containers(gateway)):  # the sidecar topology
        assert intended[("authz", "metrics")] == PROMETHEUS_PEERS


@pytest.mark.parametrize("variant", ["gateway", "sidecar"])
def test_the_scrape_rule_is_the_one_of_authzs_policy(variant: str) -> None:
    # One convention for Prometheus's address, and one patch path to move it
    # (docs/operations.md): rule 1, its first peer.
    authz = find(render(K8S / "base"), "NetworkPolicy", "authz")
    gateway = find(render(K8S / variant), "NetworkPolicy", "gateway")
    assert gateway["spec"]["ingress"][1]["from"] == authz["spec"]["ingress"][1]["from"]
    assert gateway["spec"]["ingress"][1]["from"] == PROMETHEUS_PEERS


def test_authzs_own_pods_are_not_selected_by_the_gateways_policy() -> None:
    objects = render(K8S / "gateway")
    policy = find(objects, "NetworkPolicy", "gateway")
    for workload in objects_of(objects, "Deployment"):
        expected = workload["metadata"]["name"] == "gateway"
        assert selects(policy["spec"]["podSelector"], pod_labels(workload)) == expected


# --- the check fails where it should --------------------------------------------------


def add_debug_port(objects: list[Obj]) -> None:
    envoy = container(find(tuple(objects), "Deployment", "gateway"), "envoy")
    envoy["ports"].append({"name": "debug", "containerPort": 9000, "protocol": "TCP"})


def serve_debug_port_without_a_rule(objects: list[Obj]) -> None:
    add_debug_port(objects)
    service = find(tuple(objects), "Service", "gateway")
    service["spec"]["ports"].append({"name": "debug", "port": 9000, "targetPort": "debug"})


def open_the_scrape_rule_to_all(objects: list[Obj]) -> None:
    del find(tuple(objects), "NetworkPolicy", "gateway")["spec"]["ingress"][1]["from"]


def admit_the_admin_port(objects: list[Obj]) -> None:
    rules = find(tuple(objects), "NetworkPolicy", "gateway")["spec"]["ingress"]
    rules[1]["ports"].append({"port": 9901, "protocol": "TCP"})


def drop_the_ports_of_the_public_rule(objects: list[Obj]) -> None:
    del find(tuple(objects), "NetworkPolicy", "gateway")["spec"]["ingress"][0]["ports"]


def drop_the_policy(objects: list[Obj]) -> None:
    objects.remove(find(tuple(objects), "NetworkPolicy", "gateway"))


def allow_everything_in_the_namespace(objects: list[Obj]) -> None:
    # Policies add up: another one that selects the gateway pods counts too.
    everyone = copy.deepcopy(find(tuple(objects), "NetworkPolicy", "gateway"))
    everyone["metadata"]["name"] = "allow-all"
    everyone["spec"] = {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]}
    objects.append(everyone)


@pytest.mark.parametrize(
    "mutation",
    [
        add_debug_port,
        serve_debug_port_without_a_rule,
        open_the_scrape_rule_to_all,
        admit_the_admin_port,
        drop_the_ports_of_the_public_rule,
        drop_the_policy,
        allow_everything_in_the_namespace,
    ],
    ids=lambda mutation: mutation.__name__,
)
@pytest.mark.parametrize("variant", ["gateway", "sidecar"])
def test_the_admission_check_refuses(variant: str, mutation: Callable[[list[Obj]], None]) -> None:
    objects = copy.deepcopy(list(render(K8S / variant)))
    check_admission(tuple(objects), "gateway")  # as shipped: passes
    mutation(objects)
    with pytest.raises(AssertionError):
        check_admission(tuple(objects), "gateway")
