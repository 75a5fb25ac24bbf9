"""Requirements: what a verified token must carry on a route, and the outcome of each check.

Compiled once per loaded configuration from the ``requirements`` of a route
(config/rules.py). Requirements are evaluated completely (no short cut), so
``authz explain`` shows every check; the first failing check decides the
deny's reason. Nothing here sees token bytes or keys, only verified claims.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from authz.check.claims import claim_value
from authz.check.identity import scopes
from authz.check.verify import VerifiedToken
from authz.config.rules import ClaimMatcherConfig, RequirementConfig, claim_path
from authz.errors import (
    ClaimInvalid,
    ClaimMismatch,
    Forbidden,
    IssuerNotAllowed,
    RoleMissing,
)

__all__ = ["Check", "Requirement", "compile_requirement"]


@dataclass(frozen=True, slots=True)
class Check:
    """One requirement's outcome. ``detail`` is safe to log (no claim values)."""

    label: str
    passed: bool
    detail: str = ""
    error: Forbidden | None = None
    children: tuple[Check, ...] = ()


class Requirement(Protocol):
    def evaluate(self, token: VerifiedToken) -> Check: ...


@dataclass(frozen=True, slots=True)
class _Issuers:
    issuers: tuple[str, ...]

    def evaluate(self, token: VerifiedToken) -> Check:
        label = f"issuer one of {', '.join(self.issuers)}"
        if token.issuer in self.issuers:
            return Check(label, True, f"issuer is {token.issuer}")
        detail = f"issuer {token.issuer} is not allowed on this route"
        return Check(label, False, detail, IssuerNotAllowed(detail))


@dataclass(frozen=True, slots=True)
class _Scopes:
    required: tuple[str, ...]

    def evaluate(self, token: VerifiedToken) -> Check:
        label = f"scopes {' '.join(self.required)}"
        wanted = " ".join(self.required)
        try:
            granted = set(scopes(token.claims))
        except ClaimInvalid as exc:
            return Check(label, False, exc.detail, Forbidden(exc.detail, scope=wanted))
        missing = [scope for scope in self.required if scope not in granted]
        if not missing:
            return Check(label, True, "all granted")
        detail = f"missing scope {' '.join(missing)}"
        return Check(label, False, detail, Forbidden(detail, scope=wanted))


@dataclass(frozen=True, slots=True)
class _Roles:
    required: tuple[str, ...]
    path: tuple[str, ...]

    def evaluate(self, token: VerifiedToken) -> Check:
        where = ".".join(self.path)
        label = f"roles {' '.join(self.required)} (from {where})"
        value = claim_value(token.claims, self.path)
        if isinstance(value, str):
            held = {value}  # one role, not split: a role name may hold spaces
        elif isinstance(value, list) and all(isinstance(item, str) for item in value):
            held = set(value)
        elif value is None:
            held = set()
        else:
            detail = f"claim {where!r} is not a role or a list of roles"
            return Check(label, False, detail, RoleMissing(detail))
        missing = [role for role in self.required if role not in held]
        if not missing:
            return Check(label, True, "all held")
        detail = f"missing role {' '.join(missing)}"
        return Check(label, False, detail, RoleMissing(detail))


# How a claim is compared with a requirement's value (config.rules.ClaimMatcherConfig).
ClaimOperator = Literal["equals", "one_of", "contains"]


@dataclass(frozen=True, slots=True)
class _Claim:
    path: tuple[str, ...]
    operator: ClaimOperator
    expected: tuple[Any, ...]

    def evaluate(self, token: VerifiedToken) -> Check:
        where = ".".join(self.path)
        shown = self.expected[0] if self.operator != "one_of" else list(self.expected)
        label = f"claim {where} {self.operator.replace('_', ' ')} {shown!r}"
        value = claim_value(token.claims, self.path)
        if value is None:
            detail = f"claim {where!r} is absent"
            return Check(label, False, detail, ClaimMismatch(detail))
        if self.operator == "contains":
            passed = isinstance(value, list) and any(_same(item, shown) for item in value)
        else:
            passed = any(_same(value, option) for option in self.expected)
        if passed:
            return Check(label, True, "holds")
        detail = f"claim {where!r} does not {self.operator.replace('_', ' ')} {shown!r}"
        return Check(label, False, detail, ClaimMismatch(detail))


@dataclass(frozen=True, slots=True)
class _AllOf:
    parts: tuple[Requirement, ...]
    label: str = "all of"

    def evaluate(self, token: VerifiedToken) -> Check:
        results = tuple(part.evaluate(token) for part in self.parts)
        failed = [result for result in results if not result.passed]
        if not failed:
            return Check(self.label, True, "all hold", children=results)
        first = failed[0]
        return Check(self.label, False, first.detail, first.error, results)


@dataclass(frozen=True, slots=True)
class _AnyOf:
    parts: tuple[Requirement, ...]

    def evaluate(self, token: VerifiedToken) -> Check:
        results = tuple(part.evaluate(token) for part in self.parts)
        if any(result.passed for result in results):
            return Check("any of", True, "at least one holds", children=results)
        detail = "none holds: " + "; ".join(result.detail for result in results)
        # RFC 6750 scope="..." can only name one set: the first alternative's.
        scope = next((r.error.scope for r in results if r.error and r.error.scope), "")
        return Check("any of", False, detail, Forbidden(detail, scope=scope), results)


def _same(a: Any, b: Any) -> bool:
    """JSON equality without Python's coercions: true is not 1, "1" is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return isinstance(a, str) and isinstance(b, str) and a == b


def compile_requirement(
    requirement: RequirementConfig, roles_path: tuple[str, ...], label: str = "all of"
) -> Requirement:
    parts: list[Requirement] = []
    if requirement.issuers:
        parts.append(_Issuers(tuple(requirement.issuers)))
    if requirement.scopes:
        parts.append(_Scopes(tuple(requirement.scopes)))
    if requirement.roles:
        parts.append(_Roles(tuple(requirement.roles), roles_path))
    parts.extend(_compile_claim(matcher) for matcher in requirement.claims or ())
    parts.extend(compile_requirement(nested, roles_path) for nested in requirement.all_of or ())
    if requirement.any_of:
        parts.append(_AnyOf(tuple(compile_requirement(n, roles_path) for n in requirement.any_of)))
    if len(parts) == 1 and label == "all of":
        return parts[0]  # a nested node with one check reads better flat
    return _AllOf(tuple(parts), label)


def _compile_claim(matcher: ClaimMatcherConfig) -> _Claim:
    path = claim_path(matcher.claim)
    if matcher.equals is not None:
        return _Claim(path, "equals", (matcher.equals,))
    if matcher.one_of is not None:
        return _Claim(path, "one_of", tuple(matcher.one_of))
    return _Claim(path, "contains", (matcher.contains,))
