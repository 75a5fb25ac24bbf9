"""Paths an upstream may read as another path, through the real Envoy and the rules example.

envoy/gateway-routes.yaml in front of authz with the docs/rules.md example,
changed only as a deployment in front of lax upstreams would change it: the
``orders-admin`` rule enforced (not shadow) and, like ``payments-refund``,
matched without regard to case. Each request is sent on a raw socket, exactly
as written, so nothing but Envoy touches the path on the way to authz.

- A percent-escape of a look-alike (FULLWIDTH FULL STOP and kin, which NFKC
  makes "." or "/", or a fullwidth letter) and a segment ending in "." or a
  space are refused by authz (400 invalid_path) in the form Envoy forwards
  them, and never reach the upstream — whatever route they would otherwise
  fall to, the public ``/docs`` included.
- ``/orders/ADMIN/x`` and ``POST /payments/7/Refunds`` are judged by the
  admin and refund rules, not by the broader routes after them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from authz.dev.stack import Stack
from tests.e2e.conftest import Keys
from tests.e2e.edge_differential import Outcome, Probe, send_all
from tests.e2e.test_gateway_rules import GATEWAY_ROUTES, readme_config

pytestmark = pytest.mark.e2e

# What the example says, and what a deployment in front of lax upstreams makes of it.
ENFORCED = (
    ("    shadow: true ", "    shadow: false "),
    (
        "match: {context_extensions: {service: orders}, prefix: /orders/admin}",
        "match: {context_extensions: {service: orders}, prefix: /orders/admin, ignore_case: true}",
    ),
    (
        "      pattern: /payments/{payment}/refunds\n",
        "      pattern: /payments/{payment}/refunds\n      ignore_case: true\n",
    ),
)

LOOKALIKES = [
    # NFKC: /docs/../orders/admin/x, past the public /docs route
    "/docs/%EF%BC%8E%EF%BC%8E/orders/admin/x",  # FULLWIDTH FULL STOP
    "/docs/%ef%bc%8e%ef%bc%8e/orders/admin/x",  # the same, lower-case hex (kept by Envoy)
    "/docs/%E2%80%A4%E2%80%A4/orders/admin/x",  # ONE DOT LEADER
    "/docs/%E2%80%A5/orders/admin/x",  # TWO DOT LEADER
    "/docs/%EF%B9%92%EF%B9%92/orders/admin/x",  # SMALL FULL STOP
    "/docs%EF%BC%8F..%EF%BC%8Forders%EF%BC%8Fadmin%EF%BC%8Fx",  # FULLWIDTH SOLIDUS
    # NFKC: /orders/admin/x, where a reader's token passes orders-read
    "/orders/%EF%BD%81dmin/x",  # FULLWIDTH LATIN SMALL LETTER A
    "/orders/ad%E2%80%8Bmin/x",  # ZERO WIDTH SPACE, dropped by some readers
]
TRAILING = [
    ("GET", "/orders/admin./x"),
    ("GET", "/orders/admin%20/x"),
    ("GET", "/orders/admin.%20./x"),
    ("POST", "/payments/7/refunds."),
    ("POST", "/payments/7/refunds%20"),
]


@dataclass
class Shop:
    stack: Stack
    keys: Keys

    def send(self, path: str, method: str = "GET", token: str | None = None) -> Outcome:
        """One request on a raw socket, joined with its audit record (found by Host)."""
        marker = f"{uuid.uuid4().hex}.shop.test"
        assert self.stack.envoy is not None
        headers = (("Authorization", f"Bearer {token}"),) if token else ()
        [outcome] = send_all(
            self.stack.envoy.listener_port,
            [Probe(marker, path, marker, method, headers)],
            self.stack.authz.stdout,
            lambda record: str(record["host"]),
            self.stack.authz.log,
        )
        return outcome

    def reached_upstream(self, path: str) -> bool:
        return any(request["path"] == path for request in self.stack.upstream.received())


@pytest.fixture(scope="module")
def shop(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    workdir = tmp_path_factory.mktemp("e2e-lookalikes")
    revoked = workdir / "revoked.txt"
    revoked.write_text("")
    text = readme_config(keys, revoked)
    for old, new in ENFORCED:
        assert old in text, f"the rules example no longer has {old!r}"
        text = text.replace(old, new)
    config = workdir / "authz.yaml"
    config.write_text(text)
    with Stack(workdir, config, GATEWAY_ROUTES) as stack:
        yield Shop(stack, keys)


def _refused(shop: Shop, outcome: Outcome, path: str) -> None:
    assert outcome.status == 400, outcome.body
    assert outcome.from_authz, outcome.body  # authz's 400, not Envoy's
    assert outcome.audit is not None
    # Envoy forwarded it as sent: the look-alike survives normalization to authz.
    assert outcome.audit["path"] == path
    assert (outcome.audit["decision"], outcome.audit["reason"]) == ("deny", "invalid_path")
    assert outcome.upstream is None
    assert not shop.reached_upstream(path)


@pytest.mark.parametrize("path", LOOKALIKES)
def test_a_lookalike_escape_is_refused_and_never_reaches_the_upstream(
    shop: Shop, path: str
) -> None:
    reader = shop.keys.token(scope="orders:read", tenant="acme")
    for token in (None, reader):  # anonymous (the public /docs route), and a reader
        _refused(shop, shop.send(path, token=token), path)


@pytest.mark.parametrize(("method", "path"), TRAILING)
def test_a_segment_ending_in_a_dot_or_space_is_refused_and_never_reaches_the_upstream(
    shop: Shop, method: str, path: str
) -> None:
    # A token every broader route after the protected one would allow.
    token = shop.keys.token(scope="orders:read payments:read payments:refund", tenant="acme")
    _refused(shop, shop.send(path, method, token), path)


def test_the_same_paths_without_a_lookalike_reach_the_upstream(shop: Shop) -> None:
    # The control: é is its own NFKC, "v1.2" ends in no dot; the public route lets both in.
    for path in ("/docs/caf%C3%A9/x", "/docs/v1.2/x"):
        outcome = shop.send(path)
        assert outcome.status == 200, outcome.body
        assert outcome.upstream is not None
        assert outcome.upstream["path"] == path
        assert outcome.audit is not None
        assert outcome.audit["route"] == "docs"


@pytest.mark.parametrize("path", ["/orders/admin/x", "/orders/ADMIN/x", "/Orders/Admin/x"])
def test_the_admin_rule_judges_the_admin_path_in_any_case(shop: Shop, path: str) -> None:
    # A reader (orders:read, no orders-admin role): orders-read would allow it.
    reader = shop.keys.token(scope="orders:read", tenant="acme")
    outcome = shop.send(path, token=reader)
    assert outcome.status == 403, outcome.body
    assert outcome.audit is not None
    assert (outcome.audit["route"], outcome.audit["reason"]) == ("orders-admin", "role_missing")
    assert not shop.reached_upstream(path)
    admin = shop.keys.token(
        scope="orders:read", tenant="acme", realm_access={"roles": ["orders-admin"]}
    )
    allowed = shop.send(path, token=admin)
    assert allowed.status == 200, allowed.body
    assert allowed.upstream is not None
    assert allowed.upstream["path"] == path  # the upstream gets the path as sent


@pytest.mark.parametrize("path", ["/payments/7/refunds", "/payments/7/Refunds"])
def test_the_refund_rule_judges_a_refund_in_any_case(shop: Shop, path: str) -> None:
    # payments:read would pass the broader payments route; the refund rule wants
    # payments:refund and a support lead or MFA.
    token = shop.keys.token(scope="payments:read payments:refund", amr=["pwd"])
    outcome = shop.send(path, "POST", token)
    assert outcome.status == 403, outcome.body
    assert outcome.audit is not None
    assert (outcome.audit["route"], outcome.audit["reason"]) == (
        "payments-refund",
        "insufficient_scope",
    )
    assert not shop.reached_upstream(path)
