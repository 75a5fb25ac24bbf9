"""authz config show, and the logging options every command takes."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

from authz.cli import main
from authz.cli_config import effective_config
from authz.config.loader import load_config
from authz.config.models import Config
from authz.dev.keys import write_keypair
from tests.support.readme import yaml_block
from tests.support.repo import REPO_ROOT

MINIMAL = """\
issuers:
  - issuer: https://idp.example
    audiences: [api]
    algorithms: [RS256]
    keys: [{jwks_file: keys/jwks.json}]
"""

# Something of every kind: relative paths, rules with nested requirements and
# claim matchers, route identity overrides, revocation, an audit file.
EVERYTHING = """\
listen: 0.0.0.0:9001
audit: {stdout: false, file: audit/trail.jsonl}
telemetry: {metrics: {listen: 127.0.0.1:9464}, tracing: {root_sample_ratio: 0.5}}
issuers:
  - issuer: https://idp.example
    audiences: [api, other]
    algorithms: [RS256, ES256]
    keys: [{jwks_file: keys/jwks.json}, {pem_file: keys/extra.pem, kid: extra}]
    fetch: {ca_file: ca.pem}
  - issuer: https://accounts.example
    audiences: [api]
    algorithms: [RS256]
    keys: [{discovery: true}]
identity:
  headers: {x-auth-subject: sub, x-auth-tenant: [https://example.com/claims, tenant]}
revocation: {file: revoked.txt}
routes:
  - name: docs
    match: {prefix: /docs}
    mode: public
    unverified_credentials: forward
  - name: admin
    match: {methods: [POST], pattern: "/orders/{id}/refunds", hosts: [api.example]}
    mode: protected
    requirements:
      all_of:
        - {issuers: [https://idp.example], scopes: [orders:refund]}
        - any_of:
            - {roles: [admin]}
            - {claims: [{claim: tenant, one_of: [acme, globex]}]}
    identity: {payload_header: x-auth-payload, strip_authorization: true}
  - name: rest
    mode: optional
"""


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    write_keypair(tmp_path / "keys", "RS256", "k1")
    return tmp_path


@pytest.fixture
def root_logging() -> Iterator[logging.Logger]:
    """main() configures the root logger: put it back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def show(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, dict[str, Any]]:
    assert main(["config", "show", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    data: dict[str, Any] = yaml.safe_load(out)
    return out, data


def test_every_default_is_filled_in(directory: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (directory / "authz.yaml").write_text(MINIMAL)
    out, shown = show(directory / "authz.yaml", capsys)
    assert out.startswith(f"# {directory / 'authz.yaml'} (version ")
    # Every setting of the file, and none that is not one.
    assert set(shown) == set(Config.model_fields) - {"base_dir"}
    assert shown["serving"] == {"threads": 4, "max_pending_checks": 256}
    assert shown["identity"]["encoding"] == "percent"
    assert shown["identity"]["headers"] == {
        "x-auth-subject": "sub",
        "x-auth-issuer": "iss",
        "x-auth-scopes": "scope",
    }
    assert shown["audit"] == {
        "stdout": True,
        "file": None,
        "on_sink_failure": "count",
        "shutdown_timeout_seconds": 5.0,
        "late_status": 503,
    }  # queue_size is accepted but has no effect: not shown
    (issuer,) = shown["issuers"]
    assert issuer["fetch"]["refresh_seconds"] == 300.0
    assert issuer["leeway_seconds"] == 30
    assert shown["telemetry"]["metrics"]["listen"] is None  # off unless set
    assert shown["routes"] is None
    # The one key source it has, its path as serving reads it.
    assert issuer["keys"] == [{"jwks_file": str(directory / "keys" / "jwks.json")}]


@pytest.mark.parametrize(
    "source",
    ["everything", "readme", "k8s/base/authz.yaml", "k8s/sidecar/authz.yaml"],
)
def test_what_is_shown_is_a_configuration_with_the_same_meaning(
    directory: Path, capsys: pytest.CaptureFixture[str], source: str
) -> None:
    texts = {"everything": EVERYTHING, "readme": yaml_block("Writing rules")}
    text = texts[source] if source in texts else (REPO_ROOT / source).read_text()
    (directory / "authz.yaml").write_text(text)
    original = load_config(directory / "authz.yaml")
    out, _ = show(directory / "authz.yaml", capsys)
    # Loaded from elsewhere: resolved paths must not depend on the file's place.
    elsewhere = directory / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "shown.yaml").write_text(out)
    reloaded = load_config(elsewhere / "shown.yaml")
    assert effective_config(reloaded) == effective_config(original)
    if source.startswith("k8s/"):  # absolute paths only: the objects themselves are equal
        assert reloaded.model_dump() == original.model_dump()


def test_relative_paths_are_resolved(directory: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (directory / "authz.yaml").write_text(EVERYTHING)
    _, shown = show(directory / "authz.yaml", capsys)
    assert shown["audit"]["file"] == str(directory / "audit" / "trail.jsonl")
    assert shown["revocation"] == {"file": str(directory / "revoked.txt")}
    first = shown["issuers"][0]
    assert first["keys"][1] == {"pem_file": str(directory / "keys" / "extra.pem"), "kid": "extra"}
    assert first["fetch"]["ca_file"] == str(directory / "ca.pem")
    assert shown["issuers"][1]["keys"] == [{"discovery": True}]
    # Conditions a route states, and nothing for those it does not.
    assert shown["routes"][0]["match"] == {"prefix": "/docs", "ignore_case": False}
    assert shown["routes"][2] == {
        "name": "rest",
        "match": {"ignore_case": False},
        "mode": "optional",
        "shadow": False,
        "unverified_credentials": "remove",
        "sender_constraint": "none",
    }


def test_no_secret_is_shown(directory: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret = directory / "secret.key"
    secret.write_text("hmac-secret-value\n")
    token = directory / "token"
    token.write_text("service-account-token-value\n")
    public = json.loads((directory / "keys" / "jwks.json").read_text())["keys"][0]
    leaked = {**public, "d": "private-exponent-value", "unknown": "maybe-secret-value"}
    config = {
        "issuers": [
            {
                "issuer": "https://hs.example",
                "audiences": ["api"],
                "algorithms": ["HS256"],
                "keys": [{"secret_file": "secret.key", "kid": "hs"}],
            },
            {
                "issuer": "https://inline.example",
                "audiences": ["api"],
                "algorithms": ["RS256"],
                "keys": [{"jwks": {"keys": [leaked]}}],
            },
            {
                "issuer": "https://uri.example",
                "audiences": ["api"],
                "algorithms": ["RS256"],
                "keys": [{"jwks_uri": "https://reader:url-password-value@idp.example/jwks"}],
            },
            {
                "issuer": "https://kubernetes.default.svc.cluster.local",
                "audiences": ["api"],
                "algorithms": ["RS256"],
                "keys": [{"kubernetes": {"token_file": str(token)}}],
            },
        ]
    }
    (directory / "authz.yaml").write_text(yaml.safe_dump(config))
    out, shown = show(directory / "authz.yaml", capsys)
    for value in ("hmac-secret", "service-account-token", "private-exponent", "maybe-secret"):
        assert value not in out
    assert "url-password-value" not in out
    hs, inline, uri, kubernetes = (issuer["keys"][0] for issuer in shown["issuers"])
    assert hs == {"secret_file": str(secret), "kid": "hs"}
    (jwk,) = inline["jwks"]["keys"]
    assert jwk == {**public, "d": "[redacted]", "unknown": "[redacted]"}
    assert uri == {"jwks_uri": "https://[redacted]@idp.example/jwks"}
    assert kubernetes["kubernetes"]["token_file"] == str(token)


def test_an_invalid_file_is_reported_as_serve_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "authz.yaml").write_text(MINIMAL + "serving: {threads: 0}\n")
    assert main(["config", "show", "-c", str(tmp_path / "authz.yaml")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{tmp_path / 'authz.yaml'}:6: serving.threads:" in captured.err


# --- logging options: before or after the command, or from the environment ---------


def logged_line(root: logging.Logger, capsys: pytest.CaptureFixture[str]) -> str:
    """What the configured handler writes for one warning (empty when filtered out)."""
    capsys.readouterr()
    logging.getLogger("authz.test").warning("hello")
    for handler in root.handlers:
        handler.flush()
    return capsys.readouterr().err.strip()


class Case(NamedTuple):
    before: list[str]  # options before the command
    after: list[str]  # and after it
    environ: dict[str, str]
    level: int  # what the root logger is set to
    form: str  # and how it writes a line


CASES = {
    "defaults": Case([], [], {}, logging.INFO, "json"),
    "before": Case(["--log-level", "debug"], [], {}, logging.DEBUG, "json"),
    "after": Case(
        [], ["--log-level", "warning", "--log-format", "text"], {}, logging.WARNING, "text"
    ),
    "after-filters": Case([], ["--log-level", "error"], {}, logging.ERROR, "json"),
    "environment": Case(
        [], [], {"AUTHZ_LOG_LEVEL": "WARNING", "AUTHZ_LOG_FORMAT": "text"}, logging.WARNING, "text"
    ),
    "option-over-env": Case(
        [], ["--log-level", "debug"], {"AUTHZ_LOG_LEVEL": "error"}, logging.DEBUG, "json"
    ),
    "after-over-before": Case(
        ["--log-format", "json"], ["--log-format", "text"], {}, logging.INFO, "text"
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_logging_options(
    directory: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    root_logging: logging.Logger,
    case: Case,
) -> None:
    monkeypatch.delenv("AUTHZ_LOG_LEVEL", raising=False)
    monkeypatch.delenv("AUTHZ_LOG_FORMAT", raising=False)
    for name, value in case.environ.items():
        monkeypatch.setenv(name, value)
    (directory / "authz.yaml").write_text(MINIMAL)
    assert main([*case.before, "check-config", str(directory / "authz.yaml"), *case.after]) == 0
    assert root_logging.level == case.level
    line = logged_line(root_logging, capsys)
    if case.level > logging.WARNING:
        assert line == ""
    elif case.form == "json":
        assert json.loads(line)["msg"] == "hello"
    else:
        assert line.endswith("WARNING authz.test: hello")


def test_a_bad_environment_value_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTHZ_LOG_LEVEL", "verbose")
    with pytest.raises(SystemExit) as exited:
        main(["check-config", "authz.yaml"])
    assert exited.value.code == 2
    assert "AUTHZ_LOG_LEVEL='verbose': expected one of debug, info, warning, error" in (
        capsys.readouterr().err
    )


def test_every_command_takes_the_logging_options(capsys: pytest.CaptureFixture[str]) -> None:
    commands = [
        ["serve"],
        ["check-config"],
        ["config", "show"],
        ["explain"],
        ["check-envoy"],
        ["keys", "generate"],
        ["token", "mint"],
    ]
    for command in commands:
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        assert "--log-level" in capsys.readouterr().out, command
