"""The configuration file: YAML in, frozen and validated objects out, once.

Every problem is reported as ``FILE:LINE: key.path: what is wrong`` so an
operator can fix it without reading code. Unknown keys are errors (a typo must
not silently disable a check), and so are duplicate keys in a YAML mapping.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from authz.errors import ConfigError
from authz.observability_config import AuditConfig, TelemetryConfig

__all__ = [
    "ALGORITHMS",
    "Config",
    "IdentityConfig",
    "IssuerConfig",
    "KeySourceConfig",
    "config_version",
    "load_config",
    "parse_config",
]

# Algorithms a verifier may be configured for. "none" is deliberately absent.
ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
    "HS256",
    "HS384",
    "HS512",
)
Algorithm = Literal[
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
    "HS256",
    "HS384",
    "HS512",
]

_HEADER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_LISTEN_TCP = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(?P<port>\d{1,5})$")
_REALM = re.compile(r"^[\x20-\x7e]*$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class KeySourceConfig(_Model):
    """One source of verification keys for an issuer; exactly one field of
    ``jwks_file``, ``jwks``, ``pem_file`` or ``secret_file`` is set."""

    jwks_file: Path | None = None
    jwks: dict[str, Any] | None = None
    pem_file: Path | None = None
    secret_file: Path | None = None
    kid: str | None = Field(default=None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _paths_from_strings(cls, data: Any) -> Any:
        # Strict mode refuses str for Path; YAML only has strings.
        if isinstance(data, dict):
            for key in ("jwks_file", "pem_file", "secret_file"):
                if isinstance(data.get(key), str):
                    data = {**data, key: Path(data[key])}
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> KeySourceConfig:
        given = [
            name
            for name in ("jwks_file", "jwks", "pem_file", "secret_file")
            if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of jwks_file, jwks, pem_file, secret_file"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.kid is not None and (self.jwks_file is not None or self.jwks is not None):
            raise ValueError("kid belongs to pem_file or secret_file; a JWKS names its own kids")
        return self

    def describe(self) -> str:
        """Where the keys come from, for messages (never the key material)."""
        if self.jwks_file is not None:
            return f"jwks_file {self.jwks_file}"
        if self.pem_file is not None:
            return f"pem_file {self.pem_file}"
        if self.secret_file is not None:
            return f"secret_file {self.secret_file}"
        return "inline jwks"


class IssuerConfig(_Model):
    issuer: str = Field(min_length=1)
    audiences: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    algorithms: Annotated[list[Algorithm], Field(min_length=1)]
    keys: Annotated[list[KeySourceConfig], Field(min_length=1)]
    leeway_seconds: int = Field(default=30, ge=0, le=300)

    @model_validator(mode="after")
    def _hmac_needs_secret(self) -> IssuerConfig:
        wants_hmac = any(alg.startswith("HS") for alg in self.algorithms)
        has_secret = any(source.secret_file is not None for source in self.keys)
        if wants_hmac and not has_secret:
            raise ValueError("HS256/HS384/HS512 need a secret_file key source")
        if has_secret and not wants_hmac:
            raise ValueError("a secret_file key source needs an HS* algorithm in algorithms")
        return self


class IdentityConfig(_Model):
    """Verified identity handed to the upstream service as request headers.

    Every client-sent header whose name starts with ``namespace`` is removed,
    so a forged identity never reaches the upstream service.
    """

    namespace: str = Field(default="x-auth-", min_length=2)
    headers: dict[str, str] = Field(
        default_factory=lambda: {
            "x-auth-subject": "sub",
            "x-auth-issuer": "iss",
            "x-auth-scopes": "scope",
        }
    )

    @field_validator("namespace")
    @classmethod
    def _namespace_is_header_prefix(cls, value: str) -> str:
        if not _HEADER_NAME.match(value):
            raise ValueError("must be a lower-case header name prefix (a-z, 0-9, '-')")
        return value

    @model_validator(mode="after")
    def _headers_in_namespace(self) -> IdentityConfig:
        for header, claim in self.headers.items():
            if not _HEADER_NAME.match(header):
                raise ValueError(f"header {header!r} is not a lower-case header name")
            if not header.startswith(self.namespace):
                raise ValueError(
                    f"header {header!r} must start with the namespace {self.namespace!r}, "
                    "or a client could forge it"
                )
            if not claim:
                raise ValueError(f"header {header!r} maps to an empty claim name")
        return self


class Config(_Model):
    listen: str = "127.0.0.1:9001"
    grace_period_seconds: float = Field(default=10.0, ge=0, le=300)
    realm: str = Field(default="authz", min_length=1, max_length=200)
    max_token_bytes: int = Field(default=8192, ge=256, le=1_048_576)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    issuers: Annotated[list[IssuerConfig], Field(min_length=1)]
    identity: IdentityConfig = Field(default_factory=IdentityConfig)
    # The directory of the file, to resolve relative key paths; not a YAML key.
    base_dir: Path = Field(default=Path(), exclude=True)
    # Which file content made this object (see config_version); private, so no
    # YAML key can set it.
    _version: str = PrivateAttr(default="")

    @field_validator("listen")
    @classmethod
    def _listen_address(cls, value: str) -> str:
        if value.startswith("unix:"):
            if len(value) <= len("unix:"):
                raise ValueError("unix: needs a socket path, e.g. unix:/run/authz/authz.sock")
            return value
        match = _LISTEN_TCP.match(value)
        if not match or not 0 <= int(match["port"]) <= 65535:
            raise ValueError("expected HOST:PORT, [IPv6]:PORT or unix:PATH")
        return value

    @field_validator("realm")
    @classmethod
    def _realm_is_quotable(cls, value: str) -> str:
        if not _REALM.match(value) or '"' in value or "\\" in value:
            raise ValueError("must be printable ASCII without quotes or backslashes")
        return value

    @property
    def version(self) -> str:
        """A short hash of the configuration text, stamped on every audit record."""
        return self._version

    def resolve(self, path: Path) -> Path:
        """A path from the file, relative to the file's own directory."""
        return path if path.is_absolute() else self.base_dir / path


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
    config._version = config_version(text)
    return config


def config_version(text: str) -> str:
    """The first 12 hex digits of the SHA-256 of the configuration text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


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
