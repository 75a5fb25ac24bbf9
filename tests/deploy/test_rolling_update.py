"""A rolling update of authz behind the gateway's Envoy fails no request.

Two authz replicas run the configuration rendered from k8s/gateway (its real
shutdown_delay_seconds and grace_period_seconds) behind the real Envoy with
the gateway's real authz cluster settings (gRPC health checks, panic threshold
0); only the endpoints differ: two loopback ports stand in for the two pod
addresses the headless Service would resolve to. While requests flow, one
replica gets SIGTERM, as Kubernetes sends it. Envoy must see NOT_SERVING while
that replica still answers, stop sending to it, and no request may fail.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from authz.config.loader import parse_config
from authz.dev.stack import (
    AuthzProcess,
    EnvoyProcess,
    http_request,
    render_envoy_config,
)
from authz.dev.upstream import EchoUpstream
from tests.deploy.conftest import ClusterStandIn, embedded, poll, probe_exit
from tests.deploy.manifests import K8S, cluster, container, find, render

pytestmark = pytest.mark.e2e

MAX_REQUESTS = 20_000  # the load loop is bounded in count as well as in time


def host_flags(envoy: EnvoyProcess) -> dict[int, str]:
    """port -> health flags of each host in Envoy's authz cluster (admin /clusters)."""
    text = http_request(f"http://{envoy.admin}/clusters").body.decode()
    flags: dict[int, str] = {}
    for line in text.splitlines():
        if line.startswith("authz::") and "::health_flags::" in line:
            address = line.split("::")[1]
            flags[int(address.rsplit(":", 1)[1])] = line.rsplit("::", 1)[1]
    return flags


def test_sigterm_to_one_replica_fails_no_request(
    tmp_path: Path, cluster_api: ClusterStandIn
) -> None:
    authz_text = embedded("gateway", "authz", "authz")
    settings = parse_config(authz_text)
    assert settings.shutdown_delay_seconds > 0
    config = tmp_path / "authz.yaml"
    config.write_text(cluster_api.localize(authz_text, "127.0.0.1:0"))
    # The replica that stays is not under test; it stops at once at teardown
    # instead of sitting out its own shutdown delay.
    staying_config = tmp_path / "staying.yaml"
    staying_config.write_text(
        cluster_api.localize(authz_text, "127.0.0.1:0", shutdown_delay_seconds=0)
    )
    template = tmp_path / "envoy-template.yaml"
    template.write_text(embedded("gateway", "gateway", "envoy"))
    token = cluster_api.token(settings.issuers[0].audiences[0])

    upstream = EchoUpstream().start()
    leaving = AuthzProcess(config, tmp_path / "leaving.log")
    staying = AuthzProcess(staying_config, tmp_path / "staying.log")
    envoy: EnvoyProcess | None = None
    statuses: Counter[int] = Counter()
    done = threading.Event()
    loader: threading.Thread | None = None
    stopper: threading.Thread | None = None
    try:
        leaving.start()
        staying.start()
        local = ("127.0.0.1", upstream.port)
        envoy_config = render_envoy_config(
            template, leaving.endpoint, local, {"orders": local, "payments": local}
        )
        authz_cluster = cluster(envoy_config, "authz")
        assert "health_checks" in authz_cluster  # the gateway's own settings, kept
        lb_endpoints = authz_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        lb_endpoints.append(
            {
                "endpoint": {
                    "address": {
                        "socket_address": {"address": "127.0.0.1", "port_value": staying.port}
                    }
                }
            }
        )
        envoy = EnvoyProcess(envoy_config, tmp_path).start()
        running = envoy
        poll(
            "both replicas healthy in Envoy",
            lambda: host_flags(running) == {leaving.port: "healthy", staying.port: "healthy"},
        )
        # The Deployment's own liveness command passes against both, over TCP.
        liveness = container(find(render(K8S / "gateway"), "Deployment", "authz"), "authz")
        for replica in (leaving, staying):
            assert probe_exit(liveness["livenessProbe"]["exec"]["command"], replica.address) == 0

        def load() -> None:
            url = f"http://127.0.0.1:{running.listener_port}/orders/1"
            headers = {"Authorization": f"Bearer {token}"}
            while not done.is_set() and sum(statuses.values()) < MAX_REQUESTS:
                try:
                    statuses[http_request(url, headers).status] += 1
                except OSError:
                    statuses[0] += 1  # not even an HTTP answer: counts as failed

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        poll("traffic", lambda: statuses[200] >= 20)

        exit_codes: list[int] = []
        stopper = threading.Thread(target=lambda: exit_codes.append(leaving.stop(timeout=30)))
        started = time.monotonic()
        stopper.start()  # SIGTERM, then wait for the exit
        poll(
            "Envoy to fail the leaving replica's health check",
            lambda: "failed_active_hc" in host_flags(running).get(leaving.port, ""),
        )
        noticed = time.monotonic() - started
        # Noticed while the replica still answers: its listener is still open.
        assert stopper.is_alive(), "the replica exited before Envoy noticed NOT_SERVING"
        assert noticed < settings.shutdown_delay_seconds

        stopper.join(timeout=settings.shutdown_delay_seconds + settings.grace_period_seconds + 10)
        assert exit_codes == [0], leaving.log.read_text()
        after_exit = statuses[200]
        poll("traffic after the exit", lambda: statuses[200] >= after_exit + 20)
        done.set()
        loader.join(timeout=10)
        assert not loader.is_alive()

        assert set(statuses) == {200}, f"failed requests during the rollout: {statuses}"
        assert "still answering Checks for" in leaving.log.read_text()
    finally:
        done.set()
        if loader is not None:
            loader.join(timeout=10)
        if envoy is not None:
            envoy.stop()
        if stopper is not None:
            stopper.join(timeout=30)  # owns leaving.stop(); never two at once
        leaving.stop()
        staying.stop()
        upstream.stop()
