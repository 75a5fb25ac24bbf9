"""The issuer examples in k8s/issuers: what they mount, and that authz runs them.

``hs-secret`` verifies HS256 tokens with a key from a Secret mounted as a
file; ``private-ca`` fetches an identity provider's keys over HTTPS trusting
a CA from a ConfigMap. Both are k8s/gateway with one more issuer, and the
tests hold them to that. Their configurations are taken from the rendered
manifests (the container's ``-c`` argument -> volumeMount -> ConfigMap) and
run here with only what differs from a pod changed, each change stated: the
mounted files' paths (the key, the CA bundle), the identity provider's URL,
and, through conftest.py's ``localize``, the cluster's API server stand-in.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.check.decision import Decider, Decision
from authz.check.request import RequestView
from authz.check.verify import Verifier
from authz.config.loader import parse_config
from authz.config.models import Config
from authz.dev.keys import generate, public_jwk
from authz.dev.tokens import claims_for, mint
from authz.keys.store import KeyStore
from tests.deploy.conftest import ClusterStandIn, embedded, poll
from tests.deploy.manifests import (
    K8S,
    REPO_ROOT,
    Obj,
    config_arg,
    container,
    containers,
    find,
    mounted_file,
    mounted_volume,
    objects_of,
    pod_spec,
    render,
)
from tests.support.doubles import StaticKeySource
from tests.support.harness import LoopThread
from tests.support.idp import JWKS_PATH, FakeIdP, LoopbackCA

HS_SECRET = "issuers/hs-secret"
PRIVATE_CA = "issuers/private-ca"
# The issuer each example adds to k8s/base/authz.yaml.
ADDED = {
    HS_SECRET: "https://batch.authz.svc.cluster.local",
    PRIVATE_CA: "https://idp.internal.example",
}
SUBJECT = "nightly-report"


def config_text(variant: str) -> str:
    return embedded(variant, "authz", "authz")


def added_issuer(document: dict[str, Any], variant: str) -> dict[str, Any]:
    (issuer,) = [i for i in document["issuers"] if i["issuer"] == ADDED[variant]]
    found: dict[str, Any] = issuer
    return found


def authz_deployment(variant: str) -> Obj:
    return find(render(K8S / variant), "Deployment", "authz")


def decide(decider: Decider, token: str) -> Decision:
    return decider.decide(
        RequestView(method="GET", path="/orders/1", headers={"authorization": (f"Bearer {token}",)})
    )


def run_check_config(path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authz.cli", "check-config", *options, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- both: the gateway with one more issuer ------------------------------------------


@pytest.mark.parametrize("variant", [HS_SECRET, PRIVATE_CA])
def test_the_example_config_is_the_base_config_plus_its_issuer(variant: str) -> None:
    base = yaml.safe_load(config_text("gateway"))
    example = yaml.safe_load(config_text(variant))
    example["issuers"].remove(added_issuer(example, variant))
    assert example == base
    parse_config(config_text(variant))  # and it is a valid configuration


@pytest.mark.parametrize("variant", [HS_SECRET, PRIVATE_CA])
def test_the_example_changes_only_the_authz_pods_volumes(variant: str) -> None:
    """Every object is the gateway's, but the configuration's ConfigMap and one
    volume (with its mount) on authz; hs-secret also sets the pod's fsGroup."""
    gateway = render(K8S / "gateway")
    example = render(K8S / variant)

    def others(objects: tuple[Obj, ...]) -> list[Obj]:
        return [
            obj
            for obj in objects
            if obj["kind"] != "ConfigMap" or obj["metadata"]["name"].startswith("envoy-config")
        ]

    def without_authz(objects: tuple[Obj, ...]) -> list[Obj]:
        return [
            o
            for o in others(objects)
            if (o["kind"], o["metadata"]["name"]) != ("Deployment", "authz")
        ]

    assert without_authz(example) == without_authz(gateway)

    before = copy.deepcopy(find(gateway, "Deployment", "authz"))
    after = copy.deepcopy(find(example, "Deployment", "authz"))
    path = {HS_SECRET: "/var/run/secrets/authz/hs/x", PRIVATE_CA: "/etc/authz-ca/x"}[variant]
    mount, volume = mounted_volume(after, "authz", path)
    container(after, "authz")["volumeMounts"].remove(mount)
    pod_spec(after)["volumes"].remove(volume)
    if variant == HS_SECRET:
        assert pod_spec(after)["securityContext"].pop("fsGroup") == 10001
    for deployment in (before, after):
        (config,) = [v for v in pod_spec(deployment)["volumes"] if v["name"] == "config"]
        assert config["configMap"]["name"].startswith("authz-config-")
        config["configMap"]["name"] = "authz-config"
    assert after == before


