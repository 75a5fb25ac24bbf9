"""``make bench``: authz beside Envoy without auth, Envoy's jwt_authn and a bare floor.

    python -m tests.bench.run [--seconds 10] [--variants a,c,d] ...

Seven variants, one after the other, each through Envoy (``--concurrency 1``) to a
``direct_response`` 200, loaded by wrk:

  (a) Envoy without auth
  (b) Envoy's jwt_authn filter (same key, issuer, audience, identity headers)
  (c) a bare grpc.aio allow-all ext_authz server (tests/bench/floor.py): the asyncio floor
  (c2) the same allow-all on grpc.server with 4 threads: the floor of authz's own server
  (d) authz, one token repeated (warm path)
  (e) authz, a distinct token per request (cold verification)
  (f) authz, (d)'s path with a DPoP-bound token (``cnf.jkt``) on a route that takes
      only DPoP, and a fresh ES256 proof per request, each sent once (proofs are
      minted right before each run: the client's cost is not the service's)

For each: requests/s with 16 connections and 2 threads, p50/p99 latency, latency
with one connection, Envoy's own measure of the Check call, and the service's CPU
seconds and peak RSS. Every run is checked (no non-2xx, no socket errors, every
authz decision an allow: for (f), every proof accepted, none replayed); a run with
errors is reported as failed, never as fast.
Results go to bench-results/ (JSON, PNG chart, Markdown) and docs/bench.{png,md}.
Every process is stopped at the end, on failure and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

from authz.config.loader import load_config
from authz.dev.dpop_client import Signer, proof
from authz.dev.keys import PrivateKey, load_private, public_jwk, write_keypair
from authz.dev.stack import (
    AuthzProcess,
    EnvoyProcess,
    StackError,
    envoy_binary,
    http_request,
)
from authz.dev.tokens import claims_for, mint
from tests.bench import report
from tests.bench.envoy_configs import JwtSettings, envoy_config
from tests.bench.load import AccessLog, LogWindow, Run, TokenFeed, lua_script, run_wrk
from tests.bench.procs import REPO_ROOT, CpuPlan, FloorProcess, ProcSample, pid_of, pinned, sample
from tests.bench.proofs import ProofSpec, mint_proofs
from tests.bench.tokens import TokenSpec, mint_file
from tests.support.otlp import OtlpReceiver

__all__ = ["VARIANTS", "Settings", "Variant", "main"]

ISSUER = "https://idp.bench.local"
AUDIENCE = "orders-api"
KID = "bench-1"
SCOPE = "orders:read orders:write"
LEEWAY = 30
TOKEN_TTL = 3600
IDENTITY = {"x-auth-subject": "sub", "x-auth-issuer": "iss", "x-auth-scopes": "scope"}
# (f)'s proofs: minted before each run for PROOF_MARGIN times the requests/s
# expected (the previous run's; before the first, (d)'s, or DEFAULT_PROOF_RATE
# when (d) did not run), so that a faster run than expected still has enough.
PROOF_MARGIN = 4.0
DEFAULT_PROOF_RATE = 5000.0
# authz's default proof age limit; raised only for runs too long to fit in it.
DPOP_IAT_MAX_AGE = 60


def _authz_config(*, dpop_window: int | None = None) -> str:
    """authz as users run it: RS256, one issuer, an audience, identity headers.

    With ``dpop_window`` (f)'s: the issuer issues DPoP-bound tokens too, the one
    route takes only those, and proofs are ES256, at most ``dpop_window`` seconds
    old, each remembered in memory until it is too old to be accepted.
    """
    issues = "    issues: [bearer, dpop]\n" if dpop_window is not None else ""
    text = f"""\
# Written by the benchmark (tests/bench/run.py).
listen: 127.0.0.1:0
realm: bench
issuers:
  - issuer: {ISSUER}
    audiences: [{AUDIENCE}]
    algorithms: [RS256]
    leeway_seconds: {LEEWAY}
{issues}    keys:
      - jwks_file: keys/jwks.json
identity:
  namespace: x-auth-
  headers:
{"".join(f"    {header}: {claim}{chr(10)}" for header, claim in IDENTITY.items())}"""
    if dpop_window is None:
        return text
    # The replay store refuses new proofs when full of live ones; a million
    # holds a window's worth at any rate one service CPU reaches.
    return (
        text
        + f"""\
dpop:
  algorithms: [ES256]
  iat_max_age_seconds: {dpop_window}
  replay: {{store: memory, max_entries: 1000000}}
routes:
  - name: bench
    mode: protected
    sender_constraint: dpop
