"""authz check-envoy on what a running Envoy reports on its admin /config_dump.

Checking a config needs no authz: Envoy starts with its clusters pointing at a
closed port, and only its admin interface is asked. The LDS/RDS tests load the
gateway's listener and routes from files (``path_config_source``), so the
dynamic part of the dump is Envoy's own, not a hand-made imitation.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.dev.stack import ENVOY_GATEWAY, EnvoyProcess, http_request, render_envoy_config

pytestmark = pytest.mark.e2e

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTES = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
# Nothing listens here: the checks never reach authz or the upstream.
NOWHERE = ("127.0.0.1", 9)

AUTHZ = """\
issuers:
  - issuer: https://idp.example
    audiences: [api]
    algorithms: [RS256]
    keys: [{jwks_file: jwks.json}]
    fetch: {unknown_kid_wait_seconds: 0.2}
routes:
  - name: orders
    match: {prefix: /orders}
    mode: protected
"""


def gateway() -> dict[str, Any]:
    return render_envoy_config(ENVOY_GATEWAY, NOWHERE, NOWHERE)


def hcm_of(config: dict[str, Any]) -> dict[str, Any]:
    listener = config["filter_chains"][0]["filters"][0]
    hcm: dict[str, Any] = listener["typed_config"]
    return hcm


def from_files(config: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """``config`` with its listeners delivered by LDS and their routes by RDS,
    both from files Envoy reads (``path_config_source``)."""
    config = copy.deepcopy(config)
    listeners = config["static_resources"].pop("listeners")
    route_configs = []
    for listener in listeners:
        hcm = hcm_of(listener)
        table = hcm.pop("route_config")
        route_configs.append({"@type": ROUTES, **table})
        hcm["rds"] = {
            "route_config_name": table["name"],
            "config_source": {
                "path_config_source": {"path": str(workdir / "rds.yaml")},
                "resource_api_version": "V3",
            },
        }
    (workdir / "lds.yaml").write_text(
        yaml.safe_dump({"resources": [{"@type": LISTENER, **x} for x in listeners]})
    )
    (workdir / "rds.yaml").write_text(yaml.safe_dump({"resources": route_configs}))
    config["node"] = {"id": "check-envoy-test", "cluster": "gateway"}
    config["dynamic_resources"] = {
        "lds_config": {
            "path_config_source": {"path": str(workdir / "lds.yaml")},
            "resource_api_version": "V3",
        }
    }
    return config


@pytest.fixture
def dump_of(tmp_path: Path) -> Iterator[Callable[[dict[str, Any], str], Path]]:
    """Start Envoy with a config (polled until admin answers /ready) and save its
    /config_dump; every Envoy started is stopped at the end of the test."""
    started: list[EnvoyProcess] = []

    def dump(config: dict[str, Any], name: str) -> Path:
        workdir = tmp_path / name
        workdir.mkdir(exist_ok=True)
        envoy = EnvoyProcess(
            from_files(config, workdir) if name.startswith("lds") else config, workdir
        )
        started.append(envoy)
        envoy.start()
        reply = http_request(f"http://{envoy.admin}/config_dump")
        assert reply.status == 200
        path = tmp_path / f"{name}.json"
        path.write_bytes(reply.body)
        return path

    yield dump
    for envoy in started:
        envoy.stop()


def check_envoy(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authz.cli", "check-envoy", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("source", ["static", "lds-rds"])
def test_the_running_gateway_passes(
    dump_of: Callable[[dict[str, Any], str], Path], source: str
) -> None:
    path = dump_of(gateway(), source)
    dump = path.read_text()
    if source == "lds-rds":  # the listener and its routes are Envoy's dynamic ones
        assert '"dynamic_listeners"' in dump
        assert '"dynamic_route_configs"' in dump
        assert '"static_listeners"' not in dump
    result = check_envoy(path)
    # One connection manager, and nothing left unchecked: RDS's routes are in the dump.
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"{path}: OK (1 HTTP connection manager checked)\n",
        "",
    )


@pytest.mark.parametrize("source", ["static", "lds-rds"])
def test_a_running_gateway_that_fails_open(
    dump_of: Callable[[dict[str, Any], str], Path], source: str
) -> None:
    config = gateway()
    listener = config["static_resources"]["listeners"][0]
    hcm_of(listener)["http_filters"][0]["typed_config"]["failure_mode_allow"] = True
    path = dump_of(config, source)
    result = check_envoy(path)
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = result.stdout.splitlines()
    match = re.match(
        rf"^{re.escape(str(path))}:(\d+): ext_authz failure_mode_allow is true: ", line
    )
    assert match, line
    assert path.read_text().splitlines()[int(match[1]) - 1].strip() == '"failure_mode_allow": true,'


def test_routes_from_rds_are_checked_against_authzs_rules(
    dump_of: Callable[[dict[str, Any], str], Path], tmp_path: Path
) -> None:
    config = gateway()
    table = hcm_of(config["static_resources"]["listeners"][0])["route_config"]
    table["virtual_hosts"][0]["routes"].insert(
        0,
        {
            "match": {"prefix": "/orders"},
            "route": {"cluster": "upstream"},
            "typed_per_filter_config": {
                "envoy.filters.http.ext_authz": {"@type": PER_ROUTE, "disabled": True}
            },
        },
    )
    path = dump_of(config, "lds-rds")
    authz = tmp_path / "authz.yaml"
    authz.write_text(AUTHZ)
    result = check_envoy("-c", authz, path)
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = result.stdout.splitlines()
    match = re.match(
        rf"^{re.escape(str(path))}:(\d+): ext_authz disabled on the route for prefix /orders: "
        "authz's route 'orders' is protected",
        line,
    )
    assert match, line
    lines = path.read_text().splitlines()
    routes = next(n for n, t in enumerate(lines, 1) if '"dynamic_route_configs"' in t)
    assert int(match[1]) > routes
    assert lines[int(match[1]) - 1].strip() == '"disabled": true'


def _setting(what: str) -> str:
    """A finding's setting, without how it was found wrong: a real dump leaves out
    fields at their default (encode_raw_headers: false), so "X is false" there
    reads "X absent"."""
    return re.sub(r" (is \S+|absent \(.*\))$", "", what)


def test_the_same_settings_are_reported_as_in_the_file(
    dump_of: Callable[[dict[str, Any], str], Path], tmp_path: Path
) -> None:
    from tests.unit.envoy_check.test_envoy_check import UNSAFE

    template = tmp_path / "unsafe.yaml"
    unsafe = yaml.safe_load(UNSAFE)
    unsafe["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}}
    template.write_text(yaml.safe_dump(unsafe))
    config = render_envoy_config(template, NOWHERE, NOWHERE)
    hcm_of(config["static_resources"]["listeners"][0])["route_config"]["name"] = "edge"
    expected = sorted(_setting(line.split(": ")[1]) for line in _findings(UNSAFE, tmp_path))
    for source in ("static", "lds-rds"):
        result = check_envoy(dump_of(config, source))
        assert result.returncode == 1, result.stderr
        assert sorted(_setting(line.split(": ")[1]) for line in result.stdout.splitlines()) == (
            expected
        )


def _findings(text: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    result = check_envoy(path)
    assert result.returncode == 1, result.stderr
    return result.stdout.splitlines()
