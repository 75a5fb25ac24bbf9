"""authz check-envoy: each finding on a deliberately unsafe config, at its own line.

UNSAFE is a valid Envoy config (the real binary accepts it: see the e2e test
at the end) with one unsafe or inconsistent setting per finding; each line
that should be reported ends with a ``# <- name`` tag, and each test asserts
that its finding names exactly that line. AUTHZ is the authz configuration
the ``-c`` checks compare against.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from authz.cli import main
from authz.config.loader import parse_config
from authz.config.models import Config
from authz.dev.stack import envoy_binary
from authz.envoy_check import EnvoyCheckError, Finding, check_file, check_text, run
from tests.support.readme import yaml_block
from tests.support.repo import REPO_ROOT

HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
EXT_AUTHZ = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
PER_ROUTE = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"

UNSAFE = f"""\
static_resources:
  listeners:
    - name: edge
      address:
        socket_address: {{address: 0.0.0.0, port_value: 8080}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:  # <- manager
                "@type": type.googleapis.com/{HCM}
                stat_prefix: edge
                normalize_path: false  # <- normalize_path
                path_with_escaped_slashes_action: KEEP_UNCHANGED  # <- escaped_slashes
                use_remote_address: false  # <- use_remote_address
                internal_address_config: {{}}  # <- internal_address_config
                max_request_headers_kb: 96  # <- max_request_headers_kb
                common_http_protocol_options:
                  headers_with_underscores_action: ALLOW  # <- underscores
                  max_headers_count: 300  # <- max_headers_count
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: {{path: /healthz}}  # answered by Envoy: not reported
                          direct_response: {{status: 200}}
                          typed_per_filter_config:
                            envoy.filters.http.ext_authz:
                              "@type": type.googleapis.com/{PER_ROUTE}
                              disabled: true
                        - match: {{prefix: /docs}}  # public in AUTHZ: reported without it
                          route: {{cluster: upstream}}
                          typed_per_filter_config:
                            envoy.filters.http.ext_authz:
                              "@type": type.googleapis.com/{PER_ROUTE}
                              disabled: true  # <- disabled_unchecked
                        - match: {{prefix: /status}}
                          route: {{cluster: upstream}}
                          typed_per_filter_config:
                            envoy.filters.http.ext_authz:
                              "@type": type.googleapis.com/{PER_ROUTE}
                              disabled: true  # <- disabled_route
                        - match: {{prefix: /}}
                          route: {{cluster: upstream}}
                http_filters:
                  - name: envoy.filters.http.ext_authz
                    typed_config:
                      "@type": type.googleapis.com/{EXT_AUTHZ}
                      grpc_service:
                        envoy_grpc: {{cluster_name: authz}}
                        timeout: 0.1s  # <- timeout
                      failure_mode_allow: true  # <- failure_mode_allow
                      status_on_error: {{code: Forbidden}}  # <- status_on_error
                      encode_raw_headers: false  # <- encode_raw_headers
                      allowed_headers:  # <- allowed_headers
                        patterns:
                          - exact: Authorization
                          - prefix: x-user-
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: authz
      type: STATIC
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: {{http2_protocol_options: {{}}}}
      load_assignment:
        cluster_name: authz
        endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 9001}}}}}}}}]}}]
    - name: upstream
      type: STATIC
      load_assignment:
        cluster_name: upstream
        endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 8000}}}}}}}}]}}]
"""  # noqa: E501

AUTHZ = """\
issuers:
  - issuer: https://idp.example
    audiences: [api]
    algorithms: [RS256]
    keys: [{jwks_uri: "https://idp.example/jwks"}]
    fetch: {unknown_kid_wait_seconds: 0.3}
identity:
  namespace: x-user-
  headers: {x-user-subject: sub}
routes:
  - name: docs
    match: {prefix: /docs}
    mode: public
  - name: status
    match: {prefix: /status/internal}
    mode: protected
  - name: everything-else
    match: {prefix: /}
    mode: optional
"""


def line_of(name: str, text: str = UNSAFE) -> int:
    """The 1-based line tagged ``# <- name``."""
    (line,) = [n for n, t in enumerate(text.splitlines(), 1) if t.endswith(f"# <- {name}")]
    return line


