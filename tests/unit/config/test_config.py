"""config: YAML in, frozen objects out; errors name FILE:LINE, the key path and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from authz.config.loader import load_config, parse_config
from authz.config.models import Config, IdentityConfig
from authz.errors import ConfigError

# Line numbers below refer to this text; keep it in sync with the tests.
MINIMAL = """\
issuers:
  - issuer: https://idp.example
    audiences: [api]
    algorithms: [RS256]
    keys:
      - pem_file: keys/idp.pem
"""


def _parse(text: str, tmp_path: Path) -> Config:
    return parse_config(text, source="test.yaml", base_dir=tmp_path)


def _error(text: str, tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        _parse(text, tmp_path)
    return str(info.value)


# --- valid configurations ----------------------------------------------------


def test_minimal_config_gets_secure_defaults(tmp_path: Path) -> None:
    config = _parse(MINIMAL, tmp_path)
    assert config.listen == "127.0.0.1:9001"
    assert config.realm == "authz"
    assert config.max_token_bytes == 8192
    assert config.base_dir == tmp_path
    [issuer] = config.issuers
    assert issuer.issuer == "https://idp.example"
    assert issuer.audiences == ["api"]
    assert issuer.algorithms == ["RS256"]
    assert issuer.leeway_seconds == 30
    [source] = issuer.keys
    assert source.pem_file == Path("keys/idp.pem")
    assert source.kid is None
    assert config.identity.namespace == "x-auth-"
    assert config.identity.headers == {
        "x-auth-subject": "sub",
        "x-auth-issuer": "iss",
        "x-auth-scopes": "scope",
    }


def test_relative_key_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    config = _parse(MINIMAL, tmp_path)
    source_path = config.issuers[0].keys[0].pem_file
    assert source_path is not None
    assert config.resolve(source_path) == tmp_path / "keys" / "idp.pem"
    assert config.resolve(Path("/etc/idp.pem")) == Path("/etc/idp.pem")


def test_config_is_frozen(tmp_path: Path) -> None:
    config = _parse(MINIMAL, tmp_path)
    with pytest.raises(ValidationError):
        config.realm = "other"  # type: ignore[misc]


def test_full_config(tmp_path: Path) -> None:
    text = """\
listen: "[::1]:9443"
grace_period_seconds: 2.5
realm: api.example
max_token_bytes: 4096
issuers:
  - issuer: https://a.example
    audiences: [api, "https://api.example"]
    algorithms: [RS256, PS256, ES256, EdDSA]
    leeway_seconds: 0
    keys:
      - jwks_file: a.json
      - pem_file: a.pem
        kid: a-1
  - issuer: https://b.example
    audiences: [api]
    algorithms: [HS256]
    keys:
      - secret_file: b.key
        kid: b-1
      - jwks: {keys: []}
identity:
  namespace: x-id-
  headers:
    x-id-user: sub
    x-id-groups: groups
