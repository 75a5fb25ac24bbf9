"""authz explain: the service's own decision, printed step by step."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from authz.check.request import RequestView
from authz.cli import main
from authz.config.loader import load_config
from authz.dev.keys import PrivateKey, load_private, write_keypair
from authz.dev.tokens import claims_for, mint
from authz.explain import explain
from authz.runtime import build_runtime

ISS = "https://idp.example"

CONFIG = f"""\
issuers:
  - issuer: {ISS}
    audiences: [orders-api]
    algorithms: [RS256]
    keys: [{{jwks_file: keys/jwks.json}}]
revocation: {{file: revoked.txt}}
identity:
  headers:
    x-auth-subject: sub
    x-auth-scopes: scope
routes:
  - name: health
    match: {{path: /healthz}}
    mode: public
  - name: payments
    match: {{context_extensions: {{service: payments}}}}
    mode: protected
    requirements: {{scopes: [payments:write]}}
    identity: {{strip_authorization: true}}
  - name: orders-admin
    match: {{prefix: /orders/admin}}
    mode: protected
    shadow: true
    requirements: {{roles: [admin]}}
  - name: orders-read
    match: {{pattern: "/orders/{{id}}", methods: [GET]}}
    mode: protected
    requirements:
      scopes: [orders:read]
      any_of:
        - roles: [clerk]
        - claims: [{{claim: tenant, equals: acme}}]
