"""Routes and requirements: which rule applies to a request, and whether a token meets it.

Routes are tried in the order of the file; the first whose every condition
holds is the route (host, method, path, Envoy ``context_extensions``). A
request no route takes is denied (403 ``no_route``): deny by default. A path
is matched only once paths.py has accepted it (Envoy's normal form, nothing
ambiguous), in its match form: escapes decoded, one trailing slash dropped.

- ``path: /orders``         exactly ``/orders`` (and so ``/orders/``);
- ``prefix: /orders``       ``/orders`` and everything below it, whole segments
  only: ``/orders/7`` yes, ``/orders-archive`` no;
- ``pattern: /orders/{id}`` one non-empty segment per ``{name}``.

Without ``routes`` in the configuration there is one implicit route, which
takes every request and needs a valid token: the behaviour before routes
existed. The path is not examined then.

Requirements are evaluated completely (no short cut), so ``authz explain``
shows every check; the first failing check decides the deny's reason. Nothing
here sees token bytes or keys, only verified claims.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from authz.check.claims import claim_value
from authz.check.hosts import normalize_host
from authz.check.identity import IdentityPlan, scopes
from authz.check.paths import match_form, normalize_path
from authz.check.request import RequestView
from authz.check.verify import VerifiedToken
from authz.config.models import Config
from authz.config.rules import (
    ClaimMatcherConfig,
    MatchConfig,
    RequirementConfig,
    RouteConfig,
    claim_path,
)
from authz.errors import (
    ClaimInvalid,
    ClaimMismatch,
    Forbidden,
    IssuerNotAllowed,
    NoRoute,
    RoleMissing,
)

__all__ = ["Check", "Match", "Policy", "Route"]

PUBLIC, OPTIONAL, PROTECTED = "public", "optional", "protected"
# The name of the implicit route of a configuration without routes.
IMPLICIT = ""


@dataclass(frozen=True, slots=True)
class Check:
    """One requirement's outcome. ``detail`` is safe to log (no claim values)."""

    label: str
    passed: bool
    detail: str = ""
    error: Forbidden | None = None
    children: tuple[Check, ...] = ()


class _Requirement(Protocol):
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


@dataclass(frozen=True, slots=True)
class _Claim:
    path: tuple[str, ...]
    operator: str  # "equals", "one_of", "contains"
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
    parts: tuple[_Requirement, ...]
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
    parts: tuple[_Requirement, ...]

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


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    mode: str
    shadow: bool
    identity: IdentityPlan
    requirement: _Requirement | None = None
    hosts: tuple[str, ...] = ()
    methods: frozenset[str] = frozenset()
    path_kind: str = ""  # "path", "prefix", "pattern" or "" for any path
    path: str = ""  # in match form (paths.match_form)
    segments: tuple[str | None, ...] = ()  # a pattern's segments; None is a parameter
    params: tuple[str, ...] = ()
    context_extensions: tuple[tuple[str, str], ...] = ()
    index: int = -1  # position in routes[], -1 for the implicit route
    unverified_credentials: Literal["remove", "forward"] = "remove"

    def mismatch(
        self, host: str, method: str, path: str, extensions: Mapping[str, str]
    ) -> str | None:
        """The first condition that does not hold ("host", "method", …), or None."""
        for key, value in self.context_extensions:
            if extensions.get(key) != value:
                return "context_extensions"
        if self.hosts and not any(_host_matches(pattern, host) for pattern in self.hosts):
            return "host"
        if self.path_kind and self.path_params(path) is None:
            return "path"
        if self.methods and method not in self.methods:
            return "method"
        return None

    def path_params(self, path: str) -> dict[str, str] | None:
        """The parameters of a path (in match form) this route takes, or None."""
        if self.path_kind == "path":
            return {} if path == self.path else None
        if self.path_kind == "prefix":
            taken = self.path in ("/", path) or path.startswith(self.path + "/")
            return {} if taken else None
        if self.path_kind == "pattern":
            parts = path.split("/")[1:]
            if len(parts) != len(self.segments) or "" in parts:
                return None
            values: list[str] = []
            for part, segment in zip(parts, self.segments, strict=True):
                if segment is None:
                    values.append(part)
                elif part != segment:
                    return None
            return dict(zip(self.params, values, strict=True))
        return {}

    def describe(self, condition: str) -> str:
        """The route's side of a condition, for ``authz explain``."""
        if condition == "context_extensions":
            return ", ".join(f"{k}={v}" for k, v in self.context_extensions)
        if condition == "host":
            return ", ".join(self.hosts)
        if condition == "method":
            return ", ".join(sorted(self.methods))
        if condition == "path":
            return f"{'exact' if self.path_kind == 'path' else self.path_kind} {self.path}"
        return ""


