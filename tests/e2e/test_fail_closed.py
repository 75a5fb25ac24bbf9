"""With authz down, Envoy answers 503: never an allow, never a policy 403."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.dev.stack import Stack
from tests.e2e.conftest import Keys

pytestmark = pytest.mark.e2e


def test_authz_down_fails_closed_with_503(keys: Keys, tmp_path: Path) -> None:
    with Stack(tmp_path, keys.config) as stack:
        headers = {"Authorization": f"Bearer {keys.token()}"}
        assert stack.get("/orders", headers).status == 200
        assert stack.authz.stop() == 0  # graceful shutdown exits 0
        reply = stack.get("/orders", headers)
        assert reply.status == 503
        assert "x-auth-subject" not in reply.body.decode()
        assert stack.get("/healthz").status == 200