"""
    )


@dataclass(frozen=True)
class Variant:
    key: str
    name: str
    envoy: str  # none | jwt_authn | ext_authz
    service: str | None  # None | floor | floor-sync | authz
    distinct_tokens: bool = False
    dpop: bool = False  # a DPoP-bound token, and a fresh proof with every request

    @property
    def enforces(self) -> bool:
        """Whether a request without a valid token must be refused."""
        return self.envoy == "jwt_authn" or self.service == "authz"


VARIANTS = (
    Variant("a", "Envoy, no auth", "none", None),
    Variant("b", "Envoy jwt_authn", "jwt_authn", None),
    Variant("c", "floor: grpc.aio allow-all", "ext_authz", "floor"),
    Variant("c2", "floor: grpc.server allow-all (4 threads)", "ext_authz", "floor-sync"),
    Variant("d", "authz, one token (warm)", "ext_authz", "authz"),
    Variant("e", "authz, distinct tokens (cold)", "ext_authz", "authz", distinct_tokens=True),
    Variant(
        "f",
        "authz, DPoP-bound token (warm) with a fresh ES256 proof per request",
        "ext_authz",
        "authz",
        dpop=True,
    ),
)


@dataclass(frozen=True)
class Settings:
    seconds: float
    warmup_seconds: float
    c1_seconds: float
    soak_seconds: float
    connections: int
    threads: int
    service_threads: int
    tokens: int
    variants: tuple[Variant, ...]
    pin: str
    profile: str  # "" (off), "python" or "native" (py-spy --native: C frames too)
    out: Path
    docs: Path | None
    strict: bool

    @classmethod
    def parse(cls, argv: list[str] | None = None) -> Settings:
        env = os.environ.get
        parser = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__)
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        parser.add_argument(
            "--seconds",
            type=float,
            default=float(env("BENCH_SECONDS", "10")),
            help="each measured run (env BENCH_SECONDS, default 10)",
        )
        parser.add_argument(
            "--warmup-seconds", type=float, default=float(env("BENCH_WARMUP_SECONDS", "2"))
        )
        parser.add_argument(
            "--c1-seconds",
            type=float,
            default=float(env("BENCH_C1_SECONDS", "5")),
            help="the run with one connection (env BENCH_C1_SECONDS, default 5)",
        )
        parser.add_argument(
            "--soak-seconds",
            type=float,
            default=float(env("BENCH_SOAK_SECONDS", "60")),
            help="after (e)'s runs, distinct tokens for this long more with the token cache "
            "full, RSS read every second (env BENCH_SOAK_SECONDS, default 60; 0: none)",
        )
        parser.add_argument(
            "--service-threads",
            type=int,
            default=int(env("BENCH_SERVICE_THREADS", "4")),
            help="gRPC worker threads of authz (serving.threads) and of the (c2) floor "
            "(env BENCH_SERVICE_THREADS, default 4, what authz ships)",
        )
        parser.add_argument("--connections", type=int, default=16)
        parser.add_argument("--threads", type=int, default=2)
        parser.add_argument(
            "--tokens",
            type=int,
            default=int(env("BENCH_TOKENS", "100000")),
            help="distinct tokens minted for (e) (env BENCH_TOKENS, default 100000)",
        )
        parser.add_argument(
            "--variants",
            default=env("BENCH_VARIANTS", ",".join(variant.key for variant in VARIANTS)),
            help="which variants, e.g. c,d,e (env BENCH_VARIANTS, default all)",
        )
        parser.add_argument(
            "--pin",
            choices=["split", "none"],
            default=env("BENCH_PIN", "split"),
            help="split: Envoy+wrk on the first CPU, the service on the others (env BENCH_PIN)",
        )
        parser.add_argument(
            "--profile",
            choices=["", "python", "native"],
            default={"1": "python", "0": ""}.get(
                env("BENCH_PROFILE", "0"), env("BENCH_PROFILE", "")
            ),
            help="py-spy record the service during each measured run: python frames, or "
            "native (with gRPC's C frames; pauses the process to sample, so slower) "
            "(env BENCH_PROFILE=1|native)",
        )
        parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench-results")
        parser.add_argument(
            "--docs",
            type=Path,
            default=REPO_ROOT / "docs",
            help="where bench.png and bench.md are copied ('-': nowhere)",
        )
        parser.add_argument(
            "--strict",
            action="store_true",
            default=env("BENCH_STRICT", "0") == "1",
            help="exit 1 when a target is missed, too (env BENCH_STRICT=1)",
        )
        args = parser.parse_args(argv)
        wanted = [part.strip() for part in args.variants.split(",") if part.strip()]
        known = {variant.key: variant for variant in VARIANTS}
        unknown = [key for key in wanted if key not in known]
        if unknown or not wanted:
            parser.error(f"--variants: choose among {','.join(known)} (got {args.variants!r})")
        if args.seconds < 1 or args.warmup_seconds < 1 or args.c1_seconds < 1:
            parser.error("every run lasts at least 1 second")
        return cls(
            seconds=args.seconds,
            warmup_seconds=args.warmup_seconds,
            c1_seconds=args.c1_seconds,
            soak_seconds=max(0.0, args.soak_seconds),
            connections=args.connections,
            threads=args.threads,
            service_threads=args.service_threads,
            tokens=args.tokens,
            variants=tuple(variant for variant in VARIANTS if variant.key in wanted),
            pin=args.pin,
            profile=args.profile,
            out=args.out.resolve(),
            docs=None if str(args.docs) == "-" else args.docs.resolve(),
            strict=args.strict,
        )


@dataclass(frozen=True)
class DpopSetup:
    """(f)'s configuration, its client's key and its DPoP-bound token."""

    authz_config: Path
    holder_key: Path  # ES256, PEM
    holder: Signer
    token: str  # cnf.jkt: the holder key's thumbprint
    tampered: str


@dataclass
class Context:
    settings: Settings
    cpus: CpuPlan
    workdir: Path
    authz_config: Path
    jwt: JwtSettings
    token: str
    tampered: str
    feed: TokenFeed | None
    token_cache_entries: int
    dpop: DpopSetup | None = None
    # Requests/s of the variants measured so far: how many proofs (f) needs.
    rates: dict[str, float] = field(default_factory=dict)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    settings = Settings.parse(argv)
    # SIGTERM unwinds like Ctrl-C, so every process is stopped on the way out.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    started = time.monotonic()
    cpus = CpuPlan.choose(settings.pin)
    workdir = settings.out / "run"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    machine = machine_info()
    print(f"machine: {machine['cpu_model']}, {machine['cpus']} CPUs, {machine['kernel']}")
    print(f"pinning: {cpus.description}")
    print(f"load average at start: {machine['loadavg_start']}")
    context = prepare(settings, cpus, workdir)

    results: list[dict[str, Any]] = []
    try:
        for variant in settings.variants:
            print(f"\n({variant.key}) {variant.name} ...", flush=True)
            try:
                result = measure(variant, context)
            except StackError as error:
                print(f"    FAILED: {error}", file=sys.stderr)
                result = failed_result(variant, str(error))
            results.append(result)
            if result["ok"]:
                context.rates[variant.key] = result["c16"]["requests_per_s"]
            print(f"    {report.one_line(result)}", flush=True)
    finally:
        if context.feed is not None:
            context.feed.path.unlink(missing_ok=True)  # tens of MB, minted anew each run

    machine["loadavg_end"] = Path("/proc/loadavg").read_text().strip()
    document: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m tests.bench.run", *(argv or sys.argv[1:])]).strip(),
        "environment": {
            name: value for name, value in os.environ.items() if name.startswith("BENCH_")
        },
        "settings": {
            "seconds": settings.seconds,
            "warmup_seconds": settings.warmup_seconds,
            "c1_seconds": settings.c1_seconds,
            "connections": settings.connections,
            "threads": settings.threads,
            "tokens_minted": settings.tokens if context.feed else 0,
            "proof_margin": PROOF_MARGIN if context.dpop else None,
            "pinning": cpus.description,
            "envoy_concurrency": 1,
            "profiled": settings.profile,
        },
        "machine": machine,
        "variants": results,
        "checks": report.checks(results, settings.seconds),
        "elapsed_seconds": round(time.monotonic() - started, 1),
    }
    # docs/ shows complete, unprofiled runs only: a partial run must not replace them.
    complete = len(settings.variants) == len(VARIANTS) and not settings.profile
    paths = report.write_all(document, settings.out, settings.docs if complete else None)
    print()
    print(report.table(document))
    print(f"\nresults: {paths['json']}\nchart:   {paths['png']}")
    if "docs_md" in paths:
        print(f"docs:    {paths['docs_md']} and {paths['docs_png']}")
    elif settings.docs is not None:
        print("docs:    not updated (only a run of every variant, unprofiled, updates docs/)")
    print(f"elapsed: {document['elapsed_seconds']} s")
    broken = [result["key"] for result in results if not result["ok"]]
    if broken:
        print(f"\nruns with errors: {', '.join(broken)} (their figures are not valid)")
        return 1
    if settings.strict and any(check["status"] == "FAIL" for check in document["checks"]):
        return 1
    return 0


def _features_on(workdir: Path) -> str:
    """What users run: an audit file, a metrics endpoint, and tracing exported over
    OTLP to a receiver on loopback. Envoy starts no trace here, so every Check is a
    root span; 1 % are sampled, as behind a gateway that samples 1 % of requests."""
    receiver = OtlpReceiver().start()
    atexit.register(receiver.stop)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    return f"""\
