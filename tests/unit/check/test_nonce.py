"""nonce.py: stateless server nonces, shared by replicas through one key file."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.check.nonce import NonceIssuer
from authz.errors import ConfigError

KEY = bytes(range(32))
STEP = 60
NOW = 1_800_000_010.0  # 10 s into a step (1_800_000_000 is a multiple of 60)


def test_a_nonce_is_valid_for_its_step_and_the_next() -> None:
    issuer = NonceIssuer(KEY, STEP)
    nonce = issuer.issue(NOW)
    assert len(nonce) == 43
    assert issuer.issue(NOW + 49.9) == nonce  # same step
    assert issuer.valid(nonce, NOW)
    assert issuer.valid(nonce, NOW + 49.9)
    assert issuer.is_current(nonce, NOW + 49.9)
    assert issuer.valid(nonce, NOW + 50)  # next step: still accepted
    assert not issuer.is_current(nonce, NOW + 50)
    assert issuer.valid(nonce, NOW + 109.9)
    assert not issuer.valid(nonce, NOW + 110)  # two steps on
    assert not issuer.valid(nonce, NOW - 10.1)  # a nonce from the future is not one


def test_replicas_with_one_key_agree_and_other_keys_do_not() -> None:
    one, two = NonceIssuer(KEY, STEP), NonceIssuer(KEY, STEP)
    other = NonceIssuer(bytes(reversed(KEY)), STEP)
    assert two.valid(one.issue(NOW), NOW)
    assert not other.valid(one.issue(NOW), NOW)
    assert one.issue(NOW) != other.issue(NOW)


@pytest.mark.parametrize("nonce", ["", "x" * 43, "x" * 44, 5, None, b"x", "é" * 43])
def test_what_is_not_a_nonce(nonce: object) -> None:
    assert not NonceIssuer(KEY, STEP).valid(nonce, NOW)


def test_a_tampered_nonce_is_not_valid() -> None:
    issuer = NonceIssuer(KEY, STEP)
    nonce = issuer.issue(NOW)
    flipped = nonce[:-2] + ("A" if nonce[-2] != "A" else "B") + nonce[-1]
    assert not issuer.valid(flipped, NOW)


def test_clock_extremes_do_not_raise() -> None:
    issuer = NonceIssuer(KEY, STEP)
    for now in (0.0, -5.0, 1e300, float("inf"), float("nan")):
        assert issuer.valid(issuer.issue(now), now)


def test_weak_keys_and_steps_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        NonceIssuer(b"k" * 31, STEP)
    for step in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="step"):
            NonceIssuer(KEY, step)


def test_the_key_file(tmp_path: Path) -> None:
    path = tmp_path / "nonce.key"
    path.write_bytes(KEY + b"\n")
    assert NonceIssuer.from_file(path, STEP).issue(NOW) == NonceIssuer(KEY, STEP).issue(NOW)
    path.write_bytes(b"short\n")
    with pytest.raises(ConfigError, match=r"nonce\.key: a nonce key needs at least 32 bytes"):
        NonceIssuer.from_file(path, STEP)
    with pytest.raises(ConfigError, match="cannot read"):
        NonceIssuer.from_file(tmp_path / "missing", STEP)
