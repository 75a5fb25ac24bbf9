"""runtime: building a decider from a config, and noticing a changed config file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from authz.check.request import RequestView
from authz.config.models import Config
from authz.errors import ConfigError
from authz.keys.sources import IssuerKeys
from authz.runtime import ConfigFile, build_runtime
from authz.watch import WatchedFile, file_signature
from tests.support.clock import FakeClock

CONFIG = """\
realm: {realm}
issuers:
  - issuer: https://idp.example
    audiences: [api]
    algorithms: [RS256]
    keys: [{{pem_file: idp.pem}}]
"""


@pytest.fixture
def directory(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Path:
    (tmp_path / "idp.pem").write_bytes(
        rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return tmp_path


# The poll interval in the tests that move a clock: how long a file written
# at its path must stand still before it is taken.
SETTLE = 2.0
ROUTES = "routes:\n  - name: docs\n    mode: public\n"


def _publish(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _poll_twice(config_file: ConfigFile) -> Config | None:
    """Two polls with nothing written between them, and no settle time (as with
    ``watch_interval_seconds: 0``, polled by hand): a change made at the path is
    seen by the first and, unchanged, taken by the second."""
    assert config_file.poll(0) is None
    return config_file.poll(0)


def _after_write(clock: FakeClock, path: Path, seconds: float) -> None:
    """Set the clock ``seconds`` after the file's last write."""
    clock.value = path.stat().st_mtime + seconds


def _configmap(directory: Path, name: str, versions: dict[str, str]) -> None:
    """A ConfigMap volume's layout: ``name -> ..data/name``, ``..data -> ..vN``."""
    for version, text in versions.items():
        (directory / version).mkdir()
        (directory / version / name).write_text(text)
        # Relative key paths resolve in the published snapshot's own directory.
        (directory / version / "idp.pem").write_bytes((directory / "idp.pem").read_bytes())
    (directory / "..data").symlink_to(next(iter(versions)))
    (directory / name).symlink_to(f"..data/{name}")


def _swap(directory: Path, version: str) -> None:
    """What kubelet does: a new ``..data`` link renamed over the old one."""
    (directory / "..data_tmp").symlink_to(version)
    os.replace(directory / "..data_tmp", directory / "..data")


def test_build_runtime_wires_the_configuration(directory: Path) -> None:
    (directory / "revoked.txt").write_text("jti:x\n")
    path = directory / "authz.yaml"
    path.write_text(
        CONFIG.format(realm="r1")
        + "revocation: {file: revoked.txt}\nroutes:\n  - name: all\n    mode: public\n"
    )
    runtime = build_runtime(ConfigFile(path).config)
    assert runtime.config.realm == "r1"
    assert runtime.keys.ready()
    assert runtime.revocations is not None
    assert runtime.revocations.entries.jti == {"x"}
    decision = runtime.decider.decide(RequestView(method="GET", path="/x"))
    assert (decision.allowed, decision.route) == (True, "all")


def test_build_runtime_fails_on_unusable_keys_or_revocation_file(directory: Path) -> None:
    path = directory / "authz.yaml"
    path.write_text(CONFIG.format(realm="r").replace("idp.pem", "absent.pem"))
    with pytest.raises(ConfigError, match=r"absent\.pem"):
        build_runtime(ConfigFile(path).config)
    path.write_text(CONFIG.format(realm="r") + "revocation: {file: absent.txt}\n")
    with pytest.raises(ConfigError, match=r"absent\.txt"):
        build_runtime(ConfigFile(path).config)


def test_a_reload_naming_the_same_revocation_file_keeps_its_list(directory: Path) -> None:
    # Built afresh, the list would be read at once, whole or not; the running
    # one waits until a change has stood still.
    (directory / "revoked.txt").write_text("jti:x\n")
    (directory / "other.txt").write_text("jti:y\n")
    path = directory / "authz.yaml"
    path.write_text(CONFIG.format(realm="r1") + "revocation: {file: revoked.txt}\n")
    running = build_runtime(ConfigFile(path).config).revocations
    assert running is not None
    (directory / "revoked.txt").write_text("jti:")  # being rewritten in place
    path.write_text(CONFIG.format(realm="r2") + "revocation: {file: revoked.txt}\n")
    kept = build_runtime(ConfigFile(path).config, revocations=running).revocations
    assert kept is running
    assert kept.entries.jti == {"x"}
    path.write_text(CONFIG.format(realm="r2") + "revocation: {file: other.txt}\n")
    other = build_runtime(ConfigFile(path).config, revocations=running).revocations
    assert other is not None
    assert other is not running
    assert other.entries.jti == {"y"}
    path.write_text(CONFIG.format(realm="r2"))
    assert build_runtime(ConfigFile(path).config, revocations=running).revocations is None


