"""k8s/tls: the gateway topology with Envoy -> authz over mutual TLS.

Rendered as users combine it (k8s/gateway + the component: overlays/tls), the
manifests must agree with themselves (and with k8s/observability added too,
overlays/tls-observability, they are the same plus its variables): authz's
configuration is k8s/base's with the tls section, Envoy's is k8s/gateway's
with the authz cluster over TLS; every certificate path is a key of the Secret
mounted there, and cert-manager's Certificates issue those Secrets with the
names and usages the configs check; the probes reach the TLS listener with the
same files.

Then the rendered configurations run: Envoy's passes ``envoy --mode validate``
and ``authz check-envoy``, authz's ``authz check-config``; and the real Envoy
and authz, with certificates from a test CA in directories laid out as the
kubelet lays out a Secret volume, allow and deny over mutual TLS, answer the
manifests' probes, and Envoy takes a renewed certificate without a restart.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
import yaml
from cryptography import x509

from authz.config.loader import parse_config
from authz.dev.stack import EnvoyProcess, Stack, envoy_binary, http_request
from tests.deploy.conftest import SUBJECT, ClusterStandIn, poll, probe_exit
from tests.deploy.manifests import (
    K8S,
    REPO_ROOT,
    Obj,
    cluster,
    config_arg,
    container,
    find,
    mounted_file,
    objects_of,
    only_address,
    pod_spec,
    render,
    scraped_ports,
)
from tests.support.pki import Issued, TestCA

OVERLAY = Path(__file__).parent / "overlays" / "tls"
# The same with k8s/observability too, as a user enabling both combines them.
TLS_OBSERVABILITY = Path(__file__).parent / "overlays" / "tls-observability"
PROMETHEUS = K8S / "observability" / "prometheus"
CERT_MANAGER = K8S / "tls" / "cert-manager"
SECRET_KEYS = {"tls.crt", "tls.key", "ca.crt"}
SDS_FILES = ("/etc/envoy/sds-authz-client.yaml", "/etc/envoy/sds-authz-ca.yaml")
# The cert-manager fields used here and their neighbours (cert-manager.io/v1);
# no schema is bundled for custom resources.
CERTIFICATE_SPEC = {
    "secretName",
    "commonName",
    "dnsNames",
    "usages",
    "duration",
    "renewBefore",
    "privateKey",
    "issuerRef",
    "isCA",
}


def objects() -> tuple[Obj, ...]:
    return render(OVERLAY)


def deployment(name: str) -> Obj:
    return find(objects(), "Deployment", name)


def file_in(workload: str, name: str, path: str) -> str:
    return mounted_file(objects(), deployment(workload), name, path)


def authz_text() -> str:
    authz = deployment("authz")
    return file_in("authz", "authz", config_arg(container(authz, "authz")))


def envoy_text() -> str:
    gateway = deployment("gateway")
    return file_in("gateway", "envoy", config_arg(container(gateway, "envoy")))


def envoy_of(variant_dir: Path) -> Obj:
    rendered = render(variant_dir)
    gateway = find(rendered, "Deployment", "gateway")
    text = mounted_file(rendered, gateway, "envoy", config_arg(container(gateway, "envoy")))
    config: Obj = yaml.safe_load(text)
    return config


def secret_key(workload: str, name: str, path: str) -> tuple[str, str]:
    """(Secret name, key) of the file a container sees at ``path``."""
    target = PurePosixPath(path)
    for mount in container(deployment(workload), name).get("volumeMounts", []):
        if PurePosixPath(mount["mountPath"]) == target.parent:
            (volume,) = [
                v for v in pod_spec(deployment(workload))["volumes"] if v["name"] == mount["name"]
            ]
            assert "secret" in volume, f"{path} is not on a Secret volume"
            assert mount.get("readOnly") is True
            return volume["secret"]["secretName"], target.name
    raise AssertionError(f"nothing is mounted at {target.parent} in {workload}/{name}")


def transport(config: Obj) -> Obj:
    socket: Obj = cluster(config, "authz")["transport_socket"]
    assert socket["name"] == "envoy.transport_sockets.tls"
    typed: Obj = socket["typed_config"]
    assert typed["@type"].endswith("tls.v3.UpstreamTlsContext")
    return typed


def sds_secret(path: str) -> Obj:
    (resource,) = yaml.safe_load(file_in("gateway", "envoy", path))["resources"]
    assert resource["@type"].endswith("tls.v3.Secret")
    found: Obj = resource
    return found


def service_name() -> str:
    service = find(objects(), "Service", "authz")
    return f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"


def certificates() -> dict[str, Obj]:
    return {c["metadata"]["name"]: c for c in objects_of(render(CERT_MANAGER), "Certificate")}


# --- the manifests agree --------------------------------------------------------------


def test_authz_config_is_the_base_config_with_tls_required_of_clients() -> None:
    tls_config: Obj = yaml.safe_load(authz_text())
    base: Obj = yaml.safe_load(file_in_variant("gateway", "authz"))
    tls = tls_config.pop("tls")
    assert tls_config == base
    assert set(tls) == {"cert_file", "key_file", "client_ca_file"}  # client certificates required
    secrets = {key: secret_key("authz", "authz", path) for key, path in tls.items()}
    assert secrets == {
        "cert_file": ("authz-tls", "tls.crt"),
        "key_file": ("authz-tls", "tls.key"),
        "client_ca_file": ("authz-tls", "ca.crt"),
    }
    parsed = parse_config(authz_text())
    assert parsed.tls is not None


def file_in_variant(variant: str, workload: str) -> str:
    rendered = render(K8S / variant)
    found = find(rendered, "Deployment", workload)
    return mounted_file(rendered, found, "authz", config_arg(container(found, "authz")))


def test_envoy_config_is_the_gateway_config_with_the_authz_cluster_over_tls() -> None:
    tls_config = envoy_of(OVERLAY)
    gateway = envoy_of(K8S / "gateway")
    without = copy.deepcopy(tls_config)
    assert without.pop("node") == {"id": "gateway", "cluster": "gateway"}  # SDS needs it
    cluster(without, "authz").pop("transport_socket")
    assert without == gateway


def test_envoy_checks_the_name_of_the_service_it_resolves() -> None:
    config = envoy_of(OVERLAY)
    name = service_name()
    assert only_address(cluster(config, "authz"))["socket_address"]["address"] == name
    context = transport(config)
    assert context["sni"] == name
    common = context["common_tls_context"]
    assert common["alpn_protocols"] == ["h2"]  # gRPC
    validation = common["combined_validation_context"]
    assert validation["default_validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": name}}
    ]
    assert name in certificates()["authz-tls"]["spec"]["dnsNames"]


def test_envoys_certificates_come_from_its_secret_through_watched_sds_files() -> None:
    common = transport(envoy_of(OVERLAY))["common_tls_context"]
    (client,) = common["tls_certificate_sds_secret_configs"]
    ca = common["combined_validation_context"]["validation_context_sds_secret_config"]
    for reference, path in zip((client, ca), SDS_FILES, strict=True):
        source = reference["sds_config"]
        assert source == {"path_config_source": {"path": path}, "resource_api_version": "V3"}
        assert sds_secret(path)["name"] == reference["name"]
    certificate = sds_secret(SDS_FILES[0])["tls_certificate"]
    validation = sds_secret(SDS_FILES[1])["validation_context"]
    files = {
        "tls.crt": certificate["certificate_chain"]["filename"],
        "tls.key": certificate["private_key"]["filename"],
        "ca.crt": validation["trusted_ca"]["filename"],
    }
    for key, path in files.items():
        assert secret_key("gateway", "envoy", path) == ("gateway-authz-tls", key)
    # The directory Kubernetes swaps a new Secret into, not the files' links.
    directory = str(PurePosixPath(files["tls.crt"]).parent)
    assert (
        certificate["watched_directory"] == validation["watched_directory"] == {"path": directory}
    )


def test_cert_manager_issues_the_secrets_the_pods_mount() -> None:
    found = certificates()
    for name, certificate in found.items():
        assert set(certificate["spec"]) <= CERTIFICATE_SPEC, name
    authz, envoy = found["authz-tls"]["spec"], found["gateway-authz-tls"]["spec"]
    assert authz["secretName"] == secret_key("authz", "authz", "/etc/authz-tls/tls.crt")[0]
    assert envoy["secretName"] == secret_key("gateway", "envoy", "/etc/envoy-tls/tls.crt")[0]
    # authz serves with it, and its probes present it as a client certificate.
    assert {"server auth", "client auth"} <= set(authz["usages"])
    assert "client auth" in envoy["usages"]
    assert "server auth" not in envoy["usages"]
    # One CA issues both: each Secret's ca.crt is the other side's issuer.
    assert authz["issuerRef"] == envoy["issuerRef"] == {"name": "authz-ca", "kind": "Issuer"}
    (issuer,) = [
        i for i in objects_of(render(CERT_MANAGER), "Issuer") if i["metadata"]["name"] == "authz-ca"
    ]
    assert issuer["spec"]["ca"]["secretName"] == found["authz-ca"]["spec"]["secretName"]
    assert found["authz-ca"]["spec"]["isCA"] is True
    for obj in render(CERT_MANAGER):
        assert obj["metadata"]["namespace"] == "authz"


def probe_command(name: str) -> list[str]:
    command: list[str] = container(deployment("authz"), "authz")[name]["exec"]["command"]
    return command


def option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


@pytest.mark.parametrize("name", ["readinessProbe", "livenessProbe"])
def test_the_probes_ask_the_tls_listener_with_authzs_own_files(name: str) -> None:
    command = probe_command(name)
    tls = parse_config(authz_text()).tls
    assert tls is not None
    assert option(command, "--tls-ca") == str(tls.client_ca_file)
    assert option(command, "--tls-cert") == str(tls.cert_file)
    assert option(command, "--tls-key") == str(tls.key_file)
    assert option(command, "--tls-server-name") == service_name()
    port = parse_config(authz_text()).listen.rsplit(":", 1)[1]
    assert command[-1] == f"127.0.0.1:{port}"
    assert ("--alive" in command) == (name == "livenessProbe")
    assert "grpc" not in container(deployment("authz"), "authz")[name]  # plaintext only


def test_the_overlay_of_the_deployment_page_is_the_one_tested(tmp_path: Path) -> None:
    page = (REPO_ROOT / "docs" / "deployment.md").read_text()
    start = page.index("# my-gateway/kustomization.yaml", page.index("### TLS between Envoy"))
    overlay: Obj = yaml.safe_load(page[start : page.index("```", start)])
    assert overlay["resources"] == ["../k8s/gateway"]
    assert overlay["components"] == ["../k8s/tls"]
    overlay["resources"] = [os.path.relpath(K8S / "gateway", tmp_path)]
    overlay["components"] = [os.path.relpath(K8S / "tls", tmp_path)]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    assert render(tmp_path) == objects()


@pytest.mark.parametrize("name", ["authz", "gateway"])
def test_the_network_policies_are_unchanged(name: str) -> None:
    assert find(objects(), "NetworkPolicy", name) == find(
        render(K8S / "gateway"), "NetworkPolicy", name
    )


# --- with the observability component too ----------------------------------------------


def without_otel(rendered: tuple[Obj, ...]) -> list[Obj]:
    """The objects with the observability component's variables taken off authz."""
    stripped = copy.deepcopy(list(rendered))
    authz = container(find(tuple(stripped), "Deployment", "authz"), "authz")
    authz["env"] = [item for item in authz["env"] if not item["name"].startswith("OTEL_")]
    return stripped