@pytest.fixture(scope="module")
def authz() -> Config:
    return parse_config(AUTHZ, source="authz.yaml", base_dir=Path())


def findings(text: str = UNSAFE, config: Config | None = None) -> list[Finding]:
    return check_text(text, "envoy.yaml", config)


def the_finding(what: str, text: str = UNSAFE, config: Config | None = None) -> Finding:
    """The one finding whose ``what`` starts with ``what``."""
    found = [f for f in findings(text, config) if f.what.startswith(what)]
    assert len(found) == 1, findings(text, config)
    return found[0]


def edit(old: str, new: str, text: str = UNSAFE) -> str:
    assert old in text
    return text.replace(old, new)


def without(tag: str, text: str = UNSAFE) -> str:
    """``text`` without the line tagged ``# <- tag``."""
    lines = text.splitlines(keepends=True)
    del lines[line_of(tag, text) - 1]
    return "".join(lines)


# --- one test per finding ---------------------------------------------------------------


def test_failure_mode_allow() -> None:
    finding = the_finding("ext_authz failure_mode_allow is true")
    assert finding.line == line_of("failure_mode_allow")
    assert "fail closed" in finding.why


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("Forbidden", "authz's own deny"),
        ("401", "authz's own deny"),
        ("OK", "success"),
        ("302", "redirect"),
        ("TooManyRequests", "client error"),
    ],
)
def test_status_on_error_that_reads_as_an_answer(code: str, why: str) -> None:
    text = edit("{code: Forbidden}", f"{{code: {code}}}")
    finding = the_finding("ext_authz status_on_error", text)
    assert finding.line == line_of("status_on_error")
    assert why in finding.why
    assert finding.why.endswith("use 503")


@pytest.mark.parametrize("code", ["ServiceUnavailable", "503", "GatewayTimeout"])
def test_status_on_error_5xx_is_fine(code: str) -> None:
    text = edit("{code: Forbidden}", f"{{code: {code}}}")
    assert not [f for f in findings(text) if "status_on_error" in f.what]


def test_status_on_error_absent_is_envoys_403() -> None:
    text = without("status_on_error")
    finding = the_finding("ext_authz status_on_error absent", text)
    # Reported at the ext_authz filter's typed_config, the object that lacks it.
    assert finding.line == line_of("timeout", text) - 4
    assert "403" in finding.what


def test_allowed_headers_without_authorization() -> None:
    # "Authorization" never matches: Envoy compares lower-case names, case-sensitively.
    finding = the_finding("ext_authz allowed_headers leaves out authorization")
    assert finding.line == line_of("allowed_headers")
    fixed = edit("exact: Authorization", "{exact: Authorization, ignore_case: true}")
    assert not [f for f in findings(fixed) if "authorization" in f.what]


def test_allowed_headers_without_the_identity_namespace(authz: Config) -> None:
    finding = the_finding("ext_authz allowed_headers leaves out the x-auth-* headers")
    assert finding.line == line_of("allowed_headers")
    assert "x-auth-email" in finding.why
    # With -c, the configured namespace is the one that counts: x-user- is sent.
    assert not [f for f in findings(config=authz) if "* headers" in f.what]
    narrower = edit("prefix: x-user-", "exact: x-user-subject")
    finding = the_finding("ext_authz allowed_headers leaves out the x-user-*", narrower, authz)
    assert finding.line == line_of("allowed_headers")


def test_disallowed_headers_holding_back_what_authz_reads(authz: Config) -> None:
    text = edit("allowed_headers:  # <- allowed_headers", "disallowed_headers:  # <- disallowed")
    finding = the_finding("ext_authz disallowed_headers holds back the x-user-*", text, authz)
    assert finding.line == line_of("disallowed", text)
    # "Authorization" holds back nothing (names are lower case), "authorization" does.
    assert not [f for f in findings(text) if "authorization" in f.what]
    text = edit("exact: Authorization", "exact: authorization", text)
    finding = the_finding("ext_authz disallowed_headers holds back authorization", text)
    assert finding.line == line_of("disallowed", text)


@pytest.mark.parametrize("key", ["normalize_path", "merge_slashes"])
def test_path_normalization_off_or_absent(key: str) -> None:
    finding = the_finding(key)
    if key == "normalize_path":
        assert finding.what == "normalize_path is false"
        assert finding.line == line_of("normalize_path")
    else:  # absent: reported at the connection manager
        assert finding.what == "merge_slashes absent (Envoy's default is off)"
        assert finding.line == line_of("manager")
    assert finding.why.endswith("set true")