def test_injected_key_source_is_used(directory: Path) -> None:
    class NoKeys:
        def keys_for(self, issuer: str) -> IssuerKeys | None:
            return None

        def ready(self) -> bool:
            return False

    path = directory / "authz.yaml"
    path.write_text(CONFIG.format(realm="r"))
    fake = NoKeys()
    runtime = build_runtime(ConfigFile(path).config, keys=fake)
    assert runtime.keys is fake


def test_poll_sees_nothing_until_the_file_changes(directory: Path) -> None:
    path = directory / "authz.yaml"
    path.write_text(CONFIG.format(realm="r1"))
    config_file = ConfigFile(path)
    assert config_file.config.realm == "r1"
    assert config_file.config.base_dir == directory
    assert config_file.poll(0) is None
    _publish(path, CONFIG.format(realm="r2"))
    changed = _poll_twice(config_file)
    assert changed is not None
    assert changed.realm == "r2"
    assert config_file.poll(0) is None


def test_same_content_published_again_is_not_a_change(directory: Path) -> None:
    path = directory / "authz.yaml"
    path.write_text(CONFIG.format(realm="r1"))
    config_file = ConfigFile(path)
    before = file_signature(path)
    _publish(path, CONFIG.format(realm="r1"))
    assert file_signature(path) != before
    assert config_file.poll(0) is None
    assert config_file.poll(0) is None


