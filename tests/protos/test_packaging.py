"""A plain `pip wheel .` compiles the protos into the wheel (setup.py's build hook)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from authz.dev.stack import REPO_ROOT


def test_wheel_contains_the_generated_code(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    shutil.copytree(REPO_ROOT / "protos", source / "protos")
    # A clean checkout: the package without any generated code.
    shutil.copytree(
        REPO_ROOT / "authz",
        source / "authz",
        ignore=shutil.ignore_patterns("_proto", "__pycache__"),
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(tmp_path),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = tmp_path.glob("authz-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "authz/_proto/envoy/service/auth/v3/external_auth_pb2.py" in names
    assert "authz/_proto/envoy/service/auth/v3/external_auth_pb2_grpc.py" in names
    assert "authz/_proto/envoy/config/core/v3/base_pb2.py" in names
    assert not any(name.startswith("envoy/") for name in names)
    # The audit record's schema ships with the code that writes the records.
    assert "authz/audit_record.schema.json" in names