"""
    config = _parse(text, tmp_path)
    assert config.listen == "[::1]:9443"
    assert config.grace_period_seconds == 2.5
    assert config.realm == "api.example"
    assert config.max_token_bytes == 4096
    first, second = config.issuers
    assert first.leeway_seconds == 0
    assert first.keys[0].jwks_file == Path("a.json")
    assert first.keys[1].kid == "a-1"
    assert second.keys[0].secret_file == Path("b.key")
    assert second.keys[1].jwks == {"keys": []}
    assert config.identity == IdentityConfig(
        namespace="x-id-", headers={"x-id-user": "sub", "x-id-groups": "groups"}
    )


@pytest.mark.parametrize(
    "listen", ["unix:/run/authz/authz.sock", "0.0.0.0:0", "localhost:65535", "[::]:9001"]
)
def test_listen_addresses_accepted(tmp_path: Path, listen: str) -> None:
    config = _parse(f'listen: "{listen}"\n' + MINIMAL, tmp_path)
    assert config.listen == listen


def test_load_config_reads_a_file_and_uses_its_directory(tmp_path: Path) -> None:
    directory = tmp_path / "etc"
    directory.mkdir()
    path = directory / "authz.yaml"
    path.write_text(MINIMAL, encoding="utf-8")
    config = load_config(path)
    assert config.base_dir == directory.resolve()
    assert config.issuers[0].issuer == "https://idp.example"


def test_load_config_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "authz.yaml"
    path.write_text(MINIMAL.replace("audiences", "audience"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert f"{path}:3: issuers[0].audience: unknown key" in str(info.value)


# --- errors: FILE:LINE: key.path: problem ------------------------------------


def test_unknown_key_is_a_typo_error(tmp_path: Path) -> None:
    text = MINIMAL + "    leway_seconds: 10\n"
    message = _error(text, tmp_path)
    assert message.startswith("test.yaml:7: issuers[0].leway_seconds: unknown key")


def test_misspelt_required_key_reports_both_problems(tmp_path: Path) -> None:
    message = _error(MINIMAL.replace("audiences", "audience"), tmp_path)
    first, second = message.splitlines()
    assert first == "test.yaml:2: issuers[0].audiences: Field required"
    assert second.startswith("test.yaml:3: issuers[0].audience: unknown key")


def test_unknown_top_level_key(tmp_path: Path) -> None:
    message = _error("listne: 127.0.0.1:1\n" + MINIMAL, tmp_path)
    assert message.startswith("test.yaml:1: listne: unknown key")


def test_missing_issuers(tmp_path: Path) -> None:
    message = _error("realm: api\n", tmp_path)
    assert message == "test.yaml:1: issuers: Field required"


def test_empty_issuers(tmp_path: Path) -> None:
    message = _error("realm: api\nissuers: []\n", tmp_path)
    assert message.startswith("test.yaml:2: issuers: List should have at least 1 item")


def test_none_algorithm_is_refused(tmp_path: Path) -> None:
    message = _error(MINIMAL.replace("[RS256]", "[RS256, none]"), tmp_path)
    assert message.startswith("test.yaml:4: issuers[0].algorithms[1]: Input should be ")
    assert "'RS256'" in message
    # "none" is only ever echoed back as the bad input, never offered as a choice.
    assert message.count("'none'") <= 1
    assert "(got 'none')" in message or "'none'" not in message


@pytest.mark.parametrize("alg", ["rs256", "HS1", "ES256K", "None"])
def test_unknown_algorithms_are_refused(tmp_path: Path, alg: str) -> None:
    message = _error(MINIMAL.replace("[RS256]", f"[{alg}]"), tmp_path)
    assert message.startswith("test.yaml:4: issuers[0].algorithms[0]: Input should be ")


def test_empty_algorithm_list_is_refused(tmp_path: Path) -> None:
    # No default algorithms: the operator states them.
    message = _error(MINIMAL.replace("[RS256]", "[]"), tmp_path)
    assert message.startswith("test.yaml:4: issuers[0].algorithms: List should have at least 1")


def test_missing_algorithms_is_refused(tmp_path: Path) -> None:
    message = _error(MINIMAL.replace("    algorithms: [RS256]\n", ""), tmp_path)
    assert message == "test.yaml:2: issuers[0].algorithms: Field required"


def test_hmac_algorithm_without_secret_file(tmp_path: Path) -> None:
    message = _error(MINIMAL.replace("[RS256]", "[RS256, HS256]"), tmp_path)
    assert message == "test.yaml:2: issuers[0]: HS256/HS384/HS512 need a secret_file key source"


def test_secret_file_without_hmac_algorithm(tmp_path: Path) -> None:
    text = MINIMAL.replace("pem_file: keys/idp.pem", "secret_file: keys/idp.key")
    message = _error(text, tmp_path)
    assert message == (
        "test.yaml:2: issuers[0]: a secret_file key source needs an HS* algorithm in algorithms"
    )


def test_two_key_sources_in_one_entry(tmp_path: Path) -> None:
    text = MINIMAL + "        jwks_file: keys/idp.json\n"
    message = _error(text, tmp_path)
    assert message == (
        "test.yaml:6: issuers[0].keys[0]: give exactly one of jwks_file, jwks, pem_file, "
        "secret_file, jwks_uri, discovery, kubernetes (got jwks_file, pem_file)"
    )


def test_key_entry_without_a_source(tmp_path: Path) -> None:
    text = MINIMAL.replace("pem_file: keys/idp.pem", "kid: lonely")
    message = _error(text, tmp_path)
    assert message == (
        "test.yaml:6: issuers[0].keys[0]: give exactly one of jwks_file, jwks, pem_file, "
        "secret_file, jwks_uri, discovery, kubernetes"
    )


def test_kid_with_jwks_file(tmp_path: Path) -> None:
    text = MINIMAL.replace("pem_file: keys/idp.pem", "jwks_file: keys/idp.json\n        kid: k1")
    message = _error(text, tmp_path)
    assert message == (
        "test.yaml:6: issuers[0].keys[0]: kid belongs to pem_file or secret_file; "
        "a JWKS names its own kids"
    )


def test_empty_kid(tmp_path: Path) -> None:
    text = MINIMAL + '        kid: ""\n'
    message = _error(text, tmp_path)
    assert message.startswith("test.yaml:7: issuers[0].keys[0].kid: String should have at least 1")


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    text = MINIMAL.replace("    audiences: [api]\n", "    audiences: [api]\n    audiences: [x]\n")
    message = _error(text, tmp_path)
    assert message == "test.yaml:4: issuers[0].audiences: duplicate key"


def test_duplicate_yaml_key_in_a_nested_list(tmp_path: Path) -> None:
    text = MINIMAL + "        pem_file: keys/other.pem\n"
    message = _error(text, tmp_path)
    assert message == "test.yaml:7: issuers[0].keys[0].pem_file: duplicate key"


def test_duplicate_top_level_key(tmp_path: Path) -> None:
    message = _error("realm: a\nrealm: b\n" + MINIMAL, tmp_path)
    assert message == "test.yaml:2: realm: duplicate key"


SECOND_ISSUER = """\
  - issuer: https://idp.example
    audiences: [other]
    algorithms: [ES256]
    keys:
      - pem_file: keys/other.pem
