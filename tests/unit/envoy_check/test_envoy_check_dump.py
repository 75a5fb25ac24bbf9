"""authz check-envoy on an Envoy admin /config_dump: what a running Envoy holds.

The dumps here are made by hand in the shape Envoy 1.40's admin answers (the
e2e tests take real ones): ``configs`` holds one ``envoy.admin.v3.*ConfigDump``
per kind; a static listener sits under ``static_listeners[].listener``, one from
LDS under ``dynamic_listeners[].active_state.listener`` (or ``warming_state``,
``draining_state``), a route config from RDS under
``dynamic_route_configs[].route_config``, clusters under ``static_clusters[]``
or ``dynamic_active_clusters[]`` ``.cluster``, and the bootstrap (with its own
copy of the static listeners) under ``bootstrap``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.cli import main
from authz.config.loader import parse_config
from authz.config.models import Config
from authz.envoy_check import EnvoyCheckError, Finding, check_text
from tests.support.repo import REPO_ROOT

TYPE = "type.googleapis.com/"
ADMIN = TYPE + "envoy.admin.v3."
PER_ROUTE = TYPE + "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
EXT_AUTHZ = TYPE + "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
WHEN = "2026-01-01T00:00:00.000Z"
GATEWAY = yaml.safe_load((REPO_ROOT / "envoy" / "gateway.yaml").read_text())
STATS_WINDOW = yaml.safe_load((REPO_ROOT / "k8s" / "gateway" / "envoy.yaml").read_text())

# Protects /orders; makes /docs public. With the gateway's routes moved to RDS
# and ext_authz disabled on /orders, authz's rules say that route needs a token.
AUTHZ = """\
issuers:
  - issuer: https://idp.example
    audiences: [api]
    algorithms: [RS256]
    keys: [{jwks_file: jwks.json}]
    fetch: {unknown_kid_wait_seconds: 0.2}
routes:
  - name: docs
    match: {prefix: /docs}
    mode: public
  - name: orders
    match: {prefix: /orders}
    mode: protected
"""


@pytest.fixture(scope="module")
def authz() -> Config:
    return parse_config(AUTHZ, source="authz.yaml", base_dir=Path())


def hcm_of(listener: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return config


def config_dump(
    bootstrap: dict[str, Any],
    *,
    dynamic: bool = False,
    state: str = "active_state",
    dynamic_clusters: bool = False,
) -> dict[str, Any]:
    """``bootstrap`` as Envoy's admin would dump it. ``dynamic``: its listeners
    as if LDS delivered them (in ``state``), each connection manager's inline
    routes as if RDS did; ``dynamic_clusters``: its clusters as if CDS did."""
    bootstrap = copy.deepcopy(bootstrap)
    static = bootstrap["static_resources"]
    listeners = [
        {"@type": TYPE + "envoy.config.listener.v3.Listener", **x}
        for x in static.get("listeners", [])
    ]
    clusters = [
        {"@type": TYPE + "envoy.config.cluster.v3.Cluster", **x} for x in static.get("clusters", [])
    ]
    route_configs = []
    # What Envoy took from LDS or CDS is not in its bootstrap.
    if dynamic:
        static.pop("listeners", None)
        bootstrap["dynamic_resources"] = {"lds_config": {"ads": {}}, "ads_config": {}}
    if dynamic_clusters:
        static.pop("clusters", None)
    for listener in listeners:
        hcm = hcm_of(listener)
        # Static route configs are the listeners' own; dynamic ones stand alone.
        table = hcm.pop("route_config") if dynamic else hcm["route_config"]
        if dynamic:
            hcm["rds"] = {
                "config_source": {"ads": {}, "resource_api_version": "V3"},
                "route_config_name": table["name"],
            }
        route_configs.append({"@type": TYPE + "envoy.config.route.v3.RouteConfiguration", **table})
    held: list[dict[str, Any]] = [{"listener": x, "last_updated": WHEN} for x in listeners]
    routes = [{"route_config": x, "last_updated": WHEN} for x in route_configs]
    return {
        "configs": [
            {
                "@type": ADMIN + "BootstrapConfigDump",
                "bootstrap": {"node": {"user_agent_name": "envoy"}, **bootstrap},
                "last_updated": WHEN,
            },
            {
                "@type": ADMIN + "ClustersConfigDump",
                "dynamic_active_clusters" if dynamic_clusters else "static_clusters": [
                    {"cluster": x, "last_updated": WHEN} for x in clusters
                ],
            },
            {
                "@type": ADMIN + "ListenersConfigDump",
                **(
                    {
                        "dynamic_listeners": [
                            {"name": x["listener"]["name"], state: {"version_info": "1", **x}}
                            for x in held
                        ]
                    }
                    if dynamic
                    else {"static_listeners": held}
                ),
            },
            {"@type": ADMIN + "ScopedRoutesConfigDump"},
            {
                "@type": ADMIN + "RoutesConfigDump",
                **(
                    {"dynamic_route_configs": [{"version_info": "1", **x} for x in routes]}
                    if dynamic
                    else {"static_route_configs": routes}
                ),
            },
            {"@type": ADMIN + "SecretsConfigDump"},
        ]
    }


def text_of(dump: dict[str, Any]) -> str:
    return json.dumps(dump, indent=1)  # as curl shows it: one key a line


def findings(dump: dict[str, Any] | str, config: Config | None = None) -> list[Finding]:
    return check_text(dump if isinstance(dump, str) else text_of(dump), "dump.json", config)


def run_cli(tmp_path: Path, dump: dict[str, Any] | str, *args: str) -> tuple[int, list[str], Path]:
    path = tmp_path / "dump.json"
    path.write_text(dump if isinstance(dump, str) else text_of(dump))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["check-envoy", *args, str(path)])
    return status, out.getvalue().splitlines(), path


def disable_on(bootstrap: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``bootstrap`` with a route for ``prefix`` to the upstream, ext_authz off on it."""
    bootstrap = copy.deepcopy(bootstrap)
    routes = hcm_of(bootstrap["static_resources"]["listeners"][0])["route_config"]["virtual_hosts"][
        0
    ]["routes"]
    routes.insert(
        0,
        {
            "match": {"prefix": prefix},
            "route": {"cluster": "upstream"},
            "typed_per_filter_config": {
                "envoy.filters.http.ext_authz": {"@type": PER_ROUTE, "disabled": True}
            },
        },
    )
    return bootstrap


