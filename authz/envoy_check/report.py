"""Running the checks over files, and ``authz check-envoy``'s output and exit status."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from authz.config.models import Config
from authz.envoy_check.base import Finding
from authz.envoy_check.listeners import Checker
from authz.envoy_check.yaml_nodes import EnvoyCheckError, envoy_documents, is_config_dump

__all__ = ["EXIT_FINDINGS", "EXIT_OK", "EXIT_UNREADABLE", "check_file", "check_text", "run"]

EXIT_OK, EXIT_FINDINGS, EXIT_UNREADABLE = 0, 1, 2


@dataclass(frozen=True)
class _Report:
    findings: list[Finding]
    managers: int  # HTTP connection managers checked
    unchecked: list[tuple[int, str]]  # what the file cannot show or is not read: (line, what)


def check_text(text: str, source: str, config: Config | None = None) -> list[Finding]:
    """The findings for one file's text, in line order; EnvoyCheckError if unusable."""
    return _check(text, source, config).findings


def _check(text: str, source: str, config: Config | None) -> _Report:
    checker = Checker(config)
    documents = envoy_documents(text, source)
    for document in documents:
        checker.envoy(document)
    if checker.managers == 0:
        if any(is_config_dump(document) for document in documents):
            # An Envoy that holds no listener yet (or a dump narrowed by
            # ?resource= or ?mask=) shows nothing to rely on: not an OK.
            raise EnvoyCheckError(
                f"{source}: no HTTP connection manager in the config dump's listeners "
                "(static, or dynamic active or warming): nothing to check"
            )
        raise EnvoyCheckError(
            f"{source}: no HTTP connection manager in static_resources.listeners: nothing "
            "to check (listeners from LDS are not read; check Envoy's admin /config_dump "
            "for them)"
        )
    unchecked = sorted(set(checker.unchecked))
    return _Report(sorted(set(checker.findings)), checker.managers, unchecked)


def check_file(path: Path, config: Config | None = None) -> list[Finding]:
    return check_text(_read(path), str(path), config)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EnvoyCheckError(f"{path}: cannot read: {exc}") from None


def run(
    files: Sequence[Path],
    config: Config | None,
    out: TextIO,
    err: TextIO,
    stdin: TextIO | None = None,
) -> int:
    """Check every file and print the findings; the exit status (0, 1 or 2).

    ``-`` reads ``stdin`` (e.g. ``kubectl kustomize k8s/gateway | authz check-envoy -``).
    """
    status = EXIT_OK
    for path in files:
        from_stdin = str(path) == "-" and stdin is not None
        source = "<stdin>" if from_stdin else str(path)
        try:
            text = stdin.read() if from_stdin and stdin is not None else _read(path)
            report = _check(text, source, config)
        except EnvoyCheckError as exc:
            print(f"authz check-envoy: {exc}", file=err)
            status = EXIT_UNREADABLE
            continue
        for finding in report.findings:
            print(finding.format(source), file=out)
        if report.findings:
            status = max(status, EXIT_FINDINGS)
        else:
            managers = f"{report.managers} HTTP connection manager"
            managers += "s" if report.managers != 1 else ""
            print(f"{source}: OK ({managers} checked)", file=out)
        # Said every time: an OK covers only what the file itself holds.
        for line, what in report.unchecked:
            print(f"{source}:{line}: not checked: {what}", file=out)
    return status
