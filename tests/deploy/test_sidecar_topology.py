"""The sidecar topology on one machine: the real Envoy and the real authz over a Unix socket.

Both programs run the configurations rendered from k8s/sidecar, changed only
where a pod differs from this machine (conftest.py ``localize``): the socket
path (/var/run/authz/authz.sock becomes a short path under /tmp, on both sides),
the API server address, the token and CA paths, and loopback ports for Envoy,
the metrics endpoint and the example services (served by one echo upstream).
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from authz.config.loader import parse_config
from authz.dev.stack import Stack
from tests.deploy.conftest import SUBJECT, ClusterStandIn, embedded, poll, probe_exit
from tests.deploy.manifests import K8S, container, find, render

pytestmark = pytest.mark.e2e


def sidecar_probe(name: str) -> list[str]:
    deployment = find(render(K8S / "sidecar"), "Deployment", "gateway")
    command: list[str] = container(deployment, "authz")[name]["exec"]["command"]
    return command


def test_requests_are_allowed_and_denied_through_the_socket(
    tmp_path: Path, short_dir: Path, cluster_api: ClusterStandIn
) -> None:
    authz_text = embedded("sidecar", "gateway", "authz")
    audience = parse_config(authz_text).issuers[0].audiences[0]
    socket_target = f"unix:{short_dir / 'authz.sock'}"
    assert len(socket_target.encode()) < 100
    config = tmp_path / "authz.yaml"
    config.write_text(cluster_api.localize(authz_text, socket_target))
    template = tmp_path / "envoy.yaml"
    template.write_text(embedded("sidecar", "gateway", "envoy"))

    with Stack(
        tmp_path / "stack", config, template, more_upstreams=("orders", "payments")
    ) as stack:
        assert stack.authz.endpoint == socket_target
        assert stack.envoy is not None
        # What the native sidecar's startupProbe waits for before Envoy starts.
        poll(
            "the startup probe",
            lambda: probe_exit(sidecar_probe("startupProbe"), socket_target) == 0,
        )
        assert probe_exit(sidecar_probe("livenessProbe"), socket_target) == 0

        token = cluster_api.token(audience)
        allowed = stack.get("/orders/42", {"Authorization": f"Bearer {token}"})
        assert allowed.status == 200, allowed.body
        seen = allowed.json()
        assert seen["path"] == "/orders/42"
        assert seen["headers"]["x-auth-subject"] == SUBJECT
        assert seen["headers"]["x-auth-issuer"] == cluster_api.api.issuer
        assert stack.get("/payments/7", {"Authorization": f"Bearer {token}"}).status == 200

        missing = stack.get("/payments/7")
        assert missing.status == 401
        assert missing.headers["www-authenticate"] == 'Bearer realm="authz"'
        foreign = cluster_api.token("some-other-audience")
        wrong = stack.get("/orders/42", {"Authorization": f"Bearer {foreign}"})
        assert wrong.status == 401
        assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
        assert stack.get("/healthz").status == 200  # probes need no token

        decisions = [
            (entry["path"], entry["authz_decision"], entry["authz_reason"])
            for entry in stack.envoy.access_log(5)
        ]
        assert decisions == [
            ("/orders/42", "allow", "allowed"),
            ("/payments/7", "allow", "allowed"),
            ("/payments/7", "deny", "missing_token"),
            ("/orders/42", "deny", "audience_mismatch"),
            ("/healthz", None, None),
        ]
        # Every Check went over the pipe: the only endpoint of Envoy's authz cluster.
        stats = stack.envoy.stats("cluster.authz.")
        assert stats["cluster.authz.upstream_cx_total"] >= 1
        assert stats["cluster.authz.upstream_rq_200"] >= 4

        # The shipped telemetry block serves what the PodMonitor scrapes.
        address = stack.authz.logged("metrics_address")
        assert address, "no metrics endpoint"
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
        counted = {
            (s.labels["decision"], s.labels["reason"]): s.value
            for s in samples
            if s.name == "authz_decisions_total" and s.value  # not the zeros that page
        }
        assert counted == {
            ("allow", "allowed"): 2,
            ("deny", "missing_token"): 1,
            ("deny", "audience_mismatch"): 1,
        }
        assert any(s.name == "authz_build_info" for s in samples)