def test_escaped_slashes_kept() -> None:
    finding = the_finding("path_with_escaped_slashes_action")
    assert finding.what == "path_with_escaped_slashes_action is KEEP_UNCHANGED"
    assert finding.line == line_of("escaped_slashes")
    assert "REJECT_REQUEST (recommended)" in finding.why
    assert "authz refuses such paths" in finding.why
    absent = without("escaped_slashes")
    assert the_finding("path_with_escaped_slashes_action", absent).line == line_of("manager")
    for fine in ("REJECT_REQUEST", "UNESCAPE_AND_REDIRECT", "4"):
        text = edit("KEEP_UNCHANGED", fine)
        assert not [f for f in findings(text) if "escaped" in f.what]


def test_headers_with_underscores_allowed() -> None:
    finding = the_finding("headers_with_underscores_action is ALLOW")
    assert finding.line == line_of("underscores")
    assert "x_auth_roles" in finding.why
    text = without("underscores")
    finding = the_finding("headers_with_underscores_action absent", text)
    assert finding.line == line_of("max_headers_count", text) - 1  # common_http_protocol_options
    for fine in ("REJECT_REQUEST", "DROP_HEADER", "1"):
        text = edit("action: ALLOW", f"action: {fine}")
        assert not [f for f in findings(text) if "underscores" in f.what]


def test_edge_listener_without_use_remote_address() -> None:
    finding = the_finding("use_remote_address is false")
    assert finding.line == line_of("use_remote_address")
    absent = without("use_remote_address")
    assert the_finding("use_remote_address absent", absent).line == line_of("manager")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (  # marked as internal
            "    - name: edge\n",
            "    - name: edge\n      metadata: {filter_metadata: {authz: {edge: false}}}\n",
        ),
        (  # a Unix socket: only processes on the host reach it
            "socket_address: {address: 0.0.0.0, port_value: 8080}",
            "pipe: {path: /run/envoy.sock}",
        ),
    ],
    ids=["marked-internal", "unix-socket"],
)
def test_an_internal_listener_needs_no_use_remote_address(old: str, new: str) -> None:
    text = edit(old, new)
    assert not [f for f in findings(text) if "use_remote_address" in f.what]
    assert not [f for f in findings(text) if "internal_address_config" in f.what]
    # Everything else still applies to it.
    assert [f for f in findings(text) if f.what.startswith("normalize_path")]
    assert [f for f in findings(text) if "underscores" in f.what]


def test_internal_address_config_without_ranges_trusts_private_clients() -> None:
    finding = the_finding("internal_address_config without cidr_ranges")
    assert finding.line == line_of("internal_address_config")
    assert "loopback" in finding.why
    ranged = edit("{}  # <-", "{cidr_ranges: [{address_prefix: 0.0.0.0, prefix_len: 32}]}  # <-")
    assert not [f for f in findings(ranged) if "internal_address_config" in f.what]


def test_timeout_shorter_than_the_kid_wait(authz: Config) -> None:
    # authz's default wait (0.15 s) + 0.05 s: 0.1 s is too short.
    finding = the_finding("ext_authz grpc_service.timeout is 0.1s")
    assert finding.line == line_of("timeout")
    assert "0.2s" in finding.why
    assert "pass -c" in finding.why
    # With -c, the configured wait counts: 0.3 s + 0.05 s.
    longer = edit("timeout: 0.1s", "timeout: 0.3s")
    finding = the_finding("ext_authz grpc_service.timeout is 0.3s", longer, authz)
    assert "0.35s" in finding.why
    assert not [f for f in findings(longer) if "timeout" in f.what]  # enough by default
    enough = edit("timeout: 0.1s", "timeout: 0.35s")
    assert not [f for f in findings(enough, authz) if "timeout" in f.what]


def test_timeout_absent_is_envoys_200_ms() -> None:
    text = without("timeout")
    finding = the_finding("ext_authz grpc_service.timeout absent", text)
    assert finding.line == line_of("failure_mode_allow", text) - 2  # grpc_service
    assert finding.what.endswith("(Envoy's default is 0.2s)")
    assert finding.why.startswith("state it, at least 0.2s")