audit:
  stdout: false
  file: {workdir / "audit.jsonl"}
telemetry:
  tracing: {{endpoint: "{receiver.endpoint}", root_sample_ratio: 0.01}}
  metrics: {{listen: "127.0.0.1:{metrics_port}"}}
"""


def prepare(settings: Settings, cpus: CpuPlan, workdir: Path) -> Context:
    """Keys, authz's configuration, the warm token, for (e) the distinct tokens and
    for (f) its configuration, the client's key and the DPoP-bound token."""
    private_path, jwks_path = write_keypair(workdir / "keys", "RS256", KID)
    authz_config = workdir / "authz.yaml"
    common = f"serving: {{threads: {settings.service_threads}}}\n" + _features_on(workdir)
    authz_config.write_text(_authz_config() + common)
    key = load_private(private_path)
    token = mint(
        key, "RS256", claims_for("alice", ISSUER, AUDIENCE, scopes=SCOPE, ttl=TOKEN_TTL), KID
    )
    header, payload, signature = token.split(".")
    # Same header and claims, another signature: refused by anything that verifies.
    forged = mint(key, "RS256", claims_for("mallory", ISSUER, AUDIENCE, ttl=TOKEN_TTL), KID)
    tampered = f"{header}.{payload}.{forged.rsplit('.', 1)[1]}"
    assert tampered != token
    assert signature
    jwks = json.loads(jwks_path.read_text())
    assert jwks["keys"][0] == public_jwk(key, KID, "RS256")
    feed = None
    if any(variant.distinct_tokens for variant in settings.variants):
        path = workdir / "tokens.txt"
        spec = TokenSpec(private_path, KID, ISSUER, AUDIENCE, SCOPE, TOKEN_TTL)
        workers = max(1, len(os.sched_getaffinity(0)))
        print(f"minting {settings.tokens} distinct RS256 tokens ({workers} processes) ...")
        took = mint_file(spec, settings.tokens, path, workers)
        print(f"    {settings.tokens} tokens in {took:.1f} s")
        feed = TokenFeed(path, settings.tokens)
    jwt = JwtSettings(ISSUER, [AUDIENCE], jwks, LEEWAY, IDENTITY)
    entries = load_config(authz_config).token_cache_entries
    dpop = None
    if any(variant.dpop for variant in settings.variants):
        dpop = _prepare_dpop(settings, workdir, common, key)
    return Context(settings, cpus, workdir, authz_config, jwt, token, tampered, feed, entries, dpop)


