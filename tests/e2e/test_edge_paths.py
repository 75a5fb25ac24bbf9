"""authz reads paths and hosts as Envoy and the upstream do, or refuses them.

Differential tests through the real Envoy with the shipped gateway config
(only ports and endpoints rewritten), authz with a protected route on
``/admin`` (matched ignoring case, as for a case-insensitive upstream),
another on ``/café`` and on host ``admin.shop.local``, a public catch-all,
and the echo upstream. No request carries a token, so the protected routes
must never reach the upstream; and for every request:

- paths: the path Envoy asked authz about is exactly the one the model of
  Envoy's normalization (paths.envoy_normal_form) computes from what was sent
  (for a path sent with a ``;``, whose handling the model approximates, only
  the rest is checked: authz refuses every path that still has one);
  authz refused it (400 invalid_path) or matched its route on the path the
  upstream then received; and the upstream never received a path that a
  protected route's, as it is or as a lax upstream reads it (NFKC, trailing
  dots and spaces dropped, dot segments resolved after that, case ignored
  for ``/admin``).
- hosts: the Host authz was asked about is the one the upstream received;
  authz refused it (400 invalid_host) or its reading equals the upstream's
  (a standard URL reader: lower case, port and trailing dot dropped); and
  what an upstream reads as ``admin.shop.local`` never got through.

EDGE_CASES sets how many of each are generated (300 here, 20,000 in
``make fuzz``), EDGE_SEED the seed.
"""

from __future__ import annotations

import os
import posixpath
import re
import unicodedata
import urllib.parse
from collections.abc import Iterator

import pytest

from authz.dev.stack import Stack
from authz.errors import InvalidHost, InvalidPath
from authz.forms.hosts import normalize_host
from authz.forms.lookalikes import PathReading
from authz.forms.paths import envoy_normal_form, match_form, normalize_path
from authz.observability.audit_record import redact
from tests.e2e.conftest import CONFIG, Keys
from tests.e2e.edge_differential import Outcome, Probe, hosts, paths, send_all
from tests.support.repo import REPO_ROOT

pytestmark = pytest.mark.e2e

GATEWAY = REPO_ROOT / "envoy" / "gateway.yaml"
CASES = int(os.environ.get("EDGE_CASES", "300"))
SEED = int(os.environ.get("EDGE_SEED", "20261202"))
PROTECTED_HOST = "admin.shop.local"

ROUTES = f"""\
identity:
  namespace: x-auth-
routes:
  - name: admin-host
    match: {{hosts: [{PROTECTED_HOST}]}}
    mode: protected
  - name: admin
    match: {{prefix: /admin, ignore_case: true}}
    mode: protected
  - name: cafe
    match: {{path: /café}}
    mode: protected
  - name: open
    match: {{prefix: /}}
    mode: public
"""


