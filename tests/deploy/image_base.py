"""A base image for the image tests, made from Debian's packages: no image registry needed.

The Dockerfile's default base is the official ``python:3.12-slim``, which
comes from a registry. The tests build the real Dockerfile on a stand-in
instead (``--build-arg BASE_IMAGE=``): Debian bookworm's own Python, bootstrapped
with ``debootstrap --variant=minbase`` from the Debian mirror this machine's apt
uses, and imported with ``docker import``. It is made like the official image
where the Dockerfile relies on it: ``python`` and ``pip`` on PATH, ``venv``,
``groupadd``/``useradd``, and a pip that ``pip uninstall pip`` can remove (so
pip is installed from Debian's own pip wheel into /usr/local, as the official
image has it, not as the ``python3-pip`` package, whose files pip cannot
uninstall), and a Python that is not marked externally managed.

Bootstrapping takes a minute or two, so the result is kept under a tag named
after this file's content: a later run, or the one ``make test`` starts in
the background while the venv is set up and lint and type checks run, finds
it and reuses it; a change to this recipe makes a new tag. A lock file
serializes builders.

``docker build`` then runs without any network (``--network none``): the
wheels of ``requirements.lock`` (for the stand-in's Python and platform,
checked against the lock's hashes by the host's pip, and again by the build's
``--require-hashes``) and the build backend's are downloaded on the host into
a layer on top of the stand-in, with a pip.conf that makes that directory
pip's only index. Both stages of the Dockerfile start from that layer, so the
image under test carries it too, unused: its pip is gone.

``python3 -m tests.deploy.image_base`` (standard library only) builds (or finds) the stand-in and
prints its tag.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.repo import REPO_ROOT

__all__ = ["base_image", "debian_mirror", "offline_base", "remove_image"]

SUITE = "bookworm"
# python3-venv brings Debian's pip and setuptools wheels (python3-pip-whl),
# from which pip is installed below; minbase already has passwd (useradd).
PACKAGES = ("python3", "python3-venv", "python-is-python3")
REPOSITORY = "authz-test-base"
FALLBACK_MIRROR = "http://deb.debian.org/debian"
LOCK_FILE = Path(tempfile.gettempdir()) / "authz-test-base.lock"
# What the official image sets and a `docker import` would not.
IMAGE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
)
# Debian's caches and package lists: nothing in the image needs them.
PRUNED = ("var/cache/apt/archives", "var/lib/apt/lists")
BUILD_TIMEOUT = 900.0


def base_tag() -> str:
    """The stand-in's tag: the recipe's hash, so that a changed recipe builds anew."""
    recipe = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    return f"{REPOSITORY}:{SUITE}-{recipe}"


def debian_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian archive this machine's apt reads (its main suite), or deb.debian.org."""
    files = [sources / "sources.list"] if (sources / "sources.list").is_file() else []
    directory = sources / "sources.list.d"
    if directory.is_dir():
        files += sorted(p for p in directory.iterdir() if p.suffix in {".list", ".sources"})
    for path in files:
        text = path.read_text(errors="replace")
        parse = _deb822_entries if path.suffix == ".sources" else _one_line_entries
        for uri, suites in parse(text):
            # The release itself, not -security or -updates, which live elsewhere.
            release = any(suite and "-" not in suite and "/" not in suite for suite in suites)
            if release and re.search(r"/debian/?$", uri):
                return uri.rstrip("/")
    return FALLBACK_MIRROR


def _deb822_entries(text: str) -> Iterator[tuple[str, list[str]]]:
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            yield uri, fields.get("suites", "").split()


def _one_line_entries(text: str) -> Iterator[tuple[str, list[str]]]:
    for raw in text.splitlines():
        # Options in brackets (deb [signed-by=...] URI SUITE ...) are not words here.
        words = re.sub(r"\[[^]]*\]", " ", raw.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb":
            yield words[1], [words[2]]


def image_exists(tag: str) -> bool:
    inspect = subprocess.run(
        ["docker", "image", "inspect", tag], capture_output=True, timeout=60, check=False
    )
    return inspect.returncode == 0


def remove_image(tag: str) -> None:
    subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=120, check=False)


@contextmanager
def _exclusive(timeout: float = BUILD_TIMEOUT + 60) -> Iterator[None]:
    """One builder at a time on this machine (the tests, a background run, another checkout).

    The holder's own steps are bounded, so the wait is too: past ``timeout``
    something is wrong with the holder, and waiting longer would hang the suite.
    """
    deadline = time.monotonic() + timeout
    with LOCK_FILE.open("a") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    message = f"another base build held {LOCK_FILE} for {timeout:.0f} s"
                    raise RuntimeError(message) from None
                time.sleep(0.5)  # poll interval
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(command: list[str], what: str, timeout: float = BUILD_TIMEOUT) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{what} failed ({result.returncode}): {' '.join(command)}\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result.stdout


