"""What every ``authz`` command shares: its exit status for bad input, and its logging options.

``--log-level`` and ``--log-format`` are accepted before the command and after
it (``authz serve -c f --log-level debug``, the place people try first), and
otherwise read from ``AUTHZ_LOG_LEVEL`` and ``AUTHZ_LOG_FORMAT``: a container
or a unit file sets them once, whatever command it runs. The command line wins
over the environment, and a value after the command over one before it.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping

__all__ = [
    "EXIT_CONFIG",
    "LOG_FORMAT_ENV",
    "LOG_LEVEL_ENV",
    "logging_options",
    "resolve_logging",
]

EXIT_CONFIG = 2

LOG_LEVEL_ENV = "AUTHZ_LOG_LEVEL"
LOG_FORMAT_ENV = "AUTHZ_LOG_FORMAT"
# (attribute, environment variable, default, choices)
_OPTIONS = (
    ("log_level", LOG_LEVEL_ENV, "info", ("debug", "info", "warning", "error")),
    ("log_format", LOG_FORMAT_ENV, "json", ("json", "text")),
)


def logging_options() -> argparse.ArgumentParser:
    """A parent parser with the logging options, for the top level and every command.

    Their default is SUPPRESS: an option not given leaves no attribute, so a
    command's parser cannot overwrite a value given before the command, and
    ``resolve_logging`` can tell "not given" from "given as the default".
    """
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("logging (before or after the command)")
    group.add_argument(
        "--log-level",
        type=str.lower,
        choices=_OPTIONS[0][3],
        default=argparse.SUPPRESS,
        help=f"default: ${LOG_LEVEL_ENV}, else info",
    )
    group.add_argument(
        "--log-format",
        type=str.lower,
        choices=_OPTIONS[1][3],
        default=argparse.SUPPRESS,
        help="service logs on stderr: one JSON object per line, or plain text "
        f"(default: ${LOG_FORMAT_ENV}, else json)",
    )
    return parent


def resolve_logging(
    args: argparse.Namespace, parser: argparse.ArgumentParser, environ: Mapping[str, str]
) -> None:
    """Set ``args.log_level`` and ``args.log_format``: given, else the environment's, else
    the default. A bad environment value is a usage error (exit 2), like a bad option."""
    for attribute, variable, default, choices in _OPTIONS:
        if hasattr(args, attribute):
            continue
        value = environ.get(variable, "").strip().lower() or default
        if value not in choices:
            parser.error(f"{variable}={environ[variable]!r}: expected one of {', '.join(choices)}")
        setattr(args, attribute, value)
