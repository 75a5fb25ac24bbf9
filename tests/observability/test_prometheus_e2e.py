"""A real Prometheus scrapes a real `authz serve`, evaluates k8s/'s alerts and the dashboard.

authz runs with its metrics endpoint on and two issuers: one with a key file,
and one whose JWKS endpoint (a stand-in identity provider on loopback) answers
500. Prometheus (Debian's package; `make tools`) scrapes it every 250 ms and
evaluates the PrometheusRule's groups, unchanged but for shorter ``for:``
durations. The failing issuer's key fetches must raise AuthzKeyFetchesFailing,
its tokens' 503s AuthzKeysUnavailable, and the fetches' recovery must clear
the first; a broken configuration file must raise AuthzReloadFailed; every
rule must evaluate without error, and every query of the
Grafana dashboard must run and, where its metric exists from start-up or from
the Checks sent here, return data.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.rpc import code_pb2

from authz.dev.keys import generate, load_private, public_jwk, write_keypair
from authz.dev.stack import AuthzProcess
from authz.dev.tokens import claims_for, mint
from tests.observability.prom import (
    PrometheusServer,
    alerts,
    dashboard,
    dashboard_queries,
    poll,
    short_for,
    write_rule_file,
)
from tests.service.svc_helpers import check_request
from tests.support.harness import Client
from tests.support.idp import JWKS_PATH, FakeIdP

pytestmark = pytest.mark.e2e

LOCAL = "https://local.example"
AUDIENCE = "orders"
KID = "k1"
SCRAPE = "250ms"
# Metrics that exist only once their event happened (a sink failing); their
# panels may show nothing here.
EVENT_ONLY = frozenset({"authz_audit_write_errors_total"})
# Served by the supervisor of `serve --workers N` only; this authz runs one process.
WORKERS_ONLY = frozenset({"authz_worker_up"})
METRIC = re.compile(r"\b((?:authz|process|python)_[a-z_]+|up)\b(?!\s*\()")


@dataclass
class Monitored:
    authz: AuthzProcess
    prometheus: PrometheusServer
    idp: FakeIdP
    client: Client
    local_token: str
    remote_token: str

    def firing(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.prometheus.api("alerts")["alerts"]
        return [alert for alert in found if alert["state"] == "firing"]

    def firing_for(self, name: str, issuer: str) -> dict[str, Any] | None:
        for alert in self.firing():
            labels = alert["labels"]
            if labels["alertname"] == name and labels.get("issuer") == issuer:
                return alert
        return None


def authz_config(jwks_file: Path, idp: FakeIdP) -> dict[str, Any]:
    return {
        "listen": "127.0.0.1:0",
        "grace_period_seconds": 1,
        "watch_interval_seconds": 0.1,  # a changed file is seen (and refused) at once
        "telemetry": {"metrics": {"listen": "127.0.0.1:0"}},
        "issuers": [
            {
                "issuer": LOCAL,
                "audiences": [AUDIENCE],
                "algorithms": ["ES256"],
                "keys": [{"jwks_file": str(jwks_file)}],
            },
            {
                "issuer": idp.issuer,
                "audiences": [AUDIENCE],
                "algorithms": ["ES256"],
                "keys": [{"jwks_uri": idp.url + JWKS_PATH}],
                # Retry and refresh fast, so that fetches fail (and later
                # succeed) between every two scrapes.
                "fetch": {
                    "allow_http": True,
                    "retry_initial_seconds": 0.05,
                    "refresh_seconds": 0.2,
                    "refresh_min_seconds": 0.05,
                    "refresh_max_seconds": 1,
                },
            },
        ],
        "routes": [
            # Shadow: reports what it would deny (no admin scope), decides nothing.
            {
                "name": "admin-preview",
                "match": {"prefix": "/admin"},
                "mode": "protected",
                "shadow": True,
                "requirements": {"scopes": ["admin"]},
            },
            {"name": "everything", "mode": "protected"},
        ],
    }


def prometheus_config(rules: Path, target: str) -> dict[str, Any]:
    return {
        "global": {
            "scrape_interval": SCRAPE,
            "scrape_timeout": SCRAPE,
            "evaluation_interval": SCRAPE,
        },
        "rule_files": [str(rules)],
        # The PodMonitor's job name, which the alerts and the dashboard use.
        "scrape_configs": [{"job_name": "authz", "static_configs": [{"targets": [target]}]}],
    }


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    workdir = tmp_path_factory.mktemp("monitored")
    private_pem, jwks_file = write_keypair(workdir / "keys", "ES256", KID)
    idp = FakeIdP().start()
    idp.mode = "fail"
    remote_key = generate("ES256")
    config = workdir / "authz.yaml"
    config.write_text(yaml.safe_dump(authz_config(jwks_file, idp), sort_keys=False))
    authz = AuthzProcess(config, workdir / "authz.log")
    prometheus: PrometheusServer | None = None
    client: Client | None = None
    try:
        authz.start()
        metrics_address = authz.logged("metrics_address")
        assert metrics_address, "authz logged no metrics address"
        rules = write_rule_file(workdir / "rules.yaml", edit=short_for)
        prometheus = PrometheusServer(
            workdir / "prometheus", prometheus_config(rules, metrics_address)
        ).start()
        client = Client.connect(authz.address)
        local = claims_for("alice", LOCAL, AUDIENCE, scopes="orders:read")
        remote = claims_for("bob", idp.issuer, AUDIENCE)
        monitored = Monitored(
            authz=authz,
            prometheus=prometheus,
            idp=idp,
            client=client,
            local_token=mint(load_private(private_pem), "ES256", local, KID),
            remote_token=mint(remote_key, "ES256", remote, KID),
        )
        poll("a first scrape of authz", lambda: scraped(monitored))
        send_checks(monitored)
        yield monitored
    finally:
        if client is not None:
            client.close()
        if prometheus is not None:
            prometheus.stop()
        authz.stop()
        idp.stop()


def scraped(monitored: Monitored) -> bool:
    targets = monitored.prometheus.api("targets")["activeTargets"]
    return any(target["health"] == "up" for target in targets)


def check(monitored: Monitored, path: str, token: str | None) -> Any:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return monitored.client.check(check_request(headers, path=path), timeout=10)


def send_checks(monitored: Monitored) -> None:
    """One Check of each kind, and each again once Prometheus has scraped the first.

    A counter's first sample is where its rate starts: a series born with the
    value 1 shows no increase until it moves again.
    """
    for _ in range(2):
        assert check(monitored, "/orders/1", monitored.local_token).status.code == code_pb2.OK
        # Allowed by "everything"; the shadow route reports a would-be deny.
        admin = check(monitored, "/admin/users", monitored.local_token)
        assert admin.status.code == code_pb2.OK
        assert check(monitored, "/orders/1", None).denied_response.status.code == 401
        unavailable = check(monitored, "/orders/1", monitored.remote_token)
        assert unavailable.denied_response.status.code == 503
        poll("the 503 to be scraped", lambda: bool(monitored.prometheus.query(UNAVAILABLE)))


UNAVAILABLE = 'authz_decisions_total{reason="keys_unavailable"}'


def test_failing_key_fetches_and_503s_raise_alerts_that_clear(monitored: Monitored) -> None:
    issuer = monitored.idp.issuer
    poll(
        "AuthzKeyFetchesFailing for the failing issuer",
        lambda: monitored.firing_for("AuthzKeyFetchesFailing", issuer) is not None,
    )
    poll(
        "AuthzKeysUnavailable for its tokens",
        lambda: monitored.firing_for("AuthzKeysUnavailable", issuer) is not None,
    )
    alert = monitored.firing_for("AuthzKeyFetchesFailing", issuer)
    assert alert is not None
    assert alert["labels"]["severity"] == "warning"
    assert alert["annotations"]["summary"] == f"authz cannot fetch the keys of {issuer}"
    # The key file's issuer has no fetches, hence no fetch or age alert.
    assert not [a for a in monitored.firing() if a["labels"].get("issuer") == LOCAL]

    # The identity provider recovers: the next fetches succeed, the alert clears.
    monitored.idp.jwks = {"keys": [public_jwk(generate("ES256"), KID, "ES256")]}
    monitored.idp.mode = "ok"
    poll(
        "AuthzKeyFetchesFailing to clear",
        lambda: monitored.firing_for("AuthzKeyFetchesFailing", issuer) is None,
    )


def test_a_refused_configuration_raises_an_alert(monitored: Monitored) -> None:
    config = monitored.authz.config
    good = config.read_text()
    try:
        config.write_text(good + "no_such_setting: true\n")
        poll(
            "AuthzReloadFailed",
            lambda: any(
                a["labels"]["alertname"] == "AuthzReloadFailed"
                and a["labels"]["result"] == "failed"
                for a in monitored.firing()
            ),
        )
    finally:
        config.write_text(good)


def test_every_rule_evaluates_without_error(monitored: Monitored) -> None:
    def rules() -> list[dict[str, Any]]:
        groups = monitored.prometheus.api("rules")["groups"]
        return [rule for group in groups for rule in group["rules"]]

    poll("every rule evaluated once", lambda: all(r["health"] != "unknown" for r in rules()))
    problems = {r["name"]: r.get("lastError") for r in rules() if r["health"] != "ok"}
    assert problems == {}
    assert {r["name"] for r in rules()} == set(alerts())


def metric_names(expr: str) -> set[str]:
    return set(METRIC.findall(expr))


def expand(expr: str) -> str:
    """A panel's query as Grafana sends it: every namespace, a 1 m rate window."""
    return expr.replace("$namespace", ".*").replace("$__rate_interval", "1m")


