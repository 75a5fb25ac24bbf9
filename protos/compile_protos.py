"""Compile the project's .proto files into the private package ``authz._proto``.

Run: ``python protos/compile_protos.py [OUT_DIR]`` (default: the repository
root, so the code lands in ``authz/_proto``, where it is committed: ``make
proto`` after changing a .proto, and tests/protos checks the committed code is
what this produces.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = "authz/_proto"


def _include_dir(module_name: str, marker: str) -> str:
    """Directory on sys.path that holds ``marker`` (a .proto shipped by a wheel)."""
    for entry in sys.path:
        if (Path(entry) / marker).is_file():
            return entry
    raise SystemExit(f"compile_protos: cannot find {marker}; is {module_name} installed?")


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / PACKAGE_DIR).rglob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Generate *_pb2.py, *_pb2.pyi and *_pb2_grpc.py under ``out_dir``; return them."""
    import grpc_tools
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = str(Path(grpc_tools.__file__).parent / "_proto")
    googleapis = _include_dir("googleapis-common-protos", "google/rpc/status.proto")
    files = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{googleapis}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protos/compile_protos.py: protoc failed (see the message above)")
    package_root = out_dir / PACKAGE_DIR
    # protoc writes modules only; make every generated directory a regular package.
    for directory in [package_root, *(p for p in package_root.rglob("*") if p.is_dir())]:
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text("")
    return sorted(p for p in package_root.rglob("*") if p.is_file())


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_ROOT.parent
    for path in generate(target):
        print(path.relative_to(target))
