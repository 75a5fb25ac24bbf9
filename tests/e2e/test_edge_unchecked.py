"""What authz did not check does not reach the upstream: through the real Envoy.

envoy/gateway-routes.yaml as shipped, authz with the README's rules:

- on the public /docs route and the optional /catalog route, an Authorization
  header authz did not verify (signed by a foreign key) is removed, and so is
  every ``access_token`` query parameter however it is spelled; other query
  parameters reach the upstream as they were;
- a verified token on /catalog still goes upstream (it was checked);
- method overrides (X-HTTP-Method-Override and kin, ``?_method=``) are taken off
  an allowed GET, so an upstream that honours them cannot run a DELETE the
  rules never judged;
- a name Envoy cannot remove (``;access_token=``) is refused with 400.

Every wait polls for a condition; nothing sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from authz.dev.keys import generate
from authz.dev.tokens import claims_for, mint
from tests.e2e.conftest import KID, Keys
from tests.e2e.test_edge_envoy import Edge
from tests.e2e.test_gateway_rules import readme_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def edge(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    with readme_stack(keys, tmp_path_factory.mktemp("e2e-unchecked")) as (stack, _):
        yield Edge(stack=stack, keys=keys)


def _forged() -> str:
    # A well-formed token for alice, signed by a key authz does not know.
    return mint(generate("RS256"), "RS256", claims_for("alice", "https://idp.example", "x"), KID)


def _seen(edge: Edge, path: str, headers: dict[str, str]) -> dict[str, Any]:
    reply = edge.get(path, headers)
    assert reply.status == 200, reply.body
    seen: dict[str, Any] = reply.json()
    return seen


QUERY = "page=2&access_token=a1&Access_Token=a2&access%5Ftoken=a3&%61ccess_token=a4&sort=asc"


def _only_other_parameters(seen: dict[str, Any]) -> None:
    assert seen["path"].partition("?")[2].split("&") == ["page=2", "sort=asc"]


def test_unverified_credentials_are_removed_on_a_public_route(edge: Edge) -> None:
    seen = _seen(edge, f"/docs/guide?{QUERY}", {"Authorization": f"Bearer {_forged()}"})
    assert "authorization" not in seen["headers"]
    _only_other_parameters(seen)


def test_unverified_credentials_are_removed_on_an_optional_route(edge: Edge) -> None:
    # A Bearer token there is verified (a forged one is a 401); another scheme
    # is not a credential authz reads, and a query token is never read.
    seen = _seen(edge, "/catalog/items", {"Authorization": "Basic YWxpY2U6c2VjcmV0"})
    assert "authorization" not in seen["headers"]
    _only_other_parameters(_seen(edge, f"/catalog/items?{QUERY}", {}))
    forged = edge.get("/catalog/items", {"Authorization": f"Bearer {_forged()}"})
    assert forged.status == 401


def test_a_verified_token_on_an_optional_route_goes_upstream(edge: Edge) -> None:
    token = edge.token()
    seen = _seen(edge, "/catalog/items", {"Authorization": f"Bearer {token}"})
    assert seen["headers"]["authorization"] == f"Bearer {token}"
    assert seen["headers"]["x-auth-subject"] == "alice"


@pytest.mark.parametrize(
    "override", ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"]
)
def test_a_method_override_header_never_reaches_the_upstream(edge: Edge, override: str) -> None:
    token = edge.token()  # orders:read: GET is allowed, DELETE is not
    seen = _seen(edge, "/orders/1", {"Authorization": f"Bearer {token}", override: "DELETE"})
    assert seen["method"] == "GET"
    assert override.lower() not in seen["headers"]


def test_a_method_override_query_parameter_never_reaches_the_upstream(edge: Edge) -> None:
    token = edge.token()
    seen = _seen(edge, "/orders/1?_method=DELETE&x=1", {"Authorization": f"Bearer {token}"})
    assert seen["path"] == "/orders/1?x=1"


@pytest.mark.parametrize("query", ["a=1;access_token=t", "q=1;_method=DELETE"])
def test_a_name_envoy_cannot_remove_is_refused(edge: Edge, query: str) -> None:
    path = f"/docs/guide?{query}"
    reply = edge.get(path)
    assert reply.status == 400, reply.body
    assert path not in edge.upstream_paths()