def test_every_dashboard_query_runs_and_shows_data(monitored: Monitored) -> None:
    queries = dashboard_queries(dashboard())
    assert all("$" not in expand(expr) for _, expr in queries)
    for _, expr in queries:  # every query parses and runs (else api() raises)
        monitored.prometheus.query(expand(expr))
    panels: dict[str, list[str]] = {}
    for title, expr in queries:
        panels.setdefault(title, []).append(expr)

    def empty() -> list[str]:
        """Panels that show nothing (one query with data is enough: late answers did not happen)."""
        return [
            title
            for title, exprs in panels.items()
            if not any(monitored.prometheus.query(expand(expr)) for expr in exprs)
            and not set().union(*map(metric_names, exprs)) & EVENT_ONLY
        ]

    poll("data for every panel", lambda: not empty())
    variable = dashboard()["templating"]["list"][1]["definition"]
    assert variable == "label_values(authz_build_info, namespace)"
    assert monitored.prometheus.api("series", **{"match[]": "authz_build_info"})


def test_the_rules_and_dashboard_name_only_metrics_authz_serves(monitored: Monitored) -> None:
    used = set().union(
        *(metric_names(rule["expr"]) for rule in alerts().values()),
        *(metric_names(expr) for _, expr in dashboard_queries(dashboard())),
    )
    assert {"authz_decisions_total", "authz_key_age_seconds", "up"} <= used

    def missing() -> set[str]:
        served = set(monitored.prometheus.api("label/__name__/values"))
        return used - served - EVENT_ONLY - WORKERS_ONLY

    poll("every metric used to be scraped", lambda: not missing())
