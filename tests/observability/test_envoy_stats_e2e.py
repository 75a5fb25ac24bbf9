"""The gateway Envoy's own statistics, scraped by a real Prometheus, raise the AuthzEnvoy* alerts.

Two real Envoys run the gateway config exactly as k8s/gateway renders it into
its ConfigMap, on loopback: Prometheus scrapes each one's ``envoy_metrics``
listener (the PodMonitor gateway-envoy's port and path) every 250 ms and
evaluates the PrometheusRule (``for:`` shortened).

- The first Envoy checks with a real ``authz serve``: allowed and denied
  requests count as ok and denied. Then authz stops, every Check errors (503),
  and AuthzEnvoyCheckErrors fires.
- The second is the same config with ``failure_mode_allow: true`` in front of
  a port where nothing listens: its requests pass unchecked, and
  AuthzEnvoyFailingOpen fires for that Envoy alone.

Every Envoy series the rules name (in their expressions and in their
runbooks, label matchers included) is then found in what Prometheus scraped
from the real Envoy, so no rule reads a metric Envoy does not export; and the
window serves /stats/prometheus and no other admin page.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.dev.keys import load_private, write_keypair
from authz.dev.stack import AuthzProcess, EnvoyProcess, http_request, render_envoy_config
from authz.dev.tokens import claims_for, mint
from authz.dev.upstream import EchoUpstream
from tests.deploy.manifests import K8S, config_arg, container, find, mounted_file, render
from tests.observability.prom import PrometheusServer, alerts, poll, short_for, write_rule_file

pytestmark = pytest.mark.e2e

ISSUER = "https://idp.envoy-stats.test"
AUDIENCE = "orders-api"
KID = "envoy-stats-1"
SCRAPE = "250ms"
ENVOY_ALERTS = ("AuthzEnvoyCheckErrors", "AuthzEnvoyFailingOpen")
# An Envoy series as the rules write it: a name, and label matchers if any.
SELECTOR = re.compile(r"\b(envoy_[a-z_]+)(\{[^}]*\})?")


def shipped_gateway_envoy() -> str:
    """k8s/gateway/envoy.yaml as the gateway container reads it from its ConfigMap."""
    objects = render(K8S / "gateway")
    gateway = find(objects, "Deployment", "gateway")
    return mounted_file(objects, gateway, "envoy", config_arg(container(gateway, "envoy")))


def unused_port() -> int:
    # The envoy_admin cluster must name admin's port before Envoy starts, so
    # this one port cannot be bound as 0 and read back.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def on_loopback(
    template: Path, authz: tuple[str, int], upstream: int, fail_open: bool
) -> dict[str, Any]:
    admin_port = unused_port()
    local = ("127.0.0.1", upstream)
    config = render_envoy_config(
        template,
        authz,
        local,
        clusters={"orders": local, "payments": local, "envoy_admin": ("127.0.0.1", admin_port)},
    )
    config["admin"]["address"]["socket_address"]["port_value"] = admin_port
    if fail_open:
        (ingress, _) = config["static_resources"]["listeners"]
        manager = ingress["filter_chains"][0]["filters"][0]["typed_config"]
        (ext_authz,) = [f for f in manager["http_filters"] if f["name"].endswith("ext_authz")]
        ext_authz["typed_config"]["failure_mode_allow"] = True
    return config


def statistics_port(envoy: EnvoyProcess) -> int:
    listeners = http_request(f"http://{envoy.admin}/listeners?format=json").json()
    for listener in listeners["listener_statuses"]:
        if listener["name"] == "envoy_metrics":
            return int(listener["local_address"]["socket_address"]["port_value"])
    raise AssertionError("no envoy_metrics listener")


@dataclass
class Gateways:
    checked: EnvoyProcess
    failing_open: EnvoyProcess
    authz: AuthzProcess
    prometheus: PrometheusServer
    token: str

    def target(self, envoy: EnvoyProcess) -> str:
        return f"127.0.0.1:{statistics_port(envoy)}"

    def get(self, envoy: EnvoyProcess, token: str | None = None) -> int:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return http_request(f"http://127.0.0.1:{envoy.listener_port}/orders/1", headers).status

    def firing(self, name: str) -> list[dict[str, str]]:
        found = self.prometheus.api("alerts")["alerts"]
        return [
            alert["labels"]
            for alert in found
            if alert["labels"]["alertname"] == name and alert["state"] == "firing"
        ]

    def value(self, selector: str) -> float:
        return sum(float(sample["value"][1]) for sample in self.prometheus.query(selector))


def authz_config(jwks_file: Path) -> dict[str, Any]:
    return {
        "listen": "127.0.0.1:0",
        "grace_period_seconds": 1,
        "shutdown_delay_seconds": 0,
        "issuers": [
            {
                "issuer": ISSUER,
                "audiences": [AUDIENCE],
                "algorithms": ["ES256"],
                "keys": [{"jwks_file": str(jwks_file)}],
            }
        ],
    }


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateways]:
    workdir = tmp_path_factory.mktemp("envoy-stats")
    template = workdir / "envoy.yaml"
    template.write_text(shipped_gateway_envoy())
    private_pem, jwks_file = write_keypair(workdir / "keys", "ES256", KID)
    config = workdir / "authz.yaml"
    config.write_text(yaml.safe_dump(authz_config(jwks_file), sort_keys=False))
    token = mint(load_private(private_pem), "ES256", claims_for("alice", ISSUER, AUDIENCE), KID)
    upstream = EchoUpstream()
    authz = AuthzProcess(config, workdir / "authz.log")
    envoys: list[EnvoyProcess] = []
    prometheus: PrometheusServer | None = None
    try:
        upstream.start()
        authz.start()
        (workdir / "checked").mkdir()
        (workdir / "open").mkdir()
        checked = EnvoyProcess(
            on_loopback(template, ("127.0.0.1", authz.port), upstream.port, fail_open=False),
            workdir / "checked",
        )
        envoys.append(checked.start())
        nowhere = ("127.0.0.1", unused_port())  # nothing listens there
        failing_open = EnvoyProcess(
            on_loopback(template, nowhere, upstream.port, fail_open=True), workdir / "open"
        )
        envoys.append(failing_open.start())
        targets = [f"127.0.0.1:{statistics_port(envoy)}" for envoy in envoys]
        rules = write_rule_file(workdir / "rules.yaml", edit=short_for)
        prometheus = PrometheusServer(
            workdir / "prometheus",
            {
                "global": {
                    "scrape_interval": SCRAPE,
                    "scrape_timeout": SCRAPE,
                    "evaluation_interval": SCRAPE,
                },
                "rule_files": [str(rules)],
                # What the gateway-envoy PodMonitor sets up: its job, path and
                # the namespace label the operator adds.
                "scrape_configs": [
                    {
                        "job_name": "gateway-envoy",
                        "metrics_path": "/stats/prometheus",
                        "static_configs": [{"targets": targets, "labels": {"namespace": "authz"}}],
                    }
                ],
            },
        ).start()
        yield Gateways(checked, failing_open, authz, prometheus, token)
    finally:
        if prometheus is not None:
            prometheus.stop()
        for envoy in envoys:
            envoy.stop()
        authz.stop()
        upstream.stop()


def test_errors_after_authz_stops_raise_the_check_errors_alert(gateways: Gateways) -> None:
    checked = gateways.target(gateways.checked)
    ok = f'envoy_http_ext_authz_ok{{instance="{checked}"}}'
    denied = f'envoy_http_ext_authz_denied{{instance="{checked}"}}'
    error = f'envoy_http_ext_authz_error{{instance="{checked}"}}'
    poll("a first scrape of the checked Envoy", lambda: bool(gateways.prometheus.query(ok)))
    assert gateways.value(error) == 0

    # authz answers: one allow and one deny, counted by Envoy once scraped.
    assert gateways.get(gateways.checked, gateways.token) == 200
    assert gateways.get(gateways.checked) == 401
    poll("ok and denied to be scraped", lambda: gateways.value(ok) + gateways.value(denied) >= 2)
    assert gateways.firing("AuthzEnvoyCheckErrors") == []

    # authz goes away: Envoy answers 503 itself, and counts each as an error.
    gateways.authz.stop()

    def erroring() -> bool:
        return gateways.get(gateways.checked, gateways.token) == 503

    poll("Envoy to answer 503 without authz", erroring)

    def alert_fires() -> bool:
        assert gateways.get(gateways.checked, gateways.token) == 503  # keeps the traffic up
        return bool(gateways.firing("AuthzEnvoyCheckErrors"))

    poll("AuthzEnvoyCheckErrors to fire", alert_fires, timeout=60)
    assert gateways.value(error) > 0
    assert gateways.firing("AuthzEnvoyCheckErrors") == [
        {"alertname": "AuthzEnvoyCheckErrors", "namespace": "authz", "severity": "critical"}
    ]
    # Fail closed: nothing was let through.
    assert gateways.value(f'envoy_http_ext_authz_failure_mode_allowed{{instance="{checked}"}}') == 0


def test_a_request_let_through_unchecked_raises_the_failing_open_alert(gateways: Gateways) -> None:
    failing_open = gateways.target(gateways.failing_open)
    allowed = f'envoy_http_ext_authz_failure_mode_allowed{{instance="{failing_open}"}}'
    poll("a first scrape of that Envoy", lambda: bool(gateways.prometheus.query(allowed)))
    assert gateways.value(allowed) == 0
    # No authz behind it, and the request reaches the service: the open door.
    assert gateways.get(gateways.failing_open) == 200

    def alert_fires() -> bool:
        return bool(gateways.firing("AuthzEnvoyFailingOpen"))

    poll("AuthzEnvoyFailingOpen to fire", alert_fires, timeout=60)
    assert gateways.value(allowed) >= 1
    assert gateways.value(f'envoy_http_ext_authz_error{{instance="{failing_open}"}}') >= 1
    (labels,) = gateways.firing("AuthzEnvoyFailingOpen")
    assert labels["instance"] == failing_open  # the fail-closed Envoy is not named


def envoy_selectors() -> set[str]:
    """Every Envoy series the AuthzEnvoy* rules name, as a PromQL selector."""
    found: set[str] = set()
    for name in ENVOY_ALERTS:
        rule = alerts()[name]
        texts = [rule["expr"], *rule["annotations"].values()]
        for text in texts:
            found.update(metric + (labels or "") for metric, labels in SELECTOR.findall(text))
    return found


def test_every_envoy_series_the_rules_name_is_one_the_real_envoy_exports(
    gateways: Gateways,
) -> None:
    selectors = envoy_selectors()
    assert {
        "envoy_http_ext_authz_ok",
        "envoy_http_ext_authz_denied",
        "envoy_http_ext_authz_error",
        "envoy_http_ext_authz_failure_mode_allowed",
        'envoy_cluster_upstream_rq_timeout{envoy_cluster_name="authz"}',
        "envoy_cluster_upstream_cx_connect_fail",
        "envoy_cluster_membership_healthy",
    } <= selectors
    checked = gateways.target(gateways.checked)

    def missing() -> list[str]:
        return [s for s in sorted(selectors) if not gateways.prometheus.query(s)]

    poll("every series the rules name to be scraped", lambda: not missing())
    # The ext_authz counters carry the connection manager's stat prefix, and
    # the authz cluster's counters its name, as the runbook reads them.
    (series,) = gateways.prometheus.query(f'envoy_http_ext_authz_error{{instance="{checked}"}}')
    assert series["metric"]["envoy_http_conn_manager_prefix"] == "ingress"
    assert gateways.prometheus.query(
        f'envoy_cluster_membership_healthy{{instance="{checked}", envoy_cluster_name="authz"}}'
    )


def test_the_statistics_window_opens_on_nothing_else_of_admin(gateways: Gateways) -> None:
    base = f"http://{gateways.target(gateways.checked)}"
    scraped = http_request(f"{base}/stats/prometheus")
    assert scraped.status == 200
    assert "envoy_http_ext_authz_error{" in scraped.body.decode()
    for method, path in (
        ("GET", "/ready"),
        ("GET", "/config_dump"),
        ("GET", "/stats/prometheus/../../config_dump"),
        ("POST", "/quitquitquit"),
        ("POST", "/logging?level=trace"),
    ):
        assert http_request(base + path, method=method).status == 404, path
    # Admin itself, on loopback, was not reached: Envoy still runs.
    assert http_request(f"http://{gateways.checked.admin}/ready").status == 200