def test_a_touched_file_is_not_a_change(directory: Path) -> None:
    path = directory / "authz.yaml"
    path.write_text(CONFIG.format(realm="r1"))
    clock = FakeClock()
    config_file = ConfigFile(path, clock.now)
    before = file_signature(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert file_signature(path) != before
    for seconds in (0.5, SETTLE + 0.5, 10 * SETTLE):
        _after_write(clock, path, seconds)
        assert config_file.poll(SETTLE) is None
    # It is still watched: a real change after the touch is taken.
    path.write_text(CONFIG.format(realm="r2"))
    assert config_file.poll(SETTLE) is None
    _after_write(clock, path, SETTLE + 0.5)
    taken = config_file.poll(SETTLE)
    assert taken is not None
    assert taken.realm == "r2"


def test_an_invalid_change_is_reported_once_with_file_line_and_key(directory: Path) -> None:
    path = directory / "authz.yaml"
    path.write_text(CONFIG.format(realm="r1"))
    config_file = ConfigFile(path)
    _publish(path, CONFIG.format(realm="r1") + "routes:\n  - name: a\n    mode: opne\n")
    assert config_file.poll(0) is None  # seen; reported once it stood still
    with pytest.raises(ConfigError) as info:
        config_file.poll(0)
    assert str(info.value).startswith(f"{path}:9: routes[0].mode: Input should be")
    assert config_file.poll(0) is None  # the same broken file is not re-reported
    _publish(path, CONFIG.format(realm="r3"))
    fixed = _poll_twice(config_file)
    assert fixed is not None
    assert fixed.realm == "r3"


def test_a_missing_file_is_an_error_then_its_return_a_change(directory: Path) -> None:
    path = directory / "authz.yaml"
    path.write_text(CONFIG.format(realm="r1"))
    config_file = ConfigFile(path)
    path.unlink()
    # Missing at one poll may be a file being replaced: reported when it stays missing.
    assert config_file.poll(0) is None
    with pytest.raises(ConfigError, match="cannot read"):
        config_file.poll(0)
    assert config_file.poll(0) is None
    path.write_text(CONFIG.format(realm="r2"))
    back = _poll_twice(config_file)
    assert back is not None
    assert back.realm == "r2"


def test_kubernetes_configmap_swap_is_taken_at_the_first_poll(directory: Path) -> None:
    _configmap(
        directory,
        "config.yaml",
        {"..v1": CONFIG.format(realm="r1"), "..v2": CONFIG.format(realm="r2") + ROUTES},
    )
    clock = FakeClock()
    config_file = ConfigFile(directory / "config.yaml", clock.now)
    assert config_file.config.realm == "r1"
    assert config_file.config.base_dir == directory / "..v1"
    _swap(directory, "..v2")
    # Written a moment ago, seen once: only the swapped link makes it whole.
    _after_write(clock, directory / "config.yaml", 0.0)
    swapped = config_file.poll(SETTLE)
    assert swapped is not None
    assert swapped.realm == "r2"
    assert swapped.base_dir == directory / "..v2"
    build_runtime(swapped)  # its keys load from the new snapshot
    assert config_file.poll(SETTLE) is None


def test_file_signature(tmp_path: Path) -> None:
    path = tmp_path / "f"
    assert file_signature(path) is None
    path.write_text("a")
    first = file_signature(path)
    assert first is not None
    assert first.real_path == str(path)
    assert first.size == 1
    _publish(path, "a")
    assert file_signature(path) != first  # a new inode
    link = tmp_path / "link"
    link.symlink_to(path)
    assert file_signature(link) == file_signature(path)


def test_a_watched_file_reports_each_change_once(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("a")
    watched = WatchedFile(path)
    assert not watched.changed()
    path.write_text("bb")  # in place
    assert watched.changed()
    assert not watched.changed()
    _publish(path, "bb")  # a new inode, the same bytes: still a change of the file
    assert watched.changed()
    path.unlink()
    assert watched.changed()
    assert not watched.changed()


def test_an_oversized_config_is_refused(directory: Path) -> None:
    path = directory / "authz.yaml"
    path.write_text(CONFIG.format(realm="r1"))
    config_file = ConfigFile(path)
    _publish(path, CONFIG.format(realm="r1") + "#" * (5 * 1024 * 1024))
    assert config_file.poll(0) is None
    with pytest.raises(ConfigError, match="larger than"):
        config_file.poll(0)


def test_a_new_inode_written_in_two_parts_is_taken_only_once_it_stood_still(
    directory: Path,
) -> None:
    # What install, cp --remove-destination and archive tools do: unlink, create,
    # write in parts. The first part is valid YAML and a valid configuration:
    # cut before routes:, every valid token would be allowed.
    path = directory / "authz.yaml"
    path.write_text(CONFIG.format(realm="r1") + ROUTES)
    clock = FakeClock()
    config_file = ConfigFile(path, clock.now)
    with path.open() as old:  # held open: its inode number cannot be reused
        path.unlink()
        with path.open("x") as handle:
            handle.write(CONFIG.format(realm="r2"))
        assert path.stat().st_ino != os.fstat(old.fileno()).st_ino
    _after_write(clock, path, 0.1)
    assert config_file.poll(SETTLE) is None  # a new inode proves nothing
    _after_write(clock, path, 1.0)
    assert config_file.poll(SETTLE) is None  # unchanged, but its writer may be pausing
    with path.open("a") as handle:
        handle.write(ROUTES)
    _after_write(clock, path, 0.1)
    assert config_file.poll(SETTLE) is None  # changed since the last poll
    _after_write(clock, path, SETTLE + 0.5)
    taken = config_file.poll(SETTLE)
    assert taken is not None
    assert (taken.realm, [route.name for route in taken.routes or ()]) == ("r2", ["docs"])


def test_an_in_place_write_pausing_across_polls_is_taken_only_once_it_stood_still(
    directory: Path,
) -> None:
    path = directory / "authz.yaml"
    path.write_text(CONFIG.format(realm="r1") + ROUTES)
    clock = FakeClock()
    config_file = ConfigFile(path, clock.now)
    inode = path.stat().st_ino
    with path.open("r+") as handle:  # in place: the same inode
        handle.write(CONFIG.format(realm="r2"))
        handle.truncate()
    assert path.stat().st_ino == inode
    _after_write(clock, path, 0.1)
    assert config_file.poll(SETTLE) is None
    # The same bytes at two polls: the old rule took this half of the file.
    _after_write(clock, path, SETTLE / 2)
    assert config_file.poll(SETTLE) is None
    _after_write(clock, path, SETTLE - 0.1)
    assert config_file.poll(SETTLE) is None
    with path.open("a") as handle:
        handle.write(ROUTES)
    _after_write(clock, path, 0.1)
    assert config_file.poll(SETTLE) is None
    _after_write(clock, path, SETTLE + 0.5)
    taken = config_file.poll(SETTLE)
    assert taken is not None
    assert taken.realm == "r2"
    assert [route.name for route in taken.routes or ()] == ["docs"]
    assert config_file.poll(SETTLE) is None


def test_polls_close_together_do_not_take_a_young_file(directory: Path) -> None:
    # Two polls a moment apart (by hand, or just after the interval shrank) prove
    # no pause of a poll interval: the file's own age must.
    path = directory / "authz.yaml"
    path.write_text(CONFIG.format(realm="r1"))
    clock = FakeClock()
    config_file = ConfigFile(path, clock.now)
    path.write_text(CONFIG.format(realm="r2"))
    _after_write(clock, path, 0.1)
    assert config_file.poll(SETTLE) is None
    assert config_file.poll(SETTLE) is None
    _after_write(clock, path, SETTLE + 0.1)
    taken = config_file.poll(SETTLE)
    assert taken is not None
    assert taken.realm == "r2"


def test_a_same_size_rewrite_within_one_timestamp_tick_is_seen(directory: Path) -> None:
    # The same inode, size and modification time: only the bytes tell.
    path = directory / "authz.yaml"
    path.write_text(CONFIG.format(realm="r1"))
    clock = FakeClock()
    _after_write(clock, path, 0.5)
    config_file = ConfigFile(path, clock.now)
    before, stat = file_signature(path), path.stat()
    path.write_text(CONFIG.format(realm="r2"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_signature(path) == before
    _after_write(clock, path, SETTLE + 0.5)
    assert config_file.poll(SETTLE) is None
    taken = config_file.poll(SETTLE)
    assert taken is not None
    assert taken.realm == "r2"


def test_a_file_renamed_into_place_is_taken_once_it_stood_still(directory: Path) -> None:
    # Renamed over the file, it is whole; but at one poll it looks like a file
    # re-created at the path and being written (a new inode): it waits a poll.
    path = directory / "authz.yaml"
    path.write_text(CONFIG.format(realm="r1"))
    clock = FakeClock()
    config_file = ConfigFile(path, clock.now)
    _publish(path, CONFIG.format(realm="r2"))
    _after_write(clock, path, SETTLE + 0.5)  # written long before the rename
    assert config_file.poll(SETTLE) is None
    taken = config_file.poll(SETTLE)
    assert taken is not None
    assert taken.realm == "r2"


def test_a_regular_file_replacing_a_configmap_link_waits_like_any_write(
    directory: Path,
) -> None:
    # It resolves elsewhere, as a swap does, but it is written at the path itself.
    _configmap(directory, "config.yaml", {"..v1": CONFIG.format(realm="r1") + ROUTES})
    clock = FakeClock()
    path = directory / "config.yaml"
    config_file = ConfigFile(path, clock.now)
    path.unlink()
    path.write_text(CONFIG.format(realm="r2"))  # its routes still to come
    _after_write(clock, path, 0.1)
    assert config_file.poll(SETTLE) is None
    with path.open("a") as handle:
        handle.write(ROUTES)
    _after_write(clock, path, 0.1)
    assert config_file.poll(SETTLE) is None
    _after_write(clock, path, SETTLE + 0.5)
    taken = config_file.poll(SETTLE)
    assert taken is not None
    assert (taken.realm, taken.routes is not None) == ("r2", True)


def test_an_in_place_write_of_a_broken_file_is_reported_once_when_it_settles(
    directory: Path,
) -> None:
    path = directory / "authz.yaml"
    path.write_text(CONFIG.format(realm="r1"))
    config_file = ConfigFile(path)
    path.write_text(CONFIG.format(realm="r1") + "routes: [")  # in place, and broken
    assert config_file.poll(0) is None
    with pytest.raises(ConfigError, match="not valid YAML"):
        config_file.poll(0)
    assert config_file.poll(0) is None
