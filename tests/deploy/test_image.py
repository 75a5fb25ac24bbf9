"""The container image: its build context, its Dockerfile, and (with an engine) the build.

Without a container engine (``docker info`` fails, as on machines with only
the docker client), the build itself is skipped with that reason. What runs
everywhere: the build context that .dockerignore admits is computed with
Docker's matching rules, the build stage's install step (pip building the
wheel, generated code included) runs on exactly that context, and the
Dockerfile's stages are checked for what the final image must (not) contain.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz import __version__
from tests.deploy.manifests import K8S, container, find, render
from tests.support.repo import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"


# --- .dockerignore, as Docker reads it ---------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax (Go filepath.Match plus "**") as a regex over a path."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


@functools.cache
def ignore_rules() -> tuple[tuple[bool, re.Pattern[str], str], ...]:
    """(is_exception, regex, literal prefix) per line of .dockerignore, in order."""
    rules = []
    for raw in (REPO_ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        assert "[" not in pattern, f"unsupported here: {line}"
        assert "\\" not in pattern, f"unsupported here: {line}"
        prefix = re.split(r"[*?]", pattern, maxsplit=1)[0]
        rules.append((exception, _pattern_regex(pattern), prefix))
    return tuple(rules)


def admitted(relative: str) -> bool:
    """Docker's rule: the last pattern that matches the path or a parent decides."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for exception, regex, _ in ignore_rules():
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not exception
    return not excluded


def could_readmit(directory: str) -> bool:
    return any(
        exception and (prefix.startswith(directory + "/") or prefix == directory)
        for exception, _, prefix in ignore_rules()
    )


def build_context(root: Path = REPO_ROOT) -> set[str]:
    """Every file `docker build` would send, as paths relative to ``root``."""
    files: set[str] = set()
    for current, directories, names in os.walk(root):
        base = Path(current).relative_to(root).as_posix()
        base = "" if base == "." else base + "/"
        # Like Docker, skip an excluded directory unless an exception may apply inside.
        directories[:] = [d for d in directories if admitted(base + d) or could_readmit(base + d)]
        files.update(base + name for name in names if admitted(base + name))
    return files


def test_the_matcher_follows_dockers_rules() -> None:
    assert _pattern_regex("*").fullmatch("setup.py")
    assert not _pattern_regex("*").fullmatch("authz/x.py")
    assert _pattern_regex("**/__pycache__").fullmatch("__pycache__")
    assert _pattern_regex("**/__pycache__").fullmatch("authz/dev/__pycache__")
    assert admitted("authz/server.py")
    assert admitted("authz/_proto/envoy/x_pb2.py")  # committed, not generated in the build
    assert not admitted("protos/compile_protos.py")
    assert not admitted("tests/deploy/test_image.py")


