"""The Envoy configurations the benchmark compares, all derived from envoy/gateway.yaml.

Every variant keeps the gateway's listener, HTTP connection manager and JSON
access log (what users run), and differs only in its HTTP filters:

- ``none``:       no auth filter;
- ``jwt_authn``:  Envoy's in-process JWT filter with the same key, issuer and
                  audience as authz, and the same identity headers;
- ``ext_authz``:  the gateway's ext_authz filter unchanged (timeout, failure mode,
                  every header sent as raw headers), plus ``emit_filter_state_stats``
                  so the access log records Envoy's own measure of each Check
                  (``authz_latency_us``).

Every variant answers "/" with a ``direct_response`` 200, so no upstream is measured.
The access log goes to its own file (one JSON object per line) for the harness to read.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authz.dev.stack import ENVOY_GATEWAY, render_envoy_config

__all__ = ["EXT_AUTHZ_FILTER", "JwtSettings", "envoy_config"]

EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
JWT_AUTHN_FILTER = "envoy.filters.http.jwt_authn"
# Envoy's own measure of the Check call, in microseconds (needs emit_filter_state_stats).
LATENCY_FIELD = "%FILTER_STATE(envoy.filters.http.ext_authz:FIELD:latency_us)%"
JWT_AUTHN_TYPE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
_UNUSED = ("127.0.0.1", 9)  # the discard port: a cluster address no request reaches


@dataclass(frozen=True)
class JwtSettings:
    """What both verifiers are configured with: one issuer, its audiences, its JWKS."""

    issuer: str
    audiences: list[str]
    jwks: dict[str, Any]
    leeway_seconds: int
    identity: dict[str, str]  # header -> claim


def envoy_config(
    kind: str,
    access_log: Path,
    *,
    authz: tuple[str, int] | None = None,
    jwt: JwtSettings | None = None,
    template: Path = ENVOY_GATEWAY,
) -> dict[str, Any]:
    """The gateway rewritten for one variant: ``none``, ``jwt_authn`` or ``ext_authz``."""
    config = render_envoy_config(template, authz or _UNUSED, _UNUSED)
    manager = _connection_manager(config)
    filters: list[dict[str, Any]] = manager["http_filters"]
    ext_authz = next(item for item in filters if item["name"] == EXT_AUTHZ_FILTER)
    clusters: list[dict[str, Any]] = config["static_resources"]["clusters"]
    config["static_resources"]["clusters"] = [
        cluster for cluster in clusters if kind == "ext_authz" and cluster["name"] == "authz"
    ]

    if kind == "none":
        filters.remove(ext_authz)
    elif kind == "jwt_authn":
        if jwt is None:
            raise ValueError("the jwt_authn variant needs JwtSettings")
        filters[filters.index(ext_authz)] = _jwt_authn(jwt)
    elif kind == "ext_authz":
        if authz is None:
            raise ValueError("the ext_authz variant needs the authz address")
        ext_authz["typed_config"]["emit_filter_state_stats"] = True
    else:
        raise ValueError(f"unknown Envoy variant {kind!r}")

    manager["route_config"]["virtual_hosts"][0]["routes"] = [
        {
            "match": {"prefix": "/"},
            "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}},
        }
    ]
    manager["access_log"] = [_file_access_log(manager["access_log"], access_log)]
    return config


def _connection_manager(config: dict[str, Any]) -> dict[str, Any]:
    listener = config["static_resources"]["listeners"][0]
    manager: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return manager


def _file_access_log(current: list[dict[str, Any]], path: Path) -> dict[str, Any]:
    """The gateway's JSON access log format, written to ``path``, plus the Check latency."""
    json_format = copy.deepcopy(current[0]["typed_config"]["log_format"]["json_format"])
    json_format["authz_latency_us"] = LATENCY_FIELD
    return {
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(path),
            "log_format": {"json_format": json_format},
        },
    }


def _jwt_authn(jwt: JwtSettings) -> dict[str, Any]:
    provider = {
        "issuer": jwt.issuer,
        "audiences": jwt.audiences,
        "local_jwks": {"inline_string": json.dumps(jwt.jwks)},
        "clock_skew_seconds": jwt.leeway_seconds,
        "claim_to_headers": [
            {"header_name": header, "claim_name": claim} for header, claim in jwt.identity.items()
        ],
    }
    return {
        "name": JWT_AUTHN_FILTER,
        "typed_config": {
            "@type": JWT_AUTHN_TYPE,
            "providers": {"bench": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
        },
    }
