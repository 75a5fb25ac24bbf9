"""``authz``: serve, check or show a configuration, and development helpers for keys and tokens."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from authz import __version__
from authz.cli_common import EXIT_CONFIG, logging_options, resolve_logging
from authz.cli_config import add_config_commands
from authz.cli_dev import add_dev_commands
from authz.config.loader import load_config
from authz.config.models import Config, IssuerConfig
from authz.errors import ConfigError

if TYPE_CHECKING:
    from authz.keys.fetch import HttpFetcher
    from authz.keys.sources import FetchingKeySource

__all__ = ["EXIT_CONFIG", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    resolve_logging(args, parser, os.environ)
    _configure_logging(args)
    try:
        result: int = args.handler(args)
    except ConfigError as exc:
        print(f"authz: configuration error:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    return result


def _parser() -> argparse.ArgumentParser:
    common = [logging_options()]
    parser = argparse.ArgumentParser(prog="authz", description=__doc__, parents=common)
    parser.add_argument("--version", action="version", version=f"authz {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the ext_authz gRPC service", parents=common)
    serve.add_argument("-c", "--config", required=True, type=Path, help="configuration file")
    serve.add_argument(
        "--workers",
        default="auto",
        type=_workers_value,
        help="serving processes sharing the port (default: one per available CPU)",
    )
    serve.set_defaults(handler=_serve)

    check = commands.add_parser(
        "check-config", help="validate a configuration and its keys", parents=common
    )
    check.add_argument("config", type=Path)
    check.add_argument(
        "--no-fetch", action="store_true", help="do not fetch remote keys (offline validation)"
    )
    check.set_defaults(handler=_check_config)

    add_config_commands(commands, common)
    _add_explain(commands, common)
    _add_check_envoy(commands, common)
    add_dev_commands(commands, common)
    return parser


def _workers_value(value: str) -> str:
    if value != "auto" and not (value.isdigit() and 1 <= int(value) <= 256):
        raise argparse.ArgumentTypeError("expected a number from 1 to 256, or auto")
    return value


def _serve(args: argparse.Namespace) -> int:
    from authz.runtime import ConfigFile
    from authz.server import run  # grpc is imported only when serving

    # Read through ConfigFile so the watch compares later changes with exactly this read.
    config_file = ConfigFile(args.config)
    _log_config_loaded(args.config, config_file.config)
    workers = _worker_count(args.workers, config_file.config)
    if workers > 1:
        from authz.workers import supervise

        log_args = ["--log-level", args.log_level, "--log-format", args.log_format]
        metrics = config_file.config.telemetry.metrics.listen
        return supervise(args.config, workers, log_args, metrics)
    return asyncio.run(run(config_file.config, config_file))


def _worker_count(requested: str, config: Config) -> int:
    from authz.workers import WORKER_INDEX_ENV, available_cpus

    if WORKER_INDEX_ENV in os.environ:
        return 1  # this process is one of the workers
    count = available_cpus() if requested == "auto" else int(requested)
    shared = not config.listen.startswith("unix:") and not config.listen.endswith(":0")
    if count > 1 and not shared:
        # Workers share a TCP port; a Unix socket or a random port cannot be shared.
        if requested != "auto":
            raise ConfigError(
                f"--workers {count} needs a fixed TCP port in listen, not {config.listen}"
            )
        count = 1
    return count


def _configure_logging(args: argparse.Namespace) -> None:
    from authz.observability.logs import configure_logging

    configure_logging(args.log_level, args.log_format, sys.stderr)


def _log_config_loaded(path: Path, config: Config) -> None:
    logging.getLogger("authz.config").info(
        "configuration loaded from %s (version %s, %d issuer(s))",
        path,
        config.version,
        len(config.issuers),
        extra={"config_file": str(path), "config_version": config.version},
    )


def _unused_fetcher(issuer: IssuerConfig, ca_file: Path | None) -> HttpFetcher:
    from authz.keys.fetch import HttpFetcher

    return HttpFetcher(issuer.fetch)  # never asked to fetch: no CA bundle needed


def _check_config(args: argparse.Namespace) -> int:
    from authz.keys.store import KeyStore

    config: Config = load_config(args.config)
    # Reads every local key; ConfigError names what is wrong. Without fetching,
    # a remote source's CA bundle is not read either: in CI, outside the pod,
    # the service account's CA (kubernetes key sources) does not exist.
    store: FetchingKeySource = (
        KeyStore(config, fetcher_factory=_unused_fetcher) if args.no_fetch else KeyStore(config)
    )
    fetched: dict[str, bool] = {}
    if not args.no_fetch:
        fetched = asyncio.run(_fetch_once(store))
    failed = False
    for status in store.status():
        keys = store.keys_for(status.issuer)
        described = ", ".join(
            f"{key.kid or '(no kid)'} {key.kind} {'/'.join(sorted(key.algorithms))}"
            for key in (keys.all() if keys else ())
        )
        line = f"issuer {status.issuer}: {described or 'no keys yet'}"
        if status.remote and args.no_fetch:
            line += " (remote keys not fetched: --no-fetch)"
        elif status.remote and not fetched.get(status.issuer):
            line += f" (FETCH FAILED: {status.last_error})"
            failed = True
        print(line)
    _check_rules(config)
    if failed:
        print(f"{args.config}: valid, but keys could not be fetched", file=sys.stderr)
        return 1
    print(f"{args.config}: OK")
    return 0


async def _fetch_once(store: FetchingKeySource) -> dict[str, bool]:
    try:
        return await store.fetch_all()
    finally:
        await store.close()


def _check_rules(config: Config) -> None:
    """Print the routes and load the revocation list, as serving would."""
    from authz.check.revocation import RevocationList

    if config.routes is None:
        print("routes: none (every request needs a valid token)")
    else:
        names = ", ".join(f"{route.name} ({route.mode})" for route in config.routes)
        print(f"routes: {names}; anything else is denied")
    if config.revocation is not None:
        path = config.resolve(config.revocation.file)
        print(f"revocation: {path}, {len(RevocationList(path))} entries")


def _add_explain(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    explain = commands.add_parser(
        "explain",
        parents=parents,
        help="decide one request as the service would, and print every step",
        description="Decide one request with the service's own code and print each step: "
        "route, credential, issuer, key, claims, revocation, requirements, and the answer. "
        "Exit status: 0 allow, 1 deny, 2 configuration error.",
    )
    explain.add_argument("-c", "--config", required=True, type=Path, help="configuration file")
    token = explain.add_mutually_exclusive_group()
    token.add_argument("--token", help="the bearer token (sent as Authorization: Bearer …)")
    token.add_argument("--token-file", type=Path, help="a file holding the token; - for stdin")
    explain.add_argument("--method", default="GET")
    explain.add_argument("--path", required=True, help="as Envoy sends it, query included")
    explain.add_argument("--host", default="", help=":authority / Host")
    explain.add_argument(
        "--header", action="append", default=[], metavar="NAME=VALUE", help="repeatable"
    )
    explain.add_argument(
        "--context-extension",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="as Envoy's check_settings.context_extensions would send (repeatable)",
    )
    explain.add_argument(
        "--at", type=float, metavar="UNIX_TIME", help="decide as of this time (default: now)"
    )
    explain.set_defaults(handler=_explain)


def _explain(args: argparse.Namespace) -> int:
    from authz.check.request import RequestView
    from authz.explain import FixedClock, explain

    config = load_config(args.config)
    headers: dict[str, list[str]] = {}
    extensions: dict[str, str] = {}
    for kind, items, target in (
        ("--header", args.header, None),
        ("--context-extension", args.context_extension, extensions),
    ):
        for item in items:
            name, sep, value = item.partition("=")
            if not sep or not name:
                print(f"authz: {kind} {item!r}: expected NAME=VALUE", file=sys.stderr)
                return EXIT_CONFIG
            if target is None:
                headers.setdefault(name.lower(), []).append(value)
            else:
                target[name] = value
    token = args.token
    if args.token_file is not None:
        source = sys.stdin if str(args.token_file) == "-" else None
        try:
            token = source.read() if source else args.token_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            print(f"authz: --token-file {args.token_file}: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        token = token.strip()
    if token is not None:
        headers.setdefault("authorization", []).append(f"Bearer {token}")
    request = RequestView(
        method=args.method,
        path=args.path,
        host=args.host,
        headers={name: tuple(values) for name, values in headers.items()},
        context_extensions=extensions,
    )
    clock = FixedClock(args.at) if args.at is not None else None
    decision = explain(config, request, sys.stdout, clock=clock)
    return 0 if decision.allowed else 1


def _add_check_envoy(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    check = commands.add_parser(
        "check-envoy",
        parents=parents,
        help="report Envoy settings that are unsafe or inconsistent with authz",
        description="Read Envoy configs (YAML or JSON with static_resources, a Kubernetes "
        "ConfigMap holding one, or a running Envoy's admin /config_dump; - for stdin) and "
        "print each unsafe or inconsistent setting as FILE:LINE: what: why. Exit status: "
        "0 none, 1 some, 2 a file (or -c) unusable.",
    )
    check.add_argument("files", nargs="+", type=Path, metavar="FILE")
    check.add_argument(
        "-c",
        "--config",
        type=Path,
        help="authz's configuration: also check the identity namespace, the timeout against "
        "its key refetch wait, header limits, and routes where ext_authz is off",
    )
    check.set_defaults(handler=_check_envoy)


def _check_envoy(args: argparse.Namespace) -> int:
    from authz.envoy_check import run

    config = load_config(args.config) if args.config is not None else None
    return run(args.files, config, sys.stdout, sys.stderr, stdin=sys.stdin)


if __name__ == "__main__":
    raise SystemExit(main())
