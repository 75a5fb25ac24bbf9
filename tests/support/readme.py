"""The examples in the README and docs/, so tests can prove that what they show works."""

from __future__ import annotations

import re

from tests.support.repo import REPO_ROOT

README = REPO_ROOT / "README.md"
PAGES = (README, *sorted((REPO_ROOT / "docs").glob("*.md")))


def section(title: str) -> str:
    """The text of the ``## title`` section of the README or a docs/ page, up to
    the next ``## ``."""
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        start = text.find(f"\n## {title}\n")
        if start != -1:
            end = text.find("\n## ", start + 1)
            return text[start : end if end != -1 else len(text)]
    raise AssertionError(f"no section {title!r} in the README or docs/")


def yaml_block(title: str) -> str:
    """The first ```yaml block of a section."""
    match = re.search(r"```yaml\n(.*?)```", section(title), re.S)
    assert match, f"no yaml block in section {title!r}"
    return match.group(1)