"""


def test_duplicate_issuer_is_refused(tmp_path: Path) -> None:
    message = _error(MINIMAL + SECOND_ISSUER, tmp_path)
    assert message.startswith("test.yaml:")
    assert "issuer 'https://idp.example' is configured twice" in message


def test_duplicate_issuer_error_names_the_second_entry(tmp_path: Path) -> None:
    message = _error(MINIMAL + SECOND_ISSUER, tmp_path)
    assert message.startswith("test.yaml:7: issuers[1]")


@pytest.mark.parametrize(
    "listen",
    ["localhost", "127.0.0.1", "127.0.0.1:99999", "127.0.0.1:", ":9001", "unix:", "[zz]:1"],
)
def test_bad_listen_address(tmp_path: Path, listen: str) -> None:
    message = _error(f'listen: "{listen}"\n' + MINIMAL, tmp_path)
    assert message.startswith("test.yaml:1: listen: ")
    assert "HOST:PORT" in message or "unix: needs a socket path" in message


def test_unix_listen_without_path_names_the_problem(tmp_path: Path) -> None:
    message = _error('listen: "unix:"\n' + MINIMAL, tmp_path)
    assert message.startswith(
        "test.yaml:1: listen: unix: needs a socket path, e.g. unix:/run/authz/authz.sock"
    )


# YAML spellings: a double quote, a backslash, non-ASCII, a tab, a newline.
@pytest.mark.parametrize("realm", ["'a\"b'", "'a\\b'", "café", '"tab\\there"', '"a\\nb"'])
def test_realm_that_cannot_be_quoted_is_refused(tmp_path: Path, realm: str) -> None:
    message = _error(MINIMAL + f"realm: {realm}\n", tmp_path)
    assert message.startswith(
        "test.yaml:7: realm: must be printable ASCII without quotes or backslashes"
    )


def test_identity_header_outside_the_namespace_is_refused(tmp_path: Path) -> None:
    text = MINIMAL + "identity:\n  headers:\n    x-user: sub\n"
    message = _error(text, tmp_path)
    assert message.startswith("test.yaml:7: identity: ")
    assert "'x-user' must start with the namespace 'x-auth-'" in message
    assert "forge" in message


def test_identity_header_must_be_lower_case(tmp_path: Path) -> None:
    text = MINIMAL + "identity:\n  headers:\n    X-Auth-User: sub\n"
    message = _error(text, tmp_path)
    assert message.startswith("test.yaml:7: identity: ")
    assert "'X-Auth-User' is not a lower-case header name" in message


def test_identity_header_with_empty_claim_is_refused(tmp_path: Path) -> None:
    text = MINIMAL + 'identity:\n  headers:\n    x-auth-user: ""\n'
    message = _error(text, tmp_path)
    assert "'x-auth-user' maps to an empty claim name" in message


def test_identity_namespace_must_be_a_lower_case_prefix(tmp_path: Path) -> None:
    text = MINIMAL + "identity:\n  namespace: X-Auth-\n  headers: {}\n"
    message = _error(text, tmp_path)
    assert message.startswith("test.yaml:8: identity.namespace: ")
    assert "lower-case header name prefix" in message


@pytest.mark.parametrize(
    ("line", "where"),
    [
        ("max_token_bytes: 100", "max_token_bytes: Input should be greater than or equal to 256"),
        ("grace_period_seconds: -1", "grace_period_seconds: Input should be greater than"),
        ("realm: ''", "realm: String should have at least 1 character"),
    ],
)
def test_out_of_range_values(tmp_path: Path, line: str, where: str) -> None:
    message = _error(MINIMAL + line + "\n", tmp_path)
    assert message.startswith(f"test.yaml:7: {where}")


@pytest.mark.parametrize("leeway", ["-1", "301"])
def test_leeway_out_of_range(tmp_path: Path, leeway: str) -> None:
    message = _error(MINIMAL + f"    leeway_seconds: {leeway}\n", tmp_path)
    assert message.startswith("test.yaml:7: issuers[0].leeway_seconds: Input should be")


def test_strict_types_refuse_coercion(tmp_path: Path) -> None:
    # A number where a string belongs is a mistake, not something to coerce.
    message = _error(MINIMAL.replace("[api]", "[api, 42]"), tmp_path)
    assert message.startswith(
        "test.yaml:3: issuers[0].audiences[1]: Input should be a valid string"
    )


def test_empty_audience_is_refused(tmp_path: Path) -> None:
    message = _error(MINIMAL.replace("[api]", '[""]'), tmp_path)
    assert message.startswith("test.yaml:3: issuers[0].audiences[0]: String should have at least")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    assert _error(text, tmp_path) == "test.yaml: expected a mapping at the top level"


@pytest.mark.parametrize("text", ["issuers: [\n", "a: b: c\n", "key: 'unterminated\n"])
def test_invalid_yaml(tmp_path: Path, text: str) -> None:
    message = _error(text, tmp_path)
    assert message.startswith("test.yaml: not valid YAML: ")


def test_load_config_on_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "authz.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: cannot read: ")
    assert "No such file or directory" in message


def test_load_config_on_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: cannot read: ")


def test_load_config_on_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "authz.yaml"
    path.write_bytes(b"realm: \xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: cannot read: ")


# --- envoy: the header limits of the Envoy in front ------------------------------


def test_envoy_limits_default_to_envoys_own(tmp_path: Path) -> None:
    envoy = _parse(MINIMAL, tmp_path).envoy
    assert (envoy.max_request_headers_count, envoy.max_request_headers_kb) == (100, 60)


def test_envoy_limits_are_read(tmp_path: Path) -> None:
    text = MINIMAL + "envoy:\n  max_request_headers_count: 150\n  max_request_headers_kb: 96\n"
    envoy = _parse(text, tmp_path).envoy
    assert (envoy.max_request_headers_count, envoy.max_request_headers_kb) == (150, 96)


@pytest.mark.parametrize(
    ("line", "where"),
    [
        ("max_request_headers_count: 0", "max_request_headers_count: Input should be greater"),
        ("max_request_headers_kb: 0", "max_request_headers_kb: Input should be greater"),
        ("max_request_headers_kb: 8193", "max_request_headers_kb: Input should be less"),
        ("max_request_headers_kb: '60'", "max_request_headers_kb: Input should be a valid int"),
        ("max_headers_count: 100", "max_headers_count: unknown key"),
    ],
)
def test_envoy_limits_are_validated(tmp_path: Path, line: str, where: str) -> None:
    message = _error(MINIMAL + f"envoy:\n  {line}\n", tmp_path)
    assert message.startswith(f"test.yaml:8: envoy.{where}")
