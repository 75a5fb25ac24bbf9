"""The README's examples, so tests can prove that what it shows works."""

from __future__ import annotations

import re

from authz.dev.stack import REPO_ROOT

README = REPO_ROOT / "README.md"


def section(title: str) -> str:
    """The text of the ``## title`` section, up to the next ``## ``."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def yaml_block(title: str) -> str:
    """The first ```yaml block of a section."""
    match = re.search(r"```yaml\n(.*?)```", section(title), re.S)
    assert match, f"no yaml block in README section {title!r}"
    return match.group(1)
