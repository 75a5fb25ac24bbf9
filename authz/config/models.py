"""The configuration's models: every section of the file as a frozen, validated
object (loader.py reads the file into them). Unknown keys are errors (a typo
must not silently disable a check), and nothing is coerced.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from authz.config.base import Model, PathModel, check_listen
from authz.config.observability import AuditConfig, TelemetryConfig
from authz.config.rules import (
    ClaimPath,
    PathsConfig,
    RevocationConfig,
    RouteConfig,
    valid_claim_path,
)
from authz.config.sender import DpopConfig, MtlsConfig, TokenKind
from authz.config.serving import ListenTlsConfig, ServingConfig

__all__ = [
    "ALGORITHMS",
    "Config",
    "EnvoyConfig",
    "IdentityConfig",
    "IssuerConfig",
    "KeySourceConfig",
    "ListenTlsConfig",
    "ServingConfig",
    "check_identity_header",
]

# Algorithms a verifier may be configured for. "none" is deliberately absent.
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
ALGORITHMS: tuple[str, ...] = get_args(Algorithm)

_HEADER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_REALM = re.compile(r"^[\x20-\x7e]*$")


class _PathModel(PathModel):
    PATH_KEYS = ("jwks_file", "pem_file", "secret_file", "ca_file", "token_file")


class KubernetesSource(_PathModel):
    """Service-account token keys from the cluster's own OIDC endpoints.

    The API server serves ``/.well-known/openid-configuration`` and
    ``/openid/v1/jwks``; both are read with the pod's projected token and the
    cluster CA, which every pod has mounted at these default paths.
    """

    api_server: str = "https://kubernetes.default.svc"
    token_file: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    ca_file: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")


class KeySourceConfig(_PathModel):
    """One source of verification keys for an issuer; exactly one of
    ``jwks_file``, ``jwks``, ``pem_file``, ``secret_file`` (local) or
    ``jwks_uri``, ``discovery``, ``kubernetes`` (fetched) is set."""

    jwks_file: Path | None = None
    jwks: dict[str, Any] | None = None
    pem_file: Path | None = None
    secret_file: Path | None = None
    jwks_uri: str | None = Field(default=None, min_length=1)
    # true: {issuer}/.well-known/openid-configuration; or the document's own URL.
    discovery: Literal[True] | str | None = None
    kubernetes: KubernetesSource | None = None
    kid: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> KeySourceConfig:
        names = ("jwks_file", "jwks", "pem_file", "secret_file", "jwks_uri", "discovery")
        given = [name for name in (*names, "kubernetes") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of {', '.join(names)}, kubernetes"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.kid is not None and self.pem_file is None and self.secret_file is None:
            raise ValueError("kid belongs to pem_file or secret_file; a JWKS names its own kids")
        return self

    @property
    def remote(self) -> bool:
        """Fetched over HTTP(S), refreshed in the background."""
        return (
            self.jwks_uri is not None or self.discovery is not None or self.kubernetes is not None
        )

    def describe(self) -> str:
        """Where the keys come from, for messages (never the key material)."""
        if self.jwks_file is not None:
            return f"jwks_file {self.jwks_file}"
        if self.pem_file is not None:
            return f"pem_file {self.pem_file}"
        if self.secret_file is not None:
            return f"secret_file {self.secret_file}"
        if self.jwks_uri is not None:
            return f"jwks_uri {self.jwks_uri}"
        if self.discovery is not None:
            return "discovery" if self.discovery is True else f"discovery {self.discovery}"
        if self.kubernetes is not None:
            return f"kubernetes {self.kubernetes.api_server}"
        return "inline jwks"


class FetchConfig(_PathModel):
    """How an issuer's keys are fetched and kept fresh (remote sources only)."""

    ca_file: Path | None = None  # PEM bundle; default: the system's CAs
    allow_http: bool = False
    # An HTTP(S) proxy for fetches (http://proxy:3128); none unless set here:
    # HTTPS_PROXY and friends in the environment are not read.
    proxy: str | None = Field(default=None, pattern=r"^https?://[^\s/?#@]+(:\d{1,5})?/?$")
    connect_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    read_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    max_response_bytes: int = Field(default=512 * 1024, ge=1024, le=16 * 1024 * 1024)
    # Cache-Control max-age is honoured within [refresh_min, refresh_max];
    # without it, keys are refreshed every refresh_seconds.
    refresh_seconds: float = Field(default=300.0, ge=0.05, le=86_400)
    refresh_min_seconds: float = Field(default=60.0, ge=0.05, le=86_400)
    refresh_max_seconds: float = Field(default=3600.0, ge=0.05, le=86_400)
    retry_initial_seconds: float = Field(default=1.0, ge=0.01, le=3600)
    unknown_kid_cooldown_seconds: float = Field(default=30.0, ge=0, le=3600)
    # How long a Check may wait for a refetch caused by an unknown kid.
    unknown_kid_wait_seconds: float = Field(default=0.15, ge=0, le=10)
    max_stale_seconds: float = Field(default=86_400.0, ge=0.05, le=30 * 86_400)
    file_poll_seconds: float = Field(default=5.0, ge=0.05, le=3600)

    @model_validator(mode="after")
    def _intervals_ordered(self) -> FetchConfig:
        if not self.refresh_min_seconds <= self.refresh_seconds <= self.refresh_max_seconds:
            raise ValueError("need refresh_min_seconds <= refresh_seconds <= refresh_max_seconds")
        return self


