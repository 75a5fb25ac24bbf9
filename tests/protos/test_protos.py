"""Our protos: generated code is current, and every declared field matches upstream Envoy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FileDescriptor

from authz._proto.envoy.config.core.v3 import address_pb2, base_pb2
from authz._proto.envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from authz._proto.envoy.type.v3 import http_status_pb2
from tests.support.repo import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "protos"))
from compile_protos import generate

OURS: list[FileDescriptor] = [
    base_pb2.DESCRIPTOR,
    address_pb2.DESCRIPTOR,
    http_status_pb2.DESCRIPTOR,
    attribute_context_pb2.DESCRIPTOR,
    external_auth_pb2.DESCRIPTOR,
]

# Run in a child process: upstream's xds-protos registers the same full names,
# and one process cannot hold both sets of descriptors.
UPSTREAM_DUMP = """
import json, sys
from google.protobuf import symbol_database
import envoy.service.auth.v3.external_auth_pb2  # registers everything it needs
pool = symbol_database.Default().pool
out = {}
for name in json.loads(sys.stdin.read()):
    try:
        message = pool.FindMessageTypeByName(name)
    except KeyError:
        enum = pool.FindEnumTypeByName(name)
        out[name] = {"enum": {v.name: v.number for v in enum.values}}
        continue
    out[name] = {
        "fields": {
            f.name: [f.number, f.type, f.message_type.full_name if f.message_type else None,
                     f.enum_type.full_name if f.enum_type else None,
                     f.containing_oneof.name if f.containing_oneof else None,
                     f.is_repeated if hasattr(f, "is_repeated") else f.label == 3]
            for f in message.fields
        }
    }
print(json.dumps(out))
"""


def _walk(descriptor: Descriptor) -> list[Descriptor]:
    nested = [d for child in descriptor.nested_types for d in _walk(child)]
    return [descriptor, *nested]


def _declared() -> tuple[dict[str, Descriptor], dict[str, EnumDescriptor]]:
    messages: dict[str, Descriptor] = {}
    enums: dict[str, EnumDescriptor] = {}
    for file in OURS:
        for top in file.message_types_by_name.values():
            for message in _walk(top):
                if message.GetOptions().map_entry:
                    continue
                messages[message.full_name] = message
                enums.update({e.full_name: e for e in message.enum_types})
        enums.update({e.full_name: e for e in file.enum_types_by_name.values()})
    return messages, enums


def test_generated_code_is_current(tmp_path: Path) -> None:
    generated = generate(tmp_path)
    assert generated
    for fresh in generated:
        relative = fresh.relative_to(tmp_path)
        current = REPO_ROOT / relative
        assert current.exists(), f"{relative} is missing: run `make proto`"
        assert current.read_bytes() == fresh.read_bytes(), f"{relative} is stale: run `make proto`"


def test_every_declared_field_matches_upstream() -> None:
    messages, enums = _declared()
    assert "envoy.service.auth.v3.CheckRequest" in messages
    # make setup installs xds-protos apart from site-packages (it would shadow
    # opentelemetry-proto's modules); only this child process sees it.
    upstream_protos = Path(sys.prefix) / "xds-protos"
    assert (upstream_protos / "envoy" / "service" / "auth").is_dir(), (
        f"{upstream_protos}: xds-protos is missing; run `make setup`"
    )
    result = subprocess.run(
        [sys.executable, "-c", UPSTREAM_DUMP],
        input=json.dumps([*messages, *enums]),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "PYTHONPATH": str(upstream_protos)},
    )
    upstream = json.loads(result.stdout)
    checked = 0
    for name, message in messages.items():
        theirs = upstream[name]["fields"]
        for field in message.fields:
            assert field.name in theirs, f"{name}.{field.name} does not exist upstream"
            ours = [
                field.number,
                field.type,
                field.message_type.full_name if field.message_type else None,
                field.enum_type.full_name if field.enum_type else None,
                field.containing_oneof.name if field.containing_oneof else None,
                field.is_repeated,
            ]
            assert ours == theirs[field.name], (
                f"{name}.{field.name}: {ours} != {theirs[field.name]}"
            )
            checked += 1
    for name, enum in enums.items():
        theirs_values = upstream[name]["enum"]
        for value in enum.values:
            assert theirs_values.get(value.name) == value.number, f"{name}.{value.name}"
            checked += 1
    assert checked > 60


def test_service_path_is_envoys() -> None:
    service = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"]
    assert service.full_name == "envoy.service.auth.v3.Authorization"
    assert service.methods_by_name["Check"].input_type.full_name == (
        "envoy.service.auth.v3.CheckRequest"
    )


def test_google_rpc_status_is_the_shared_one() -> None:
    from google.rpc import status_pb2

    status_field = external_auth_pb2.CheckResponse.DESCRIPTOR.fields_by_name["status"]
    assert status_field.message_type is status_pb2.Status.DESCRIPTOR
