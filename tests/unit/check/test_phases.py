"""phases: each phase a function of what it reads, noting its lines through its scope."""

from __future__ import annotations

import pytest

from authz.check.phases import verification
from authz.check.run import Memo, Phase, Run, Step
from authz.check.verify import VerifiedToken
from authz.errors import TokenExpired, UnknownKey

ISSUER = "https://idp.example"
TOKEN = VerifiedToken(issuer=ISSUER, subject="alice", claims={}, kid="k2", algorithm="RS256")


class Verifier:
    """Knows key k2 only after a refetch; counts its calls."""

    def __init__(self, *, expired: bool = False) -> None:
        self.calls = 0
        self.refetched = False
        self.expired = expired

    def verify(self, token: str) -> VerifiedToken:
        self.calls += 1
        if self.expired:
            raise TokenExpired("token has expired")
        if not self.refetched:
            error = UnknownKey("no key k2")
            error.issuer = ISSUER
            raise error
        return TOKEN

    def refetch(self, issuer: str, budget: float) -> bool:
        assert (issuer, budget) == (ISSUER, 0.2)
        self.refetched = True
        return True


def test_an_unknown_key_is_refetched_inside_verification_then_verified() -> None:
    verifier, trace = Verifier(), list[Step]()
    run = Run(trace)
    with run.phase(Phase.TOKEN) as scope:
        found = verification(verifier, verifier.refetch, "t", memo=Memo(), scope=scope, budget=0.2)
    assert found is TOKEN
    assert verifier.calls == 2
    assert trace == [Step(Phase.TOKEN, "ok", f"verified: issuer {ISSUER}")]


def test_verification_runs_once_per_check_whichever_routes_ask() -> None:
    verifier = Verifier(expired=True)
    memo = Memo()
    for _ in range(3):  # a shadow route, then the routes after it
        run = Run(None)
        with pytest.raises(TokenExpired), run.phase(Phase.TOKEN) as scope:
            verification(verifier, None, "t", memo=memo, scope=scope, budget=0.2)
    assert verifier.calls == 1


def test_without_a_refetch_an_unknown_key_is_the_deny_noted_under_token() -> None:
    verifier, trace = Verifier(), list[Step]()
    run = Run(trace)
    with pytest.raises(UnknownKey), run.phase(Phase.TOKEN) as scope:
        verification(verifier, None, "t", memo=Memo(), scope=scope, budget=0.2)
    assert trace == [Step(Phase.TOKEN, "fail", "unknown_key: no key k2")]
