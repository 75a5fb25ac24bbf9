"""``authz``: serve, check a configuration, and development helpers for keys and tokens."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from authz.config import ALGORITHMS, Config, load_config
from authz.errors import ConfigError
from authz.keys import StaticKeySource

__all__ = ["main"]

EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
    parser = argparse.ArgumentParser(prog="authz", description=__doc__)
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument(
        "--log-format",
        default="json",
        choices=["json", "text"],
        help="service logs on stderr: one JSON object per line (default), or plain text",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the ext_authz gRPC service")
    serve.add_argument("-c", "--config", required=True, type=Path, help="configuration file")
    serve.set_defaults(handler=_serve)

    check = commands.add_parser("check-config", help="validate a configuration and its keys")
    check.add_argument("config", type=Path)
    check.set_defaults(handler=_check_config)

    keys = commands.add_parser("keys", help="development keys").add_subparsers(
        dest="keys_command", required=True
    )
    generate = keys.add_parser("generate", help="write a private key and its public JWKS")
    generate.add_argument("--alg", default="RS256", choices=ALGORITHMS)
    generate.add_argument("--kid", required=True, help="key id published in the JWKS")
    generate.add_argument("--out", required=True, type=Path, help="output directory")
    generate.set_defaults(handler=_keys_generate)

    token = commands.add_parser("token", help="development tokens").add_subparsers(
        dest="token_command", required=True
    )
    mint = token.add_parser("mint", help="sign a token and print it")
    mint.add_argument("--key", required=True, type=Path, help="private.pem or secret.key")
    mint.add_argument("--alg", default="RS256", choices=ALGORITHMS)
    mint.add_argument("--kid", help="key id to put in the header")
    mint.add_argument("--iss", required=True, help="issuer")
    mint.add_argument("--aud", required=True, action="append", help="audience (repeatable)")
    mint.add_argument("--sub", required=True, help="subject")
    mint.add_argument("--scope", default="", help='space-separated scopes, e.g. "read write"')
    mint.add_argument("--ttl", type=int, default=300, help="seconds until exp (negative: expired)")
    mint.add_argument("--nbf-in", type=int, help="seconds until nbf (positive: not yet valid)")
    mint.add_argument(
        "--claim", action="append", default=[], metavar="NAME=JSON", help="extra claim"
    )
    mint.set_defaults(handler=_token_mint)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from authz.server import run  # grpc is imported only when serving

    config = load_config(args.config)
    _log_config_loaded(args.config, config)
    return asyncio.run(run(config))


def _configure_logging(args: argparse.Namespace) -> None:
    from authz.logs import configure_logging

    configure_logging(args.log_level, args.log_format, sys.stderr)


def _log_config_loaded(path: Path, config: Config) -> None:
    logging.getLogger("authz.config").info(
        "configuration loaded from %s (version %s, %d issuer(s))",
        path,
        config.version,
        len(config.issuers),
        extra={"config_file": str(path), "config_version": config.version},
    )


def _check_config(args: argparse.Namespace) -> int:
    config: Config = load_config(args.config)
    source = StaticKeySource.from_config(config)
    for issuer in config.issuers:
        keys = source.keys_for(issuer.issuer)
        assert keys is not None
        described = ", ".join(
            f"{key.kid or '(no kid)'} {key.kind} {'/'.join(sorted(key.algorithms))}"
            for key in keys.all()
        )
        print(f"issuer {issuer.issuer}: {described}")
    print(f"{args.config}: OK")
    return 0


def _keys_generate(args: argparse.Namespace) -> int:
    from authz.dev.keys import write_keypair

    private, public = write_keypair(args.out, args.alg, args.kid)
    print(f"private key: {private}")
    if public != private:
        print(f"public JWKS: {public}")
    return 0


def _token_mint(args: argparse.Namespace) -> int:
    from authz.dev.keys import load_private
    from authz.dev.tokens import claims_for, mint

    extra: dict[str, Any] = {}
    for item in args.claim:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            print(f"authz: --claim {item!r}: expected NAME=JSON", file=sys.stderr)
            return EXIT_CONFIG
        try:
            extra[name] = json.loads(raw)
        except json.JSONDecodeError:
            extra[name] = raw  # a bare word is a string claim
    audience: str | list[str] = args.aud[0] if len(args.aud) == 1 else args.aud
    claims = claims_for(
        args.sub,
        args.iss,
        audience,
        scopes=args.scope,
        ttl=args.ttl,
        not_before_in=args.nbf_in,
        **extra,
    )
    try:
        if args.alg.startswith("HS"):
            key: Any = args.key.read_bytes().rstrip(b"\r\n")
        else:
            key = load_private(args.key)
    except (OSError, ValueError) as exc:
        print(f"authz: {args.key}: cannot load the signing key: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(mint(key, args.alg, claims, args.kid))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