def _prepare_dpop(settings: Settings, workdir: Path, common: str, key: PrivateKey) -> DpopSetup:
    # A proof is used at most a run plus its minting after it was made; the
    # default window holds that for runs of up to about 20 seconds.
    longest = max(settings.seconds, settings.warmup_seconds, settings.c1_seconds)
    window = min(600, max(DPOP_IAT_MAX_AGE, int(2 * longest) + 20))
    authz_config = workdir / "authz-dpop.yaml"
    authz_config.write_text(_authz_config(dpop_window=window) + common)
    holder_key, _ = write_keypair(workdir / "holder", "ES256", "holder")
    holder = Signer(load_private(holder_key), "ES256")
    claims = claims_for("alice", ISSUER, AUDIENCE, scopes=SCOPE, ttl=TOKEN_TTL)
    claims["cnf"] = {"jkt": holder.thumbprint()}
    token = mint(key, "RS256", claims, KID)
    forged = mint(key, "RS256", {**claims, "sub": "mallory"}, KID)
    tampered = f"{token.rsplit('.', 1)[0]}.{forged.rsplit('.', 1)[1]}"
    assert tampered != token
    load_config(authz_config)  # a mistake here fails now, not after the other variants
    return DpopSetup(authz_config, holder_key, holder, token, tampered)