def _host_matches(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        suffix = pattern[1:]  # ".example.com"
        return host.endswith(suffix) and len(host) > len(suffix)
    return host == pattern


@dataclass(frozen=True, slots=True)
class Match:
    route: Route
    path: str  # as Envoy forwards it, without the query: what the upstream gets
    params: Mapping[str, str] = field(default_factory=dict)


class Policy:
    """The compiled routes of one configuration."""

    def __init__(self, routes: Sequence[Route], explicit: bool) -> None:
        self.routes = tuple(routes)
        self.explicit = explicit
        names: dict[str, None] = {}
        for route in self.routes:
            names.update(dict.fromkeys(route.identity.names))
        # Every header any route may set: each is removed from every request.
        self.identity_names = tuple(names)

    @classmethod
    def from_config(cls, config: Config) -> Policy:
        if config.routes is None:
            implicit = Route(
                name=IMPLICIT,
                mode=PROTECTED,
                shadow=False,
                identity=IdentityPlan.from_config(config.identity),
            )
            return cls([implicit], explicit=False)
        return cls(
            [_compile_route(index, route, config) for index, route in enumerate(config.routes)],
            explicit=True,
        )

    def match(self, request: RequestView, skipped: list[tuple[Route, str]] | None = None) -> Match:
        """The first route that takes ``request``; InvalidPath or NoRoute otherwise.

        ``skipped`` collects the routes passed over and why, for explain.
        """
        if not self.explicit:
            return Match(self.routes[0], request.path_without_query)
        path = normalize_path(request.path)
        host = normalize_host(request.host)
        matched = match_form(path)
        for route in self.routes:
            reason = route.mismatch(host, request.method, matched, request.context_extensions)
            if reason is None:
                return Match(route, path, route.path_params(matched) or {})
            if skipped is not None:
                skipped.append((route, reason))
        raise NoRoute(f"no route takes {request.method[:16]} {path[:200]}")

    @staticmethod
    def authorize(route: Route, token: VerifiedToken) -> Check | None:
        """The route's requirements evaluated against a verified token (None: none)."""
        return None if route.requirement is None else route.requirement.evaluate(token)


def _compile_route(index: int, route: RouteConfig, config: Config) -> Route:
    match = route.match
    kind, path = _path_condition(match)
    segments: tuple[str | None, ...] = ()
    params: tuple[str, ...] = ()
    if kind == "pattern":
        raw = path.split("/")[1:]  # parameters stay "{name}" in the match form
        segments = tuple(None if s.startswith("{") else s for s in raw)
        params = tuple(s[1:-1] for s in raw if s.startswith("{"))
    roles_path = claim_path(route.roles_claim or config.roles_claim)
    return Route(
        name=route.name,
        index=index,
        mode=route.mode,
        shadow=route.shadow,
        identity=IdentityPlan.from_config(config.identity, route.identity),
        requirement=(
            None
            if route.requirements is None
            else _compile_requirement(route.requirements, roles_path, "requirements")
        ),
        hosts=tuple(match.hosts or ()),
        methods=frozenset(match.methods or ()),
        path_kind=kind,
        path=path,
        segments=segments,
        params=params,
        context_extensions=tuple(sorted((match.context_extensions or {}).items())),
        unverified_credentials=route.unverified_credentials,
    )


def _path_condition(match: MatchConfig) -> tuple[str, str]:
    for kind in ("path", "prefix", "pattern"):
        value = getattr(match, kind)
        if value is not None:
            return kind, value
    return "", ""


def _compile_requirement(
    requirement: RequirementConfig, roles_path: tuple[str, ...], label: str = "all of"
) -> _Requirement:
    parts: list[_Requirement] = []
    if requirement.issuers:
        parts.append(_Issuers(tuple(requirement.issuers)))
    if requirement.scopes:
        parts.append(_Scopes(tuple(requirement.scopes)))
    if requirement.roles:
        parts.append(_Roles(tuple(requirement.roles), roles_path))
    parts.extend(_compile_claim(matcher) for matcher in requirement.claims or ())
    parts.extend(_compile_requirement(nested, roles_path) for nested in requirement.all_of or ())
    if requirement.any_of:
        parts.append(_AnyOf(tuple(_compile_requirement(n, roles_path) for n in requirement.any_of)))
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
