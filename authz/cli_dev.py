"""``authz keys`` and ``authz token``: development keys and tokens (never for production)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.exceptions import PyJWTError

from authz.cli_common import EXIT_CONFIG
from authz.config.models import ALGORITHMS

__all__ = ["add_dev_commands", "algorithm_for"]

# The JWS algorithm each curve signs with (RFC 7518 3.4): one per curve.
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


def add_dev_commands(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="development keys").add_subparsers(
        dest="keys_command", required=True
    )
    generate = keys.add_parser(
        "generate", help="write a private key and its public JWKS", parents=parents
    )
    generate.add_argument("--alg", default="RS256", choices=ALGORITHMS)
    generate.add_argument("--kid", required=True, help="key id published in the JWKS")
    generate.add_argument("--out", required=True, type=Path, help="output directory")
    generate.set_defaults(handler=_keys_generate)

    token = commands.add_parser("token", help="development tokens").add_subparsers(
        dest="token_command", required=True
    )
    mint = token.add_parser("mint", help="sign a token and print it", parents=parents)
    mint.add_argument("--key", required=True, type=Path, help="private.pem or secret.key")
    mint.add_argument(
        "--alg",
        choices=ALGORITHMS,
        help="default: the key's own (RSA RS256, EC P-256/384/521 ES256/384/512, "
        "Ed25519 EdDSA, a secret file HS256)",
    )
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


def algorithm_for(key: object) -> str:
    """The algorithm a private key signs with when none is named; ValueError if it has none."""
    if isinstance(key, bytes):
        # A secret file: HS256, the one every JWT library accepts; a longer
        # hash is a choice to name (--alg HS512).
        return "HS256"
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algorithm = _EC_ALGORITHMS.get(key.curve.name)
        if algorithm is None:
            raise ValueError(f"no JWS algorithm signs with curve {key.curve.name}")
        return algorithm
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    raise ValueError(f"no JWS algorithm for a {type(key).__name__}")


def _keys_generate(args: argparse.Namespace) -> int:
    from authz.dev.keys import write_keypair

    try:
        private, public = write_keypair(args.out, args.alg, args.kid)
    except OSError as exc:
        print(f"authz: --out {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"private key: {private}")
    if public != private:
        print(f"public JWKS: {public}")
    return 0


def _token_mint(args: argparse.Namespace) -> int:
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
        key = _signing_key(args.key, args.alg)
        algorithm = args.alg or algorithm_for(key)
    except (OSError, ValueError) as exc:
        print(f"authz: {args.key}: cannot load the signing key: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        token = mint(key, algorithm, claims, args.kid)
    except (PyJWTError, TypeError, ValueError) as exc:
        # e.g. an EC key with --alg RS256: PyJWT says which in its message.
        print(f"authz: {args.key} cannot sign {algorithm}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(token)
    return 0


def _signing_key(path: Path, algorithm: str | None) -> Any:
    """The key in ``path``: a secret's bytes for HS* (or, without --alg, a file that
    is not PEM: what `authz keys generate --alg HS256` writes), else the private key."""
    from authz.dev.keys import load_private

    data = path.read_bytes()
    secret = algorithm.startswith("HS") if algorithm else not data.lstrip().startswith(b"-----")
    if secret:
        return data.rstrip(b"\r\n")
    return load_private(path)