def measure(variant: Variant, context: Context) -> dict[str, Any]:
    settings = context.settings
    workdir = context.workdir / variant.key
    workdir.mkdir()
    access = AccessLog(workdir / "access.log")
    wrk_log = workdir / "wrk.log"
    with contextlib.ExitStack() as running:
        service: AuthzProcess | None = None
        authz_address: tuple[str, int] | None = None
        if variant.service is not None:
            if variant.service in ("floor", "floor-sync"):
                service = FloorProcess(
                    workdir / "floor.log",
                    threads=settings.service_threads if variant.service == "floor-sync" else 0,
                )
            else:
                service = AuthzProcess(_authz_config_of(variant, context), workdir / "authz.log")
            running.callback(service.stop)
            with pinned(context.cpus.service):
                service.start()
            authz_address = (service.address.rsplit(":", 1)[0].strip("[]"), service.port)
        config = envoy_config(variant.envoy, access.path, authz=authz_address, jwt=context.jwt)
        envoy = EnvoyProcess(config, workdir)
        running.callback(envoy.stop)
        with pinned(context.cpus.front):
            envoy.start()
        # wrk sends this URL's host and port as Host, and Envoy passes them and
        # the scheme on as they are: authz sees the request at this very URI.
        url = f"http://127.0.0.1:{envoy.listener_port}/"
        service_pid = pid_of(service) if service is not None else None
        envoy_pid = pid_of(envoy)

        feed = context.feed if variant.distinct_tokens else None
        supply = None
        authorization: str | None
        if variant.dpop:
            assert context.dpop is not None
            preflight = check_dpop_answers(url, context.dpop)
            authorization = f"DPoP {context.dpop.token}"
            spec = ProofSpec(context.dpop.holder_key, "GET", url, context.dpop.token)
            supply = ProofSupply(spec, workdir, context.rates.get("d", DEFAULT_PROOF_RATE))
        else:
            preflight = check_answers(url, variant, context)
            authorization = None if feed is not None else f"Bearer {context.token}"
        script = lua_script(workdir, feed is not None or supply is not None)

        def mint(seconds: float) -> TokenFeed | None:
            """(f)'s proofs for a run; minted before its counters are read, so
            that the client's work counts neither as the service's nor as other load."""
            return supply.mint(seconds) if supply is not None else None

        def load(
            connections: int, threads: int, seconds: float, proofs: TokenFeed | None = None
        ) -> Run:
            try:
                run = run_wrk(
                    url,
                    connections=connections,
                    threads=threads,
                    seconds=seconds,
                    script=script,
                    cpus=context.cpus.front,
                    authorization=authorization,
                    feed=proofs or feed,
                    log=wrk_log,
                )
            finally:
                if proofs is not None:
                    proofs.path.unlink(missing_ok=True)  # tens of MB, never to be sent again
            if supply is not None:
                supply.ran(run)
            return run

        warmup_proofs = mint(settings.warmup_seconds)
        warmup = load(
            settings.connections, settings.threads, settings.warmup_seconds, warmup_proofs
        )
        mark = access.settle(warmup.requests, since=0)

        main_proofs = mint(settings.seconds)
        before = Counters.read(service_pid, envoy_pid)
        profiler = (
            start_profiler(service_pid, workdir, settings, context.cpus.front)
            if service_pid is not None and settings.profile
            else None
        )
        main_run = load(settings.connections, settings.threads, settings.seconds, main_proofs)
        after = Counters.read(service_pid, envoy_pid)
        profile = finish_profiler(profiler, workdir)
        end = access.settle(main_run.requests, since=mark)
        main_log = access.window(mark, end)

        c1_proofs = mint(settings.c1_seconds)
        c1_before = Counters.read(service_pid, envoy_pid)
        c1_run = load(1, 1, settings.c1_seconds, c1_proofs)
        end_c1 = access.settle(c1_run.requests, since=end)
        c1_log = access.window(end, end_c1)
        final = Counters.read(service_pid, envoy_pid)
        soak = (
            cold_soak(
                load,
                service_pid,
                settings,
                sent=warmup.requests + main_run.requests + c1_run.requests,
                cache_entries=context.token_cache_entries,
            )
            if feed is not None and service_pid is not None and settings.soak_seconds > 0
            else None
        )

    result: dict[str, Any] = {
        "key": variant.key,
        "name": variant.name,
        "envoy_filter": variant.envoy,
        "service": variant.service,
        "tokens": _tokens(variant),
        "preflight": preflight,
        "warmup": {"requests": warmup.requests, "failures": warmup.failures},
        "c16": main_run.to_json(),
        "c1": c1_run.to_json(),
        "access_log": {"c16": main_log.to_json(), "c1": c1_log.to_json()},
        "envoy_authz_us": {"c16": main_log.authz_latency_us, "c1": c1_log.authz_latency_us},
        "service_process": usage(before.service, after.service, final.service, main_run),
        "envoy_process": usage(before.envoy, after.envoy, final.envoy, main_run),
        "machine_cpu": {
            "c16": other_load(before, after, main_run),
            "c1": other_load(c1_before, final, c1_run),
        },
        "profile": profile,
        "soak": soak,
        "proofs": supply.summary() if supply is not None else None,
    }
    usage_then = result["service_process"]
    if soak is not None and usage_then is not None:
        # The soak runs after the variant's own runs: its high-water mark counts too.
        usage_then["peak_rss_mib"] = max(usage_then["peak_rss_mib"], soak["peak_rss_mib"])
    problems, warnings = judge(
        variant, (warmup, main_run, c1_run), (main_log, c1_log), result["machine_cpu"]
    )
    if soak is not None and (soak["failures"] or not soak["requests"]):
        problems.append(f"cold soak: {soak['failures']} failures in {soak['requests']} requests")
    result["problems"] = problems
    result["warnings"] = warnings
    result["ok"] = not problems
    if result["ok"]:
        # Hundreds of MB for the fast variants; kept only to investigate a failed run.
        access.path.unlink()
    return result


