"""Routes: which rule applies to a request (requirements.py: whether a token meets it).

Routes are tried in the order of the file; the first whose every condition
holds is the route (host, method, path, Envoy ``context_extensions``). A
request no route takes is denied (403 ``no_route``): deny by default. A path
is matched only once paths.py has accepted it (Envoy's normal form, nothing
ambiguous) and lookalikes.py has found nothing an upstream may read as
another path, in its match form: escapes decoded, one trailing slash dropped.

- ``path: /orders``         exactly ``/orders`` (and so ``/orders/``);
- ``prefix: /orders``       ``/orders`` and everything below it, whole segments
  only: ``/orders/7`` yes, ``/orders-archive`` no;
- ``pattern: /orders/{id}`` one non-empty segment per ``{name}``.

Paths are compared exactly, or with ``ignore_case: true`` both sides case
folded (lookalikes.fold_case); a pattern's parameters keep the case sent.

Without ``routes`` in the configuration there is one implicit route, which
takes every request and needs a valid token: the behaviour before routes
existed. The path is not examined then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from authz.check.identity import IdentityPlan
from authz.check.request import RequestView
from authz.check.requirements import Check, Requirement, compile_requirement
from authz.check.verify import VerifiedToken
from authz.config.models import Config
from authz.config.rules import MatchConfig, Mode, RouteConfig, claim_path
from authz.config.sender import SenderConstraint
from authz.errors import NoRoute
from authz.forms.hosts import normalize_host
from authz.forms.lookalikes import PathReading, fold_case
from authz.forms.paths import match_form, normalize_path

__all__ = ["Check", "Match", "Mode", "PathKind", "Policy", "Route"]

PUBLIC: Final[Mode] = "public"
OPTIONAL: Final[Mode] = "optional"
PROTECTED: Final[Mode] = "protected"
# How a route's path condition compares; "" for a route that takes any path.
PathKind = Literal["path", "prefix", "pattern", ""]
# The name of the implicit route of a configuration without routes.
IMPLICIT = ""


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    mode: Mode
    shadow: bool
    identity: IdentityPlan
    requirement: Requirement | None = None
    hosts: tuple[str, ...] = ()
    methods: frozenset[str] = frozenset()
    path_kind: PathKind = ""
    path: str = ""  # in match form (paths.match_form), case folded if ignore_case
    segments: tuple[str | None, ...] = ()  # a pattern's segments; None is a parameter
    ignore_case: bool = False
    params: tuple[str, ...] = ()
    context_extensions: tuple[tuple[str, str], ...] = ()
    index: int = -1  # position in routes[], -1 for the implicit route
    unverified_credentials: Literal["remove", "forward"] = "remove"
    # What a token must prove about its sender here (config/sender.py).
    sender_constraint: SenderConstraint = "none"

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
        if self.path_kind == "pattern":
            parts = path.split("/")[1:]
            if len(parts) != len(self.segments) or "" in parts:
                return None
            values: list[str] = []
            for part, segment in zip(parts, self.segments, strict=True):
                if segment is None:
                    values.append(part)  # as sent: a parameter's case is the upstream's
                elif (fold_case(part) if self.ignore_case else part) != segment:
                    return None
            return dict(zip(self.params, values, strict=True))
        seen = fold_case(path) if self.ignore_case and self.path_kind else path
        if self.path_kind == "path":
            return {} if seen == self.path else None
        if self.path_kind == "prefix":
            taken = self.path in ("/", seen) or seen.startswith(self.path + "/")
            return {} if taken else None
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
            kind = "exact" if self.path_kind == "path" else self.path_kind
            return f"{kind} {self.path}" + (" (ignoring case)" if self.ignore_case else "")
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

    def __init__(
        self, routes: Sequence[Route], explicit: bool, reading: PathReading | None = None
    ) -> None:
        self.routes = tuple(routes)
        self.explicit = explicit
        self.reading = reading or PathReading()
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
            reading=config.paths.reading(),
        )

    def after(self, route: Route) -> Policy:
        """The routes after ``route``: where a request a shadow route takes goes on."""
        position = next(n for n, each in enumerate(self.routes) if each is route)
        return Policy(self.routes[position + 1 :], explicit=True, reading=self.reading)

    def match(self, request: RequestView, skipped: list[tuple[Route, str]] | None = None) -> Match:
        """The first route that takes ``request``; InvalidPath or NoRoute otherwise.

        ``skipped`` collects the routes passed over and why, for explain.
        """
        if not self.explicit:
            return Match(self.routes[0], request.path_without_query)
        path = normalize_path(request.path)
        host = normalize_host(request.host)
        matched = match_form(path)
        self.reading.check(matched)
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
    if match.ignore_case:  # the route's side folded once; the request's per match
        segments = tuple(None if s is None else fold_case(s) for s in segments)
        path = path if kind == "pattern" else fold_case(path)
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
            else compile_requirement(route.requirements, roles_path, "requirements")
        ),
        hosts=tuple(match.hosts or ()),
        methods=frozenset(match.methods or ()),
        path_kind=kind,
        path=path,
        segments=segments,
        params=params,
        ignore_case=match.ignore_case,
        context_extensions=tuple(sorted((match.context_extensions or {}).items())),
        unverified_credentials=route.unverified_credentials,
        sender_constraint=route.sender_constraint,
    )


def _path_condition(match: MatchConfig) -> tuple[PathKind, str]:
    if match.path is not None:
        return "path", match.path
    if match.prefix is not None:
        return "prefix", match.prefix
    if match.pattern is not None:
        return "pattern", match.pattern
    return "", ""
