"""The real server with routes: each mode, requirements, shadow, revocation and live reload.

Every Check goes over a real socket to the grpc.aio server, as Envoy's would.
Reloads are observed by polling (bounded), never by sleeping for readiness.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from authz._proto.envoy.service.auth.v3 import attribute_context_pb2
from authz.runtime import ConfigFile
from authz.server import AuthzServer
from tests.service.svc_helpers import (
    ISSUER,
    REALM,
    WAIT,
    CheckRequest,
    CheckResponse,
    Client,
    LoopThread,
    Signing,
    config_data,
    deny_headers,
    metadata,
    ok_headers,
    write_config,
)

OK, PERMISSION_DENIED, UNAUTHENTICATED, INVALID_ARGUMENT = 0, 7, 16, 3

ROUTES: list[dict[str, Any]] = [
    {"name": "health", "match": {"path": "/healthz"}, "mode": "public"},
    {"name": "profile", "match": {"prefix": "/me"}, "mode": "optional"},
    {
        "name": "payments",
        "match": {"context_extensions": {"service": "payments"}},
        "mode": "protected",
        "requirements": {"scopes": ["payments:write"]},
        "identity": {"strip_authorization": True},
    },
    {
        "name": "reports",
        "match": {"prefix": "/reports"},
        "mode": "protected",
        "shadow": True,
        "requirements": {"roles": ["auditor"]},
    },
    {
        "name": "orders",
        "match": {"prefix": "/orders"},
        "mode": "protected",
        "requirements": {"scopes": ["orders:read"]},
    },
]


def rules_data(signing: Signing, **overrides: Any) -> dict[str, Any]:
    data = config_data(
        signing.jwks_file,
        routes=ROUTES,
        revocation={"file": "revoked.txt"},
        watch_interval_seconds=0.05,
        identity={
            "headers": {
                "x-auth-subject": "sub",
                "x-auth-scopes": "scope",
                "x-auth-groups": "groups",
            }
        },
    )
    data.update(overrides)
    return data


def publish(path: Path, text: str) -> None:
    """Replace a file atomically, as a deployment tool (or a ConfigMap) would."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def request(
    path: str = "/orders/1",
    token: str | None = None,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    host: str = "api.example",
    **extensions: str,
) -> CheckRequest:
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        id="1", method=method, path=path, host=host, scheme="https"
    )
    http.headers.update(headers or {})
    if token is not None:
        http.headers["authorization"] = f"Bearer {token}"
    attributes = attribute_context_pb2.AttributeContext(
        request=attribute_context_pb2.AttributeContext.Request(http=http)
    )
    attributes.context_extensions.update(extensions)
    return CheckRequest(attributes=attributes)


class Running:
    """An AuthzServer watching its config file, on the shared loop thread."""

    def __init__(self, loop: LoopThread, config: Path) -> None:
        self.loop = loop
        self.config_path = config

        async def create() -> AuthzServer:
            config_file = ConfigFile(config)
            return AuthzServer(config_file.config, config_file=config_file)

        self.server = loop.run(create())
        loop.run(self.server.start())
        self.client = Client.connect(self.server.address)

    def check(self, req: CheckRequest) -> CheckResponse:
        return self.client.check(req, timeout=WAIT)

    def wait_until(self, what: str, condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)  # a poll interval, not a readiness guess

    def close(self) -> None:
        self.client.close()
        self.loop.run(self.server.stop(0))


@pytest.fixture
def start(
    loop_thread: LoopThread, tmp_path: Path, signing: Signing
) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def _start(**overrides: Any) -> Running:
        revoked = tmp_path / "revoked.txt"
        if not revoked.exists():
            revoked.write_text("jti:stolen-1\n")
        config = write_config(tmp_path / "authz.yaml", rules_data(signing, **overrides))
        running = Running(loop_thread, config)
        started.append(running)
        return running

    yield _start
    for running in started:
        running.close()


# --- route modes ------------------------------------------------------------------------


def test_public_route_needs_no_token_and_drops_forged_identity(
    start: Callable[..., Running],
) -> None:
    running = start()
    reply = running.check(
        request("/healthz", headers={"x-auth-subject": "mallory", "authorization": "junk"})
    )
    assert reply.status.code == OK
    assert ok_headers(reply) == {}
    assert "x-auth-subject" in reply.ok_response.headers_to_remove
    assert metadata(reply)["route"] == "health"
    assert metadata(reply)["mode"] == "public"


