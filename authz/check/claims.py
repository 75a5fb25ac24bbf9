"""Reading a claim by its path in a verified payload.

A path is a tuple of object member names: ``("realm_access", "roles")`` reads
``{"realm_access": {"roles": [...]}}``. Arrays are values, never indexed into.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["claim_value"]


def claim_value(claims: Mapping[str, Any], path: Sequence[str]) -> Any:
    """The value at ``path``, or None when any part of it is absent or not an object."""
    value: Any = claims
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value