def camel(value: Any) -> Any:
    """``value`` with every field name in its proto-JSON spelling (failureModeAllow)."""
    if isinstance(value, list):
        return [camel(item) for item in value]
    if not isinstance(value, dict):
        return value
    keep = {"typed_per_filter_config", "typed_extension_protocol_options"}  # maps keyed by name
    return {
        re.sub(r"_([a-z0-9])", lambda m: m[1].upper(), key) if not key.startswith("@") else key: (
            {name: camel(inner) for name, inner in item.items()} if key in keep else camel(item)
        )
        for key, item in value.items()
    }


# --- the same checks as for the bootstrap ---------------------------------------------------


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "lds+rds"])
def test_the_shipped_gateway_as_dumped_passes(tmp_path: Path, dynamic: bool) -> None:
    status, out, path = run_cli(tmp_path, config_dump(GATEWAY, dynamic=dynamic))
    # One connection manager, though the bootstrap's copy of the listener is in the
    # dump too; and nothing left unchecked: the RDS route config is in the dump.
    assert (status, out) == (0, [f"{path}: OK (1 HTTP connection manager checked)"])


def test_a_setting_is_reported_at_its_line_in_the_dump() -> None:
    bootstrap = copy.deepcopy(GATEWAY)
    ext_authz = hcm_of(bootstrap["static_resources"]["listeners"][0])["http_filters"][0]
    ext_authz["typed_config"]["failure_mode_allow"] = True
    for dynamic in (False, True):
        text = text_of(config_dump(bootstrap, dynamic=dynamic))
        (finding,) = findings(text)
        assert finding.what == "ext_authz failure_mode_allow is true"
        assert text.splitlines()[finding.line - 1].strip() == '"failure_mode_allow": true,'


def as_written(dump: dict[str, Any]) -> Any:
    return dump


