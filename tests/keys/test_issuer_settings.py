"""Per-issuer settings: many issuers, max token lifetime, required claims, http opt-in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from authz.check.verify import Verifier
from authz.config.loader import parse_config
from authz.dev.keys import PrivateKey, public_jwk
from authz.dev.tokens import claims_for, mint
from authz.errors import AudienceMismatch, ClaimInvalid, ConfigError, MissingClaim, UnknownIssuer
from authz.keys.store import KeyStore


def _issuers(count: int, jwks_file: Path, extra: str = "") -> str:
    entries = "".join(
        f"""
  - issuer: https://tenant-{n}.idp.test
    audiences: [api-{n}]
    algorithms: [RS256]
    keys: [{{jwks_file: {jwks_file}}}]{extra}"""
        for n in range(count)
    )
    return "issuers:" + entries + "\n"


@pytest.fixture
def jwks_file(tmp_path: Path, signing_keys: dict[str, PrivateKey]) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [public_jwk(signing_keys["k1"], "k1", "RS256")]}))
    return path


def test_150_issuers_each_with_its_own_audience(
    jwks_file: Path, signing_keys: dict[str, PrivateKey]
) -> None:
    config = parse_config(_issuers(150, jwks_file))
    verifier = Verifier(config, KeyStore(config))
    key = signing_keys["k1"]
    token = mint(key, "RS256", claims_for("bob", "https://tenant-137.idp.test", "api-137"), "k1")
    assert verifier.verify(token).issuer == "https://tenant-137.idp.test"
    # Another tenant's audience is not this tenant's.
    foreign = mint(key, "RS256", claims_for("bob", "https://tenant-1.idp.test", "api-137"), "k1")
    with pytest.raises(AudienceMismatch):
        verifier.verify(foreign)
    stranger = mint(key, "RS256", claims_for("bob", "https://tenant-150.idp.test", "api"), "k1")
    with pytest.raises(UnknownIssuer):
        verifier.verify(stranger)


def test_max_lifetime_requires_iat_and_bounds_exp_minus_iat(
    jwks_file: Path, signing_keys: dict[str, PrivateKey]
) -> None:
    config = parse_config(_issuers(1, jwks_file, "\n    max_lifetime_seconds: 3600"))
    verifier = Verifier(config, KeyStore(config))
    key, issuer = signing_keys["k1"], "https://tenant-0.idp.test"
    assert verifier.verify(mint(key, "RS256", claims_for("a", issuer, "api-0", ttl=3600), "k1"))
    with pytest.raises(ClaimInvalid, match="lifetime"):
        verifier.verify(mint(key, "RS256", claims_for("a", issuer, "api-0", ttl=3601), "k1"))
    no_iat = claims_for("a", issuer, "api-0", ttl=60)
    del no_iat["iat"]
    with pytest.raises(MissingClaim, match="iat"):
        verifier.verify(mint(key, "RS256", no_iat, "k1"))


def test_required_claims(jwks_file: Path, signing_keys: dict[str, PrivateKey]) -> None:
    config = parse_config(_issuers(1, jwks_file, "\n    required_claims: [sub, jti]"))
    verifier = Verifier(config, KeyStore(config))
    key, issuer = signing_keys["k1"], "https://tenant-0.idp.test"
    with pytest.raises(MissingClaim, match="'jti'"):
        verifier.verify(mint(key, "RS256", claims_for("a", issuer, "api-0"), "k1"))
    token = mint(key, "RS256", claims_for("a", issuer, "api-0", jti="t-1"), "k1")
    assert verifier.verify(token).claims["jti"] == "t-1"


@pytest.mark.parametrize(
    ("keys", "fetch", "message"),
    [
        ("{jwks_uri: 'http://idp.test/jwks'}", "", "http:// needs fetch.allow_http: true"),
        ("{jwks_uri: 'ftp://idp.test/jwks'}", "", "expected an https:// URL"),
        ("{discovery: true}", "", "http:// needs fetch.allow_http"),  # issuer is http://
        (
            "{jwks_uri: 'https://a/jwks'}, {discovery: true}",
            "allow_http: true",
            "at most one of jwks_uri, discovery, kubernetes",
        ),
        (
            "{jwks_uri: 'https://a/jwks'}",
            "refresh_seconds: 10, refresh_min_seconds: 60",
            "refresh_min_seconds <= refresh_seconds",
        ),
    ],
)
def test_remote_source_mistakes_are_named(keys: str, fetch: str, message: str) -> None:
    text = f"""
issuers:
  - issuer: http://idp.test
    audiences: [api]
    algorithms: [RS256]
    keys: [{keys}]
    fetch: {{{fetch}}}
"""
    with pytest.raises(ConfigError, match=message) as error:
        parse_config(text, source="t.yaml")
    assert str(error.value).startswith("t.yaml:")


def test_http_is_allowed_when_asked_for() -> None:
    config = parse_config(
        """
issuers:
  - issuer: http://idp.test
    audiences: [api]
    algorithms: [RS256]
    keys: [{discovery: true}]
    fetch: {allow_http: true}
"""
    )
    assert config.issuers[0].urls() == ["http://idp.test/.well-known/openid-configuration"]
