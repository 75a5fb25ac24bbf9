"""docs/sender-constrained.md stays true: its example configuration loads, every
test its tables name exists, and every reason they name is an error's reason."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from authz import errors
from authz.config.loader import parse_config
from authz.config.sender import RedisReplayConfig
from tests.support.readme import section, yaml_block
from tests.support.repo import REPO_ROOT

PAGE = REPO_ROOT / "docs" / "sender-constrained.md"
TEST_FILES = [
    *(REPO_ROOT / "tests" / "unit").rglob("test_*.py"),
    REPO_ROOT / "tests" / "security" / "test_fuzz_dpop.py",
    REPO_ROOT / "tests" / "e2e" / "test_sender_constrained.py",
]


def _test_names() -> set[str]:
    names: set[str] = set()
    for path in TEST_FILES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names.update(node.name for node in tree.body if isinstance(node, ast.FunctionDef))
    return names


def test_the_settings_example_loads() -> None:
    config = parse_config(yaml_block("DPoP and mTLS settings"), source="docs", base_dir=Path())
    assert config.dpop is not None
    assert config.dpop.nonce.required
    assert config.mtls is not None
    assert config.routes is not None
    assert {route.sender_constraint for route in config.routes} == {"dpop", "mtls", "optional"}


def test_the_redis_example_is_a_valid_replay_section() -> None:
    text = section("DPoP and mTLS settings")
    block = re.findall(r"```yaml\n(.*?)```", text, re.S)[1]
    replay = yaml.safe_load(block)["replay"]
    assert RedisReplayConfig.model_validate(replay).on_failure == "fail_closed"


def test_every_test_the_page_names_exists() -> None:
    text = PAGE.read_text(encoding="utf-8")
    files = set(re.findall(r"\b(test_[a-z0-9_]+)\.py\b", text))
    functions = set(re.findall(r"\b(test_[a-z0-9_]+)\b(?!\.py)", text)) - files
    assert files <= {path.stem for path in TEST_FILES}, files
    missing = sorted(functions - _test_names())
    assert not missing, missing
    assert len(functions) > 40


def test_every_reason_the_page_names_is_an_errors_reason() -> None:
    reasons = {getattr(errors, name).reason for name in errors.__all__ if name != "ConfigError"}
    text = PAGE.read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:dpop|mtls|replay)_[a-z_]+)`", text))
    assert len(named) >= 10
    assert named <= reasons, named - reasons