def test_with_observability_the_render_is_the_tls_one_plus_the_otel_variables() -> None:
    # So the TLS probes, volumes and configs all survive, and nothing else moves.
    combined = render(TLS_OBSERVABILITY)
    authz = container(find(combined, "Deployment", "authz"), "authz")
    otel = {item["name"] for item in authz["env"] if item["name"].startswith("OTEL_")}
    assert otel >= {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME"}
    assert without_otel(combined) == list(objects())


@pytest.mark.parametrize("name", ["readinessProbe", "livenessProbe"])
def test_with_observability_the_probes_still_speak_tls(name: str) -> None:
    authz = container(find(render(TLS_OBSERVABILITY), "Deployment", "authz"), "authz")
    command = authz[name]["exec"]["command"]
    assert command == probe_command(name)
    for flag in ("--tls-ca", "--tls-cert", "--tls-key", "--tls-server-name"):
        assert flag in command


def test_the_components_combine_alike_in_either_order(tmp_path: Path) -> None:
    overlay: Obj = yaml.safe_load((TLS_OBSERVABILITY / "kustomization.yaml").read_text())
    overlay["resources"] = [os.path.relpath(K8S / "gateway", tmp_path)]
    overlay["components"] = [
        os.path.relpath(K8S / "observability", tmp_path),
        os.path.relpath(K8S / "tls", tmp_path),
    ]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    assert render(tmp_path) == render(TLS_OBSERVABILITY)


def test_with_observability_every_podmonitor_selects_pods_that_exist() -> None:
    combined = render(TLS_OBSERVABILITY)
    for monitor in objects_of(render(PROMETHEUS), "PodMonitor"):
        scraped = [
            (workload["metadata"]["name"], name, port["name"])
            for workload in objects_of(combined, "Deployment")
            for name, port in scraped_ports(monitor, workload)
        ]
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        assert scraped, f"PodMonitor {monitor['metadata']['name']} scrapes no pod"
        assert {port for _, _, port in scraped} == {endpoint["port"]}
    envoy = find(render(PROMETHEUS), "PodMonitor", "gateway-envoy")
    (gateway,) = [w for w in objects_of(combined, "Deployment") if scraped_ports(envoy, w)]
    assert gateway["metadata"]["name"] == "gateway"
    authz = find(render(PROMETHEUS), "PodMonitor", "authz")
    (workload,) = [w for w in objects_of(combined, "Deployment") if scraped_ports(authz, w)]
    assert workload["metadata"]["name"] == "authz"


# --- the rendered configurations, run -------------------------------------------------


class Pod:
    """The pod's files on this machine: Secret volumes laid out as the kubelet does
    (files linked through ``..data``, which a renewal swaps), and the SDS files."""

    def __init__(self, root: Path, ca: TestCA) -> None:
        self.root = root
        self.ca = ca
        self.moves: dict[str, str] = {}
        self.generation = 0
        self.authz_dir = self.secret("/etc/authz-tls", ca.issue(service_name(), both=True))
        self.envoy_dir = self.secret("/etc/envoy-tls", ca.issue("gateway", client=True))
        for path in SDS_FILES:
            local = root / PurePosixPath(path).name
            local.write_text(self.relocate(file_in("gateway", "envoy", path)))
            self.moves[path] = str(local)

    def secret(self, mount: str, issued: Issued) -> Path:
        directory = self.root / PurePosixPath(mount).name
        directory.mkdir()
        self.renew(directory, issued)
        for key in SECRET_KEYS:
            (directory / key).symlink_to(f"..data/{key}")
        self.moves[mount] = str(directory)
        return directory

    def renew(self, directory: Path, issued: Issued) -> None:
        """What the kubelet does with an updated Secret: a new timestamped
        directory, then one rename of ``..data`` onto it."""
        self.generation += 1
        version = directory / f"..{self.generation}"
        version.mkdir()
        (version / "tls.crt").write_bytes(issued.cert_file.read_bytes())
        (version / "tls.key").write_bytes(issued.key_file.read_bytes())
        (version / "ca.crt").write_bytes(self.ca.ca_file.read_bytes())
        link = directory / "..data_tmp"
        link.symlink_to(version.name)
        os.replace(link, directory / "..data")

    def relocate(self, text: str) -> str:
        for path, local in self.moves.items():
            text = text.replace(path, local)
        return text


def test_the_embedded_configs_pass_envoy_validate_check_envoy_and_check_config(
    tmp_path: Path, cluster_api: ClusterStandIn
) -> None:
    pod = Pod(tmp_path, TestCA(tmp_path / "pki"))
    envoy = tmp_path / "envoy.yaml"
    envoy.write_text(pod.relocate(envoy_text()))
    assert "/etc/envoy/sds-" not in envoy.read_text()
    validated = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(envoy), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert f"configuration '{envoy}' OK" in validated.stdout + validated.stderr

    authz = tmp_path / "authz.yaml"
    authz.write_text(pod.relocate(cluster_api.localize(authz_text(), "127.0.0.1:0")))
    # The rendered ConfigMap as it is, with authz's configuration beside it.
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(objects(), sort_keys=False))
    for arguments in ([str(rendered)], ["-c", str(authz), str(envoy)]):
        checked = subprocess.run(
            [sys.executable, "-m", "authz.cli", "check-envoy", *arguments],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "OK (1 HTTP connection manager checked)" in checked.stdout
    configured = subprocess.run(
        [sys.executable, "-m", "authz.cli", "check-config", "--no-fetch", str(authz)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert configured.returncode == 0, configured.stdout + configured.stderr


def test_envoy_validate_rejects_the_tls_cluster_broken(tmp_path: Path) -> None:
    pod = Pod(tmp_path, TestCA(tmp_path / "pki"))
    envoy = tmp_path / "envoy.yaml"
    envoy.write_text(pod.relocate(envoy_text()).replace("validation_context_sds", "validation_sds"))
    validated = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(envoy), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert validated.returncode != 0


def served_serials(envoy: EnvoyProcess) -> set[str]:
    """Serial numbers of the certificates Envoy holds (its client certificate's too)."""
    reply = http_request(f"http://{envoy.admin}/certs").json()
    return {
        entry["serial_number"]
        for item in reply["certificates"]
        for entry in item.get("cert_chain", [])
    }


@pytest.mark.e2e
def test_checks_over_mutual_tls_answer_the_probes_and_survive_a_renewal(
    tmp_path: Path, cluster_api: ClusterStandIn
) -> None:
    ca = TestCA(tmp_path / "pki")
    (tmp_path / "pod").mkdir()
    pod = Pod(tmp_path / "pod", ca)
    config = tmp_path / "authz.yaml"
    config.write_text(pod.relocate(cluster_api.localize(authz_text(), "127.0.0.1:0")))
    template = tmp_path / "envoy.yaml"
    template.write_text(pod.relocate(envoy_text()))
    audience = parse_config(authz_text()).issuers[0].audiences[0]
    token = cluster_api.token(audience)

    with Stack(
        tmp_path / "stack", config, template, more_upstreams=("orders", "payments")
    ) as stack:
        assert stack.envoy is not None
        target = stack.authz.address
        for name in ("readinessProbe", "livenessProbe"):
            command = [pod.relocate(part) for part in probe_command(name)]
            assert probe_exit(command, target) == 0, name  # Stack waited for SERVING
        # The same listener refuses a client without Envoy's CA behind it.
        plain = ["python", "-m", "authz.probe", "--timeout", "2", "x"]
        assert probe_exit(plain, target) == 2

        allowed = stack.get("/orders/42", {"Authorization": f"Bearer {token}"})
        assert allowed.status == 200, allowed.body
        assert allowed.json()["headers"]["x-auth-subject"] == SUBJECT
        assert stack.get("/orders/42").status == 401
        stats = stack.envoy.stats("cluster.authz.ssl.handshake")
        assert stats["cluster.authz.ssl.handshake"] >= 1

        # cert-manager renews Envoy's certificate: Envoy takes it, no restart.
        before = served_serials(stack.envoy)
        renewed = ca.issue("gateway", client=True, stem="gateway-renewed")
        pod.renew(pod.envoy_dir, renewed)
        renewed_serial = format(_serial(renewed), "x")
        envoy = stack.envoy
        poll(
            "Envoy to hold the renewed certificate", lambda: renewed_serial in served_serials(envoy)
        )
        assert before - served_serials(envoy)  # the old one is gone
        again = stack.get("/payments/7", {"Authorization": f"Bearer {token}"})
        assert again.status == 200, again.body


def _serial(issued: Issued) -> int:
    return x509.load_pem_x509_certificate(issued.cert_file.read_bytes()).serial_number
