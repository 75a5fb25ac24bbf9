"""config: the dpop and mtls sections, issuers' token kinds, routes' sender_constraint."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.check.dpop import DpopVerifier
from authz.check.replay import MemoryReplayStore
from authz.config.loader import parse_config
from authz.config.models import Config
from authz.config.sender import (
    DEFAULT_DPOP_ALGORITHMS,
    DpopConfig,
    MemoryReplayConfig,
    RedisReplayConfig,
)
from authz.errors import ConfigError

# Line numbers below refer to these texts.
BASE = """\
issuers:
  - issuer: https://idp.example
    audiences: [api]
    algorithms: [RS256]
    keys:
      - pem_file: keys/idp.pem
"""  # 6 lines; what follows starts on line 7
DPOP_ISSUER = """\
issuers:
  - issuer: https://idp.example
    audiences: [api]
    algorithms: [RS256]
    keys:
      - pem_file: keys/idp.pem
    issues: [bearer, dpop]
  - issuer: https://legacy.example
    audiences: [api]
    algorithms: [RS256]
    keys:
      - pem_file: keys/legacy.pem
"""  # 12 lines


def _parse(text: str, base: str = BASE) -> Config:
    return parse_config(base + text, source="test.yaml", base_dir=Path("/etc/authz"))


def _error(text: str, base: str = BASE) -> str:
    with pytest.raises(ConfigError) as info:
        _parse(text, base)
    return str(info.value)


def _route(constraint: str, mode: str = "protected", extra: str = "") -> str:
    return f"""\
routes:
  - name: r
    mode: {mode}
    sender_constraint: {constraint}
{extra}"""


def test_without_the_sections_nothing_changes() -> None:
    config = _parse("routes:\n  - {name: r, mode: protected}\n")
    assert config.dpop is None
    assert config.mtls is None
    assert config.issuers[0].issues == ["bearer"]
    assert config.routes is not None
    assert config.routes[0].sender_constraint == "none"


def test_the_dpop_defaults() -> None:
    config = _parse("dpop: {}\n")
    dpop = config.dpop
    assert dpop is not None
    assert tuple(dpop.algorithms) == DEFAULT_DPOP_ALGORITHMS
    assert dpop.algorithms == ["ES256", "PS256", "RS256", "EdDSA", "ES384"]
    assert (dpop.iat_max_age_seconds, dpop.iat_max_future_seconds) == (60, 5)
    assert dpop.replay == MemoryReplayConfig(max_entries=100_000)
    assert dpop.nonce.required is False
    assert dpop.public_origin is None


def test_a_complete_dpop_section_with_redis() -> None:
    config = _parse(
        """\
dpop:
  algorithms: [ES256, EdDSA]
  iat_max_age_seconds: 30
  iat_max_future_seconds: 2
  max_proof_bytes: 4096
  public_origin: HTTPS://API.Example.com:443
  replay:
    store: redis
    url: rediss://redis.authz.svc:6379/2
    password_file: secrets/redis.password
    timeout_seconds: 0.05
    on_failure: fail_open
  nonce:
    required: true
    key_file: secrets/nonce.key
    step_seconds: 60
mtls:
  certificate_source: xfcc
