"""Many Checks on gRPC's threads at once, while everything they read changes.

The real server decides Checks from eight client threads while another thread
reloads the configuration (two versions whose rules disagree), rotates the
issuer's keys (a second key appears and goes) and edits the revocation list.
Whatever interleaving the machine produces, these must hold:

- every answer is the decision of one runtime: the route that answered names
  the configuration version, and the audit record of that Check carries the
  same version (a Check is recorded under the configuration that decided it);
- every answer is one that some state of keys and revocation list gives;
- exactly one audit record per Check: none lost, none twice;
- no Check fails inside authz (no internal_error, no gRPC error).
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from authz.config.loader import config_version
from authz.dev.keys import public_jwk
from authz.runtime import ConfigFile
from authz.server import AuthzServer
from tests.service.svc_helpers import (
    KID,
    WAIT,
    Client,
    LoopThread,
    Signing,
    check_request,
    config_data,
    metadata,
)

ROTATED_KID = "svc-key-2"
CHECKS_PER_THREAD = 150
THREADS = 8

# The two configurations: the same path, rules that disagree about a reader.
ROUTES = {
    "v-open": {"name": "orders-open", "requirements": {"scopes": ["orders:read"]}},
    "v-strict": {"name": "orders-strict", "requirements": {"scopes": ["orders:admin"]}},
}


def _publish(path: Path, text: str) -> None:
    """Replace ``path`` whole (a new inode): the watch takes it at the second poll
    that finds it unchanged (interval 0: no settle time)."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _config(directory: Path, jwks_file: Path, version: str) -> dict[str, Any]:
    route = {"match": {"prefix": "/orders"}, "mode": "protected", **ROUTES[version]}
    data = config_data(
        jwks_file,
        routes=[route],
        revocation={"file": str(directory / "revoked.txt")},
        watch_interval_seconds=0,  # polled by the mutator below, as fast as it can
        audit={"stdout": False, "file": str(directory / "audit.jsonl")},
        serving={"threads": 4, "max_pending_checks": 10_000},
    )
    data["issuers"][0]["fetch"] = {"file_poll_seconds": 0.05}
    return data


def test_concurrent_checks_see_one_runtime_while_config_keys_and_revocations_change(
    tmp_path: Path, signing: Signing
) -> None:
    jwks_file = tmp_path / "jwks.json"
    one_key = {"keys": [public_jwk(signing.key, KID, "RS256")]}
    two_keys = {"keys": [*one_key["keys"], public_jwk(signing.other_key, ROTATED_KID, "RS256")]}
    _publish(jwks_file, json.dumps(one_key))
    _publish(tmp_path / "revoked.txt", "")
    config_path = tmp_path / "authz.yaml"
    configs = {
        version: yaml.safe_dump(_config(tmp_path, jwks_file, version), sort_keys=False)
        for version in ROUTES
    }
    # The route that answers names the configuration, and so its version.
    versions = {ROUTES[version]["name"]: config_version(text) for version, text in configs.items()}
    _publish(config_path, configs["v-open"])
    config_file = ConfigFile(config_path)
    loop = LoopThread()

    async def create() -> AuthzServer:
        return AuthzServer(config_file.config, config_file=config_file)

    server = loop.run(create())
    loop.run(server.start())
    client = Client.connect(server.address)
    tokens = {
        "reader": signing.token("reader", scopes="orders:read"),
        "revocable": signing.token("mallory", scopes="orders:read"),
        "rotated": signing.token(
            "rotated", scopes="orders:read", key=signing.other_key, kid=ROTATED_KID
        ),
    }
    stop = threading.Event()
    changes = Counter[str]()

    def mutate() -> None:
        turn = 0
        while not stop.is_set():
            turn += 1
            version = "v-strict" if turn % 2 else "v-open"
            _publish(config_path, configs[version])
            _publish(jwks_file, json.dumps(two_keys if turn % 3 else one_key))
            _publish(tmp_path / "revoked.txt", "sub:mallory\n" if turn % 2 else "")
            loop.run(server.poll_files())  # sees the new files
            loop.run(server.poll_files())  # finds them unchanged: takes them
            changes["reloads"] = server.reload_status.reloads

    def checks(thread: int) -> list[tuple[str, str, dict[str, Any]]]:
        answers = []
        for n in range(CHECKS_PER_THREAD):
            kind = ("reader", "revocable", "rotated")[(thread + n) % 3]
            request_id = f"t{thread}-{n}"
            request = check_request(
                {"authorization": f"Bearer {tokens[kind]}", "x-request-id": request_id}
            )
            answer = client.check(request, timeout=WAIT)
            answers.append((request_id, kind, metadata(answer)))
        return answers

    mutator = threading.Thread(target=mutate, name="mutator")
    mutator.start()
    try:
        with ThreadPoolExecutor(THREADS) as pool:
            results = [a for part in pool.map(checks, range(THREADS)) for a in part]
    finally:
        stop.set()
        mutator.join(WAIT)
        loop.run(server.stop(0))
        client.close()
        loop.close()

    assert changes["reloads"] >= 2, "the configuration never changed under the Checks"
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    by_id = Counter(record["request_id"] for record in records)
    assert len(records) == len(results) == THREADS * CHECKS_PER_THREAD
    assert set(by_id) == {request_id for request_id, _, _ in results}
    assert max(by_id.values()) == 1
    records_by_id = {record["request_id"]: record for record in records}
    seen = Counter[tuple[str, str, str]]()
    for request_id, kind, answer in results:
        route, reason = answer["route"], answer["reason"]
        seen[(kind, route, reason)] += 1
        # The route names the configuration that decided; the record agrees.
        assert records_by_id[request_id]["config_version"] == versions[route], request_id
        assert records_by_id[request_id]["reason"] == reason
        strict = route == "orders-strict"
        possible = {"insufficient_scope"} if strict else {"allowed"}
        if kind == "revocable":
            possible.add("token_revoked")
        if kind == "rotated":
            possible.add("unknown_key")
        assert reason in possible, (request_id, kind, route, reason)
    # Both runtimes answered some Checks: the interleaving was real.
    assert {route for _, route, _ in seen} == {"orders-open", "orders-strict"}