def test_findings_match_the_bootstraps() -> None:
    from tests.unit.envoy_check.test_envoy_check import AUTHZ as UNSAFE_AUTHZ
    from tests.unit.envoy_check.test_envoy_check import UNSAFE

    unsafe = yaml.safe_load(UNSAFE)
    # A route table needs a name to be delivered by RDS.
    hcm_of(unsafe["static_resources"]["listeners"][0])["route_config"]["name"] = "edge"
    config = parse_config(UNSAFE_AUTHZ, source="authz.yaml", base_dir=Path())
    for with_config in (None, config):
        expected = sorted(f.what for f in check_text(UNSAFE, "envoy.yaml", with_config))
        for dynamic in (False, True):
            for spelled in (as_written, camel):
                dump = spelled(config_dump(unsafe, dynamic=dynamic))
                assert sorted(f.what for f in findings(dump, with_config)) == expected


def test_a_route_rds_delivered_with_ext_authz_off_that_authz_protects(
    tmp_path: Path, authz: Config
) -> None:
    dump = config_dump(disable_on(GATEWAY, "/orders"), dynamic=True)
    text = text_of(dump)
    (finding,) = findings(text, authz)
    assert finding.what == "ext_authz disabled on the route for prefix /orders"
    assert "authz's route 'orders' is protected" in finding.why
    # The line is the route's "disabled" in the dump's dynamic route config.
    lines = text.splitlines()
    assert lines[finding.line - 1].strip() == '"disabled": true'
    dynamic_routes = next(n for n, t in enumerate(lines, 1) if '"dynamic_route_configs"' in t)
    assert finding.line > dynamic_routes
    # In camelCase, as protojson writes it, the same finding.
    (respelled,) = findings(camel(dump), authz)
    assert respelled.what == finding.what
    # Public in authz's rules: nothing to report.
    assert findings(config_dump(disable_on(GATEWAY, "/docs"), dynamic=True), authz) == []


@pytest.mark.parametrize("state", ["active_state", "warming_state"])
def test_active_and_warming_listeners_are_checked(state: str) -> None:
    bootstrap = copy.deepcopy(GATEWAY)
    hcm_of(bootstrap["static_resources"]["listeners"][0])["normalize_path"] = False
    (finding,) = findings(config_dump(bootstrap, dynamic=True, state=state))
    assert finding.what == "normalize_path is false"


def test_a_draining_listener_or_a_rejected_update_is_said_not_checked(tmp_path: Path) -> None:
    bootstrap = copy.deepcopy(GATEWAY)
    hcm_of(bootstrap["static_resources"]["listeners"][0])["normalize_path"] = False
    unsafe = config_dump(bootstrap, dynamic=True, state="draining_state")
    safe = config_dump(GATEWAY, dynamic=True)
    entry = safe["configs"][2]["dynamic_listeners"][0]
    entry["draining_state"] = unsafe["configs"][2]["dynamic_listeners"][0]["draining_state"]
    entry["error_state"] = {"details": "refused", "failed_configuration": {}}
    status, out, path = run_cli(tmp_path, safe)
    lines = text_of(safe).splitlines()
    draining = next(n for n, t in enumerate(lines, 1) if '"draining_state"' in t)
    error = next(n for n, t in enumerate(lines, 1) if '"error_state"' in t)
    assert (status, out) == (
        0,
        [
            f"{path}: OK (1 HTTP connection manager checked)",
            f"{path}:{draining}: not checked: listener 'ingress' draining (being replaced or "
            "removed)",
            f"{path}:{error}: not checked: listener 'ingress': an update Envoy rejected "
            "(error_state)",
        ],
    )


def test_an_rds_route_config_missing_from_the_dump_is_said_not_checked(tmp_path: Path) -> None:
    dump = config_dump(disable_on(GATEWAY, "/orders"), dynamic=True)
    dump["configs"][4]["dynamic_route_configs"] = []
    status, out, path = run_cli(tmp_path, dump)
    rds = next(n for n, t in enumerate(text_of(dump).splitlines(), 1) if '"rds"' in t)
    assert (status, out) == (
        0,
        [
            f"{path}: OK (1 HTTP connection manager checked)",
            f"{path}:{rds}: not checked: routes from rds: route config 'gateway' is not in "
            "the dump",
        ],
    )