def base_image() -> str:
    """The stand-in base's tag, built now unless an image with that tag exists."""
    tag = base_tag()
    with _exclusive():
        if not image_exists(tag):
            _bootstrap(tag)
    return tag


def _bootstrap(tag: str) -> None:
    if shutil.which("debootstrap") is None:
        raise RuntimeError("no debootstrap on PATH (`make engine` installs it)")
    if os.geteuid() != 0:
        raise RuntimeError("debootstrap needs root")
    # Not /tmp: a root filesystem needs device nodes and exec, which a tmpfs may refuse.
    root = Path(tempfile.mkdtemp(prefix="authz-base-", dir="/var/tmp"))
    try:
        _run(
            [
                *("debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}"),
                *(SUITE, str(root), debian_mirror()),
            ],
            "debootstrap",
        )
        # The official image's Python is not the distribution's: pip may change it.
        for marker in root.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        (pip_wheel,) = root.glob("usr/share/python-wheels/pip-*.whl")
        inside = f"/{pip_wheel.relative_to(root)}"
        # pip runs from its own wheel to install that wheel, into /usr/local.
        _run(
            [
                *("chroot", str(root), "python3", f"{inside}/pip", "install"),
                *("--quiet", "--no-index", "--no-deps", "--no-cache-dir", inside),
            ],
            "installing pip",
        )
        for pruned in PRUNED:
            for entry in (root / pruned).glob("*"):
                if entry.is_file():
                    entry.unlink()
        changes = [word for change in IMAGE_CHANGES for word in ("--change", change)]
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "-C", str(root), "-c", "."], stdout=subprocess.PIPE
        )
        assert tar.stdout is not None
        try:
            imported = subprocess.run(
                ["docker", "import", *changes, "-", tag],
                stdin=tar.stdout,
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT,
                check=False,
            )
        finally:
            tar.stdout.close()
            tar.wait(timeout=BUILD_TIMEOUT)
        if imported.returncode != 0 or tar.returncode != 0:
            raise RuntimeError(f"docker import failed: {imported.stderr[-3000:]}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _target(base: str) -> tuple[str, list[str]]:
    """The stand-in's Python version ("3.11") and the platform tags its pip accepts."""
    script = (
        "import sys; from pip._vendor.packaging import tags;"
        "print('%d.%d' % sys.version_info[:2]);"
        "print(' '.join(dict.fromkeys(t.platform for t in tags.sys_tags())))"
    )
    out = _run(
        ["docker", "run", "--rm", "--network", "none", base, "python", "-c", script],
        "asking the base for its wheel tags",
        timeout=120,
    )
    version, platforms = out.splitlines()
    return version, platforms.split()


def _download_wheels(base: str, directory: Path) -> None:
    version, platforms = _target(base)
    target = ["--python-version", version, "--implementation", "cp", "--only-binary=:all:"]
    for platform in platforms:
        target += ["--platform", platform]
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(directory)]
    _run(
        [*pip, *target, "--require-hashes", "-r", str(REPO_ROOT / "requirements.lock")],
        "downloading the locked wheels",
    )
    # `pip install .` builds the wheel in an isolated environment with these.
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    backend: list[str] = pyproject["build-system"]["requires"]
    _run([*pip, *target, *backend], "downloading the build backend")


def offline_base(base: str, workdir: Path) -> str:
    """``base`` plus a local wheelhouse as pip's only index; a new tag (remove it after use)."""
    context = workdir / "wheelhouse-context"
    wheels = context / "wheelhouse"
    wheels.mkdir(parents=True)
    _download_wheels(base, wheels)
    (context / "pip.conf").write_text("[global]\nno-index = true\nfind-links = /opt/wheelhouse\n")
    dockerfile = f"FROM {base}\nCOPY wheelhouse/ /opt/wheelhouse/\nCOPY pip.conf /etc/pip.conf\n"
    tag = f"{REPOSITORY}:offline-{uuid.uuid4().hex[:12]}"
    build = subprocess.run(
        ["docker", "build", "--network", "none", "-q", "-t", tag, "-f", "-", str(context)],
        input=dockerfile,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    if build.returncode != 0:
        raise RuntimeError(f"building {tag} failed: {build.stderr[-3000:]}")
    return tag


def main() -> int:
    started = time.monotonic()
    tag = base_image()
    print(f"{tag} ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