def test_ext_authz_disabled_on_a_route_is_reported_without_authzs_rules() -> None:
    # Nothing says /docs or /status is public; /healthz answers itself.
    found = [f for f in findings() if "disabled" in f.what]
    assert [(f.line, f.what) for f in found] == [
        (line_of("disabled_unchecked"), "ext_authz disabled on the route for prefix /docs"),
        (line_of("disabled_route"), "ext_authz disabled on the route for prefix /status"),
    ]
    assert all("pass -c" in f.why for f in found)


def test_ext_authz_disabled_on_a_route_authz_protects(authz: Config) -> None:
    # With -c: /status is not public for authz (optional, and protected below
    # /status/internal); /docs is public for authz.
    found = [f for f in findings(config=authz) if "disabled" in f.what]
    assert len(found) == 1, found
    assert found[0].line == line_of("disabled_route")
    assert found[0].what == "ext_authz disabled on the route for prefix /status"
    assert "'everything-else' is optional" in found[0].why


def test_a_disabled_route_under_which_authz_protects_a_deeper_path(authz: Config) -> None:
    # Envoy's /status prefix also takes /status/internal, which authz protects.
    text = edit(
        "  - name: everything-else\n    match: {prefix: /}\n    mode: optional\n",
        "  - name: everything-else\n    match: {prefix: /}\n    mode: public\n",
        AUTHZ,
    )
    config = parse_config(text, source="authz.yaml", base_dir=Path())
    (finding,) = [f for f in findings(config=config) if "disabled" in f.what]
    assert finding.line == line_of("disabled_route")
    assert "'status' is protected for GET /status/internal" in finding.why


def test_a_disabled_route_is_matched_with_its_virtual_hosts_context_extensions() -> None:
    # authz makes zone=internal requests public: with the virtual host's
    # context_extensions, the disabled /status route is then consistent.
    zoned = edit(
        "routes:\n",
        "routes:\n  - name: internal\n"
        "    match: {context_extensions: {zone: internal}}\n    mode: public\n",
        AUTHZ,
    )
    config = parse_config(zoned, source="authz.yaml", base_dir=Path())
    assert [f for f in findings(config=config) if "disabled" in f.what]
    text = edit(
        '                      domains: ["*"]\n',
        '                      domains: ["*"]\n'
        "                      typed_per_filter_config:\n"
        "                        envoy.filters.http.ext_authz:\n"
        f'                          "@type": type.googleapis.com/{PER_ROUTE}\n'
        "                          check_settings: {context_extensions: {zone: internal}}\n",
    )
    assert not [f for f in findings(text, config) if "disabled" in f.what]


def test_a_disabled_route_with_no_authz_route_is_reported() -> None:
    text = AUTHZ.split("  - name: everything-else", maxsplit=1)[0]
    config = parse_config(text, source="authz.yaml", base_dir=Path())
    (finding,) = [f for f in findings(config=config) if "disabled" in f.what]
    assert "authz has no route for it" in finding.why


def test_header_limits_larger_than_authzs(authz: Config) -> None:
    # What authz reads at most (max_request_header_bytes, max_request_headers): needs -c.
    assert not [f for f in findings() if "more than authz's" in f.why]
    (kb,) = [f for f in findings(config=authz) if "max_request_header_bytes" in f.why]
    assert (kb.line, kb.what) == (line_of("max_request_headers_kb"), "max_request_headers_kb is 96")
    assert "more than authz's max_request_header_bytes (65536)" in kb.why
    (count,) = [f for f in findings(config=authz) if "max_request_headers (" in f.why]
    assert count.line == line_of("max_headers_count")
    assert count.what == "common_http_protocol_options.max_headers_count is 300"
    assert "more than authz's max_request_headers (200)" in count.why


def _budget(found: list[Finding]) -> list[Finding]:
    return [f for f in found if "authz's envoy." in f.why]


