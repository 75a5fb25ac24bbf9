"""Reading the configuration file: YAML in, frozen and validated objects out, once.

Every problem is reported as ``FILE:LINE: key.path: what is wrong`` so an
operator can fix it without reading code. Unknown keys are errors (a typo must
not silently disable a check), and so are duplicate keys in a YAML mapping.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import yaml
from pydantic import ValidationError

from authz.config.models import Config, check_identity_header
from authz.config.rules import RequirementConfig
from authz.errors import ConfigError, InvalidPath

__all__ = ["config_version", "load_config", "parse_config"]


def load_config(path: str | Path) -> Config:
    """Read and validate a configuration file, or raise ConfigError naming the problem."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read: {exc}") from exc
    return parse_config(text, source=str(file), base_dir=file.resolve().parent)


def parse_config(text: str, source: str = "<config>", base_dir: Path | None = None) -> Config:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if root is not None:
        _reject_duplicate_keys(root, source, ())
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    data = {**data, "base_dir": base_dir or Path.cwd()}
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, root, source)) from None
    # Checked here rather than in a validator, to name the duplicate's own line.
    seen: set[str] = set()
    for index, issuer in enumerate(config.issuers):
        if issuer.issuer in seen:
            loc = ("issuers", index, "issuer")
            raise ConfigError(
                f"{source}:{_line_of(root, loc)}: {_dotted(loc)}: "
                f"issuer {issuer.issuer!r} is configured twice"
            )
        seen.add(issuer.issuer)
    _check_routes(config, root, source)
    _check_readiness(config, root, source)
    for where, message in sender_problems(config):
        raise ConfigError(f"{source}:{_line_of(root, where)}: {_dotted(where)}: {message}")
    config._version = config_version(text)
    return config


def config_version(text: str) -> str:
    """The first 12 hex digits of the SHA-256 of the configuration text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _check_readiness(config: Config, root: yaml.Node | None, source: str) -> None:
    """A listed issuer must be a configured one: a typo would never become ready."""
    if isinstance(config.readiness, str):
        return
    issuers = {issuer.issuer for issuer in config.issuers}
    for index, issuer in enumerate(config.readiness):
        if issuer not in issuers:
            loc = ("readiness", index)
            raise ConfigError(
                f"{source}:{_line_of(root, loc)}: {_dotted(loc)}: "
                f"issuer {issuer!r} is not one of the configured issuers"
            )


def _check_routes(config: Config, root: yaml.Node | None, source: str) -> None:
    """Route checks that need the whole file: unique names, known issuers, namespace,
    paths that ``paths`` refuses in every request, and no ``allow_no_routes``
    beside routes."""

    def fail(loc: tuple[str | int, ...], message: str) -> ConfigError:
        return ConfigError(f"{source}:{_line_of(root, loc)}: {_dotted(loc)}: {message}")

    if config.allow_no_routes and config.routes is not None:
        raise fail(
            ("allow_no_routes",),
            "says this file has no routes on purpose, but it has routes: remove one or the other",
        )
    issuers = {issuer.issuer for issuer in config.issuers}
    reading = config.paths.reading()
    names: set[str] = set()
    for index, route in enumerate(config.routes or ()):
        where: tuple[str | int, ...] = ("routes", index)
        if route.name in names:
            raise fail((*where, "name"), f"route name {route.name!r} is used twice")
        names.add(route.name)
        path = route.match.path or route.match.prefix or route.match.pattern
        try:
            reading.check(path or "/")
        except InvalidPath as exc:  # every request to it would be refused
            raise fail((*where, "match"), f"no request can reach this path: {exc.detail}") from None
        if route.requirements is not None:
            for loc, issuer in _required_issuers(route.requirements, (*where, "requirements")):
                if issuer not in issuers:
                    raise fail(loc, f"issuer {issuer!r} is not one of the configured issuers")
        identity = route.identity
        if identity is None:
            continue
        payload = [identity.payload_header] if identity.payload_header else []
        for header in [*(identity.headers or {}), *payload]:
            try:
                check_identity_header(header, config.identity.namespace)
            except ValueError as exc:
                raise fail((*where, "identity"), str(exc)) from None


def _required_issuers(
    requirement: RequirementConfig, loc: tuple[str | int, ...]
) -> list[tuple[tuple[str | int, ...], str]]:
    found = [
        ((*loc, "issuers", index), issuer) for index, issuer in enumerate(requirement.issuers or ())
    ]
    for key in ("all_of", "any_of"):
        for index, nested in enumerate(getattr(requirement, key) or ()):
            found += _required_issuers(nested, (*loc, key, index))
    return found


def _reject_duplicate_keys(node: yaml.Node, source: str, path: tuple[str | int, ...]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                line = key_node.start_mark.line + 1
                where = _dotted((*path, key))
                raise ConfigError(f"{source}:{line}: {where}: duplicate key")
            seen.add(key)
            _reject_duplicate_keys(value_node, source, (*path, key))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _reject_duplicate_keys(item, source, (*path, index))


def _format_errors(exc: ValidationError, root: yaml.Node | None, source: str) -> str:
    lines = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        line = _line_of(root, loc)
        where = f"{source}:{line}" if line else source
        if error["type"] == "extra_forbidden":
            message = "unknown key (misspelt, or not valid here)"
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            given = error.get("input")
            # Echo short scalars only: a mapping could hold key material.
            if isinstance(given, str | int | float) and len(str(given)) <= 80:
                message += f" (got {given!r})"
        lines.append(f"{where}: {_dotted(loc) or '(top level)'}: {message}")
    return "\n".join(lines)


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(node: yaml.Node | None, loc: tuple[str | int, ...]) -> int | None:
    """The 1-based line of the deepest YAML node along ``loc``."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == part:
                    child = value_node
                    line = key_node.start_mark.line + 1
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


Loc = tuple[str | int, ...]


def sender_problems(config: Config) -> Iterator[tuple[Loc, str]]:
    """Settings that contradict each other, each with where it is written."""
    sections = {"dpop": config.dpop is not None, "mtls": config.mtls is not None}
    for index, issuer in enumerate(config.issuers):
        for kind in issuer.issues:
            if kind != "bearer" and not sections[kind]:
                loc: Loc = ("issuers", index, "issues")
                yield loc, f"{kind} tokens need a top-level {kind} section"
    issuing = {issuer.issuer: set(issuer.issues) for issuer in config.issuers}
    for index, route in enumerate(config.routes or ()):
        constraint = route.sender_constraint
        if constraint == "none":
            continue
        loc = ("routes", index, "sender_constraint")
        schemes = ["dpop", "mtls"] if constraint in ("optional", "any") else [constraint]
        configured = [scheme for scheme in schemes if sections[scheme]]
        if not configured:
            yield loc, f"{constraint} needs a top-level {' or '.join(schemes)} section"
            continue
        if constraint == "optional":
            continue
        named = route.requirements.issuers if route.requirements else None
        candidates: Sequence[str] = named or list(issuing)
        if not any(set(configured) & issuing.get(name, set()) for name in candidates):
            kinds = " or ".join(configured)
            yield loc, f"no issuer this route accepts issues {kinds} tokens (issuers[].issues)"
