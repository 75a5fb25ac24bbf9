"""The container image: its build context, its Dockerfile, the build, and the image running.

Without an engine nothing is built: the build context that .dockerignore
admits is computed with Docker's matching rules, the build stage's install
step (pip building the wheel, generated code included) runs on exactly that
context, and the Dockerfile's stages are checked for what the final image must
(not) contain. Then, on the engine `make test` starts, the real Dockerfile is
built (on a base made from Debian's packages, without network: see
image_base.py) and run as users run it: `docker run --read-only` with the
default command and a mounted configuration, healthy by its own probe,
answering Checks on a published port, and draining on `docker stop`. Without
an engine those tests fail, with the reason.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.rpc import code_pb2

from authz import __version__
from authz.dev.keys import PrivateKey, load_private, write_keypair
from authz.dev.tokens import claims_for, mint
from tests.deploy.image_base import (
    base_image,
    debian_mirror,
    offline_base,
    remove_image,
)
from tests.deploy.manifests import K8S, container, find, render
from tests.service.svc_helpers import check_request, deny_headers, ok_headers
from tests.support.forge import tamper_signature
from tests.support.harness import WAIT, Client
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


# --- the build itself, on this machine's container engine ------------------------------
#
# No skip: `make test` starts Docker's engine (`make engine`), so where it is
# missing the tests fail and say why. The build runs the real Dockerfile with
# the classic builder, without any network, on a base made from Debian's
# packages (tests/deploy/image_base.py): no image registry is involved.


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


def dockerd_log_tail(lines: int = 30) -> str:
    """The end of the log of the dockerd that `make engine` started, if there is one."""
    path = Path(os.environ.get("DOCKERD_LOG", "/tmp/authz-dockerd.log"))
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no dockerd log at {path})"
    return f"the end of {path}:\n" + "\n".join(text.splitlines()[-lines:])


def classic_build(*args: str) -> subprocess.CompletedProcess[str]:
    # The classic builder: this engine has no BuildKit client (buildx) beside it.
    return subprocess.run(
        ["docker", "build", *args],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )


def git_revision() -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    reason = engine_missing()
    if reason is not None:
        pytest.fail(f"{reason}; `make engine` installs and starts one\n{dockerd_log_tail()}")
    offline = offline_base(base_image(), tmp_path_factory.mktemp("image"))
    tag = f"authz:test-{uuid.uuid4().hex[:12]}"
    try:
        # No cache: every run installs for real, and its images are its own to remove.
        build = classic_build(
            *("--no-cache", "--force-rm", "--network", "none"),
            *("--build-arg", f"BASE_IMAGE={offline}"),
            *("--build-arg", f"VERSION={__version__}"),
            *("--build-arg", f"REVISION={git_revision()}"),
            *("-t", tag, str(REPO_ROOT)),
        )
    finally:
        # Untagged; its layers go with the last image built on them.
        remove_image(offline)
    stage = build_stage_image(build.stdout)
    try:
        assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
        yield tag
    finally:
        remove_image(tag)
        if stage is not None:
            remove_image(stage)


def build_stage_image(output: str) -> str | None:
    """The build stage's result in the classic builder's output: the image before the next FROM."""
    last = None
    stages = 0
    for line in output.splitlines():
        if re.match(r"Step \d+/\d+ : FROM ", line):
            stages += 1
            if stages == 2:
                return last
        elif step := re.fullmatch(r" ---> ([0-9a-f]{12})", line):
            last = step[1]
    return None


def test_the_dockerfile_names_no_frontend_image() -> None:
    """A `# syntax=` line makes BuildKit pull that frontend from a registry first;
    the engine's own Dockerfile frontend reads this file, so a build works offline."""
    lines = DOCKERFILE.read_text().splitlines()
    directives = [line for line in lines if re.match(r"#\s*syntax\s*=", line, re.I)]
    assert directives == []


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


