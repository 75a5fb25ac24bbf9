"""The configuration files inside the rendered ConfigMaps: valid for the real programs.

Each file is taken from the rendered manifests the way the kubelet mounts it
(the container's ``-c`` argument -> volumeMount -> ConfigMap key). Envoy's are
checked by the real Envoy binary (``--mode validate``; a STRICT_DNS name need
not resolve for that), authz's by ``authz check-config --no-fetch``.

Stand-ins, stated: authz's configs read the pod's service-account token and
cluster CA (``/var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt}``),
which exist only in a pod. The check replaces exactly those two paths with a
token file and a real CA certificate made here; every other setting is checked
as rendered. ``--no-fetch`` means the cluster's keys are not fetched (there is
no API server here); tests/deploy/test_sidecar_topology.py fetches them from a
stand-in API server.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.dev.stack import ENVOY_GATEWAY, envoy_binary
from tests.deploy.manifests import (
    K8S,
    SERVICE_ACCOUNT_DIR,
    Obj,
    cluster,
    config_arg,
    connection_manager,
    container,
    find,
    mounted_file,
    only_address,
    render,
)
from tests.support.idp import LoopbackCA

# (variant, Deployment, container) of every program whose config is in a ConfigMap.
ENVOYS = [("gateway", "gateway", "envoy"), ("sidecar", "gateway", "envoy")]
AUTHZS = [
    ("gateway", "authz", "authz"),
    ("sidecar", "gateway", "authz"),
    ("istio", "authz", "authz"),
]


def embedded(variant: str, workload: str, name: str) -> str:
    objects = render(K8S / variant)
    deployment = find(objects, "Deployment", workload)
    return mounted_file(objects, deployment, name, config_arg(container(deployment, name)))


def envoy_validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authz.cli", "check-config", "--no-fetch", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def pod_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Stand-ins for what the kubelet mounts in a pod: a token and the cluster CA."""
    directory = tmp_path_factory.mktemp("serviceaccount")
    token = directory / "token"
    token.write_text("stand-in-service-account-token\n")
    ca = LoopbackCA.create(directory / "ca").ca_file
    return {f"{SERVICE_ACCOUNT_DIR}/token": token, f"{SERVICE_ACCOUNT_DIR}/ca.crt": ca}


def with_stand_ins(text: str, pod_files: dict[str, Path]) -> tuple[str, int]:
    """``text`` with the in-pod paths replaced; also how many were replaced."""
    config: dict[str, Any] = yaml.safe_load(text)
    replaced = 0
    for issuer in config["issuers"]:
        for source in issuer["keys"]:
            for key, value in source.get("kubernetes", {}).items():
                if isinstance(value, str) and value.startswith("/"):
                    assert value in pod_files, f"{key}: {value} is not a path a pod has"
                    source["kubernetes"][key] = str(pod_files[value])
                    replaced += 1
    return yaml.safe_dump(config, sort_keys=False), replaced


@pytest.mark.e2e
@pytest.mark.parametrize("where", ENVOYS, ids=lambda w: f"{w[0]}-{w[2]}")
def test_embedded_envoy_config_is_valid(where: tuple[str, str, str], tmp_path: Path) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(embedded(*where))
    result = envoy_validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"configuration '{path}' OK" in result.stdout + result.stderr


@pytest.mark.e2e
def test_envoy_validate_rejects_a_broken_embedded_config(tmp_path: Path) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(embedded(*ENVOYS[0]).replace("healthy_threshold", "healthy_treshold"))
    assert envoy_validate(path).returncode != 0