def test_header_limits_other_than_authzs_envoy_section(authz: Config) -> None:
    # Without -c, against authz's defaults (Envoy's own): 96 and 300 are not them.
    kb, count = _budget(findings())
    assert (kb.line, kb.what) == (line_of("max_request_headers_kb"), "max_request_headers_kb is 96")
    assert kb.why == (
        "authz's envoy.max_request_headers_kb is 60 by default; pass -c for yours: authz "
        "refuses (431) requests whose identity headers Envoy could carry; set "
        "envoy.max_request_headers_kb: 96 in authz's configuration"
    )
    assert count.line == line_of("max_headers_count")
    assert count.why.startswith("authz's envoy.max_request_headers_count is 100 by default")
    assert count.why.endswith("set envoy.max_request_headers_count: 300 in authz's configuration")
    # With -c, against its envoy section: the same values are no finding.
    same = parse_config(
        AUTHZ + "envoy: {max_request_headers_kb: 96, max_request_headers_count: 300}\n",
        source="authz.yaml",
        base_dir=Path(),
    )
    assert not _budget(findings(config=same))
    # Envoy's limit below authz's: Envoy would refuse what authz lets through.
    larger = parse_config(
        AUTHZ + "envoy: {max_request_headers_kb: 128, max_request_headers_count: 300}\n",
        source="authz.yaml",
        base_dir=Path(),
    )
    (kb,) = _budget(findings(config=larger))
    assert kb.why.startswith(
        "authz's envoy.max_request_headers_kb is 128: authz lets through identity headers "
        "that take a request past Envoy's limit, and Envoy answers 500 instead of authz's 431"
    )


def test_header_limits_absent_are_envoys_defaults() -> None:
    text = without("max_headers_count", without("max_request_headers_kb"))
    assert not _budget(findings(text))  # 60 and 100, as authz assumes by default
    narrow = parse_config(
        AUTHZ + "envoy: {max_request_headers_count: 50}\n", source="authz.yaml", base_dir=Path()
    )
    (count,) = _budget(findings(text, narrow))
    assert count.what == "common_http_protocol_options.max_headers_count is 100 (Envoy's default)"
    assert "set envoy.max_request_headers_count: 100" in count.why


def test_headers_kept_from_authz_cannot_be_counted() -> None:
    finding = the_finding("ext_authz allowed_headers set")
    assert finding.line == line_of("allowed_headers")
    assert "cannot keep its identity headers within Envoy's header limits" in finding.why
    text = edit("allowed_headers:  # <- allowed_headers", "disallowed_headers:  # <- disallowed")
    finding = the_finding("ext_authz disallowed_headers set", text)
    assert finding.line == line_of("disallowed", text)


def test_repeated_headers_joined_cannot_be_counted() -> None:
    finding = the_finding("ext_authz encode_raw_headers is false")
    assert finding.line == line_of("encode_raw_headers")
    assert "joins repeated headers" in finding.why
    text = without("encode_raw_headers")
    finding = the_finding("ext_authz encode_raw_headers absent (Envoy's default is false)", text)
    assert finding.line == line_of("timeout", text) - 4  # the filter's typed_config
    fixed = edit("encode_raw_headers: false", "encode_raw_headers: true")
    assert not [f for f in findings(fixed) if "encode_raw_headers" in f.what]


def test_a_connection_manager_without_ext_authz() -> None:
    start = UNSAFE.index("                  - name: envoy.filters.http.ext_authz\n")
    end = UNSAFE.index("                  - name: envoy.filters.http.router\n")
    text = UNSAFE[:start] + UNSAFE[end:]
    finding = the_finding("no ext_authz filter", text)
    assert finding.line == text.splitlines().index("                http_filters:") + 1


def test_the_ext_authz_filter_disabled_by_default() -> None:
    text = edit(
        "                  - name: envoy.filters.http.ext_authz\n",
        "                  - name: envoy.filters.http.ext_authz\n"
        "                    disabled: true  # <- filter_disabled\n",
    )
    finding = the_finding("ext_authz filter is disabled", text)
    assert finding.line == line_of("filter_disabled", text)


def test_a_duplicate_key_is_reported_where_it_repeats() -> None:
    # Envoy accepts both; the reader of the file may see the other one.
    text = edit(
        "failure_mode_allow: true  # <- failure_mode_allow\n",
        "failure_mode_allow: true  # <- failure_mode_allow\n"
        "                      failure_mode_allow: false  # <- again\n",
    )
    finding = the_finding("duplicate key failure_mode_allow", text)
    assert finding.line == line_of("again", text)


