"""Stateless DPoP server nonces (RFC 9449 §9): an HMAC of the current time step.

A nonce is ``base64url(HMAC-SHA256(key, context || step))`` where ``step`` is
``floor(now / step_seconds)``. Nothing is stored: every replica that reads the
same key file issues and accepts the same nonces, so a client may be
challenged by one replica and answered by another. A nonce is accepted during
its own step and the next, so one issued just before a step ends still has a
full step to be used; replicas' clocks must agree to well within a step.

The key is secret (whoever has it can mint nonces for any time) and is read
once, from a file, never from the configuration text.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from pathlib import Path

from authz.check.jose import b64url_encode
from authz.errors import ConfigError

__all__ = ["MIN_KEY_BYTES", "NonceIssuer"]

MIN_KEY_BYTES = 32
# Separates these MACs from any other use a shared key might be put to.
_CONTEXT = b"authz dpop nonce v1\x00"
# base64url of a SHA-256 MAC: 43 characters, nothing else can be a nonce.
_NONCE_LENGTH = 43
_LAST_STEP = 2**64 - 1


class NonceIssuer:
    __slots__ = ("_key", "_step")

    def __init__(self, key: bytes, step_seconds: float) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"a nonce key needs at least {MIN_KEY_BYTES} bytes, not {len(key)}")
        if not step_seconds > 0 or not math.isfinite(step_seconds):
            raise ValueError("step_seconds must be a positive number")
        self._key = key
        self._step = step_seconds

    @classmethod
    def from_file(cls, path: Path, step_seconds: float) -> NonceIssuer:
        """The key is the file's bytes, less one trailing newline (``echo`` adds it)."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the DPoP nonce key: {exc.strerror}") from None
        key = data.removesuffix(b"\n").removesuffix(b"\r")
        try:
            return cls(key, step_seconds)
        except ValueError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    @property
    def step_seconds(self) -> float:
        return self._step

    def issue(self, now: float) -> str:
        """The nonce of the step ``now`` falls in."""
        return self._mac(self._step_of(now))

    def valid(self, nonce: object, now: float) -> bool:
        """Whether ``nonce`` is the current step's or the previous step's nonce."""
        if not isinstance(nonce, str) or len(nonce) != _NONCE_LENGTH or not nonce.isascii():
            return False
        step = self._step_of(now)
        presented = nonce.encode("ascii")
        current = hmac.compare_digest(presented, self._mac(step).encode("ascii"))
        previous = hmac.compare_digest(presented, self._mac(max(step - 1, 0)).encode("ascii"))
        # Both comparisons always run: which one matched takes no longer.
        return current | previous

    def is_current(self, nonce: str, now: float) -> bool:
        """Whether ``nonce`` is this step's (not only still accepted)."""
        return hmac.compare_digest(
            nonce.encode("ascii", "replace"), self.issue(now).encode("ascii")
        )

    def _step_of(self, now: float) -> int:
        if not math.isfinite(now):
            return 0
        return min(max(0, math.floor(now / self._step)), _LAST_STEP)

    def _mac(self, step: int) -> str:
        message = _CONTEXT + step.to_bytes(8, "big")
        return b64url_encode(hmac.new(self._key, message, hashlib.sha256).digest())
