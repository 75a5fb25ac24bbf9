"""runtime: building a decider from a config, and noticing a changed config file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from authz.check.request import RequestView
from authz.errors import ConfigError
from authz.keys.sources import IssuerKeys
from authz.runtime import ConfigFile, build_runtime
from authz.watch import WatchedFile, file_signature

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


def _publish(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


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
    assert config_file.poll() is None
    _publish(path, CONFIG.format(realm="r2"))
    changed = config_file.poll()
    assert changed is not None
    assert changed.realm == "r2"
    assert config_file.poll() is None


def test_same_content_published_again_is_not_a_change(directory: Path) -> None:
    path = directory / "authz.yaml"
    path.write_text(CONFIG.format(realm="r1"))
    config_file = ConfigFile(path)
    before = file_signature(path)
    _publish(path, CONFIG.format(realm="r1"))
    assert file_signature(path) != before
    assert config_file.poll() is None


def test_an_invalid_change_is_reported_once_with_file_line_and_key(directory: Path) -> None:
    path = directory / "authz.yaml"
    path.write_text(CONFIG.format(realm="r1"))
    config_file = ConfigFile(path)
    _publish(path, CONFIG.format(realm="r1") + "routes:\n  - name: a\n    mode: opne\n")
    with pytest.raises(ConfigError) as info:
        config_file.poll()
    assert str(info.value).startswith(f"{path}:9: routes[0].mode: Input should be")
    assert config_file.poll() is None  # the same broken file is not re-reported
    _publish(path, CONFIG.format(realm="r3"))
    fixed = config_file.poll()
    assert fixed is not None
    assert fixed.realm == "r3"


def test_a_missing_file_is_an_error_then_its_return_a_change(directory: Path) -> None:
    path = directory / "authz.yaml"
    path.write_text(CONFIG.format(realm="r1"))
    config_file = ConfigFile(path)
    path.unlink()
    with pytest.raises(ConfigError, match="cannot read"):
        config_file.poll()
    assert config_file.poll() is None
    path.write_text(CONFIG.format(realm="r2"))
    back = config_file.poll()
    assert back is not None
    assert back.realm == "r2"


def test_kubernetes_configmap_swap(directory: Path) -> None:
    # config.yaml -> ..data/config.yaml; ..data -> ..v1; updated by replacing ..data.
    for version, realm in (("..v1", "r1"), ("..v2", "r2")):
        (directory / version).mkdir()
        (directory / version / "config.yaml").write_text(CONFIG.format(realm=realm))
        # Relative key paths resolve in the published snapshot's own directory.
        (directory / version / "idp.pem").write_bytes((directory / "idp.pem").read_bytes())
    (directory / "..data").symlink_to("..v1")
    (directory / "config.yaml").symlink_to("..data/config.yaml")
    config_file = ConfigFile(directory / "config.yaml")
    assert config_file.config.realm == "r1"
    assert config_file.config.base_dir == directory / "..v1"
    (directory / "..data_tmp").symlink_to("..v2")
    os.replace(directory / "..data_tmp", directory / "..data")
    swapped = config_file.poll()
    assert swapped is not None
    assert swapped.realm == "r2"
    assert swapped.base_dir == directory / "..v2"
    build_runtime(swapped)  # its keys load from the new snapshot


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
    with pytest.raises(ConfigError, match="larger than"):
        config_file.poll()


def test_a_file_written_in_place_is_taken_only_once_it_stops_changing(directory: Path) -> None:
    path = directory / "authz.yaml"
    path.write_text(CONFIG.format(realm="r1"))
    config_file = ConfigFile(path)
    whole = CONFIG.format(realm="r2") + "routes:\n  - name: docs\n    mode: public\n"
    inode = path.stat().st_ino
    # A writer half-way through: what it has written so far is valid YAML and
    # a valid configuration (no routes: every request needs a token).
    with path.open("r+") as handle:  # in place: the same inode
        handle.write(CONFIG.format(realm="r2"))
        handle.truncate()
    assert path.stat().st_ino == inode
    assert config_file.poll() is None  # not whole yet, for all we know
    with path.open("a") as handle:
        handle.write(whole.removeprefix(CONFIG.format(realm="r2")))
    assert config_file.poll() is None  # it changed since the last poll: still at work
    taken = config_file.poll()  # the same bytes twice: the writer is done
    assert taken is not None
    assert taken.realm == "r2"
    assert taken.routes is not None
    assert [route.name for route in taken.routes] == ["docs"]
    assert config_file.poll() is None


def test_a_file_renamed_into_place_is_taken_at_once(directory: Path) -> None:
    path = directory / "authz.yaml"
    path.write_text(CONFIG.format(realm="r1"))
    config_file = ConfigFile(path)
    _publish(path, CONFIG.format(realm="r2"))  # a new inode: whole by construction
    taken = config_file.poll()
    assert taken is not None
    assert taken.realm == "r2"


def test_an_in_place_write_of_a_broken_file_is_reported_once_when_it_settles(
    directory: Path,
) -> None:
    path = directory / "authz.yaml"
    path.write_text(CONFIG.format(realm="r1"))
    config_file = ConfigFile(path)
    path.write_text(CONFIG.format(realm="r1") + "routes: [")  # in place, and broken
    assert config_file.poll() is None
    with pytest.raises(ConfigError, match="not valid YAML"):
        config_file.poll()
    assert config_file.poll() is None
