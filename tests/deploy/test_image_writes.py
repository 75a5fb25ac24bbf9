"""The image's default command writes no file: a read-only root filesystem is enough.

It runs here, without a container engine: the Dockerfile's CMD with the final
stage's environment, against this checkout's authz, under Python's audit hooks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from authz.dev.keys import write_keypair
from tests.deploy.test_image import default_command, final_env
from tests.support.repo import REPO_ROOT

# What the process writes: Python's audit hooks see every file it opens for
# writing and every file or directory it creates, renames or removes, from any
# library. It reports them on a pipe (its first argument: the fd), opened before
# the hook.
WRITE_WATCH = """
import os, sys
report = os.fdopen(int(sys.argv[1]), "w", buffering=1)
WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
CHANGES = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.symlink", "os.link",
           "os.truncate", "os.chmod", "os.chown", "tempfile.mkstemp", "tempfile.mkdtemp"}
def hook(event, args):
    if event == "open" and not isinstance(args[0], int) and (args[2] or 0) & WRITES:
        report.write(f"open {args[0]}\\n")
    elif event in CHANGES:
        report.write(f"{event} {args[0]}\\n")
sys.addaudithook(hook)
from authz.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_the_default_command_writes_no_file_at_start(tmp_path: Path) -> None:
    """A read-only root filesystem and no writable /tmp: the default command
    (with the image's environment) must start, serve and stop writing nothing."""
    _private, jwks = write_keypair(tmp_path / "keys", "RS256", "k1")
    config = tmp_path / "authz.yaml"
    config.write_text(
        "listen: 127.0.0.1:0\n"
        "issuers:\n"
        "  - issuer: https://idp.example\n"
        "    audiences: [api]\n"
        "    algorithms: [RS256]\n"
        f"    keys: [{{jwks_file: {jwks}}}]\n"
        "telemetry: {metrics: {listen: 127.0.0.1:0}}\n"
    )
    command = default_command()
    assert command[command.index("-c") + 1] == "/etc/authz/authz.yaml"
    command[command.index("-c") + 1] = str(config)
    env = {**os.environ, **{k: v for k, v in final_env().items() if k != "PATH"}}
    env.pop("TMPDIR", None)
    # It runs in tmp_path: this checkout's authz, not the one the venv installed.
    env["PYTHONPATH"] = str(REPO_ROOT)
    read_end, write_end = os.pipe()
    log = tmp_path / "authz.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-c", WRITE_WATCH, str(write_end), *command],
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env=env,
            pass_fds=(write_end,),
            cwd=tmp_path,
        )
    os.close(write_end)
    try:
        deadline = time.monotonic() + 60
        while "metrics on http" not in log.read_text(errors="replace"):
            assert process.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "authz did not start"
            time.sleep(0.05)  # poll interval
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    with os.fdopen(read_end) as report:
        writes = report.read().splitlines()
    assert writes == []
