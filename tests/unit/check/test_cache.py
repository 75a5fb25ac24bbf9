"""The verified-token cache: only while unexpired and verified by a key still current."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from authz.check.cache import CachedToken, VerifiedCache, digest
from authz.check.decision import Decider
from authz.check.request import RequestView
from authz.check.revocation import RevocationList
from authz.check.verify import Verifier, fingerprint
from authz.config.loader import parse_config
from authz.config.models import Config
from authz.dev.keys import PrivateKey, generate, public_jwk
from authz.dev.tokens import claims_for, mint
from authz.errors import SignatureInvalid, TokenExpired, UnknownKey
from authz.keys.sources import IssuerKeys, combine, keys_from_jwks
from tests.support.clock import FakeClock

ISS = "https://cache.test"
NOW = 1_800_000_000.0


class Keys:
    """A key source whose keys the test swaps, as a refresh would."""

    def __init__(self, *keys: tuple[PrivateKey, str]) -> None:
        self.current: IssuerKeys = IssuerKeys({}, ())
        self.publish(*keys)

    def publish(self, *keys: tuple[PrivateKey, str]) -> None:
        jwks = {"keys": [public_jwk(key, kid, "RS256") for key, kid in keys]}
        self.current = combine(keys_from_jwks(jwks, "test", frozenset({"RS256"})), "test")

    def keys_for(self, issuer: str) -> IssuerKeys | None:
        return self.current if issuer == ISS else None

    def ready(self) -> bool:
        return True


def _config(entries: int = 100, extra: str = "") -> Config:
    return parse_config(
        f"""
token_cache_entries: {entries}
issuers:
  - issuer: {ISS}
    audiences: [api]
    algorithms: [RS256]
    leeway_seconds: 10
    keys: [{{jwks: {{keys: []}}}}]
{extra}"""
    )


@pytest.fixture(scope="module")
def signer() -> PrivateKey:
    return generate("RS256")


def _token(key: PrivateKey, kid: str | None = "k1", **claims: Any) -> str:
    return mint(key, "RS256", claims_for("alice", ISS, "api", now=NOW, ttl=60, **claims), kid)


def test_a_repeated_token_is_served_from_the_cache(signer: PrivateKey) -> None:
    verifier = Verifier(_config(), Keys((signer, "k1")), FakeClock(NOW))
    token = _token(signer)
    first = verifier.verify(token)
    assert verifier.verify(token) is first  # the very same result: nothing re-parsed


def test_an_entry_ends_with_exp_plus_leeway(signer: PrivateKey) -> None:
    clock = FakeClock(NOW)
    verifier = Verifier(_config(), Keys((signer, "k1")), clock)
    token = _token(signer)
    verifier.verify(token)
    clock.value = NOW + 60 + 9.9  # still within the leeway
    assert verifier.verify(token).subject == "alice"
    clock.value = NOW + 60 + 10
    with pytest.raises(TokenExpired):
        verifier.verify(token)


def test_a_token_without_kid_is_served_from_the_cache_too(signer: PrivateKey) -> None:
    # The issuer's one key has a kid; the token names none: the key is the only
    # candidate, and the cache must recognise it as still current.
    keys = Keys((signer, "k1"))
    verifier = Verifier(_config(), keys, FakeClock(NOW))
    token = _token(signer, kid=None)
    first = verifier.verify(token)
    assert first.kid is None
    assert verifier.verify(token) is first
    keys.publish((signer, "k1"), (generate("RS256"), "k2"))  # now two candidates
    with pytest.raises(UnknownKey):
        verifier.verify(token)


def test_an_entry_ends_when_its_key_is_removed(signer: PrivateKey) -> None:
    keys = Keys((signer, "k1"))
    verifier = Verifier(_config(), keys, FakeClock(NOW))
    token = _token(signer)
    verifier.verify(token)
    keys.publish((generate("RS256"), "k2"))  # a refresh without k1
    with pytest.raises(UnknownKey):
        verifier.verify(token)


def test_an_entry_ends_when_its_kid_names_another_key(signer: PrivateKey) -> None:
    keys = Keys((signer, "k1"))
    verifier = Verifier(_config(), keys, FakeClock(NOW))
    token = _token(signer)
    verifier.verify(token)
    keys.publish((generate("RS256"), "k1"))  # same kid, a different key
    with pytest.raises(SignatureInvalid):
        verifier.verify(token)


def test_the_same_key_republished_keeps_working(signer: PrivateKey) -> None:
    keys = Keys((signer, "k1"))
    verifier = Verifier(_config(), keys, FakeClock(NOW))
    token = _token(signer)
    first = verifier.verify(token)
    keys.publish((signer, "k1"))  # a refresh: new objects for the same key
    again = verifier.verify(token)
    assert again is not first  # verified anew against the new key object
    assert again.subject == "alice"


def test_failures_are_not_cached(signer: PrivateKey) -> None:
    keys = Keys((generate("RS256"), "k0"))
    verifier = Verifier(_config(), keys, FakeClock(NOW))
    token = _token(signer)
    with pytest.raises(UnknownKey):
        verifier.verify(token)
    keys.publish((signer, "k1"))  # the key arrives: the same token now verifies
    assert verifier.verify(token).subject == "alice"


def test_the_cache_is_bounded_oldest_first() -> None:
    cache: VerifiedCache[str] = VerifiedCache(2)
    key = Keys().current  # any object will do as the key slot
    for name in ("a", "b", "c"):
        cache.put(digest(name), CachedToken(name, NOW, key))  # type: ignore[arg-type]
    assert len(cache) == 2
    assert cache.get(digest("a")) is None
    assert cache.get(digest("c")) is not None


def test_cache_off(signer: PrivateKey) -> None:
    verifier = Verifier(_config(entries=0), Keys((signer, "k1")), FakeClock(NOW))
    token = _token(signer)
    assert verifier.verify(token) is not verifier.verify(token)


def test_revocation_still_applies_to_a_cached_token(signer: PrivateKey, tmp_path: Path) -> None:
    revoked = tmp_path / "revoked.txt"
    revoked.write_text("")
    config = _config(extra=f"revocation: {{file: {revoked}}}\n")
    verifier = Verifier(config, Keys((signer, "k1")), FakeClock(NOW))
    revocations = RevocationList(revoked)
    decider = Decider(config, verifier, revocations)
    token = _token(signer, jti="t-7")
    request = RequestView(headers={"authorization": (f"Bearer {token}",)})
    assert decider.decide(request).allowed
    published = revoked.with_suffix(".new")  # replaced whole, as a deployment would
    published.write_text("jti:t-7\n")
    published.replace(revoked)
    assert not revocations.refresh(0)  # seen: taken once unchanged at the next poll
    assert revocations.refresh(0)
    decision = decider.decide(request)
    assert not decision.allowed
    assert decision.reason == "token_revoked"


def test_a_verified_token_carries_its_fingerprint_from_the_one_digest(signer: PrivateKey) -> None:
    # The cache key's digest gives the fingerprint too: one hash per Check.
    token = _token(signer)
    verified = Verifier(_config(), Keys((signer, "k1")), FakeClock(NOW)).verify(token)
    assert verified.fingerprint == fingerprint(token)
    assert verified.fingerprint == digest(token).hex()[:16]