@pytest.fixture(scope="module")
def stack(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("e2e-edge-paths")
    config = workdir / "authz.yaml"
    jwks = keys.config.parent / "keys" / "jwks.json"
    config.write_text(CONFIG.replace("keys/jwks.json", str(jwks)) + ROUTES)
    with Stack(workdir, config, GATEWAY) as running:
        yield running


def _port(stack: Stack) -> int:
    assert stack.envoy is not None
    return stack.envoy.listener_port


def _report(kind: str, outcomes: list[Outcome]) -> None:
    envoy_refused = sum(1 for o in outcomes if o.audit is None)
    upstream = sum(1 for o in outcomes if o.upstream is not None)
    refused = sum(1 for o in outcomes if o.audit and o.audit["reason"] == f"invalid_{kind}")
    print(
        f"\n{kind}s: {len(outcomes)} sent, {envoy_refused} refused or answered by Envoy, "
        f"{refused} refused by authz, {upstream} reached the upstream"
    )


def _upstream_path(outcome: Outcome) -> str:
    upstream = outcome.upstream
    assert upstream is not None
    return str(upstream["path"]).partition("?")[0]


def test_authz_reads_every_path_as_envoy_and_the_upstream_do(stack: Stack) -> None:
    probes = [
        Probe(f"p{n}.paths.test", path, f"p{n}.paths.test")
        for n, path in enumerate(paths(CASES, SEED))
    ]
    outcomes = send_all(
        _port(stack), probes, stack.authz.stdout, lambda r: str(r["host"]), stack.authz.log
    )
    disagreements: list[str] = []
    for outcome in outcomes:
        sent, audit = outcome.probe.path, outcome.audit
        if audit is None:
            # Envoy answered alone (400, or its own /healthz): nothing went upstream.
            assert outcome.upstream is None, sent
            continue
        # Whitespace ends the request-target for Envoy's HTTP/1 codec, before any
        # normalization: what follows it is not part of the path.
        modelled = envoy_normal_form(re.split("[ \t]", sent.lstrip(" \t"), maxsplit=1)[0])
        exact = ";" not in sent  # see the module docstring
        if exact and (modelled is None or audit["path"] != redact(modelled.partition("?")[0])):
            disagreements.append(f"{sent!r}: Envoy sent {audit['path']!r}, model {modelled!r}")
            continue
        modelled = audit["path"] if not exact and len(audit["path"]) <= 1024 else modelled
        if modelled is None:
            continue
        try:
            accepted = normalize_path(modelled)
            PathReading().check(match_form(accepted))  # the defaults, as configured
        except InvalidPath:
            assert (audit["decision"], audit["reason"]) == ("deny", "invalid_path"), sent
            assert outcome.upstream is None, sent
            continue
        if outcome.upstream is None:
            assert audit["route"] in ("admin", "cafe") or outcome.status == 503, (sent, audit)
            continue
        received = _upstream_path(outcome)
        assert received == accepted, f"{sent!r}: authz matched {accepted!r}, upstream {received!r}"
        assert audit["route"] == "open", (sent, audit)
        for seen in _lax_readings(match_form(received)):
            assert seen != "/café", (sent, seen)
            assert not re.match(r"/admin(/|$)", seen.lower()), (sent, seen)
    _report("path", outcomes)
    assert not disagreements, "\n".join(disagreements[:20])


def _lax_readings(decoded: str) -> set[str]:
    """How upstreams that read paths loosely may read ``decoded`` (a match form): as
    it is or after NFKC, with trailing dots and spaces dropped from segments or not
    (IIS), and dot segments (which NFKC may make) resolved after that."""
    readings = set()
    for text in (decoded, unicodedata.normalize("NFKC", decoded)):
        parts = text.split("/")
        for read in (text, "/".join(p if p in (".", "..") else p.rstrip(". ") for p in parts)):
            readings.add(posixpath.normpath(re.sub("/+", "/", read)))
    return readings


def _upstream_reads(host: str) -> str | None:
    """A standard URL reader's host name (urllib, as WSGI frameworks use), or None."""
    try:
        parts = urllib.parse.urlsplit(f"http://{host}/")
        name = parts.hostname
        _ = parts.port  # ValueError for a port that is not a number in range
    except ValueError:
        return None
    if name is None:
        return None
    return name.removesuffix(".")


def test_authz_reads_every_host_as_the_upstream_does(stack: Stack) -> None:
    probes = [Probe(f"/h{n}", f"/h{n}", host) for n, host in enumerate(hosts(CASES, SEED))]
    outcomes = send_all(
        _port(stack), probes, stack.authz.stdout, lambda r: str(r["path"]), stack.authz.log
    )
    for outcome in outcomes:
        sent, audit = outcome.probe.host, outcome.audit
        if audit is None:
            assert outcome.upstream is None, sent
            continue
        try:
            host = normalize_host(audit["host"])
        except InvalidHost:
            assert (audit["decision"], audit["reason"]) == ("deny", "invalid_host"), sent
            assert outcome.upstream is None, sent
            continue
        reads = _upstream_reads(audit["host"])
        assert reads is None or reads == host, f"{sent!r}: authz reads {host!r}, upstream {reads!r}"
        upstream = outcome.upstream
        if upstream is None:
            assert host == PROTECTED_HOST or outcome.status == 503, (sent, audit)
            continue
        assert upstream["headers"]["host"] == audit["host"], sent  # forwarded as authz saw it
        assert PROTECTED_HOST not in (host, reads), sent
    _report("host", outcomes)


def test_the_generators_cover_the_hostile_alphabet() -> None:
    # Without these the differential tests would prove little.
    generated = paths(CASES, SEED)
    for piece in ("..", "%2e", "%2f", "%5c", ";", "%00", "é", "//", "%EF%BC%8E", "ADMIN"):
        assert any(piece in path for path in generated), piece
    assert any(re.search(r"[^/.][.](/|$)", path) for path in generated)
    assert any(len(path) > 1024 for path in generated)
    generated_hosts = hosts(CASES, SEED)
    for piece in ("@", ":", ".:", ":abc"):
        assert any(piece in host for host in generated_hosts), piece


@pytest.mark.parametrize(
    "host", ["admin.shop.local:", "evil@admin.shop.local", "admin.shop.local:abc"]
)
def test_a_protected_host_spelled_to_slip_past_its_rule_is_refused(stack: Stack, host: str) -> None:
    # Each reads as admin.shop.local to a URL parser; matched as written, the
    # protected route would be skipped and the public catch-all would take it.
    marker = f"/spelled-{abs(hash(host))}"
    [outcome] = send_all(
        _port(stack),
        [Probe(marker, marker, host)],
        stack.authz.stdout,
        lambda r: str(r["path"]),
        stack.authz.log,
    )
    assert outcome.status == 400, outcome.body
    assert outcome.upstream is None
    assert outcome.audit is not None
    assert (outcome.audit["reason"], outcome.audit["host"]) == ("invalid_host", host)
    proper = send_all(
        _port(stack),
        [Probe(marker + "-proper", marker + "-proper", "Admin.Shop.Local:8443")],
        stack.authz.stdout,
        lambda r: str(r["path"]),
        stack.authz.log,
    )[0]
    assert (proper.status, proper.audit and proper.audit["route"]) == (401, "admin-host")
