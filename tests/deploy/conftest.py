"""Stand-ins for a pod's surroundings, so the manifests' own configs run on loopback.

The Kubernetes API server's OIDC endpoints (``/.well-known/openid-configuration``,
``/openid/v1/jwks``) are served by the test IdP over HTTPS with a CA made here;
it demands the stand-in service-account token, as the API server would.
``localize`` changes exactly what differs between a pod and this machine: the
API server address, the token and CA paths, and the listen addresses (the
metrics endpoint's too: a free loopback port, so that replicas can share a host).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.dev.keys import PrivateKey, generate, public_jwk
from authz.dev.tokens import claims_for, mint
from tests.deploy.manifests import K8S, config_arg, container, find, mounted_file, render
from tests.support.idp import FakeIdP, LoopbackCA

# What `kubectl -n authz create token default --audience authz-gateway` yields.
SUBJECT = "system:serviceaccount:authz:default"
POD_TOKEN = "stand-in-projected-token"
KID = "cluster-signing-key"


def embedded(variant: str, workload: str, name: str) -> str:
    """The config file a container of a rendered Deployment reads (its ``-c`` argument)."""
    objects = render(K8S / variant)
    deployment = find(objects, "Deployment", workload)
    return mounted_file(objects, deployment, name, config_arg(container(deployment, name)))


def poll(what: str, probe: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)  # poll interval, not a readiness guess


def probe_exit(command: list[str], target: str) -> int:
    """Run a manifest's exec probe here: its python is this one, its target ours."""
    assert command[0] == "python"
    local = [sys.executable, *command[1:-1], target]
    return subprocess.run(local, capture_output=True, timeout=10, check=False).returncode


@dataclass
class ClusterStandIn:
    api: FakeIdP
    key: PrivateKey
    token_file: Path
    ca_file: Path

    def token(self, audience: str, subject: str = SUBJECT, ttl: int = 300) -> str:
        claims = claims_for(subject, self.api.issuer, audience, ttl=ttl)
        return mint(self.key, "RS256", claims, KID)

    def localize(self, text: str, listen: str, **overrides: Any) -> str:
        config: dict[str, Any] = yaml.safe_load(text)
        config["listen"] = listen
        metrics = config.get("telemetry", {}).get("metrics", {})
        if "listen" in metrics:
            metrics["listen"] = "127.0.0.1:0"
        config.update(overrides)
        replaced = 0
        for issuer in config["issuers"]:
            for source in issuer["keys"]:
                if "kubernetes" in source:
                    source["kubernetes"].update(
                        api_server=self.api.url,
                        token_file=str(self.token_file),
                        ca_file=str(self.ca_file),
                    )
                    replaced += 1
        assert replaced == 1, "expected one kubernetes key source"
        return yaml.safe_dump(config, sort_keys=False)


@pytest.fixture(scope="module")
def cluster_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterStandIn]:
    directory = tmp_path_factory.mktemp("cluster")
    ca = LoopbackCA.create(directory / "ca")
    api = FakeIdP(tls=ca, issuer="https://kubernetes.default.svc.cluster.local").start()
    key = generate("RS256")
    api.jwks = {"keys": [public_jwk(key, KID, "RS256")]}
    api.required_token = POD_TOKEN
    token_file = directory / "token"
    token_file.write_text(POD_TOKEN + "\n")
    try:
        yield ClusterStandIn(api=api, key=key, token_file=token_file, ca_file=ca.ca_file)
    finally:
        api.stop()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory under /tmp for Unix socket paths (sun_path: 108 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="authz-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)
