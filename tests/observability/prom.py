"""The real Prometheus tools (Debian's `prometheus` package: `make tools`) and k8s/'s rules.

``rule_groups`` reads the alerting rules out of the PrometheusRule custom
resource as the Prometheus operator hands them to Prometheus: its
``spec`` is a rule file. ``PrometheusServer`` runs the real server on
loopback with a generated configuration and talks to its HTTP API.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.support.repo import REPO_ROOT

__all__ = [
    "DASHBOARD",
    "PODMONITOR",
    "PROMETHEUS_DIR",
    "RULES",
    "PrometheusServer",
    "alerts",
    "binary",
    "dashboard",
    "dashboard_queries",
    "poll",
    "rule_groups",
    "short_for",
    "write_rule_file",
]

PROMETHEUS_DIR = REPO_ROOT / "k8s" / "observability" / "prometheus"
RULES = PROMETHEUS_DIR / "prometheusrule.yaml"
PODMONITOR = PROMETHEUS_DIR / "podmonitor.yaml"
DASHBOARD = PROMETHEUS_DIR / "authz-dashboard.json"
WAIT = 20.0


def binary(name: str) -> str:
    """``promtool`` or ``prometheus`` from PATH; `make tools` installs them."""
    found = shutil.which(name)
    if found is None:
        raise AssertionError(
            f"no {name} on PATH: `make tools` installs Debian's prometheus package"
        )
    return found


def poll(what: str, probe: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)  # poll interval, not a readiness guess


def rule_groups() -> list[dict[str, Any]]:
    resource: dict[str, Any] = yaml.safe_load(RULES.read_text())
    assert resource["apiVersion"] == "monitoring.coreos.com/v1"
    assert resource["kind"] == "PrometheusRule"
    groups: list[dict[str, Any]] = resource["spec"]["groups"]
    return groups


def alerts() -> dict[str, dict[str, Any]]:
    """Every alerting rule by name."""
    found: dict[str, dict[str, Any]] = {}
    for group in rule_groups():
        for rule in group["rules"]:
            assert rule["alert"] not in found, f"alert {rule['alert']} defined twice"
            found[rule["alert"]] = rule
    return found


def write_rule_file(
    path: Path,
    *,
    annotations: bool = True,
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """The PrometheusRule's groups as a Prometheus rule file; ``edit`` may change each rule."""
    groups = rule_groups()
    for group in groups:
        for rule in group["rules"]:
            if not annotations:
                rule.pop("annotations", None)
            if edit is not None:
                edit(rule)
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def short_for(rule: dict[str, Any]) -> None:
    """A ``write_rule_file`` edit: every alert fires after 1 s of its condition,
    so an end-to-end test sees it fire without waiting out the shipped ``for``."""
    rule["for"] = "1s"


def dashboard() -> dict[str, Any]:
    board: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return board


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def dashboard_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of every panel, rows excluded."""
    queries: list[tuple[str, str]] = []
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        queries.extend((panel["title"], target["expr"]) for target in panel["targets"])
    return queries


class PrometheusServer:
    """The real Prometheus on a loopback port of its choosing, read from its log."""

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_file = workdir / "prometheus.yml"
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log = workdir / "prometheus.log"
        self.address = ""
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> PrometheusServer:
        with self.log.open("wb") as sink:
            self._process = subprocess.Popen(
                [
                    binary("prometheus"),
                    f"--config.file={self.config_file}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    "--web.listen-address=127.0.0.1:0",
                    "--log.format=json",
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        poll("Prometheus to listen and be ready", self._ready)
        return self

    def _ready(self) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{self.log.read_text()[-3000:]}")
        if not self.address:
            self.address = self._logged("Listening on", "address") or ""
            if not self.address:
                return False
        try:
            with urllib.request.urlopen(f"http://{self.address}/-/ready", timeout=2) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def _logged(self, message: str, field: str) -> str | None:
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("msg") == message and isinstance(entry.get(field), str):
                    value: str = entry[field]
                    return value
        return None

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; its ``data`` when the status is success, else AssertionError."""
        query = urllib.parse.urlencode(params)
        url = f"http://{self.address}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:
                answer = json.loads(reply.read())
        except urllib.error.HTTPError as exc:  # 400/422: a query that does not parse or run
            answer = json.loads(exc.read())
        if answer.get("status") != "success":
            raise AssertionError(
                f"{path} {params}: {answer.get('errorType')}: {answer.get('error')}"
            )
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else []
        return result

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
