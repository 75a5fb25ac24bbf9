"""A saturated gateway, as a new user saturates it: the alerts fire and every Check is counted.

The shipped gateway (envoy/gateway.yaml, ext_authz timeout 250 ms) in front of
one ``authz serve`` with one worker thread, loaded by wrk with far more
connections than one thread answers within Envoy's timeout. A real Prometheus
scrapes authz and evaluates the PrometheusRule (``for:`` shortened). Then:

- AuthzLateAnswers and AuthzCheckLatencyHigh fire: time spent queued counts in
  the Check duration, and what Envoy gave up on is counted as late;
- authz's own metrics account for every Check gRPC read: started = handled +
  shed + expired, nothing left pending;
- and for every Check Envoy sent to the authz cluster.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.dev.keys import load_private, write_keypair
from authz.dev.stack import Stack, http_request
from authz.dev.tokens import claims_for, mint
from tests.observability.prom import PrometheusServer, poll, short_for, write_rule_file

pytestmark = pytest.mark.e2e

ISSUER = "https://idp.overload.test"
AUDIENCE = "orders-api"
KID = "overload-1"
SCRAPE = "250ms"
CONNECTIONS = 256
LOAD_SECONDS = 8
SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$", re.M)


def _config(jwks_file: Path, audit: Path) -> dict[str, Any]:
    return {
        "listen": "127.0.0.1:0",
        "grace_period_seconds": 1,
        "telemetry": {"metrics": {"listen": "127.0.0.1:0"}},
        "audit": {"stdout": False, "file": str(audit)},
        # One worker: what a single core gives, whatever the machine.
        "serving": {"threads": 1},
        "issuers": [
            {
                "issuer": ISSUER,
                "audiences": [AUDIENCE],
                "algorithms": ["ES256"],
                "keys": [{"jwks_file": str(jwks_file)}],
            }
        ],
    }


def _samples(text: str, name: str) -> float:
    return sum(float(m["value"]) for m in SAMPLE.finditer(text) if m["name"] == name)


def test_a_saturated_gateway_raises_the_latency_alerts_and_counts_every_check(
    tmp_path: Path,
) -> None:
    private_pem, jwks_file = write_keypair(tmp_path / "keys", "ES256", KID)
    config = tmp_path / "authz.yaml"
    config.write_text(yaml.safe_dump(_config(jwks_file, tmp_path / "audit.jsonl"), sort_keys=False))
    token = mint(load_private(private_pem), "ES256", claims_for("alice", ISSUER, AUDIENCE), KID)
    with Stack(tmp_path / "stack", config) as stack:
        metrics_address = stack.authz.logged("metrics_address")
        assert metrics_address, "authz logged no metrics address"
        rules = write_rule_file(tmp_path / "rules.yaml", edit=short_for)
        prometheus = PrometheusServer(
            tmp_path / "prometheus",
            {
                "global": {
                    "scrape_interval": SCRAPE,
                    "scrape_timeout": SCRAPE,
                    "evaluation_interval": SCRAPE,
                },
                "rule_files": [str(rules)],
                "scrape_configs": [
                    {"job_name": "authz", "static_configs": [{"targets": [metrics_address]}]}
                ],
            },
        ).start()
        try:
            assert stack.get("/orders/1", {"authorization": f"Bearer {token}"}).status == 200
            poll("a first scrape", lambda: bool(prometheus.query("authz_checks_started_total")))
            load = subprocess.run(
                [
                    "wrk",
                    "-t2",
                    f"-c{CONNECTIONS}",
                    f"-d{LOAD_SECONDS}s",
                    "-H",
                    f"authorization: Bearer {token}",
                    stack.url("/orders/1"),
                ],
                capture_output=True,
                text=True,
                timeout=LOAD_SECONDS + 60,
                check=True,
            )
            assert "Requests/sec" in load.stdout, load.stdout + load.stderr

            def firing(name: str) -> bool:
                found = prometheus.api("alerts")["alerts"]
                return any(
                    alert["labels"]["alertname"] == name and alert["state"] == "firing"
                    for alert in found
                )

            poll("AuthzLateAnswers to fire", lambda: firing("AuthzLateAnswers"))
            poll("AuthzCheckLatencyHigh to fire", lambda: firing("AuthzCheckLatencyHigh"))

            text = ""

            def settled() -> bool:
                nonlocal text
                text = http_request(f"http://{metrics_address}/metrics").body.decode()
                return _samples(text, "authz_checks_pending") == 0

            poll("authz to finish what it had taken", settled)
            started = _samples(text, "authz_checks_started_total")
            handled = _samples(text, "authz_checks_handled_total")
            shed = _samples(text, "authz_checks_shed_total")
            expired = _samples(text, "authz_checks_expired_total")
            assert started == handled + shed + expired, (started, handled, shed, expired)
            assert expired + shed > 0, "the load never overloaded authz"
            assert stack.envoy is not None
            stats = stack.envoy.stats("cluster.authz.upstream_rq_total")
            sent = stats["cluster.authz.upstream_rq_total"]
            assert started == sent, (started, sent)
        finally:
            prometheus.stop()