@pytest.mark.parametrize("variant", [HS_SECRET, PRIVATE_CA])
def test_the_deployment_guide_shows_the_issuer_as_the_example_has_it(variant: str) -> None:
    guide = (REPO_ROOT / "docs" / "deployment.md").read_text()
    heading = f"# k8s/{variant}/authz.yaml: k8s/base/authz.yaml plus\n"
    (block,) = re.findall(r"```yaml\n" + re.escape(heading) + r"(.*?)```", guide, re.S)
    (shown,) = yaml.safe_load(block)
    assert shown == added_issuer(yaml.safe_load(config_text(variant)), variant)


# --- both, in the sidecar topology: the overlays of the deployment guide -----------------


def issuer_file(variant: str) -> str:
    """The file the example's issuer reads from its volume (the key, the CA bundle)."""
    issuer = added_issuer(yaml.safe_load(config_text(variant)), variant)
    path: str = (
        issuer["keys"][0]["secret_file"] if variant == HS_SECRET else issuer["fetch"]["ca_file"]
    )
    return path


def sidecar_overlay(variant: str, directory: Path) -> tuple[Obj, ...]:
    """The guide's overlay for ``variant``, built in ``directory`` next to the
    authz.yaml the guide asks for (k8s/sidecar's plus the example's issuer)."""
    guide = (REPO_ROOT / "docs" / "deployment.md").read_text()
    section = guide[guide.index("### The issuer examples in the sidecar topology") :]
    heading = f"# my-sidecar/kustomization.yaml, with k8s/{variant}'s "
    (block,) = re.findall(r"```yaml\n(" + re.escape(heading) + r".*?)```", section, re.S)
    overlay: dict[str, Any] = yaml.safe_load(block)
    assert overlay["resources"] == ["../k8s/sidecar"]
    overlay["resources"] = [os.path.relpath(K8S / "sidecar", directory)]
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    config = yaml.safe_load(embedded("sidecar", "gateway", "authz"))
    config["issuers"].append(added_issuer(yaml.safe_load(config_text(variant)), variant))
    (directory / "authz.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return render(directory)


@pytest.mark.parametrize("variant", [HS_SECRET, PRIVATE_CA])
def test_the_guides_sidecar_patch_mounts_the_examples_volume_on_authz(
    variant: str, tmp_path: Path
) -> None:
    objects = sidecar_overlay(variant, tmp_path)
    gateway = find(objects, "Deployment", "gateway")
    path = issuer_file(variant)
    mount, volume = mounted_volume(gateway, "authz", path)
    assert mount["readOnly"] is True
    assert container(gateway, "authz") in pod_spec(gateway)["initContainers"]  # the sidecar
    # The example's own volume and mount, as the gateway topology has them.
    assert (mount, volume) == mounted_volume(authz_deployment(variant), "authz", path)
    # On authz alone: Envoy runs as the same user here, and gets nothing of it.
    envoy_mounts = container(gateway, "envoy").get("volumeMounts", [])
    assert all(m["name"] != mount["name"] for m in envoy_mounts)
    # The configuration authz reads names the file, and still listens on the socket.
    text = mounted_file(objects, gateway, "authz", config_arg(container(gateway, "authz")))
    assert parse_config(text).listen == parse_config(embedded("sidecar", "gateway", "authz")).listen
    shown = added_issuer(yaml.safe_load(text), variant)
    assert shown == added_issuer(yaml.safe_load(config_text(variant)), variant)


@pytest.mark.parametrize("variant", [HS_SECRET, PRIVATE_CA])
def test_the_guides_sidecar_patch_changes_nothing_else(variant: str, tmp_path: Path) -> None:
    """k8s/sidecar but the configuration, the volume with its mount, and (the key's
    group) hs-secret's fsGroup, as the example changes the gateway topology."""
    objects = sidecar_overlay(variant, tmp_path)
    plain = render(K8S / "sidecar")
    after = copy.deepcopy(find(objects, "Deployment", "gateway"))
    mount, volume = mounted_volume(after, "authz", issuer_file(variant))
    container(after, "authz")["volumeMounts"].remove(mount)
    pod_spec(after)["volumes"].remove(volume)
    example = pod_spec(authz_deployment(variant))["securityContext"]
    if "fsGroup" in example:
        assert pod_spec(after)["securityContext"].pop("fsGroup") == example["fsGroup"]
    before = copy.deepcopy(find(plain, "Deployment", "gateway"))
    for deployment in (before, after):
        (config,) = [v for v in pod_spec(deployment)["volumes"] if v["name"] == "authz-config"]
        assert config["configMap"]["name"].startswith("authz-config-")
        config["configMap"]["name"] = "authz-config"
    assert after == before

    def rest(rendered: tuple[Obj, ...]) -> list[Obj]:
        return [
            obj
            for obj in rendered
            if obj["kind"] != "Deployment"
            and not obj["metadata"]["name"].startswith("authz-config")
        ]

    assert rest(objects) == rest(plain)


# --- hs-secret: the key from a Secret, as a file -------------------------------------


def test_the_hs_key_is_a_file_from_the_secret_that_only_authz_can_read() -> None:
    objects = render(K8S / HS_SECRET)
    deployment = find(objects, "Deployment", "authz")
    issuer = added_issuer(yaml.safe_load(config_text(HS_SECRET)), HS_SECRET)
    assert issuer["algorithms"] == ["HS256"]
    (source,) = issuer["keys"]
    path = source["secret_file"]

    mount, volume = mounted_volume(deployment, "authz", path)
    assert mount["readOnly"] is True
    assert "subPath" not in mount  # a subPath mount is never updated: no rotation
    secret = volume["secret"]
    assert secret["secretName"] == "authz-hs-key"
    assert secret["items"] == [{"key": Path(path).name, "path": Path(path).name}]
    # Owner root, group fsGroup (the kubelet sets it): authz reads it through its
    # group, and other users of the node or the pod read nothing.
    assert secret["defaultMode"] == 0o440
    security = pod_spec(deployment)["securityContext"]
    assert security["fsGroup"] == security["runAsGroup"] == 10001
    assert security["runAsUser"] != 0

    # The key is nowhere else: no Secret in the repository's manifests (it is
    # created apart), no variable, no other container or pod mounts it.
    assert objects_of(objects, "Secret") == []
    for workload in objects_of(objects, "Deployment"):
        for entry in containers(workload):
            assert all("valueFrom" not in item for item in entry.get("env", [])), entry["name"]
            assert "envFrom" not in entry, entry["name"]
        volumes = [v["name"] for v in pod_spec(workload).get("volumes", []) if "secret" in v]
        assert volumes == (["hs-key"] if workload is deployment else [])


@pytest.fixture
def hs_key(tmp_path: Path) -> bytes:
    """A key as `authz keys generate --alg HS256` writes it, with the newline an editor adds."""
    key = secrets.token_urlsafe(48).encode()
    (tmp_path / "hs256.key").write_bytes(key + b"\n")
    return key


def with_key_file(text: str, key_file: Path, **fetch: Any) -> str:
    """The rendered config with the HS issuer's key path pointing at ``key_file``."""
    document = yaml.safe_load(text)
    issuer = added_issuer(document, HS_SECRET)
    (source,) = issuer["keys"]
    source["secret_file"] = str(key_file)
    issuer.setdefault("fetch", {}).update(fetch)
    return yaml.safe_dump(document, sort_keys=False)


def test_the_hs_example_passes_check_config(tmp_path: Path, hs_key: bytes) -> None:
    path = tmp_path / "authz.yaml"
    path.write_text(with_key_file(config_text(HS_SECRET), tmp_path / "hs256.key"))
    result = run_check_config(path, "--no-fetch")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"issuer {ADDED[HS_SECRET]}: (no kid) oct HS256\n" in result.stdout
    assert f"{path}: OK" in result.stdout
    assert hs_key.decode() not in result.stdout + result.stderr  # named, never shown


def test_check_config_reads_the_key_file_even_without_fetching(tmp_path: Path) -> None:
    # As rendered, outside a pod: the Secret's file is not there, and a local
    # key is checked whether or not remote keys are fetched.
    path = tmp_path / "authz.yaml"
    path.write_text(config_text(HS_SECRET))
    result = run_check_config(path, "--no-fetch")
    assert result.returncode == 2
    assert "/var/run/secrets/authz/hs/hs256.key: cannot read" in result.stderr


def test_the_hs_example_allows_a_token_made_with_the_key(tmp_path: Path, hs_key: bytes) -> None:
    text = with_key_file(config_text(HS_SECRET), tmp_path / "hs256.key")
    config = parse_config(text, source="authz.yaml", base_dir=tmp_path)
    decider = Decider(config, Verifier(config, StaticKeySource.from_config(config)))
    audience = added_issuer(yaml.safe_load(text), HS_SECRET)["audiences"][0]

    claims = claims_for(SUBJECT, ADDED[HS_SECRET], audience)
    allowed = decide(decider, mint(hs_key, "HS256", claims))
    assert allowed.allowed, allowed.detail
    assert ("x-auth-subject", SUBJECT) in allowed.headers_to_set

    other_key = secrets.token_urlsafe(48).encode()
    forged = decide(decider, mint(other_key, "HS256", claims))
    assert (forged.allowed, forged.reason) == (False, "signature_invalid")
    # The key newline the file ends with is not part of the key.
    with_newline = decide(decider, mint(hs_key + b"\n", "HS256", claims))
    assert (with_newline.allowed, with_newline.reason) == (False, "signature_invalid")


class SecretVolume:
    """A Secret volume as the kubelet lays it out and updates it: ``hs256.key ->
    ..data/hs256.key``, ``..data -> ..<version>``, a new version published by
    renaming a new ``..data`` link over the old one."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self._versions = 0
        directory.mkdir()
        (directory / name).symlink_to(f"..data/{name}")

    @property
    def path(self) -> Path:
        return self.directory / self.name

    def publish(self, value: bytes) -> None:
        self._versions += 1
        version = self.directory / f"..2026_01_01_00_00_0{self._versions}.000"
        version.mkdir()
        (version / self.name).write_bytes(value)
        link = self.directory / "..data_tmp"
        link.symlink_to(version.name)
        os.replace(link, self.directory / "..data")


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


def test_a_changed_secret_replaces_the_key_and_a_short_one_is_refused(
    tmp_path: Path,
    cluster_api: ClusterStandIn,
    loop: LoopThread,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What docs/deployment.md says a rotation does, with the example's config
    (its 5 s file poll shortened, so that the test waits less)."""
    volume = SecretVolume(tmp_path / "hs", "hs256.key")
    first, second = secrets.token_urlsafe(48).encode(), secrets.token_urlsafe(48).encode()
    volume.publish(first + b"\n")
    text = with_key_file(config_text(HS_SECRET), volume.path, file_poll_seconds=0.05)
    config = parse_config(cluster_api.localize(text, "127.0.0.1:0"), source="authz.yaml")
    assert yaml.safe_load(config_text(HS_SECRET)).get("fetch") is None  # the default poll
    store = KeyStore(config)
    decider = Decider(config, Verifier(config, store))
    audience = config.issuers[-1].audiences[0]

    def token(key: bytes) -> str:
        return mint(key, "HS256", claims_for(SUBJECT, ADDED[HS_SECRET], audience))

    def allowed(key: bytes) -> Callable[[], bool]:
        return lambda: decide(decider, token(key)).allowed

    loop.run(store.start())
    try:
        assert decide(decider, token(first)).allowed
        # The cluster's own tokens keep working beside it.
        poll("the cluster's keys", lambda: decide(decider, cluster_api.token(audience)).allowed)

        volume.publish(second + b"\n")
        poll("the new key", allowed(second))
        old = decide(decider, token(first))
        assert (old.allowed, old.reason) == (False, "signature_invalid")  # at once, no overlap

        with caplog.at_level(logging.ERROR, logger="authz.keys.issuer"):
            volume.publish(b"too-short\n")  # under 32 bytes: not a key authz accepts
            poll("the refusal", lambda: "keeping the previous keys" in caplog.text)
        assert "at least 32 needed" in caplog.text
        assert decide(decider, token(second)).allowed
        assert second.decode() not in caplog.text
    finally:
        loop.run(store.close())


# --- private-ca: the identity provider's CA from a ConfigMap -------------------------


def test_the_ca_bundle_is_the_configmap_mounted_where_the_issuer_reads_it() -> None:
    deployment = authz_deployment(PRIVATE_CA)
    issuer = added_issuer(yaml.safe_load(config_text(PRIVATE_CA)), PRIVATE_CA)
    (source,) = issuer["keys"]
    assert source["jwks_uri"].startswith("https://")
    ca_file = issuer["fetch"]["ca_file"]
    mount, volume = mounted_volume(deployment, "authz", ca_file)
    assert mount["readOnly"] is True
    assert "subPath" not in mount
    assert volume["configMap"]["name"] == "authz-idp-ca"
    assert volume["configMap"]["items"] == [{"key": "ca.crt", "path": Path(ca_file).name}]
    # Only this issuer trusts the private CA: the others keep theirs.
    issuers = yaml.safe_load(config_text(PRIVATE_CA))["issuers"]
    others = [i for i in issuers if i["issuer"] != ADDED[PRIVATE_CA]]
    assert others
    assert all("ca_file" not in i.get("fetch", {}) for i in others)


def test_the_private_ca_example_passes_check_config_offline(tmp_path: Path) -> None:
    # As CI runs it, outside a pod: without fetching, the CA bundle is not read.
    path = tmp_path / "authz.yaml"
    path.write_text(config_text(PRIVATE_CA))
    result = run_check_config(path, "--no-fetch")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"issuer {ADDED[PRIVATE_CA]}: no keys yet (remote keys not fetched" in result.stdout


@pytest.fixture
def private_idp(tmp_path: Path) -> Iterator[tuple[FakeIdP, LoopbackCA]]:
    """The identity provider, its certificate from a CA made here (``cryptography``)."""
    ca = LoopbackCA.create(tmp_path / "private-ca", name="example.internal private CA")
    idp = FakeIdP(tls=ca, issuer=ADDED[PRIVATE_CA]).start()
    try:
        yield idp, ca
    finally:
        idp.stop()


def localized_ca_config(cluster_api: ClusterStandIn, idp: FakeIdP, ca_file: Path | None) -> str:
    """The rendered config with the provider's URL and the CA's path of this machine
    (``ca_file`` None: the key removed, as if the ConfigMap were not mounted)."""
    document = yaml.safe_load(cluster_api.localize(config_text(PRIVATE_CA), "127.0.0.1:0"))
    issuer = added_issuer(document, PRIVATE_CA)
    (source,) = issuer["keys"]
    source["jwks_uri"] = idp.url + JWKS_PATH
    if ca_file is None:
        del issuer["fetch"]["ca_file"]
    else:
        issuer["fetch"]["ca_file"] = str(ca_file)
    return yaml.safe_dump(document, sort_keys=False)


def test_keys_are_fetched_with_the_private_ca_and_refused_without_it(
    tmp_path: Path, cluster_api: ClusterStandIn, private_idp: tuple[FakeIdP, LoopbackCA]
) -> None:
    idp, ca = private_idp
    key = generate("RS256")
    idp.jwks = {"keys": [public_jwk(key, "idp-1", "RS256")]}

    trusted = tmp_path / "trusted.yaml"
    trusted.write_text(localized_ca_config(cluster_api, idp, ca.ca_file))
    result = run_check_config(trusted)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"issuer {ADDED[PRIVATE_CA]}: idp-1 RSA-2048 RS256\n" in result.stdout
    assert idp.count(JWKS_PATH) == 1

    untrusted = tmp_path / "untrusted.yaml"
    untrusted.write_text(localized_ca_config(cluster_api, idp, None))
    result = run_check_config(untrusted)
    assert result.returncode == 1
    (line,) = [row for row in result.stdout.splitlines() if ADDED[PRIVATE_CA] in row]
    assert line.startswith(f"issuer {ADDED[PRIVATE_CA]}: no keys yet (FETCH FAILED: ")
    assert f"{idp.url}{JWKS_PATH}: ConnectError: " in line
    assert "CERTIFICATE_VERIFY_FAILED" in line
    assert "valid, but keys could not be fetched" in result.stderr
    # The cluster's issuer, with its own CA, is not affected.
    assert "issuer https://kubernetes.default.svc.cluster.local: cluster-signing-key" in (
        result.stdout
    )


def test_the_keys_fetched_through_the_private_ca_verify_the_providers_tokens(
    cluster_api: ClusterStandIn, private_idp: tuple[FakeIdP, LoopbackCA], loop: LoopThread
) -> None:
    idp, ca = private_idp
    key = generate("RS256")
    idp.jwks = {"keys": [public_jwk(key, "idp-1", "RS256")]}
    config: Config = parse_config(
        localized_ca_config(cluster_api, idp, ca.ca_file), source="authz.yaml"
    )
    store = KeyStore(config)
    decider = Decider(config, Verifier(config, store))
    audience = config.issuers[-1].audiences[0]
    try:
        fetched = loop.run(store.fetch_all())
        assert fetched == {
            "https://kubernetes.default.svc.cluster.local": True,
            ADDED[PRIVATE_CA]: True,
        }
        token = mint(key, "RS256", claims_for(SUBJECT, ADDED[PRIVATE_CA], audience), "idp-1")
        decision = decide(decider, token)
        assert decision.allowed, decision.detail
        assert ("x-auth-issuer", ADDED[PRIVATE_CA]) in decision.headers_to_set
    finally:
        loop.run(store.close())
