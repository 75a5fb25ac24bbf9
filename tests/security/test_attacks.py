"""Every attack in the corpus, against the real service and through real Envoy."""

from __future__ import annotations

import json
from urllib.parse import unquote

import pytest
from google.protobuf import json_format

from authz._proto.envoy.config.core.v3 import base_pb2
from authz._proto.envoy.service.auth.v3 import external_auth_pb2
from authz.dev.stack import Stack
from tests.security.corpus import CASES, IDENTITY_INJECTIONS, Case, Material, Request, bearer, rs
from tests.support.harness import Client
from tests.support.idp import FakeIdP

NAMES = [case.name for case in CASES]


def test_case_names_are_unique() -> None:
    assert len(NAMES) == len(set(NAMES))
    assert len(CASES) >= 120


def _check_request(request: Request) -> external_auth_pb2.CheckRequest:
    check = external_auth_pb2.CheckRequest()
    http = check.attributes.request.http
    http.method = "GET"
    http.path = request.path
    http.host = "api.test"
    if request.raw_headers:
        for key, value in request.raw_headers:
            http.header_map.headers.append(base_pb2.HeaderValue(key=key, raw_value=value))
    else:
        http.headers.update(request.headers)
    return check


@pytest.mark.parametrize("case", CASES, ids=NAMES)
def test_attack_against_the_service(case: Case, material: Material, service: Client) -> None:
    request = case.build(material)
    response = service.check(_check_request(request), timeout=10)
    metadata = json_format.MessageToDict(response.dynamic_metadata)
    assert metadata["reason"] == case.reason, metadata
    if case.status == 200:
        assert response.status.code == 0
        assert response.WhichOneof("http_response") == "ok_response"
    else:
        assert response.status.code != 0
        assert response.WhichOneof("http_response") == "denied_response"
        assert response.denied_response.status.code == case.status
        assert not response.ok_response.headers
    # Whatever was sent, none of it is echoed back.
    wire = response.SerializeToString()
    for value in request.headers.values():
        token = value.partition(" ")[2]
        for segment in token.split("."):
            if len(segment) >= 16:
                assert segment.encode() not in wire


@pytest.mark.e2e
@pytest.mark.parametrize(
    "case", [c for c in CASES if c.envoy], ids=[c.name for c in CASES if c.envoy]
)
def test_attack_through_envoy(case: Case, material: Material, gateway: Stack) -> None:
    request = case.build(material)
    reply = gateway.get(request.path, request.headers)
    assert reply.status == case.status, reply.body
    if case.status == 200:
        assert reply.json()["headers"]["x-auth-subject"] == "alice"
    else:
        body = json.loads(reply.body)
        assert set(body) == {"error", "error_description"}


def test_no_token_header_made_the_service_fetch_anything(jku_server: FakeIdP) -> None:
    # Runs after the corpus (file order): jku/x5u headers never cause a request.
    assert jku_server.total() == 0


@pytest.mark.e2e
@pytest.mark.parametrize("value", IDENTITY_INJECTIONS.values(), ids=IDENTITY_INJECTIONS.keys())
def test_an_identity_injection_reaches_the_upstream_as_encoded_data(
    value: str, material: Material, gateway: Stack
) -> None:
    reply = gateway.get("/", bearer(rs(material, sub=value)).headers)
    assert reply.status == 200, reply.body
    headers = reply.json()["headers"]
    assert unquote(headers["x-auth-subject"], errors="strict") == value
    assert all(0x21 <= ord(c) <= 0x7E for c in headers["x-auth-subject"])
    assert "x-auth-roles" not in headers
