"""The alerts of k8s/observability/prometheus, checked and unit-tested with the real promtool.

``promtool check rules`` parses every expression and annotation template of the
PrometheusRule's groups; ``promtool test rules`` runs alerts_test.yaml, where
each alert fires on made-up series when it should and stays silent when it
should not. The rest ties the rules to what they stand for: thresholds that
mirror authz's and Envoy's settings, and the job name the PodMonitor sets.
"""

from __future__ import annotations

import inspect
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.config.loader import parse_config
from authz.config.models import FetchConfig
from authz.dev.stack import ENVOY_GATEWAY
from authz.observability.metrics import FETCH_RESULTS, RELOAD_RESULTS, known_reasons
from authz.observability.serving_metrics import ServingMetrics
from authz.observability.worker_metrics import WorkerMetrics
from tests.deploy.manifests import K8S, config_arg, container, find, mounted_file, render
from tests.observability.prom import (
    PODMONITOR,
    alerts,
    binary,
    dashboard,
    dashboard_queries,
    write_rule_file,
)
from tests.support.readme import section
from tests.support.repo import REPO_ROOT

UNIT_TESTS = Path(__file__).parent / "alerts_test.yaml"
SEVERITIES = {"warning", "critical"}


def promtool(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


def run_unit_tests(tmp_path: Path, **rule_file: Any) -> subprocess.CompletedProcess[str]:
    """alerts_test.yaml against the rules (without annotations; see that file)."""
    write_rule_file(tmp_path / "rules.yaml", annotations=False, **rule_file)
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    return promtool("test", "rules", UNIT_TESTS.name, cwd=tmp_path)


def test_promtool_checks_the_rules(tmp_path: Path) -> None:
    rules = write_rule_file(tmp_path / "rules.yaml")
    result = promtool("check", "rules", rules, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_promtool_check_rejects_a_broken_expression(tmp_path: Path) -> None:
    def breaks(rule: dict[str, Any]) -> None:
        if rule["alert"] == "AuthzInternalErrors":
            rule["expr"] = rule["expr"].replace("[5m]", "[5x]")

    rules = write_rule_file(tmp_path / "rules.yaml", edit=breaks)
    result = promtool("check", "rules", rules, cwd=tmp_path)
    assert result.returncode != 0
    assert '"AuthzInternalErrors": could not parse expression' in result.stdout + result.stderr


def test_every_alert_passes_its_promtool_unit_tests(tmp_path: Path) -> None:
    result = run_unit_tests(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_unit_tests_catch_a_changed_threshold(tmp_path: Path) -> None:
    def slower(rule: dict[str, Any]) -> None:
        if rule["alert"] == "AuthzCheckLatencyHigh":
            rule["expr"] = rule["expr"].replace("> 0.2", "> 0.6")

    result = run_unit_tests(tmp_path, edit=slower)
    assert result.returncode != 0
    assert "alertname: AuthzCheckLatencyHigh" in result.stdout + result.stderr


def test_every_alert_has_cases_where_it_fires_and_where_it_does_not() -> None:
    cases: dict[str, set[bool]] = {}
    for group in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for case in group["alert_rule_test"]:
            cases.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    assert set(cases) == set(alerts())
    for name, outcomes in cases.items():
        assert outcomes == {True, False}, f"{name}: fires in some case and is silent in another"


@pytest.mark.parametrize("name", sorted(alerts()))
def test_every_alert_says_how_bad_what_and_what_to_do(name: str) -> None:
    rule = alerts()[name]
    assert re.fullmatch(r"\d+[smh]", rule["for"]), "for: keeps a blip from paging"
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook", "runbook_url"}
    assert all(len(text) > 20 for text in annotations.values())
    # The URL's anchor is the alert's heading in docs/operations.md, as renderers make it.
    page = (REPO_ROOT / "docs" / "operations.md").read_text()
    heading = f"### {name} ({rule['labels']['severity']})"
    assert heading in page
    anchor = re.sub(r"[^a-z0-9 -]", "", heading[4:].lower()).replace(" ", "-")
    assert annotations["runbook_url"] == f"docs/operations.md#{anchor}"


# --- thresholds that mirror settings elsewhere --------------------------------------


def threshold(name: str, pattern: str) -> float:
    match = re.search(pattern, alerts()[name]["expr"])
    assert match, f"{name}: no {pattern!r} in its expression"
    return float(eval(match[1], {"__builtins__": {}}))  # noqa: S307 (digits, * and .)


def shipped_authz_configs() -> list[str]:
    texts = []
    for variant, workload in (("gateway", "authz"), ("sidecar", "gateway"), ("istio", "authz")):
        objects = render(K8S / variant)
        deployment = find(objects, "Deployment", workload)
        path = config_arg(container(deployment, "authz"))
        texts.append(mounted_file(objects, deployment, "authz", path))
    return texts


def test_the_stale_key_thresholds_are_max_stale_seconds() -> None:
    stale = threshold("AuthzKeysStale", r">= ([\d.* ]+)\n")
    nearly = threshold("AuthzKeysNearlyStale", r"> ([\d.* ]+)\n")
    assert stale == FetchConfig().max_stale_seconds
    assert 0.5 * stale <= nearly < stale
    for text in shipped_authz_configs():
        for issuer in parse_config(text).issuers:
            assert issuer.fetch.max_stale_seconds == stale, issuer.issuer


def ext_authz_timeouts() -> list[float]:
    """Envoy's ext_authz timeout in every Envoy config shipped, and in Istio's provider."""
    texts = [ENVOY_GATEWAY.read_text()]
    for variant in ("gateway", "sidecar"):
        objects = render(K8S / variant)
        gateway = find(objects, "Deployment", "gateway")
        texts.append(
            mounted_file(objects, gateway, "envoy", config_arg(container(gateway, "envoy")))
        )
    timeouts = [
        float(timeout)
        for text in texts
        for timeout in re.findall(r"timeout: (\d+(?:\.\d+)?)s", _ext_authz_section(text))
    ]
    mesh = yaml.safe_load((K8S / "istio" / "mesh-config.yaml").read_text())
    (provider,) = mesh["spec"]["meshConfig"]["extensionProviders"]
    timeouts.append(float(provider["envoyExtAuthzGrpc"]["timeout"].removesuffix("s")))
    return timeouts


def _ext_authz_section(envoy_text: str) -> str:
    config = yaml.safe_load(envoy_text)
    (listener, *_) = config["static_resources"]["listeners"]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    (ext_authz,) = [f for f in manager["http_filters"] if f["name"].endswith("ext_authz")]
    return yaml.safe_dump(ext_authz["typed_config"]["grpc_service"])


def test_the_latency_threshold_is_close_to_envoys_timeout() -> None:
    limit = threshold("AuthzCheckLatencyHigh", r"\) > ([\d.]+)\n")
    timeouts = ext_authz_timeouts()
    assert len(timeouts) == 4
    for timeout in timeouts:
        assert 0.7 * timeout <= limit < timeout


def test_the_up_alerts_use_the_job_the_podmonitor_sets() -> None:
    monitor: dict[str, Any] = yaml.safe_load(PODMONITOR.read_text())
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    (job,) = [r["replacement"] for r in endpoint["relabelings"] if r.get("targetLabel") == "job"]
    for name in ("AuthzTargetDown", "AuthzNoTargetUp"):
        assert f'up{{job="{job}"}}' in alerts()[name]["expr"]


def test_the_reload_alert_matches_every_refused_reload() -> None:
    refused = set(RELOAD_RESULTS) - {"applied"}
    assert refused
    assert label_values("result", [alerts()["AuthzReloadFailed"]["expr"]]) == refused


def label_values(label: str, texts: list[str]) -> set[str]:
    values: set[str] = set()
    for text in texts:
        for match in re.finditer(rf'\b{label}=~?"([^"]+)"', text):
            values.update(match[1].split("|"))
    return values


def test_the_label_values_matched_are_values_authz_reports() -> None:
    texts = [rule["expr"] for rule in alerts().values()]
    texts += [expr for _, expr in dashboard_queries(dashboard())]
    reasons = label_values("reason", texts)
    assert {"keys_unavailable", "internal_error", "deadline_exceeded"} <= reasons
    assert reasons <= known_reasons()
    assert label_values("result", [t for t in texts if "authz_key_fetches" in t]) <= {
        *FETCH_RESULTS,
        "other",
    }
    assert label_values("decision", texts) <= {"allow", "deny", "late", "unknown"}


def test_the_readmes_scrape_job_for_prometheus_without_the_operator(tmp_path: Path) -> None:
    kubernetes = section("Metrics, alerts and the dashboard")
    start = kubernetes.index("rule_files: [authz-rules.yaml]")
    config_text = kubernetes[start : kubernetes.index("```", start)]
    config: dict[str, Any] = yaml.safe_load(config_text)
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "authz"  # what the PodMonitor sets
    (keep,) = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    assert keep["regex"] == "authz;metrics"
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": ["authz"]}}]
    # Debian builds Prometheus without Kubernetes discovery, so its promtool
    # checks the rest of the job with a static target in its place.
    job.pop("kubernetes_sd_configs")
    job["static_configs"] = [{"targets": ["10.0.0.1:9464"]}]
    write_rule_file(tmp_path / "authz-rules.yaml")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_every_authz_metric_used_is_in_the_metrics_modules_table() -> None:
    # The tables in the metrics modules name each metric as Prometheus shows it; a
    # histogram's series add _bucket, _sum and _count.
    table = Path(inspect.getfile(known_reasons)).read_text()
    table += Path(inspect.getfile(ServingMetrics)).read_text()
    table += Path(inspect.getfile(WorkerMetrics)).read_text()
    texts = [rule["expr"] for rule in alerts().values()]
    texts += [expr for _, expr in dashboard_queries(dashboard())]
    used = {name for text in texts for name in re.findall(r"\b(authz_[a-z_]+)\b", text)}
    assert {"authz_reloads_total", "authz_build_info"} <= used
    for name in used:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert f"``{base}``" in table or f'"{base}"' in table, name


def test_every_alert_has_its_runbook_in_the_operations_page() -> None:
    # docs/operations.md, "When an alert fires": one heading per alert with the
    # rule's severity, summary and runbook, so the page and the rules agree.
    page = (REPO_ROOT / "docs" / "operations.md").read_text()
    for name, rule in alerts().items():
        heading = f"### {name} ({rule['labels']['severity']})"
        assert heading in page, heading
        entry = page[page.index(heading) : page.find("\n### ", page.index(heading) + 1)]
        assert " ".join(rule["annotations"]["runbook"].split()) in entry, name
