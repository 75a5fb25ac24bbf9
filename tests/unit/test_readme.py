"""The README's configuration examples are valid configurations."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.config.loader import parse_config
from authz.config.rules import PathsConfig
from tests.support.readme import yaml_block


@pytest.mark.parametrize("section", ["Configuration", "Writing rules"])
def test_readme_example_parses(section: str) -> None:
    config = parse_config(yaml_block(section), source=f"README {section}", base_dir=Path())
    assert config.routes


def test_rules_example_routes() -> None:
    config = parse_config(yaml_block("Writing rules"), source="README", base_dir=Path())
    assert config.routes is not None
    assert [route.name for route in config.routes] == [
        "docs",
        "payments-refund",
        "billing-refund",
        "payments",
        "orders-admin",
        "orders-write",
        "orders-read",
        "catalog",
    ]


def test_the_documented_paths_settings_are_the_defaults() -> None:
    config = parse_config(yaml_block("Configuration"), source="README", base_dir=Path())
    assert config.paths == PathsConfig()
    assert (config.paths.lookalikes, config.paths.trailing_dot_or_space) == ("refuse", "refuse")
