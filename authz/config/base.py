"""What every configuration model shares: strictness, paths from YAML strings, addresses."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["LISTEN_TCP", "Model", "PathModel", "check_listen"]

LISTEN_TCP = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(?P<port>\d{1,5})$")


class Model(BaseModel):
    # Unknown keys are errors (a typo must not silently disable a check), the
    # objects are frozen, and nothing is coerced ("1" is not 1).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class PathModel(Model):
    """A model whose ``PATH_KEYS`` are file paths: YAML gives strings, strict mode wants Path."""

    PATH_KEYS: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _paths_from_strings(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in cls.PATH_KEYS:
                if isinstance(data.get(key), str):
                    data = {**data, key: Path(data[key])}
        return data


def check_listen(value: str, *, unix: bool) -> str:
    """``HOST:PORT`` or ``[IPv6]:PORT`` (and ``unix:PATH`` where ``unix``), else ValueError."""
    if unix and value.startswith("unix:"):
        if len(value) <= len("unix:"):
            raise ValueError("unix: needs a socket path, e.g. unix:/run/authz/authz.sock")
        return value
    match = LISTEN_TCP.match(value)
    if not match or not 0 <= int(match["port"]) <= 65535:
        if unix:
            raise ValueError("expected HOST:PORT, [IPv6]:PORT or unix:PATH")
        raise ValueError("expected HOST:PORT or [IPv6]:PORT (port 0: any free port)")
    return value