def cold_soak(
    load: Callable[[int, int, float], Run],
    pid: int,
    settings: Settings,
    *,
    sent: int,
    cache_entries: int,
) -> dict[str, Any]:
    """Distinct tokens for ``soak_seconds`` more, the service's RSS read every second.

    By now ``sent`` distinct tokens have gone by; once they outnumber the token
    cache's entries, the cache is full and RSS should stay flat: each new token
    evicts the oldest one.
    """
    readings: list[tuple[float, float]] = []
    stop = threading.Event()
    started = time.monotonic()

    def read_rss() -> None:
        while True:
            readings.append((time.monotonic() - started, sample(pid).rss_kib / 1024))
            if stop.wait(1.0):  # the sampling interval
                return

    reader = threading.Thread(target=read_rss, name="bench-rss", daemon=True)
    reader.start()
    try:
        run = load(settings.connections, settings.threads, settings.soak_seconds)
    finally:
        stop.set()
        reader.join()
    last = sample(pid)
    readings.append((time.monotonic() - started, last.rss_kib / 1024))
    rss = [mib for _, mib in readings]
    return {
        "seconds": settings.soak_seconds,
        "requests": run.requests,
        "requests_per_s": run.requests_per_s,
        "failures": run.failures,
        "tokens_before": sent,
        "cache_entries": cache_entries,
        "cache_full": sent >= cache_entries,
        "rss_start_mib": round(rss[0], 1),
        "rss_end_mib": round(rss[-1], 1),
        "rss_max_mib": round(max(rss), 1),
        "rss_growth_mib": round(rss[-1] - rss[0], 1) + 0.0,  # not -0.0
        "peak_rss_mib": round(last.peak_rss_kib / 1024, 1),
        "rss_mib": [[round(at, 1), round(mib, 1)] for at, mib in readings],
        # A token comes round again only after the whole file: long evicted by then.
        "tokens": run.tokens,
    }


def failed_result(variant: Variant, error: str) -> dict[str, Any]:
    return {
        "key": variant.key,
        "name": variant.name,
        "envoy_filter": variant.envoy,
        "service": variant.service,
        "tokens": _tokens(variant),
        "ok": False,
        "problems": [f"did not run: {error.splitlines()[0] if error else 'error'}"],
        "warnings": [],
        "error": error[-4000:],
    }


def _authz_config_of(variant: Variant, context: Context) -> Path:
    if not variant.dpop:
        return context.authz_config
    assert context.dpop is not None  # prepare() made it for every DPoP variant
    return context.dpop.authz_config


def _tokens(variant: Variant) -> str:
    if variant.dpop:
        return "one, DPoP-bound, a fresh proof per request"
    return "distinct" if variant.distinct_tokens else "one"


@dataclass
class ProofSupply:
    """(f)'s proofs, minted for one run at a time, right before it.

    Each run gets ``PROOF_MARGIN`` times the requests/s expected (``rate``: the
    previous run's once one has run) times its length; they are as fresh as
    proofs can be when sent, and no run waits for a whole variant's worth.
    """

    spec: ProofSpec
    workdir: Path
    rate: float
    mints: list[dict[str, Any]] = field(default_factory=list)

    def mint(self, seconds: float) -> TokenFeed:
        count = max(1000, int(PROOF_MARGIN * self.rate * seconds))
        path = self.workdir / "proofs.txt"
        workers = max(1, len(os.sched_getaffinity(0)))
        took = mint_proofs(self.spec, count, path, workers)
        print(f"    {count:,} proofs minted in {took:.1f} s ({workers} processes)", flush=True)
        self.mints.append({"minted": count, "mint_seconds": round(took, 2)})
        # Sent once each: a thread that runs out stops rather than send one again.
        return TokenFeed(path, count, header="DPoP", prefix="", once=True)

    def ran(self, run: Run) -> None:
        self.mints[-1].update(
            used=run.tokens["used"], threads_ran_out=run.tokens["threads_ran_out"]
        )
        # A run that ran out says only that the rate was higher than expected.
        if not run.tokens["threads_ran_out"] and run.requests_per_s > 0:
            self.rate = run.requests_per_s

    def summary(self) -> dict[str, Any]:
        return {
            "margin": PROOF_MARGIN,
            "runs": self.mints,
            "mint_seconds": round(sum(mint["mint_seconds"] for mint in self.mints), 2),
        }