def _bearer_only() -> list[TokenKind]:
    return ["bearer"]


class IssuerConfig(Model):
    issuer: str = Field(min_length=1)
    audiences: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    algorithms: Annotated[list[Algorithm], Field(min_length=1)]
    keys: Annotated[list[KeySourceConfig], Field(min_length=1)]
    leeway_seconds: int = Field(default=30, ge=0, le=300)
    # exp - iat may not exceed this (iat becomes required); none: no limit.
    max_lifetime_seconds: int | None = Field(default=None, ge=1)
    # Claims that must be present (beyond iss, aud and exp, always required).
    required_claims: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    fetch: FetchConfig = Field(default_factory=FetchConfig)
    # What this issuer's tokens may be (config/sender.py): unbound bearer
    # tokens, DPoP-bound (cnf.jkt), certificate-bound (cnf["x5t#S256"]).
    issues: Annotated[list[TokenKind], Field(min_length=1)] = Field(default_factory=_bearer_only)

    @field_validator("issues")
    @classmethod
    def _issues_unique(cls, value: list[TokenKind]) -> list[TokenKind]:
        if len(value) != len(set(value)):
            raise ValueError("a token kind is listed twice")
        return value

    @model_validator(mode="after")
    def _hmac_needs_secret(self) -> IssuerConfig:
        wants_hmac = any(alg.startswith("HS") for alg in self.algorithms)
        has_secret = any(source.secret_file is not None for source in self.keys)
        if wants_hmac and not has_secret:
            raise ValueError("HS256/HS384/HS512 need a secret_file key source")
        if has_secret and not wants_hmac:
            raise ValueError("a secret_file key source needs an HS* algorithm in algorithms")
        return self

    @model_validator(mode="after")
    def _remote_sources(self) -> IssuerConfig:
        remote = [source for source in self.keys if source.remote]
        if len(remote) > 1:
            raise ValueError("at most one of jwks_uri, discovery, kubernetes per issuer")
        for url in self.urls():
            scheme = url.split("://", 1)[0].lower() if "://" in url else ""
            if scheme == "http" and not self.fetch.allow_http:
                raise ValueError(f"{url}: http:// needs fetch.allow_http: true")
            if scheme not in ("http", "https"):
                raise ValueError(f"{url}: expected an https:// URL")
        return self

    def urls(self) -> list[str]:
        """Every URL the issuer's remote key source will fetch first."""
        urls = []
        for source in self.keys:
            if source.jwks_uri is not None:
                urls.append(source.jwks_uri)
            elif source.discovery is not None:
                urls.append(self.discovery_url(source))
            elif source.kubernetes is not None:
                urls.append(source.kubernetes.api_server)
        return urls

    def discovery_url(self, source: KeySourceConfig) -> str:
        if isinstance(source.discovery, str):
            return source.discovery
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


