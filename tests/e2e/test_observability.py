"""Every decision visible, through the real Envoy with its OpenTelemetry tracer.

Envoy and authz both export spans to an OTLP receiver this test runs on
loopback (opentelemetry-proto's TraceService); authz writes its audit trail to
a file and to stdout and serves Prometheus metrics. The tests follow requests
from the client through Envoy into authz and out to the upstream.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from prometheus_client.parser import text_string_to_metric_families

from authz.config.loader import config_version
from authz.dev.keys import load_private, write_keypair
from authz.dev.stack import Stack, http_request
from authz.dev.tokens import claims_for, mint
from authz.observability.audit_record import SCHEMA_PATH
from tests.e2e.conftest import AUDIENCE, ISSUER, KID
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.repo import REPO_ROOT

pytestmark = pytest.mark.e2e

TRACING_GATEWAY = REPO_ROOT / "envoy" / "gateway-tracing.yaml"
EGRESS = "async envoy.service.auth.v3.Authorization.Check egress"
CHECK = "envoy.service.auth.v3.Authorization/Check"

CONFIG = f"""\
listen: 127.0.0.1:0
grace_period_seconds: 5
telemetry:
  metrics:
    listen: 127.0.0.1:0
audit:
  stdout: true
  file: audit/audit.jsonl
issuers:
  - issuer: {ISSUER}
    audiences: [{AUDIENCE}]
    algorithms: [RS256]
    keys:
      - jwks_file: keys/jwks.json
