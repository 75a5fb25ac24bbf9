"""The audit record of a Check is written before its answer leaves the process.

A real ``authz serve`` is killed with SIGKILL right after its answers arrive:
every answered Check must have its record, in the file and on stdout. And a
sink that fails (``/dev/full``) is counted and answered as decided, or, with
``audit.on_sink_failure: deny``, answered 503.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from authz.dev.stack import AuthzProcess
from tests.service.svc_helpers import (
    WAIT,
    Client,
    ConfigFactory,
    ServerFactory,
    Signing,
    body,
    check_request,
    config_data,
    metadata,
    write_config,
)

CHECKS = 200


def _request_ids(trail: Path) -> list[str]:
    ids = []
    for line in trail.read_text().splitlines():
        record: dict[str, Any] = json.loads(line)  # a torn line would fail here
        if record["type"] == "decision":
            ids.append(record["request_id"])
    return ids


def test_sigkill_right_after_the_answers_loses_no_record(tmp_path: Path, signing: Signing) -> None:
    audit_file = tmp_path / "audit.jsonl"
    config = write_config(
        tmp_path / "authz.yaml",
        config_data(signing.jwks_file, audit={"stdout": True, "file": str(audit_file)}),
    )
    authz = AuthzProcess(config, tmp_path / "authz.log").start()
    try:
        client = Client.connect(authz.address)
        token = signing.token()
        # Many Checks in flight at once, as under load; each id is answered once.
        calls = [
            client.check.future(
                check_request({"authorization": f"Bearer {token}", "x-request-id": f"r-{index}"}),
                timeout=WAIT,
            )
            for index in range(CHECKS)
        ]
        answered = [f"r-{index}" for index, call in enumerate(calls) if call.result()]
    finally:
        authz.kill()  # SIGKILL: no shutdown, no flush, no chance to catch up
    client.close()
    assert len(answered) == CHECKS
    for trail in (audit_file, authz.stdout):
        assert sorted(_request_ids(trail)) == sorted(answered), trail


@pytest.mark.parametrize(
    ("policy", "answered"),
    [("count", (200, "allowed")), ("deny", (503, "audit_unavailable"))],
)
def test_a_sink_that_fails_is_answered_per_on_sink_failure(
    start_server: ServerFactory,
    make_config: ConfigFactory,
    signing: Signing,
    policy: str,
    answered: tuple[int, str],
) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full, a file every write to fails with ENOSPC")
    config = make_config(audit={"stdout": False, "file": "/dev/full", "on_sink_failure": policy})
    running = start_server(config)
    reply = running.client.check(
        check_request({"authorization": f"Bearer {signing.token()}"}), timeout=WAIT
    )
    status, reason = answered
    assert metadata(reply)["reason"] == reason
    if status == 200:
        assert reply.status.code == 0
    else:
        assert reply.denied_response.status.code == status
        assert body(reply) == {
            "error": "unavailable",
            "error_description": "Authorization is temporarily unavailable",
        }
