"""revocation: a jti/sub deny-list file, re-read on change, last good list kept on error."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from authz.check.revocation import DenyList, RevocationList, parse_deny_list
from authz.check.verify import VerifiedToken
from authz.errors import ConfigError, TokenRevoked
from tests.support.clock import FakeClock

# The poll interval of the tests that move a clock.
SETTLE = 2.0


def _token(subject: str | None = "alice", **claims: Any) -> VerifiedToken:
    return VerifiedToken(
        issuer="https://idp.example",
        subject=subject,
        claims={"sub": subject, **claims},
        kid="k1",
        algorithm="RS256",
    )


def _write(path: Path, text: str) -> None:
    # A new inode each time, as an atomic publish would give; mtime alone can
    # be equal for two writes in the same clock tick.
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _refresh_twice(revocations: RevocationList) -> bool:
    """Two refreshes with nothing written between them and no settle time: a
    change made at the path is seen by the first and taken by the second."""
    assert revocations.refresh(0) is False
    return revocations.refresh(0)


def _after_write(clock: FakeClock, path: Path, seconds: float) -> None:
    clock.value = path.stat().st_mtime + seconds


def test_parse() -> None:
    text = (
        "# revoked after the incident\n"
        "jti:4f1c-aa\n"
        "\n"
        "   # indented comment\n"
        "sub:auth0|1234\n"
        "sub:has:colons  \n"
        "jti:with space inside\r\n"
    )
    assert parse_deny_list(text, "r.txt") == DenyList(
        jti=frozenset({"4f1c-aa", "with space inside"}),
        sub=frozenset({"auth0|1234", "has:colons"}),
    )


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("jti:a\nbogus\n", 2),
        ("jti:\n", 1),
        ("JTI:a\n", 1),
        ("\n\nsid:a\n", 3),
        (" jti:a\n", 1),
    ],
)
def test_parse_errors_name_the_line(text: str, line: int) -> None:
    with pytest.raises(ConfigError) as info:
        parse_deny_list(text, "r.txt")
    assert str(info.value) == f"r.txt:{line}: expected jti:VALUE or sub:VALUE"


def test_listed_jti_or_sub_is_revoked(tmp_path: Path) -> None:
    path = tmp_path / "revoked.txt"
    path.write_text("jti:bad-1\nsub:mallory\n")
    revocations = RevocationList(path)
    revocations.check(_token(jti="good-1"))
    revocations.check(_token())
    with pytest.raises(TokenRevoked) as info:
        revocations.check(_token(jti="bad-1"))
    assert info.value.status == 401
    assert info.value.rfc6750_error == "invalid_token"
    assert info.value.reason == "token_revoked"
    assert info.value.detail == "jti is on the revocation list"
    with pytest.raises(TokenRevoked) as info:
        revocations.check(_token("mallory", jti="good-2"))
    assert info.value.detail == "sub is on the revocation list"


def test_non_string_jti_is_not_looked_up(tmp_path: Path) -> None:
    path = tmp_path / "revoked.txt"
    path.write_text("jti:1\n")
    revocations = RevocationList(path)
    revocations.check(_token(jti=1))
    revocations.check(_token(subject=None, jti=["1"]))


def test_missing_or_broken_file_at_start_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        RevocationList(tmp_path / "absent.txt")
    broken = tmp_path / "broken.txt"
    broken.write_text("nonsense\n")
    with pytest.raises(ConfigError, match=r"broken.txt:1: expected"):
        RevocationList(broken)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"jti:\xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        RevocationList(binary)


def test_refresh_takes_a_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "revoked.txt"
    path.write_text("jti:a\n")
    revocations = RevocationList(path)
    assert revocations.refresh(0) is False  # unchanged
    _write(path, "jti:a\njti:b\n")
    assert _refresh_twice(revocations) is True
    assert revocations.entries.jti == {"a", "b"}
    with pytest.raises(TokenRevoked):
        revocations.check(_token(jti="b"))
    _write(path, "")
    assert _refresh_twice(revocations) is True
    revocations.check(_token(jti="b"))
    assert len(revocations) == 0


def test_a_list_rewritten_in_place_is_taken_only_once_whole(tmp_path: Path) -> None:
    path = tmp_path / "revoked.txt"
    path.write_text("jti:a\njti:b\n")
    clock = FakeClock()
    revocations = RevocationList(path, clock.now)
    with path.open("r+") as handle:  # in place, read half-way: b is not there yet
        handle.write("jti:a\n")
        handle.truncate()
    _after_write(clock, path, 0.1)
    assert revocations.refresh(SETTLE) is False
    # The same bytes at the next poll, but written less than a poll interval ago:
    # its writer may be pausing (the old rule took this, un-revoking b).
    _after_write(clock, path, SETTLE - 0.1)
    assert revocations.refresh(SETTLE) is False
    assert revocations.entries.jti == {"a", "b"}  # the whole old list stays in force
    with path.open("a") as handle:
        handle.write("jti:b\njti:c\n")
    _after_write(clock, path, 0.1)
    assert revocations.refresh(SETTLE) is False  # changed since: still being written
    _after_write(clock, path, SETTLE + 0.5)
    assert revocations.refresh(SETTLE) is True  # the same, and left alone long enough
    assert revocations.entries.jti == {"a", "b", "c"}


def test_a_list_re_created_and_written_in_two_parts_waits_until_it_stood_still(
    tmp_path: Path,
) -> None:
    # install, cp --remove-destination: a new inode is no proof of a whole file.
    path = tmp_path / "revoked.txt"
    path.write_text("jti:a\njti:b\n")
    clock = FakeClock()
    revocations = RevocationList(path, clock.now)
    with path.open() as old:  # held open: its inode number cannot be reused
        path.unlink()
        path.write_text("jti:a\n")
        assert path.stat().st_ino != os.fstat(old.fileno()).st_ino
    _after_write(clock, path, 0.1)
    assert revocations.refresh(SETTLE) is False
    assert revocations.entries.jti == {"a", "b"}
    with path.open("a") as handle:
        handle.write("jti:b\njti:c\n")
    _after_write(clock, path, 0.1)
    assert revocations.refresh(SETTLE) is False
    _after_write(clock, path, SETTLE + 0.5)
    assert revocations.refresh(SETTLE) is True
    assert revocations.entries.jti == {"a", "b", "c"}
    assert revocations.refresh(SETTLE) is False  # taken once


def test_a_broken_change_keeps_the_last_good_list(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "revoked.txt"
    path.write_text("jti:a\n")
    revocations = RevocationList(path)
    _write(path, "jti:a\njti:b\nhalf a li")
    with caplog.at_level(logging.ERROR, logger="authz.check.revocation"):
        assert _refresh_twice(revocations) is False
    assert revocations.entries.jti == {"a"}
    assert revocations.failures == 1
    assert revocations.last_error == f"{path}:3: expected jti:VALUE or sub:VALUE"
    assert "keeping 1 entries" in caplog.text
    # A deleted file keeps the list too, and counts, once it stays deleted.
    path.unlink()
    assert _refresh_twice(revocations) is False
    assert revocations.failures == 2
    assert revocations.entries.jti == {"a"}
    # Fixed: taken, and the error is cleared.
    _write(path, "jti:c\n")
    assert _refresh_twice(revocations) is True
    assert revocations.entries.jti == {"c"}
    assert revocations.last_error is None


def test_kubernetes_symlink_swap_is_taken_at_the_first_poll(tmp_path: Path) -> None:
    # The layout of a Secret/ConfigMap volume: file -> ..data/file, ..data -> version dir.
    for version, text in (("v1", "jti:a\n"), ("v2", "jti:b\n")):
        (tmp_path / version).mkdir()
        (tmp_path / version / "revoked.txt").write_text(text)
    (tmp_path / "..data").symlink_to("v1")
    (tmp_path / "revoked.txt").symlink_to("..data/revoked.txt")
    clock = FakeClock()
    revocations = RevocationList(tmp_path / "revoked.txt", clock.now)
    assert revocations.entries.jti == {"a"}
    (tmp_path / "..data_tmp").symlink_to("v2")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    _after_write(clock, tmp_path / "revoked.txt", 0.0)  # young: only the swap makes it whole
    assert revocations.refresh(SETTLE) is True
    assert revocations.entries.jti == {"b"}
