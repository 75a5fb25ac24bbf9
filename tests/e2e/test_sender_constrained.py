"""DPoP and certificate-bound tokens through the real Envoy, with the shipped
envoy/gateway-mtls-clients.yaml: clients speak TLS to Envoy (a client
certificate optional), Envoy passes every header and the verified client
certificate to authz, and authz's challenges and DPoP-Nonce reach the client.

What authz decided is read from Envoy's access log (``authz_reason``, written
from the CheckResponse's dynamic metadata), so each test sees the reason the
request was refused for, not only its status.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from authz.check.certbound import certificate_thumbprint
from authz.dev.dpop_client import Signer, access_token_hash, jws, proof
from authz.dev.envoy_config import envoy_config, render_envoy_config
from authz.dev.stack import AuthzProcess, EnvoyProcess
from authz.dev.upstream import EchoUpstream
from tests.e2e.conftest import CONFIG, Keys
from tests.support.pki import Issued, TestCA
from tests.support.redis_server import PASSWORD, RedisServer, start_redis

pytestmark = pytest.mark.e2e

CLIENT_TLS_DIR = "/etc/envoy/client-tls/"
PUBLIC_ORIGIN = "https://api.example.test"


@dataclass(frozen=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    reason: str  # authz's, from Envoy's access log

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Gateway:
    """One Envoy in front of one authz: requests over TLS, and what authz decided."""

    envoy: EnvoyProcess
    ca: TestCA
    sent: int = field(default=0)

    @property
    def port(self) -> int:
        return self.envoy.listener_port

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def send(
        self,
        path: str,
        headers: Sequence[tuple[str, str]],
        *,
        cert: Issued | None = None,
        method: str = "GET",
    ) -> Reply:
        context = ssl.create_default_context(cafile=str(self.ca.ca_file))
        if cert is not None:
            context.load_cert_chain(cert.cert_file, cert.key_file)
        connection = http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=context, timeout=10
        )
        try:
            connection.putrequest(method, path, skip_accept_encoding=True)
            for name, value in headers:  # repeats stay repeats: http.client sends each
                connection.putheader(name, value)
            connection.endheaders()
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        self.sent += 1
        entry = self.envoy.access_log(self.sent)[self.sent - 1]
        return Reply(response.status, response.headers, body, str(entry["authz_reason"]))


def _authz_config(keys: Keys, workdir: Path, dpop: dict[str, Any]) -> Path:
    config = yaml.safe_load(CONFIG)
    issuer = config["issuers"][0]
    issuer["keys"][0]["jwks_file"] = str(keys.config.parent / "keys" / "jwks.json")
    issuer["issues"] = ["bearer", "dpop", "mtls"]
    config["dpop"] = dpop
    config["mtls"] = {"certificate_source": "peer"}
    config["identity"] = {"binding_header": "x-auth-binding"}
    config["routes"] = [
        _route("pay", "dpop", "/pay"),
        _route("partners", "mtls", "/partners"),
        _route("either", "optional"),
    ]
    path = workdir / "authz.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _route(name: str, constraint: str, prefix: str | None = None) -> dict[str, Any]:
    route: dict[str, Any] = {"name": name, "mode": "protected", "sender_constraint": constraint}
    if prefix is not None:
        route["match"] = {"prefix": prefix}
    return route


def _envoy(authz: AuthzProcess, upstream: EchoUpstream, ca: TestCA, workdir: Path) -> EnvoyProcess:
    server = ca.issue("gateway", stem="server")
    rendered = render_envoy_config(
        envoy_config("gateway-mtls-clients.yaml"), authz.endpoint, ("127.0.0.1", upstream.port)
    )
    text = yaml.safe_dump(rendered)
    for name, path in (
        ("server.pem", server.cert_file),
        ("server.key", server.key_file),
        ("client-ca.pem", ca.ca_file),
    ):
        text = text.replace(CLIENT_TLS_DIR + name, str(path))
    return EnvoyProcess(yaml.safe_load(text), workdir).start()


@dataclass
class Stack:
    gateway: Gateway
    clients: dict[str, Issued]


@pytest.fixture(scope="module")
def stack(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("e2e-sender")
    ca = TestCA(workdir / "pki")
    clients = {name: ca.issue(name, client=True, stem=name) for name in ("client-a", "client-b")}
    upstream = EchoUpstream()
    authz = AuthzProcess(
        _authz_config(keys, workdir, {"algorithms": ["ES256", "RS256"]}), workdir / "authz.log"
    )
    envoy: EnvoyProcess | None = None
    try:
        upstream.start()
        authz.start()
        envoy = _envoy(authz, upstream, ca, workdir)
        yield Stack(Gateway(envoy, ca), clients)
    finally:
        if envoy is not None:
            envoy.stop()
        authz.stop()
        upstream.stop()


@pytest.fixture(scope="module")
def holder() -> Signer:
    return Signer(ec.generate_private_key(ec.SECP256R1()), "ES256")


def _bound(keys: Keys, holder: Signer) -> str:
    return keys.token(cnf={"jkt": holder.thumbprint()})


def _dpop(
    gateway: Gateway, holder: Signer, token: str, path: str = "/pay/1", **kw: Any
) -> list[tuple[str, str]]:
    made = proof(
        holder,
        iat=kw.pop("iat", time.time()),
        htu=kw.pop("htu", gateway.url(path)),
        access_token=kw.pop("access_token", token),
        **kw,
    )
    return [("Authorization", f"DPoP {token}"), ("DPoP", made)]


def test_a_dpop_request_is_allowed_and_its_replay_refused(
    stack: Stack, keys: Keys, holder: Signer
) -> None:
    gateway = stack.gateway
    token = _bound(keys, holder)
    headers = _dpop(gateway, holder, token)
    allowed = gateway.send("/pay/1", headers)
    assert (allowed.status, allowed.reason) == (200, "allowed")
    seen = allowed.json()["headers"]
    assert seen["x-auth-binding"] == "dpop"
    assert "dpop" not in seen  # the proof was for authz, not the upstream
    replayed = gateway.send("/pay/1", headers)
    assert (replayed.status, replayed.reason) == (401, "dpop_replayed")
    assert replayed.headers["WWW-Authenticate"].startswith(
        'DPoP algs="ES256 RS256", error="invalid_dpop_proof"'
    )
    # The token's verification is cached by now; a fresh proof is still needed, and enough.
    assert gateway.send("/pay/1", _dpop(gateway, holder, token)).status == 200


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("stale", "dpop_stale"),
        ("future", "dpop_stale"),
        ("ath", "dpop_ath_mismatch"),
        ("jkt", "dpop_binding_mismatch"),
        ("method", "dpop_method_mismatch"),
        ("host", "dpop_uri_mismatch"),
        ("scheme", "dpop_uri_mismatch"),
        ("port", "dpop_uri_mismatch"),
        ("path", "dpop_uri_mismatch"),
        ("missing", "dpop_missing"),
        ("duplicated", "dpop_multiple"),
        ("alg-none", "dpop_algorithm_not_allowed"),
        ("hs256", "dpop_algorithm_not_allowed"),
        ("private-key", "dpop_key_invalid"),
    ],
)
def test_a_bad_proof_is_refused(
    stack: Stack, keys: Keys, holder: Signer, case: str, reason: str
) -> None:
    gateway = stack.gateway
    token = _bound(keys, holder)
    url = gateway.url("/pay/1")
    now = time.time()
    other = Signer(ec.generate_private_key(ec.SECP256R1()), "ES256")
    changes: dict[str, dict[str, Any]] = {
        "stale": {"iat": now - 300},
        "future": {"iat": now + 300},
        "ath": {"access_token": keys.token()},
        "jkt": {"signer": other},
        "method": {"htm": "POST"},
        "host": {"htu": url.replace("127.0.0.1", "localhost")},
        "scheme": {"htu": url.replace("https://", "http://")},
        "port": {"htu": url.replace(f":{gateway.port}", f":{gateway.port + 1}")},
        "path": {"htu": gateway.url("/pay/2")},
    }
    if case in changes:
        change = changes[case]
        signer = change.pop("signer", holder)
        headers = _dpop(gateway, signer, token, **change)
    elif case in ("missing", "duplicated"):
        headers = _dpop(gateway, holder, token)
        if case == "missing":
            headers = headers[:1]
        else:
            headers.append(headers[1])
    else:
        claims = {"jti": f"{case}-{now}", "htm": "GET", "htu": url, "iat": int(now)}
        claims["ath"] = access_token_hash(token)
        header: dict[str, Any] = {"typ": "dpop+jwt", "jwk": holder.public_jwk()}
        if case == "alg-none":
            # A well-formed signature segment: the alg itself is what is refused.
            made = jws({**header, "alg": "none"}, claims, None) + "AA"
        elif case == "hs256":
            made = jws({**header, "alg": "HS256"}, claims, None) + "c2lnbmF0dXJl"
        else:
            made = proof(
                holder, iat=now, htu=url, access_token=token, header={"jwk": holder.private_jwk()}
            )
        headers = [("Authorization", f"DPoP {token}"), ("DPoP", made)]
    denied = gateway.send("/pay/1", headers)
    assert (denied.status, denied.reason) == (401, reason)
    assert denied.headers["WWW-Authenticate"].startswith('DPoP algs="ES256 RS256"')


def test_a_dpop_bound_token_presented_as_bearer_is_refused(
    stack: Stack, keys: Keys, holder: Signer
) -> None:
    gateway = stack.gateway
    denied = gateway.send("/orders/1", [("Authorization", f"Bearer {_bound(keys, holder)}")])
    assert (denied.status, denied.reason) == (401, "binding_required")
    # The route takes Bearer and DPoP: both challenges, in one header Envoy passes on.
    assert denied.headers.get_all("WWW-Authenticate") == [
        'DPoP algs="ES256 RS256", Bearer realm="authz", error="invalid_token", '
        'error_description="The access token must be presented with proof of its binding"'
    ]
    # An unbound token is a bearer token on that route.
    allowed = gateway.send("/orders/1", [("Authorization", f"Bearer {keys.token()}")])
    assert (allowed.status, allowed.json()["headers"]["x-auth-binding"]) == (200, "none")


def test_a_certificate_bound_token_with_its_certificate(stack: Stack, keys: Keys) -> None:
    gateway, clients = stack.gateway, stack.clients
    bound = keys.token(cnf={"x5t#S256": certificate_thumbprint(clients["client-a"].der)})
    headers = [("Authorization", f"Bearer {bound}")]
    allowed = gateway.send("/partners/1", headers, cert=clients["client-a"])
    assert (allowed.status, allowed.json()["headers"]["x-auth-binding"]) == (200, "mtls")
    other = gateway.send("/partners/1", headers, cert=clients["client-b"])
    assert (other.status, other.reason) == (401, "mtls_binding_mismatch")
    without = gateway.send("/partners/1", headers)
    assert (without.status, without.reason) == (401, "mtls_certificate_missing")
    unbound = gateway.send(
        "/partners/1", [("Authorization", f"Bearer {keys.token()}")], cert=clients["client-a"]
    )
    assert (unbound.status, unbound.reason) == (401, "binding_required")


# --- two replicas sharing Redis, with server nonces ------------------------------------


@dataclass
class Replicas:
    gateways: list[Gateway]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("e2e-redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def replicas(
    keys: Keys, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replicas]:
    workdir = tmp_path_factory.mktemp("e2e-replicas")
    ca = TestCA(workdir / "pki")
    (workdir / "nonce.key").write_bytes(b"n" * 32)
    (workdir / "redis.password").write_text(PASSWORD)
    dpop = {
        "algorithms": ["ES256"],
        "public_origin": PUBLIC_ORIGIN,  # both replicas are one API to clients
        "replay": {
            "store": "redis",
            "url": redis_server.url,
            "password_file": str(workdir / "redis.password"),
            "timeout_seconds": 2,
        },
        "nonce": {"required": True, "key_file": str(workdir / "nonce.key")},
    }
    config = _authz_config(keys, workdir, dpop)
    upstream = EchoUpstream()
    started: list[AuthzProcess | EnvoyProcess] = []
    gateways = []
    try:
        upstream.start()
        for index in range(2):
            home = workdir / f"replica-{index}"
            home.mkdir()
            authz = AuthzProcess(config, home / "authz.log").start()
            started.append(authz)
            envoy = _envoy(authz, upstream, ca, home)
            started.append(envoy)
            gateways.append(Gateway(envoy, ca))
        yield Replicas(gateways)
    finally:
        for process in reversed(started):
            process.stop()
        upstream.stop()


def test_a_nonce_then_a_proof_accepted_once_across_replicas(
    replicas: Replicas, keys: Keys, holder: Signer
) -> None:
    first, second = replicas.gateways
    token = _bound(keys, holder)
    url = PUBLIC_ORIGIN + "/pay/1"
    challenged = first.send("/pay/1", _dpop(first, holder, token, htu=url))
    assert (challenged.status, challenged.reason) == (401, "dpop_nonce_required")
    assert challenged.headers["WWW-Authenticate"].startswith(
        'DPoP algs="ES256", error="use_dpop_nonce"'
    )
    nonce = challenged.headers["DPoP-Nonce"]
    assert nonce
    headers = _dpop(first, holder, token, htu=url, nonce=nonce)
    # The other replica knows the nonce (one key) and accepts the proof ...
    allowed = second.send("/pay/1", headers)
    assert (allowed.status, allowed.reason) == (200, "allowed")
    # ... and the first one refuses it: the replicas remember proofs in one Redis.
    replayed = first.send("/pay/1", headers)
    assert (replayed.status, replayed.reason) == (401, "dpop_replayed")