def test_optional_route(start: Callable[..., Running], signing: Signing) -> None:
    running = start()
    anonymous = running.check(request("/me"))
    assert anonymous.status.code == OK
    assert ok_headers(anonymous) == {}
    identified = running.check(request("/me", signing.token()))
    assert identified.status.code == OK
    assert ok_headers(identified)["x-auth-subject"] == "alice"
    forged = running.check(request("/me", signing.token(key=signing.other_key)))
    assert forged.status.code == UNAUTHENTICATED
    assert forged.denied_response.status.code == 401


def test_protected_route(start: Callable[..., Running], signing: Signing) -> None:
    running = start()
    missing = running.check(request("/orders/1"))
    assert missing.denied_response.status.code == 401
    assert deny_headers(missing)["www-authenticate"] == f'Bearer realm="{REALM}"'

    allowed = running.check(request("/orders/1", signing.token(scopes="orders:read")))
    assert allowed.status.code == OK
    assert ok_headers(allowed)["x-auth-scopes"] == "orders:read"

    denied = running.check(request("/orders/1", signing.token(scopes="orders:write")))
    assert denied.status.code == PERMISSION_DENIED
    assert denied.denied_response.status.code == 403
    assert deny_headers(denied)["www-authenticate"] == (
        f'Bearer realm="{REALM}", error="insufficient_scope", '
        'error_description="The access token does not grant access to this resource", '
        'scope="orders:read"'
    )
    assert metadata(denied)["reason"] == "insufficient_scope"
    assert metadata(denied)["sub"] == "alice"


def test_unmatched_and_ambiguous_requests(start: Callable[..., Running]) -> None:
    running = start()
    unmatched = running.check(request("/admin"))
    assert unmatched.status.code == PERMISSION_DENIED
    assert unmatched.denied_response.status.code == 403
    assert "www-authenticate" not in deny_headers(unmatched)
    assert metadata(unmatched)["reason"] == "no_route"
    escaping = running.check(request("/healthz/..%2F..%2Forders"))
    assert escaping.status.code == INVALID_ARGUMENT
    assert escaping.denied_response.status.code == 400
    assert metadata(escaping)["reason"] == "invalid_path"
    # A path Envoy would have normalized did not come through Envoy's
    # normalization: refused, not read as /orders/1 or as /healthz.
    dotted = running.check(request("/healthz/../orders/1"))
    assert metadata(dotted)["reason"] == "invalid_path"
    assert dotted.denied_response.status.code == 400
    # A host an upstream reads one way and a rule another: refused too.
    spoofed = running.check(request("/orders/1", host="api.example:"))
    assert metadata(spoofed)["reason"] == "invalid_host"
    assert spoofed.denied_response.status.code == 400


def test_context_extensions_select_the_route(
    start: Callable[..., Running], signing: Signing
) -> None:
    running = start()
    token = signing.token(scopes="orders:read payments:write")
    reply = running.check(request("/orders/1", token, service="payments"))
    assert reply.status.code == OK
    assert metadata(reply)["route"] == "payments"
    assert "authorization" in reply.ok_response.headers_to_remove
    plain = running.check(request("/orders/1", token))
    assert metadata(plain)["route"] == "orders"
    assert "authorization" not in plain.ok_response.headers_to_remove


def test_array_claims_as_headers(start: Callable[..., Running], signing: Signing) -> None:
    running = start()
    token = signing.token(scopes="orders:read", groups=["eu-sales", "admins"])
    assert ok_headers(running.check(request("/orders/1", token)))["x-auth-groups"] == (
        "eu-sales,admins"
    )


def test_shadow_route_is_reported_and_never_decides(
    start: Callable[..., Running], signing: Signing
) -> None:
    running = start()
    # No route after the shadow route "reports" takes /reports: no_route, as
    # if it were absent, whatever the token.
    for roles in (["clerk"], ["auditor"]):
        reply = running.check(request("/reports/2025", signing.token(roles=roles)))
        assert reply.denied_response.status.code == 403
        assert metadata(reply)["reason"] == "no_route"
    meta = metadata(running.check(request("/reports/2025", signing.token(roles=["clerk"]))))
    assert (meta["decision"], meta["shadow_route"], meta["shadow_denied"]) == (
        "deny",
        "reports",
        "role_missing",
    )


def test_dry_run_allows_and_reports_the_would_be_deny(
    start: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="authz.server"):
        running = start(dry_run=True)
    assert "DRY RUN: nothing is enforced" in caplog.text
    reply = running.check(request("/orders/1", headers={"x-auth-subject": "mallory"}))
    assert reply.status.code == OK
    assert ok_headers(reply) == {}
    assert "x-auth-subject" in reply.ok_response.headers_to_remove
    meta = metadata(reply)
    assert (meta["decision"], meta["reason"], meta["dry_run_denied"]) == (
        "allow",
        "dry_run",
        "missing_token",
    )


# --- revocation -------------------------------------------------------------------------