def _default_headers() -> dict[str, str | list[str]]:
    return {"x-auth-subject": "sub", "x-auth-issuer": "iss", "x-auth-scopes": "scope"}


class IdentityConfig(Model):
    """Verified identity handed to the upstream service as request headers.

    Every client-sent header whose name starts with ``namespace`` is removed,
    so a forged identity never reaches the upstream service.
    """

    namespace: str = Field(default="x-auth-", min_length=2)
    # header -> claim path ("sub", "realm_access.roles", or a list for names with dots).
    headers: dict[str, str | list[str]] = Field(default_factory=_default_headers)
    # The verified payload, base64url JSON exactly as signed, in one header.
    payload_header: str | None = None
    # How the token was bound to its sender on an allow with a token (none,
    # dpop or mtls), in this header; inside the namespace.
    binding_header: str | None = None
    # Remove Authorization before the upstream: it gets the identity, not the token.
    strip_authorization: bool = False
    # A claim value or a whole set that does not fit is a deny, never a truncation.
    max_header_bytes: int = Field(default=4096, ge=64, le=65536)
    max_total_bytes: int = Field(default=16384, ge=256, le=262144)
    # How a value reaches the upstream (check/identity.py): percent-encoded
    # (every verified value, exactly), or only as it is and refused otherwise.
    encoding: Literal["percent", "refuse"] = "percent"

    @field_validator("namespace")
    @classmethod
    def _namespace_is_header_prefix(cls, value: str) -> str:
        if not _HEADER_NAME.match(value):
            raise ValueError("must be a lower-case header name prefix (a-z, 0-9, '-')")
        return value

    @model_validator(mode="after")
    def _headers_in_namespace(self) -> IdentityConfig:
        for header, claim in self.headers.items():
            check_identity_header(header, self.namespace)
            if not claim:
                raise ValueError(f"header {header!r} maps to an empty claim name")
            try:
                valid_claim_path(claim)
            except ValueError as exc:
                raise ValueError(f"header {header!r}: {exc}") from None
        if self.payload_header is not None:
            check_identity_header(self.payload_header, self.namespace)
            if self.payload_header in self.headers:
                raise ValueError(f"payload_header {self.payload_header!r} is also in headers")
        if self.binding_header is not None:
            check_identity_header(self.binding_header, self.namespace)
            if self.binding_header in self.headers or self.binding_header == self.payload_header:
                raise ValueError(f"binding_header {self.binding_header!r} is also set otherwise")
        return self


class EnvoyConfig(Model):
    """What authz must know of the Envoy in front of it: its request header limits.

    Envoy refuses (500, empty body) an allow whose header changes take the
    request past these; authz answers 431 in its place (see header_budget.py).
    Set them to the HTTP connection manager's values.
    """

    # common_http_protocol_options.max_headers_count (Envoy's default: 100).
    max_request_headers_count: int = Field(default=100, ge=1, le=10_000)
    # max_request_headers_kb (Envoy's default: 60; Envoy accepts 1 to 8192).
    max_request_headers_kb: int = Field(default=60, ge=1, le=8192)


def check_identity_header(header: str, namespace: str) -> None:
    """ValueError unless ``header`` is a lower-case name inside ``namespace``."""
    if not _HEADER_NAME.match(header):
        raise ValueError(f"header {header!r} is not a lower-case header name")
    if not header.startswith(namespace):
        raise ValueError(
            f"header {header!r} must start with the namespace {namespace!r}, "
            "or a client could forge it"
        )