def test_a_route_disabled_through_the_generic_filter_config(authz: Config) -> None:
    text = edit(
        f'"@type": type.googleapis.com/{PER_ROUTE}\n'
        "                              disabled: true  # <- disabled_route",
        '"@type": type.googleapis.com/envoy.config.route.v3.FilterConfig\n'
        "                              disabled: true  # <- disabled_route",
    )
    (finding,) = [f for f in findings(text, authz) if "disabled" in f.what]
    assert finding.line == line_of("disabled_route")


def test_every_tagged_line_and_no_other_is_reported() -> None:
    tags = set(re.findall(r"# <- (\w+)", UNSAFE))
    assert {finding.line for finding in findings()} == {line_of(tag) for tag in tags}


def test_with_authz_config_every_tagged_line_is_reported(authz: Config) -> None:
    tags = set(re.findall(r"# <- (\w+)", UNSAFE))
    # The x-user- namespace is sent, and 0.1 s is still too short for 0.3 s + 0.05 s;
    # /docs is public in authz's rules.
    assert {finding.line for finding in findings(config=authz)} == {
        line_of(t) for t in tags - {"disabled_unchecked"}
    }


# --- spellings: Envoy reads proto-JSON names (lowerCamelCase) as well --------------------

# A field name as it sits in a YAML key position: at a line's start, after "- ",
# or after "{" or "," in a flow mapping; snake_case with at least one underscore.
_FIELD_KEY = re.compile(
    r"(?P<lead>^\s*(?:- )?|[{,]\s*)(?P<name>[a-z][a-z0-9]*(?:_[a-z0-9]+)+)(?=:)", re.M
)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def respelled(text: str, every: int = 1) -> str:
    """``text`` with every ``every``-th field name in its JSON spelling (1: all of them)."""
    count = 0

    def one(match: re.Match[str]) -> str:
        nonlocal count
        count += 1
        name = match["name"]
        return match["lead"] + (_camel(name) if count % every == 0 else name)

    return _FIELD_KEY.sub(one, text)


@pytest.mark.parametrize("every", [1, 2, 3], ids=["camelCase", "mixed-even", "mixed-third"])
def test_every_check_fires_on_every_spelling(every: int, authz: Config) -> None:
    text = respelled(UNSAFE, every)
    assert text != UNSAFE
    if every == 1:
        assert "failureModeAllow: true  # <- failure_mode_allow" in text
    for config in (None, authz):
        snake = [(f.line, f.what) for f in findings(UNSAFE, config)]
        assert [(f.line, f.what) for f in findings(text, config)] == snake


def test_a_respelled_key_cannot_hide_failure_mode_allow() -> None:
    # The one respelling that fails open through the real Envoy when authz is down.
    text = edit("failure_mode_allow: true", "failureModeAllow: true")
    finding = the_finding("ext_authz failure_mode_allow is true", text)
    assert finding.line == line_of("failure_mode_allow")


@pytest.mark.parametrize(
    "path",
    SHIPPED_CONFIGS := [
        *sorted((REPO_ROOT / "envoy").glob("*.yaml")),
        REPO_ROOT / "k8s" / "gateway" / "envoy.yaml",
        REPO_ROOT / "k8s" / "sidecar" / "envoy.yaml",
        REPO_ROOT / "k8s" / "tls" / "envoy.yaml",
    ],
    ids=lambda p: str(p.relative_to(REPO_ROOT)),
)
def test_a_shipped_config_respelled_has_the_same_findings(path: Path) -> None:
    text = path.read_text()
    snake = [(f.line, f.what) for f in check_text(text, str(path), None)]
    assert [(f.line, f.what) for f in check_text(respelled(text), str(path), None)] == snake


# --- input forms -------------------------------------------------------------------------


def test_json_input_has_the_same_findings_at_its_own_lines() -> None:
    text = json.dumps(yaml.safe_load(UNSAFE), indent="\t")  # tabs: JSON, but not YAML
    lines = text.splitlines()
    found = {f.what: f.line for f in check_text(text, "envoy.json")}
    assert set(found) == {f.what for f in findings()}
    assert '"normalize_path": false' in lines[found["normalize_path is false"] - 1]
    # A missing key: the line of the object without it (its "typed_config": {).
    assert (
        f'"@type": "type.googleapis.com/{HCM}"'
        in lines[found["merge_slashes absent (Envoy's default is off)"]]
    )


