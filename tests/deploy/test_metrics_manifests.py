"""Metrics in k8s/: served where the manifests say, admitted, scraped, alerted on, shown.

authz's configuration in each topology turns the scrape endpoint on; the
container declares that port as `metrics`; the NetworkPolicy admits the
monitoring namespace to that port alone; the PodMonitor in
k8s/observability/prometheus selects exactly the authz containers; and the
dashboard ConfigMap is what Grafana's sidecar loads. The rules themselves are
tested with promtool in tests/observability.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.config.loader import parse_config
from tests.deploy.manifests import (
    K8S,
    Obj,
    config_arg,
    container,
    containers,
    find,
    mounted_file,
    objects_of,
    render,
)
from tests.support.readme import section

PROMETHEUS = K8S / "observability" / "prometheus"
METRICS_PORT = 9464
ENVOY_METRICS_PORT = 9902
MONITORING = {"kubernetes.io/metadata.name": "monitoring"}
# (variant, Deployment) of every pod that runs authz.
AUTHZ_PODS = [("gateway", "authz"), ("sidecar", "gateway"), ("istio", "authz")]

# The PodMonitor fields used here and their neighbours in monitoring.coreos.com/v1;
# the Prometheus operator's CRD rejects unknown ones, and no schema is bundled here.
PODMONITOR_SPEC = {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel"}
ENDPOINT_FIELDS = {
    "port",
    "path",
    "scheme",
    "interval",
    "scrapeTimeout",
    "relabelings",
    "metricRelabelings",
    "honorLabels",
}
RELABEL_FIELDS = {"sourceLabels", "separator", "targetLabel", "regex", "replacement", "action"}


def metrics_listen(variant: str, workload: str) -> str:
    objects = render(K8S / variant)
    deployment = find(objects, "Deployment", workload)
    text = mounted_file(objects, deployment, "authz", config_arg(container(deployment, "authz")))
    listen = parse_config(text).telemetry.metrics.listen
    assert listen is not None, f"{variant}: metrics are off"
    return listen


def named_port(entry: Obj, name: str) -> Obj:
    (port,) = [p for p in entry.get("ports", []) if p["name"] == name]
    found: Obj = port
    return found


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def pod_labels(workload: Obj) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


@pytest.mark.parametrize(("variant", "workload"), AUTHZ_PODS)
def test_authz_serves_metrics_on_its_declared_metrics_port(variant: str, workload: str) -> None:
    host, _, port = metrics_listen(variant, workload).rpartition(":")
    assert host == "0.0.0.0"  # noqa: S104 (the pod's address: Prometheus scrapes it)
    deployment = find(render(K8S / variant), "Deployment", workload)
    declared = named_port(container(deployment, "authz"), "metrics")
    assert declared == {"name": "metrics", "containerPort": int(port), "protocol": "TCP"}
    assert int(port) == METRICS_PORT
    # One network namespace per pod: no other container may use the port.
    for entry in containers(deployment):
        if entry["name"] != "authz":
            assert all(p["containerPort"] != int(port) for p in entry.get("ports", []))


def test_the_sidecar_metrics_port_is_free_of_envoy() -> None:
    objects = render(K8S / "sidecar")
    gateway = find(objects, "Deployment", "gateway")
    envoy = mounted_file(objects, gateway, "envoy", config_arg(container(gateway, "envoy")))
    config: dict[str, Any] = yaml.safe_load(envoy)
    ports = {config["admin"]["address"]["socket_address"]["port_value"]}
    ports |= {
        listener["address"]["socket_address"]["port_value"]
        for listener in config["static_resources"]["listeners"]
    }
    assert METRICS_PORT not in ports


def test_the_network_policy_admits_scrapes_from_the_monitoring_namespace_only() -> None:
    objects = render(K8S / "gateway")
    policy = find(objects, "NetworkPolicy", "authz")
    gateway_rule, scrapes = policy["spec"]["ingress"]
    assert scrapes == {
        "from": [{"namespaceSelector": {"matchLabels": MONITORING}}],
        "ports": [{"port": METRICS_PORT, "protocol": "TCP"}],
    }
    # The gateway reaches gRPC only, not the metrics port.
    assert [p["port"] for p in gateway_rule["ports"]] == [9001]
    assert labels_match(
        policy["spec"]["podSelector"]["matchLabels"],
        pod_labels(find(objects, "Deployment", "authz")),
    )
    # Istio's example replaces the callers, and keeps the scrape rule.
    istio = find(render(K8S / "istio"), "NetworkPolicy", "authz")
    assert istio["spec"]["ingress"][1] == scrapes


def relative(target: Path, start: Path) -> str:
    return os.path.relpath(target, start)


def test_the_readme_patch_moves_the_scrape_rule_to_another_namespace(tmp_path: Path) -> None:
    kubernetes = section("Metrics, alerts and the dashboard")
    start = kubernetes.index("# my-monitoring/kustomization.yaml")
    block = kubernetes[start : kubernetes.index("```", start)]
    overlay: dict[str, Any] = yaml.safe_load(block)
    assert overlay["resources"] == ["../k8s/gateway"]
    overlay["resources"] = [relative(K8S / "gateway", tmp_path)]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    moved = render(tmp_path)
    # Both policies that admit scrapes: authz's, and the gateway pods' (Envoy's statistics).
    for name, port in (("authz", METRICS_PORT), ("gateway", ENVOY_METRICS_PORT)):
        _, scrapes = find(moved, "NetworkPolicy", name)["spec"]["ingress"]
        assert scrapes["from"] == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}}
        ], name
        assert scrapes["ports"] == [{"port": port, "protocol": "TCP"}], name
    # Nothing but the namespaces changed.
    for policy in objects_of(render(K8S / "gateway"), "NetworkPolicy"):
        if policy["metadata"]["name"] == "example-services":
            continue
        after = find(moved, "NetworkPolicy", policy["metadata"]["name"])
        assert after["spec"]["ingress"][0] == policy["spec"]["ingress"][0]
        assert after["spec"]["ingress"][1]["ports"] == policy["spec"]["ingress"][1]["ports"]


# --- k8s/observability/prometheus ----------------------------------------------------


def prometheus_objects() -> tuple[Obj, ...]:
    return render(PROMETHEUS)


def test_the_prometheus_kustomization_holds_the_monitor_the_rules_and_the_dashboard() -> None:
    kinds = sorted((obj["kind"], obj["metadata"]["name"]) for obj in prometheus_objects())
    assert kinds == [
        ("ConfigMap", "authz-dashboard"),
        ("PodMonitor", "authz"),
        ("PodMonitor", "gateway-envoy"),
        ("PrometheusRule", "authz"),
    ]
    for obj in prometheus_objects():
        assert (
            obj["metadata"]["namespace"] == "authz"
        )  # the pods' namespace: the PodMonitor's default
    # Kept out of every topology: those apply where the operator's CRDs are absent.
    for variant in ("base", "gateway", "sidecar", "istio"):
        assert not [o for o in render(K8S / variant) if o["apiVersion"].startswith("monitoring.")]


def test_the_podmonitor_scrapes_the_authz_container_of_every_authz_pod() -> None:
    monitor = find(prometheus_objects(), "PodMonitor", "authz")
    spec = monitor["spec"]
    assert set(spec) <= PODMONITOR_SPEC
    (endpoint,) = spec["podMetricsEndpoints"]
    assert set(endpoint) <= ENDPOINT_FIELDS
    assert all(set(r) <= RELABEL_FIELDS for r in endpoint["relabelings"])
    assert endpoint["port"] == "metrics"
    keep = [r for r in endpoint["relabelings"] if r["action"] == "keep"]
    assert keep == [
        {
            "sourceLabels": ["__meta_kubernetes_pod_container_name"],
            "regex": "authz",
            "action": "keep",
        }
    ]
    (expression,) = spec["selector"]["matchExpressions"]
    assert expression["operator"] == "In"
    selected = {(expression["key"], value) for value in expression["values"]}

    for variant, workload in AUTHZ_PODS:
        deployment = find(render(K8S / variant), "Deployment", workload)
        assert set(pod_labels(deployment).items()) & selected, f"{variant}: not selected"
        assert named_port(container(deployment, "authz"), endpoint["port"])
    # Whatever else is selected (the gateway topology's Envoy pods carry the
    # gateway label too) offers the keep rule no authz container.
    for variant in ("gateway", "sidecar", "istio"):
        for other in objects_of(render(K8S / variant), "Deployment"):
            if not set(pod_labels(other).items()) & selected:
                continue
            others = [c for c in containers(other) if c["name"] != "authz"]
            assert not [p for c in others for p in c.get("ports", []) if p["name"] == "metrics"]


def test_the_dashboard_configmap_is_what_grafanas_sidecar_loads() -> None:
    config_map = find(prometheus_objects(), "ConfigMap", "authz-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (name,) = config_map["data"]
    assert name.endswith(".json")
    board: dict[str, Any] = json.loads(config_map["data"][name])
    assert board == json.loads((PROMETHEUS / name).read_text())
    assert board["uid"] == "authz"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert all(t["datasource"] == panel["datasource"] for t in panel["targets"])


def test_the_dashboard_shows_what_operators_ask_about() -> None:
    board: dict[str, Any] = json.loads((PROMETHEUS / "authz-dashboard.json").read_text())
    shown = "\n".join(t["expr"] for p in board["panels"] for t in p.get("targets", []))
    for metric in (
        "authz_decisions_total",  # by reason and by route
        "authz_check_duration_seconds_bucket",  # latency
        "authz_key_age_seconds",
        "authz_key_fetches_total",
        "authz_token_cache_lookups_total",  # the token cache's hit ratio
        "authz_audit_records_total",  # drops
        "authz_shadow_decisions_total",  # would-be denies
        "process_cpu_seconds_total",
    ):
        assert metric in shown, metric
    assert "vector(0.25)" in shown  # Envoy's timeout, drawn beside the latency
    for layout in ("sum by (decision, reason)", "sum by (route, decision)"):
        assert layout in shown


def test_the_release_label_overlay_of_the_observability_readme(tmp_path: Path) -> None:
    text = (K8S / "observability" / "README.md").read_text()
    start = text.index("# my-prometheus/kustomization.yaml")
    overlay: dict[str, Any] = yaml.safe_load(text[start : text.index("```", start)])
    assert overlay["resources"] == ["../k8s/observability/prometheus"]
    overlay["resources"] = [relative(PROMETHEUS, tmp_path)]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    for obj in render(tmp_path):
        assert obj["metadata"]["labels"]["release"] == "monitoring", obj["kind"]


# --- the gateway Envoy's statistics ------------------------------------------------------


def envoy_config(variant: str) -> Obj:
    objects = render(K8S / variant)
    gateway = find(objects, "Deployment", "gateway")
    text = mounted_file(objects, gateway, "envoy", config_arg(container(gateway, "envoy")))
    config: Obj = yaml.safe_load(text)
    return config


@pytest.mark.parametrize("variant", ["gateway", "sidecar"])
def test_the_envoy_podmonitor_scrapes_the_statistics_window_of_every_gateway_pod(
    variant: str,
) -> None:
    monitor = find(prometheus_objects(), "PodMonitor", "gateway-envoy")
    spec = monitor["spec"]
    assert set(spec) <= PODMONITOR_SPEC
    (endpoint,) = spec["podMetricsEndpoints"]
    assert set(endpoint) <= ENDPOINT_FIELDS
    assert all(set(r) <= RELABEL_FIELDS for r in endpoint["relabelings"])
    objects = render(K8S / variant)
    gateway = find(objects, "Deployment", "gateway")
    assert labels_match(spec["selector"]["matchLabels"], pod_labels(gateway))
    # The port is Envoy's, and it is the envoy_metrics listener, which routes
    # the scraped path (and only it) to admin.
    declared = named_port(container(gateway, "envoy"), endpoint["port"])
    assert declared == {
        "name": "envoy-metrics",
        "containerPort": ENVOY_METRICS_PORT,
        "protocol": "TCP",
    }
    config = envoy_config(variant)
    (window,) = [
        item
        for item in config["static_resources"]["listeners"]
        if item["address"]["socket_address"]["port_value"] == declared["containerPort"]
    ]
    manager = window["filter_chains"][0]["filters"][0]["typed_config"]
    (host,) = manager["route_config"]["virtual_hosts"]
    assert [route["match"] for route in host["routes"]] == [{"path": endpoint["path"]}]
    assert endpoint["path"] == "/stats/prometheus"
    # Only the gateway's pods: authz's own carry no such port.
    for other in objects_of(objects, "Deployment"):
        if other is not gateway:
            assert not labels_match(spec["selector"]["matchLabels"], pod_labels(other))


@pytest.mark.parametrize("variant", ["gateway", "sidecar"])
def test_no_service_exposes_envoys_admin_or_its_statistics(variant: str) -> None:
    objects = render(K8S / variant)
    config = envoy_config(variant)
    admin = config["admin"]["address"]["socket_address"]
    assert admin["address"] == "127.0.0.1"
    gateway = find(objects, "Deployment", "gateway")
    envoy_ports = {p["name"]: p["containerPort"] for p in container(gateway, "envoy")["ports"]}
    assert admin["port_value"] not in envoy_ports.values()
    for service in objects_of(objects, "Service"):
        for port in service["spec"]["ports"]:
            assert port.get("targetPort") not in ("envoy-metrics", ENVOY_METRICS_PORT)
            assert port["port"] not in (ENVOY_METRICS_PORT, admin["port_value"])


def test_the_envoy_podmonitor_sets_a_job_of_its_own() -> None:
    # Not job="authz": the authz up-alerts must never count Envoy's targets.
    envoy = find(prometheus_objects(), "PodMonitor", "gateway-envoy")
    (endpoint,) = envoy["spec"]["podMetricsEndpoints"]
    (job,) = [r["replacement"] for r in endpoint["relabelings"] if r.get("targetLabel") == "job"]
    assert job == "gateway-envoy"