def test_ext_authz_settings_from_ecds_are_said_not_checked(tmp_path: Path) -> None:
    bootstrap = disable_on(GATEWAY, "/orders")
    filters = hcm_of(bootstrap["static_resources"]["listeners"][0])["http_filters"]
    filters[0] = {
        "name": "envoy.filters.http.ext_authz",
        "config_discovery": {"config_source": {"ads": {}}, "type_urls": [EXT_AUTHZ]},
    }
    dump = config_dump(bootstrap, dynamic=True)
    dump["configs"].append(
        {"@type": ADMIN + "EcdsConfigDump", "ecds_filters": [{"ecds_filter": {}}]}
    )
    dump["configs"][5]["dynamic_active_secrets"] = [{"name": "tls", "secret": {}}]
    status, out, path = run_cli(tmp_path, dump)
    lines = text_of(dump).splitlines()

    def at(key: str) -> int:
        return next(n for n, t in enumerate(lines, 1) if f'"{key}"' in t)

    # Not "no ext_authz filter": the filter is there, its settings are not shown.
    # Its routes are checked all the same: the filter's name is all they need.
    assert status == 1
    assert out[0].startswith(
        f"{path}:{at('disabled')}: ext_authz disabled on the route for prefix /orders: "
    )
    assert out[1:] == [
        f"{path}:{at('config_discovery')}: not checked: ext_authz settings of filter "
        "envoy.filters.http.ext_authz from config_discovery (ECDS)",
        f"{path}:{at('dynamic_active_secrets') - 1}: not checked: secrets (SecretsConfigDump)",
        f"{path}:{at('ecds_filters') - 1}: not checked: filter configs from ECDS (EcdsConfigDump)",
    ]


def test_the_statistics_window_is_told_by_the_dumps_clusters_and_admin() -> None:
    # k8s' gateway routes /stats/prometheus to admin through a cluster: only the
    # dump's bootstrap (admin's address) and clusters show that it is admin.
    for dynamic_clusters in (False, True):
        assert findings(config_dump(STATS_WINDOW, dynamic_clusters=dynamic_clusters)) == []
    without_admin = config_dump(STATS_WINDOW)
    del without_admin["configs"][0]["bootstrap"]["admin"]
    assert any(f.what == "no ext_authz filter" for f in findings(without_admin))


# --- what is not a config dump, or holds nothing to check --------------------------------


@pytest.mark.parametrize(
    ("dump", "message"),
    [
        (
            {
                "configs": [
                    {"@type": ADMIN + "ListenersConfigDump"},
                    {"@type": ADMIN + "SecretsConfigDump"},
                ]
            },
            "no HTTP connection manager in the config dump's listeners",
        ),
        ({"configs": []}, "no Envoy configuration found"),
        (
            {"configs": [{"@type": TYPE + "envoy.config.listener.v3.Listener"}]},
            "no Envoy configuration found",
        ),
    ],
    ids=["no-listeners", "empty", "not-admin-types"],
)
def test_a_dump_without_listeners_is_unusable(dump: dict[str, Any], message: str) -> None:
    with pytest.raises(EnvoyCheckError, match=message):
        findings(dump)


def test_a_dump_without_listeners_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dump = config_dump(GATEWAY)
    dump["configs"][2] = {"@type": ADMIN + "ListenersConfigDump"}
    path = tmp_path / "dump.json"
    path.write_text(text_of(dump))
    assert main(["check-envoy", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no HTTP connection manager in the config dump's listeners" in captured.err


def test_ext_authz_settings_from_ecds_in_a_config_file_are_said_not_checked(
    tmp_path: Path,
) -> None:
    # Not "no ext_authz filter" there either: the file names the filter, ECDS its settings.
    bootstrap = copy.deepcopy(GATEWAY)
    filters = hcm_of(bootstrap["static_resources"]["listeners"][0])["http_filters"]
    filters[0] = {
        "name": "envoy.filters.http.ext_authz",
        "config_discovery": {"config_source": {"ads": {}}, "type_urls": [EXT_AUTHZ]},
    }
    text = yaml.safe_dump(bootstrap, sort_keys=False)
    disabled = copy.deepcopy(bootstrap)
    hcm_of(disabled["static_resources"]["listeners"][0])["http_filters"][0]["disabled"] = True
    (finding,) = findings(yaml.safe_dump(disabled))
    assert finding.what == "ext_authz filter is disabled"
    status, out, path = run_cli(tmp_path, text)
    line = next(n for n, t in enumerate(text.splitlines(), 1) if "config_discovery:" in t)
    assert (status, out) == (
        0,
        [
            f"{path}: OK (1 HTTP connection manager checked)",
            f"{path}:{line}: not checked: ext_authz settings of filter "
            "envoy.filters.http.ext_authz from config_discovery (ECDS)",
        ],
    )