def test_the_context_is_exactly_what_the_build_copies() -> None:
    context = build_context()
    top = {path.split("/")[0] for path in context}
    assert top == {"pyproject.toml", "README.md", "LICENSE", "requirements.lock", "authz"}
    for path in context:
        assert "__pycache__" not in path, path
        assert not path.endswith(".pyc"), path
    # Every source file of the package and every .proto is in it.
    tracked = subprocess.run(
        ["git", "ls-files", "authz"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert tracked
    assert set(tracked) <= context
    copied = re.findall(r"^COPY (?!--from)(.+?) \S+$", DOCKERFILE.read_text(), re.M)
    sources = {source.rstrip("/") for line in copied for source in line.split()}
    assert sources == top


def test_the_build_step_works_on_exactly_that_context(tmp_path: Path) -> None:
    """The build stage's `pip install .`, as a wheel build on the context alone."""
    context = tmp_path / "context"
    for relative in build_context():
        target = context / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / relative, target)
    # No build isolation: the build requirements are in this venv, nothing is fetched.
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"),
            *("--no-build-isolation", "-w", str(tmp_path / "dist"), str(context)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("envoy_jwt_authz-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "authz/_proto/envoy/service/auth/v3/external_auth_pb2.py" in names
    assert "authz/probe.py" in names  # the sidecar's exec probe
    assert "authz/dev/upstream.py" in names  # the example services
    assert "authz/py.typed" in names
    assert f"envoy_jwt_authz-{__version__}.dist-info/licenses/LICENSE" in names


# --- the Dockerfile ------------------------------------------------------------------


def stages() -> list[list[str]]:
    """Instructions per stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result: list[list[str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("FROM "):
            result.append([])
        if result:
            result[-1].append(line)
    return result


def test_the_dockerfile_has_a_build_stage_and_a_slim_final_stage() -> None:
    text = DOCKERFILE.read_text()
    # The official image by default; a digest pin is a build argument away.
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert base
    assert base[1].startswith("python:")
    assert base[1].endswith("-slim")
    assert re.search(r"BASE_IMAGE=python:3\.12-slim@sha256:", text)
    build, final = stages()
    assert build[0] == "FROM ${BASE_IMAGE} AS build"
    assert final[0] == "FROM ${BASE_IMAGE}"  # the venv needs the same interpreter
    # Dependencies only as locked, hash-checked; then the project, resolving nothing.
    installs = " ".join(step for step in build if step.startswith("RUN"))
    assert "install --require-hashes --no-deps -r requirements.lock" in installs
    assert "install --no-deps ." in installs
    assert any("import authz._proto.envoy.service.auth.v3.external_auth_pb2" in s for s in build)

    # The final stage takes only the venv from the build; it installs nothing.
    copies = [step for step in final if step.startswith("COPY")]
    assert copies == ["COPY --from=build /opt/authz /opt/authz"]
    runs = " ".join(step for step in final if step.startswith("RUN"))
    assert "pip uninstall" in runs
    assert "install" not in runs.replace("uninstall", "")
    assert not re.search(r"apt-get|gcc|build-essential|grpcio-tools", runs)
    assert "USER 10001:10001" in final
    assert 'ENTRYPOINT ["authz"]' in final
    assert default_command() == ["serve", "-c", "/etc/authz/authz.yaml", "--workers", "1"]
    exposed = [step for step in final if step.startswith("EXPOSE")]
    deployment = find(render(K8S / "gateway"), "Deployment", "authz")
    ports = {p["name"]: p["containerPort"] for p in container(deployment, "authz")["ports"]}
    assert exposed == [f"EXPOSE {ports['grpc']} {ports['metrics']}"]
    env = final_env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert "TMPDIR" not in env  # nothing to write: see the test below


def default_command() -> list[str]:
    (cmd,) = [step for step in stages()[-1] if step.startswith("CMD ")]
    command: list[str] = json.loads(cmd.removeprefix("CMD "))
    return command


def final_env() -> dict[str, str]:
    """The final stage's ENV, as NAME=VALUE pairs (the form this Dockerfile uses)."""
    env: dict[str, str] = {}
    for step in stages()[-1]:
        if step.startswith("ENV "):
            for pair in step.removeprefix("ENV ").split():
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def test_the_image_says_what_it_was_built_from() -> None:
    final = stages()[-1]
    label_steps = " ".join(step for step in final if step.startswith("LABEL "))
    labels = dict(re.findall(r'(org\.opencontainers\.image\.\w+)="([^"]*)"', label_steps))
    # ARGs declared before FROM are not visible inside a stage: declared here,
    # after every other step (a new commit must not rebuild cached layers).
    arg_steps = [index for index, step in enumerate(final) if step.startswith("ARG ")]
    declared = {final[index].split()[1].split("=")[0] for index in arg_steps}
    assert all(step.startswith(("ARG ", "LABEL ")) for step in final[min(arg_steps) :])
    for name, arg in (("version", "VERSION"), ("revision", "REVISION"), ("source", "SOURCE")):
        assert labels[f"org.opencontainers.image.{name}"] == f"${{{arg}}}"
        assert arg in declared
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"


def test_make_image_builds_the_dockerfile() -> None:
    # As a user runs it: not inside this suite's own make (if any), no IMAGE override.
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "IMAGE"}
    }
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "image"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    command = result.stdout.split()
    assert command[:2] == ["docker", "build"]
    assert command[-3:] == ["-t", f"authz:{__version__}", "."]
    build_args = dict(
        command[i + 1].split("=", 1) for i, word in enumerate(command) if word == "--build-arg"
    )
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert build_args["VERSION"] == __version__
    assert build_args["REVISION"] in (head, f"{head}-dirty")
    assert set(build_args) == {"VERSION", "REVISION"}  # no SOURCE, no BASE_IMAGE unless given
    pinned = subprocess.run(
        ["make", "--no-print-directory", "-n", "image", "BASE_IMAGE=python:3.12-slim@sha256:0"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--build-arg BASE_IMAGE=python:3.12-slim@sha256:0 " in pinned


# --- the build itself, where a container engine exists ---------------------------------


def engine_missing() -> str | None:
    """Why no image can be built here, or None when `docker info` succeeds."""
    docker = shutil.which("docker")
    if docker is None:
        return "no docker client on PATH"
    try:
        info = subprocess.run(
            [docker, "info"], capture_output=True, text=True, timeout=30, check=False
        )
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    if info.returncode != 0:
        last = (info.stderr.strip().splitlines() or ["no output"])[-1]
        return f"no container engine: `docker info` failed ({last})"
    return None


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    reason = engine_missing()
    if reason is not None:
        pytest.skip(reason)
    tag = f"authz:test-{uuid.uuid4().hex[:12]}"
    build = subprocess.run(
        ["docker", "build", "-t", tag, str(REPO_ROOT)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    try:
        yield tag
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)


def docker_run(
    image: str, *args: str, entrypoint: str | None = None
) -> subprocess.CompletedProcess[str]:
    command = ["docker", "run", "--rm", "--read-only"]
    if entrypoint is not None:
        command += ["--entrypoint", entrypoint]
    return subprocess.run(
        [*command, image, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_image_runs_as_the_non_root_user(image: str) -> None:
    user = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Config.User}}", image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert user == "10001:10001"
    result = docker_run(image, "-c", "import os; print(os.getuid())", entrypoint="python")
    assert result.stdout.strip() == "10001", result.stderr


def test_image_entry_point_is_authz(image: str) -> None:
    result = docker_run(image, "--help")
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout
    assert "check-config" in result.stdout


def test_image_has_the_generated_code_and_no_build_tools(image: str) -> None:
    script = (
        "import importlib.util as u, shutil;"
        "import authz._proto.envoy.service.auth.v3.external_auth_pb2;"
        "import authz.probe, authz.dev.upstream;"
        "missing = [m for m in ('grpc_tools', 'pip') if u.find_spec(m)];"
        "tools = [t for t in ('gcc', 'cc', 'make', 'pip') if shutil.which(t)];"
        "assert not missing and not tools, (missing, tools); print('ok')"
    )
    result = docker_run(image, "-c", script, entrypoint="python")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "ok"