"""
    )
    dpop = config.dpop
    assert dpop is not None
    assert dpop.public_origin == "https://api.example.com"
    replay = dpop.replay
    assert isinstance(replay, RedisReplayConfig)
    assert replay.password_file == Path("secrets/redis.password")
    assert (replay.timeout_seconds, replay.on_failure) == (0.05, "fail_open")
    assert dpop.nonce.key_file == Path("secrets/nonce.key")
    assert config.mtls is not None
    assert config.mtls.certificate_source == "xfcc"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dpop: {algorithms: [HS256]}\n", "test.yaml:7: dpop.algorithms[0]: Input should be"),
        ("dpop: {algorithms: [none]}\n", "test.yaml:7: dpop.algorithms[0]"),
        ("dpop: {algorithms: []}\n", "test.yaml:7: dpop.algorithms"),
        ("dpop: {algorithms: [ES256, ES256]}\n", "an algorithm is listed twice"),
        ("dpop: {iat_max_age_seconds: 0}\n", "dpop.iat_max_age_seconds"),
        ("dpop: {iat_max_future_seconds: 61}\n", "dpop.iat_max_future_seconds"),
        ("dpop: {replay: {store: memcached}}\n", "dpop.replay"),
        ("dpop: {replay: {store: memory, url: x}}\n", "dpop.replay.memory.url: unknown key"),
        ("dpop: {replay: {store: redis}}\n", "dpop.replay.redis.url"),
        ("dpop: {replay: {store: redis, url: 'http://r:1'}}\n", "expected a redis://"),
        ("dpop: {replay: {store: redis, url: 'redis://'}}\n", "give a host"),
        ("dpop: {replay: {store: redis, url: 'unix://'}}\n", "needs a socket path"),
        ("dpop: {replay: {store: redis, url: 'redis://r:1', timeout_seconds: 0}}\n", "timeout"),
        ("dpop: {nonce: {required: true}}\n", "required nonces need a key_file"),
        ("dpop: {nonce: {required: true, key_file: k, step_seconds: 5}}\n", "step_seconds"),
        ("dpop: {public_origin: 'https://api.example.com/v1'}\n", "without path"),
        ("dpop: {public_origin: 'ftp://api.example.com'}\n", "not http or https"),
        ("dpop: {algorithm: [ES256]}\n", "dpop.algorithm: unknown key"),
        ("mtls: {certificate_source: header}\n", "mtls.certificate_source"),
    ],
)
def test_dpop_and_mtls_errors(text: str, expected: str) -> None:
    assert expected in _error(text)


def test_a_password_in_the_redis_url_is_refused_without_echoing_it() -> None:
    message = _error("dpop: {replay: {store: redis, url: 'redis://:hunter2@r:6379'}}\n")
    assert "password_file" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("    issues: []\n", "test.yaml:7: issuers[0].issues"),
        ("    issues: [bearer, bearer]\n", "a token kind is listed twice"),
        ("    issues: [jwt]\n", "issuers[0].issues[0]"),
        ("    issues: [dpop]\n", "test.yaml:7: issuers[0].issues: dpop tokens need a top-level"),
        ("    issues: [mtls]\n", "issuers[0].issues: mtls tokens need a top-level mtls section"),
    ],
)
def test_issuer_token_kinds(text: str, expected: str) -> None:
    assert expected in _error(text)


def test_an_issuer_of_bound_tokens_only() -> None:
    config = _parse("    issues: [dpop, mtls]\ndpop: {}\nmtls: {}\n")
    assert config.issuers[0].issues == ["dpop", "mtls"]


def test_a_route_requiring_dpop_without_a_dpop_section() -> None:
    message = _error(_route("dpop"), DPOP_ISSUER)
    assert message.startswith("test.yaml:")
    assert "issuers[0].issues: dpop tokens need a top-level dpop section" in message
    message = _error(_route("dpop"))
    assert message == (
        "test.yaml:10: routes[0].sender_constraint: dpop needs a top-level dpop section"
    )


@pytest.mark.parametrize(
    ("constraint", "expected"),
    [
        ("mtls", "mtls needs a top-level mtls section"),
        ("any", "any needs a top-level dpop or mtls section"),
        ("optional", "optional needs a top-level dpop or mtls section"),
    ],
)
def test_route_constraints_need_their_sections(constraint: str, expected: str) -> None:
    assert f"test.yaml:10: routes[0].sender_constraint: {expected}" == _error(_route(constraint))


def test_a_public_route_has_no_sender_constraint() -> None:
    message = _error("dpop: {}\n" + _route("dpop", mode="public"))
    assert "test.yaml:9: routes[0]: sender_constraint dpop needs mode: protected or optional" in (
        message
    )
    # none is what a public route is.
    _parse(_route("none", mode="public"))


def test_a_dpop_route_needs_an_issuer_of_dpop_tokens() -> None:
    message = _error("dpop: {}\n" + _route("dpop"))
    assert message == (
        "test.yaml:11: routes[0].sender_constraint: no issuer this route accepts issues "
        "dpop tokens (issuers[].issues)"
    )
    # Restricted to an issuer of bearer tokens only, while another issues DPoP tokens.
    requirement = "    requirements: {issuers: [https://legacy.example]}\n"
    message = _error("dpop: {}\n" + _route("dpop", extra=requirement), DPOP_ISSUER)
    assert "test.yaml:17: routes[0].sender_constraint: no issuer this route accepts" in message


def test_consistent_sender_settings() -> None:
    routes = """\
routes:
  - {name: a, mode: protected, sender_constraint: dpop}
  - {name: b, mode: optional, sender_constraint: optional}
  - {name: c, mode: protected, sender_constraint: any,
     requirements: {issuers: [https://idp.example]}}
  - {name: d, mode: public}
"""
    config = _parse("dpop: {}\n" + routes, DPOP_ISSUER)
    assert config.routes is not None
    assert [route.sender_constraint for route in config.routes] == [
        "dpop",
        "optional",
        "any",
        "none",
    ]
    # optional and any are satisfied by either section.
    _parse("mtls: {}\n" + _route("optional"))
    _parse("    issues: [bearer, mtls]\nmtls: {}\n" + _route("any"))
    _parse("    issues: [mtls]\nmtls: {}\n" + _route("mtls"))


def test_a_verifier_from_the_section(tmp_path: Path) -> None:
    (tmp_path / "nonce.key").write_bytes(b"k" * 32)
    config = DpopConfig.model_validate(
        {
            "algorithms": ["EdDSA"],
            "nonce": {"required": True, "key_file": "nonce.key", "step_seconds": 30},
        }
    )
    verifier = DpopVerifier.from_config(config, MemoryReplayStore(10), base_dir=tmp_path)
    assert verifier.algorithms == ("EdDSA",)
    with pytest.raises(ConfigError, match="cannot read"):
        DpopVerifier.from_config(config, MemoryReplayStore(10), base_dir=tmp_path / "elsewhere")