def test_a_configmap_carrying_the_config(tmp_path: Path) -> None:
    indented = "".join(f"    {line}\n" for line in UNSAFE.splitlines())
    configmap = (
        "apiVersion: v1\nkind: Service\nmetadata: {name: other}\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: envoy}\ndata:\n"
        "  other.txt: not yaml at all {\n"
        f"  envoy.yaml: |\n{indented}"
    )
    path = tmp_path / "rendered.yaml"
    path.write_text(configmap)
    lines = configmap.splitlines()
    tagged = next(n for n, t in enumerate(lines, 1) if t.endswith("# <- failure_mode_allow"))
    (finding,) = [f for f in check_file(path) if "failure_mode_allow" in f.what]
    assert finding.line == tagged


def test_a_configmap_string_in_another_style_is_reported_at_its_key() -> None:
    configmap = yaml.safe_dump(
        {"kind": "ConfigMap", "data": {"envoy.yaml": UNSAFE.replace("  # <-", "  #")}},
        default_style='"',
    )
    key_line = next(n for n, t in enumerate(configmap.splitlines(), 1) if '"envoy.yaml"' in t)
    found = check_text(configmap, "cm.yaml")
    assert found
    assert {f.line for f in found} == {key_line}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("static_resources: [unclosed\n", "not valid YAML or JSON"),
        ("admin: {}\n", "no Envoy configuration found"),
        ("kind: ConfigMap\ndata: {a: 'b: c'}\n", "no Envoy configuration found"),
        ("static_resources: {clusters: []}\n", "no HTTP connection manager"),
    ],
)
def test_unusable_input(text: str, message: str) -> None:
    with pytest.raises(EnvoyCheckError, match=message):
        check_text(text, "envoy.yaml")


# --- the shipped configs ----------------------------------------------------------------

SHIPPED = [
    *sorted((REPO_ROOT / "envoy").glob("*.yaml")),
    REPO_ROOT / "k8s" / "gateway" / "envoy.yaml",
    REPO_ROOT / "k8s" / "sidecar" / "envoy.yaml",
    REPO_ROOT / "k8s" / "tls" / "envoy.yaml",
]


