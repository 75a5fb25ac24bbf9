"""The rule sections of the configuration: ``routes``, their requirements, revocation.

Only the shape of each section is checked here; checks that need the whole
file (route names unique, issuers configured, headers in the identity
namespace) live in ``config.loader.parse_config`` so they can name the line.
``policy.py`` compiles these models into matchers once per loaded config.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from authz.config.base import Model, PathModel
from authz.config.sender import SenderConstraint
from authz.forms.lookalikes import PathReading
from authz.forms.paths import config_path

__all__ = [
    "ClaimMatcherConfig",
    "ClaimPath",
    "MatchConfig",
    "Mode",
    "PathsConfig",
    "RequirementConfig",
    "RevocationConfig",
    "RouteConfig",
    "RouteIdentityConfig",
    "claim_path",
    "valid_claim_path",
]

Mode = Literal["public", "optional", "protected"]
MAX_CLAIM_DEPTH = 8
_ROUTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_LABEL = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?"
_HOST = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$|^\[[0-9a-f:.]+\]$")
_METHOD = re.compile(r"^[A-Z][A-Z_-]*$")
_PARAM = re.compile(r"^\{[A-Za-z_][A-Za-z0-9_]*\}$")
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")  # RFC 6749 §3.3 scope-token


def claim_path(value: str | list[str]) -> tuple[str, ...]:
    """A claim path as segments: ``"realm_access.roles"`` or ``["https://x/roles"]``."""
    return tuple(value.split(".")) if isinstance(value, str) else tuple(value)


def valid_claim_path(value: str | list[str]) -> str | list[str]:
    parts = claim_path(value)
    if not parts or any(not part for part in parts):
        raise ValueError(
            "a claim path is NAME or NAME.NAME...; write a name that contains dots as a "
            'list, e.g. ["https://example.com/roles"]'
        )
    if len(parts) > MAX_CLAIM_DEPTH:
        raise ValueError(f"a claim path has at most {MAX_CLAIM_DEPTH} parts")
    return value


ClaimPath = Annotated[str | list[str], AfterValidator(valid_claim_path)]
Scalar = str | int | float | bool


def _normal_path(value: str) -> str:
    """The path in match form (escapes decoded), as requests are matched."""
    try:
        return config_path(value)
    except ValueError as exc:
        raise ValueError(str(exc)) from None


def _valid_pattern(value: str) -> str:
    literal = "/".join("x" if _PARAM.match(segment) else segment for segment in value.split("/"))
    if "{" in literal or "}" in literal:
        raise ValueError(
            "a parameter is a whole segment named with letters, digits and _: "
            "/orders/{id}, not /orders/v{id}"
        )
    _normal_path(literal)
    names = [segment for segment in value.split("/") if _PARAM.match(segment)]
    if len(names) != len(set(names)):
        raise ValueError("a parameter name appears twice")
    # Literal segments in match form, like paths; parameters stay "{name}".
    return "/" + "/".join(
        segment if _PARAM.match(segment) else config_path("/" + segment)[1:]
        for segment in value.split("/")[1:]
    )


class MatchConfig(Model):
    """Which requests a route takes; every condition given must hold."""

    hosts: Annotated[list[str], Field(min_length=1)] | None = None
    methods: Annotated[list[str], Field(min_length=1)] | None = None
    path: Annotated[str, AfterValidator(_normal_path)] | None = None
    prefix: Annotated[str, AfterValidator(_normal_path)] | None = None
    pattern: Annotated[str, AfterValidator(_valid_pattern)] | None = None
    context_extensions: dict[str, str] | None = None
    # Compare path, prefix or pattern without regard to case, for a route in
    # front of an upstream that reads /orders/ADMIN as /orders/admin.
    ignore_case: bool = False

    @model_validator(mode="after")
    def _check(self) -> MatchConfig:
        given = [name for name in ("path", "prefix", "pattern") if getattr(self, name)]
        if len(given) > 1:
            raise ValueError(f"give at most one of path, prefix, pattern (got {', '.join(given)})")
        if self.ignore_case and not given:
            raise ValueError("ignore_case needs a path, prefix or pattern to compare")
        for host in self.hosts or ():
            if not _HOST.match(host):
                raise ValueError(
                    f"host {host!r} is not a lower-case host name (without port) or *.suffix"
                )
        for method in self.methods or ():
            if not _METHOD.match(method):
                raise ValueError(f"method {method!r} is not an upper-case HTTP method")
        return self


class ClaimMatcherConfig(Model):
    """One claim compared with a value: exactly one of equals, one_of, contains."""

    claim: ClaimPath
    equals: Scalar | None = None
    one_of: Annotated[list[Scalar], Field(min_length=1)] | None = None
    contains: Scalar | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ClaimMatcherConfig:
        given = [
            name for name in ("equals", "one_of", "contains") if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of equals, one_of, contains"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self


class RequirementConfig(Model):
    """What a verified token must carry. Every key given must hold (all of them).

    ``issuers`` (one of), ``scopes`` (all), ``roles`` (all), ``claims`` (all),
    ``all_of`` (every nested requirement), ``any_of`` (at least one).
    """

    issuers: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] | None = None
    scopes: Annotated[list[str], Field(min_length=1)] | None = None
    roles: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] | None = None
    claims: Annotated[list[ClaimMatcherConfig], Field(min_length=1)] | None = None
    all_of: Annotated[list[RequirementConfig], Field(min_length=1)] | None = None
    any_of: Annotated[list[RequirementConfig], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _check(self) -> RequirementConfig:
        if all(getattr(self, name) is None for name in type(self).model_fields):
            raise ValueError(
                "an empty requirement; give issuers, scopes, roles, claims, all_of or any_of"
            )
        for scope in self.scopes or ():
            if not _SCOPE_TOKEN.match(scope):
                raise ValueError(f"scope {scope!r} is not an OAuth scope token (no spaces)")
        return self


class RouteIdentityConfig(Model):
    """Per-route changes to the ``identity`` section; what is not given is inherited."""

    headers: dict[str, ClaimPath] | None = None
    # A header name, or false: no payload header on this route.
    payload_header: str | Literal[False] | None = None
    strip_authorization: bool | None = None


class RouteConfig(Model):
    name: str
    match: MatchConfig = Field(default_factory=MatchConfig)
    # No default: whether a route needs a token is the first thing to state.
    mode: Mode
    shadow: bool = False
    requirements: RequirementConfig | None = None
    roles_claim: ClaimPath | None = None
    identity: RouteIdentityConfig | None = None
    # An Authorization header or access_token query parameter authz did not
    # verify (public routes, optional ones without a token): removed, or passed on.
    unverified_credentials: Literal["remove", "forward"] = "remove"
    # What a token must prove it is sent by its holder with (config/sender.py).
    sender_constraint: SenderConstraint = "none"

    @model_validator(mode="after")
    def _check(self) -> RouteConfig:
        if not _ROUTE_NAME.match(self.name):
            raise ValueError(f"route name {self.name!r}: 1-64 characters of A-Z a-z 0-9 _ . : -")
        if self.sender_constraint != "none" and self.mode == "public":
            raise ValueError(
                f"sender_constraint {self.sender_constraint} needs mode: protected or "
                "optional; a public route verifies no token to constrain"
            )
        if self.requirements is not None and self.mode != "protected":
            raise ValueError(
                f"requirements need mode: protected (this route is {self.mode}); "
                "a public or optional route would let a request without a token through"
            )
        return self


class PathsConfig(Model):
    """Paths in normal form that an upstream may still read as another path
    (forms/lookalikes.py): refused, or matched as written."""

    # A percent-escape decoding to text Unicode normalization (NFKC) changes,
    # to an invisible format character, or to an unassigned code point.
    lookalikes: Literal["refuse", "allow"] = "refuse"
    # A segment ending in "." or a space, which IIS and Windows stacks drop.
    trailing_dot_or_space: Literal["refuse", "allow"] = "refuse"

    def reading(self) -> PathReading:
        """These settings as the path checks read them."""
        return PathReading(
            refuse_lookalikes=self.lookalikes == "refuse",
            refuse_trailing_dot_or_space=self.trailing_dot_or_space == "refuse",
        )


class RevocationConfig(PathModel):
    """A deny-list file: one ``jti:VALUE`` or ``sub:VALUE`` per line, ``#`` comments."""

    PATH_KEYS = ("file",)

    file: Path