def check_dpop_answers(url: str, dpop: DpopSetup) -> dict[str, int]:
    """Before any load, for (f): the bound token with a fresh proof passes, and
    the same proof again, the token as a bearer token, no token, and a tampered
    token with its own fresh proof do not."""

    def presented(token: str) -> dict[str, str]:
        signed = proof(dpop.holder, iat=time.time(), htu=url, access_token=token)
        return {"Authorization": f"DPoP {token}", "DPoP": signed}

    valid = presented(dpop.token)
    answers = {
        "valid_token_and_proof": http_request(url, valid).status,
        "replayed_proof": http_request(url, valid).status,
        "as_bearer_token": http_request(url, {"Authorization": f"Bearer {dpop.token}"}).status,
        "no_token": http_request(url).status,
        "tampered_token": http_request(url, presented(dpop.tampered)).status,
    }
    expected = dict.fromkeys(answers, 401) | {"valid_token_and_proof": 200}
    if answers != expected:
        raise StackError(f"preflight answers {answers}, expected {expected}")
    return answers


def check_answers(url: str, variant: Variant, context: Context) -> dict[str, int]:
    """Before any load: a valid token passes, and, where auth is on, a bad one does not."""
    answers = {
        "valid_token": http_request(url, {"Authorization": f"Bearer {context.token}"}).status,
        "no_token": http_request(url).status,
        "tampered_token": http_request(url, {"Authorization": f"Bearer {context.tampered}"}).status,
    }
    expected = {
        "valid_token": 200,
        "no_token": 401 if variant.enforces else 200,
        "tampered_token": 401 if variant.enforces else 200,
    }
    if answers != expected:
        raise StackError(f"preflight answers {answers}, expected {expected}")
    return answers


@dataclass(frozen=True)
class Counters:
    service: ProcSample | None
    envoy: ProcSample
    machine_busy: float  # CPU seconds, all CPUs, user+nice+system (what processes use)
    machine_irq: float  # irq+softirq: mostly loopback networking, for nobody in particular
    machine_steal: float
    own: float  # this process's CPU seconds

    @classmethod
    def read(cls, service_pid: int | None, envoy_pid: int) -> Counters:
        fields = [
            int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        ]
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
        ticks = os.sysconf("SC_CLK_TCK")
        own = os.times()
        return cls(
            service=sample(service_pid) if service_pid is not None else None,
            envoy=sample(envoy_pid),
            machine_busy=(user + nice + system) / ticks,
            machine_irq=(irq + softirq) / ticks,
            machine_steal=steal / ticks,
            own=own.user + own.system,
        )


def usage(
    before: ProcSample | None, after: ProcSample | None, final: ProcSample | None, run: Run
) -> dict[str, float] | None:
    if before is None or after is None or final is None:
        return None
    cpu = after.cpu_seconds - before.cpu_seconds
    return {
        "cpu_seconds": round(cpu, 3),
        "cpu_us_per_request": round(cpu / run.requests * 1e6, 1) if run.requests else 0.0,
        "cpu_cores": round(cpu / run.duration_s, 3) if run.duration_s else 0.0,
        "rss_before_mib": round(before.rss_kib / 1024, 1),
        "rss_after_mib": round(after.rss_kib / 1024, 1),
        "rss_growth_mib": round((after.rss_kib - before.rss_kib) / 1024, 1) + 0.0,  # not -0.0
        "peak_rss_mib": round(final.peak_rss_kib / 1024, 1),
    }


def other_load(before: Counters, after: Counters, run: Run) -> dict[str, float]:
    """CPU used during the measured run by processes that are not part of it."""
    busy = after.machine_busy - before.machine_busy
    ours = (
        (after.envoy.cpu_seconds - before.envoy.cpu_seconds)
        + (
            after.service.cpu_seconds - before.service.cpu_seconds
            if after.service and before.service
            else 0.0
        )
        + run.wrk_cpu_seconds
        + (after.own - before.own)
    )
    seconds = run.duration_s or 1.0
    return {
        "busy_cores": round(busy / seconds, 2),
        "ours_cores": round(ours / seconds, 2),
        "other_cores": round(max(0.0, busy - ours) / seconds, 2),
        "irq_cores": round((after.machine_irq - before.machine_irq) / seconds, 2),
        "steal_cores": round((after.machine_steal - before.machine_steal) / seconds, 2),
    }


