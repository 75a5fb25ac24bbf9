"""authz check-config reports the rules and loads the revocation list, as serving would."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.cli import main
from authz.dev.keys import write_keypair
from tests.support.repo import REPO_ROOT

CONFIG = """\
issuers:
  - issuer: https://idp.example
    audiences: [api]
    algorithms: [RS256]
    keys: [{jwks_file: keys/jwks.json}]
"""


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    write_keypair(tmp_path / "keys", "RS256", "k1")
    return tmp_path


def test_without_routes(directory: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (directory / "authz.yaml").write_text(CONFIG)
    assert main(["check-config", str(directory / "authz.yaml")]) == 0
    assert "routes: none (every request needs a valid token)" in capsys.readouterr().out


def test_with_routes_and_revocation(directory: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (directory / "revoked.txt").write_text("jti:a\nsub:b\n")
    (directory / "authz.yaml").write_text(
        CONFIG
        + "revocation: {file: revoked.txt}\n"
        + "routes:\n  - name: docs\n    mode: public\n  - name: api\n    mode: protected\n"
    )
    assert main(["check-config", str(directory / "authz.yaml")]) == 0
    out = capsys.readouterr().out
    assert "routes: docs (public), api (protected); anything else is denied" in out
    assert f"revocation: {directory / 'revoked.txt'}, 2 entries" in out


def test_a_broken_revocation_list_fails_the_check(
    directory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (directory / "revoked.txt").write_text("jti:a\nnonsense\n")
    (directory / "authz.yaml").write_text(CONFIG + "revocation: {file: revoked.txt}\n")
    assert main(["check-config", str(directory / "authz.yaml")]) == 2
    assert "revoked.txt:2: expected jti:VALUE or sub:VALUE" in capsys.readouterr().err


@pytest.mark.parametrize(
    "config", ["k8s/base/authz.yaml", "k8s/sidecar/authz.yaml"], ids=["base", "sidecar"]
)
def test_check_config_without_fetching_passes_on_the_shipped_configs_outside_a_pod(
    config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # What CI runs: no service-account CA here, and none is needed to validate.
    assert main(["check-config", "--no-fetch", str(REPO_ROOT / config)]) == 0
    out = capsys.readouterr().out
    assert "remote keys not fetched: --no-fetch" in out
    assert out.rstrip().endswith(": OK")