def test_every_shipped_envoy_config_is_listed() -> None:
    found = {
        path
        for folder in ("envoy", "k8s")
        for path in (REPO_ROOT / folder).rglob("*.yaml")
        if "http_connection_manager" in path.read_text()
    }
    assert found == set(SHIPPED)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_shipped_envoy_config_passes(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-envoy", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: OK (1 HTTP connection manager checked)\n"


def test_the_shipped_configs_pass_with_the_authz_configs_they_are_paired_with(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = tmp_path / "authz.yaml"
    readme.write_text(yaml_block("Writing rules"))
    pairs = [
        (readme, REPO_ROOT / "envoy" / "gateway-routes.yaml"),
        (REPO_ROOT / "k8s" / "base" / "authz.yaml", REPO_ROOT / "k8s" / "gateway" / "envoy.yaml"),
        (
            REPO_ROOT / "k8s" / "sidecar" / "authz.yaml",
            REPO_ROOT / "k8s" / "sidecar" / "envoy.yaml",
        ),
        (REPO_ROOT / "k8s" / "tls" / "authz.yaml", REPO_ROOT / "k8s" / "tls" / "envoy.yaml"),
    ]
    for config, envoy in pairs:
        assert main(["check-envoy", "-c", str(config), str(envoy)]) == 0, capsys.readouterr()


# --- the command line --------------------------------------------------------------------

# FILE:LINE: what: why -- "what" never holds ": ", so the line splits one way only.
FINDING_LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+): (?P<what>(?:(?!: ).)+): (?P<why>.+)$")


def test_cli_exit_1_and_one_line_per_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(UNSAFE)
    assert main(["check-envoy", str(path)]) == 1
    printed = []
    for line in capsys.readouterr().out.splitlines():
        match = FINDING_LINE.match(line)
        assert match, line
        assert match["file"] == str(path)
        assert UNSAFE.splitlines()[int(match["line"]) - 1].rstrip().split("# <- ")[1], line
        printed.append(Finding(int(match["line"]), match["what"], match["why"]))
    assert printed == findings()  # one line per finding, in line order


def test_cli_with_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    envoy, config = tmp_path / "envoy.yaml", tmp_path / "authz.yaml"
    envoy.write_text(UNSAFE)
    config.write_text(AUTHZ)
    assert main(["check-envoy", "-c", str(config), str(envoy)]) == 1
    out = capsys.readouterr().out
    assert f"{envoy}:{line_of('disabled_route')}: ext_authz disabled on the route" in out


def test_cli_exit_2_names_the_file_and_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("static_resources: {listeners: [\n")
    missing = tmp_path / "missing.yaml"
    shipped = REPO_ROOT / "envoy" / "gateway.yaml"
    assert main(["check-envoy", str(broken), str(missing), str(shipped)]) == 2
    captured = capsys.readouterr()
    errors = captured.err.splitlines()
    assert errors[0].startswith(f"authz check-envoy: {broken}:2: not valid YAML or JSON: ")
    assert errors[1].startswith(f"authz check-envoy: {missing}: cannot read: ")
    assert captured.out == f"{shipped}: OK (1 HTTP connection manager checked)\n"  # still checked


def test_cli_exit_2_on_an_invalid_authz_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "authz.yaml"
    config.write_text("issuers: []\n")
    assert main(["check-envoy", "-c", str(config), str(SHIPPED[0])]) == 2
    assert str(config) in capsys.readouterr().err


def test_stdin() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run([Path("-")], None, out, err, stdin=io.StringIO(UNSAFE)) == 1
    assert out.getvalue().startswith("<stdin>:")


@pytest.mark.e2e
@pytest.mark.parametrize("every", [0, 1, 2], ids=["snake_case", "camelCase", "mixed"])
def test_the_unsafe_config_is_one_envoy_accepts(tmp_path: Path, every: int) -> None:
    # The findings are about settings Envoy takes, not about a config it refuses,
    # in every spelling Envoy reads.
    path = tmp_path / "envoy.yaml"
    path.write_text(respelled(UNSAFE, every) if every else UNSAFE)
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_what_envoy_loads_at_run_time_is_said_not_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = edit(
        "                route_config:\n",
        "                rds: {route_config_name: dynamic}  # <- rds\n"
        "                route_config:\n",
    )
    text = "dynamic_resources:  # <- dynamic\n  ldsConfig: {ads: {}}  # <- lds\n" + text
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    assert main(["check-envoy", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == [
        f"{path}:{line_of('lds', text)}: not checked: listeners from lds_config "
        "(loaded at run time)",
        f"{path}:{line_of('rds', text)}: not checked: routes from rds (loaded at run time)",
    ]


def test_a_field_in_both_spellings_is_a_duplicate_key() -> None:
    text = edit(
        "failure_mode_allow: true  # <- failure_mode_allow",
        "failure_mode_allow: false\n                      failureModeAllow: true  # <- both",
    )
    finding = the_finding("duplicate key failure_mode_allow", text)
    assert finding.line == line_of("both", text)
    assert the_finding("ext_authz failure_mode_allow is true", text).line == line_of("both", text)


def test_a_rule_that_covers_one_of_a_services_prefixes_is_reported(tmp_path: Path) -> None:
    # Envoy sends /payments and /billing to service=payments; a refund rule under
    # /payments alone leaves POST /billing/7/refunds to the broader route.
    rules = yaml_block("Writing rules")
    start = rules.index("  - name: billing-refund")
    end = rules.index("  - name: payments\n")
    partial = parse_config(rules[:start] + rules[end:], source="authz.yaml", base_dir=tmp_path)
    envoy = (REPO_ROOT / "envoy" / "gateway-routes.yaml").read_text()
    found = [f for f in check_text(envoy, "envoy.yaml", partial) if "covers only" in f.what]
    assert [f.what for f in found] == [
        "authz's route 'payments-refund' covers only /payments of the prefixes Envoy sends "
        "with service=payments"
    ]
    assert "/billing" in found[0].why
    whole = parse_config(rules, source="authz.yaml", base_dir=tmp_path)
    assert not [f for f in check_text(envoy, "envoy.yaml", whole) if "covers only" in f.what]