def test_revoked_jti_and_a_list_updated_while_serving(
    start: Callable[..., Running], signing: Signing, tmp_path: Path
) -> None:
    running = start()
    revoked = running.check(
        request("/orders/1", signing.token(scopes="orders:read", jti="stolen-1"))
    )
    assert revoked.denied_response.status.code == 401
    assert metadata(revoked)["reason"] == "token_revoked"
    assert 'error="invalid_token"' in deny_headers(revoked)["www-authenticate"]

    token = signing.token(scopes="orders:read", jti="leaked-2")
    assert running.check(request("/orders/1", token)).status.code == OK
    publish(tmp_path / "revoked.txt", "jti:stolen-1\njti:leaked-2\n")
    running.wait_until(
        "the new revocation list",
        lambda: running.check(request("/orders/1", token)).status.code != OK,
    )
    assert metadata(running.check(request("/orders/1", token)))["reason"] == "token_revoked"


# --- live reload ------------------------------------------------------------------------


class Traffic:
    """Checks sent back to back from a thread; every reply's outcome is kept in order."""

    def __init__(self, running: Running, req: CheckRequest) -> None:
        self.outcomes: list[str] = []
        self.errors: list[BaseException] = []
        self._running = running
        self._request = req
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                reply = self._running.check(self._request)
            except grpc.RpcError as exc:
                self.errors.append(exc)
                continue
            self.outcomes.append("allow" if reply.status.code == OK else metadata(reply)["reason"])

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(WAIT)

    def count(self) -> int:
        return len(self.outcomes)


def test_reload_under_traffic_is_atomic_and_loses_no_request(
    start: Callable[..., Running],
    signing: Signing,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    running = start()
    config = tmp_path / "authz.yaml"
    token = signing.token(scopes="orders:read")
    stricter = [dict(r) for r in ROUTES]
    stricter[-1] = {**stricter[-1], "requirements": {"scopes": ["orders:admin"]}}

    with Traffic(running, request("/orders/1", token)) as traffic:
        running.wait_until("traffic", lambda: traffic.count() > 20)
        write_config(tmp_path / "next.yaml", rules_data(signing, routes=stricter))
        os.replace(tmp_path / "next.yaml", config)
        running.wait_until("the reload", lambda: running.server.reload_status.reloads == 1)
        seen = traffic.count()
        running.wait_until("traffic after the reload", lambda: traffic.count() > seen + 20)

        with caplog.at_level(logging.ERROR, logger="authz.server"):
            publish(config, config.read_text() + "routes: [oops\n")
            running.wait_until(
                "the failed reload", lambda: running.server.reload_status.failures == 1
            )
        seen = traffic.count()
        running.wait_until("traffic after the failure", lambda: traffic.count() > seen + 20)

    assert traffic.errors == []
    outcomes = traffic.outcomes
    # Old answers, then new ones; never back, never anything else.
    switch = outcomes.index("insufficient_scope")
    assert set(outcomes[:switch]) == {"allow"}
    assert set(outcomes[switch:]) == {"insufficient_scope"}
    status = running.server.reload_status
    assert (status.reloads, status.failures) == (1, 1)
    assert status.last_error is not None
    assert status.last_error.startswith(f"{config}: not valid YAML")
    assert "configuration not reloaded, the running one stays in force" in caplog.text
    assert running.server.config.routes is not None
    assert running.server.config.routes[-1].requirements is not None


def test_reload_with_bad_keys_keeps_the_running_config(
    start: Callable[..., Running], signing: Signing, tmp_path: Path
) -> None:
    running = start()
    data = rules_data(signing)
    data["issuers"][0]["keys"] = [{"jwks_file": str(tmp_path / "missing.json")}]
    write_config(tmp_path / "next.yaml", data)
    os.replace(tmp_path / "next.yaml", tmp_path / "authz.yaml")
    running.wait_until("the failed reload", lambda: running.server.reload_status.failures == 1)
    assert "missing.json" in (running.server.reload_status.last_error or "")
    token = signing.token(scopes="orders:read")
    assert running.check(request("/orders/1", token)).status.code == OK


def test_reload_of_the_realm_and_issuer(
    start: Callable[..., Running], signing: Signing, tmp_path: Path
) -> None:
    running = start()
    write_config(tmp_path / "next.yaml", rules_data(signing, realm="renamed"))
    os.replace(tmp_path / "next.yaml", tmp_path / "authz.yaml")
    running.wait_until("the reload", lambda: running.server.reload_status.reloads == 1)
    reply = running.check(request("/orders/1"))
    assert deny_headers(reply)["www-authenticate"] == 'Bearer realm="renamed"'
    assert running.server.config.issuers[0].issuer == ISSUER
