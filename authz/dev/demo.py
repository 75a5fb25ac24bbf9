"""The demo: Envoy + authz + a sample upstream on loopback, with fresh keys.

It mints a token for alice, shows the request allowed with the identity the
upstream received, shows missing, tampered, expired and wrong-audience tokens
denied, and a route that needs a scope alice lacks, a sender-constrained
(DPoP) request allowed and its replayed proof denied, draws the trace of the
first request as a waterfall (Envoy and authz export their spans to an OTLP
receiver inside the demo), then keeps running until Ctrl-C with curl commands
to try.

    python -m authz.dev.demo [--workdir .demo] [--once]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import signal
import sys
import threading
import time
from pathlib import Path

from authz.cli_common import EXIT_CONFIG
from authz.dev.dpop_client import Signer, proof
from authz.dev.keys import generate, load_private, write_keypair
from authz.dev.otlp import OtlpReceiver, ReceivedSpan
from authz.dev.stack import (
    EnvoyNotFound,
    HttpResponse,
    Stack,
    envoy_binary,
    envoy_config,
    wait_for,
)
from authz.dev.tokens import claims_for, mint
from authz.dev.waterfall import waterfall
from authz.observability.tracing import CHECK_SPAN

__all__ = ["main"]

ISSUER = "https://idp.demo.local"
AUDIENCE = "orders-api"
KID = "demo-key-1"
# envoy/gateway.yaml plus Envoy's OpenTelemetry tracer.
ENVOY_TRACING = envoy_config("gateway-tracing.yaml")
SCOPES = "orders:read orders:write"

CONFIG = f"""\
# Written by the demo; see docs/configuration.md for every setting.
listen: 127.0.0.1:0
realm: demo
issuers:
  - issuer: {ISSUER}
    audiences: [{AUDIENCE}]
    algorithms: [RS256]
    leeway_seconds: 30
    keys:
      - jwks_file: keys/jwks.json
    issues: [bearer, dpop]
dpop: {{algorithms: [ES256]}}
identity:
  namespace: x-auth-
  headers:
    x-auth-subject: sub
    x-auth-issuer: iss
    x-auth-scopes: scope
routes:
  - name: payments
    match: {{prefix: /payments}}
    mode: protected
    sender_constraint: dpop       # a stolen token alone is useless here
  - name: order-refunds
    match: {{pattern: "/orders/{{id}}/refunds"}}
    mode: protected
    requirements: {{scopes: [orders:refund]}}
  - name: orders
    match: {{prefix: /orders}}
    mode: protected
    requirements: {{scopes: [orders:read]}}
"""


def _tamper(token: str, **changes: str) -> str:
    """Change payload claims and keep the old signature."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def _show(number: int, title: str, reply: HttpResponse) -> None:
    print(f"\n{number}. {title}")
    print(f"   -> HTTP {reply.status}")
    challenge = reply.headers.get("www-authenticate")
    if challenge:
        print(f"   WWW-Authenticate: {challenge}")
    if reply.status != 200 and reply.body:
        print(f"   body: {reply.body.decode(errors='replace')}")


def run(workdir: Path, once: bool) -> int:
    workdir = workdir.resolve()
    keys_dir = workdir / "keys"
    private_path, _ = write_keypair(keys_dir, "RS256", KID)
    config_path = workdir / "authz.yaml"
    config_path.write_text(CONFIG)
    key = load_private(private_path)

    def token(**overrides: object) -> str:
        claims = claims_for("alice", ISSUER, AUDIENCE, scopes=SCOPES, ttl=600)
        claims.update(overrides)
        return mint(key, "RS256", claims, KID)

    alice = token()
    (workdir / "alice.token").write_text(alice + "\n")

    with (
        OtlpReceiver() as receiver,
        Stack(
            workdir,
            config_path,
            ENVOY_TRACING,
            otel_collector=("127.0.0.1", receiver.port),
            # The standard variables, and a short batch delay so spans arrive promptly.
            authz_env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "50",
                "OTEL_SERVICE_NAME": "authz",
            },
        ) as stack,
    ):
        assert stack.envoy is not None
        print(f"Envoy:    {stack.url()}  (admin http://{stack.envoy.admin})")
        print(f"authz:    {stack.authz.address}  (config {config_path})")
        print(f"upstream: 127.0.0.1:{stack.upstream.port}  (echoes the headers it receives)")

        reply = stack.get(
            "/orders/42",
            {"Authorization": f"Bearer {alice}", "x-auth-subject": "mallory"},
        )
        _show(1, "alice's valid token (and a forged 'x-auth-subject: mallory')", reply)
        if reply.status == 200:
            received = reply.json()["headers"]
            print("   the upstream received:")
            for name in sorted(received):
                if name.startswith("x-auth-"):
                    print(f"     {name}: {received[name]}")
            forged = "absent" if received.get("x-auth-subject") != "mallory" else "PRESENT"
            print(f"   the forged 'mallory' is {forged}")

        _show(2, "no token", stack.get("/orders/42"))
        _show(
            3,
            "tampered token (sub changed to 'admin', old signature)",
            stack.get("/orders/42", {"Authorization": f"Bearer {_tamper(alice, sub='admin')}"}),
        )
        expired = token(iat=claims_for("a", "b", "c")["iat"] - 3600, exp=1)
        _show(4, "expired token", stack.get("/orders/42", {"Authorization": f"Bearer {expired}"}))
        other_aud = token(aud="billing-api")
        _show(
            5,
            "token for another audience (billing-api)",
            stack.get("/orders/42", {"Authorization": f"Bearer {other_aud}"}),
        )
        _show(6, "health probe, no token needed", stack.get("/healthz"))
        _show(
            7,
            "alice asks for a refund: that route needs scope orders:refund",
            stack.get("/orders/42/refunds", {"Authorization": f"Bearer {alice}"}),
        )
        _show_dpop(stack, token(cnf={"jkt": HOLDER.thumbprint()}))

        _show_access_log(stack, 9)
        _show_audit(stack, 8)  # every request but the health probe (ext_authz off there)
        _show_trace(stack, receiver)
        if once:
            return 0
        print("\nThe stack keeps running. Try it:")
        url = stack.url("/orders/42")
        token_file = workdir / "alice.token"
        print(f'   curl -i {url} -H "Authorization: Bearer $(cat {token_file})"')
        print(f"   curl -i {url}")
        print(
            f"   {Path(sys.executable).parent / 'authz'} token mint --key {private_path} "
            f"--kid {KID} --iss {ISSUER} --aud {AUDIENCE} --sub bob --scope orders:read"
        )
        print("Press Ctrl-C to stop.")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    print("stopped")
    return 0