"""


def _authz_env(receiver: OtlpReceiver) -> dict[str, str]:
    # The standard variables: where to export, and a short batch delay so the
    # test does not wait the default 5 s for spans.
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_SERVICE_NAME": "authz",
    }


@dataclass
class Traced:
    stack: Stack
    receiver: OtlpReceiver
    workdir: Path
    private_pem: Path
    jwks: Path

    def token(self, **overrides: Any) -> str:
        claims = claims_for("alice", ISSUER, AUDIENCE, scopes="orders:read", ttl=300)
        claims["jti"] = f"jti-{uuid.uuid4()}"
        claims.update(overrides)
        return mint(load_private(self.private_pem), "RS256", claims, KID)

    @property
    def audit_file(self) -> Path:
        return self.workdir / "audit" / "audit.jsonl"

    def audit(self) -> list[dict[str, Any]]:
        if not self.audit_file.exists():
            return []
        return [json.loads(line) for line in self.audit_file.read_text().splitlines()]

    def audit_for(self, path: str) -> dict[str, Any]:
        """The one record whose path is ``path``, once it is on disk."""

        def find() -> list[dict[str, Any]] | None:
            found = [record for record in self.audit() if record.get("path") == path]
            return found or None

        found = OtlpReceiver.poll(f"audit record for {path}", find)
        assert len(found) == 1, found
        return found[0]

    def trace(self, trace_id: str, count: int) -> list[ReceivedSpan]:
        def spans() -> list[ReceivedSpan] | None:
            found = [span for span in self.receiver.spans() if span.trace_id == trace_id]
            return found if len(found) >= count else None

        return OtlpReceiver.poll(f"{count} spans of trace {trace_id}", spans)


def _make_workdir(root: Path) -> tuple[Path, Path, Path]:
    private_pem, jwks = write_keypair(root / "keys", "RS256", KID)
    config = root / "authz.yaml"
    config.write_text(CONFIG)
    return config, private_pem, jwks


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    root = tmp_path_factory.mktemp("traced")
    config, private_pem, jwks = _make_workdir(root)
    with (
        OtlpReceiver() as receiver,
        Stack(
            root / "stack",
            config,
            TRACING_GATEWAY,
            otel_collector=("127.0.0.1", receiver.port),
            authz_env=_authz_env(receiver),
        ) as stack,
    ):
        yield Traced(stack, receiver, root, private_pem, jwks)


def _one(spans: list[ReceivedSpan], service: str, name: str) -> ReceivedSpan:
    found = [span for span in spans if span.service == service and span.name == name]
    assert len(found) == 1, [(span.service, span.name) for span in spans]
    return found[0]


def _check_chain(spans: list[ReceivedSpan]) -> tuple[ReceivedSpan, ReceivedSpan, ReceivedSpan]:
    """Envoy ingress -> Envoy ext_authz egress -> authz Check, all in one trace."""
    ingress = _one(spans, "gateway", "ingress")
    egress = _one(spans, "gateway", EGRESS)
    check = _one(spans, "authz", CHECK)
    assert ingress.parent_span_id == ""
    assert egress.parent_span_id == ingress.span_id
    assert check.parent_span_id == egress.span_id
    assert check.trace_id == egress.trace_id == ingress.trace_id
    return ingress, egress, check


def test_allowed_request_is_one_trace_from_envoy_through_authz_to_upstream(
    traced: Traced,
) -> None:
    reply = traced.stack.get(
        "/orders/allowed?page=2", {"Authorization": f"Bearer {traced.token()}"}
    )
    assert reply.status == 200
    record = traced.audit_for("/orders/allowed")
    assert record["decision"] == "allow"
    spans = traced.trace(record["trace_id"], 4)
    _, egress, check = _check_chain(spans)
    upstream = _one(spans, "gateway", "router upstream egress")
    assert upstream.parent_span_id == _one(spans, "gateway", "ingress").span_id
    # The upstream service received the same trace, parented on Envoy's upstream span.
    traceparent = reply.json()["headers"]["traceparent"]
    assert traceparent.split("-")[1:3] == [record["trace_id"], upstream.span_id]

    assert record["span_id"] == check.span_id
    assert check.span.kind == check.span.SPAN_KIND_SERVER
    attributes = check.attributes
    assert attributes["authz.decision"] == "allow"
    assert attributes["authz.reason"] == "allowed"
    assert attributes["authz.issuer"] == ISSUER
    assert attributes["http.request.method"] == "GET"
    assert attributes["url.path"] == "/orders/allowed"
    assert check.span.status.code == check.span.status.STATUS_CODE_UNSET
    steps = [event.name for event in check.span.events]
    assert steps == [
        "authz.extract",
        "authz.route",
        "authz.credentials",
        "authz.verify",
        "authz.policy",
        "authz.identity",
    ]
    assert egress.attributes["ext_authz_status"] == "ext_authz_ok"


def test_denied_request_is_a_trace_without_an_upstream_call_and_not_an_error(
    traced: Traced,
) -> None:
    now = int(time.time())
    expired = traced.token(iat=now - 600, exp=now - 60)
    reply = traced.stack.get("/orders/denied", {"Authorization": f"Bearer {expired}"})
    assert reply.status == 401
    record = traced.audit_for("/orders/denied")
    spans = traced.trace(record["trace_id"], 3)
    _, egress, check = _check_chain(spans)
    assert not [span for span in spans if span.name == "router upstream egress"]
    assert record["span_id"] == check.span_id
    attributes = check.attributes
    assert attributes["authz.decision"] == "deny"
    assert attributes["authz.reason"] == "token_expired"
    assert attributes["authz.status"] == 401
    # The token failed, but it named a configured issuer: the deny is attributed to it.
    assert attributes["authz.issuer"] == ISSUER
    # A deny is the service doing its job: not a span error.
    assert check.span.status.code == check.span.status.STATUS_CODE_UNSET
    verify = [event for event in check.span.events if event.name == "authz.verify"]
    assert len(verify) == 1
    step = {item.key: item.value.string_value for item in verify[0].attributes}
    assert step["authz.step.outcome"] == "deny"
    assert step["authz.reason"] == "token_expired"
    assert egress.attributes["ext_authz_status"] == "ext_authz_unauthorized"


def test_n_requests_make_exactly_n_audit_records_with_the_right_fields(traced: Traced) -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    config_text = (traced.workdir / "authz.yaml").read_text()
    sent: dict[str, tuple[int, str, str]] = {}  # path -> (status, reason, token_fp)
    upstream_ids: dict[str, str] = {}  # path -> the x-request-id the upstream received
    run = uuid.uuid4().hex[:8]
    for index in range(12):
        path = f"/audit/{run}/{index}"
        if index % 3 == 0:
            token = traced.token(sub=f"user-{index}")
            expected = (200, "allowed")
        elif index % 3 == 1:
            token = traced.token(aud="billing-api")
            expected = (401, "audience_mismatch")
        else:
            token = ""
            expected = (401, "missing_token")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        reply = traced.stack.get(f"{path}?q={index}", {**headers, "x-request-id": f"rid-{index}"})
        assert reply.status == expected[0]
        if reply.status == 200:
            upstream_ids[path] = reply.json()["headers"]["x-request-id"]
        sent[path] = (*expected, _fingerprint(token) if token else "")

    def complete() -> list[dict[str, Any]] | None:
        mine = [r for r in traced.audit() if r.get("path", "").startswith(f"/audit/{run}/")]
        return mine if len(mine) >= len(sent) else None

    records = OtlpReceiver.poll("12 audit records", complete)
    assert len(records) == len(sent)  # exactly one per decision
    assert sorted(r["path"] for r in records) == sorted(sent)
    assert len({r["request_id"] for r in records}) == len(records)
    for record in records:
        jsonschema.validate(record, schema)
        status, reason, token_fp = sent[record["path"]]
        index = int(record["path"].rsplit("/", 1)[1])
        assert record["status"] == status
        assert record["reason"] == reason
        assert record["decision"] == ("allow" if status == 200 else "deny")
        assert record["token_fp"] == (token_fp or None)
        assert record["method"] == "GET"
        assert record["host"] == f"127.0.0.1:{traced.stack.envoy.listener_port}"  # type: ignore[union-attr]
        assert record["source"].startswith("127.0.0.1:")
        # Envoy's request id, not the client's (the edge replaces it).
        assert record["request_id"] != f"rid-{index}"
        assert uuid.UUID(record["request_id"])
        if status == 200:
            assert record["request_id"] == upstream_ids[record["path"]]
        assert record["config_version"] == config_version(config_text)
        assert record["latency_ms"] >= 0
        if status == 200:
            assert record["subject"] == f"user-{index}"
            assert record["issuer"] == ISSUER
            assert record["jti"].startswith("jti-")
        else:
            assert record["subject"] is None
            # A token for another audience still named our issuer; no token names none.
            assert record["issuer"] == (ISSUER if reason == "audience_mismatch" else None)
    # stdout carries the same trail as the file.
    stdout = [json.loads(line) for line in traced.stack.authz.stdout.read_text().splitlines()]
    assert [r for r in stdout if r["path"] in sent] == records


def _fingerprint(token: str) -> str:
    import hashlib

    return hashlib.sha256(token.encode()).hexdigest()[:16]


def _scrape(traced: Traced) -> str:
    address = traced.stack.authz.logged("metrics_address")
    assert address is not None
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as reply:
        assert reply.status == 200
        text: str = reply.read().decode()
    return text


def test_metrics_endpoint_is_scraped_and_parsed(traced: Traced) -> None:
    assert traced.stack.get("/m", {"Authorization": f"Bearer {traced.token()}"}).status == 200
    assert traced.stack.get("/m").status == 401
    forged = traced.token(iss="https://evil.example/" + "x" * 50)
    assert traced.stack.get("/m", {"Authorization": f"Bearer {forged}"}).status == 401

    families = {family.name: family for family in text_string_to_metric_families(_scrape(traced))}
    decisions = families["authz_decisions"]
    assert decisions.type == "counter"
    samples = [s for s in decisions.samples if s.name == "authz_decisions_total"]
    labels = {(s.labels["decision"], s.labels["reason"], s.labels["issuer"]) for s in samples}
    assert ("allow", "allowed", ISSUER) in labels
    assert ("deny", "missing_token", "unknown") in labels
    assert ("deny", "unknown_issuer", "unknown") in labels
    for sample in samples:
        assert set(sample.labels) == {"decision", "reason", "issuer", "route"}
        assert sample.labels["issuer"] in {ISSUER, "unknown"}  # never the forged iss
        assert sample.labels["route"] == "none"
    duration = families["authz_check_duration_seconds"]
    assert duration.type == "histogram"
    counts = [s.value for s in duration.samples if s.name.endswith("_count")]
    assert sum(counts) >= 3
    age = [s for s in families["authz_key_age_seconds"].samples if s.labels["issuer"] == ISSUER]
    assert len(age) == 1
    assert age[0].value >= 0
    audit = families["authz_audit_records"].samples
    dropped = [s.value for s in audit if s.labels["outcome"] == "dropped"]
    assert dropped
    assert sum(dropped) == 0


def test_no_output_anywhere_holds_a_token_a_signature_or_a_key(traced: Traced) -> None:
    token = traced.token(sub="secret-search")
    in_query = traced.token(sub="in-query")
    in_path = traced.token(sub="in-path")
    stack = traced.stack
    assert stack.get("/s", {"Authorization": f"Bearer {token}"}).status == 200
    tampered = token.rsplit(".", 1)[0] + "." + token.rsplit(".", 1)[1][::-1]
    assert stack.get("/s-tampered", {"Authorization": f"Bearer {tampered}"}).status == 401
    # Tokens where they do not belong: our outputs must not repeat them.
    assert stack.get(f"/q?state={in_query}", {"Authorization": f"Bearer {token}"}).status == 200
    assert stack.get(f"/p/{in_path}", {"Authorization": f"Bearer {token}"}).status == 200
    for path in ("/q", "/p/[redacted]"):
        traced.audit_for(path)  # on disk, and so are the ones before it
    record = traced.audit_for("/s")
    traced.trace(record["trace_id"], 4)
    assert stack.envoy is not None
    stack.envoy.access_log(1)

    key_material = _key_material(traced)
    secrets = {"token": token, "tampered": tampered, "in_query": in_query, "in_path": in_path}
    for name, value in list(secrets.items()):
        _header, payload, signature = value.split(".")
        secrets[f"{name} payload"] = payload
        secrets[f"{name} signature"] = signature
    secrets.update(key_material)

    ours = {
        "audit file": traced.audit_file.read_bytes(),
        "authz stdout": stack.authz.stdout.read_bytes(),
        "authz log": stack.authz.log.read_bytes(),
        "metrics": _scrape(traced).encode(),
        "authz spans": b"".join(
            span.span.SerializeToString()
            for span in traced.receiver.spans()
            if span.service == "authz"
        ),
    }
    everything = {
        **ours,
        "envoy log": stack.envoy.log.read_bytes(),
        "every OTLP request": b"".join(traced.receiver.raw()),
    }
    for where, data in ours.items():
        for name, secret in secrets.items():
            assert secret.encode() not in data, f"{name} found in {where}"
    # Envoy's own spans carry the full URL (http.url, query included): the
    # header-borne token and the keys must still be nowhere at all.
    header_borne = {k: v for k, v in secrets.items() if not k.startswith(("in_query", "in_path"))}
    for where, data in everything.items():
        for name, secret in header_borne.items():
            assert secret.encode() not in data, f"{name} found in {where}"


def _key_material(traced: Traced) -> dict[str, str]:
    """The public modulus and the private key, as they appear in their files."""
    jwk = json.loads(traced.jwks.read_text())["keys"][0]
    pem = traced.private_pem.read_text()
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    private_der = base64.b64decode(body)
    return {
        "public modulus": jwk["n"][:40],
        "private key (PEM)": body[:64],
        "private key (hex)": private_der[-64:].hex(),
    }


def test_sigterm_with_requests_in_flight_loses_no_audit_record(
    tmp_path: Path,
) -> None:
    config, private_pem, _ = _make_workdir(tmp_path)
    token = mint(
        load_private(private_pem), "RS256", claims_for("bob", ISSUER, AUDIENCE, ttl=300), KID
    )
    with Stack(tmp_path / "stack", config) as stack:
        results: list[tuple[str, int]] = []
        lock = threading.Lock()
        stop = threading.Event()

        def client(worker: int) -> None:
            count = 0
            deadline = time.monotonic() + 60
            # Keep going until after authz has exited, so Checks straddle the
            # shutdown; bounded in count and time whatever happens.
            while not stop.is_set() and count < 5000 and time.monotonic() < deadline:
                path = f"/load/{worker}/{count}"
                headers = {"Authorization": f"Bearer {token}"} if count % 2 else {}
                status = http_request(stack.url(path), headers, timeout=5).status
                with lock:
                    results.append((path, status))
                count += 1

        workers = [threading.Thread(target=client, args=(n,)) for n in range(6)]
        for worker in workers:
            worker.start()
        OtlpReceiver.poll("traffic", lambda: True if len(results) >= 60 else None)
        exit_code = stack.authz.stop()  # SIGTERM, then wait for the exit
        OtlpReceiver.poll("traffic after exit", lambda: True if results[-1][1] == 503 else None)
        stop.set()
        for worker in workers:
            worker.join(30)
        assert exit_code == 0

    sent = {path for path, _ in results}
    decided = {path for path, status in results if status in (200, 401)}
    # 503 is Envoy's status_on_error once authz has gone: no answer reached it.
    assert {status for _, status in results} <= {200, 401, 503}
    assert len(decided) >= 60
    audit_file = tmp_path / "audit" / "audit.jsonl"
    records = [json.loads(line) for line in audit_file.read_text().splitlines()]
    paths = [record["path"] for record in records]
    assert len(paths) == len(set(paths))  # one record per decision
    assert decided <= set(paths)  # every answered Check is on disk
    assert set(paths) <= sent  # and nothing was invented
