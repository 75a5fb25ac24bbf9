"""authz check-envoy and routes to Envoy's admin interface (the statistics window).

k8s/gateway/envoy.yaml has a second listener that routes exactly
``/stats/prometheus`` to the admin address, for Prometheus. It reaches no
upstream service, so it is not held to authz's checks; but any route to admin
that could reach more than a read-only page is reported, in that listener or
in any other.
"""

from __future__ import annotations

import pytest

from authz.envoy_check import Finding, check_text
from tests.support.repo import REPO_ROOT

SHIPPED = (REPO_ROOT / "k8s" / "gateway" / "envoy.yaml").read_text()
ROUTE_INDENT = "\n" + " " * 26
STATS_ROUTE = f"- match: {{path: /stats/prometheus}}{ROUTE_INDENT}route: {{cluster: envoy_admin}}"
ADMIN = "Envoy's admin interface reachable"


def edited(old: str, new: str, text: str = SHIPPED) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def findings(text: str) -> list[Finding]:
    return check_text(text, "envoy.yaml")


def line_of(fragment: str, text: str) -> int:
    (line,) = [n for n, t in enumerate(text.splitlines(), 1) if fragment in t]
    return line


def test_the_shipped_statistics_window_is_no_finding() -> None:
    assert STATS_ROUTE in SHIPPED
    assert findings(SHIPPED) == []


@pytest.mark.parametrize(
    ("match", "shown"),
    [
        ("{prefix: /}", "a match other than an exact path"),
        ("{prefix: /stats}", "a match other than an exact path"),
        ("{path: /quitquitquit}", "path /quitquitquit"),
        ("{path: /config_dump}", "path /config_dump"),
        ('{safe_regex: {regex: "/stats/prometheus.*"}}', "a match other than an exact path"),
    ],
)
def test_a_route_to_more_of_admin_is_reported_at_its_match(match: str, shown: str) -> None:
    text = edited("{path: /stats/prometheus}", match)
    (finding,) = findings(text)
    assert finding.what == f"{ADMIN} by {shown}"
    assert finding.line == line_of(f"- match: {match}", text)
    assert "/quitquitquit" in finding.why


def test_a_route_to_admin_in_the_checked_listener_is_reported_too() -> None:
    text = edited(
        "- match: {path_separated_prefix: /orders}",
        f"- match: {{prefix: /admin}}{ROUTE_INDENT}route: {{cluster: envoy_admin}}"
        f"{ROUTE_INDENT[:-2]}- match: {{path_separated_prefix: /orders}}",
    )
    whats = [f.what for f in findings(text)]
    assert whats == [f"{ADMIN} by a match other than an exact path"]


def test_a_window_that_routes_to_a_service_is_checked_as_any_listener() -> None:
    # Not admin: requests there would reach orders without asking authz.
    text = edited(STATS_ROUTE, STATS_ROUTE.replace("envoy_admin", "orders"))
    whats = {f.what for f in findings(text)}
    assert "no ext_authz filter" in whats
    assert "normalize_path absent (Envoy's default is off)" in whats


def test_a_cluster_at_another_port_than_admins_is_no_admin() -> None:
    admin = "socket_address: {address: 127.0.0.1, port_value: 9901}"
    text = SHIPPED.replace(admin, admin.replace("9901", "9911"), 1)  # admin only
    assert text.count("9911") == 1
    assert "no ext_authz filter" in {f.what for f in findings(text)}


def test_admin_on_every_address_is_still_admin_on_loopback() -> None:
    admin = "socket_address: {address: 127.0.0.1, port_value: 9901}"
    text = SHIPPED.replace(admin, admin.replace("127.0.0.1", "0.0.0.0"), 1)  # noqa: S104
    assert findings(text) == []
    broken = edited("{path: /stats/prometheus}", "{prefix: /}", text)
    assert [f.what for f in findings(broken)] == [f"{ADMIN} by a match other than an exact path"]