def judge(
    variant: Variant,
    runs: tuple[Run, Run, Run],
    windows: tuple[LogWindow, LogWindow],
    other: dict[str, dict[str, float]],
) -> tuple[list[str], list[str]]:
    """Problems make a run invalid (errors); warnings qualify its figures."""
    problems: list[str] = []
    warnings: list[str] = []
    for label, run in zip(("warm-up", "c16", "c1"), runs, strict=True):
        if run.failures:
            problems.append(f"{label}: {run.non_2xx} non-2xx, socket errors {_socket_errors(run)}")
        if run.requests == 0:
            problems.append(f"{label}: no request completed")
        if run.tokens.get("threads_ran_out"):
            # The stopped threads sent nothing more: requests/s is undercounted.
            text = (
                f"{label}: proofs ran out ({run.tokens['threads_ran_out']} of {run.threads} "
                f"wrk threads stopped early): raise PROOF_MARGIN"
            )
            (warnings if label == "warm-up" else problems).append(text)
        if run.tokens.get("reused") or run.tokens.get("file_restarted"):
            warnings.append(
                f"{label}: tokens reused ({run.tokens['reused']} within the run, token file "
                f"restarted: {bool(run.tokens['file_restarted'])}): raise BENCH_TOKENS"
            )
    for label, window in zip(("c16", "c1"), windows, strict=True):
        # Status 0: a request still in flight when wrk closed its connection.
        bad = {status: n for status, n in window.statuses.items() if status not in ("200", "0")}
        if bad:
            problems.append(f"{label}: Envoy logged statuses {bad}")
        if variant.service == "authz":
            refused = {name: n for name, n in window.decisions.items() if name != "allow"}
            if refused or not window.decisions:
                problems.append(f"{label}: authz decisions {window.decisions}")
        if variant.envoy == "ext_authz" and not window.authz_latency_us:
            warnings.append(f"{label}: no ext_authz latency in Envoy's access log")
    for label, load in other.items():
        if load["other_cores"] > 0.15 or load["steal_cores"] > 0.05:
            warnings.append(
                f"{label}: other processes used {load['other_cores']} cores "
                f"(steal {load['steal_cores']}) during the run: figures disturbed"
            )
    return problems, warnings


def _socket_errors(run: Run) -> dict[str, int]:
    return {name: n for name, n in run.errors.items() if name != "status" and n}


def start_profiler(
    pid: int, workdir: Path, settings: Settings, cpus: frozenset[int]
) -> tuple[subprocess.Popen[bytes], Path]:
    """py-spy samples the service during the measured run (on the load generator's CPU)."""
    binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.access(binary, os.X_OK):
        raise StackError("BENCH_PROFILE=1 needs py-spy: .venv/bin/pip install py-spy")
    raw = workdir / "profile.txt"
    with pinned(cpus), (workdir / "py-spy.log").open("wb") as sink:
        process = subprocess.Popen(
            [
                binary,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, round(settings.seconds))),
                "--rate",
                "100",
                "--format",
                "raw",
                # Native unwinding needs the process paused for each sample.
                *(["--native"] if settings.profile == "native" else ["--nonblocking"]),
                "--subprocesses",
                "--output",
                str(raw),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return process, raw


def finish_profiler(
    profiler: tuple[subprocess.Popen[bytes], Path] | None, workdir: Path
) -> dict[str, Any] | None:
    if profiler is None:
        return None
    process, raw = profiler
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if not raw.exists():
        return {"error": (workdir / "py-spy.log").read_text(errors="replace")[-2000:]}
    summary = report.profile_summary(raw.read_text())
    (workdir / "profile-summary.txt").write_text(report.profile_text(summary))
    return {"raw": str(raw), **summary}


def machine_info() -> dict[str, Any]:
    model, flags = "unknown", ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name") and model == "unknown":
            model = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not flags:
            flags = line.split(":", 1)[1]
    memory = next(
        (
            line.split()[1]
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        ),
        "0",
    )

    def command_output(command: list[str]) -> str:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"unavailable ({error})"
        return (done.stdout + done.stderr).strip()

    envoy = command_output([envoy_binary(), "--version"])
    wrk = command_output(["wrk", "--version"]).split(" Copyright", 1)[0].splitlines()
    commit = command_output(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    dirty = command_output(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "authz"])
    versions = {}
    for package in ("grpcio", "protobuf", "cryptography", "PyJWT"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_mib": int(memory) // 1024,
        # Virtual CPUs may share physical cores with each other or with other guests.
        "virtual_machine": "hypervisor" in flags.split(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "envoy": envoy.split("version:", 1)[-1].strip().split("/")[1] if "/" in envoy else envoy,
        "envoy_version_string": envoy,
        "wrk": wrk[0] if wrk else "unknown",
        "packages": versions,
        "authz_commit": commit + (" (authz/ modified)" if dirty else ""),
        "loadavg_start": Path("/proc/loadavg").read_text().strip(),
    }


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: every process was stopped", file=sys.stderr)
        sys.exit(130)