"""


@dataclass(frozen=True)
class Setup:
    config: Path
    key: PrivateKey

    def token(self, **extra: object) -> str:
        claims = claims_for("alice", ISS, "orders-api", scopes="orders:read", ttl=300)
        claims.update(extra)
        return mint(self.key, "RS256", claims, "k1")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    directory = tmp_path_factory.mktemp("explain")
    private, _ = write_keypair(directory / "keys", "RS256", "k1")
    (directory / "revoked.txt").write_text("jti:stolen\n")
    config = directory / "authz.yaml"
    config.write_text(CONFIG)
    return Setup(config=config, key=load_private(private))


def _explain(capsys: pytest.CaptureFixture[str], setup: Setup, *args: str) -> tuple[int, str]:
    code = main(["explain", "-c", str(setup.config), *args])
    return code, capsys.readouterr().out


def test_allow_prints_every_step_and_the_headers(
    capsys: pytest.CaptureFixture[str], setup: Setup
) -> None:
    token = setup.token(roles=["clerk"])
    code, out = _explain(
        capsys, setup, "--token", token, "--path", "/orders/42?x=1", "--host", "api.example"
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["request", "GET", "api.example", "/orders/42?x=1"]
    assert "health: path does not match (route: exact /healthz)" in out
    assert "payments: context_extensions does not match (route: service=payments)" in out
    assert "orders-read: protected, id=42" in out
    assert "verified: issuer https://idp.example" in out
    assert "kid k1 (RSA-2048), alg RS256" in out
    assert "neither jti nor sub is revoked" in out
    assert "[ok  ] scopes orders:read — all granted" in out
    assert "[ok  ] roles clerk (from roles) — all held" in out
    assert "[FAIL] claim tenant equals 'acme' — claim 'tenant' is absent" in out
    assert "ALLOW" in out
    assert "set     x-auth-subject: alice" in out
    assert "set     x-auth-scopes: orders:read" in out
    assert '"route": "orders-read"' in out
    assert token not in out
    for part in token.split("."):
        assert part not in out


def test_insufficient_scope_prints_the_challenge(
    capsys: pytest.CaptureFixture[str], setup: Setup
) -> None:
    code, out = _explain(
        capsys,
        setup,
        "--token",
        setup.token(),
        "--path",
        "/pay",
        "--context-extension",
        "service=payments",
    )
    assert code == 1
    assert "payments: protected" in out
    assert "[FAIL] scopes payments:write — missing scope payments:write" in out
    assert "DENY 403 insufficient_scope: missing scope payments:write" in out
    assert (
        'www-authenticate: Bearer realm="authz", error="insufficient_scope", '
        'error_description="The access token does not grant access to this resource", '
        'scope="payments:write"'
    ) in out


def test_no_route(capsys: pytest.CaptureFixture[str], setup: Setup) -> None:
    code, out = _explain(capsys, setup, "--method", "DELETE", "--path", "/orders/42")
    assert code == 1
    assert "orders-read: method does not match (route: GET)" in out
    assert "DENY 403 no_route: no route takes DELETE /orders/42" in out
    assert "www-authenticate" not in out


def test_bad_token_shows_its_unverified_contents(
    capsys: pytest.CaptureFixture[str], setup: Setup
) -> None:
    header, payload, signature = setup.token(iss="https://evil.example").split(".")
    code, out = _explain(
        capsys, setup, "--token", f"{header}.{payload}.{signature}", "--path", "/orders/1"
    )
    assert code == 1
    assert "FAIL  unknown_issuer" in out
    assert "UNVERIFIED, for display only: alg 'RS256'; kid 'k1'; iss 'https://evil.example'" in out
    assert "DENY 401 unknown_issuer" in out


def test_revoked(capsys: pytest.CaptureFixture[str], setup: Setup, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(setup.token(jti="stolen", roles=["clerk"]) + "\n")
    code, out = _explain(capsys, setup, "--token-file", str(token_file), "--path", "/orders/1")
    assert code == 1
    assert "revocation   FAIL  token_revoked: jti is on the revocation list" in out


def test_shadow_route_is_reported_and_the_next_route_decides(
    capsys: pytest.CaptureFixture[str], setup: Setup
) -> None:
    code, out = _explain(capsys, setup, "--path", "/orders/admin")
    assert code == 1
    lines = out.splitlines()
    assert "route        ok    orders-admin: protected, shadow" in lines
    assert (
        "shadow       note  orders-admin would deny 401 missing_token; "
        "not enforced: the routes after it decide"
    ) in lines
    assert "route        ok    orders-read: protected, id=admin" in lines
    assert "answer       DENY 401 missing_token: no Authorization header" in lines
    assert (
        "shadow       orders-admin would deny 401 missing_token: "
        "no Authorization header (not enforced)"
    ) in lines


def test_shadow_would_deny_beside_an_allow(
    capsys: pytest.CaptureFixture[str], setup: Setup
) -> None:
    code, out = _explain(
        capsys, setup, "--token", setup.token(roles=["clerk"]), "--path", "/orders/admin"
    )
    assert code == 0
    assert "answer       ALLOW" in out.splitlines()
    assert "orders-admin would deny 403 role_missing: missing role admin (not enforced)" in out
    assert '"shadow_denied": "role_missing"' in out


def test_dry_run_allows_and_says_what_it_would_deny(
    capsys: pytest.CaptureFixture[str], setup: Setup
) -> None:
    config = setup.config.parent / "dry-run.yaml"
    config.write_text("dry_run: true\n" + setup.config.read_text())
    code = main(["explain", "-c", str(config), "--path", "/orders/1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "dry run      note  would deny 401 missing_token; allowed" in out.splitlines()
    assert (
        "answer       ALLOW (dry run: would deny 401 missing_token: no Authorization header)"
        in out.splitlines()
    )


def test_public_route_and_forged_headers(capsys: pytest.CaptureFixture[str], setup: Setup) -> None:
    code, out = _explain(capsys, setup, "--path", "/healthz", "--header", "X-Auth-Subject=mallory")
    assert code == 0
    assert "public route: no token examined" in out
    assert "remove  x-auth-scopes, x-auth-subject" in out


def test_at_decides_as_of_another_time(capsys: pytest.CaptureFixture[str], setup: Setup) -> None:
    now = int(time.time())
    token = setup.token(roles=["clerk"], iat=now - 7200, exp=now - 3600)
    code, out = _explain(capsys, setup, "--token", token, "--path", "/orders/1")
    assert code == 1
    assert "token_expired" in out
    code, out = _explain(
        capsys, setup, "--token", token, "--path", "/orders/1", "--at", str(now - 5000)
    )
    assert code == 0, out


@pytest.mark.parametrize(
    "args",
    [
        ["--path", "/x", "--header", "novalue"],
        ["--path", "/x", "--context-extension", "=x"],
        ["--path", "/x", "--token-file", "/nonexistent/token"],
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], setup: Setup, args: list[str]
) -> None:
    assert main(["explain", "-c", str(setup.config), *args]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("authz: ")
    assert captured.out == ""


def test_configuration_error_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("issuers: []\n")
    assert main(["explain", "-c", str(bad), "--path", "/"]) == 2
    assert "configuration error" in capsys.readouterr().err


def test_explain_decides_exactly_as_the_service(setup: Setup) -> None:
    config = load_config(setup.config)
    decider = build_runtime(config).decider
    requests = [
        RequestView(method="GET", path="/orders/1", headers={"authorization": (f"Bearer {t}",)})
        for t in (setup.token(), setup.token(roles=["clerk"]), setup.token(jti="stolen"))
    ] + [
        RequestView(method="GET", path="/healthz"),
        RequestView(method="POST", path="/x", context_extensions={"service": "payments"}),
        RequestView(method="GET", path="/../x"),
    ]
    for request in requests:
        service = decider.decide(request)
        explained = explain(config, request, io.StringIO())
        assert (explained.allowed, explained.status, explained.reason, explained.detail) == (
            service.allowed,
            service.status,
            service.reason,
            service.detail,
        )
        assert explained.headers_to_set == service.headers_to_set
        assert explained.headers_to_remove == service.headers_to_remove
