"""The README's demo command shows what it promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_demo_shows_allowed_and_denied_requests(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "authz.dev.demo", "--once", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "x-auth-subject: alice" in out
    assert "the forged 'mallory' is absent" in out
    assert out.count("-> HTTP 401") == 5  # four bad tokens and the replayed DPoP proof
    assert out.count("-> HTTP 200") == 3  # alice, the health probe, alice's DPoP request
    assert out.count("-> HTTP 403") == 1
    # A DPoP request allowed, and its proof replayed: refused.
    dpop = out[out.index("8. alice's DPoP-bound token") :]
    assert dpop.splitlines()[1].strip() == "-> HTTP 200"
    replayed = out[out.index("9. the same proof again") :]
    assert replayed.splitlines()[1].strip() == "-> HTTP 401"
    assert "reason=dpop_replayed" in out
    assert 'error="insufficient_scope"' in out
    assert 'scope="orders:refund"' in out
    for reason in (
        "missing_token",
        "signature_invalid",
        "token_expired",
        "audience_mismatch",
        "insufficient_scope",
    ):
        assert f"reason={reason}" in out
    assert (tmp_path / "alice.token").read_text().count(".") == 2
    # authz's audit trail: one record per decision, with a fingerprint, never the token.
    assert "decision=allow reason=allowed sub=alice token_fp=" in out
    assert len(re.findall(r"token_fp=[0-9a-f]{16}\b", out)) == 7  # missing_token has none
    assert (tmp_path / "alice.token").read_text().strip() not in out
    # The first request's trace as a waterfall: Envoy's ingress, its ext_authz
    # call and authz's Check with its steps, one trace id.
    trace = out[out.index("The first request's trace") :].splitlines()
    assert re.match(r"\s+trace [0-9a-f]{32}  \(\d+\.\d+ ms end to end\)", trace[1])
    rows = trace[2:]
    assert re.match(r"\s+gateway\s+ingress\s+\|█+\| ", rows[0])
    assert "async envoy.service.auth.v3.Authorization.Check" in rows[1]
    assert re.match(r"\s+authz\s+envoy.service.auth.v3.Authorization/Check\s+\|[ █]+\|", rows[2])
    steps = [row.split("· ", 1)[1].split(" |")[0].strip() for row in rows if "· " in row]
    assert steps[0] == "extract ok"
    assert "verify ok" in steps
    assert "router upstream egress" in rows[-1]