def test_image_labels_name_its_version_and_commit(image: str) -> None:
    labels = json.loads(
        subprocess.run(
            ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", image],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.revision"] == git_revision()
    assert labels["org.opencontainers.image.title"] == "authz"


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


# --- the image as users run it --------------------------------------------------------

ISSUER = "https://idp.image-test.example"
AUDIENCE = "api"
KID = "image-key"
GRPC_PORT = 9001
STOP_TIMEOUT = 30  # docker stop's grace before SIGKILL (the drain takes at most 10 s)


def docker(*args: str, timeout: float = WAIT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def container_state(name: str) -> dict[str, Any]:
    inspect = docker("inspect", "--format", "{{json .State}}", name)
    assert inspect.returncode == 0, inspect.stderr
    state: dict[str, Any] = json.loads(inspect.stdout)
    return state


def logs(name: str) -> str:
    result = docker("logs", name)
    return result.stdout + result.stderr


def log_messages(name: str) -> list[str]:
    """The messages of authz's JSON log lines (stderr; audit records are on stdout)."""
    lines = docker("logs", name).stderr.splitlines()
    return [json.loads(line).get("msg", "") for line in lines if line.startswith("{")]


@dataclass
class Running:
    name: str
    key: PrivateKey

    def token(self, subject: str) -> str:
        return mint(self.key, "RS256", claims_for(subject, ISSUER, AUDIENCE), KID)


@pytest.fixture
def running(image: str, tmp_path: Path) -> Iterator[Running]:
    """The image's default command, as `docker run --read-only` with a mounted configuration."""
    private, jwks = write_keypair(tmp_path / "keys", "RS256", KID)
    config = tmp_path / "authz.yaml"
    config.write_text(
        f"listen: 0.0.0.0:{GRPC_PORT}\n"
        "issuers:\n"
        f"  - issuer: {ISSUER}\n"
        f"    audiences: [{AUDIENCE}]\n"
        "    algorithms: [RS256]\n"
        "    keys: [{jwks_file: /etc/authz/jwks.json}]\n"
    )
    # Read as user 10001 inside; only the public keys and the configuration go in.
    config.chmod(0o644)
    jwks.chmod(0o644)
    name = f"authz-test-{uuid.uuid4().hex[:12]}"
    run = docker(
        *("run", "--detach", "--name", name, "--read-only"),
        # The bridge network: the gRPC port published on a free loopback port.
        *("--publish", f"127.0.0.1::{GRPC_PORT}"),
        *("--volume", f"{config}:/etc/authz/authz.yaml:ro"),
        *("--volume", f"{jwks}:/etc/authz/jwks.json:ro"),
        image,
    )
    try:
        assert run.returncode == 0, run.stderr
        yield Running(name=name, key=load_private(private))
    finally:
        docker("rm", "--force", "--volumes", name)


def published(name: str) -> str:
    result = docker("port", name, f"{GRPC_PORT}/tcp")
    assert result.returncode == 0, result.stderr
    # One line per address family; the test asked for IPv4 loopback only.
    (address,) = result.stdout.split()
    assert address.startswith("127.0.0.1:"), address
    return address


def wait_healthy(name: str) -> None:
    """The image's own exec probe (as the sidecar's readiness probe runs it), polled."""
    deadline = time.monotonic() + WAIT
    while True:
        probe = docker("exec", name, "python", "-m", "authz.probe", f"127.0.0.1:{GRPC_PORT}")
        if probe.returncode == 0:
            assert "SERVING" in probe.stdout
            return
        state = container_state(name)
        assert state["Running"], f"authz exited ({state['ExitCode']}):\n{logs(name)[-3000:]}"
        assert time.monotonic() < deadline, f"never healthy: {probe.stderr}\n{logs(name)[-3000:]}"
        time.sleep(0.1)  # poll interval


def test_the_image_serves_read_only_and_drains_on_stop(running: Running) -> None:
    wait_healthy(running.name)
    # The gateway's liveness probe, verbatim, as the kubelet runs it in this image.
    deployment = find(render(K8S / "gateway"), "Deployment", "authz")
    liveness = container(deployment, "authz")["livenessProbe"]["exec"]["command"]
    alive = docker("exec", running.name, *liveness)
    assert alive.returncode == 0, alive.stdout + alive.stderr
    client = Client.connect(published(running.name))
    try:
        allowed = client.check(
            check_request({"authorization": f"Bearer {running.token('alice')}"}), timeout=WAIT
        )
        forged = tamper_signature(running.token("alice"))
        denied = client.check(check_request({"authorization": f"Bearer {forged}"}), timeout=WAIT)
    finally:
        client.close()
    assert allowed.status.code == code_pb2.OK
    assert ok_headers(allowed)["x-auth-subject"] == "alice"
    assert denied.status.code == code_pb2.UNAUTHENTICATED
    assert denied.denied_response.status.code == 401
    assert 'error="invalid_token"' in deny_headers(denied)["www-authenticate"]

    stop = docker("stop", "--time", str(STOP_TIMEOUT), running.name, timeout=STOP_TIMEOUT + WAIT)
    assert stop.returncode == 0, stop.stderr
    state = container_state(running.name)
    # 0: authz drained and exited on SIGTERM; docker's SIGKILL after the timeout would be 137.
    assert state["ExitCode"] == 0, logs(running.name)[-3000:]
    assert not state["OOMKilled"]
    messages = log_messages(running.name)
    drain = [i for i, m in enumerate(messages) if m.startswith("shutting down: NOT_SERVING")]
    assert drain, messages
    assert "stopped" in messages[drain[0] :], messages


# --- the stand-in base's recipe -------------------------------------------------------


def test_the_base_comes_from_the_debian_mirror_apt_uses(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    assert debian_mirror(tmp_path) == "http://deb.debian.org/debian"  # nothing configured
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n"
        "URIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\n"
        "Components: main\n"
        "\n"
        "Types: deb-src\n"
        "URIs: http://sources.example/debian\n"
        "Suites: bookworm\n"
        "\n"
        "Types: deb\n"
        "# a comment between fields\n"
        "URIs: http://mirror.example/debian/\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
    )
    assert debian_mirror(tmp_path) == "http://mirror.example/debian"
    # The classic one-line file is read first, options in brackets and all.
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb [signed-by=/usr/share/keyrings/k.gpg] http://one-line.example/debian bookworm main\n"
    )
    assert debian_mirror(tmp_path) == "http://one-line.example/debian"
    (tmp_path / "sources.list").write_text("deb http://elsewhere.example/ubuntu noble main\n")
    assert debian_mirror(tmp_path) == "http://mirror.example/debian"
