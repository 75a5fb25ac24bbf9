"""The shipped gateway's edge settings, each shown with a request through the real Envoy.

envoy/gateway-routes.yaml as shipped (only the ports rewritten) in front of
authz with the README's rules and the echo upstream, which records every
request it receives. Each test sends what an attacker would and checks what
Envoy, authz's audit record, the access log and the upstream saw:

- a header name with ``_`` is refused (400) before anything else runs;
- a client's ``x-envoy-original-path`` reaches neither the upstream nor the log;
- a client's ``x-request-id`` is replaced by one Envoy makes;
- an encoded ``/`` or ``\\`` in the path is refused (400) by Envoy;
- the path is normalized before authz decides, so ``/orders/1//../../docs``
  is an orders request (401), as the upstream would read it, not ``/docs``.

Every wait polls for a condition; nothing sleeps.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from authz.dev.stack import HttpResponse, Stack, wait_for
from tests.e2e.conftest import Keys
from tests.e2e.test_gateway_rules import readme_stack
from tests.support.repo import REPO_ROOT

pytestmark = pytest.mark.e2e

GATEWAY_ROUTES = REPO_ROOT / "envoy" / "gateway-routes.yaml"
EXT_AUTHZ_STATS = "http.ingress.ext_authz."
CHALLENGE = 'Bearer realm="shop"'  # authz's answer to a protected route without a token


@dataclass
class Edge:
    stack: Stack
    keys: Keys

    def get(self, path: str, headers: dict[str, str] | None = None) -> HttpResponse:
        return self.stack.get(path, headers)

    def token(self) -> str:
        return self.keys.token(scope="orders:read", tenant="acme")

    def upstream_paths(self) -> list[str]:
        return [request["path"] for request in self.stack.upstream.received()]

    def checks(self) -> int:
        """How many Checks Envoy has made (ok + denied + error)."""
        assert self.stack.envoy is not None
        stats = self.stack.envoy.stats(EXT_AUTHZ_STATS)
        return sum(stats.get(EXT_AUTHZ_STATS + name, 0) for name in ("ok", "denied", "error"))

    def access_log_entry(self, what: str, *paths: str) -> dict[str, Any]:
        """The first access log entry whose path is one of ``paths``, once written."""
        envoy = self.stack.envoy
        assert envoy is not None

        def entry() -> dict[str, Any] | None:
            return next((e for e in envoy.access_log(1) if e.get("path") in paths), None)

        return wait_for(what, entry, 15, envoy.log)

    def audit_record(self, path: str) -> dict[str, Any]:
        """authz's audit record (its stdout) for ``path``, once written."""
        stdout = self.stack.authz.stdout

        def record() -> dict[str, Any] | None:
            lines = stdout.read_text(errors="replace").split("\n")[:-1]  # finished lines
            found = [json.loads(line) for line in lines if line.startswith("{")]
            return next((item for item in found if item.get("path") == path), None)

        return wait_for(f"the audit record for {path}", record, 15, self.stack.authz.log)


@pytest.fixture(scope="module")
def edge(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    with readme_stack(keys, tmp_path_factory.mktemp("e2e-edge"), "") as (stack, _):
        yield Edge(stack=stack, keys=keys)


def _marker() -> str:
    return uuid.uuid4().hex[:12]


def _is_envoys_own_400(reply: HttpResponse) -> bool:
    # authz's 400 carries a challenge and a JSON body; Envoy's carries neither.
    return (
        reply.status == 400
        and "www-authenticate" not in reply.headers
        and not reply.body.startswith(b"{")
    )


UNDERSCORED = {
    "subject": {"x_auth_subject": "mallory"},
    "roles": {"x_auth_roles": "orders-admin"},
    "both": {"x_auth_subject": "mallory", "x_auth_roles": "orders-admin"},
}


@pytest.mark.parametrize("forged", UNDERSCORED.values(), ids=UNDERSCORED.keys())
def test_a_header_name_with_an_underscore_is_refused_before_authz_and_upstream(
    edge: Edge, forged: dict[str, str]
) -> None:
    # A CGI/WSGI upstream would read x_auth_roles as x-auth-roles (HTTP_X_AUTH_ROLES),
    # which authz removes from the dash spelling only.
    path = f"/docs/{_marker()}"  # a public route: nothing else would stop it
    checks = edge.checks()
    reply = edge.get(path, forged)
    assert _is_envoys_own_400(reply), (reply.status, reply.body)
    assert edge.checks() == checks  # authz was never asked
    control = edge.get(path + "-control")  # the same request without the header
    assert control.status == 200
    assert path + "-control" in edge.upstream_paths()
    assert path not in edge.upstream_paths()


def test_a_forged_original_path_reaches_neither_the_upstream_nor_the_access_log(
    edge: Edge,
) -> None:
    marker = _marker()
    forged = f"/docs/innocent-{marker}"
    public, protected = f"/docs/{marker}", f"/orders/{marker}"

    reply = edge.get(public, {"x-envoy-original-path": forged})
    assert reply.status == 200
    assert "x-envoy-original-path" not in reply.json()["headers"]
    entry = edge.access_log_entry("the public request's log entry", public, forged)
    assert entry["path"] == public

    # A denied probe of a protected route cannot disguise itself in the log either.
    assert edge.get(protected, {"x-envoy-original-path": forged}).status == 401
    entry = edge.access_log_entry("the denied request's log entry", protected, forged)
    assert (entry["path"], entry["status"]) == (protected, 401)
    assert edge.stack.envoy is not None
    assert forged not in [e["path"] for e in edge.stack.envoy.access_log(1)]


def test_a_client_request_id_is_replaced_by_envoys(edge: Edge) -> None:
    marker = _marker()
    path, client_id = f"/orders/{marker}", f"client-chosen-{marker}"
    reply = edge.get(path, {"Authorization": f"Bearer {edge.token()}", "x-request-id": client_id})
    assert reply.status == 200, reply.body
    seen = reply.json()["headers"]["x-request-id"]
    assert seen != client_id
    assert str(uuid.UUID(seen)) == seen  # Envoy's own: a UUID it generated
    assert edge.audit_record(path)["request_id"] == seen
    entry = edge.access_log_entry("the request's log entry", path)
    assert entry["request_id"] == seen


@pytest.mark.parametrize(
    "template", ["/a%2Fb-{m}", "/a%5cb-{m}", "/docs/{m}%2fx", "/docs/{m}/..%5C..%5Corders"]
)
def test_an_encoded_slash_or_backslash_is_refused_by_envoy(edge: Edge, template: str) -> None:
    marker = _marker()
    checks = edge.checks()
    reply = edge.get(template.format(m=marker))
    assert _is_envoys_own_400(reply), (reply.status, reply.body)
    assert edge.checks() == checks  # refused before ext_authz, so before the upstream
    assert edge.get(f"/docs/{marker}-control").status == 200
    assert [path for path in edge.upstream_paths() if marker in path] == [f"/docs/{marker}-control"]


def test_dot_segments_are_resolved_as_the_upstream_would_before_authz_decides(
    edge: Edge,
) -> None:
    # authz alone would read /orders/1//../../docs as /docs (public); Envoy, and so
    # the upstream, read it as /orders/docs: the orders route, which needs a token.
    reply = edge.get("/orders/1//../../docs")
    assert reply.status == 401, reply.body
    assert reply.headers["www-authenticate"] == CHALLENGE
    entry = edge.access_log_entry("the request's log entry", "/orders/docs", "/docs")
    assert (entry["path"], entry["authz_route"], entry["status"]) == (
        "/orders/docs",
        "orders-read",
        401,
    )