@pytest.mark.parametrize("where", AUTHZS, ids=lambda w: f"{w[0]}-{w[1]}")
def test_embedded_authz_config_passes_check_config(
    where: tuple[str, str, str], tmp_path: Path, pod_files: dict[str, Path]
) -> None:
    text, replaced = with_stand_ins(embedded(*where), pod_files)
    assert replaced == 2  # exactly the token and the CA; nothing else was touched
    path = tmp_path / "authz.yaml"
    path.write_text(text)
    result = check_config(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "issuer https://kubernetes.default.svc.cluster.local:" in result.stdout
    assert "(remote keys not fetched: --no-fetch)" in result.stdout
    assert f"{path}: OK" in result.stdout


def test_check_config_rejects_a_broken_embedded_config(
    tmp_path: Path, pod_files: dict[str, Path]
) -> None:
    text, _ = with_stand_ins(embedded(*AUTHZS[0]), pod_files)
    path = tmp_path / "authz.yaml"
    path.write_text(text.replace("RS256", "RS257"))
    result = check_config(path)
    assert result.returncode == 2
    assert "algorithms[0]" in result.stderr


def test_without_stand_ins_offline_validation_needs_no_in_pod_file(tmp_path: Path) -> None:
    # Outside a pod the cluster CA is absent: --no-fetch (what CI runs) does not
    # read it, and the embedded config validates all the same.
    assert not Path(f"{SERVICE_ACCOUNT_DIR}/ca.crt").exists()
    path = tmp_path / "authz.yaml"
    path.write_text(embedded(*AUTHZS[0]))
    result = check_config(path)
    assert result.returncode == 0, result.stderr
    assert "remote keys not fetched: --no-fetch" in result.stdout


# --- the cluster's Envoy config is envoy/gateway.yaml, changed only as documented ---


def k8s_envoy(variant: str) -> Obj:
    config: Obj = yaml.safe_load(embedded(variant, "gateway", "envoy"))
    return config


DNS_CLUSTER_KEYS = {"dns_lookup_family", "dns_refresh_rate"}
HEALTH_KEYS = {"health_checks", "common_lb_config"}


def test_k8s_gateway_config_is_envoy_gateway_yaml_with_the_documented_changes() -> None:
    local: Obj = yaml.safe_load(ENVOY_GATEWAY.read_text())
    k8s = k8s_envoy("gateway")

    # 1. Admin stays on loopback; the listener binds every address.
    assert k8s["admin"] == local["admin"]
    k8s_listener, stats_listener = k8s["static_resources"]["listeners"]
    assert_statistics_window(k8s, stats_listener)
    (local_listener,) = local["static_resources"]["listeners"]
    assert k8s_listener["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 8080}  # noqa: S104

    # 2. The HTTP connection manager is identical (ext_authz filter, access log,
    #    /healthz), except the routes after /healthz.
    k8s_manager = copy.deepcopy(connection_manager(k8s))
    local_manager = copy.deepcopy(connection_manager(local))
    (k8s_host,) = k8s_manager["route_config"]["virtual_hosts"]
    (local_host,) = local_manager["route_config"]["virtual_hosts"]
    healthz, *k8s_routes = k8s_host.pop("routes")
    local_healthz, local_catch_all = local_host.pop("routes")
    assert healthz == local_healthz
    assert local_catch_all["route"] == {"cluster": "upstream"}
    assert [(r["match"], r["route"]) for r in k8s_routes] == [
        ({"path_separated_prefix": "/orders"}, {"cluster": "orders"}),
        ({"path_separated_prefix": "/payments"}, {"cluster": "payments"}),
    ]
    assert k8s_manager == local_manager
    for listener in (k8s_listener, local_listener):
        listener.pop("address")
        listener["filter_chains"][0]["filters"][0].pop("typed_config")
    assert k8s_listener == local_listener

    # 3. The authz cluster: the same settings, resolved by DNS and health-checked.
    k8s_authz = copy.deepcopy(cluster(k8s, "authz"))
    local_authz = copy.deepcopy(cluster(local, "authz"))
    assert k8s_authz.pop("type") == "STRICT_DNS"
    assert set(k8s_authz) - set(local_authz) == DNS_CLUSTER_KEYS | HEALTH_KEYS
    for key in (*DNS_CLUSTER_KEYS, *HEALTH_KEYS):
        k8s_authz.pop(key)
    assert only_address(k8s_authz)["socket_address"]["address"].endswith(".svc.cluster.local")
    for each in (k8s_authz, local_authz):
        each.pop("load_assignment")
    local_authz.pop("type")
    assert k8s_authz == local_authz

    # 4. "upstream" became the two example services, with its settings.
    names = [c["name"] for c in k8s["static_resources"]["clusters"]]
    assert names == ["authz", "orders", "payments", "envoy_admin"]
    upstream = cluster(local, "upstream")
    for name in ("orders", "payments"):
        example = copy.deepcopy(cluster(k8s, name))
        assert example.pop("type") == "STRICT_DNS"
        assert (
            example.pop("dns_lookup_family")
            == k8s["static_resources"]["clusters"][0]["dns_lookup_family"]
        )
        assert example["connect_timeout"] == upstream["connect_timeout"]
        assert example["load_assignment"]["cluster_name"] == name

    # Nothing else at the top level.
    assert set(k8s) == set(local)


def assert_statistics_window(config: Obj, listener: Obj) -> None:
    """The second listener serves admin's /stats/prometheus, and only that, on every address."""
    assert listener["name"] == "envoy_metrics"
    assert listener["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 9902}  # noqa: S104
    (chain,) = listener["filter_chains"]
    (manager,) = chain["filters"]
    typed = manager["typed_config"]
    assert [f["name"] for f in typed["http_filters"]] == ["envoy.filters.http.router"]
    (host,) = typed["route_config"]["virtual_hosts"]
    (route,) = host["routes"]
    assert route == {"match": {"path": "/stats/prometheus"}, "route": {"cluster": "envoy_admin"}}
    admin_socket = config["admin"]["address"]["socket_address"]
    assert only_address(cluster(config, "envoy_admin"))["socket_address"] == admin_socket
    assert cluster(config, "envoy_admin")["type"] == "STATIC"


def test_sidecar_envoy_differs_from_the_gateway_envoy_only_in_the_authz_cluster() -> None:
    gateway = k8s_envoy("gateway")
    sidecar = k8s_envoy("sidecar")
    gateway_authz = cluster(gateway, "authz")
    sidecar_authz = cluster(sidecar, "authz")
    assert sidecar_authz["type"] == "STATIC"
    assert set(only_address(sidecar_authz)) == {"pipe"}
    expected = {
        key: value
        for key, value in gateway_authz.items()
        if key not in DNS_CLUSTER_KEYS | HEALTH_KEYS | {"type", "load_assignment"}
    }
    assert {k: v for k, v in sidecar_authz.items() if k not in {"type", "load_assignment"}} == (
        expected
    )
    for config in (gateway, sidecar):
        config["static_resources"]["clusters"] = [
            c for c in config["static_resources"]["clusters"] if c["name"] != "authz"
        ]
    assert sidecar == gateway