# alice's DPoP key: her tokens for /payments name it (cnf.jkt).
HOLDER = Signer(generate("ES256"), "ES256")


def _show_dpop(stack: Stack, bound: str) -> None:
    """A sender-constrained request: the token names alice's key (cnf.jkt) and
    the request carries a proof signed with it, for this method and URL, once."""
    signed = proof(HOLDER, iat=time.time(), htu=stack.url("/payments/7"), access_token=bound)
    headers = {"Authorization": f"DPoP {bound}", "DPoP": signed}
    allowed = stack.get("/payments/7", headers)
    _show(8, "alice's DPoP-bound token with a fresh proof of her key", allowed)
    replayed = stack.get("/payments/7", headers)
    _show(9, "the same proof again (replayed by whoever copied it)", replayed)


def _show_access_log(stack: Stack, count: int) -> None:
    assert stack.envoy is not None
    print("\nEnvoy's access log (authz decision and reason per request):")
    for entry in stack.envoy.access_log(count):
        print(
            f"   {entry['status']} {entry['path']!s:<20} "
            f"decision={entry['authz_decision'] or '(ext_authz off)'} "
            f"reason={entry['authz_reason'] or '-'} sub={entry['authz_sub'] or '-'}"
        )


def _show_audit(stack: Stack, count: int) -> None:
    """authz's own audit trail (its stdout): one record per decision, no token in it."""

    def records() -> list[dict[str, object]] | None:
        text = stack.authz.stdout.read_text() if stack.authz.stdout.exists() else ""
        found = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        return found if len(found) >= count else None

    print("\nauthz's audit trail (one JSON line per decision; see docs/observability.md):")
    for record in wait_for("audit records", records, 10, stack.authz.log):
        print(
            f"   {record['status']} {record['path']!s:<12} decision={record['decision']} "
            f"reason={record['reason']} sub={record['subject'] or '-'} "
            f"token_fp={record['token_fp'] or '-'}"
        )


def _show_trace(stack: Stack, receiver: OtlpReceiver) -> None:
    """The first request's trace: Envoy's ingress, its ext_authz call, authz's Check."""

    def first_trace() -> list[ReceivedSpan] | None:
        spans = receiver.spans()
        checks = sorted(
            (span for span in spans if span.name == CHECK_SPAN),
            key=lambda span: span.span.start_time_unix_nano,
        )
        if not checks:
            return None
        trace = [span for span in spans if span.trace_id == checks[0].trace_id]
        # Complete once Envoy's ingress span (the root) has arrived too.
        return trace if any(not span.parent_span_id for span in trace) else None

    trace = wait_for("the first request's trace", first_trace, 15, stack.authz.log)
    print("\nThe first request's trace (Envoy and authz export spans to an OTLP receiver):")
    for line in waterfall(trace, trace[0].trace_id):
        print(f"   {line}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m authz.dev.demo", description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path(".demo"))
    parser.add_argument("--once", action="store_true", help="show the requests, then stop")
    args = parser.parse_args()
    # Before anything is written or started: without Envoy there is no demo,
    # and someone who installed the wheel alone needs the fix, not a traceback.
    try:
        envoy_binary()
    except EnvoyNotFound as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return EXIT_CONFIG  # as `authz` exits when what it needs is the user's to provide
    return run(args.workdir, args.once)


if __name__ == "__main__":
    raise SystemExit(main())
