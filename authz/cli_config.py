"""``authz config show``: the configuration as authz reads it, every default filled in.

What an operator needs when a setting "does not work": the value in effect,
not the one they think they wrote. The file is validated exactly as ``serve``
validates it and printed back as YAML in the file's own structure, with:

- every setting, the defaults included (``null`` where the default is "not
  set": no routes, no metrics endpoint, tracing from the environment);
- relative paths resolved against the file's directory, as serving reads them;
- alternatives that were not chosen left out: a key source shows the one
  source it has, a route the conditions it states;
- no secret: key and token files are named, never read; an inline JWKS keeps
  only its public members; a URL's ``user:password@`` is replaced.

The output is itself a valid configuration with the same meaning.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from authz.config.base import PathModel
from authz.config.loader import load_config
from authz.config.models import Config, KeySourceConfig, KubernetesSource
from authz.config.observability import AuditConfig
from authz.config.rules import (
    ClaimMatcherConfig,
    MatchConfig,
    RequirementConfig,
    RouteConfig,
    RouteIdentityConfig,
)

__all__ = ["add_config_commands", "effective_config"]

# Models whose unset (None) fields are alternatives or conditions not stated,
# rather than settings whose default is "off": printed without them.
_SPARSE: tuple[type[BaseModel], ...] = (
    KeySourceConfig,
    RouteConfig,
    MatchConfig,
    RequirementConfig,
    ClaimMatcherConfig,
    RouteIdentityConfig,
)
# Accepted so that old files load, but without effect: not part of what is in effect.
_IGNORED: frozenset[tuple[type[BaseModel], str]] = frozenset({(AuditConfig, "queue_size")})
# Public members of a JWK (RFC 7517, 7518, 8037); any other may be key material.
_PUBLIC_JWK = frozenset(
    {"kty", "use", "key_ops", "alg", "kid", "x5u", "x5c", "x5t", "x5t#S256", "crv", "x", "y"}
    | {"n", "e"}
)
_URLS: frozenset[tuple[type[BaseModel], str]] = frozenset(
    {
        (KeySourceConfig, "jwks_uri"),
        (KeySourceConfig, "discovery"),
        (KubernetesSource, "api_server"),
    }
)
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/?#@]*@")
REDACTED = "[redacted]"


def add_config_commands(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    config = commands.add_parser("config", help="the configuration in effect").add_subparsers(
        dest="config_command", required=True
    )
    show = config.add_parser(
        "show",
        parents=parents,
        help="print the validated configuration with every default filled in",
        description="Validate the file as serve does and print it back as YAML: every "
        "setting with its default, relative paths resolved, key files named but never read, "
        "an inline JWKS's private members and a URL's user:password@ replaced by [redacted]. "
        "Exit status: 0, or 2 when the file is not a valid configuration.",
    )
    show.add_argument("-c", "--config", required=True, type=Path, help="configuration file")
    show.set_defaults(handler=_show)


def _show(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    print(f"# {args.config} (version {config.version}): in effect, every default filled in")
    sys.stdout.write(
        yaml.safe_dump(effective_config(config), sort_keys=False, allow_unicode=True, width=100)
    )
    return 0


def effective_config(config: Config) -> dict[str, Any]:
    """``config`` as plain data for YAML: see the module's docstring for what changes."""
    return _model(config, config)


def _model(model: BaseModel, config: Config) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if field.exclude or (type(model), name) in _IGNORED:
            continue
        if value is None and isinstance(model, _SPARSE):
            continue
        if isinstance(model, PathModel) and name in model.PATH_KEYS and isinstance(value, Path):
            out[name] = str(config.resolve(value))
        elif isinstance(model, KeySourceConfig) and name == "jwks":
            out[name] = _public_jwks(value)
        elif (type(model), name) in _URLS and isinstance(value, str):
            out[name] = _USERINFO.sub(rf"\g<scheme>{REDACTED}@", value)
        else:
            out[name] = _value(value, config)
    return out


def _value(value: Any, config: Config) -> Any:
    if isinstance(value, BaseModel):
        return _model(value, config)
    if isinstance(value, list | tuple):
        return [_value(item, config) for item in value]
    if isinstance(value, dict):
        return {key: _value(item, config) for key, item in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def _public_jwks(jwks: Any) -> Any:
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        return REDACTED  # not a JWKS: nothing to show that is known to be public
    keys = [
        {k: (v if k in _PUBLIC_JWK else REDACTED) for k, v in jwk.items()}
        if isinstance(jwk, dict)
        else REDACTED
        for jwk in jwks["keys"]
    ]
    return {"keys": keys}