class Config(Model):
    listen: str = "127.0.0.1:9001"
    grace_period_seconds: float = Field(default=10.0, ge=0, le=300)
    # On SIGTERM, health turns NOT_SERVING at once but Checks are still answered
    # for this long before the listener closes: load balancers (Envoy's health
    # checks, Kubernetes endpoints, DNS) need time to stop sending to this
    # replica, and a request sent meanwhile must not fail. 0: close at once.
    shutdown_delay_seconds: float = Field(default=0.0, ge=0, le=300)
    realm: str = Field(default="authz", min_length=1, max_length=200)
    max_token_bytes: int = Field(default=8192, ge=256, le=1_048_576)
    # Verified tokens remembered, so a repeated token skips the signature check
    # (see cache.py); 0 turns the cache off.
    token_cache_entries: int = Field(default=10_000, ge=0, le=10_000_000)
    # Beyond Envoy's own limits: a CheckRequest past these is refused (431) unread.
    max_request_headers: int = Field(default=200, ge=1, le=10_000)
    max_request_header_bytes: int = Field(default=65_536, ge=1024, le=16 * 1_048_576)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    issuers: Annotated[list[IssuerConfig], Field(min_length=1)]
    identity: IdentityConfig = Field(default_factory=IdentityConfig)
    envoy: EnvoyConfig = Field(default_factory=EnvoyConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    # TLS on the listener (none: plaintext, for a Unix socket or a sidecar on loopback).
    tls: ListenTlsConfig | None = None
    # Rules (see config/rules.py). Without routes, every request needs a valid
    # token, as before routes existed; with routes, an unmatched request is denied.
    routes: Annotated[list[RouteConfig], Field(min_length=1)] | None = None
    # Paths an upstream may read as another one: refused by default.
    paths: PathsConfig = Field(default_factory=PathsConfig)
    # No routes on purpose. A reload from routes to none is refused without it: a
    # file cut before ``routes:`` (or with the section deleted by mistake) would
    # otherwise let any valid token do anything. Not ``routes: null`` or a bare
    # ``routes:``, which a cut file can end with, nor ``routes: []``, which reads
    # as "no route takes anything" (deny all), the opposite.
    allow_no_routes: bool = False
    roles_claim: ClaimPath = "roles"
    revocation: RevocationConfig | None = None
    # Sender-constrained tokens (config/sender.py): DPoP proofs, client certificates.
    dpop: DpopConfig | None = None
    mtls: MtlsConfig | None = None
    # Report every decision, enforce none: a deny is answered as an allow that
    # records the deny it would have been (see decision.py). Never a default.
    dry_run: bool = False
    # X-HTTP-Method-Override and kin, and ?_method= (check/unchecked.py): taken
    # off an allowed request, a reason to deny it, or passed on.
    method_overrides: Literal["remove", "refuse", "forward"] = "remove"
    # When the replica reports SERVING (keys/readiness.py): once ANY issuer has
    # usable keys (the default: one identity provider's outage must not keep new
    # replicas out of a mesh), once ALL have, or once each LISTED issuer has.
    readiness: Literal["any", "all"] | Annotated[list[str], Field(min_length=1)] = "any"
    # How often the config and revocation files are checked for changes; 0: never.
    watch_interval_seconds: float = Field(default=2.0, ge=0, le=3600)
    # The directory of the file, to resolve relative key paths; not a YAML key.
    base_dir: Path = Field(default=Path(), exclude=True)
    # Which file content made this object (see config_version); private, so no
    # YAML key can set it.
    _version: str = PrivateAttr(default="")

    @field_validator("listen")
    @classmethod
    def _listen_address(cls, value: str) -> str:
        return check_listen(value, unix=True)

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
